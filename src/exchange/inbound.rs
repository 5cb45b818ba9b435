//! The receiver side: one long-lived `PullChanges` stream per configured peer. Each change is
//! verified (signer certificate, signature — its own or its response's manifest's — owner,
//! recipient, order) before it is applied; changes are applied in order with the cursor in
//! the same transaction; a refused change ends the stream and the next one starts from the
//! last good cursor. Disconnections are retried with capped exponential backoff and jitter,
//! forever, with no operator action.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::ExchangeError;
use super::signing::{SignatureVerifier, VerifiedSigner};
use crate::config::PeerConfig;
use crate::domain::now_micros;
use crate::domain::{Members, RecordKind};
use crate::identity::tls::TlsSource;
use crate::membership::Membership;
use crate::membership::reload::{Peers, active_peers};
use crate::records::{Feed, Records};
use crate::sharing::erasure::keep_only_granted;
use crate::sharing::{SharingView, read_view_of};
use crate::store::{Evidence, PullLease, ReplicaBatch, ReplicaChange, SignedManifest};
use crate::wire::pb::federation_service_client::FederationServiceClient;
use crate::wire::{kind_from_wire, micros_in_range, pb};

mod verify;

use verify::OpenManifest;
pub(crate) use verify::record_of;

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between retries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Largest response accepted from a peer (a batch of changes).
/// How long a peer stream may stay silent before it is closed and opened again: three of the
/// owner's heartbeats (one every 10 s while idle), so a stalled or trickling peer (a byte a
/// minute) cannot hold this party's stream forever.
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(30);

pub(super) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How often a standby replica asks for the pull lease of a peer another replica holds.
pub const LEASE_RETRY: Duration = Duration::from_secs(1);

/// Capped exponential backoff with "equal jitter": each delay is uniformly random between half
/// and all of the current step, so reconnecting peers do not move in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            step: base,
        }
    }

    /// The next delay; the step doubles up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(random_fraction())
    }

    /// After progress, start again from the base.
    pub fn reset(&mut self) {
        self.step = self.base;
    }
}

fn random_fraction() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// What the operator sees of one peer (status page, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// A stream to the peer is open.
    pub connected: bool,
    /// Last change of the peer applied here.
    pub cursor: u64,
    /// The peer's last committed change, as it last told us.
    pub head_seq: u64,
    /// Changes applied since start.
    pub applied: u64,
    /// Changes refused (bad signer, signature, owner, recipient or order) since start.
    pub refused: u64,
    /// Changes kept without items whose grant ended while they were on their way, since start.
    pub emptied_late: u64,
    /// When a change was last applied (microseconds since the epoch).
    pub last_applied_at: Option<i64>,
    /// The last failure, cleared by the next progress.
    pub last_error: Option<String>,
    /// Another replica of this gateway (sharing its PostgreSQL store) holds the pull lease
    /// for this peer; this one waits to take over.
    pub standby: bool,
}

/// Peer statuses by party, shared with the operations surface.
pub type PeerStatuses = Arc<Mutex<BTreeMap<String, PeerStatus>>>;

/// Everything a puller needs.
#[derive(Clone)]
pub struct Inbound {
    /// Rebuilds replicated records and settles referrals answered by peers.
    records: Records,
    feed: Feed,
    verifier: Arc<SignatureVerifier>,
    tls: TlsSource,
    status: PeerStatuses,
    /// A stream without a message for this long is closed and opened again.
    idle_limit: Duration,
    /// Told of every refused change (to audit it).
    on_refused: Option<OnRefused>,
    /// This party's list digest, sent with every request; the peers' noted from responses.
    membership: Arc<Membership>,
}

/// Called with the peer and the refusal when a change from a peer is refused.
pub type OnRefused = Arc<dyn Fn(&str, &ExchangeError) + Send + Sync>;

impl Inbound {
    pub fn new(
        records: Records,
        feed: Feed,
        verifier: Arc<SignatureVerifier>,
        tls: TlsSource,
    ) -> Self {
        let profile = tls.borrow().profile;
        let membership = Arc::new(Membership::new(records.members().clone(), profile));
        Inbound {
            records,
            feed,
            verifier,
            tls,
            status: PeerStatuses::default(),
            idle_limit: DEFAULT_IDLE_LIMIT,
            on_refused: None,
            membership,
        }
    }

