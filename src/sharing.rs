//! What an owner sends each peer, decided by its catalog and the grants it gave (政务数据共享条例
//! 第十三条起): an UNCONDITIONAL item goes to every member, a CONDITIONAL item only to a member
//! holding an active grant for it (an approved access request not yet expired) or named in the
//! item's `open_to`, a NOT_SHARED item to no one. A record kind the owner has no catalog entry
//! for is not sent at all.
//!
//! - [`SharingView`]: the decision, a pure function of the owner's entries, its grants and the
//!   time, so the owner and (later) the receiver compute the same answer.
//! - [`Sharing`]: the owner's current view, reloaded from its records when its log shows a
//!   catalog entry or an answer newer than the view (the outbound stream asks before it signs).
//! - [`default_catalog`] and [`seed_default_catalog`]: the entries a party publishes at start
//!   when it has none for a kind (`[sharing] default_catalog`), equivalent to the shipped
//!   behaviour before the catalog: everything shared within the federation, contact phones
//!   CONDITIONAL and open to the members of the provider's province only.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{Federation, RecordKind};
use crate::records::catalog::restrictable;
use crate::records::{
    AccessFilter, AccessState, CatalogEntry, CatalogFilter, DataItem, Feed, MAX_PAGE_SIZE, Page,
    RecordError, Records, ResourceName, SharingClass, Violations, WriteMeta,
};

/// A grant: an approved access request of `consumer` for `items` of the entry `entry`, valid
/// until `valid_until` (microseconds since the epoch; the first instant it no longer holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub consumer: String,
    /// Resource name of the catalog entry.
    pub entry: String,
    pub items: Vec<String>,
    pub valid_until: i64,
}

/// One provider's catalog entries and the grants it gave, as of its change `as_of`.
#[derive(Debug, Clone, Default)]
pub struct SharingView {
    entries: Vec<CatalogEntry>,
    grants: Vec<Grant>,
    /// The provider's last change-log sequence number when the view was read.
    pub as_of: u64,
}

impl SharingView {
    pub fn new(entries: Vec<CatalogEntry>, grants: Vec<Grant>, as_of: u64) -> Self {
        SharingView {
            entries,
            grants,
            as_of,
        }
    }

    /// What `consumer` receives of the provider's records of `kind` at time `now`: `None` when
    /// nothing, else the field paths to empty first (without the kind prefix, e.g.
    /// "contact.phone").
    ///
    /// An entry admits the consumer when its own class is UNCONDITIONAL, or CONDITIONAL with
    /// an active grant of the consumer on it. A field an item restricts (CONDITIONAL or
    /// NOT_SHARED, in any entry of the kind) is emptied unless no entry makes it NOT_SHARED
    /// and an admitting entry lists it UNCONDITIONAL, or lists it CONDITIONAL and the consumer
    /// holds it under an active grant of that entry or is named in the item's `open_to`.
    pub fn visibility(
        &self,
        consumer: &str,
        kind: RecordKind,
        now: i64,
    ) -> Option<BTreeSet<String>> {
        let entries: Vec<&CatalogEntry> = self
            .entries
            .iter()
            .filter(|e| e.record_kind == Some(kind))
            .collect();
        let granted = |entry: &CatalogEntry| -> Vec<&Grant> {
            let name = entry_name(entry);
            self.grants
                .iter()
                .filter(|g| g.consumer == consumer && g.entry == name && now < g.valid_until)
                .collect()
        };
        let admitting: Vec<(&CatalogEntry, Vec<&Grant>)> = entries
            .iter()
            .map(|e| (*e, granted(e)))
            .filter(|(e, grants)| match e.sharing_class {
                SharingClass::Unconditional => true,
                SharingClass::Conditional => !grants.is_empty(),
                SharingClass::NotShared | SharingClass::Unspecified => false,
            })
            .collect();
        if admitting.is_empty() {
            return None;
        }
        let mut withheld = BTreeSet::new();
        let mut never = BTreeSet::new();
        for entry in &entries {
            for item in entry.items.iter().filter(|i| restrictable(kind, &i.field)) {
                match entry.class_of(item) {
                    SharingClass::NotShared => {
                        never.insert(item.field.clone());
                    }
                    SharingClass::Conditional => {
                        withheld.insert(item.field.clone());
                    }
                    _ => {}
                }
            }
        }
        let opened = |field: &str| {
            admitting.iter().any(|(entry, grants)| {
                entry.items.iter().filter(|i| i.field == field).any(|item| {
                    match entry.class_of(item) {
                        SharingClass::Unconditional => true,
                        SharingClass::Conditional => {
                            item.open_to.iter().any(|p| p == consumer)
                                || grants.iter().any(|g| g.items.iter().any(|i| i == field))
                        }
                        _ => false,
                    }
                })
            })
        };
        withheld.retain(|field| !opened(field));
        withheld.extend(never);
        Some(withheld)
    }
}

