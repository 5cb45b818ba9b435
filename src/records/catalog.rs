//! The resource catalog (政务数据目录) of 政务数据共享条例 (国务院令第809号): each party publishes
//! entries describing what it holds — the record kind an entry covers, its data items (信息项)
//! and how each may be shared: 无条件共享 (unconditional), 有条件共享 (conditional: under an
//! approved access request only) or 不予共享 (not shared, with the legal basis stated). An
//! entry is owned by its provider, replicated to every member, and readable by all.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Violations, check_text, effective_mask};
use crate::domain::RecordKind;

/// How a data item may be shared (共享类型).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingClass {
    /// Only on input: an item that names no class takes its entry's.
    #[default]
    Unspecified,
    /// 无条件共享: every member receives the item.
    Unconditional,
    /// 有条件共享: a member receives the item under an approved access request only.
    Conditional,
    /// 不予共享: never shared; a legal basis must be stated.
    NotShared,
}

/// One data item (信息项): a field of the record kind the entry covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataItem {
    /// Field path in the gateway's record format, e.g. "contact.phone".
    pub field: String,
    /// Data type as published, e.g. "string".
    pub data_type: String,
    pub description: String,
    /// `Unspecified`: the entry's class.
    pub sharing_class: SharingClass,
    /// Why the item may not be shared, when it is `NotShared`.
    pub legal_basis: String,
    /// Parties that receive this CONDITIONAL item without a request, under a standing
    /// agreement the entry's `conditions` name (e.g. members of the provider's province).
    #[serde(default)]
    pub open_to: Vec<String>,
}

/// A catalog entry as stored and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: Uuid,
    /// The providing party, which alone may change the entry.
    pub owner: String,
    /// The provider's code of the resource, unique per provider.
    pub resource_code: String,
    pub display_name: String,
    pub summary: String,
    /// `None` only on input that named no kind (refused by validation).
    pub record_kind: Option<RecordKind>,
    pub items: Vec<DataItem>,
    /// The class of items that name none.
    pub sharing_class: SharingClass,
    /// Why the entry's items may not be shared, when its class is `NotShared`.
    pub legal_basis: String,
    /// Conditions of use of its conditional items (共享条件).
    pub conditions: String,
    /// Update cycle (更新周期), e.g. "实时", "每日".
    pub update_cycle: String,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// Fields an update may change; the resource code and the record kind name what the entry is
/// and stay fixed.
pub const MUTABLE_FIELDS: &[&str] = &[
    "display_name",
    "summary",
    "items",
    "sharing_class",
    "legal_basis",
    "conditions",
    "update_cycle",
];

/// Data items one entry may list at most.
pub const MAX_ITEMS: usize = 100;
/// Parties one item may be open to at most.
pub const MAX_OPEN_TO: usize = 100;

pub use crate::domain::RESTRICTABLE_FIELDS;

/// Whether `field` of `kind` can be emptied before a record leaves.
pub fn restrictable(kind: RecordKind, field: &str) -> bool {
    RESTRICTABLE_FIELDS.contains(&(kind, field))
}

/// The restrictable fields of `kind`, for messages.
pub fn restrictable_fields(kind: RecordKind) -> Vec<&'static str> {
    RESTRICTABLE_FIELDS
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, f)| *f)
        .collect()
}

impl CatalogEntry {
    /// The class that applies to `item`: its own, or the entry's when it names none.
    pub fn class_of(&self, item: &DataItem) -> SharingClass {
        match item.sharing_class {
            SharingClass::Unspecified => self.sharing_class,
            own => own,
        }
    }

    /// Whether any item of the entry is shared as `class`.
    pub fn has_class(&self, class: SharingClass) -> bool {
        self.items.iter().any(|i| self.class_of(i) == class)
    }

    /// Copies the fields named in `mask` from `patch` (empty or "*": every mutable field).
    pub fn apply_mask(&mut self, patch: &CatalogEntry, mask: &[String], v: &mut Violations) {
        for path in effective_mask(mask, MUTABLE_FIELDS) {
            match path.as_str() {
                "display_name" => self.display_name = patch.display_name.clone(),
                "summary" => self.summary = patch.summary.clone(),
                "items" => self.items = patch.items.clone(),
                "sharing_class" => self.sharing_class = patch.sharing_class,
                "legal_basis" => self.legal_basis = patch.legal_basis.clone(),
                "conditions" => self.conditions = patch.conditions.clone(),
                "update_cycle" => self.update_cycle = patch.update_cycle.clone(),
                other => v.add(
                    "update_mask",
                    format!(
                        "`{other}` is not a field an update can change (mutable: {})",
                        MUTABLE_FIELDS.join(", ")
                    ),
                ),
            }
        }
    }

