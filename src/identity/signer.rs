//! The gateway's own signing key (the key of its gateway certificate), with which it signs
//! the changes it sends and the audit chain heads it publishes. Loaded with the rest of the TLS
//! material, so a rotated certificate signs as soon as it serves handshakes.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::sign::SigningKey;

use super::pem::{TlsPaths, load_certs, load_key, provider};

/// The gateway key cannot be loaded or cannot sign.
#[derive(Debug, Clone, thiserror::Error)]
#[error("gateway signing key: {0}")]
pub struct KeyError(pub String);

/// Schemes a gateway signs with, in order of preference; the key type decides which applies.
const SIGNING_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// Signs with the gateway's own key.
pub struct ChangeSigner {
    key: Arc<dyn SigningKey>,
    scheme: SignatureScheme,
    certificate: Vec<u8>,
}

impl ChangeSigner {
    /// Loads the gateway certificate and key named in `[tls]`.
    pub fn from_files(paths: &TlsPaths) -> Result<Self, KeyError> {
        let certs = load_certs(&paths.cert).map_err(|e| KeyError(e.to_string()))?;
        let key = load_key(&paths.key).map_err(|e| KeyError(e.to_string()))?;
        let key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| KeyError(e.to_string()))?;
        let scheme = key
            .choose_scheme(SIGNING_SCHEMES)
            .map(|s| s.scheme())
            .ok_or_else(|| {
                KeyError("the key type supports none of ECDSA P-256/P-384, Ed25519, RSA-PSS".into())
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
    pub fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), KeyError> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or_else(|| KeyError("signing scheme no longer offered".into()))?;
        let signature = signer.sign(message).map_err(|e| KeyError(e.to_string()))?;
        Ok((u16::from(self.scheme), signature))
    }
}
