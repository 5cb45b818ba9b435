//! Durable storage behind one trait, so the SQLite (embedded default, one process) and
//! PostgreSQL (several replicas of a gateway on one database) backends give the same
//! guarantees, checked by one conformance suite (`store/conformance.rs`) run against both:
//!
//! - a write is durable before it is acknowledged;
//! - a record write and its entry in the owner's change log commit in one transaction, with a
//!   gapless per-owner sequence number;
//! - a write carries an idempotency key; a retry with the same key returns the first result;
//! - an update names the revision it expects and fails with [`StoreError::Conflict`] otherwise.
//!
//! The store knows records only as kind, owner, id, revision, a few index columns used by list
//! filters, and an opaque JSON body owned by the `records` module.

#[cfg(test)]
pub mod conformance;
pub mod postgres;
pub mod sqlite;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Kinds of record, as stored and as named in sharing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Project,
    Allocation,
    /// A party's decision on one round of an allocation; owned by the deciding party.
    Decision,
    /// A project handed to another party; owned by the referring party.
    Referral,
    /// The receiving party's answer to a referral; owned by the receiver.
    ReferralResponse,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Project => "project",
            RecordKind::Allocation => "allocation",
            RecordKind::Decision => "decision",
            RecordKind::Referral => "referral",
            RecordKind::ReferralResponse => "referral_response",
        }
    }

    /// Every kind, in a fixed order.
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Project,
        RecordKind::Allocation,
        RecordKind::Decision,
        RecordKind::Referral,
        RecordKind::ReferralResponse,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "project" => Some(RecordKind::Project),
            "allocation" => Some(RecordKind::Allocation),
            "decision" => Some(RecordKind::Decision),
            "referral" => Some(RecordKind::Referral),
            "referral_response" => Some(RecordKind::ReferralResponse),
            _ => None,
        }
    }
}

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
}

#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Written now (and appended to the owner's change log).
    Applied(StoredRecord),
    /// The same request was already applied; this is its first result.
    Replayed(StoredRecord),
}

impl WriteOutcome {
    pub fn into_record(self) -> StoredRecord {
        match self {
            WriteOutcome::Applied(record) | WriteOutcome::Replayed(record) => record,
        }
    }
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

/// What a receiver keeps of each change it applied: the exact bytes it received and the
/// owner's signature over them, or over the manifest of its batch that lists their hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub envelope: Vec<u8>,
    /// TLS SignatureScheme code point.
    pub scheme: u16,
    /// Empty when the batch's manifest carries the signature.
    pub signature: Vec<u8>,
    /// SHA-256 fingerprint (hex) of the signer's certificate, stored once in the store.
    pub signer: String,
}

/// One verified change from a peer.
#[derive(Debug, Clone)]
pub struct ReplicaChange {
    pub seq: u64,
    pub time: i64,
    /// `None` when the owner does not share this change's kind with us: only the cursor moves.
    pub record: Option<StoredRecord>,
    pub evidence: Evidence,
}

/// Consecutive verified changes of one owner, applied in one transaction.
#[derive(Debug, Clone)]
pub struct ReplicaBatch {
    pub owner: String,
    /// The signer certificate (fingerprint, DER) the evidence refers to.
    pub signer: (String, Vec<u8>),
    pub changes: Vec<ReplicaChange>,
    /// The owner's one signature over the whole batch, when it signed a manifest instead of
    /// each change; stored once, and each change's evidence refers to it.
    pub manifest: Option<SignedManifest>,
    /// When the batch was received (microseconds since the epoch).
    pub received: i64,
}

/// A stored piece of evidence with everything needed to check it without the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvidence {
    pub seq: u64,
    pub envelope: Vec<u8>,
    /// TLS SignatureScheme code point.
    pub scheme: u16,
    /// Empty when `manifest` carries the signature.
    pub signature: Vec<u8>,
    /// DER of the signer certificate.
    pub signer: Vec<u8>,
    /// SHA-256 of the manifest this change's evidence names, if any.
    pub manifest_digest: Option<Vec<u8>>,
    /// The named manifest as stored (`None` when it is missing).
    pub manifest: Option<SignedManifest>,
    /// When the change was received (microseconds since the epoch).
    pub received: i64,
}

