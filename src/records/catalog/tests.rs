use super::*;

fn item(field: &str, class: SharingClass, basis: &str) -> DataItem {
    DataItem {
        field: field.into(),
        data_type: "string".into(),
        description: String::new(),
        sharing_class: class,
        legal_basis: basis.into(),
        open_to: Vec::new(),
    }
}

fn entry(items: Vec<DataItem>) -> CatalogEntry {
    CatalogEntry {
        id: Uuid::nil(),
        owner: "changxing".into(),
        resource_code: "CX-PROJECT-001".into(),
        display_name: "长兴县招商项目信息".into(),
        summary: String::new(),
        record_kind: Some(RecordKind::Project),
        items,
        sharing_class: SharingClass::Unconditional,
        legal_basis: String::new(),
        conditions: String::new(),
        update_cycle: "实时".into(),
        revision: 1,
        create_time: 0,
        update_time: 0,
    }
}

fn fields(v: &Violations) -> Vec<String> {
    v.iter().map(|f| f.field.clone()).collect()
}

#[test]
fn an_item_takes_the_entry_class_unless_it_names_its_own() {
    let e = entry(vec![
        item("display_name", SharingClass::Unspecified, ""),
        item("contact.phone", SharingClass::Conditional, ""),
    ]);
    assert_eq!(e.class_of(&e.items[0]), SharingClass::Unconditional);
    assert_eq!(e.class_of(&e.items[1]), SharingClass::Conditional);
    assert!(e.has_class(SharingClass::Conditional));
    assert!(!e.has_class(SharingClass::NotShared));
    let mut v = Violations::new();
    e.validate("entry", &mut v);
    assert!(v.is_empty(), "{v}");
}

#[test]
fn only_withholdable_fields_are_restricted_on_their_own_and_open_to_needs_a_conditional_item() {
    let mut open = item("contact.phone", SharingClass::Conditional, "");
    open.open_to = vec!["anji".into(), "anji".into()];
    let mut misplaced = item("land_area_mu", SharingClass::Unconditional, "");
    misplaced.open_to = vec!["anji".into()];
    let e = entry(vec![
        open,
        item("name", SharingClass::Conditional, ""),
        item("owner", SharingClass::NotShared, "law"),
        misplaced,
        item("investor.credit_code", SharingClass::NotShared, "law"),
    ]);
    let mut v = Violations::new();
    e.validate("entry", &mut v);
    assert_eq!(
        fields(&v),
        [
            "entry.items[0].open_to[1]",
            "entry.items[1].sharing_class",
            "entry.items[2].sharing_class",
            "entry.items[3].open_to",
        ]
    );
    // A whole entry may be CONDITIONAL, whatever its items: the record goes or not.
    let mut whole = entry(vec![item("name", SharingClass::Unspecified, "")]);
    whole.sharing_class = SharingClass::Conditional;
    let mut v = Violations::new();
    whole.validate("entry", &mut v);
    assert!(v.is_empty(), "{v:?}");
    // The catalog covers the records that replicate by it, not its own governance records.
    let mut meta = entry(vec![item("purpose", SharingClass::Unspecified, "")]);
    meta.record_kind = Some(RecordKind::AccessRequest);
    let mut v = Violations::new();
    meta.validate("entry", &mut v);
    assert_eq!(fields(&v), ["entry.record_kind"]);
}

#[test]
fn not_shared_needs_a_legal_basis_and_every_bad_field_is_named() {
    let mut e = entry(vec![
        item("contact.phone", SharingClass::NotShared, ""),
        item("Contact Phone", SharingClass::Unspecified, ""),
        item("contact.phone", SharingClass::Unspecified, ""),
    ]);
    e.resource_code = "CX 001".into();
    e.record_kind = None;
    e.sharing_class = SharingClass::NotShared;
    let mut v = Violations::new();
    e.validate("entry", &mut v);
    assert_eq!(
        fields(&v),
        [
            "entry.resource_code",
            "entry.record_kind",
            "entry.legal_basis",
            "entry.items[0].legal_basis",
            "entry.items[1].field",
            "entry.items[2].field",
        ]
    );
}

#[test]
fn an_entry_lists_between_one_and_a_hundred_items() {
    let mut v = Violations::new();
    entry(vec![]).validate("entry", &mut v);
    assert_eq!(fields(&v), ["entry.items"]);
    let many = (0..=MAX_ITEMS)
        .map(|i| item(&format!("f{i}"), SharingClass::Unspecified, ""))
        .collect();
    let mut v = Violations::new();
    entry(many).validate("entry", &mut v);
    assert_eq!(fields(&v), ["entry.items"]);
}

#[test]
fn an_update_changes_only_the_masked_fields() {
    let mut current = entry(vec![item("display_name", SharingClass::Unspecified, "")]);
    let mut patch = current.clone();
    patch.display_name = "新名称".into();
    patch.resource_code = "OTHER".into();
    patch.conditions = "仅用于联合招商".into();
    let mut v = Violations::new();
    current.apply_mask(&patch, &["display_name".into()], &mut v);
    assert!(v.is_empty());
    assert_eq!(current.display_name, "新名称");
    assert_eq!(current.conditions, "");
    current.apply_mask(&patch, &["resource_code".into()], &mut v);
    assert_eq!(fields(&v), ["update_mask"]);
    assert_eq!(current.resource_code, "CX-PROJECT-001");
}
