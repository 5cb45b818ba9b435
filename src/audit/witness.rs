//! Cross-party witnessing of audit chain heads. Each gateway periodically signs its chain
//! head (party, sequence, hash, time) with its gateway key and sends it to its peers, who
//! verify the signature against the federation PKI and keep the head. Later, the party's own
//! chain is compared with the heads its peers hold: a head whose hash differs from the local
//! event at that sequence proves history was rewritten after the peer saw it.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::watch;

use crate::config::PeerConfig;
use crate::domain::{Members, now_micros};
use crate::exchange::ExchangeError;
use crate::exchange::signing::SignatureVerifier;
use crate::identity::signer::ChangeSigner;
use crate::identity::tls::TlsSource;
use crate::membership::reload::{Peers, active_peers};
use crate::store::{AuditQuery, Store, WitnessedHead};
use crate::wire::pb::federation_service_client::FederationServiceClient;
use crate::wire::{micros_of, pb};

/// Signs this gateway's current chain head.
pub fn sign_head(
    signer: &ChangeSigner,
    party: &str,
    seq: u64,
    hash: &[u8],
) -> Result<pb::SignedChainHead, ExchangeError> {
    let head = pb::ChainHead {
        party: party.to_string(),
        seq,
        hash: hash.to_vec(),
        time: Some(crate::wire::timestamp(now_micros())),
    };
    let bytes = head.encode_to_vec();
    let (scheme, signature) = signer.sign(&bytes)?;
    Ok(pb::SignedChainHead {
        head: bytes,
        scheme: u32::from(scheme),
        signature,
        signer_certificate: signer.certificate().to_vec(),
    })
}

/// Verifies a head signed by `party`'s gateway; returns it ready to store.
pub fn verify_head(
    verifier: &SignatureVerifier,
    party: &str,
    signed: &pb::SignedChainHead,
) -> Result<WitnessedHead, ExchangeError> {
    let signer = verifier.check_signer(&signed.signer_certificate, party)?;
    let head = pb::ChainHead::decode(signed.head.as_slice())
        .map_err(|e| ExchangeError::Refused(format!("undecodable chain head: {e}")))?;
    let scheme = u16::try_from(signed.scheme)
        .map_err(|_| ExchangeError::Refused("bad signature scheme".into()))?;
    verifier.verify(&signer, head.seq, &signed.head, scheme, &signed.signature)?;
    if head.party != party {
        return Err(ExchangeError::Refused(format!(
            "head names party `{}`, signed by `{party}`",
            head.party
        )));
    }
    Ok(WitnessedHead {
        party: head.party,
        seq: head.seq,
        hash: head.hash,
        time: micros_of(head.time),
        signed: signed.head.clone(),
        scheme,
        signature: signed.signature.clone(),
        signer: signed.signer_certificate.clone(),
    })
}

/// A peer's signed head that the local chain contradicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction {
    /// The peer holding the head.
    pub peer: String,
    pub seq: u64,
    pub witnessed_hash: Vec<u8>,
    /// The local event's hash at that sequence; `None` when the local chain no longer has it.
    pub local_hash: Option<Vec<u8>>,
}

impl std::fmt::Display for Contradiction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.local_hash {
            Some(local) => write!(
                f,
                "{} holds a head signed by this party for event {} with hash {}, but the local chain has {}: history was rewritten after {} witnessed it",
                self.peer,
                self.seq,
                super::hex(&self.witnessed_hash),
                super::hex(local),
                self.peer
            ),
            None => write!(
                f,
                "{} holds a head signed by this party for event {} (hash {}), which the local chain does not have: events were removed",
                self.peer,
                self.seq,
                super::hex(&self.witnessed_hash)
            ),
        }
    }
}

