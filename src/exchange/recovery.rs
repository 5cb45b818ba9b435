//! Taking back this party's own changes after its store was restored from an older backup.
//!
//! A restored store ends its own change log at the backup; the peers may hold later changes of
//! it, signed by this party's key. A write now would reuse a sequence number a peer already
//! holds another change under, and that peer would never see it. So when a peer asks for
//! changes beyond the head ([`super::outbound`] marks the feed as behind), writes are held
//! ([`crate::records::Records`] refuses them) and this module's task asks every configured
//! peer to give back what it holds (`FederationService.ReturnChanges`):
//!
//! - each change given back is checked like kept evidence ([`EvidenceChecker`]): the envelope
//!   this party signed for that peer, in order, with the signature or manifest that proves it;
//! - of the copies of one change, the one with the record and the fewest emptied items wins
//!   (each peer's copy lacks what was withheld from it; two peers together often hold all);
//! - the changes that follow the head without a gap are appended under their own sequence
//!   numbers in one transaction ([`Feed::take_back`]); writes resume once the log reaches
//!   what the peer that asked holds.
//!
//! What cannot come back: items withheld from every peer that holds the change, changes of a
//! kind shared with none of them (the recovery stops before the first such change and says
//! so; restore a newer backup then), idempotency keys of the lost writes, and the audit
//! events of the lost interval (the witnesses' heads show that interval as lost).
//!
//! The holder side ([`give_back`]) serves the kept evidence of the caller's own changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::ExchangeError;
use super::evidence::EvidenceChecker;
use super::inbound::{MAX_RESPONSE_BYTES, record_of};
use super::signing::SignatureVerifier;
use crate::config::PeerConfig;
use crate::identity::tls::TlsSource;
use crate::records::{Feed, Records};
use crate::store::{Change, SignedManifest, StoredEvidence, StoredRecord};
use crate::wire::pb::federation_service_client::FederationServiceClient;
use crate::wire::{micros_of, pb, timestamp};

/// Changes per response given back.
const PAGE: usize = 500;
/// How often the task looks whether the feed is marked behind.
const POLL: Duration = Duration::from_secs(1);
/// Waits before trying again when not everything could be taken back: doubling from the
/// first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// The holder side of `ReturnChanges`: the changes of `caller` kept here after `after`, as
/// kept, page by page, then the end of the stream.
pub fn give_back(
    feed: Feed,
    caller: String,
    after: u64,
) -> ReceiverStream<Result<pb::ReturnChangesResponse, ExchangeError>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut cursor = after;
        let mut given = 0usize;
        loop {
            let page = match feed.evidence(&caller, cursor, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            let full = page.len() == PAGE;
            given += page.len();
            let response = pb::ReturnChangesResponse {
                changes: page.into_iter().map(kept_change).collect(),
            };
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
            cursor = last;
            if !full {
                break;
            }
        }
        tracing::info!(peer = %caller, after, given, "gave a peer back its own changes");
    });
    ReceiverStream::new(rx)
}

fn kept_change(e: StoredEvidence) -> pb::KeptChange {
    pb::KeptChange {
        seq: e.seq,
        envelope: e.envelope,
        scheme: u32::from(e.scheme),
        signature: e.signature,
        signer_certificate: e.signer,
        manifest: e.manifest.map(|m| pb::SignedManifest {
            manifest: m.manifest,
            scheme: u32::from(m.scheme),
            signature: m.signature,
        }),
        received_time: Some(timestamp(e.received)),
        erased_sha256: e.erased_sha256.unwrap_or_default(),
    }
}

/// A kept change as the evidence checker reads it.
fn stored_evidence(k: pb::KeptChange) -> Result<StoredEvidence, String> {
    let scheme = |v: u32| u16::try_from(v).map_err(|_| format!("signature scheme {v}"));
    let manifest = match k.manifest {
        Some(m) => Some(SignedManifest {
            digest: Sha256::digest(&m.manifest).to_vec(),
            manifest: m.manifest,
            scheme: scheme(m.scheme)?,
            signature: m.signature,
        }),
        None => None,
    };
    Ok(StoredEvidence {
        seq: k.seq,
        envelope: k.envelope,
        scheme: scheme(k.scheme)?,
        signature: k.signature,
        signer: k.signer_certificate,
        manifest_digest: manifest.as_ref().map(|m| m.digest.clone()),
        manifest,
        received: micros_of(k.received_time),
        erased_sha256: (!k.erased_sha256.is_empty()).then_some(k.erased_sha256),
    })
}

