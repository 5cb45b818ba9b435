//! The audit chain's storage: events appended in one order, each linked to the previous one by
//! a hash ([`link`], computed here once for every backend by [`chain`]) — SHA-256, or SM3 in
//! the gm crypto profile, each event keeping which — the anchor pruning leaves, and the chain
//! heads other parties signed and this gateway witnessed.

use async_trait::async_trait;

use super::StoreError;
use crate::crypto::Digest;

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
    /// The hash this event was linked with (events stored before it was kept: SHA-256).
    pub digest: Digest,
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

/// The audit chain and witnessed heads.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends audit events in order, chained with `store::chain` (one linking for every
    /// backend) by the store's chain digest, in one durable transaction. Returns the last
    /// sequence number.
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
}

/// The previous hash of the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// The hash by `digest` of event `seq` with content `e`, chained to `prev`. The encoding is
/// length-prefixed and versioned, so no two different events hash alike; it is the same for
/// both digests.
pub fn link(digest: Digest, seq: u64, prev: &[u8], e: &NewAuditEvent) -> Vec<u8> {
    let strings = [&e.caller, &e.method, &e.code, &e.request_id];
    let size = strings.iter().map(|s| 4 + s.len()).sum::<usize>()
        + e.records.iter().map(|r| 4 + r.len()).sum::<usize>();
    let mut h = Vec::with_capacity(12 + 8 + 8 + 4 + size + prev.len());
    h.extend_from_slice(b"yrd-audit-v1");
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&e.time.to_be_bytes());
    for s in strings {
        h.extend_from_slice(&(s.len() as u32).to_be_bytes());
        h.extend_from_slice(s.as_bytes());
    }
    h.extend_from_slice(&(e.records.len() as u32).to_be_bytes());
    for r in &e.records {
        h.extend_from_slice(&(r.len() as u32).to_be_bytes());
        h.extend_from_slice(r.as_bytes());
    }
    h.extend_from_slice(prev);
    digest.of(&h)
}

/// `events` as the next links of the chain whose head is `head` (`None`: an empty chain), each
/// with its sequence number, previous hash and hash by `digest`. Every backend stores exactly
/// these.
pub(crate) fn chain(
    head: Option<AuditAnchor>,
    events: Vec<NewAuditEvent>,
    digest: Digest,
) -> Vec<AuditEvent> {
    let (mut seq, mut prev) = match head {
        Some(h) => (h.seq, h.hash),
        None => (0, GENESIS.to_vec()),
    };
    events
        .into_iter()
        .map(|event| {
            seq += 1;
            let hash = link(digest, seq, &prev, &event);
            AuditEvent {
                seq,
                event,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
                digest,
            }
        })
        .collect()
}

/// The digest a stored event names (`None`: stored before events kept theirs, SHA-256).
pub(crate) fn decode_audit_digest(seq: u64, stored: Option<String>) -> Result<Digest, StoreError> {
    match stored {
        None => Ok(Digest::Sha256),
        Some(name) => Digest::parse(&name).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "audit event {seq} names the unknown digest `{name}`"
            ))
        }),
    }
}

/// The list of resource names an audit event touched, as both backends store it.
pub(crate) fn encode_audit_records(records: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(records).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The stored list of resource names an audit event touched. A list that no longer parses is
/// kept visible (as is) for the verifier, which then reports the event as changed.
pub(crate) fn decode_audit_records(stored: String) -> Vec<String> {
    serde_json::from_str(&stored).unwrap_or_else(|_| vec![stored])
}
