//! Catalog entries (政务数据目录): publish, update with etag and mask, read and list. Only the
//! provider writes its entries; every party reads every party's entries.

use uuid::Uuid;

use super::{Page, Records, WriteMeta, decode, non_empty, parse_name, stored};
use crate::domain::RecordKind;
use crate::records::{CatalogEntry, RecordError, SharingClass, Violations};
use crate::store::{IndexFields, ListQuery, StoreError, StoredRecord};

/// Filters of `ListCatalogEntries`.
#[derive(Debug, Clone, Default)]
pub struct CatalogFilter {
    /// Empty: every provider.
    pub provider: String,
    /// `None`: any record kind.
    pub record_kind: Option<RecordKind>,
    /// Unspecified: any; otherwise entries with at least one item of this class.
    pub sharing_class: SharingClass,
}

impl Records {
    /// Publishes an entry owned by this party. A resource code is published once per provider.
    pub async fn publish_catalog_entry(
        &self,
        mut entry: CatalogEntry,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<CatalogEntry, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return decode(&first);
        }
        entry.validate("entry", &mut v);
        self.check_open_to(&entry, &mut v);
        v.into_result()?;
        let now = self.now();
        entry.id = Uuid::now_v7();
        entry.owner = self.party.clone();
        entry.revision = 1;
        entry.create_time = now;
        entry.update_time = now;
        let unique = format!("catalog-entry/{}/{}", entry.owner, entry.resource_code);
        self.write_audited(entry_stored(&entry)?, None, Some(unique), key?, now, meta.audit)
            .await
            .map_err(|e| match e {
                RecordError::Store(StoreError::AlreadyExists) => RecordError::Duplicate {
                    reason: "RESOURCE_CODE_TAKEN",
                    message: format!(
                        "{} already published an entry with resource code `{}`; update that entry instead",
                        self.party, entry.resource_code
                    ),
                },
                other => other,
            })?
            .or_first(entry)
    }

    /// Applies `patch` to the fields named in `mask` of the entry `name`, if `etag_seen` is
    /// current.
    pub async fn update_catalog_entry(
        &self,
        name: &str,
        etag_seen: &str,
        patch: CatalogEntry,
        mask: Vec<String>,
        meta: WriteMeta,
        v: Violations,
    ) -> Result<CatalogEntry, RecordError> {
        self.update_with_etag(
            RecordKind::CatalogEntry,
            "entry",
            name,
            etag_seen,
            &meta,
            v,
            |_: &CatalogEntry, next, v| {
                next.apply_mask(&patch, &mask, v);
                next.validate("entry", v);
                self.check_open_to(next, v);
            },
        )
        .await
    }

    /// Every party an item is open to must be another member of the federation.
    fn check_open_to(&self, entry: &CatalogEntry, v: &mut Violations) {
        use crate::records::catalog::{MAX_ITEMS, MAX_OPEN_TO};
        for (i, item) in entry.items.iter().enumerate().take(MAX_ITEMS) {
            for (j, party) in item.open_to.iter().enumerate().take(MAX_OPEN_TO) {
                if party == &self.party || !self.federation().contains(party) {
                    v.add(
                        format!("entry.items[{i}].open_to[{j}]"),
                        format!("`{party}` is not another member of the federation"),
                    );
                }
            }
        }
    }

    /// Reads one entry, of any party.
    pub async fn get_catalog_entry(&self, name: &str) -> Result<CatalogEntry, RecordError> {
        let name = parse_name(name, RecordKind::CatalogEntry, "name")?;
        self.fetch(&name).await
    }

    /// Lists entries of every provider (or one), in publication order.
    pub async fn list_catalog_entries(
        &self,
        filter: &CatalogFilter,
        page: &Page,
    ) -> Result<(Vec<CatalogEntry>, String), RecordError> {
        let fingerprint = format!(
            "c|{}|{:?}|{:?}",
            filter.provider, filter.record_kind, filter.sharing_class
        );
        let query = ListQuery {
            owner: non_empty(&filter.provider),
            ..ListQuery::of(RecordKind::CatalogEntry, 0)
        };
        let (kind, class) = (filter.record_kind, filter.sharing_class);
        self.list_page(
            &[("provider", &filter.provider)],
            fingerprint,
            page,
            query,
            |row| {
                Box::pin(async move {
                    let entry: CatalogEntry = decode(&row)?;
                    let kind_ok = kind.is_none() || entry.record_kind == kind;
                    let class_ok = class == SharingClass::Unspecified || entry.has_class(class);
                    Ok((kind_ok && class_ok).then_some(entry))
                })
            },
        )
        .await
    }
}

super::versioned!(CatalogEntry, entry_stored);

pub(super) fn entry_stored(e: &CatalogEntry) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::CatalogEntry,
        &e.owner,
        e.id,
        e.revision,
        IndexFields::default(),
        e,
    )
}
