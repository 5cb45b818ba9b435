//! The owner side of `PullChanges`: a live stream of this party's change log for one peer,
//! filtered by the sharing policy and signed by the owner's key: once per response over a
//! manifest of its envelopes when the peer accepts that, else change by change. The channel
//! to the gRPC layer is small and bounded, so a slow peer slows the producer down instead of
//! growing a buffer.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::ExchangeError;
use super::policy::SharingPolicy;
use crate::crypto::Digest;
use crate::domain::RecordKind;
use crate::identity::signer::ChangeSigner;
use crate::identity::tls::TlsSource;
use crate::membership::Membership;
use crate::records::Feed;
use crate::sharing::{PeerView, Sharing};
use crate::store::Change;
use crate::wire::{kind_to_wire, pb};

/// Changes per response message.
pub const BATCH: usize = 256;
/// An idle stream sends an empty response this often, so peers see it is alive and learn the
/// owner's head sequence. Until then it waits for a commit notice (commits by this process,
/// and by other replicas of a PostgreSQL store through LISTEN, wake it at once) and does not
/// look at the store: a federation of N parties holds N−1 idle streams at every gateway, and
/// polling each of them once a second cost each gateway 2 store queries per peer per second.
/// A commit it was not told about still goes out with the next heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// The sending side of one peer's stream.
type Responses = mpsc::Sender<Result<pb::PullChangesResponse, ExchangeError>>;

/// One response's worth of changes, sealed for a peer.
struct Batch {
    /// The sequence of the last change read (sent or filtered out): the cursor moves there.
    last: Option<u64>,
    signed: Vec<pb::SignedChange>,
    manifest: Option<pb::SignedManifest>,
    /// The owner's head when the batch was read.
    head_seq: u64,
}

/// Serves this party's change log to peers.
#[derive(Clone)]
pub struct Outbound {
    /// This party: the owner of the change log served.
    party: String,
    feed: Feed,
    policy: Arc<SharingPolicy>,
    /// The owner's catalog and grants, read anew when a batch holds a newer entry or answer.
    sharing: Arc<Sharing>,
    /// The current TLS material; its signer signs (rotated keys are picked up per stream).
    tls: TlsSource,
    stop: watch::Receiver<bool>,
    /// This party's list digest, shown in every response; the peers' noted from requests.
    membership: Arc<Membership>,
}

impl Outbound {
    /// `stop` turning true ends every stream, so a graceful shutdown is not held up by peers;
    /// `membership` holds this party's list digest and notes the peers'.
    pub fn new(
        party: String,
        feed: Feed,
        policy: Arc<SharingPolicy>,
        sharing: Arc<Sharing>,
        tls: TlsSource,
        stop: watch::Receiver<bool>,
        membership: Arc<Membership>,
    ) -> Self {
        Outbound {
            party,
            feed,
            policy,
            sharing,
            tls,
            stop,
            membership,
        }
    }

    /// The encoded envelope of one change as `peer` may see it under `view`.
    fn envelope(&self, view: &PeerView, peer: &str, change: &Change) -> Vec<u8> {
        let mut envelope = pb::ChangeEnvelope {
            owner: change.owner.clone(),
            seq: change.seq,
            recipient: peer.to_string(),
            commit_time: Some(crate::wire::timestamp(change.time)),
            ..Default::default()
        };
        if let Some(out) = self.policy.outgoing(view, peer, &change.record) {
            envelope.kind = kind_to_wire(change.record.kind) as i32;
            envelope.record_id = change.record.id.to_string();
            envelope.revision = change.record.revision;
            envelope.record_json = out.body.into_bytes();
            envelope.withheld_fields = out.withheld;
        }
        envelope.encode_to_vec()
    }

    /// Prepares a batch of changes for `peer`, in order, spread over the cores: with
    /// `manifest`, the envelopes and one signature over the manifest of their hashes;
    /// without, each envelope signed on its own.
    async fn seal(
        &self,
        signer: &Arc<ChangeSigner>,
        peer: &str,
        changes: Vec<Change>,
        manifest: bool,
    ) -> Result<(Vec<pb::SignedChange>, Option<pb::SignedManifest>), ExchangeError> {
        let Some(first_seq) = changes.first().map(|c| c.seq) else {
            return Ok((Vec::new(), None));
        };
        // A catalog entry or answer in the batch may change what the peer receives from then
        // on: the view must include it before anything after it is sealed.
        let governs = changes
            .iter()
            .filter(|c| {
                matches!(
                    c.record.kind,
                    RecordKind::CatalogEntry | RecordKind::AccessAnswer
                )
            })
            .map(|c| c.seq)
            .max();
        let view =
            match governs {
                Some(seq) => self.sharing.as_of(seq).await.map_err(|e| {
                    ExchangeError::Transport(format!("reading the sharing view: {e}"))
                })?,
                None => self.sharing.current(),
            };
        let view = Arc::new(view.for_peer(peer, self.sharing.now()));
        let (this, each, recipient) = (self.clone(), signer.clone(), peer.to_string());
        let sealed = super::on_cores(Arc::new(changes), move |_, c| {
            let envelope = this.envelope(&view, &recipient, c);
            if manifest {
                let digest = each.digest().of(&envelope);
                return Ok((
                    pb::SignedChange {
                        envelope,
                        ..Default::default()
                    },
                    digest,
                ));
            }
            let (scheme, signature) = each.sign(&envelope)?;
            let signed = pb::SignedChange {
                envelope,
                scheme: u32::from(scheme),
                signature,
            };
            Ok((signed, Vec::new()))
        })
        .await
        .map_err(|e| ExchangeError::Transport(format!("signing task failed: {e}")))?
        .into_iter()
        .collect::<Result<Vec<_>, ExchangeError>>()?;
        let (changes, digests): (Vec<_>, Vec<_>) = sealed.into_iter().unzip();
        if !manifest {
            return Ok((changes, None));
        }
        let mut listed = pb::ChangeManifest {
            owner: self.party.clone(),
            recipient: peer.to_string(),
            first_seq,
            ..Default::default()
        };
        match signer.digest() {
            Digest::Sha256 => listed.envelope_sha256 = digests,
            Digest::Sm3 => listed.envelope_sm3 = digests,
        }
        let bytes = listed.encode_to_vec();
        let (scheme, signature) = signer.sign(&bytes)?;
        let signed = pb::SignedManifest {
            manifest: bytes,
            scheme: u32::from(scheme),
            signature,
        };
        Ok((changes, Some(signed)))
    }

