//! What connections that have not finished their TLS handshake may hold: the caps of
//! [`HandshakeLimits`], and the places they take among the handshakes in progress.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What a connection that has not finished its TLS handshake — an unauthenticated client —
/// may hold: time, and a place among the handshakes in progress, overall and from its address.
/// A connection over a cap is closed at once, so idle TCP connections or stalled handshakes
/// from one address cannot keep others from being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// How long a client may take to finish the handshake before it is dropped.
    pub timeout: Duration,
    /// Handshakes in progress at once, from all addresses; a new one beyond it closes the oldest.
    pub in_progress: usize,
    /// Handshakes in progress at once from one IP address.
    pub per_address: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            timeout: Duration::from_secs(10),
            in_progress: 1024,
            per_address: 64,
        }
    }
}

/// Called with the remote address and why, when a connection is closed before its handshake
/// because a cap of [`HandshakeLimits`] was reached (counted, not audited: a flood must not
/// write one audit event per connection).
pub type ShedConnection = Arc<dyn Fn(SocketAddr, &'static str) + Send + Sync>;

/// Handshakes in progress, overall and by address. Each holds a place under a number given
/// in arrival order, so the oldest is known.
#[derive(Default)]
pub(super) struct Pending {
    next: u64,
    places: std::collections::BTreeMap<u64, Held>,
    by_address: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// One handshake's place: its address, and how to close it from outside.
struct Held {
    remote: SocketAddr,
    close: tokio::sync::oneshot::Sender<()>,
}

impl Pending {
    /// Gives up the place `id` (its handshake ended, or it was closed to make room); returns
    /// it if it was still held.
    fn release(&mut self, id: u64) -> Option<Held> {
        let held = self.places.remove(&id)?;
        let address = held.remote.ip();
        if let Some(n) = self.by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&address);
            }
        }
        Some(held)
    }
}

/// A place among the handshakes in progress, given back when dropped.
pub(super) struct PendingPlace {
    pending: Arc<std::sync::Mutex<Pending>>,
    id: u64,
}

/// What taking a place did besides: the connection closed to make room for it, if any.
type Evicted = Option<SocketAddr>;

impl PendingPlace {
    /// A place for a handshake from `remote`, and the signal that closes it early. Over the
    /// cap per address the newcomer is refused (its own address holds the places). At the
    /// overall cap the **oldest** handshake in progress is closed to make room: an honest
    /// handshake finishes in milliseconds, so the oldest ones are those that stall, and a
    /// flood from many addresses cannot keep a new client out — to crowd out an honest
    /// handshake, an attacker would have to open `in_progress` connections within the few
    /// milliseconds it takes.
    pub(super) fn take(
        pending: &Arc<std::sync::Mutex<Pending>>,
        remote: SocketAddr,
        limits: &HandshakeLimits,
    ) -> Result<(PendingPlace, tokio::sync::oneshot::Receiver<()>, Evicted), &'static str> {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.by_address.get(&remote.ip()).copied().unwrap_or(0) >= limits.per_address {
            return Err("too many TLS handshakes in progress from this address");
        }
        let mut evicted = None;
        if p.places.len() >= limits.in_progress.max(1) {
            let oldest = p.places.keys().next().copied();
            if let Some(held) = oldest.and_then(|id| p.release(id)) {
                // The receiver may be gone already (the handshake just ended): nothing to do.
                let _ = held.close.send(());
                evicted = Some(held.remote);
            }
        }
        let (close, closed) = tokio::sync::oneshot::channel();
        let id = p.next;
        p.next += 1;
        p.places.insert(id, Held { remote, close });
        *p.by_address.entry(remote.ip()).or_default() += 1;
        Ok((
            PendingPlace {
                pending: pending.clone(),
                id,
            },
            closed,
            evicted,
        ))
    }
}

impl Drop for PendingPlace {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.release(self.id);
    }
}
