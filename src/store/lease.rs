//! Upkeep of the store itself: the pull lease that lets one replica of several pull from a
//! peer, the health check, and the checkpoint at shutdown.

use async_trait::async_trait;

use super::StoreError;

/// The pull lease and the store's own health.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Checks the database answers, on a fresh connection, so a store that went away (file
    /// removed, server down) is noticed even while pooled connections linger.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes everything committed as compact on disk as the backend allows (shutdown).
    async fn checkpoint(&self) -> Result<(), StoreError>;

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
