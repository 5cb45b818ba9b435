//! Verification of the signatures over replicated changes by receivers, against the
//! federation PKI. The owner signs with [`crate::identity::signer::ChangeSigner`], the key of
//! its gateway certificate.

use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest as _, Sha256};

use super::ExchangeError;
use crate::crypto::{Digest, Profile, SM2_SM3_SIGNATURE};
use crate::identity::tls::{TlsSource, provider, spiffe_id_of};
use crate::identity::{Role, SpiffeId};
use crate::wire::pb;

/// Hex SHA-256 of a DER certificate: how evidence refers to its signer.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The envelopes a manifest lists and the hash it lists them by: exactly one of its lists
/// (`envelope_sha256`, or `envelope_sm3` from a gateway of the gm profile) is filled — both
/// empty for a manifest of no envelope.
pub fn listed_digests(manifest: &pb::ChangeManifest) -> Result<(Digest, &[Vec<u8>]), String> {
    match (&manifest.envelope_sha256[..], &manifest.envelope_sm3[..]) {
        (sha256, []) => Ok((Digest::Sha256, sha256)),
        ([], sm3) => Ok((Digest::Sm3, sm3)),
        _ => Err("lists its envelopes by both SHA-256 and SM3".into()),
    }
}

/// A signer certificate that chains to the federation CA and names the owner's gateway.
#[derive(Debug, Clone)]
pub struct VerifiedSigner {
    pub fingerprint: String,
    pub der: Vec<u8>,
}

/// Checks signer certificates and signatures for one receiver, against the CA and CRL of the
/// current TLS material.
pub struct SignatureVerifier {
    tls: TlsSource,
    trust_domain: String,
}

impl SignatureVerifier {
    pub fn new(tls: TlsSource, trust_domain: &str) -> Self {
        SignatureVerifier {
            tls,
            trust_domain: trust_domain.to_string(),
        }
    }

    /// Accepts `der` as the signer of `owner`'s changes only if it chains to the CA, is valid
    /// now, and carries `owner`'s gateway SPIFFE id.
    pub fn check_signer(&self, der: &[u8], owner: &str) -> Result<VerifiedSigner, ExchangeError> {
        self.check(der, owner, UnixTime::now(), false)
    }

    /// As [`Self::check_signer`], with the certificate's validity checked at `at` (for
    /// evidence: when the change was received).
    /// Kept evidence may also chain to a CA of `tls.evidence_cas` (one from before the
    /// federation changed CA or profile).
    pub fn check_signer_at(
        &self,
        der: &[u8],
        owner: &str,
        at: UnixTime,
    ) -> Result<VerifiedSigner, ExchangeError> {
        self.check(der, owner, at, true)
    }

    fn check(
        &self,
        der: &[u8],
        owner: &str,
        at: UnixTime,
        kept: bool,
    ) -> Result<VerifiedSigner, ExchangeError> {
        let cert = CertificateDer::from(der.to_vec());
        let (chain, earlier) = {
            let material = self.tls.borrow();
            (material.chain.clone(), material.evidence_cas.clone())
        };
        let mut checked = chain.verify_client_cert(&cert, &[], at).map(|_| ());
        if checked.is_err() && kept {
            let earlier_ok = earlier
                .iter()
                .any(|ca| ca.verify_client_cert(&cert, &[], at).is_ok());
            if earlier_ok {
                checked = Ok(());
            }
        }
        checked.map_err(|e| ExchangeError::BadSigner(e.to_string()))?;
        let id = spiffe_id_of(&cert).map_err(ExchangeError::BadSigner)?;
        let expected = SpiffeId {
            trust_domain: self.trust_domain.clone(),
            party: owner.to_string(),
            role: Role::Gateway,
        };
        if id != expected {
            return Err(ExchangeError::BadSigner(format!(
                "certificate is {id}, not {expected}"
            )));
        }
        Ok(VerifiedSigner {
            fingerprint: fingerprint(der),
            der: der.to_vec(),
        })
    }

    /// Verifies `signature` over `message` with the signer's public key. Either profile's
    /// signatures verify, whatever this gateway's profile is now: evidence kept from before a
    /// federation changed profile stays checkable.
    pub fn verify(
        &self,
        signer: &VerifiedSigner,
        seq: u64,
        message: &[u8],
        scheme: u16,
        signature: &[u8],
    ) -> Result<(), ExchangeError> {
        let bad = |reason: String| ExchangeError::BadSignature { seq, reason };
        let alg = if scheme == SM2_SM3_SIGNATURE {
            crate::crypto::gm::SM2_SM3
        } else {
            let scheme = SignatureScheme::from(scheme);
            let algs = provider(Profile::Intl)
                .signature_verification_algorithms
                .mapping
                .iter()
                .find(|(s, _)| *s == scheme)
                .map(|(_, algs)| *algs)
                .ok_or_else(|| bad(format!("unsupported scheme {scheme:?}")))?;
            *algs.first().ok_or_else(|| bad("no algorithm".into()))?
        };
        let der = CertificateDer::from(signer.der.as_slice());
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| bad(e.to_string()))?;
        cert.verify_signature(alg, message, signature)
            .map_err(|e| bad(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
