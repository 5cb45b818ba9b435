//! Replication and its evidence: applying a peer's verified changes with the cursor that
//! follows them, and keeping what proves each change authentic (the received bytes, the
//! owner's signature or signed manifest, the signer certificate).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Change, StoreError, StoredRecord};
use crate::domain::RecordKind;

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
    /// Set when items of the envelope were erased before it was kept (the receiver no longer
    /// holds a grant for them): the digest of the envelope as received ([`envelope_digest`]).
    pub erased_sha256: Option<Vec<u8>>,
}

/// One verified change from a peer.
#[derive(Debug, Clone)]
pub struct ReplicaChange {
    pub seq: u64,
    pub time: i64,
    /// `None` when the owner does not share this change's kind with us: only the cursor moves.
    pub record: Option<StoredRecord>,
    pub evidence: Evidence,
    /// Field paths of the record held only while a grant or an item's `open_to` admits them
    /// (the owner's CONDITIONAL items): a store that seals at rest seals them apart, under a
    /// key an erasure of them destroys. Empty: nothing apart.
    pub apart: Vec<String>,
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
    /// Set when items of the envelope were erased (a grant ended): the SHA-256 of the
    /// envelope as received, which its signature or manifest covers; `envelope` then holds
    /// the envelope with those items emptied.
    pub erased_sha256: Option<Vec<u8>>,
}

/// The new body of a stored record version, `None` when it does not change, or an error when
/// the version cannot be read (the redaction then fails, and nothing of it is applied).
pub type RewriteBody =
    Arc<dyn Fn(&StoredRecord) -> Result<Option<BodyRewrite>, StoreError> + Send + Sync>;
/// The new form of the envelope kept of the owner's change `seq` (signed with the TLS
/// signature scheme of the third argument), as [`RewriteBody`].
pub type RewriteEnvelope =
    Arc<dyn Fn(u64, &[u8], u16) -> Result<Option<EnvelopeRewrite>, StoreError> + Send + Sync>;

/// A stored record version's new body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyRewrite {
    pub body: String,
    /// Whether items were erased from it (what [`Redacted`] counts), not only sealed anew.
    pub erases: bool,
}

/// A kept envelope's new bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeRewrite {
    pub envelope: Vec<u8>,
    /// When items were erased from it: the digest of the envelope before this rewrite
    /// ([`envelope_digest`]), kept as its digest as received unless an earlier erasure kept
    /// one already. `None` for a rewrite that erases nothing (sealing it at rest).
    pub erased_from: Option<Vec<u8>>,
}

/// What a receiver rewrites of one owner's records of one kind when it must no longer hold
/// some of their items: each function returns the new form, or `None` when nothing changes.
#[derive(Clone)]
pub struct Redaction {
    pub owner: String,
    pub kind: RecordKind,
    /// A record body (also of the change-log copies of the kind's records).
    pub body: RewriteBody,
    /// A kept envelope (any kind: the function looks inside).
    pub envelope: RewriteEnvelope,
    /// Delete the records of the kind and their change-log copies instead of rewriting them
    /// (nothing of them may be held any more); kept envelopes are still rewritten.
    pub delete_records: bool,
}

/// How many stored copies a redaction erased items of (or deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redacted {
    pub records: u64,
    pub log_entries: u64,
    pub evidence: u64,
    /// Data keys destroyed with it (a store that seals at rest: every copy they sealed,
    /// wherever it is kept, is unreadable).
    pub keys_destroyed: u64,
}

/// The evidence of an owner's changes after a sequence number, with its signer certificate and
/// the manifest it names (`$1` owner, `$2` after, `$3` limit). Both backends run it as is.
pub(crate) const EVIDENCE_QUERY: &str = "\
    SELECT e.seq, e.envelope, e.scheme, e.signature, s.certificate, e.manifest, \
           m.manifest, m.scheme, m.signature, e.received, e.erased_sha256 \
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

