//! The gateway's own signing key (the key of its gateway certificate), with which it signs
//! the changes it sends and the audit chain heads it publishes. Loaded with the rest of the TLS
//! material, so a rotated certificate signs as soon as it serves handshakes. In the `gm`
//! profile it signs with SM2 over SM3 under the standard distinguishing id
//! ([`crate::crypto::SM2_SM3_SIGNATURE`]), so a signature verifies with
//! `openssl pkeyutl -verify -rawin -digest sm3 -pkeyopt distid:1234567812345678`.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::sign::SigningKey;

use super::pem::{TlsPaths, gateway_key, load_certs, load_key};
use crate::crypto::gm::{CERT_DIST_ID, Sm2PrivateKey};
use crate::crypto::{Digest, Profile, SM2_SM3_SIGNATURE};

/// The gateway key cannot be loaded or cannot sign.
#[derive(Debug, Clone, thiserror::Error)]
#[error("gateway signing key: {0}")]
pub struct KeyError(pub String);

/// Schemes a gateway of the intl profile signs with, in order of preference; the key type
/// decides which applies.
const SIGNING_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

/// The key itself, by profile.
enum Key {
    Intl {
        key: Arc<dyn SigningKey>,
        scheme: SignatureScheme,
    },
    Gm(Sm2PrivateKey),
}

/// Signs with the gateway's own key.
pub struct ChangeSigner {
    key: Key,
    certificate: Vec<u8>,
}

impl ChangeSigner {
    /// Loads the gateway certificate and key named in `[tls]`, in their profile.
    pub fn from_files(paths: &TlsPaths) -> Result<Self, KeyError> {
        let certs = load_certs(&paths.cert).map_err(|e| KeyError(e.to_string()))?;
        let key = match paths.profile {
            Profile::Intl => {
                let key = gateway_key(paths).map_err(|e| KeyError(e.to_string()))?;
                let scheme = key
                    .choose_scheme(SIGNING_SCHEMES)
                    .map(|s| s.scheme())
                    .ok_or_else(|| {
                        KeyError(
                            "the key type supports none of ECDSA P-256/P-384, Ed25519, RSA-PSS"
                                .into(),
                        )
                    })?;
                Key::Intl { key, scheme }
            }
            Profile::Gm => {
                let der = load_key(&paths.key).map_err(|e| KeyError(e.to_string()))?;
                Key::Gm(
                    Sm2PrivateKey::from_pkcs8_der(der.secret_der())
                        .map_err(|e| KeyError(format!("{}: {e}", paths.key.display())))?,
                )
            }
        };
        Ok(ChangeSigner {
            key,
            certificate: certs[0].as_ref().to_vec(),
        })
    }

    /// The hash the manifests this key signs list envelopes with: SM3 with an SM2 key, SHA-256
    /// with any other.
    pub fn digest(&self) -> Digest {
        match self.key {
            Key::Intl { .. } => Digest::Sha256,
            Key::Gm(_) => Digest::Sm3,
        }
    }

    /// DER of the certificate whose key signs.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Signs `message`; returns the signature's code (a TLS signature scheme, or
    /// [`SM2_SM3_SIGNATURE`]) and the signature.
    pub fn sign(&self, message: &[u8]) -> Result<(u16, Vec<u8>), KeyError> {
        match &self.key {
            Key::Intl { key, scheme } => {
                let signer = key
                    .choose_scheme(&[*scheme])
                    .ok_or_else(|| KeyError("signing scheme no longer offered".into()))?;
                let signature = signer.sign(message).map_err(|e| KeyError(e.to_string()))?;
                Ok((u16::from(*scheme), signature))
            }
            Key::Gm(key) => {
                let signature = key
                    .sign(CERT_DIST_ID, message)
                    .map_err(|e| KeyError(e.to_string()))?;
                Ok((SM2_SM3_SIGNATURE, signature))
            }
        }
    }
}
