//! Signatures over outgoing changes, made with the owner's gateway key (the key of its gateway
//! certificate), and their verification by receivers against the federation PKI.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::sign::SigningKey;
use sha2::{Digest, Sha256};

use super::ExchangeError;
use crate::config::TlsPaths;
use crate::identity::tls::{TlsSource, load_certs, load_key, provider, spiffe_id_of};
use crate::identity::{Role, SpiffeId};

/// Schemes a gateway signs with, in order of preference; the key type decides which applies.
const SIGNING_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// Hex SHA-256 of a DER certificate: how evidence refers to its signer.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Signs with the gateway's own key.
pub struct ChangeSigner {
    key: Arc<dyn SigningKey>,
    scheme: SignatureScheme,
    certificate: Vec<u8>,
}

impl ChangeSigner {
    /// Loads the gateway certificate and key named in `[tls]`.
    pub fn from_files(paths: &TlsPaths) -> Result<Self, ExchangeError> {
        let certs = load_certs(&paths.cert).map_err(|e| ExchangeError::Key(e.to_string()))?;
        let key = load_key(&paths.key).map_err(|e| ExchangeError::Key(e.to_string()))?;
        let key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| ExchangeError::Key(e.to_string()))?;
        let scheme = key
            .choose_scheme(SIGNING_SCHEMES)
            .map(|s| s.scheme())
            .ok_or_else(|| {
                ExchangeError::Key(
                    "the key type supports none of ECDSA P-256/P-384, Ed25519, RSA-PSS".into(),
                )
            })?;
        Ok(ChangeSigner {
            key,
            scheme,
            certificate: certs[0].as_ref().to_vec(),
        })
    }

    /// DER of the certificate whose key signs.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Signs `message`; returns the scheme's code point and the signature.
    pub fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), ExchangeError> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or_else(|| ExchangeError::Key("signing scheme no longer offered".into()))?;
        let signature = signer
            .sign(message)
            .map_err(|e| ExchangeError::Key(e.to_string()))?;
        Ok((u16::from(self.scheme), signature))
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
        self.check_signer_at(der, owner, UnixTime::now())
    }

    /// As [`Self::check_signer`], with the certificate's validity checked at `at` (for
    /// evidence: when the change was received).
    pub fn check_signer_at(
        &self,
        der: &[u8],
        owner: &str,
        at: UnixTime,
    ) -> Result<VerifiedSigner, ExchangeError> {
        let cert = CertificateDer::from(der.to_vec());
        let chain = self.tls.borrow().chain.clone();
        chain
            .verify_client_cert(&cert, &[], at)
            .map_err(|e| ExchangeError::BadSigner(e.to_string()))?;
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

    /// Verifies `signature` over `message` with the signer's public key.
    pub fn verify(
        &self,
        signer: &VerifiedSigner,
        seq: u64,
        message: &[u8],
        scheme: u16,
        signature: &[u8],
    ) -> Result<(), ExchangeError> {
        let bad = |reason: String| ExchangeError::BadSignature { seq, reason };
        let scheme = SignatureScheme::from(scheme);
        let algs = provider()
            .signature_verification_algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .map(|(_, algs)| *algs)
            .ok_or_else(|| bad(format!("unsupported scheme {scheme:?}")))?;
        let der = CertificateDer::from(signer.der.as_slice());
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| bad(e.to_string()))?;
        let alg = algs.first().ok_or_else(|| bad("no algorithm".into()))?;
        cert.verify_signature(*alg, message, signature)
            .map_err(|e| bad(e.to_string()))
    }
}