    /// Streams this party's changes after `after` to `peer`, then new ones as they commit;
    /// `manifests` when the peer accepts one signature per response. `peer_membership` is the
    /// digest of the peer's party list, as its request showed it.
    pub fn stream(
        &self,
        peer: String,
        after: u64,
        manifests: bool,
        peer_membership: &[u8],
    ) -> ReceiverStream<Result<pb::PullChangesResponse, ExchangeError>> {
        self.membership
            .seen(&peer, peer_membership, crate::domain::now_micros());
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(self.clone().send_changes(peer, after, manifests, tx));
        ReceiverStream::new(rx)
    }

    /// The task behind one peer's stream: checks what the peer says it holds, then sends
    /// batches of changes (or a heartbeat) until the peer goes, leaves the federation, or the
    /// gateway stops.
    async fn send_changes(self, peer: String, after: u64, manifests: bool, tx: Responses) {
        let mut changed = self.feed.subscribe();
        let mut stop = self.stop.clone();
        // A party removed or suspended while its stream is open is sent nothing more.
        let mut members = self.membership.members().clone();
        let mut members_fixed = false;
        let mut cursor = after;
        let mut first = true;
        // One signer per stream: the certificate sent first must match every signature.
        let signer = self.tls.borrow().signer.clone();
        // When the last response went: the heartbeat is due HEARTBEAT after it, however
        // often commit notices (of other owners' changes too) wake the stream meanwhile.
        let mut sent_at = tokio::time::Instant::now();
        tracing::info!(peer = %peer, after, manifests, "peer stream opened");
        if let Err(e) = self.peer_not_ahead(&peer, after).await {
            let _ = tx.send(Err(e)).await;
            return;
        }
        loop {
            if !members.current().is_active(&peer) {
                tracing::warn!(peer = %peer, cursor, "peer removed from the party list or suspended: its stream ends");
                let _ = tx.send(Err(ExchangeError::NotMember(peer.clone()))).await;
                return;
            }
            let batch = match self.next_batch(&signer, &peer, cursor, manifests).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(peer = %peer, error = %e, "peer stream failed");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if batch.signed.is_empty() && !first && sent_at.elapsed() < HEARTBEAT {
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = tokio::time::sleep_until(sent_at + HEARTBEAT) => {}
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tx.closed() => break,
                    c = members.changed(), if !members_fixed => members_fixed = !c,
                }
                continue;
            }
            sent_at = tokio::time::Instant::now();
            let response = pb::PullChangesResponse {
                signer_certificate: if first {
                    signer.certificate().to_vec()
                } else {
                    Vec::new()
                },
                changes: batch.signed,
                head_seq: batch.head_seq,
                manifest: batch.manifest,
                membership_sha256: self.membership.own().to_vec(),
            };
            first = false;
            if tx.send(Ok(response)).await.is_err() {
                break;
            }
            if let Some(last) = batch.last {
                cursor = last;
            }
        }
        tracing::info!(peer = %peer, cursor, "peer stream closed");
    }

    /// The peer said how much of this party's log it holds: one peer fewer to ask after a
    /// restore; one that holds more than the head holds writes (`Behind`).
    async fn peer_not_ahead(&self, peer: &str, after: u64) -> Result<(), ExchangeError> {
        let Ok(head) = self.feed.last_seq(&self.party).await else {
            return Ok(());
        };
        self.feed.checked(peer);
        if after <= head {
            return Ok(());
        }
        if self.feed.mark_behind(peer, after, head) {
            tracing::error!(
                peer = %peer, peer_seq = after, head,
                "a peer holds more of this party's change log than this store: \
                 writes are held until the missing changes are taken back"
            );
        }
        Err(ExchangeError::Behind {
            peer_seq: after,
            head,
        })
    }

    /// The changes after `cursor` (at most [`BATCH`]), filtered and signed for `peer`, with
    /// the owner's head.
    async fn next_batch(
        &self,
        signer: &Arc<ChangeSigner>,
        peer: &str,
        cursor: u64,
        manifests: bool,
    ) -> Result<Batch, ExchangeError> {
        let changes = self.feed.changes(&self.party, cursor, BATCH).await?;
        let head_seq = self.feed.last_seq(&self.party).await?;
        let last = changes.last().map(|c| c.seq);
        let (signed, manifest) = self.seal(signer, peer, changes, manifests).await?;
        Ok(Batch {
            last,
            signed,
            manifest,
            head_seq,
        })
    }
}