/// Compares heads peers witnessed with the local chain.
pub async fn contradictions(
    store: &dyn Store,
    heads: &[(String, WitnessedHead)],
) -> Result<Vec<Contradiction>, crate::store::StoreError> {
    let anchor = store.audit_anchor().await?;
    let mut found = Vec::new();
    for (peer, head) in heads {
        let local = if anchor.as_ref().is_some_and(|a| a.seq == head.seq) {
            anchor.as_ref().map(|a| a.hash.clone())
        } else if anchor.as_ref().is_some_and(|a| head.seq < a.seq) {
            // Pruned locally: the export file is where that part of the chain is checked.
            continue;
        } else {
            store
                .audit_events(AuditQuery {
                    after_seq: head.seq - 1,
                    limit: 1,
                    ..AuditQuery::default()
                })
                .await?
                .into_iter()
                .find(|e| e.seq == head.seq)
                .map(|e| e.hash)
        };
        if local.as_deref() != Some(head.hash.as_slice()) {
            found.push(Contradiction {
                peer: peer.clone(),
                seq: head.seq,
                witnessed_hash: head.hash.clone(),
                local_hash: local,
            });
        }
    }
    Ok(found)
}

/// Asks each peer for the heads of `party` it holds.
pub async fn collect_heads(
    party: &str,
    peers: &[PeerConfig],
    tls: TlsSource,
    verifier: &SignatureVerifier,
) -> Vec<Result<(String, Vec<WitnessedHead>), String>> {
    let mut out = Vec::new();
    for peer in peers {
        let tls = tls.clone();
        let result = async {
            let channel =
                crate::identity::tls::channel_with(&peer.address, &peer.server_name, move || {
                    tls.borrow().client.clone()
                })
                .map_err(|e| e.to_string())?;
            let heads = FederationServiceClient::new(channel)
                .list_witnessed_heads(pb::ListWitnessedHeadsRequest {
                    party: party.to_string(),
                })
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                .into_inner()
                .heads;
            // Only heads this party really signed count as evidence.
            let verified = heads
                .iter()
                .filter_map(|h| verify_head(verifier, party, h).ok())
                .collect();
            Ok((peer.party.clone(), verified))
        }
        .await;
        out.push(result.map_err(|e: String| format!("{}: {e}", peer.party)));
    }
    out
}

/// A peer witnessing reaches: its configuration, its client, the last head it took.
struct Witness {
    peer: PeerConfig,
    client: FederationServiceClient<tonic::transport::Channel>,
    sent: Option<u64>,
}

/// Sends the signed chain head to every peer each `interval` while it changes, until `stop`.
/// The peers are read anew each round: one added while running is sent the head at the next
/// round, one removed or suspended in `members` no more.
pub async fn publish(
    store: Arc<dyn Store>,
    party: String,
    peers: Peers,
    members: Members,
    tls: TlsSource,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut witnesses: Vec<Witness> = Vec::new();
    loop {
        let now = active_peers(&peers, &members);
        witnesses.retain(|w| now.contains(&w.peer));
        for peer in now {
            if witnesses.iter().any(|w| w.peer == peer) {
                continue;
            }
            let tls = tls.clone();
            match crate::identity::tls::channel_with(&peer.address, &peer.server_name, move || {
                tls.borrow().client.clone()
            }) {
                Ok(c) => witnesses.push(Witness {
                    peer,
                    client: FederationServiceClient::new(c),
                    sent: None,
                }),
                Err(e) => {
                    tracing::error!(peer = %peer.party, error = %e, "cannot reach peer for witnessing")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let head = match store.audit_head().await {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit head to publish");
                continue;
            }
        };
        let signer = tls.borrow().signer.clone();
        let signed = match sign_head(&signer, &party, head.seq, &head.hash) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the audit head");
                continue;
            }
        };
        for w in &mut witnesses {
            if w.sent == Some(head.seq) {
                continue;
            }
            match w
                .client
                .witness_head(pb::WitnessHeadRequest {
                    head: Some(signed.clone()),
                })
                .await
            {
                Ok(_) => w.sent = Some(head.seq),
                Err(e) => {
                    tracing::debug!(peer = %w.peer.party, error = %e.message(), "witness head not delivered; retrying later")
                }
            }
        }
    }
}
