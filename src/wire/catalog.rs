//! Conversions of the resource catalog between wire messages and domain records.

use super::pb;
use super::{known, timestamp};
use crate::domain::RecordKind;
use crate::records::{self, CatalogEntry, DataItem, ResourceName, SharingClass, Violations};

/// A sharing class as sent; UNSPECIFIED is `Unspecified` (an item then takes its entry's).
pub fn sharing_class_from(value: i32, field: &str, v: &mut Violations) -> SharingClass {
    match known(value, field, v) {
        Some(pb::SharingClass::Unconditional) => SharingClass::Unconditional,
        Some(pb::SharingClass::Conditional) => SharingClass::Conditional,
        Some(pb::SharingClass::NotShared) => SharingClass::NotShared,
        Some(pb::SharingClass::Unspecified) | None => SharingClass::Unspecified,
    }
}

fn sharing_class_to(c: SharingClass) -> pb::SharingClass {
    match c {
        SharingClass::Unspecified => pb::SharingClass::Unspecified,
        SharingClass::Unconditional => pb::SharingClass::Unconditional,
        SharingClass::Conditional => pb::SharingClass::Conditional,
        SharingClass::NotShared => pb::SharingClass::NotShared,
    }
}

/// A record kind named in a request: `None` for UNSPECIFIED; a number the contract does not
/// define is a violation.
pub fn record_kind_from(value: i32, field: &str, v: &mut Violations) -> Option<RecordKind> {
    super::kind_from_wire(value).unwrap_or_else(|value| {
        v.add(field, format!("{value} is not a known value"));
        None
    })
}

/// A catalog entry as sent by a client; output-only fields are ignored.
pub fn catalog_entry_from(e: pb::CatalogEntry, v: &mut Violations) -> CatalogEntry {
    CatalogEntry {
        id: uuid::Uuid::nil(),
        owner: String::new(),
        resource_code: e.resource_code,
        display_name: e.display_name,
        summary: e.summary,
        record_kind: record_kind_from(e.record_kind, "entry.record_kind", v),
        items: e
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| DataItem {
                field: item.field,
                data_type: item.r#type,
                description: item.description,
                sharing_class: sharing_class_from(
                    item.sharing_class,
                    &format!("entry.items[{i}].sharing_class"),
                    v,
                ),
                legal_basis: item.legal_basis,
                open_to: item.open_to,
            })
            .collect(),
        sharing_class: sharing_class_from(e.sharing_class, "entry.sharing_class", v),
        legal_basis: e.legal_basis,
        conditions: e.conditions,
        update_cycle: e.update_cycle,
        revision: 0,
        create_time: 0,
        update_time: 0,
    }
}

/// A catalog entry as every party reads it.
pub fn catalog_entry_to(e: CatalogEntry) -> pb::CatalogEntry {
    let name = ResourceName::new(&e.owner, RecordKind::CatalogEntry, e.id);
    pb::CatalogEntry {
        etag: records::etag(&name, e.revision),
        name: name.to_string(),
        provider: e.owner,
        resource_code: e.resource_code,
        display_name: e.display_name,
        summary: e.summary,
        record_kind: e
            .record_kind
            .map_or(pb::RecordKind::Unspecified, super::kind_to_wire) as i32,
        items: e
            .items
            .into_iter()
            .map(|i| pb::DataItem {
                field: i.field,
                r#type: i.data_type,
                description: i.description,
                sharing_class: sharing_class_to(i.sharing_class) as i32,
                legal_basis: i.legal_basis,
                open_to: i.open_to,
            })
            .collect(),
        sharing_class: sharing_class_to(e.sharing_class) as i32,
        legal_basis: e.legal_basis,
        conditions: e.conditions,
        update_cycle: e.update_cycle,
        create_time: Some(timestamp(e.create_time)),
        update_time: Some(timestamp(e.update_time)),
    }
}
