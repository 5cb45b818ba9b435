use super::*;
use crate::records::{CatalogEntry, DataItem, SharingClass};
use crate::sharing::{Grant, SharingView};

fn record(body: &str) -> StoredRecord {
    StoredRecord {
        kind: RecordKind::Project,
        owner: "zone".into(),
        id: uuid::Uuid::nil(),
        revision: 1,
        index: Default::default(),
        body: body.into(),
    }
}

fn project_entry(open_to: &[&str]) -> CatalogEntry {
    CatalogEntry {
        id: uuid::Uuid::nil(),
        owner: "zone".into(),
        resource_code: "ZONE-PROJECT".into(),
        display_name: "projects".into(),
        summary: String::new(),
        record_kind: Some(RecordKind::Project),
        items: vec![DataItem {
            field: "contact.phone".into(),
            data_type: "string".into(),
            description: String::new(),
            sharing_class: SharingClass::Conditional,
            legal_basis: String::new(),
            open_to: open_to.iter().map(|p| p.to_string()).collect(),
        }],
        sharing_class: SharingClass::Unconditional,
        legal_basis: String::new(),
        conditions: String::new(),
        update_cycle: String::new(),
        revision: 1,
        create_time: 0,
        update_time: 0,
    }
}

#[test]
fn withheld_fields_are_emptied_and_named_and_a_grant_opens_them_until_it_ends() {
    let policy = SharingPolicy::default();
    let entry = project_entry(&["anji"]);
    let rec = record(r#"{"contact":{"name":"张三","phone":"+86 138"},"labels":{"a":"b"}}"#);
    let view = SharingView::new(vec![entry.clone()], Vec::new(), 1);
    let out = policy
        .outgoing(&view.for_peer("guangde", 0), "guangde", &rec)
        .unwrap();
    let v: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(v["contact"]["phone"], "");
    assert_eq!(v["contact"]["name"], "张三");
    assert_eq!(v["labels"]["a"], "b");
    assert_eq!(out.withheld, vec!["project.contact.phone".to_string()]);
    let open = policy
        .outgoing(&view.for_peer("anji", 0), "anji", &rec)
        .unwrap();
    assert_eq!(open.body, rec.body, "open to anji without a request");
    let mut alloc = rec.clone();
    alloc.kind = RecordKind::Allocation;
    assert!(
        policy
            .outgoing(&view.for_peer("guangde", 0), "guangde", &alloc)
            .is_none(),
        "no catalog entry for allocations: not sent"
    );
    let grant = Grant {
        consumer: "guangde".into(),
        entry: format!("parties/zone/catalogEntries/{}", uuid::Uuid::nil()),
        items: vec!["contact.phone".into()],
        valid_until: 100,
    };
    let view = SharingView::new(vec![entry], vec![grant], 2);
    let granted = policy
        .outgoing(&view.for_peer("guangde", 99), "guangde", &rec)
        .unwrap();
    assert_eq!(granted.body, rec.body);
    assert!(granted.withheld.is_empty());
    let expired = policy
        .outgoing(&view.for_peer("guangde", 100), "guangde", &rec)
        .unwrap();
    assert_eq!(expired.withheld, vec!["project.contact.phone".to_string()]);
}

#[test]
fn catalog_entries_reach_every_peer_whole_whatever_the_catalog() {
    let policy = SharingPolicy::default();
    let mut entry = record(r#"{"resource_code":"CX-1","conditions":"c"}"#);
    entry.kind = RecordKind::CatalogEntry;
    let out = policy
        .outgoing(&SharingView::default().for_peer("anji", 0), "anji", &entry)
        .expect("sent");
    assert_eq!(out.body, entry.body);
    assert!(out.withheld.is_empty());
}

#[test]
fn an_access_request_goes_to_its_provider_and_an_answer_to_its_requester_and_both_to_the_coordinator()
 {
    let policy = SharingPolicy::with_coordinator("zone");
    let view = SharingView::default();
    let mut request = record("{}");
    request.kind = RecordKind::AccessRequest;
    request.owner = "guangde".into();
    request.index.parent = Some("parties/changxing/catalogEntries/x".into());
    assert!(
        policy
            .outgoing(&view.for_peer("changxing", 0), "changxing", &request)
            .is_some()
    );
    assert!(
        policy
            .outgoing(&view.for_peer("zone", 0), "zone", &request)
            .is_some()
    );
    assert!(
        policy
            .outgoing(&view.for_peer("anji", 0), "anji", &request)
            .is_none()
    );
    let mut answer = record("{}");
    answer.kind = RecordKind::AccessAnswer;
    answer.owner = "changxing".into();
    answer.index.parent = Some("parties/guangde/accessRequests/y".into());
    assert!(
        policy
            .outgoing(&view.for_peer("guangde", 0), "guangde", &answer)
            .is_some()
    );
    assert!(
        policy
            .outgoing(&view.for_peer("zone", 0), "zone", &answer)
            .is_some()
    );
    assert!(
        policy
            .outgoing(&view.for_peer("anji", 0), "anji", &answer)
            .is_none()
    );
}
