//! Operations: what keeps a party's gateway observable and healthy — Prometheus metrics
//! ([`metrics`]), `grpc.health.v1` status that follows the store and the certificate
//! ([`health`]), overdue access requests ([`sharing`]), and the admin HTTP server with the
//! status page ([`admin`]).

pub mod admin;
pub mod health;
pub mod metrics;
pub mod sharing;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::exchange::inbound::PeerStatuses;
use crate::identity::tls::TlsSource;

/// Shared, read-mostly state the operations surfaces show.
pub struct OpsState {
    pub party: String,
    /// The party list as it is now.
    pub members: crate::domain::Members,
    /// Readings of the configuration file while running (party list and peers).
    pub reloads: Arc<crate::membership::reload::Reloads>,
    pub metrics: Arc<metrics::Metrics>,
    pub peers: PeerStatuses,
    pub tls: TlsSource,
    /// Set by the health monitor.
    pub store_up: AtomicBool,
    pub serving: AtomicBool,
    /// Feed size (own changes plus applied replicas), refreshed by the health monitor.
    pub feed_position: std::sync::atomic::AtomicU64,
    /// Sequence number of the last audit event, refreshed by the health monitor.
    pub audit_head: std::sync::atomic::AtomicU64,
    /// Access requests to this party past their answer deadline ([`sharing`]).
    pub access_overdue_to_answer: std::sync::atomic::AtomicU64,
    /// Access requests this party filed, past their deadline at the provider.
    pub access_overdue_awaiting: std::sync::atomic::AtomicU64,
    /// Erasures of data held under grants that ended, done (receipt written) since start.
    pub erasures_done: std::sync::atomic::AtomicU64,
    /// Erasure passes that failed (retried) since start.
    pub erasures_failed: std::sync::atomic::AtomicU64,
    /// The change feed: whether writes are held because a peer holds more of this party's
    /// log than the store (restored from an older backup).
    pub feed: crate::records::Feed,
    /// Changes of this party's own log taken back from peers since start.
    pub taken_back: std::sync::atomic::AtomicU64,
    /// Attempts to take changes back that failed or stopped short (retried).
    pub take_back_failed: std::sync::atomic::AtomicU64,
    /// What went wrong in the last such attempt (a peer down, or what it gave back refused).
    pub take_back_problem: std::sync::Mutex<Option<String>>,
    /// This gateway's party list digest and the ones its peers showed.
    pub membership: Arc<crate::membership::Membership>,
    /// The keys of data at rest (`None`: records stored in clear).
    pub vault: Option<Arc<crate::vault::Vault>>,
}

impl OpsState {
    /// Data at rest as the status page and metrics show it: the algorithm of new keys, the
    /// key-encryption key's id and the ring's live and destroyed keys; `None` in clear.
    pub fn at_rest(&self) -> Option<(&'static str, String, crate::vault::keyring::RingCounts)> {
        let vault = self.vault.as_ref()?;
        let counts = vault.ring().counts().unwrap_or_default();
        Some((vault.algorithm().as_str(), vault.ring().kek_id(), counts))
    }
}

/// How many days before expiry a certificate is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
