//! The gateway's key material as files: where they are and which crypto profile reads them
//! ([`TlsPaths`]), reading certificates and keys from PEM, and the profile's crypto provider
//! every TLS operation uses. Both the TLS configs ([`super::tls`]) and the signing key
//! ([`super::signer`]) are built from these.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::crypto::Profile;

/// File paths of the gateway's TLS material (resolved against the config file's folder), and
/// the crypto profile they must fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
    pub profile: Profile,
    /// In the gm profile: the international CA, certificate and key the client port also
    /// serves party systems with (`[tls.intl_clients]`); `None`: RFC 8998 only.
    pub intl_clients: Option<IntlClientPaths>,
    /// The gateway's key in a PKCS#11 token (`[tls.pkcs11]`) instead of the file `key`.
    pub pkcs11: Option<Pkcs11KeySpec>,
    /// CA bundles of earlier CAs or profiles (`tls.evidence_cas`), trusted to check evidence
    /// kept from before a change of CA or profile — never for connections.
    pub evidence_cas: Vec<PathBuf>,
}

/// Where a gateway key held by a PKCS#11 token is: the module, the token's label, the key's
/// label, and the file holding the user PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11KeySpec {
    pub module: PathBuf,
    pub token: String,
    pub label: String,
    pub pin_file: PathBuf,
}

/// The key seam: the gateway's signing key, from its file in the profile's format or from the
/// PKCS#11 token `[tls.pkcs11]` names. TLS handshakes and the change signer both sign with it.
pub fn gateway_key(paths: &TlsPaths) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
    match &paths.pkcs11 {
        Some(spec) => super::pkcs11::load(spec),
        None => provider(paths.profile)
            .key_provider
            .load_private_key(load_key(&paths.key)?)
            .map_err(|e| TlsError::Load {
                what: "private key",
                path: paths.key.clone(),
                message: e.to_string(),
            }),
    }
}

/// The files of a gm gateway's international client port (`[tls.intl_clients]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntlClientPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {message}")]
    Load {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("invalid TLS setup: {0}")]
    Setup(String),
    #[error(
        "{path} holds {found}, but the crypto profile is {profile}, which needs {needs}: \
         issue the federation's files again with `certs init --profile {profile}`, or set \
         `[crypto] profile` to the one the federation uses"
    )]
    Profile {
        path: PathBuf,
        found: &'static str,
        profile: Profile,
        needs: &'static str,
    },
}

/// The crypto provider every TLS operation of a gateway in `profile` uses.
pub fn provider(profile: Profile) -> Arc<rustls::crypto::CryptoProvider> {
    profile.tls_provider()
}

/// The object identifier of the SM2 curve (GB/T 33560), in a certificate's public key.
const SM2_CURVE_OID: &str = "1.2.156.10197.1.301";

/// The profile a certificate's public key belongs to: an SM2 key is `gm`, any other `intl`.
pub fn profile_of_certificate(cert: &CertificateDer<'_>) -> Result<Profile, String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let spki = &parsed.tbs_certificate.subject_pki.algorithm;
    let curve = spki
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    Ok(if curve.as_deref() == Some(SM2_CURVE_OID) {
        Profile::Gm
    } else {
        Profile::Intl
    })
}

/// What a file of `kind` holds when it belongs to `profile`, for errors.
fn holds(kind: &'static str, profile: Profile) -> &'static str {
    match (kind, profile) {
        ("certificate", Profile::Gm) => "an SM2 certificate",
        ("certificate", Profile::Intl) => "an international (non-SM2) certificate",
        (_, Profile::Gm) => "an SM2 private key",
        (_, Profile::Intl) => "an international (non-SM2) private key",
    }
}

/// Refuses material that does not fit `paths.profile`, naming the file: the CA bundle and the
/// gateway certificate must carry the profile's keys, and the key file must load with the
/// profile's provider; the files of `[tls.intl_clients]` must be international.
pub fn check_profile(paths: &TlsPaths) -> Result<(), TlsError> {
    check_files(
        [&paths.ca, &paths.cert],
        paths.pkcs11.is_none().then_some(paths.key.as_path()),
        paths.profile,
    )?;
    if let Some(intl) = &paths.intl_clients {
        check_files([&intl.ca, &intl.cert], Some(&intl.key), Profile::Intl)?;
    }
    Ok(())
}

/// Refuses certificate files (`certs`) or a key file that do not fit `profile` (a key in a
/// token, `None`, is checked when it is loaded).
fn check_files(certs: [&PathBuf; 2], key: Option<&Path>, profile: Profile) -> Result<(), TlsError> {
    let wrong = |path: &Path, found: Profile, kind: &'static str| TlsError::Profile {
        path: path.to_owned(),
        found: holds(kind, found),
        profile,
        needs: holds(kind, profile),
    };
    for path in certs {
        for cert in load_certs(path)? {
            let found = profile_of_certificate(&cert).map_err(|message| TlsError::Load {
                what: "certificates",
                path: path.clone(),
                message,
            })?;
            if found != profile {
                return Err(wrong(path, found, "certificate"));
            }
        }
    }
    let Some(key_path) = key else {
        return Ok(());
    };
    let key = load_key(key_path)?;
    if provider(profile)
        .key_provider
        .load_private_key(key.clone_key())
        .is_err()
    {
        let other = Profile::ALL.into_iter().find(|p| {
            *p != profile
                && provider(*p)
                    .key_provider
                    .load_private_key(key.clone_key())
                    .is_ok()
        });
        return Err(match other {
            Some(found) => wrong(key_path, found, "key"),
            None => TlsError::Load {
                what: "private key",
                path: key_path.to_owned(),
                message: format!("not {}", profile.key_kind()),
            },
        });
    }
    Ok(())
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Load {
        what: "certificates",
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Load {
        what: "private key",
        path: path.to_owned(),
        message: e.to_string(),
    })
}
