//! [`Feed`]: this gateway's change feed — its own changes and the replicas it applied, in commit
//! order — with the signal that wakes live readers. The gateway hands one `Feed` to everything
//! that follows or extends the feed (Watch streams, the owner's outbound streams, the inbound
//! pullers), so none of them needs the store itself or [`super::Records`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::store::{
    Change, FeedEntry, PullLease, Redacted, Redaction, ReplicaBatch, Store, StoreError,
    StoredEvidence,
};

/// The change feed of one gateway's store.
#[derive(Clone)]
pub struct Feed {
    store: Arc<dyn Store>,
    /// Bumped after every commit to the feed (own write or applied replica), so live streams
    /// (peers pulling, Watch) wake up instead of polling.
    changed: Arc<watch::Sender<u64>>,
    /// Why writes are held, if they are (the store was restored from an older backup).
    hold: Arc<Mutex<Hold>>,
}

/// Why writes are held: until every peer has been asked what it holds of this party's log
/// (a restored store), and while a peer holds more of it than the store.
#[derive(Debug, Clone, Default)]
struct Hold {
    /// Peers not yet asked since the store was restored (`None`: not restored).
    unchecked: Option<BTreeSet<String>>,
    behind: Option<Behind>,
}

/// A peer that holds changes of this party's log that this store lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// The peer that asked for changes after `peer_seq`.
    pub peer: String,
    /// The last change of this party that the peer holds.
    pub peer_seq: u64,
    /// The last change of this party in this store when the peer asked.
    pub head: u64,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer {} holds this party's changes through {}, this store only through {} \
             (restored from an older backup?)",
            self.peer, self.peer_seq, self.head
        )
    }
}

impl Feed {
    pub fn new(store: Arc<dyn Store>) -> Self {
        // A store shared with other replicas bumps its own signal for their commits too.
        let changed = store
            .feed_signal()
            .unwrap_or_else(|| Arc::new(watch::channel(0).0));
        Feed {
            store,
            changed,
            hold: Arc::new(Mutex::new(Hold::default())),
        }
    }

    fn hold(&self) -> std::sync::MutexGuard<'_, Hold> {
        self.hold.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds writes until each of `peers` has been asked what it holds of this party's log
    /// (the store was restored from a backup).
    pub fn hold_until_checked(&self, peers: impl IntoIterator<Item = String>) {
        self.hold().unchecked = Some(peers.into_iter().collect());
    }

    /// Notes that `peer` was asked; returns true when that was the last peer unchecked.
    pub fn checked(&self, peer: &str) -> bool {
        let mut hold = self.hold();
        let Some(unchecked) = &mut hold.unchecked else {
            return false;
        };
        unchecked.remove(peer) && unchecked.is_empty()
    }

    /// The peers not yet asked since the store was restored (`None`: not restored, or all
    /// asked and the restore mark cleared).
    pub fn unchecked(&self) -> Option<Vec<String>> {
        self.hold()
            .unchecked
            .as_ref()
            .map(|u| u.iter().cloned().collect())
    }

    /// Ends the hold of a restored store once every peer was asked: clears the store's mark.
    pub async fn release_restored(&self) -> Result<(), StoreError> {
        self.store.set_restored_mark(None).await?;
        let mut hold = self.hold();
        if hold.unchecked.as_ref().is_some_and(|u| u.is_empty()) {
            hold.unchecked = None;
        }
        Ok(())
    }

    /// Records that `peer` holds this party's changes through `peer_seq` while the log here
    /// ends at `head`; keeps the peer furthest ahead. Returns true when this is news.
    pub fn mark_behind(&self, peer: &str, peer_seq: u64, head: u64) -> bool {
        let mut hold = self.hold();
        if hold.behind.as_ref().is_some_and(|b| b.peer_seq >= peer_seq) {
            return false;
        }
        hold.behind = Some(Behind {
            peer: peer.to_string(),
            peer_seq,
            head,
        });
        true
    }

    /// Forgets the mark once this store's log reaches what the peer holds.
    pub fn clear_behind(&self, head: u64) {
        let mut hold = self.hold();
        if hold.behind.as_ref().is_some_and(|b| b.peer_seq <= head) {
            hold.behind = None;
        }
    }

    /// The peer furthest ahead of this store's own log, if any.
    pub fn behind(&self) -> Option<Behind> {
        self.hold().behind.clone()
    }

    /// Why writes are held now, if they are: what a refused write and the status page say.
    pub fn writes_held(&self) -> Option<String> {
        let hold = self.hold();
        if let Some(behind) = &hold.behind {
            return Some(format!(
                "{behind}; the gateway is taking the missing changes back from the peers"
            ));
        }
        hold.unchecked.as_ref().map(|u| {
            let waiting: Vec<&str> = u.iter().map(String::as_str).collect();
            format!(
                "the store was restored from a backup; the gateway is asking every peer for \
                 the changes of this party it holds (waiting for: {})",
                if waiting.is_empty() {
                    "none".to_string()
                } else {
                    waiting.join(", ")
                }
            )
        })
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

    /// The evidence kept of `owner`'s changes after `after`, at most `limit` (to give an
    /// owner its changes back).
    pub async fn evidence(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        self.store.evidence(owner, after, limit).await
    }

    /// Appends changes of this party's own log given back by a peer (see
    /// [`crate::store::ReplicaStore::take_back`]), wakes live streams and forgets the mark of
    /// being behind once the log reaches what the peer holds. Returns the new head.
    pub async fn take_back(&self, owner: &str, changes: Vec<Change>) -> Result<u64, StoreError> {
        let head = self.store.take_back(owner, changes).await?;
        self.notify_changed();
        self.clear_behind(head);
        Ok(head)
    }

    /// Claims the right to pull `peer`'s change log (see
    /// [`crate::store::LeaseStore::pull_lease`]).
    pub async fn pull_lease(&self, peer: &str) -> Result<Option<PullLease>, StoreError> {
        self.store.pull_lease(peer).await
    }
}
