//! The AEADs that seal data at rest: AES-256-GCM (the `intl` profile, `ring`'s
//! implementation) and SM4-GCM (the `gm` profile, [`crate::crypto::gm::Sm4GcmKey`]). A data
//! key records its algorithm, so what was sealed under one profile still opens after the
//! federation moved to the other.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::VaultError;
use crate::crypto::Profile;
use crate::crypto::gm::{SM4_GCM_TAG_BYTES, SM4_KEY_BYTES, Sm4GcmKey};

/// Bytes of the random nonce in front of every ciphertext.
pub const NONCE_BYTES: usize = 12;
/// Bytes of the tag after every ciphertext (both algorithms).
pub const TAG_BYTES: usize = 16;

/// An AEAD algorithm of a data or key-encryption key, named as the key ring stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Aes256Gcm,
    Sm4Gcm,
}

impl Algorithm {
    /// The algorithm new keys get in `profile`.
    pub fn of(profile: Profile) -> Self {
        match profile {
            Profile::Intl => Algorithm::Aes256Gcm,
            Profile::Gm => Algorithm::Sm4Gcm,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::Sm4Gcm => "sm4-gcm",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "aes-256-gcm" => Some(Algorithm::Aes256Gcm),
            "sm4-gcm" => Some(Algorithm::Sm4Gcm),
            _ => None,
        }
    }

    /// Bytes of a key.
    pub fn key_bytes(self) -> usize {
        match self {
            Algorithm::Aes256Gcm => 32,
            Algorithm::Sm4Gcm => SM4_KEY_BYTES,
        }
    }
}

/// A key ready to seal and open, its schedule computed once.
pub enum Cipher {
    Aes(Box<LessSafeKey>),
    Sm4(Box<Sm4GcmKey>),
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cipher::Aes(_) => "Cipher(aes-256-gcm)",
            Cipher::Sm4(_) => "Cipher(sm4-gcm)",
        })
    }
}

impl Cipher {
    pub fn new(algorithm: Algorithm, key: &[u8]) -> Result<Self, VaultError> {
        if key.len() != algorithm.key_bytes() {
            return Err(VaultError::Key(format!(
                "an {} key is {} bytes, not {}",
                algorithm.as_str(),
                algorithm.key_bytes(),
                key.len()
            )));
        }
        Ok(match algorithm {
            Algorithm::Aes256Gcm => Cipher::Aes(Box::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key)
                    .map_err(|_| VaultError::Key("not an AES-256 key".into()))?,
            ))),
            Algorithm::Sm4Gcm => Cipher::Sm4(Box::new(
                Sm4GcmKey::new(key).map_err(|e| VaultError::Key(e.to_string()))?,
            )),
        })
    }

    /// Appends to `out` a random nonce, `plaintext` encrypted and the tag binding `aad`.
    pub fn seal_into(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), VaultError> {
        let mut nonce = [0u8; NONCE_BYTES];
        random(&mut nonce)?;
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag: [u8; TAG_BYTES] = match self {
            Cipher::Aes(key) => {
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut out[start..],
                    )
                    .map_err(|_| VaultError::Key("AES-256-GCM refused to seal".into()))?;
                let mut t = [0u8; TAG_BYTES];
                t.copy_from_slice(tag.as_ref());
                t
            }
            Cipher::Sm4(key) => {
                let tag: [u8; SM4_GCM_TAG_BYTES] = key
                    .seal_in_place(&nonce, aad, &mut out[start..])
                    .map_err(|e| VaultError::Key(e.to_string()))?;
                tag
            }
        };
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// The plaintext of `sealed` (nonce, ciphertext, tag as [`Cipher::seal_into`] wrote
    /// them) if the tag proves it and `aad`; [`VaultError::Tampered`] otherwise.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return Err(VaultError::Tampered);
        }
        let (nonce, rest) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| VaultError::Tampered)?;
        let mut buffer = rest.to_vec();
        match self {
            Cipher::Aes(key) => {
                let len = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut buffer,
                    )
                    .map_err(|_| VaultError::Tampered)?
                    .len();
                buffer.truncate(len);
            }
            Cipher::Sm4(key) => {
                let split = buffer.len() - TAG_BYTES;
                let (text, tag) = buffer.split_at_mut(split);
                key.open_in_place(&nonce, aad, text, tag)
                    .map_err(|_| VaultError::Tampered)?;
                buffer.truncate(split);
            }
        }
        Ok(buffer)
    }
}

/// Fills `buf` from the operating system's generator.
pub fn random(buf: &mut [u8]) -> Result<(), VaultError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| VaultError::Key("the system's random generator failed".into()))
}
