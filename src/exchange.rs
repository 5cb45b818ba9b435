//! Exchange between gateways (SPEC §4, 数据共享、信息共通): pull replication of each owner's
//! change log.
//!
//! - [`policy`]: the owner's sharing policy — which kinds each peer receives, which fields are
//!   withheld before a record leaves.
//! - [`signing`]: every change that leaves is signed with the owner's gateway key over the
//!   exact envelope bytes, or over a manifest of their SHA-256 hashes that covers a whole
//!   response; receivers check the signer certificate against the federation CA.
//! - [`outbound`]: the owner side of `FederationService.PullChanges`: a live, back-pressured
//!   stream of filtered, signed changes.
//! - [`evidence`]: checking after the fact that every change applied here is provably what its
//!   owner signed.
//! - [`inbound`]: the receiver side: one long-lived stream per peer, verification, in-order
//!   apply with the cursor in the same transaction, reconnect with capped exponential backoff
//!   and jitter.
//! - [`recovery`]: after a restore from an older backup, taking this party's own changes back
//!   from the peers that hold them (and giving peers theirs back).
//!
//! This module speaks the federation wire protocol, so it uses the generated `pb` types of
//! that service; records cross into it only as JSON bodies produced by `records`.

pub mod evidence;
pub mod inbound;
pub mod outbound;
pub mod policy;
pub mod recovery;
pub mod signing;

use std::sync::Arc;

use crate::store::StoreError;

/// Applies `f` to every item (with its index) on the blocking pool, split into one part per
/// core, and returns the results in the items' order. Signing and verifying change batches is CPU work that
/// would otherwise stall a runtime worker (and use one core where there are two).
async fn on_cores<T, R, F>(items: Arc<Vec<T>>, f: F) -> Result<Vec<R>, tokio::task::JoinError>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(usize, &T) -> R + Clone + Send + 'static,
{
    let n = items.len();
    let parts = std::thread::available_parallelism().map_or(1, |p| p.get());
    let chunk = n.div_ceil(parts).max(1);
    let tasks: Vec<_> = (0..n)
        .step_by(chunk)
        .map(|start| {
            let (items, f) = (items.clone(), f.clone());
            tokio::task::spawn_blocking(move || {
                let end = (start + chunk).min(n);
                (start..end).map(|i| f(i, &items[i])).collect::<Vec<R>>()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.extend(task.await?);
    }
    Ok(out)
}

/// Why an exchange step failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The signer certificate is not a valid gateway certificate of the owner.
    #[error("signer certificate refused: {0}")]
    BadSigner(String),
    /// A signature does not verify over the envelope bytes.
    #[error("signature of change {seq} does not verify: {reason}")]
    BadSignature { seq: u64, reason: String },
    /// A verified envelope is not what this receiver may apply (wrong owner, recipient, order).
    #[error("change refused: {0}")]
    Refused(String),
    /// The peer's stream failed or could not be opened.
    #[error("peer stream failed: {0}")]
    Transport(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load the signing key: {0}")]
    Key(String),
    /// The peer asked for changes after `peer_seq`, beyond this store's head: the store was
    /// restored from an older backup and lacks changes the peer already holds.
    #[error("the peer holds changes through {peer_seq}; this store's log ends at {head}")]
    Behind { peer_seq: u64, head: u64 },
    /// The peer was removed from the party list or suspended while its stream was open.
    #[error("party `{0}` is no longer an active member of the federation")]
    NotMember(String),
}

impl From<crate::identity::signer::KeyError> for ExchangeError {
    fn from(e: crate::identity::signer::KeyError) -> Self {
        ExchangeError::Key(e.0)
    }
}

impl ExchangeError {
    /// True for failures that mean the peer sent something that must not be applied.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ExchangeError::BadSigner(_)
                | ExchangeError::BadSignature { .. }
                | ExchangeError::Refused(_)
        )
    }
}