/// The evidence of an owner's changes after a sequence number, with its signer certificate and
/// the manifest it names (`$1` owner, `$2` after, `$3` limit). Both backends run it as is.
pub(crate) const EVIDENCE_QUERY: &str = "\
    SELECT e.seq, e.envelope, e.scheme, e.signature, s.certificate, e.manifest, \
           m.manifest, m.scheme, m.signature, e.received \
    FROM evidence e JOIN signers s ON s.fingerprint = e.signer \
    LEFT JOIN manifests m ON m.digest = e.manifest \
    WHERE e.owner = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3";

/// An encoded `ChangeManifest` (the SHA-256 of each envelope of a batch, in order) and the
/// owner's signature over exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// SHA-256 of `manifest`: how evidence rows refer to it.
    pub digest: Vec<u8>,
    pub manifest: Vec<u8>,
    /// TLS SignatureScheme code point.
    pub scheme: u16,
    pub signature: Vec<u8>,
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The idempotency key was used before for a different request.
    #[error("request id `{0}` was already used for a different request")]
    RequestIdReused(String),
    /// The record is not at the expected revision.
    #[error("record is at revision {current}, not the expected one")]
    Conflict { current: i64 },
    #[error("record not found")]
    NotFound,
    #[error("record already exists")]
    AlreadyExists,
    /// A replicated change does not follow the stored cursor.
    #[error("change {got} of {owner} does not follow the applied cursor {cursor}")]
    OutOfOrder {
        owner: String,
        cursor: u64,
        got: u64,
    },
    /// The database cannot be reached or failed to commit; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// An audit event before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub time: i64,
    pub caller: String,
    pub method: String,
    /// Resource names the call touched.
    pub records: Vec<String>,
    /// Outcome: the gRPC code name, e.g. "OK", "PERMISSION_DENIED".
    pub code: String,
    pub request_id: String,
}

/// A stored audit event: its place in the chain and the hashes linking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub seq: u64,
    pub event: NewAuditEvent,
    /// Hash of the previous event (or of the anchor after pruning; zeros for the first).
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Where a pruned chain continues from: the last removed event's sequence and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAnchor {
    pub seq: u64,
    pub hash: Vec<u8>,
}

/// Filters of `ListAuditEvents`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub after_seq: u64,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub caller: Option<String>,
    pub method: Option<String>,
    pub code: Option<String>,
    pub limit: usize,
}

/// A chain head signed by the party that owns the chain, as a peer received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedHead {
    pub party: String,
    pub seq: u64,
    pub hash: Vec<u8>,
    pub time: i64,
    /// The encoded head exactly as signed.
    pub signed: Vec<u8>,
    pub scheme: u16,
    pub signature: Vec<u8>,
    pub signer: Vec<u8>,
}

