//! Key-encryption keys: the key that wraps every data key of the key ring, from one of two
//! providers: a key file (one line `<algorithm>:<key in hex>`, refused when anyone but its
//! owner may read it), or an AES-256 key inside a PKCS#11 token that wraps and unwraps in the
//! token ([`crate::identity::pkcs11::wrapping`]). The ring hands it data keys to wrap and
//! unwrap; a file key never leaves this module, a token key never leaves the token.

use std::path::{Path, PathBuf};

use super::VaultError;
use super::cipher::{Algorithm, Cipher, random};
use crate::crypto::Digest;
use crate::identity::pem::Pkcs11KeySpec;
use crate::identity::pkcs11::wrapping::TokenAes;

/// A key-encryption key, loaded.
#[derive(Debug)]
pub struct Kek {
    /// Names the key in the ring (not secret): for a file, the first 8 bytes, in hex, of a
    /// digest of it; for a token key, `pkcs11:<token>/<label>`.
    pub id: String,
    pub algorithm: Algorithm,
    wrapper: Wrapper,
    /// Where it came from: the key file, or the token's module.
    pub source: PathBuf,
}

#[derive(Debug)]
enum Wrapper {
    File(Cipher),
    Token(TokenAes),
}

impl Kek {
    /// Reads the key file at `path`.
    pub fn from_file(path: &Path) -> Result<Kek, VaultError> {
        let shown = path.display();
        let metadata = std::fs::metadata(path).map_err(|e| {
            VaultError::Kek(format!(
                "cannot read the key-encryption key file {shown}: {e} (create one with `yrd-gateway keys init --kek {shown}`)"
            ))
        })?;
        check_private(path, &metadata)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| VaultError::Kek(format!("cannot read {shown}: {e}")))?;
        let (name, hex) = text.trim().split_once(':').ok_or_else(|| {
            VaultError::Kek(format!(
                "{shown} is not a key-encryption key file (one line `aes-256-gcm:<hex>` or `sm4-gcm:<hex>`)"
            ))
        })?;
        let algorithm = Algorithm::parse(name).ok_or_else(|| {
            VaultError::Kek(format!(
                "{shown} names the algorithm `{name}`: use aes-256-gcm or sm4-gcm"
            ))
        })?;
        let key = decode_hex(hex)
            .ok_or_else(|| VaultError::Kek(format!("{shown}: the key is not hexadecimal")))?;
        Kek::new(algorithm, &key, path)
    }

    fn new(algorithm: Algorithm, key: &[u8], source: &Path) -> Result<Kek, VaultError> {
        let cipher = Cipher::new(algorithm, key)
            .map_err(|e| VaultError::Kek(format!("{}: {e}", source.display())))?;
        let digest = match algorithm {
            Algorithm::Aes256Gcm => Digest::Sha256,
            Algorithm::Sm4Gcm => Digest::Sm3,
        };
        let mut named = b"yrd-gateway key-encryption key\0".to_vec();
        named.extend_from_slice(key);
        let id = encode_hex(&digest.of(&named)[..8]);
        Ok(Kek {
            id,
            algorithm,
            wrapper: Wrapper::File(cipher),
            source: source.to_path_buf(),
        })
    }

    /// The AES key of the token `spec` names.
    pub fn from_token(spec: &Pkcs11KeySpec) -> Result<Kek, VaultError> {
        let token = TokenAes::load(spec).map_err(|e| {
            VaultError::Kek(format!(
                "the key-encryption key in PKCS#11 token `{}` ({}): {e}",
                spec.token,
                spec.module.display()
            ))
        })?;
        Ok(Kek {
            id: token.name.clone(),
            algorithm: Algorithm::Aes256Gcm,
            wrapper: Wrapper::Token(token),
            source: spec.module.clone(),
        })
    }

    /// Whether it is a key file (which `keys rotate` can replace).
    pub fn is_file(&self) -> bool {
        matches!(self.wrapper, Wrapper::File(_))
    }

    /// Writes a new random key of `algorithm` to `path` (which must not exist), readable by
    /// its owner only. Returns the key's id.
    pub fn create(path: &Path, algorithm: Algorithm) -> Result<String, VaultError> {
        let mut key = vec![0u8; algorithm.key_bytes()];
        random(&mut key)?;
        let text = format!("{}:{}\n", algorithm.as_str(), encode_hex(&key));
        write_private(path, text.as_bytes())?;
        Ok(Kek::new(algorithm, &key, path)?.id)
    }

    /// The same key, named as read from `path` (a staged key once moved over the key file).
    pub fn from(self, path: &Path) -> Kek {
        Kek {
            source: path.to_path_buf(),
            ..self
        }
    }

    /// `dek` wrapped, bound to `aad`.
    pub fn wrap(&self, aad: &[u8], dek: &[u8]) -> Result<Vec<u8>, VaultError> {
        match &self.wrapper {
            Wrapper::File(cipher) => {
                let mut out = Vec::with_capacity(dek.len() + 28);
                cipher.seal_into(aad, dek, &mut out)?;
                Ok(out)
            }
            Wrapper::Token(token) => token.seal(aad, dek).map_err(VaultError::Kek),
        }
    }

    /// The data key `wrapped` holds, if this key wrapped it with `aad`.
    pub fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, VaultError> {
        let opened = match &self.wrapper {
            Wrapper::File(cipher) => cipher.open(aad, wrapped).map_err(|_| String::new()),
            Wrapper::Token(token) => token.open(aad, wrapped),
        };
        opened.map_err(|_| {
            VaultError::Kek(format!(
                "a data key does not unwrap with the key-encryption key {} ({}): the key ring or the key file was changed",
                self.id,
                self.source.display()
            ))
        })
    }
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::Kek(format!(
            "the key-encryption key file {} may be read by others (mode {mode:o}): `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &std::fs::Metadata) -> Result<(), VaultError> {
    Ok(())
}

/// Creates `path` (refusing to replace a file) with `bytes`, readable by its owner only. The
/// file appears whole or not at all (written aside, then linked in place), so two processes
/// making it at once — replicas starting together — never read half a key.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    use std::io::Write;
    let failed =
        |e: std::io::Error| VaultError::Kek(format!("cannot create {}: {e}", path.display()));
    if path.exists() {
        return Err(failed(std::io::ErrorKind::AlreadyExists.into()));
    }
    let mut aside = path.as_os_str().to_os_string();
    aside.push(format!(".{}.tmp", std::process::id()));
    let aside = PathBuf::from(aside);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&aside).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let linked = written.and_then(|_| std::fs::hard_link(&aside, path));
    let _ = std::fs::remove_file(&aside);
    linked.map_err(failed)
}

pub(super) fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