impl SharingView {
    /// The fields of `kind` an item of the provider's entries makes CONDITIONAL: a receiver
    /// holds them only while a grant or the item's `open_to` admits it.
    pub fn conditional_items(&self, kind: RecordKind) -> Vec<String> {
        let mut items = BTreeSet::new();
        for entry in self.entries.iter().filter(|e| e.record_kind == Some(kind)) {
            for item in entry.items.iter().filter(|i| restrictable(kind, &i.field)) {
                if entry.class_of(item) == SharingClass::Conditional {
                    items.insert(item.field.clone());
                }
            }
        }
        items.into_iter().collect()
    }
}

/// Replaces the value at a dotted path by the empty value of its type. Returns false when the
/// path does not exist (nothing to withhold).
pub(crate) fn empty_path(value: &mut Value, path: &str) -> bool {
    let mut target = value;
    for segment in path.split('.') {
        match target.get_mut(segment) {
            Some(next) => target = next,
            None => return false,
        }
    }
    *target = crate::vault::emptied(target);
    true
}

/// `body` (a record's JSON) with the values at `paths` emptied, and the paths whose value
/// changed; `None` when none did (already empty, or absent).
pub fn redact_body(body: &str, paths: &[String]) -> Option<(String, Vec<String>)> {
    let mut value: Value = serde_json::from_str(body).ok()?;
    let before = value.clone();
    let mut changed = Vec::new();
    for path in paths {
        let old = path.split('.').try_fold(&before, |v, s| v.get(s));
        if empty_path(&mut value, path) && old != path.split('.').try_fold(&value, |v, s| v.get(s))
        {
            changed.push(path.clone());
        }
    }
    (!changed.is_empty()).then(|| (value.to_string(), changed))
}

/// One consumer's visibility of every governed kind at one instant: computed once per batch,
/// then looked up per change.
#[derive(Debug, Clone)]
pub struct PeerView {
    by_kind: Vec<(RecordKind, Option<BTreeSet<String>>)>,
}

impl PeerView {
    /// As [`SharingView::visibility`] for this consumer and instant.
    pub fn visibility(&self, kind: RecordKind) -> Option<&BTreeSet<String>> {
        self.by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, v)| v.as_ref())
    }
}

impl SharingView {
    /// What `consumer` receives of each governed kind at `now`.
    pub fn for_peer(&self, consumer: &str, now: i64) -> PeerView {
        PeerView {
            by_kind: RecordKind::GOVERNED
                .iter()
                .map(|&kind| (kind, self.visibility(consumer, kind, now)))
                .collect(),
        }
    }
}

fn entry_name(entry: &CatalogEntry) -> String {
    ResourceName::new(&entry.owner, RecordKind::CatalogEntry, entry.id).to_string()
}

/// The owner's current sharing view, shared by every outbound stream.
pub struct Sharing {
    records: Records,
    feed: Feed,
    view: RwLock<Arc<SharingView>>,
}

impl Sharing {
    /// Reads the owner's view from its records.
    pub async fn load(records: Records, feed: Feed) -> Result<Arc<Sharing>, RecordError> {
        let view = read_view(&records, &feed).await?;
        Ok(Arc::new(Sharing {
            records,
            feed,
            view: RwLock::new(Arc::new(view)),
        }))
    }

    /// The time as the record rules read it.
    pub fn now(&self) -> i64 {
        self.records.now()
    }

    /// The view as last read.
    pub fn current(&self) -> Arc<SharingView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A view that includes the owner's change `seq`: the current one if it does, else one
    /// read anew.
    pub async fn as_of(&self, seq: u64) -> Result<Arc<SharingView>, RecordError> {
        let current = self.current();
        if current.as_of >= seq {
            return Ok(current);
        }
        let fresh = Arc::new(read_view(&self.records, &self.feed).await?);
        let mut slot = self.view.write().unwrap_or_else(|e| e.into_inner());
        if slot.as_of < fresh.as_of {
            *slot = fresh.clone();
        }
        tracing::info!(as_of = fresh.as_of, "sharing view reloaded");
        Ok(fresh)
    }
}

/// The owner's entries and the grants it gave, read after its log position, so the view
/// includes at least that position.
async fn read_view(records: &Records, feed: &Feed) -> Result<SharingView, RecordError> {
    let as_of = feed.last_seq(records.party()).await?;
    let mut view = read_view_of(records, records.party()).await?;
    view.as_of = as_of;
    Ok(view)
}

/// `provider`'s entries and the grants of it held here: at the provider every grant it gave,
/// at a receiver the grants it holds (its own requests and their answers).
pub async fn read_view_of(records: &Records, provider: &str) -> Result<SharingView, RecordError> {
    let entries = entries_of(records, provider).await?;
    let mut grants = Vec::new();
    let filter = AccessFilter {
        provider: provider.to_string(),
        state: Some(AccessState::Approved),
        ..Default::default()
    };
    let mut page = first_page();
    loop {
        let (batch, next) = records.list_access_requests(&filter, &page).await?;
        grants.extend(batch.into_iter().map(|view| Grant {
            consumer: view.request.owner,
            entry: view.request.entry,
            items: view.outcome.granted,
            valid_until: view.outcome.valid_until,
        }));
        if next.is_empty() {
            break;
        }
        page.token = next;
    }
    Ok(SharingView::new(entries, grants, 0))
}

