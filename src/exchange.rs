//! Exchange between gateways (SPEC §4, 数据共享、信息共通): pull replication of each owner's
//! change log.
//!
//! - [`policy`]: the owner's sharing policy — which kinds each peer receives, which fields are
//!   withheld before a record leaves.
//! - [`signing`]: every change that leaves is signed with the owner's gateway key over the
//!   exact envelope bytes; receivers check the signer certificate against the federation CA.
//! - [`outbound`]: the owner side of `FederationService.PullChanges`: a live, back-pressured
//!   stream of filtered, signed changes.
//! - [`inbound`]: the receiver side: one long-lived stream per peer, verification, in-order
//!   apply with the cursor in the same transaction, reconnect with capped exponential backoff
//!   and jitter.
//!
//! This module speaks the federation wire protocol, so it uses the generated `pb` types of
//! that service; records cross into it only as JSON bodies produced by `records`.

pub mod inbound;
pub mod outbound;
pub mod policy;
pub mod signing;

use crate::store::StoreError;

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
