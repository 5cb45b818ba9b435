//! The device side of the key seam: the gateway's key held by a PKCS#11 token (an HSM, a
//! 签名验签服务器 with a PKCS#11 module, or SoftHSM2 in the tests) instead of a key file. The
//! key never leaves the token; TLS handshakes and the gateway's signatures ask it to sign.
//! Today: ECDSA P-256 keys (the intl profile). SM2 in a device needs a module offering SM2
//! mechanisms, which SoftHSM2 does not have to test against.

use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as TokenError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use super::pem::{Pkcs11KeySpec, TlsError};

/// The DER of the named curve P-256 (prime256v1), as a token's `CKA_EC_PARAMS` holds it.
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Opens the token `spec` names (read-write with `write`) and logs in with its PIN.
pub fn open_session(spec: &Pkcs11KeySpec, write: bool) -> Result<Session, String> {
    let pin = std::fs::read_to_string(&spec.pin_file)
        .map_err(|e| format!("cannot read the PIN file {}: {e}", spec.pin_file.display()))?;
    let pin = pin.trim_end_matches(['\n', '\r']).to_string();
    let module = Pkcs11::new(&spec.module).map_err(|e| format!("cannot load: {e}"))?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(TokenError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("C_Initialize: {e}")),
    }
    let slots = module.get_slots_with_token().map_err(|e| e.to_string())?;
    let slot = slots
        .into_iter()
        .find(|s| {
            module
                .get_token_info(*s)
                .is_ok_and(|t| t.label().trim_end() == spec.token)
        })
        .ok_or_else(|| format!("no token labelled `{}`", spec.token))?;
    let session = if write {
        module.open_rw_session(slot)
    } else {
        module.open_ro_session(slot)
    }
    .map_err(|e| e.to_string())?;
    match session.login(UserType::User, Some(&pin.into())) {
        Ok(()) | Err(TokenError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(format!("login to token `{}`: {e}", spec.token)),
    }
    Ok(session)
}

/// Opens the token `spec` names, logs in with its PIN and finds its private key.
pub fn load(spec: &Pkcs11KeySpec) -> Result<Arc<dyn SigningKey>, TlsError> {
    let fail = |message: String| TlsError::Load {
        what: "PKCS#11 key",
        path: spec.module.clone(),
        message,
    };
    let session = open_session(spec, false).map_err(fail)?;
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(spec.label.as_bytes().to_vec()),
        ])
        .map_err(|e| fail(e.to_string()))?;
    let [key] = found.as_slice() else {
        return Err(fail(format!(
            "token `{}` holds {} private keys labelled `{}`, not one",
            spec.token,
            found.len(),
            spec.label
        )));
    };
    let attributes = session
        .get_attributes(*key, &[AttributeType::KeyType, AttributeType::EcParams])
        .map_err(|e| fail(e.to_string()))?;
    let p256 = attributes
        .iter()
        .any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::EC))
        && attributes
            .iter()
            .any(|a| matches!(a, Attribute::EcParams(p) if p.as_slice() == P256));
    if !p256 {
        return Err(fail(format!(
            "`{}` is not an ECDSA P-256 key (the one kind of token key supported)",
            spec.label
        )));
    }
    Ok(Arc::new(TokenKey(Arc::new(Held {
        session: Mutex::new(session),
        key: *key,
    }))))
}

/// A logged-in session and the key's handle; one signature at a time per session.
struct Held {
    session: Mutex<Session>,
    key: ObjectHandle,
}

/// The token's P-256 key as rustls and the change signer use it.
struct TokenKey(Arc<Held>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey")
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TokenSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

struct TokenSigner(Arc<Held>);

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner")
    }
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(message);
        let session = self.0.session.lock().unwrap_or_else(|e| e.into_inner());
        let raw = session
            .sign(&Mechanism::Ecdsa, self.0.key, &digest)
            .map_err(|e| rustls::Error::General(format!("PKCS#11 signature: {e}")))?;
        ecdsa_der(&raw)
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// A PKCS#11 ECDSA signature (r ‖ s, 32 bytes each for P-256) as the DER `ECDSA-Sig-Value`
/// TLS and X.509 use.
pub(crate) fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, rustls::Error> {
    if raw.len() != 64 {
        return Err(rustls::Error::General(format!(
            "a P-256 signature from the token has {} bytes, not 64",
            raw.len()
        )));
    }
    let integer = |half: &[u8]| {
        let first = half.iter().position(|b| *b != 0).unwrap_or(half.len() - 1);
        let mut value = half[first..].to_vec();
        if value[0] & 0x80 != 0 {
            value.insert(0, 0);
        }
        let mut out = vec![0x02, value.len() as u8];
        out.extend(value);
        out
    };
    let (r, s) = (integer(&raw[..32]), integer(&raw[32..]));
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    Ok(der)
}

pub mod wrapping;

#[cfg(test)]
mod tests;
