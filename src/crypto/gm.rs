//! 商用密码 primitives: SM3 hashes (GB/T 32905), SM4 in GCM mode (GB/T 32907 with the generic
//! GCM construction, as RFC 8998 uses it for TLS_SM4_GCM_SM3), and SM2 signatures
//! (GB/T 32918) with a distinguishing id, DER-encoded as certificates, CRLs and OpenSSL carry
//! them.
//!
//! Two pitfalls are named here once: an SM2 signature hashes the signer's `Z` value, which
//! depends on a distinguishing id — [`CERT_DIST_ID`] for certificates, CRLs and everything
//! else the gateway signs, but [`TLS13_DIST_ID`] for a TLS 1.3 CertificateVerify
//! (RFC 8998 §3.2.1); and a signature inside X.509 is the DER `SEQUENCE { r, s }`, not the
//! 64 raw bytes `r‖s` (OpenSSL refuses the latter).

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm2::elliptic_curve::Generate;
use sm2::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sm3::{Digest, Sm3};
use sm4::Sm4;

pub mod pki;
pub mod tls;

use rustls::pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};

/// The distinguishing id of every SM2 signature the gateway makes or checks outside TLS
/// (GB/T 35276's default, which OpenSSL calls `distid:1234567812345678`).
pub const CERT_DIST_ID: &str = "1234567812345678";

/// The distinguishing id of a TLS 1.3 CertificateVerify signed with SM2 (RFC 8998 §3.2.1).
pub const TLS13_DIST_ID: &str = "TLSv1.3+GM+Cipher+Suite";

/// Bytes of an SM4 key.
pub const SM4_KEY_BYTES: usize = 16;
/// Bytes of an SM4-GCM nonce (as TLS and this gateway use it).
pub const SM4_GCM_NONCE_BYTES: usize = 12;
/// Bytes of an SM4-GCM tag.
pub const SM4_GCM_TAG_BYTES: usize = 16;

/// Why a 国密 operation refused its input. Messages say what was wrong, never what a key is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GmError {
    #[error("not an SM2 key: {0}")]
    Key(String),
    #[error("the SM2 signature does not verify")]
    BadSignature,
    #[error("not a DER-encoded SM2 signature")]
    MalformedSignature,
    #[error("an SM4 key is {SM4_KEY_BYTES} bytes and an SM4-GCM nonce {SM4_GCM_NONCE_BYTES}")]
    Sm4Length,
    #[error("the SM4-GCM ciphertext or its associated data was changed, or the key is wrong")]
    Sm4Open,
    #[error("cannot build the SM2 certificate: {0}")]
    Certificate(String),
}

/// The SM3 hash of `data`.
pub fn sm3(data: &[u8]) -> [u8; 32] {
    Sm3::digest(data).into()
}

type Sm4Gcm = AesGcm<Sm4, U12>;

fn sm4_gcm(key: &[u8], nonce: &[u8]) -> Result<(Sm4Gcm, aes_gcm::Nonce<U12>), GmError> {
    if key.len() != SM4_KEY_BYTES || nonce.len() != SM4_GCM_NONCE_BYTES {
        return Err(GmError::Sm4Length);
    }
    let cipher = Sm4Gcm::new_from_slice(key).map_err(|_| GmError::Sm4Length)?;
    let nonce = aes_gcm::Nonce::<U12>::try_from(nonce).map_err(|_| GmError::Sm4Length)?;
    Ok((cipher, nonce))
}

