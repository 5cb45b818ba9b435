//! The tamper-evident audit trail (SPEC §5). Every call — local or federation, allowed or
//! refused — becomes an event, chained to the previous one by a hash ([`link`]), written by
//! one writer task that commits concurrent events together ([`AuditLog`]) in a single order.
//! [`verify_chain`] proves a chain intact or names the first bad event. Gateways sign their
//! chain heads and send them to their peers, who keep them ([`witness`]); a party that rebuilt
//! its chain after rewriting history is caught when a peer's head contradicts it.

pub mod witness;

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditAnchor, AuditEvent, AuditQuery, NewAuditEvent, Store, StoreError};
pub use crate::store::{GENESIS, link};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first place a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The event's content no longer matches its hash: it was changed after it was written.
    Changed { seq: u64 },
    /// An event is missing: the sequence jumps.
    Missing { expected: u64, found: u64 },
    /// The event does not link to its predecessor: events were reordered or relinked.
    Relinked { seq: u64 },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Changed { seq } => write!(
                f,
                "event {seq} was changed after it was written (its hash does not match its content)"
            ),
            ChainBreak::Missing { expected, found } => write!(
                f,
                "event {expected} is missing: the chain jumps from {} to {found} (events removed)",
                expected.saturating_sub(1)
            ),
            ChainBreak::Relinked { seq } => write!(
                f,
                "event {seq} does not link to event {} (events reordered, or an earlier one replaced)",
                seq.saturating_sub(1)
            ),
        }
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Events checked.
    pub events: u64,
    /// Of them, events linked with SM3 (the gm crypto profile); the others with SHA-256.
    pub sm3: u64,
    /// Sequence and hash of the last event (or the anchor when no events remain).
    pub head: Option<AuditAnchor>,
}

impl ChainSummary {
    /// Which hashes linked the events checked, for the operator: "SHA-256", "SM3", or both
    /// with their counts.
    pub fn digests(&self) -> String {
        match (self.events - self.sm3, self.sm3) {
            (_, 0) => "linked with SHA-256".into(),
            (0, _) => "linked with SM3".into(),
            (sha, sm3) => format!("{sha} linked with SHA-256, {sm3} with SM3"),
        }
    }
}

/// Checks consecutive events starting after `anchor` (or at 1 from [`GENESIS`]).
pub struct ChainVerifier {
    expected: u64,
    prev: Vec<u8>,
    events: u64,
    sm3: u64,
}

impl ChainVerifier {
    pub fn new(anchor: Option<&AuditAnchor>) -> Self {
        ChainVerifier {
            // Saturating: an export file may claim any anchor (found by fuzz::).
            expected: anchor.map_or(1, |a| a.seq.saturating_add(1)),
            prev: anchor.map_or(GENESIS.to_vec(), |a| a.hash.clone()),
            events: 0,
            sm3: 0,
        }
    }

    pub fn check(&mut self, e: &AuditEvent) -> Result<(), ChainBreak> {
        if e.seq != self.expected {
            return Err(if e.seq > self.expected {
                ChainBreak::Missing {
                    expected: self.expected,
                    found: e.seq,
                }
            } else {
                ChainBreak::Relinked { seq: e.seq }
            });
        }
        if e.prev_hash != self.prev {
            return Err(ChainBreak::Relinked { seq: e.seq });
        }
        if link(e.digest, e.seq, &e.prev_hash, &e.event) != e.hash {
            return Err(ChainBreak::Changed { seq: e.seq });
        }
        self.prev = e.hash.clone();
        self.expected = self.expected.saturating_add(1);
        self.events += 1;
        self.sm3 += u64::from(e.digest == crate::crypto::Digest::Sm3);
        Ok(())
    }

    pub fn summary(&self) -> ChainSummary {
        ChainSummary {
            events: self.events,
            sm3: self.sm3,
            head: (self.expected > 1).then(|| AuditAnchor {
                seq: self.expected - 1,
                hash: self.prev.clone(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit chain broken: {0}")]
    Broken(ChainBreak),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit writer has stopped")]
    Stopped,
}

/// Verifies the whole chain held by `store`, page by page.
pub async fn verify_chain(store: &dyn Store) -> Result<ChainSummary, AuditError> {
    let anchor = store.audit_anchor().await?;
    let mut verifier = ChainVerifier::new(anchor.as_ref());
    let mut pages = EventPages::after(store, anchor.as_ref().map_or(0, |a| a.seq));
    while let Some(page) = pages.next().await? {
        for e in &page {
            verifier.check(e).map_err(AuditError::Broken)?;
        }
    }
    Ok(verifier.summary())
}

/// The audit events a store holds after a sequence number, in order, read a page at a time
/// (verification and export walk the whole chain without holding it in memory).
pub struct EventPages<'a> {
    store: &'a dyn Store,
    after: u64,
}

impl<'a> EventPages<'a> {
    /// Events per page.
    const PAGE: usize = 1000;

    pub fn after(store: &'a dyn Store, after: u64) -> Self {
        EventPages { store, after }
    }

    /// The next page, `None` past the last event.
    pub async fn next(&mut self) -> Result<Option<Vec<AuditEvent>>, StoreError> {
        let page = self
            .store
            .audit_events(AuditQuery {
                after_seq: self.after,
                limit: Self::PAGE,
                ..AuditQuery::default()
            })
            .await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        self.after = last.seq;
        Ok(Some(page))
    }

    /// The sequence number of the last event read.
    pub fn position(&self) -> u64 {
        self.after
    }
}

struct Pending {
    event: NewAuditEvent,
    ack: Option<oneshot::Sender<Result<u64, String>>>,
}

/// The single writer of the audit trail. Events sent concurrently are committed together in
/// one transaction, in the order the writer received them.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

/// Events committed per transaction at most.
const BATCH: usize = 512;

impl AuditLog {
    /// Starts the writer; it runs until every clone of the log is dropped.
    pub fn start(store: Arc<dyn Store>) -> AuditLog {
        let (tx, mut rx) = mpsc::channel::<Pending>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let events = batch.iter().map(|p| p.event.clone()).collect();
                let result = store.append_audit(events).await.map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %e, lost = batch.len(), "audit events could not be written");
                }
                let n = batch.len() as u64;
                for (i, p) in batch.into_iter().enumerate() {
                    if let Some(ack) = p.ack {
                        let _ = ack.send(result.clone().map(|last| last - n + 1 + i as u64));
                    }
                }
            }
        });
        AuditLog { tx }
    }

    /// Appends an event and waits until it is durable; returns its sequence number.
    pub async fn append(&self, event: NewAuditEvent) -> Result<u64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Pending {
                event,
                ack: Some(ack),
            })
            .await
            .map_err(|_| AuditError::Stopped)?;
        done.await
            .map_err(|_| AuditError::Stopped)?
            .map_err(|e| AuditError::Store(StoreError::Unavailable(e)))
    }

    /// Appends an event without waiting (refused handshakes, health probes).
    pub fn record(&self, event: NewAuditEvent) {
        if self.tx.try_send(Pending { event, ack: None }).is_err() {
            tracing::error!("audit queue full; an event was not recorded");
        }
    }
}

#[cfg(test)]
mod tests;