/// Storage for one gateway. Implementations must be safe to share across tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
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

    /// The last change of `owner` applied here (0 when none).
    async fn cursor(&self, owner: &str) -> Result<u64, StoreError>;

    /// The evidence kept of `owner`'s changes after `after_seq`, in sequence order, at most
    /// `limit`.
    async fn evidence(
        &self,
        owner: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError>;

    /// Applies verified changes of one owner, their evidence and the new cursor in one durable
    /// transaction. Changes at or below the cursor are skipped (already applied); a change
    /// that does not follow the cursor fails the batch with [`StoreError::OutOfOrder`] and
    /// nothing of it is applied. Returns the new cursor.
    async fn apply_replicas(&self, batch: ReplicaBatch) -> Result<u64, StoreError>;

    /// The last feed position (0 when the feed is empty).
    async fn feed_position(&self) -> Result<u64, StoreError>;

    /// Checks the database answers, on a fresh connection, so a store that went away (file
    /// removed, server down) is noticed even while pooled connections linger.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes everything committed as compact on disk as the backend allows (shutdown).
    async fn checkpoint(&self) -> Result<(), StoreError>;

    /// Appends audit events in order, chaining each to the previous one with
    /// `crate::audit::link`, in one durable transaction. Returns the last sequence number.
    async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<u64, StoreError>;

    /// Audit events in sequence order, filtered.
    async fn audit_events(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// The anchor left by pruning, if any.
    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError>;

    /// The last event's (sequence, hash), or the anchor's when the chain is empty after pruning.
    async fn audit_head(&self) -> Result<Option<AuditAnchor>, StoreError>;

    /// Removes events up to `through` (inclusive), leaving an anchor so the rest stays
    /// verifiable. Returns the anchor.
    async fn prune_audit(&self, through: u64) -> Result<AuditAnchor, StoreError>;

    /// Stores a head another party signed (idempotent per party and sequence).
    async fn put_witnessed_head(&self, head: WitnessedHead) -> Result<(), StoreError>;

    /// Heads of `party` this gateway witnessed, by sequence.
    async fn witnessed_heads(&self, party: &str) -> Result<Vec<WitnessedHead>, StoreError>;

    /// A signal bumped whenever the feed grows through another process sharing this store
    /// (another replica of the gateway), for backends that can be shared; `None` when only
    /// this process writes (then the caller's own signal is enough).
    fn feed_signal(&self) -> Option<Arc<tokio::sync::watch::Sender<u64>>> {
        None
    }

    /// Claims the right to pull `peer`'s change log, so that of several replicas sharing this
    /// store only one pulls from a peer at a time. `None` while another replica holds it.
    /// Backends one process owns always grant it.
    async fn pull_lease(&self, peer: &str) -> Result<Option<PullLease>, StoreError> {
        let _ = peer;
        Ok(Some(PullLease::sole()))
    }
}

/// The right to pull one peer's change log, held until dropped or lost.
pub struct PullLease {
    /// Resolves when the lease is lost (its holder's database session ended); `None` for a
    /// lease that cannot be lost.
    lost: Option<futures_util::future::BoxFuture<'static, ()>>,
}

impl PullLease {
    /// A lease nobody else can contend for.
    pub fn sole() -> Self {
        PullLease { lost: None }
    }

    /// A lease that ends when `lost` resolves; dropping the lease drops `lost`, which must
    /// then give the lease up.
    pub fn until(lost: futures_util::future::BoxFuture<'static, ()>) -> Self {
        PullLease { lost: Some(lost) }
    }

    /// Resolves when the lease is lost; never, for a sole lease.
    pub async fn lost(&mut self) {
        match self.lost.as_mut() {
            Some(lost) => {
                lost.await;
                // Stays lost: a finished future must not be polled again.
                self.lost = Some(Box::pin(std::future::ready(())));
            }
            None => std::future::pending().await,
        }
    }
}

/// Opens the store `config` names (creating an SQLite file or the PostgreSQL schema if
/// needed).
pub async fn open(config: &crate::config::StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        crate::config::StoreConfig::Sqlite { path } => Arc::new(sqlite::SqliteStore::open(path)?),
        crate::config::StoreConfig::Postgres(options) => {
            Arc::new(postgres::PostgresStore::connect((**options).clone()).await?)
        }
    })
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

impl Change {
    /// A change-log row as both backends store it: the record version as JSON.
    pub(crate) fn decode(
        owner: String,
        seq: i64,
        time: i64,
        record: &str,
    ) -> Result<Change, StoreError> {
        let record: StoredRecord = serde_json::from_str(record)
            .map_err(|e| StoreError::Corrupt(format!("change {owner}/{seq}: {e}")))?;
        Ok(Change {
            owner,
            seq: seq as u64,
            time,
            record,
        })
    }
}

/// The stored list of resource names an audit event touched. A list that no longer parses is
/// kept visible (as is) for the verifier, which then reports the event as changed.
pub(crate) fn decode_audit_records(stored: String) -> Vec<String> {
    serde_json::from_str(&stored).unwrap_or_else(|_| vec![stored])
}

/// A record write waiting for the next group commit, and where its answer goes.
pub(crate) type QueuedWrite = (Write, oneshot::Sender<Result<WriteOutcome, StoreError>>);

