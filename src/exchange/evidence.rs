//! Checking kept evidence after the fact (`yrd-gateway audit verify-evidence`): every change a
//! receiver applied must be provably what its owner signed, with nothing but the federation CA —
//! the change's own signature over its envelope, or the signature over the manifest that lists
//! the envelope's SHA-256 at its place.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message;
use rustls::pki_types::UnixTime;
use sha2::{Digest, Sha256};

use super::signing::{SignatureVerifier, VerifiedSigner};
use crate::store::{Store, StoreError, StoredEvidence};
use crate::wire::pb;

/// Pieces of evidence read from the store at a time.
const PAGE: usize = 500;

/// What a check of one owner's evidence found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceSummary {
    /// Changes whose evidence verified, from the first through the cursor.
    pub changes: u64,
    /// Of those, how many a manifest's signature covers.
    pub by_manifest: u64,
    /// Distinct manifests verified.
    pub manifests: u64,
    /// Of the changes, how many had items erased when a grant ended: their manifest still
    /// proves the envelope as received by its kept SHA-256; an erased envelope signed on its own
    /// proves its signer only.
    pub erased: u64,
}

/// Why a check stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The evidence of change `seq` does not prove what was applied.
    #[error("change {seq}: {reason}")]
    Bad { seq: u64, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks, in order, all evidence `recipient` (this party) kept of `owner`'s changes: none
/// missing up to the cursor, each signer a gateway certificate of `owner` valid when the change
/// was received, each signature good over exactly the bytes kept.
pub async fn verify_evidence(
    store: &dyn Store,
    verifier: &SignatureVerifier,
    owner: &str,
    recipient: &str,
) -> Result<EvidenceSummary, EvidenceError> {
    let cursor = store.cursor(owner).await?;
    let mut checker = EvidenceChecker::new(verifier, owner, recipient, 0);
    loop {
        let page = store.evidence(owner, checker.summary.changes, PAGE).await?;
        let full = page.len() == PAGE;
        for e in &page {
            checker.check(e).map_err(|reason| EvidenceError::Bad {
                seq: checker.next(),
                reason,
            })?;
        }
        if !full {
            break;
        }
    }
    let last = checker.summary.changes;
    if last < cursor {
        return Err(EvidenceError::Bad {
            seq: last + 1,
            reason: format!("applied (the cursor is at {cursor}) but no evidence is kept"),
        });
    }
    Ok(checker.summary)
}

/// Checks kept evidence of one owner's changes for one recipient, change after change, from
/// a given sequence number on: also what an owner uses to check its own changes a peer gives
/// back ([`super::recovery`]).
pub struct EvidenceChecker<'a> {
    verifier: &'a SignatureVerifier,
    owner: &'a str,
    recipient: &'a str,
    /// The manifests already checked, decoded, by digest: each is decoded, hashed and
    /// verified once, not once per change it lists.
    verified: HashMap<Vec<u8>, pb::ChangeManifest>,
    summary: EvidenceSummary,
}

impl<'a> EvidenceChecker<'a> {
    /// A checker of `owner`'s changes kept by `recipient`, starting after change `after`.
    pub fn new(
        verifier: &'a SignatureVerifier,
        owner: &'a str,
        recipient: &'a str,
        after: u64,
    ) -> Self {
        EvidenceChecker {
            verifier,
            owner,
            recipient,
            verified: HashMap::new(),
            summary: EvidenceSummary {
                changes: after,
                ..EvidenceSummary::default()
            },
        }
    }

    /// The sequence number the next piece of evidence must have.
    pub fn next(&self) -> u64 {
        self.summary.changes + 1
    }

    /// Checks the next piece of evidence; it must be of change [`Self::next`].
    pub fn check(&mut self, e: &StoredEvidence) -> Result<(), String> {
        let expected = self.summary.changes + 1;
        if e.seq != expected {
            return Err("no evidence is kept of this change".into());
        }
        let received = UnixTime::since_unix_epoch(Duration::from_micros(
            u64::try_from(e.received).unwrap_or(0),
        ));
        let signer = self
            .verifier
            .check_signer_at(&e.signer, self.owner, received)
            .map_err(|x| x.to_string())?;
        let envelope = pb::ChangeEnvelope::decode(e.envelope.as_slice())
            .map_err(|x| format!("the kept envelope does not decode: {x}"))?;
        if (envelope.owner.as_str(), envelope.seq) != (self.owner, e.seq) {
            return Err(format!(
                "the kept envelope is change {} of `{}`",
                envelope.seq, envelope.owner
            ));
        }
        if envelope.recipient != self.recipient {
            return Err(format!(
                "the kept envelope was prepared for `{}`",
                envelope.recipient
            ));
        }
        let Some(digest) = &e.manifest_digest else {
            if e.erased_sha256.is_none() {
                self.verifier
                    .verify(&signer, e.seq, &e.envelope, e.scheme, &e.signature)
                    .map_err(|x| x.to_string())?;
            } else {
                self.summary.erased += 1;
            }
            self.summary.changes = e.seq;
            return Ok(());
        };
        if !self.verified.contains_key(digest) {
            let opened = self.open_manifest(&signer, e, digest)?;
            self.verified.insert(digest.clone(), opened);
            self.summary.manifests += 1;
        }
        let listed = &self.verified[digest];
        let (algorithm, hashes) = super::signing::listed_digests(listed)?;
        let place = e
            .seq
            .checked_sub(listed.first_seq)
            .and_then(|p| hashes.get(p as usize));
        let received_sha = match &e.erased_sha256 {
            Some(sha) => {
                self.summary.erased += 1;
                sha.clone()
            }
            None => algorithm.of(&e.envelope),
        };
        if place != Some(&received_sha) {
            return Err("its manifest does not list the kept envelope at its place".into());
        }
        self.summary.changes = e.seq;
        self.summary.by_manifest += 1;
        Ok(())
    }

    /// The manifest `e` names, checked once for all the changes it lists: stored unaltered,
    /// signed by the owner, made by the owner for this party.
    fn open_manifest(
        &self,
        signer: &VerifiedSigner,
        e: &StoredEvidence,
        digest: &[u8],
    ) -> Result<pb::ChangeManifest, String> {
        let manifest = e
            .manifest
            .as_ref()
            .filter(|m| Sha256::digest(&m.manifest).as_slice() == digest)
            .ok_or("the manifest this change names is missing or altered")?;
        self.verifier
            .verify(
                signer,
                e.seq,
                &manifest.manifest,
                manifest.scheme,
                &manifest.signature,
            )
            .map_err(|x| format!("its manifest's {x}"))?;
        let listed = pb::ChangeManifest::decode(manifest.manifest.as_slice())
            .map_err(|x| format!("its manifest does not decode: {x}"))?;
        if (listed.owner.as_str(), listed.recipient.as_str()) != (self.owner, self.recipient) {
            return Err(format!(
                "its manifest is of `{}` for `{}`",
                listed.owner, listed.recipient
            ));
        }
        Ok(listed)
    }
}