/// One peer's copy of one change.
struct Copy {
    time: i64,
    /// `None` when the change's kind was not shared with that peer.
    record: Option<StoredRecord>,
    /// Items emptied in this copy: withheld from the peer, or erased there since.
    emptied: usize,
    peer: String,
}

impl Copy {
    fn better_than(&self, other: &Copy) -> bool {
        match (&self.record, &other.record) {
            (Some(_), None) => true,
            (None, _) => false,
            (Some(_), Some(_)) => self.emptied < other.emptied,
        }
    }
}

/// What one recovery took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TakenBack {
    /// The log's head before and after.
    pub from_head: u64,
    pub head: u64,
    /// Records whose copy taken back has items emptied (withheld from or erased at every peer
    /// that gave the change back).
    pub with_items_emptied: u64,
    /// The peers whose copies were used.
    pub peers: Vec<String>,
    /// The peers that could not be asked (down, or the stream broke).
    pub unreachable: Vec<String>,
    /// The peers whose answer was refused, each with why ("guangde: change 7 given back:
    /// …"): what they gave back did not verify against this party's own signatures. The
    /// copies they gave before the refused one verified and are used, nothing after it is;
    /// the peer stays not asked, so writes stay held until it answers with what this party
    /// signed or its own pulls show it holds nothing beyond the head (a forged change is
    /// never applied, and nothing is written past a peer that may hold more).
    pub refused: Vec<String>,
    /// Why the log could not be brought further (a change no peer holds with its record).
    pub stopped: Option<String>,
}

/// Called after each recovery attempt (to count and audit it).
pub type OnTakenBack = Arc<dyn Fn(&Result<TakenBack, String>) + Send + Sync>;

/// The owner side: waits for the feed to be marked behind, then takes back from the peers.
#[derive(Clone)]
pub struct Recovery {
    records: Records,
    feed: Feed,
    verifier: Arc<SignatureVerifier>,
    tls: TlsSource,
    peers: Vec<PeerConfig>,
    on_taken_back: OnTakenBack,
}

impl Recovery {
    pub fn new(
        records: Records,
        feed: Feed,
        verifier: Arc<SignatureVerifier>,
        tls: TlsSource,
        peers: Vec<PeerConfig>,
        on_taken_back: OnTakenBack,
    ) -> Self {
        Recovery {
            records,
            feed,
            verifier,
            tls,
            peers,
            on_taken_back,
        }
    }