/// Record writes waiting for a group commit, and whether a drain is running. The first write
/// queued while none runs starts one ([`Drain`]); the drain applies everything queued in one
/// transaction, looks again, and stops when it finds the queue empty. A burst of concurrent
/// writes so costs one writer task and one commit per round, not a task each.
#[derive(Clone, Default)]
pub(crate) struct WriteQueue(Arc<Mutex<Queued>>);

#[derive(Default)]
struct Queued {
    writes: Vec<QueuedWrite>,
    draining: bool,
}

impl WriteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `write`; the receiver gets its answer after the commit that applies it. Returns
    /// a drain when none is running: the caller must run it (on a task of its own, so a caller
    /// that goes away cannot cut a group commit short).
    pub(crate) fn push(
        &self,
        write: Write,
    ) -> (
        oneshot::Receiver<Result<WriteOutcome, StoreError>>,
        Option<Drain>,
    ) {
        let (reply, answer) = oneshot::channel();
        let mut queued = self.lock();
        queued.writes.push((write, reply));
        let start = !std::mem::replace(&mut queued.draining, true);
        let drain = start.then(|| Drain {
            queue: self.clone(),
            done: false,
        });
        (answer, drain)
    }
}

/// The one running drain of a [`WriteQueue`].
pub(crate) struct Drain {
    queue: WriteQueue,
    done: bool,
}

impl Drain {
    /// Everything queued since the last batch; `None` when nothing is, which ends the drain
    /// (the next write queued starts another).
    pub(crate) fn next_batch(&mut self) -> Option<Vec<QueuedWrite>> {
        let mut queued = self.queue.lock();
        if queued.writes.is_empty() {
            queued.draining = false;
            self.done = true;
            return None;
        }
        Some(std::mem::take(&mut queued.writes))
    }
}

impl Drop for Drain {
    /// A drain that ends before the queue is empty (its task panicked or was cancelled) fails
    /// what is still queued instead of leaving it waiting, and lets the next write start anew.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let rest = {
            let mut queued = self.queue.lock();
            queued.draining = false;
            std::mem::take(&mut queued.writes)
        };
        for (_, reply) in rest {
            let _ = reply.send(Err(StoreError::Unavailable(
                "the store writer stopped before applying this write; retry it".into(),
            )));
        }
    }
}

/// Waits for a queued write's answer.
pub(crate) async fn answer_of(
    answer: oneshot::Receiver<Result<WriteOutcome, StoreError>>,
) -> Result<WriteOutcome, StoreError> {
    answer
        .await
        .map_err(|_| StoreError::Unavailable("the store writer dropped a queued write".into()))?
}

#[cfg(test)]
mod tests {
    use super::conformance::{record, write};
    use super::*;

    fn queued(request_id: &str) -> Write {
        write(record("zone", Uuid::now_v7(), 1, "{}"), None, request_id)
    }

    #[test]
    fn one_drain_runs_at_a_time_and_takes_everything_queued() {
        let queue = WriteQueue::default();
        let (_a, first) = queue.push(queued("a"));
        let (_b, second) = queue.push(queued("b"));
        assert!(second.is_none(), "a drain is already running");
        let mut drain = first.expect("the first write starts the drain");
        assert_eq!(drain.next_batch().map(|b| b.len()), Some(2));
        let (_c, third) = queue.push(queued("c"));
        assert!(third.is_none(), "still draining");
        assert_eq!(drain.next_batch().map(|b| b.len()), Some(1));
        assert!(drain.next_batch().is_none(), "empty: the drain ends");
        drop(drain);
        let (_d, fourth) = queue.push(queued("d"));
        assert!(
            fourth.is_some(),
            "after a drain ends, the next write starts one"
        );
    }

    #[tokio::test]
    async fn a_drain_that_stops_early_fails_what_is_left_and_lets_the_next_write_start() {
        let queue = WriteQueue::default();
        let (_, drain) = queue.push(queued("a"));
        let mut drain = drain.unwrap();
        drain.next_batch().unwrap();
        let (left, none) = queue.push(queued("b"));
        assert!(none.is_none());
        drop(drain); // as when its task panics
        match answer_of(left).await {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("retry"), "{why}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let (_, next) = queue.push(queued("c"));
        assert!(
            next.is_some(),
            "the stopped drain no longer blocks new ones"
        );
    }
}