/// Replicas of other owners' records, their cursors and evidence.
#[async_trait]
pub trait ReplicaStore: Send + Sync + 'static {
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

    /// Rewrites, in one durable transaction, every stored copy of `owner`'s records of the
    /// redaction's kind — the records, their change-log copies, the envelopes kept as
    /// evidence (recording the SHA-256 of each as received, once) — and then makes sure the
    /// old bytes are gone from the store's files where the backend can (SQLite: zeroed pages,
    /// WAL checkpointed and truncated).
    async fn redact(&self, redaction: Redaction) -> Result<Redacted, StoreError>;

    /// Appends to `owner`'s own change log (this party's) changes a peer gave back after the
    /// store was restored from an older backup, in one durable transaction: each change under
    /// its own sequence number, each record kept where it supersedes the stored one. Changes
    /// at or below the log's head are skipped; a gap fails the batch with
    /// [`StoreError::OutOfOrder`] and nothing of it is applied. Returns the new head.
    async fn take_back(&self, owner: &str, changes: Vec<Change>) -> Result<u64, StoreError>;

    /// When the store was put in place from a backup and has not yet been checked against
    /// every peer (`yrd-gateway store restore`): the time of the restore.
    async fn restored_mark(&self) -> Result<Option<i64>, StoreError>;

    /// Sets (`Some(time)`) or clears (`None`) the mark of a restored store.
    async fn set_restored_mark(&self, time: Option<i64>) -> Result<(), StoreError>;
}

/// What becomes of a change-log row under a redaction.
pub(crate) enum LoggedCopy {
    Keep,
    /// The version with its new body, and whether items were erased from it.
    Rewrite(StoredRecord, bool),
    Delete,
}

/// What becomes of a change-log entry (the record version it holds) under `redaction`.
pub(crate) fn redact_logged(
    redaction: &Redaction,
    mut record: StoredRecord,
) -> Result<LoggedCopy, StoreError> {
    if record.kind != redaction.kind {
        return Ok(LoggedCopy::Keep);
    }
    if redaction.delete_records {
        return Ok(LoggedCopy::Delete);
    }
    Ok(match (redaction.body)(&record)? {
        Some(new) => {
            record.body = new.body;
            LoggedCopy::Rewrite(record, new.erases)
        }
        None => LoggedCopy::Keep,
    })
}

/// The digest a receiver keeps of an envelope as received when it erases items of it, by the
/// algorithm its manifest lists envelopes with: SM3 when the change (or its manifest) was
/// signed with SM2 (`scheme`), SHA-256 otherwise. Kept in the `erased_sha256` columns, named
/// from before the gm profile.
pub fn envelope_digest(scheme: u16, envelope: &[u8]) -> Vec<u8> {
    crate::crypto::Digest::for_signature(scheme).of(envelope)
}

/// The changes of `owner`'s own log given back after `head`, which must follow it without a
/// gap (see [`following`]); a change of another owner fails the batch.
pub(crate) fn changes_to_take_back(
    owner: &str,
    head: u64,
    changes: Vec<Change>,
) -> Result<Vec<Change>, StoreError> {
    if let Some(c) = changes
        .iter()
        .find(|c| c.owner != owner || c.record.owner != owner)
    {
        return Err(StoreError::Corrupt(format!(
            "change {} of `{}` given back as `{owner}`'s",
            c.seq, c.record.owner
        )));
    }
    following(owner, head, changes, |c| c.seq)
}

/// The changes of `batch` that follow `cursor`, in order (see [`following`]). Both backends
/// apply exactly what this returns.
pub(crate) fn changes_to_apply(
    owner: &str,
    cursor: u64,
    changes: Vec<ReplicaChange>,
) -> Result<Vec<ReplicaChange>, StoreError> {
    following(owner, cursor, changes, |c| c.seq)
}

/// The items numbered after `after`, in order: items at or below it were applied before and
/// are dropped; an item that does not follow fails the whole batch with
/// [`StoreError::OutOfOrder`].
fn following<T>(
    owner: &str,
    after: u64,
    items: Vec<T>,
    seq: impl Fn(&T) -> u64,
) -> Result<Vec<T>, StoreError> {
    let mut next = after;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let n = seq(&item);
        if n <= next {
            continue;
        }
        if n != next + 1 {
            return Err(StoreError::OutOfOrder {
                owner: owner.to_string(),
                cursor: next,
                got: n,
            });
        }
        next = n;
        out.push(item);
    }
    Ok(out)
}