    /// Checks every field, prefixing paths with `prefix` (e.g. "entry").
    pub fn validate(&self, prefix: &str, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        check_resource_code(v, &f("resource_code"), &self.resource_code);
        check_text(v, &f("display_name"), &self.display_name, 200, true);
        check_text(v, &f("summary"), &self.summary, 2000, false);
        check_text(v, &f("conditions"), &self.conditions, 2000, false);
        check_text(v, &f("update_cycle"), &self.update_cycle, 64, false);
        check_text(v, &f("legal_basis"), &self.legal_basis, 1000, false);
        match self.record_kind {
            None => v.add(f("record_kind"), "is required"),
            Some(kind) if !RecordKind::GOVERNED.contains(&kind) => v.add(
                f("record_kind"),
                format!(
                    "`{}` is not shared through the catalog; an entry covers one of: {}",
                    kind.as_str(),
                    RecordKind::GOVERNED.map(|k| k.as_str()).join(", ")
                ),
            ),
            Some(_) => {}
        }
        match self.sharing_class {
            SharingClass::Unspecified => v.add(f("sharing_class"), "is required"),
            SharingClass::NotShared if self.legal_basis.trim().is_empty() => v.add(
                f("legal_basis"),
                "is required when the entry is NOT_SHARED: name the law or regulation",
            ),
            _ => {}
        }
        if self.items.is_empty() {
            v.add(f("items"), "lists no data item; list at least one");
        } else if self.items.len() > MAX_ITEMS {
            v.add(
                f("items"),
                format!("lists more than {MAX_ITEMS} data items"),
            );
        }
        for (i, item) in self.items.iter().enumerate().take(MAX_ITEMS) {
            self.validate_item(prefix, i, item, v);
        }
    }

    /// The `i`th data item: its field path (once in the entry), texts, a legal basis when it
    /// is NOT_SHARED, a class of its own only for a field that can be withheld alone, and
    /// `open_to` only on a CONDITIONAL item, each party once.
    fn validate_item(&self, prefix: &str, i: usize, item: &DataItem, v: &mut Violations) {
        let g = |name: &str| format!("{prefix}.items[{i}].{name}");
        check_field_path(v, &g("field"), &item.field);
        if self.items[..i].iter().any(|o| o.field == item.field) {
            v.add(g("field"), format!("`{}` is listed twice", item.field));
        }
        check_text(v, &g("type"), &item.data_type, 64, false);
        check_text(v, &g("description"), &item.description, 1000, false);
        check_text(v, &g("legal_basis"), &item.legal_basis, 1000, false);
        let own_basis = item.sharing_class == SharingClass::NotShared;
        if own_basis && item.legal_basis.trim().is_empty() {
            v.add(
                g("legal_basis"),
                "is required when the item is NOT_SHARED: name the law or regulation",
            );
        }
        let restricts = matches!(
            item.sharing_class,
            SharingClass::Conditional | SharingClass::NotShared
        ) && item.sharing_class != self.sharing_class;
        if let Some(kind) = self
            .record_kind
            .filter(|k| restricts && RecordKind::GOVERNED.contains(k))
        {
            if !restrictable(kind, &item.field) {
                v.add(
                    g("sharing_class"),
                    format!(
                        "`{}` cannot be withheld from a {} record on its own (only the whole entry can be {}); fields that can: {}",
                        item.field,
                        kind.as_str(),
                        class_name(item.sharing_class),
                        restrictable_fields(kind).join(", ")
                    ),
                );
            }
        }
        if !item.open_to.is_empty() && self.class_of(item) != SharingClass::Conditional {
            v.add(
                g("open_to"),
                "applies to CONDITIONAL items only: other items are shared with everyone or no one",
            );
        }
        if item.open_to.len() > MAX_OPEN_TO {
            v.add(
                g("open_to"),
                format!("names more than {MAX_OPEN_TO} parties"),
            );
        }
        for (j, party) in item.open_to.iter().enumerate().take(MAX_OPEN_TO) {
            if item.open_to[..j].contains(party) {
                v.add(
                    format!("{prefix}.items[{i}].open_to[{j}]"),
                    format!("`{party}` is named twice"),
                );
            }
        }
    }
}

fn class_name(class: SharingClass) -> &'static str {
    match class {
        SharingClass::Unspecified => "SHARING_CLASS_UNSPECIFIED",
        SharingClass::Unconditional => "UNCONDITIONAL",
        SharingClass::Conditional => "CONDITIONAL",
        SharingClass::NotShared => "NOT_SHARED",
    }
}

/// A resource code: 1-64 of A-Z, a-z, 0-9, '-', '_' and '.'.
fn check_resource_code(v: &mut Violations, field: &str, code: &str) {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if code.is_empty() {
        v.add(field, "is required");
    } else if !ok {
        v.add(
            field,
            format!("`{code}` is not a resource code: 1-64 of A-Z, a-z, 0-9, '-', '_' and '.'"),
        );
    }
}

/// A field path: dot-separated segments of lowercase letters, digits and '_', at most 128
/// characters.
fn check_field_path(v: &mut Violations, field: &str, path: &str) {
    let ok = !path.is_empty()
        && path.len() <= 128
        && path.split('.').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if path.is_empty() {
        v.add(field, "is required");
    } else if !ok {
        v.add(
            field,
            format!("`{path}` is not a field path like contact.phone (a-z, 0-9, '_', '.')"),
        );
    }
}

#[cfg(test)]
mod tests;
