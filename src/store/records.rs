//! The records and the change log: records by kind, owner and id; writes with their
//! idempotency key and change-log entry in one transaction; the owner's change log and this
//! gateway's feed (own changes and applied replicas in commit order).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
use crate::domain::RecordKind;

/// Columns list filters use; which ones are set depends on the kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFields {
    /// Project stage.
    pub stage: Option<String>,
    /// Project industry.
    pub industry: Option<String>,
    /// Allocation factor kind.
    pub factor_kind: Option<String>,
    /// Resource name of the record this one belongs to: a decision's allocation, a referral's
    /// project, a referral response's referral.
    pub parent: Option<String>,
}

/// A record version's columns, named alike in both backends: in `log`, which holds every
/// version once, and through [`CURRENT_RECORDS`] for the current one of each record.
pub(crate) const VERSION_COLUMNS: &str =
    "kind, id, owner, revision, stage, industry, factor_kind, parent, body";

/// [`VERSION_COLUMNS`] of a change-log entry named `l`.
pub(crate) const LOGGED_VERSION: &str =
    "l.kind, l.id, l.owner, l.revision, l.stage, l.industry, l.factor_kind, l.parent, l.body";

/// The current version of each record: its row in `records` (what lists filter on) and the
/// change-log entry the row names, which holds the version. Select [`VERSION_COLUMNS`] from it.
pub(crate) const CURRENT_RECORDS: &str = "(SELECT r.kind, r.id, r.owner, l.revision, r.stage, \
     r.industry, r.factor_kind, r.parent, l.body FROM records r \
     JOIN log l ON l.position = r.position) c";

/// One record version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub kind: RecordKind,
    pub owner: String,
    pub id: Uuid,
    /// 1 on create, +1 on every accepted update.
    pub revision: i64,
    pub index: IndexFields,
    /// The record itself, serialized by the `records` module.
    pub body: String,
}

/// The client-chosen request id scoped to the party that sent it, plus a fingerprint of the
/// request so that reusing an id for a different request is caught.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub party: String,
    pub request_id: String,
    pub fingerprint: Vec<u8>,
}

impl Idempotency {
    /// This request's first answer from its stored row: the row's fingerprint, and the record
    /// version it answered with (from the change-log entry the row names, or from the row's own
    /// copy in rows that name none; `None` when the entry it names is gone).
    pub(crate) fn first_answer(
        &self,
        fingerprint: &[u8],
        answer: Option<StoredRecord>,
    ) -> Result<StoredRecord, StoreError> {
        if fingerprint != self.fingerprint {
            return Err(StoreError::RequestIdReused(self.request_id.clone()));
        }
        answer.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "request {} of {} names a change-log entry that is gone",
                self.request_id, self.party
            ))
        })
    }
}

/// A record write.
#[derive(Debug, Clone)]
pub struct Write {
    pub record: StoredRecord,
    /// `None` to create; `Some(r)` to update a record currently at revision `r`.
    pub expected_revision: Option<i64>,
    /// New records created in the same transaction (e.g. the project an accepted referral
    /// creates); each gets its own change-log entry.
    pub also_create: Vec<StoredRecord>,
    /// A natural key that may be written once only (e.g. one decision per party and round);
    /// a second write with the same key fails with [`StoreError::AlreadyExists`].
    pub unique: Option<String>,
    pub key: Idempotency,
    /// Time of the write (microseconds since the epoch), recorded in the change log.
    pub time: i64,
    /// Also appends to the writer's change log, after the record itself, the current version
    /// of every record of this kind the writer owns: a write that widens what peers may
    /// receive (a catalog entry, a grant) makes the records go out again, evaluated anew.
    pub resend: Option<RecordKind>,
    /// The audit event of the call that makes this write, committed in the write's own
    /// transaction when the store can (one commit instead of two); see [`WriteAudit`].
    pub audit: Option<WriteAudit>,
}

/// The audit event of a call that writes, handed to the store with the write. A store that
/// commits it with the write marks it committed; the call layer then does not append it again.
/// A store that does not (or a write that was a replay, or failed) leaves it unmarked, and the
/// call layer appends the call's event as for any call.
#[derive(Debug, Clone)]
pub struct WriteAudit(Arc<std::sync::Mutex<WriteAuditState>>);

#[derive(Debug)]
struct WriteAuditState {
    event: super::NewAuditEvent,
    committed: Option<u64>,
}

