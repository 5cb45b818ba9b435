//! [`Feed`]: this gateway's change feed — its own changes and the replicas it applied, in commit
//! order — with the signal that wakes live readers. The gateway hands one `Feed` to everything
//! that follows or extends the feed (Watch streams, the owner's outbound streams, the inbound
//! pullers), so none of them needs the store itself or [`super::Records`].

use std::sync::Arc;

use tokio::sync::watch;

use crate::store::{
    Change, FeedEntry, PullLease, Redacted, Redaction, ReplicaBatch, Store, StoreError,
};

/// The change feed of one gateway's store.
#[derive(Clone)]
pub struct Feed {
    store: Arc<dyn Store>,
    /// Bumped after every commit to the feed (own write or applied replica), so live streams
    /// (peers pulling, Watch) wake up instead of polling.
    changed: Arc<watch::Sender<u64>>,
}

impl Feed {
    pub fn new(store: Arc<dyn Store>) -> Self {
        // A store shared with other replicas bumps its own signal for their commits too.
        let changed = store
            .feed_signal()
            .unwrap_or_else(|| Arc::new(watch::channel(0).0));
        Feed { store, changed }
    }

    /// A receiver that sees a new value after every commit to the feed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Tells live streams that the feed grew.
    pub fn notify_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Rewrites every stored copy of an owner's records that `redaction` changes (a grant
    /// ended): see [`crate::store::ReplicaStore::redact`].
    pub async fn redact(&self, redaction: Redaction) -> Result<Redacted, StoreError> {
        self.store.redact(redaction).await
    }

    /// Up to `limit` feed entries after position `after` (Watch).
    pub async fn entries(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        self.store.feed(after, limit).await
    }

    /// Up to `limit` of `owner`'s changes after sequence number `after` (outbound streams).
    pub async fn changes(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.store.changes(owner, after, limit).await
    }

    /// The last sequence number of `owner`'s change log (0 when empty).
    pub async fn last_seq(&self, owner: &str) -> Result<u64, StoreError> {
        self.store.last_seq(owner).await
    }

    /// The last change of `owner` applied here (0 when none).
    pub async fn cursor(&self, owner: &str) -> Result<u64, StoreError> {
        self.store.cursor(owner).await
    }

    /// Applies a verified batch of `owner`'s changes with its evidence and cursor (see
    /// [`crate::store::ReplicaStore::apply_replicas`]) and wakes live streams. Returns the
    /// new cursor.
    pub async fn apply(&self, batch: ReplicaBatch) -> Result<u64, StoreError> {
        let cursor = self.store.apply_replicas(batch).await?;
        self.notify_changed();
        Ok(cursor)
    }

    /// Claims the right to pull `peer`'s change log (see
    /// [`crate::store::LeaseStore::pull_lease`]).
    pub async fn pull_lease(&self, peer: &str) -> Result<Option<PullLease>, StoreError> {
        self.store.pull_lease(peer).await
    }
}