    /// Shows and notes party list digests in `membership` (shared with the status page).
    pub fn with_membership(mut self, membership: Arc<Membership>) -> Self {
        self.membership = membership;
        self
    }

    /// Tells `hook` of every change refused from a peer.
    pub fn with_on_refused(mut self, hook: OnRefused) -> Self {
        self.on_refused = Some(hook);
        self
    }

    /// Closes (and opens again) a peer stream that stays silent for `limit`.
    pub fn with_idle_limit(mut self, limit: Duration) -> Self {
        self.idle_limit = limit;
        self
    }

    /// The same pullers over `records` (e.g. with another clock).
    pub fn with_records(mut self, records: Records) -> Self {
        self.records = records;
        self
    }

    pub fn status(&self) -> PeerStatuses {
        self.status.clone()
    }

    /// Follows every peer in `peers` that is an active member of `members`, one task per
    /// peer, until `stop` turns true. Both lists may change while running: a follower starts
    /// for a peer added (or reinstated), and stops for one removed, suspended or moved to
    /// another address (a moved one starts again there, from its cursor).
    pub async fn follow_peers(
        self,
        mut peers: Peers,
        mut members: Members,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut running: BTreeMap<String, (PeerConfig, watch::Sender<bool>)> = BTreeMap::new();
        let mut tasks = JoinSet::new();
        let (mut peers_fixed, mut members_fixed) = (false, false);
        loop {
            peers.mark_unchanged();
            let wanted = active_peers(&peers, &members);
            running.retain(|party, (config, stop_one)| {
                if wanted.contains(config) {
                    return true;
                }
                tracing::info!(peer = %party, "no longer following peer: removed, suspended or moved");
                let _ = stop_one.send(true);
                false
            });
            for peer in wanted {
                if running.contains_key(&peer.party) {
                    continue;
                }
                tracing::info!(peer = %peer.party, address = %peer.address, "following peer");
                let (stop_one, stopped) = watch::channel(false);
                self.update(&peer.party, |s| *s = PeerStatus::default());
                let (this, config, party) = (self.clone(), peer.clone(), peer.party.clone());
                tasks.spawn(async move {
                    this.follow(config, stopped).await;
                    party
                });
                running.insert(peer.party.clone(), (peer, stop_one));
            }
            tokio::select! {
                r = peers.changed(), if !peers_fixed => peers_fixed = r.is_err(),
                c = members.changed(), if !members_fixed => members_fixed = !c,
                Some(ended) = tasks.join_next() => {
                    // A follower that ended for good (its peer left) leaves no status behind.
                    if let Ok(party) = ended {
                        if !running.contains_key(&party) {
                            self.status.lock().unwrap_or_else(|p| p.into_inner()).remove(&party);
                        }
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        for (_, stop_one) in running.values() {
            let _ = stop_one.send(true);
        }
        while tasks.join_next().await.is_some() {}
    }

    fn update(&self, party: &str, f: impl FnOnce(&mut PeerStatus)) {
        let mut map = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(party.to_string()).or_default());
    }

    async fn follow(self, peer: PeerConfig, mut stop: watch::Receiver<bool>) {
        let tls = self.tls.clone();
        let current = move || tls.borrow().client.clone();
        let channel = match crate::identity::tls::channel_with(
            &peer.address,
            &peer.server_name,
            current,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(peer = %peer.party, error = %e, "cannot set up the peer connection; not following it");
                self.update(&peer.party, |s| s.last_error = Some(e.to_string()));
                return;
            }
        };
        let mut client =
            FederationServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        loop {
            let Some(mut lease) = self.claim(&peer.party, &mut stop).await else {
                return;
            };
            loop {
                let mut progressed = false;
                let result = tokio::select! {
                    r = self.session(&mut client, &peer.party, &mut progressed) => r,
                    _ = lease.lost() => break,
                    _ = stop.wait_for(|s| *s) => return,
                };
                self.update(&peer.party, |s| s.connected = false);
                match result {
                    Ok(()) => {
                        tracing::info!(peer = %peer.party, "peer closed the stream; reconnecting")
                    }
                    Err(e) if e.is_refusal() => {
                        tracing::error!(peer = %peer.party, error = %e, "refused a change from peer; nothing of it applied");
                        self.update(&peer.party, |s| {
                            s.refused += 1;
                            s.last_error = Some(e.to_string());
                        });
                        if let Some(hook) = &self.on_refused {
                            hook(&peer.party, &e);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(peer = %peer.party, address = %peer.address, error = %e, "peer stream failed; will retry");
                        self.update(&peer.party, |s| s.last_error = Some(e.to_string()));
                    }
                }
                if progressed {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = lease.lost() => break,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            tracing::warn!(peer = %peer.party, "lost the pull lease (the database session holding it ended); claiming it again");
            self.update(&peer.party, |s| {
                s.connected = false;
                s.last_error = Some("lost the pull lease".into());
            });
        }
    }

    /// Waits until this replica holds the lease to pull from `peer` (at once, unless replicas
    /// share a PostgreSQL store and another one holds it), or until `stop`.
    async fn claim(&self, peer: &str, stop: &mut watch::Receiver<bool>) -> Option<PullLease> {
        let mut standing_by = false;
        loop {
            match self.feed.pull_lease(peer).await {
                Ok(Some(lease)) => {
                    if standing_by {
                        tracing::info!(peer = %peer, "took over pulling from the peer");
                    }
                    self.update(peer, |s| s.standby = false);
                    return Some(lease);
                }
                Ok(None) => {
                    if !standing_by {
                        tracing::info!(peer = %peer, "another replica of this gateway pulls from the peer; standing by to take over");
                        standing_by = true;
                    }
                    self.update(peer, |s| s.standby = true);
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "cannot claim the pull lease; retrying");
                    self.update(peer, |s| s.last_error = Some(e.to_string()));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(LEASE_RETRY) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// One stream: from the stored cursor until the stream ends or a change is refused. Each
    /// message is received and verified ([`Inbound::verify`]), then what verified is applied
    /// ([`Inbound::apply`]); a refusal ends the stream after what verified before it.
    async fn session(
        &self,
        client: &mut FederationServiceClient<Channel>,
        owner: &str,
        progressed: &mut bool,
    ) -> Result<(), ExchangeError> {
        let mut cursor = self.feed.cursor(owner).await?;
        let mut stream = client
            .pull_changes(pb::PullChangesRequest {
                owner: owner.to_string(),
                after_seq: cursor,
                accept_manifests: true,
                membership_sha256: self.membership.own().to_vec(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        let mut signer: Option<VerifiedSigner> = None;
        // What this party may hold of the owner's records (read when first needed).
        let mut view: Option<SharingView> = None;
        while let Some(msg) = self.next_message(&mut stream).await? {
            let head_seq = msg.head_seq;
            let verified = self.verify(owner, msg, &mut signer, &mut cursor).await?;
            if !verified.batch.is_empty() {
                self.apply(
                    owner,
                    verified.signer,
                    verified.batch,
                    verified.manifest,
                    &mut view,
                )
                .await?;
                *progressed = true;
            }
            if let Some(e) = verified.refusal {
                return Err(e);
            }
            self.update(owner, |s| {
                s.head_seq = head_seq;
                s.cursor = cursor;
            });
        }
        Ok(())
    }

    /// The next message of a stream, `None` at its end; a peer silent for longer than the
    /// idle limit ends the stream with an error.
    async fn next_message(
        &self,
        stream: &mut tonic::Streaming<pb::PullChangesResponse>,
    ) -> Result<Option<pb::PullChangesResponse>, ExchangeError> {
        let idle_limit = self.idle_limit;
        tokio::time::timeout(idle_limit, stream.message())
            .await
            .map_err(|_| {
                ExchangeError::Transport(format!(
                    "no message from the peer for {} ms (it sends a heartbeat every 10 s): stream closed",
                    idle_limit.as_millis()
                ))
            })?
            .map_err(transport)
    }

    /// Applies verified changes of `owner` with their evidence and the cursor, in parts that
    /// end at a change of the owner's catalog or grants (after which what this party may keep
    /// is read anew), then settles referrals the batch answered.
    async fn apply(
        &self,
        owner: &str,
        signer: VerifiedSigner,
        batch: Vec<ReplicaChange>,
        manifest: Option<Arc<OpenManifest>>,
        view: &mut Option<SharingView>,
    ) -> Result<(), ExchangeError> {
        let n = batch.len() as u64;
        let answers = batch.iter().any(|c| {
            c.record
                .as_ref()
                .is_some_and(|r| r.kind == RecordKind::ReferralResponse)
        });
        // The last verified change, until the store says what it applied.
        let mut applied = batch.last().map_or(0, |c| c.seq);
        for part in split_at_governance(batch) {
            let governs = part.last().is_some_and(governs_sharing);
            let part = self.keep_only_granted(owner, part, view).await?;
            applied = self
                .feed
                .apply(ReplicaBatch {
                    owner: owner.to_string(),
                    signer: (signer.fingerprint.clone(), signer.der.clone()),
                    changes: part,
                    manifest: manifest.as_ref().map(|m| m.signed.clone()),
                    received: now_micros(),
                })
                .await?;
            if governs {
                *view = None;
            }
        }
        if answers {
            // An accepted referral of ours makes our original project REFERRED.
            if let Err(e) = self.records.settle_referrals().await {
                tracing::warn!(error = %e, "settling referrals failed; retried on the next answer or restart");
            }
        }
        self.update(owner, |s| {
            s.cursor = applied;
            s.applied += n;
            s.last_applied_at = Some(now_micros());
            s.last_error = None;
        });
        Ok(())
    }

    /// Empties, in changes about to be applied, the items this party holds no grant for now
    /// (a grant that expired or was revoked while the change was on its way): the record and
    /// the kept envelope (its SHA-256 as received kept, so the signature still proves it).
    async fn keep_only_granted(
        &self,
        owner: &str,
        mut changes: Vec<ReplicaChange>,
        view: &mut Option<SharingView>,
    ) -> Result<Vec<ReplicaChange>, ExchangeError> {
        let governed = changes.iter().any(|c| {
            c.record
                .as_ref()
                .is_some_and(|r| RecordKind::GOVERNED.contains(&r.kind))
        });
        if !governed {
            return Ok(changes);
        }
        let current = match view {
            Some(v) => v,
            None => view.insert(
                read_view_of(&self.records, owner)
                    .await
                    .map_err(|e| ExchangeError::Transport(format!("reading grants: {e}")))?,
            ),
        };
        let now = self.records.now();
        let touched = keep_only_granted(current, self.records.party(), now, &mut changes);
        for change in &mut changes {
            if let Some(record) = &change.record {
                change.apart = current.conditional_items(record.kind);
            }
        }
        if !touched.is_empty() {
            self.update(owner, |s| s.emptied_late += touched.len() as u64);
        }
        for (seq, items) in touched {
            tracing::warn!(
                owner,
                seq,
                ?items,
                "change arrived after its grant ended: items emptied before it was kept"
            );
        }
        Ok(changes)
    }
}

/// A gRPC error of the pull stream as the transport failure it is.
fn transport(s: tonic::Status) -> ExchangeError {
    ExchangeError::Transport(format!("{:?}: {}", s.code(), s.message()))
}

/// Whether a change is one of the owner's catalog entries or answers: what this party may hold
/// of the owner's records may differ after it.
fn governs_sharing(change: &ReplicaChange) -> bool {
    change
        .record
        .as_ref()
        .is_some_and(|r| matches!(r.kind, RecordKind::CatalogEntry | RecordKind::AccessAnswer))
}

/// `changes` in parts, each ending at a change that [`governs_sharing`] (the last part may not).
fn split_at_governance(changes: Vec<ReplicaChange>) -> Vec<Vec<ReplicaChange>> {
    let mut parts = vec![Vec::new()];
    for change in changes {
        let ends = governs_sharing(&change);
        parts.last_mut().expect("never empty").push(change);
        if ends {
            parts.push(Vec::new());
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

#[cfg(test)]
mod tests;
