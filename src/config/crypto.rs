//! The `[tls]` and `[crypto]` sections: the federation's crypto profile, the gateway's TLS
//! files, where its key is (a file or a PKCS#11 token), the international client port of a gm
//! gateway, and the CAs kept to check evidence of before a change.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::identity::pem::Pkcs11KeySpec;
use crate::identity::tls::{IntlClientPaths, TlsPaths};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    /// The key file; absent when `[tls.pkcs11]` names a token that holds the key.
    pub key: Option<PathBuf>,
    /// Certificate revocation list (PEM), reloaded when it changes.
    pub crl: Option<PathBuf>,
    /// In the gm profile: party systems that cannot speak RFC 8998 may call with international
    /// TLS 1.3, presenting certificates of this CA, and are served this certificate.
    pub intl_clients: Option<RawIntlClients>,
    /// The gateway key in a PKCS#11 token instead of the file `key`.
    pub pkcs11: Option<RawPkcs11>,
    /// CA bundles of earlier CAs or profiles, to check evidence kept from before a change.
    #[serde(default)]
    pub evidence_cas: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPkcs11 {
    /// The PKCS#11 module (a shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The private key's label (`CKA_LABEL`).
    pub key_label: String,
    /// File holding the user PIN (a trailing newline is ignored).
    pub pin_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntlClients {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
}

/// Where the keys of data at rest are (see [`crate::vault`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// The key-encryption key file (`yrd-gateway keys init` makes one; mode 600); or
    /// `[keys.pkcs11]`.
    pub kek_file: Option<PathBuf>,
    /// The key ring file (made at the first start), apart from the store.
    pub ring: PathBuf,
    /// The key-encryption key is an AES key in this PKCS#11 token instead of a file.
    pub pkcs11: Option<RawPkcs11>,
}

impl RawKeys {
    pub(super) fn check(
        self,
        resolve: impl Fn(PathBuf) -> PathBuf,
        store: &crate::store::StoreConfig,
    ) -> Result<crate::vault::KeysConfig, ConfigError> {
        let kek = match (self.kek_file, self.pkcs11) {
            (Some(file), None) => crate::vault::KekSource::File(resolve(file)),
            (None, Some(p)) => crate::vault::KekSource::Token(Pkcs11KeySpec {
                module: resolve(p.module),
                token: p.token,
                label: p.key_label,
                pin_file: resolve(p.pin_file),
            }),
            _ => {
                return Err(ConfigError::invalid(
                    "keys.kek_file",
                    "name the key-encryption key once: a file (kek_file) or a PKCS#11 token ([keys.pkcs11]), not both",
                ));
            }
        };
        let keys = crate::vault::KeysConfig {
            kek,
            ring: resolve(self.ring),
        };
        if keys.kek == crate::vault::KekSource::File(keys.ring.clone()) {
            return Err(ConfigError::invalid(
                "keys.ring",
                "is the key-encryption key file: name a file of its own",
            ));
        }
        if let crate::store::StoreConfig::Sqlite { path } = store
            && *path == keys.ring
        {
            return Err(ConfigError::invalid(
                "keys.ring",
                "is the store file: the ring must live apart from the store (and its backups)",
            ));
        }
        Ok(keys)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrypto {
    /// `intl` (the default) or `gm`; the same at every party of a federation.
    pub profile: Option<String>,
}

impl RawCrypto {
    /// The profile, `YRD_CRYPTO_PROFILE` overriding the file.
    pub(super) fn check(
        self,
        env: &HashMap<String, String>,
    ) -> Result<crate::crypto::Profile, ConfigError> {
        match env.get("YRD_CRYPTO_PROFILE").cloned().or(self.profile) {
            None => Ok(crate::crypto::Profile::default()),
            Some(name) => crate::crypto::Profile::parse(&name).ok_or_else(|| {
                ConfigError::invalid(
                    "crypto.profile",
                    format!("`{name}` is not a profile: use \"intl\" or \"gm\""),
                )
            }),
        }
    }
}

impl RawTls {
    /// The TLS files of a gateway in `profile`, paths resolved by `resolve`.
    pub(super) fn check(
        self,
        profile: crate::crypto::Profile,
        resolve: &impl Fn(PathBuf) -> PathBuf,
    ) -> Result<TlsPaths, ConfigError> {
        let key_given = self.key.is_some();
        Ok(TlsPaths {
            ca: resolve(self.ca),
            cert: resolve(self.cert),
            key: self.key.map(resolve).unwrap_or_default(),
            crl: self.crl.map(resolve),
            profile,
            intl_clients: check_intl_clients(self.intl_clients, profile, resolve)?,
            pkcs11: check_key_source(self.pkcs11, key_given, profile, resolve)?,
            evidence_cas: self.evidence_cas.into_iter().map(resolve).collect(),
        })
    }
}

/// `[tls.intl_clients]`, which only a gateway of the gm profile takes (in intl every client
/// speaks the international suites already).
fn check_intl_clients(
    raw: Option<RawIntlClients>,
    profile: crate::crypto::Profile,
    resolve: &impl Fn(PathBuf) -> PathBuf,
) -> Result<Option<IntlClientPaths>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if profile != crate::crypto::Profile::Gm {
        return Err(ConfigError::invalid(
            "tls.intl_clients",
            "only a gateway of the gm crypto profile takes it: in intl every client already speaks the international suites",
        ));
    }
    Ok(Some(IntlClientPaths {
        ca: resolve(raw.ca),
        cert: resolve(raw.cert),
        key: resolve(raw.key),
        crl: raw.crl.map(resolve),
    }))
}

/// Where the gateway key is: the file `tls.key`, or the token `[tls.pkcs11]` names — exactly
/// one of them; a token key only in the intl profile (ECDSA P-256).
fn check_key_source(
    raw: Option<RawPkcs11>,
    key_given: bool,
    profile: crate::crypto::Profile,
    resolve: &impl Fn(PathBuf) -> PathBuf,
) -> Result<Option<Pkcs11KeySpec>, ConfigError> {
    match (raw, key_given) {
        (None, true) => Ok(None),
        (None, false) => Err(ConfigError::invalid(
            "tls.key",
            "missing: name the key file, or the token that holds the key in [tls.pkcs11]",
        )),
        (Some(_), true) => Err(ConfigError::invalid(
            "tls.pkcs11",
            "the key is either in a file (tls.key) or in a token, not both: remove one",
        )),
        (Some(_), false) if profile == crate::crypto::Profile::Gm => Err(ConfigError::invalid(
            "tls.pkcs11",
            "a token key is supported for ECDSA P-256 (the intl profile) only; an SM2 device needs a module with SM2 mechanisms",
        )),
        (Some(p), false) => Ok(Some(Pkcs11KeySpec {
            module: resolve(p.module),
            token: p.token,
            label: p.key_label,
            pin_file: resolve(p.pin_file),
        })),
    }
}
