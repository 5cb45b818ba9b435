//! Verifying what a peer sends before anything of it is applied: the signer certificate,
//! the response's manifest, each change's signature (its own or its hash in the manifest),
//! and the change against the stream — owner, recipient, order — with the record rebuilt
//! from its envelope.

use super::*;
use crate::exchange::signing::listed_digests;

impl Inbound {
    /// Receives one message: notes the owner's membership digest, checks a new signer
    /// certificate, opens the batch manifest, and verifies the changes in order until one is
    /// refused. `cursor` moves past every change that verified.
    pub(super) async fn verify(
        &self,
        owner: &str,
        msg: pb::PullChangesResponse,
        signer: &mut Option<VerifiedSigner>,
        cursor: &mut u64,
    ) -> Result<Verified, ExchangeError> {
        self.membership
            .seen(owner, &msg.membership_sha256, crate::domain::now_micros());
        if !msg.signer_certificate.is_empty() {
            *signer = Some(self.verifier.check_signer(&msg.signer_certificate, owner)?);
            self.update(owner, |s| s.connected = true);
        }
        let Some(signer) = signer.clone() else {
            return Err(ExchangeError::Refused(
                "changes arrived before the signer certificate".into(),
            ));
        };
        let changes = Arc::new(msg.changes);
        let manifest = match msg.manifest {
            Some(signed) => Some(Arc::new(self.open_manifest(
                &signer,
                owner,
                signed,
                changes.len(),
            )?)),
            None => None,
        };
        let authenticated = authenticate_all(
            self.verifier.clone(),
            signer.clone(),
            changes.clone(),
            manifest.clone(),
        )
        .await;
        let mut batch = Vec::with_capacity(changes.len());
        let mut refusal = None;
        for (signed, authenticated) in changes.iter().zip(authenticated) {
            let checked = authenticated.and_then(|(scheme, envelope)| {
                self.accept(&signer, owner, *cursor, signed, scheme, envelope)
            });
            match checked {
                Ok(change) => {
                    *cursor = change.seq;
                    batch.push(change);
                }
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        Ok(Verified {
            signer,
            batch,
            manifest,
            refusal,
        })
    }

    /// Checks the signature over a response's manifest, and that the manifest was made for
    /// this receiver by `owner` and lists as many envelopes as the response carries.
    fn open_manifest(
        &self,
        signer: &VerifiedSigner,
        owner: &str,
        signed: pb::SignedManifest,
        changes: usize,
    ) -> Result<OpenManifest, ExchangeError> {
        let manifest = pb::ChangeManifest::decode(signed.manifest.as_slice())
            .map_err(|e| ExchangeError::Refused(format!("undecodable change manifest: {e}")))?;
        let scheme = tls_scheme(signed.scheme)?;
        self.verifier.verify(
            signer,
            manifest.first_seq,
            &signed.manifest,
            scheme,
            &signed.signature,
        )?;
        let refuse = |why: String| {
            ExchangeError::Refused(format!(
                "manifest from change {} of {owner}: {why}",
                manifest.first_seq
            ))
        };
        if manifest.owner != owner {
            return Err(refuse(format!("names owner `{}`", manifest.owner)));
        }
        if manifest.recipient != self.records.party() {
            return Err(refuse(format!(
                "prepared for `{}`, not for us",
                manifest.recipient
            )));
        }
        let (algorithm, hashes) = listed_digests(&manifest).map_err(&refuse)?;
        if hashes.len() != changes {
            return Err(refuse(format!(
                "lists {} envelopes, the response carries {changes}",
                hashes.len()
            )));
        }
        let hashes = hashes.to_vec();
        let digest = Sha256::digest(&signed.manifest).to_vec();
        Ok(OpenManifest {
            signed: SignedManifest {
                digest,
                manifest: signed.manifest,
                scheme,
                signature: signed.signature,
            },
            first_seq: manifest.first_seq,
            algorithm,
            hashes,
        })
    }

    /// Checks an authenticated change against the stream (owner, recipient, order) and turns
    /// it into what the store applies.
    fn accept(
        &self,
        signer: &VerifiedSigner,
        owner: &str,
        cursor: u64,
        signed: &pb::SignedChange,
        scheme: u16,
        envelope: pb::ChangeEnvelope,
    ) -> Result<ReplicaChange, ExchangeError> {
        let refuse = |why: String| {
            ExchangeError::Refused(format!("change {} of {owner}: {why}", envelope.seq))
        };
        if envelope.owner != owner {
            return Err(refuse(format!("envelope names owner `{}`", envelope.owner)));
        }
        if envelope.recipient != self.records.party() {
            return Err(refuse(format!(
                "prepared for `{}`, not for us",
                envelope.recipient
            )));
        }
        if envelope.seq != cursor + 1 {
            return Err(refuse(format!("expected change {}", cursor + 1)));
        }
        let (time, record) = record_of(&self.records, owner, &envelope).map_err(refuse)?;
        Ok(ReplicaChange {
            seq: envelope.seq,
            time,
            record,
            evidence: Evidence {
                envelope: signed.envelope.clone(),
                scheme,
                // Empty when the manifest carries the signature.
                signature: signed.signature.clone(),
                signer: signer.fingerprint.clone(),
                erased_sha256: None,
            },
            apart: Vec::new(),
        })
    }
}

/// The commit time and record an envelope of `owner`'s carries (`None` when its kind is not
/// shared with the recipient), the record rebuilt and checked against the envelope.
pub(crate) fn record_of(
    records: &Records,
    owner: &str,
    envelope: &pb::ChangeEnvelope,
) -> Result<(i64, Option<crate::store::StoredRecord>), String> {
    let time = match &envelope.commit_time {
        Some(t) => micros_in_range(t).ok_or("commit time is outside 0001..9999")?,
        None => 0,
    };
    let kind =
        kind_from_wire(envelope.kind).map_err(|kind| format!("unknown record kind {kind}"))?;
    let Some(kind) = kind else {
        return Ok((time, None));
    };
    let id = uuid::Uuid::parse_str(&envelope.record_id)
        .map_err(|_| format!("record id `{}` is not a UUID", envelope.record_id))?;
    let body =
        std::str::from_utf8(&envelope.record_json).map_err(|_| "record body is not UTF-8")?;
    let record = records.replica(kind, owner, id, envelope.revision, body)?;
    Ok((time, Some(record)))
}

/// What one message of a pull stream verified: the changes to apply (in order, up to the first
/// refused one), the signer and manifest that cover them, and the refusal that stopped the
/// verification, if one did.
pub(super) struct Verified {
    pub(super) signer: VerifiedSigner,
    pub(super) batch: Vec<ReplicaChange>,
    pub(super) manifest: Option<Arc<OpenManifest>>,
    pub(super) refusal: Option<ExchangeError>,
}

/// A response's manifest whose signature verified: what authenticates each of its changes.
pub(super) struct OpenManifest {
    /// What the store keeps as the evidence of the whole batch.
    pub(super) signed: SignedManifest,
    first_seq: u64,
    /// The hash the manifest lists envelopes by.
    algorithm: crate::crypto::Digest,
    /// The hash of each envelope, in order.
    hashes: Vec<Vec<u8>>,
}

/// A signature scheme field as a TLS SignatureScheme code point.
fn tls_scheme(scheme: u32) -> Result<u16, ExchangeError> {
    u16::try_from(scheme).map_err(|_| {
        ExchangeError::Refused(format!("signature scheme {scheme} is not a TLS scheme"))
    })
}

/// Decodes each change's envelope and authenticates it — by its own signature, or by its
/// hash in the response's verified manifest — in the changes' order, spread over the cores
/// (ECDSA verification is what limits catch-up when each change is signed).
async fn authenticate_all(
    verifier: Arc<SignatureVerifier>,
    signer: VerifiedSigner,
    changes: Arc<Vec<pb::SignedChange>>,
    manifest: Option<Arc<OpenManifest>>,
) -> Vec<Result<(u16, pb::ChangeEnvelope), ExchangeError>> {
    let n = changes.len();
    let check = move |i: usize, signed: &pb::SignedChange| match &manifest {
        Some(manifest) => listed(manifest, i, signed),
        None => authenticate(&verifier, &signer, signed),
    };
    match super::super::on_cores(changes, check).await {
        Ok(all) => all,
        // Fails them all; the session restarts from the last applied change.
        Err(e) => (0..n)
            .map(|_| {
                Err(ExchangeError::Transport(format!(
                    "verification task failed: {e}"
                )))
            })
            .collect(),
    }
}

/// The `i`-th change of a response, decoded, if its envelope is the one the manifest lists at
/// that position.
fn listed(
    manifest: &OpenManifest,
    i: usize,
    signed: &pb::SignedChange,
) -> Result<(u16, pb::ChangeEnvelope), ExchangeError> {
    let envelope = pb::ChangeEnvelope::decode(signed.envelope.as_slice())
        .map_err(|e| ExchangeError::Refused(format!("undecodable change envelope: {e}")))?;
    let bad = |reason: &str| ExchangeError::BadSignature {
        seq: envelope.seq,
        reason: reason.to_string(),
    };
    if manifest.hashes.get(i) != Some(&manifest.algorithm.of(&signed.envelope)) {
        return Err(bad("the envelope is not the one the signed manifest lists"));
    }
    if envelope.seq != manifest.first_seq + i as u64 {
        return Err(bad(
            "the envelope's sequence number is not its place in the manifest",
        ));
    }
    Ok((manifest.signed.scheme, envelope))
}

/// One change's envelope, decoded, with its signature checked against the owner's signer.
fn authenticate(
    verifier: &SignatureVerifier,
    signer: &VerifiedSigner,
    signed: &pb::SignedChange,
) -> Result<(u16, pb::ChangeEnvelope), ExchangeError> {
    let scheme = tls_scheme(signed.scheme)?;
    let envelope = pb::ChangeEnvelope::decode(signed.envelope.as_slice())
        .map_err(|e| ExchangeError::Refused(format!("undecodable change envelope: {e}")))?;
    verifier.verify(
        signer,
        envelope.seq,
        &signed.envelope,
        scheme,
        &signed.signature,
    )?;
    Ok((scheme, envelope))
}

#[cfg(test)]
mod tests;