fn first_page() -> Page {
    Page {
        size: MAX_PAGE_SIZE as i32,
        token: String::new(),
    }
}

/// Every catalog entry `provider` published, as held here.
async fn entries_of(records: &Records, provider: &str) -> Result<Vec<CatalogEntry>, RecordError> {
    let mut entries = Vec::new();
    let filter = CatalogFilter {
        provider: provider.to_string(),
        ..Default::default()
    };
    let mut page = first_page();
    loop {
        let (batch, next) = records.list_catalog_entries(&filter, &page).await?;
        entries.extend(batch);
        if next.is_empty() {
            break;
        }
        page.token = next;
    }
    Ok(entries)
}

/// The default entries of `party`: one per governed record kind, UNCONDITIONAL, listing the
/// fields that can be withheld; a project's contact phone CONDITIONAL and open to the other
/// members of the party's province.
pub fn default_catalog(federation: &Federation, party: &str) -> Vec<CatalogEntry> {
    let province = federation
        .get(party)
        .map(|p| p.province.clone())
        .unwrap_or_default();
    let same_province: Vec<String> = federation
        .parties()
        .iter()
        .filter(|p| p.id != party && p.province == province)
        .map(|p| p.id.clone())
        .collect();
    let item = |field: &str, description: &str| DataItem {
        field: field.into(),
        data_type: "string".into(),
        description: description.into(),
        sharing_class: SharingClass::Unspecified,
        legal_basis: String::new(),
        open_to: Vec::new(),
    };
    RecordKind::GOVERNED
        .iter()
        .map(|&kind| {
            let (display, items, conditions) = match kind {
                RecordKind::Project => (
                    "招商项目信息",
                    vec![
                        item("stage", "项目阶段"),
                        item("industry", "所属产业"),
                        item("investor.credit_code", "投资方统一社会信用代码"),
                        item("total_investment_yuan", "总投资（元）"),
                        item("land_area_mu", "用地面积（亩）"),
                        item("contact.name", "联系人"),
                        DataItem {
                            sharing_class: SharingClass::Conditional,
                            open_to: same_province.clone(),
                            ..item("contact.phone", "联系电话")
                        },
                    ],
                    format!(
                        "联系电话跨省使用须提出共享申请并经审核；同省（{province}）成员按省内协议直接共享。"
                    ),
                ),
                RecordKind::Allocation => (
                    "要素配置信息",
                    vec![item("description", "配置说明")],
                    String::new(),
                ),
                RecordKind::Decision => ("要素共商意见", vec![item("comment", "意见说明")], String::new()),
                RecordKind::Referral => ("项目引荐信息", vec![item("reason", "引荐理由")], String::new()),
                _ => ("项目引荐答复", vec![item("comment", "答复说明")], String::new()),
            };
            CatalogEntry {
                id: Uuid::nil(),
                owner: party.to_string(),
                resource_code: format!("{}-{}", party.to_ascii_uppercase(), kind.as_str().to_ascii_uppercase()),
                display_name: display.to_string(),
                summary: format!("{party} 的{display}（默认目录，可更新）"),
                record_kind: Some(kind),
                items,
                sharing_class: SharingClass::Unconditional,
                legal_basis: String::new(),
                conditions,
                update_cycle: "实时".into(),
                revision: 0,
                create_time: 0,
                update_time: 0,
            }
        })
        .collect()
}

/// Publishes the default entry of every governed kind this party has no entry for yet. Safe
/// to run at every start and from several replicas at once: each entry's request id is
/// derived from the party and the kind, so a second publication is a replay.
pub async fn seed_default_catalog(records: &Records) -> Result<Vec<CatalogEntry>, RecordError> {
    let party = records.party().to_string();
    let existing: BTreeSet<RecordKind> = entries_of(records, &party)
        .await?
        .iter()
        .filter_map(|e| e.record_kind)
        .collect();
    let mut published = Vec::new();
    for entry in default_catalog(&records.federation(), &party) {
        let Some(kind) = entry.record_kind.filter(|k| !existing.contains(k)) else {
            continue;
        };
        let seed = Sha256::digest(format!("default-catalog/{party}/{}", kind.as_str()));
        let mut id = [0u8; 16];
        id.copy_from_slice(&seed[..16]);
        let meta = WriteMeta {
            request_id: uuid::Builder::from_random_bytes(id).into_uuid().to_string(),
            fingerprint: seed.to_vec(),
            audit: None,
        };
        match records
            .publish_catalog_entry(entry, meta, Violations::new())
            .await
        {
            Ok(e) => {
                tracing::info!(kind = kind.as_str(), resource_code = %e.resource_code, "default catalog entry published");
                published.push(e);
            }
            Err(RecordError::Duplicate { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(published)
}

pub mod erasure;

#[cfg(test)]
mod tests;
