//! A token's AES-256 secret key that encrypts and decrypts small secrets with AES-GCM inside
//! the token (the key never leaves it): the key-encryption key of the data keys at rest
//! (`crate::vault`) when `[keys.pkcs11]` names one.

use std::sync::Mutex;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::open_session;
use crate::identity::pem::Pkcs11KeySpec;

/// Bytes of the IV in front of each ciphertext.
const IV_BYTES: usize = 12;

/// A logged-in session and the handle of the token's AES key.
pub struct TokenAes {
    session: Mutex<Session>,
    key: ObjectHandle,
    /// `pkcs11:<token>/<label>`: how the key ring names it.
    pub name: String,
}

impl std::fmt::Debug for TokenAes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenAes({})", self.name)
    }
}

fn name_of(spec: &Pkcs11KeySpec) -> String {
    format!("pkcs11:{}/{}", spec.token, spec.label)
}

fn find(session: &Session, spec: &Pkcs11KeySpec) -> Result<Vec<ObjectHandle>, String> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(spec.label.as_bytes().to_vec()),
        ])
        .map_err(|e| e.to_string())
}

impl TokenAes {
    /// The AES key labelled as `spec` says in its token.
    pub fn load(spec: &Pkcs11KeySpec) -> Result<TokenAes, String> {
        let session = open_session(spec, false)?;
        let found = find(&session, spec)?;
        let [key] = found.as_slice() else {
            return Err(format!(
                "token `{}` holds {} secret keys labelled `{}`, not one (make one with `yrd-gateway keys init --pkcs11-module …`)",
                spec.token,
                found.len(),
                spec.label
            ));
        };
        Ok(TokenAes {
            key: *key,
            session: Mutex::new(session),
            name: name_of(spec),
        })
    }

    /// Makes a new AES-256 key labelled as `spec` says in its token: kept in the token,
    /// sensitive and not extractable. Refuses when one is labelled so already.
    pub fn generate(spec: &Pkcs11KeySpec) -> Result<String, String> {
        let session = open_session(spec, true)?;
        if !find(&session, spec)?.is_empty() {
            return Err(format!(
                "token `{}` already holds a secret key labelled `{}`",
                spec.token, spec.label
            ));
        }
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32.into()),
                    Attribute::Label(spec.label.as_bytes().to_vec()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .map_err(|e| format!("C_GenerateKey: {e}"))?;
        Ok(name_of(spec))
    }

    /// `plaintext` encrypted in the token with AES-GCM under a random IV, bound to `aad`:
    /// the IV, then the ciphertext and its tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut iv = [0u8; IV_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut iv)
            .map_err(|_| "the system's random generator failed".to_string())?;
        let mut params_iv = iv;
        let params = GcmParams::new(&mut params_iv, aad, 128.into()).map_err(|e| e.to_string())?;
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let sealed = session
            .encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
            .map_err(|e| format!("C_Encrypt (AES-GCM) in the token: {e}"))?;
        Ok([iv.as_slice(), &sealed].concat())
    }

    /// The plaintext of what [`TokenAes::seal`] made with `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < IV_BYTES + 16 {
            return Err("too short".into());
        }
        let mut iv = [0u8; IV_BYTES];
        iv.copy_from_slice(&sealed[..IV_BYTES]);
        let params = GcmParams::new(&mut iv, aad, 128.into()).map_err(|e| e.to_string())?;
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        session
            .decrypt(&Mechanism::AesGcm(params), self.key, &sealed[IV_BYTES..])
            .map_err(|e| format!("C_Decrypt (AES-GCM) in the token: {e}"))
    }
}
