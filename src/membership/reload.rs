//! A running gateway's party list and peers, changed by editing its configuration file.
//!
//! The file is read again when its content changes (looked at every second, as the TLS files
//! are). A changed file is validated exactly as at start; then
//! - `[[parties]]` and `[[peers]]` are applied at once: a party added is a member from then on
//!   (its gateway may pull, a follower starts pulling from it), a party removed or suspended is
//!   refused at its next call and its open streams end, a peer's new address is used;
//! - every other key takes effect at the next restart: the log and the status page name the
//!   keys that changed, so nobody believes a limit or the store moved when it did not.
//!
//! A file that does not validate, names another own `party`, or changes the order of parties
//! that were already listed (the order breaks ties between counter-proposals already on
//! record) is refused as a whole: the running lists stay, and the log, the status page and
//! `yrd_config_reload_refused` say why until the file is mended.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, ConfigSource, PeerConfig};
use crate::domain::{Federation, Members, now_micros};

/// The peers this gateway pulls from, as they are now.
pub type Peers = watch::Receiver<Arc<Vec<PeerConfig>>>;

/// The peers of `peers` that are active members of `members` now: those to talk to.
pub fn active_peers(peers: &Peers, members: &Members) -> Vec<PeerConfig> {
    let federation = members.current();
    peers
        .borrow()
        .iter()
        .filter(|p| federation.is_active(&p.party))
        .cloned()
        .collect()
}

/// What the last readings of the configuration file did, for the status page and metrics.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// When a changed file was last applied (microseconds since the epoch).
    pub applied_at: Option<i64>,
    /// What that application changed, in words ("party lingang added", ...).
    pub changed: Vec<String>,
    /// Why the file as it is now is not applied; None once a reading is applied.
    pub refused: Option<String>,
    pub refused_at: Option<i64>,
    /// Keys whose new value in the file takes effect only at the next restart.
    pub restart_needed: Vec<&'static str>,
}

/// Readings of the configuration file, shared with the operations surface.
#[derive(Debug, Default)]
pub struct Reloads {
    status: Mutex<ReloadStatus>,
    applied: AtomicU64,
    refused: AtomicU64,
}