/// Encrypts `plaintext` under SM4-GCM, binding `aad`: the ciphertext followed by the 16-byte
/// tag. A nonce must never be used twice with one key.
pub fn sm4_gcm_seal(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, GmError> {
    let (cipher, nonce) = sm4_gcm(key, nonce)?;
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    cipher
        .encrypt(&nonce, payload)
        .map_err(|_| GmError::Sm4Length)
}

/// Decrypts what [`sm4_gcm_seal`] made; any change to the ciphertext, the tag or `aad` (or
/// another key or nonce) is refused, and nothing of the plaintext is returned.
pub fn sm4_gcm_open(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, GmError> {
    let (cipher, nonce) = sm4_gcm(key, nonce)?;
    let payload = Payload { msg: sealed, aad };
    cipher
        .decrypt(&nonce, payload)
        .map_err(|_| GmError::Sm4Open)
}

/// An SM4-GCM key whose key schedule is computed once, for sealing and opening many messages in
/// place (the TLS record layer: one per direction of a connection).
pub struct Sm4GcmKey(Sm4Gcm);

impl Sm4GcmKey {
    pub fn new(key: &[u8]) -> Result<Self, GmError> {
        if key.len() != SM4_KEY_BYTES {
            return Err(GmError::Sm4Length);
        }
        Sm4Gcm::new_from_slice(key)
            .map(Sm4GcmKey)
            .map_err(|_| GmError::Sm4Length)
    }

    /// Encrypts `buffer` in place under `nonce`, binding `aad`; returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; SM4_GCM_NONCE_BYTES],
        aad: &[u8],
        buffer: &mut [u8],
    ) -> Result<[u8; SM4_GCM_TAG_BYTES], GmError> {
        let tag = self
            .0
            .encrypt_inout_detached(&(*nonce).into(), aad, buffer.into())
            .map_err(|_| GmError::Sm4Length)?;
        Ok(tag.into())
    }

    /// Decrypts `buffer` in place if `tag` proves it and `aad` unchanged; otherwise leaves it
    /// unusable and refuses.
    pub fn open_in_place(
        &self,
        nonce: &[u8; SM4_GCM_NONCE_BYTES],
        aad: &[u8],
        buffer: &mut [u8],
        tag: &[u8],
    ) -> Result<(), GmError> {
        let tag = aes_gcm::Tag::try_from(tag).map_err(|_| GmError::Sm4Open)?;
        self.0
            .decrypt_inout_detached(&(*nonce).into(), aad, buffer.into(), &tag)
            .map_err(|_| GmError::Sm4Open)
    }
}

/// An SM2 private key.
pub struct Sm2PrivateKey {
    key: SigningKey,
}

impl Sm2PrivateKey {
    /// A new random key (from the operating system's generator).
    pub fn generate() -> Result<Self, GmError> {
        let secret = sm2::SecretKey::try_generate()
            .map_err(|e| GmError::Key(format!("no random bytes from the system: {e}")))?;
        Ok(Self::from_secret(&secret))
    }

    fn from_secret(secret: &sm2::SecretKey) -> Self {
        let key = SigningKey::new(CERT_DIST_ID, secret).expect("a valid secret key");
        Sm2PrivateKey { key }
    }

    /// A key from its 32-byte private scalar.
    pub fn from_scalar(bytes: &[u8]) -> Result<Self, GmError> {
        let secret = sm2::SecretKey::from_slice(bytes).map_err(|e| GmError::Key(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, GmError> {
        let secret =
            sm2::SecretKey::from_pkcs8_der(der).map_err(|e| GmError::Key(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// A key from a PKCS#8 PEM file's text (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, GmError> {
        let secret =
            sm2::SecretKey::from_pkcs8_pem(pem).map_err(|e| GmError::Key(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// The key as PKCS#8 PEM, as OpenSSL reads it.
    pub fn to_pkcs8_pem(&self) -> String {
        let secret = sm2::SecretKey::from(self.key.as_nonzero_scalar());
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an SM2 key encodes")
            .to_string()
    }

    /// The public half.
    pub fn public_key(&self) -> Sm2PublicKey {
        Sm2PublicKey {
            key: sm2::PublicKey::from(self.key.verifying_key()),
        }
    }

    /// Signs `message` (SM3 over `Z ‖ message`, `Z` from `dist_id`), DER-encoded.
    pub fn sign(&self, dist_id: &str, message: &[u8]) -> Result<Vec<u8>, GmError> {
        let signature: Signature = if dist_id == CERT_DIST_ID {
            self.key.sign(message)
        } else {
            // Another id makes another Z: a signer of its own (the public key computed again).
            return Ok(self.with_id(dist_id)?.sign(message));
        };
        Ok(signature.to_der().to_bytes().to_vec())
    }

    /// This key with the distinguishing id `dist_id`, its `Z` computed once, for signing many
    /// messages under that id (a TLS key signs every handshake with the TLS 1.3 id).
    pub fn with_id(&self, dist_id: &str) -> Result<Sm2IdKey, GmError> {
        let secret = sm2::SecretKey::from(self.key.as_nonzero_scalar());
        let key = SigningKey::new(dist_id, &secret).map_err(|e| GmError::Key(e.to_string()))?;
        Ok(Sm2IdKey(key))
    }
}

/// An SM2 private key bound to one distinguishing id ([`Sm2PrivateKey::with_id`]).
pub struct Sm2IdKey(SigningKey);

impl Sm2IdKey {
    /// Signs `message` under the key's id, DER-encoded.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.0.sign(message);
        signature.to_der().to_bytes().to_vec()
    }
}

/// An SM2 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sm2PublicKey {
    key: sm2::PublicKey,
}

impl Sm2PublicKey {
    /// A key from its SEC1 encoding (`04 ‖ x ‖ y`, or compressed).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, GmError> {
        let key =
            sm2::PublicKey::from_sec1_bytes(bytes).map_err(|e| GmError::Key(e.to_string()))?;
        Ok(Sm2PublicKey { key })
    }

    /// A key from a PEM file's text (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self, GmError> {
        let key =
            sm2::PublicKey::from_public_key_pem(pem).map_err(|e| GmError::Key(e.to_string()))?;
        Ok(Sm2PublicKey { key })
    }

    /// The key as SubjectPublicKeyInfo DER.
    pub fn to_der(&self) -> Vec<u8> {
        self.key
            .to_public_key_der()
            .expect("an SM2 public key encodes")
            .into_vec()
    }

    /// The key as SubjectPublicKeyInfo PEM, as OpenSSL reads it.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("an SM2 public key encodes")
    }

    /// Checks a DER-encoded signature over `message` made with `dist_id`.
    pub fn verify(&self, dist_id: &str, message: &[u8], der: &[u8]) -> Result<(), GmError> {
        let signature = Signature::from_der(der).map_err(|_| GmError::MalformedSignature)?;
        let key = VerifyingKey::new(dist_id, self.key).map_err(|e| GmError::Key(e.to_string()))?;
        key.verify(message, &signature)
            .map_err(|_| GmError::BadSignature)
    }
}

/// SM2 with SM3 for rustls-webpki, with one distinguishing id: [`SM2_SM3_CERT`] checks
/// certificate chains and CRLs signed by an SM2 CA, [`SM2_SM3_TLS13`] a TLS 1.3
/// CertificateVerify. webpki knows no SM2, so it is told the algorithm
/// identifiers: `id-ecPublicKey` with the curve `sm2p256v1` (1.2.156.10197.1.301) for the key,
/// `SM2-with-SM3` (1.2.156.10197.1.501, no parameters) for the signature.
#[derive(Debug)]
pub struct Sm2Sm3 {
    /// The distinguishing id the signatures were made with.
    dist_id: &'static str,
}

/// The one [`Sm2Sm3`] verifier of chains and CRLs, to list among a verifier's supported
/// algorithms.
pub static SM2_SM3: &dyn SignatureVerificationAlgorithm = &SM2_SM3_CERT;

/// [`Sm2Sm3`] with [`CERT_DIST_ID`], as a value a static slice can name.
pub const SM2_SM3_CERT: Sm2Sm3 = Sm2Sm3 {
    dist_id: CERT_DIST_ID,
};

/// [`Sm2Sm3`] with [`TLS13_DIST_ID`]: what a TLS 1.3 CertificateVerify is checked with.
pub const SM2_SM3_TLS13: Sm2Sm3 = Sm2Sm3 {
    dist_id: TLS13_DIST_ID,
};

/// The contents of the AlgorithmIdentifier of an SM2 public key.
const SM2_PUBLIC_KEY_ALG: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
    0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d, // sm2p256v1
];

/// The contents of the AlgorithmIdentifier of an SM2-with-SM3 signature.
const SM2_SM3_SIGNATURE_ALG: &[u8] = &[
    0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x75, // SM2-with-SM3
];

impl SignatureVerificationAlgorithm for Sm2Sm3 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let key = Sm2PublicKey::from_sec1(public_key).map_err(|_| InvalidSignature)?;
        key.verify(self.dist_id, message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        AlgorithmIdentifier::from_slice(SM2_PUBLIC_KEY_ALG)
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        AlgorithmIdentifier::from_slice(SM2_SM3_SIGNATURE_ALG)
    }
}

#[cfg(test)]
mod tests;
