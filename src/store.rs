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
//!
//! The storage contract is split by concern, one trait and one file each (and one file each
//! per backend, `sqlite/` and `postgres/`): [`RecordStore`] (records, writes, change log,
//! feed), [`ReplicaStore`] (applying peers' changes, cursors, evidence), [`AuditStore`] (the
//! audit chain and witnessed heads) and [`LeaseStore`] (pull lease, health, checkpoint).
//! [`Store`] is all four, which is what a gateway opens. What both backends must compute alike
//! is computed here once: the audit chain's links (`chain`), which replicated changes a batch
//! applies (`changes_to_apply`), and the group commit of writes (`WriteQueue`).

mod audit;
#[cfg(test)]
pub mod conformance;
mod lease;
pub mod postgres;
mod queue;
mod records;
mod replication;
pub mod sqlite;

use std::sync::Arc;

pub use audit::{
    AuditAnchor, AuditEvent, AuditQuery, AuditStore, GENESIS, NewAuditEvent, WitnessedHead, link,
};
pub(crate) use audit::{chain, decode_audit_digest, decode_audit_records, encode_audit_records};
pub use lease::{LeaseStore, PullLease};
pub(crate) use queue::{QueuedWrite, WriteQueue, answer_after_commit, answer_of, fail_all};
pub(crate) use records::{CURRENT_RECORDS, LOGGED_VERSION, VERSION_COLUMNS};
pub use records::{
    Change, FeedEntry, Idempotency, IndexFields, ListQuery, RecordStore, StoredRecord, Write,
    WriteAudit, WriteOutcome,
};
pub use replication::{
    BodyRewrite, EnvelopeRewrite, Evidence, Redacted, Redaction, ReplicaBatch, ReplicaChange,
    ReplicaStore, RewriteBody, RewriteEnvelope, SignedManifest, StoredEvidence, envelope_digest,
};
pub(crate) use replication::{
    EVIDENCE_QUERY, LoggedCopy, changes_to_apply, changes_to_take_back, redact_logged,
};

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
    /// The database cannot be reached or failed to commit. A write may still have been
    /// committed when the connection was lost during its commit; a retry with the same request
    /// id is answered from the store either way.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// The data is sealed at rest and this gateway cannot open it: it has no key provider, or
    /// the key that sealed it was destroyed (the data is erased).
    #[error("sealed at rest: {0}")]
    Sealed(String),
}

impl StoreError {
    /// What to say when this error fails other writes too: the cause of an unavailable store
    /// (without saying "store unavailable" twice), or the error itself.
    pub(crate) fn cause(&self) -> String {
        match self {
            StoreError::Unavailable(cause) => cause.clone(),
            other => other.to_string(),
        }
    }
}

/// Storage for one gateway: every concern's trait, so one handle serves them all.
/// Implementations must be safe to share across tasks.
pub trait Store: RecordStore + ReplicaStore + AuditStore + LeaseStore {}

impl<T: RecordStore + ReplicaStore + AuditStore + LeaseStore> Store for T {}

/// Which database a gateway keeps its store in (the `[store]` section of its config).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// Embedded SQLite database file.
    Sqlite { path: std::path::PathBuf },
    /// A PostgreSQL database, which several replicas of this party's gateway may share.
    Postgres(Box<postgres::PostgresOptions>),
}

/// Opens the store `config` names (creating an SQLite file or the PostgreSQL schema if
/// needed), linking the audit events it appends by `chain`.
pub async fn open(
    config: &StoreConfig,
    chain: crate::crypto::Digest,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config {
        StoreConfig::Sqlite { path } => {
            Arc::new(sqlite::SqliteStore::open(path)?.chained_by(chain))
        }
        StoreConfig::Postgres(options) => Arc::new(
            postgres::PostgresStore::connect((**options).clone())
                .await?
                .chained_by(chain),
        ),
    })
}