impl Reloads {
    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Readings of a changed file that changed the party list or peers, since start.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Changed files refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn update(&self, f: impl FnOnce(&mut ReloadStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The running party list and peers, and the senders that change them.
pub struct Live {
    members: watch::Sender<Arc<Federation>>,
    peers: watch::Sender<Arc<Vec<PeerConfig>>>,
}

impl Live {
    /// The lists of `config`, with the handles that read them.
    pub fn new(config: &Config) -> (Live, Members, Peers) {
        let (members_tx, members) = Members::changeable(config.federation.clone());
        let (peers_tx, peers) = watch::channel(Arc::new(config.peers.clone()));
        let live = Live {
            members: members_tx,
            peers: peers_tx,
        };
        (live, members, peers)
    }
}

/// What a changed file does to the running gateway.
#[derive(Debug, PartialEq)]
pub struct Decision {
    /// The new party list, when it differs.
    pub federation: Option<Federation>,
    /// The new peers, when they differ.
    pub peers: Option<Vec<PeerConfig>>,
    /// What changes, in words.
    pub changed: Vec<String>,
    /// Keys that differ from the configuration the gateway started with and wait for a restart.
    pub restart_needed: Vec<&'static str>,
}

/// Decides what `new` (the file as read now) does to a gateway that started with `started`
/// and runs `federation` and `peers`; an error says why nothing of it is applied.
pub fn decide(
    started: &Config,
    federation: &Federation,
    peers: &[PeerConfig],
    new: Config,
) -> Result<Decision, String> {
    if new.party != started.party {
        return Err(format!(
            "`party` changed from `{}` to `{}`: a gateway's own party changes only with a new certificate and a restart",
            started.party, new.party
        ));
    }
    check_order_kept(federation, &new.federation)?;
    let mut changed = Vec::new();
    for p in new.federation.parties() {
        match federation.get(&p.id) {
            None if p.suspended => changed.push(format!("party {} added, suspended", p.id)),
            None => changed.push(format!("party {} added", p.id)),
            Some(old) if old.suspended && !p.suspended => {
                changed.push(format!("party {} reinstated", p.id))
            }
            Some(old) if !old.suspended && p.suspended => {
                changed.push(format!("party {} suspended", p.id))
            }
            Some(old) if old != p => changed.push(format!("party {} renamed or recoded", p.id)),
            Some(_) => {}
        }
    }
    for p in federation.parties() {
        if !new.federation.contains(&p.id) {
            changed.push(format!("party {} removed", p.id));
        }
    }
    for p in &new.peers {
        match peers.iter().find(|o| o.party == p.party) {
            None => changed.push(format!("peer {} added at {}", p.party, p.address)),
            Some(old) if old != p => {
                changed.push(format!("peer {} moved to {}", p.party, p.address))
            }
            Some(_) => {}
        }
    }
    for p in peers {
        if !new.peers.iter().any(|n| n.party == p.party) {
            changed.push(format!("peer {} removed", p.party));
        }
    }
    Ok(Decision {
        federation: (&new.federation != federation).then(|| new.federation.clone()),
        peers: (new.peers != peers).then(|| new.peers.clone()),
        changed,
        restart_needed: restart_needed(started, &new),
    })
}

/// Parties listed in both lists must keep their order: it breaks ties between competing
/// counter-proposals, and those already on record must resolve the same way afterwards.
fn check_order_kept(old: &Federation, new: &Federation) -> Result<(), String> {
    let kept = |from: &Federation, other: &Federation| -> Vec<String> {
        from.parties()
            .iter()
            .filter(|p| other.contains(&p.id))
            .map(|p| p.id.clone())
            .collect()
    };
    let (before, after) = (kept(old, new), kept(new, old));
    if let Some((a, b)) = before.iter().zip(&after).find(|(a, b)| a != b) {
        return Err(format!(
            "[[parties]] puts `{b}` where `{a}` was: parties already listed keep their order (it breaks ties between counter-proposals on record); add a party anywhere, remove any, but do not move one"
        ));
    }
    Ok(())
}

/// The keys, other than the party list and peers, whose value in `new` differs from `started`.
fn restart_needed(started: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, d: bool| {
        if d {
            keys.push(key);
        }
    };
    differs("trust_domain", started.trust_domain != new.trust_domain);
    differs("listen.grpc", started.listen_grpc != new.listen_grpc);
    differs("admin.listen", started.admin_listen != new.admin_listen);
    let (a, b) = (&started.tls, &new.tls);
    differs(
        "tls",
        (&a.ca, &a.cert, &a.key, &a.crl, &a.intl_clients)
            != (&b.ca, &b.cert, &b.key, &b.crl, &b.intl_clients),
    );
    differs("crypto.profile", started.tls.profile != new.tls.profile);
    differs("store", started.store != new.store);
    differs("log", started.log != new.log);
    differs(
        "access.read_only_systems",
        started.read_only_systems != new.read_only_systems,
    );
    differs(
        "limits",
        started.limits != new.limits || started.max_message_bytes != new.max_message_bytes,
    );
    differs(
        "audit.witness_interval_seconds",
        started.witness_interval != new.witness_interval,
    );
    differs(
        "sharing",
        started.deadlines != new.deadlines
            || started.coordinator != new.coordinator
            || started.default_catalog != new.default_catalog,
    );
    keys
}

/// Reads `source` again whenever its content changes, every `every`, and applies what
/// [`decide`] allows to `live`, telling `reloads`; until `stop`.
pub async fn follow(
    source: ConfigSource,
    started: Config,
    live: Live,
    reloads: Arc<Reloads>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| e.to_string());
    // Nothing seen yet: the first reading is decided on too, so a change made between the
    // start and this task's first look is not missed (an unchanged file decides nothing).
    let mut seen = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if seen.as_ref() == Some(&read(&source.path)) {
            continue;
        }
        if seen.is_some() {
            // An editor or a deployment tool may still be writing: let it finish.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now = read(&source.path);
        let federation = live.members.borrow().clone();
        let peers = live.peers.borrow().clone();
        // Decided on the bytes just read (not a third reading of the file).
        let decision = now
            .as_ref()
            .map_err(|e| format!("cannot read config file {}: {e}", source.path.display()))
            .and_then(|bytes| {
                std::str::from_utf8(bytes)
                    .map_err(|e| format!("config file {} is not UTF-8: {e}", source.path.display()))
            })
            .and_then(|text| {
                Config::from_toml(text, &source.path, &source.env).map_err(|e| e.to_string())
            })
            .and_then(|new| decide(&started, &federation, &peers, new));
        seen = Some(now);
        let at = now_micros();
        match decision {
            Err(why) => {
                tracing::error!(
                    config = %source.path.display(),
                    reason = %why,
                    "configuration file changed but is refused; the running party list and peers stay as they were"
                );
                reloads.refused.fetch_add(1, Ordering::Relaxed);
                reloads.update(|s| {
                    s.refused = Some(why);
                    s.refused_at = Some(at);
                });
            }
            Ok(d) => {
                if !d.restart_needed.is_empty() {
                    tracing::warn!(
                        config = %source.path.display(),
                        keys = %d.restart_needed.join(", "),
                        "configuration keys changed that take effect only at the next restart"
                    );
                }
                if !d.changed.is_empty() {
                    tracing::info!(
                        config = %source.path.display(),
                        changes = %d.changed.join("; "),
                        "party list and peers changed; applied without a restart"
                    );
                }
                if let Some(f) = d.federation {
                    live.members.send_replace(Arc::new(f));
                }
                if let Some(p) = d.peers {
                    live.peers.send_replace(Arc::new(p));
                }
                if !d.changed.is_empty() {
                    reloads.applied.fetch_add(1, Ordering::Relaxed);
                }
                reloads.update(|s| {
                    s.refused = None;
                    s.refused_at = None;
                    s.restart_needed = d.restart_needed;
                    if !d.changed.is_empty() {
                        s.applied_at = Some(at);
                        s.changed = d.changed;
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