impl WriteAudit {
    /// The call's event as it began (time, caller, method, request id); [`WriteAudit::name`]
    /// completes it.
    pub fn new(event: super::NewAuditEvent) -> Self {
        WriteAudit(Arc::new(std::sync::Mutex::new(WriteAuditState {
            event,
            committed: None,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriteAuditState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes the event as it is committed if the write is: the records it names, and the
    /// outcome `OK`.
    pub fn naming(self, records: Vec<String>) -> Self {
        let mut state = self.state();
        state.event.records = records;
        state.event.code = "OK".to_string();
        drop(state);
        self
    }

    /// The event to commit.
    pub fn event(&self) -> super::NewAuditEvent {
        self.state().event.clone()
    }

    /// The sequence number the event was committed under, if the store committed it.
    pub fn committed(&self) -> Option<u64> {
        self.state().committed
    }

    /// Called by a store once the transaction holding `audited`'s events, in that order and
    /// ending at sequence number `last`, has committed.
    pub(crate) fn mark_committed(audited: &[WriteAudit], last: u64) {
        let first = (last + 1).saturating_sub(audited.len() as u64);
        for (i, audit) in audited.iter().enumerate() {
            audit.state().committed = Some(first + i as u64);
        }
    }
}

#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Written now (and appended to the owner's change log).
    Applied(StoredRecord),
    /// The same request was already applied; this is its first result.
    Replayed(StoredRecord),
}

/// One entry of an owner's change log: the record as it was after change `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub owner: String,
    pub seq: u64,
    pub time: i64,
    pub record: StoredRecord,
}

/// A change as it appears in this gateway's feed: own changes and applied replicas, in the
/// order they were committed here. `position` is what Watch resume tokens encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub position: u64,
    pub change: Change,
}

/// What to list: one kind, optional filters, keyset pagination on the (time-ordered) id.
/// Build with [`ListQuery::of`] and set the filters that apply.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub kind: RecordKind,
    pub owner: Option<String>,
    pub stage: Option<String>,
    pub industry: Option<String>,
    pub factor_kind: Option<String>,
    pub parent: Option<String>,
    /// Only records with an id greater than this.
    pub after: Option<Uuid>,
    pub limit: usize,
}

impl ListQuery {
    /// Every record of `kind`, up to `limit`, no filter.
    pub fn of(kind: RecordKind, limit: usize) -> Self {
        ListQuery {
            kind,
            owner: None,
            stage: None,
            industry: None,
            factor_kind: None,
            parent: None,
            after: None,
            limit,
        }
    }
}

/// Records, their writes and the change feed.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    async fn get(
        &self,
        kind: RecordKind,
        owner: &str,
        id: Uuid,
    ) -> Result<Option<StoredRecord>, StoreError>;

    async fn list(&self, query: ListQuery) -> Result<Vec<StoredRecord>, StoreError>;

    /// The first result of an already-applied request, `None` if the key is new, or
    /// [`StoreError::RequestIdReused`] when the key was used for a different request.
    async fn replay(&self, key: &Idempotency) -> Result<Option<StoredRecord>, StoreError>;

    /// Applies a create or update, its change-log entry and its idempotency key atomically and
    /// durably.
    async fn write(&self, write: Write) -> Result<WriteOutcome, StoreError>;

    /// Up to `limit` entries of `owner`'s change log with sequence numbers above `after`.
    async fn changes(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;

    /// The last sequence number of `owner`'s change log (0 when empty).
    async fn last_seq(&self, owner: &str) -> Result<u64, StoreError>;

    /// Up to `limit` feed entries after position `after`.
    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError>;

    /// The last feed position (0 when the feed is empty).
    async fn feed_position(&self) -> Result<u64, StoreError>;

    /// A signal bumped whenever the feed grows through another process sharing this store
    /// (another replica of the gateway), for backends that can be shared; `None` when only
    /// this process writes (then the caller's own signal is enough).
    fn feed_signal(&self) -> Option<Arc<tokio::sync::watch::Sender<u64>>> {
        None
    }
}

impl Write {
    /// Whether this write may apply to the record as stored now (`None`: no such record): a
    /// create needs none, an update the expected revision.
    pub(crate) fn check_revision(&self, current: Option<&StoredRecord>) -> Result<(), StoreError> {
        match (self.expected_revision, current) {
            (None, Some(_)) => Err(StoreError::AlreadyExists),
            (Some(_), None) => Err(StoreError::NotFound),
            (Some(expected), Some(cur)) if cur.revision != expected => Err(StoreError::Conflict {
                current: cur.revision,
            }),
            _ => Ok(()),
        }
    }
}

impl StoredRecord {
    /// The record version as JSON, as stores kept it in the change log and in requests before
    /// each version was stored once in columns (the migrations' tests write such stores).
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The version from its JSON: a request's copy of its first answer in rows written before
    /// requests named their change-log entry.
    pub(crate) fn decode(text: &str) -> Result<StoredRecord, StoreError> {
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored record: {e}")))
    }

    /// Refuses this version in `owner`'s change log unless `owner` owns it: an entry's owner
    /// column is its record's owner too.
    pub(crate) fn check_log_owner(&self, owner: &str) -> Result<(), StoreError> {
        if self.owner == owner {
            return Ok(());
        }
        Err(StoreError::Corrupt(format!(
            "a record of `{}` in the change log of `{owner}`",
            self.owner
        )))
    }

    /// Whether this replicated version is newer than the one stored (`None`: none is), so a
    /// replica never goes back to an older revision.
    ///
    /// The same revision supersedes when its body differs: the owner sent it again because
    /// what this party may see of it changed (a grant or catalog entry widened it).
    pub(crate) fn supersedes(&self, current: Option<&StoredRecord>) -> bool {
        current.is_none_or(|cur| {
            cur.revision < self.revision || (cur.revision == self.revision && cur.body != self.body)
        })
    }
}