    /// Runs until `stop`: while the store is restored and not every peer was asked, or a
    /// peer holds more of this party's log than the store, takes back what the peers hold;
    /// once every peer was asked and nothing is missing, clears the restore mark (writes
    /// resume).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut retry = RETRY_FIRST;
        loop {
            let unchecked = self.feed.unchecked();
            let asking = unchecked.as_ref().is_some_and(|u| !u.is_empty());
            let mut wait = POLL;
            if asking || self.feed.behind().is_some() {
                if let Some(why) = self.feed.writes_held() {
                    tracing::warn!(
                        why,
                        "writes held; taking this party's changes back from its peers"
                    );
                }
                let outcome = self.take_back().await.map_err(|e| e.to_string());
                match &outcome {
                    Ok(t) => tracing::info!(
                        from_head = t.from_head, head = t.head, peers = ?t.peers,
                        with_items_emptied = t.with_items_emptied, stopped = ?t.stopped,
                        "took back this party's changes from its peers"
                    ),
                    Err(e) => tracing::error!(error = %e, "taking changes back failed; retrying"),
                }
                (self.on_taken_back)(&outcome);
                wait = retry;
                retry = (retry * 2).min(RETRY_CAP);
            }
            if self.feed.unchecked().is_some_and(|u| u.is_empty()) && self.feed.behind().is_none() {
                match self.feed.release_restored().await {
                    Ok(()) => tracing::info!(
                        "the restored store was checked against every peer; writes resume"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot clear the restore mark; retrying")
                    }
                }
            }
            if self.feed.writes_held().is_none() {
                wait = POLL;
                retry = RETRY_FIRST;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One attempt: every peer's copies after the head, the best copy of each change, the
    /// run that follows the head applied.
    pub async fn take_back(&self) -> Result<TakenBack, ExchangeError> {
        let party = self.records.party().to_string();
        let head = self.feed.last_seq(&party).await?;
        let mut best: BTreeMap<u64, Copy> = BTreeMap::new();
        let mut taken = TakenBack {
            from_head: head,
            head,
            ..TakenBack::default()
        };
        for peer in &self.peers {
            match self.collect(peer, head, &mut best).await {
                Ok(()) => {
                    self.feed.checked(&peer.party);
                }
                Err(ExchangeError::Refused(why)) => {
                    tracing::error!(peer = %peer.party, error = %why, "a peer gave back changes that do not verify; writes stay held");
                    taken.refused.push(format!("{}: {why}", peer.party));
                }
                Err(e) => {
                    tracing::warn!(peer = %peer.party, error = %e, "a peer could not give changes back");
                    taken.unreachable.push(peer.party.clone());
                }
            }
        }
        let mut changes = Vec::new();
        let mut next = head + 1;
        while let Some(copy) = best.remove(&next) {
            let Some(record) = copy.record else {
                taken.stopped = Some(format!(
                    "change {next} is held by no peer with its record (its kind was shared with \
                     none of them); restore a newer backup"
                ));
                break;
            };
            if copy.emptied > 0 {
                taken.with_items_emptied += 1;
            }
            if !taken.peers.contains(&copy.peer) {
                taken.peers.push(copy.peer);
            }
            changes.push(Change {
                owner: party.clone(),
                seq: next,
                time: copy.time,
                record,
            });
            next += 1;
        }
        if !changes.is_empty() {
            taken.head = self.feed.take_back(&party, changes).await?;
        }
        if let Some(behind) = self.feed.behind()
            && taken.stopped.is_none()
        {
            taken.stopped = Some(format!(
                "{} holds changes through {}, the peers gave back through {}",
                behind.peer, behind.peer_seq, taken.head
            ));
        }
        Ok(taken)
    }

    /// Reads, checks and keeps the best copies of what `peer` gives back after `head`.
    async fn collect(
        &self,
        peer: &PeerConfig,
        head: u64,
        best: &mut BTreeMap<u64, Copy>,
    ) -> Result<(), ExchangeError> {
        let tls = self.tls.clone();
        let channel =
            crate::identity::tls::channel_with(&peer.address, &peer.server_name, move || {
                tls.borrow().client.clone()
            })
            .map_err(|e| ExchangeError::Transport(e.to_string()))?;
        let mut client =
            FederationServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        let transport =
            |s: tonic::Status| ExchangeError::Transport(format!("{:?}: {}", s.code(), s.message()));
        let mut stream = match client
            .return_changes(pb::ReturnChangesRequest { after_seq: head })
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                // A peer older than ReturnChanges cannot give changes back. It counts as asked:
                // if it holds more of this log, its next pull marks the store behind.
                tracing::warn!(peer = %peer.party, "the peer cannot give changes back (an older version); relying on its pulls to say whether it holds more");
                return Ok(());
            }
            Err(status) => return Err(transport(status)),
        };
        let party = self.records.party();
        let mut checker = EvidenceChecker::new(&self.verifier, party, &peer.party, head);
        while let Some(msg) = stream.message().await.map_err(transport)? {
            for kept in msg.changes {
                let seq = checker.next();
                let refuse =
                    |why: String| ExchangeError::Refused(format!("change {seq} given back: {why}"));
                let evidence = stored_evidence(kept).map_err(refuse)?;
                checker.check(&evidence).map_err(refuse)?;
                let envelope = pb::ChangeEnvelope::decode(evidence.envelope.as_slice())
                    .map_err(|e| refuse(format!("envelope does not decode: {e}")))?;
                let (time, record) = record_of(&self.records, party, &envelope).map_err(refuse)?;
                let erased = usize::from(evidence.erased_sha256.is_some());
                let copy = Copy {
                    time,
                    record,
                    emptied: envelope.withheld_fields.len() + erased,
                    peer: peer.party.clone(),
                };
                match best.get(&seq) {
                    Some(held) if !copy.better_than(held) => {}
                    _ => {
                        best.insert(seq, copy);
                    }
                }
            }
        }
        Ok(())
    }
}
