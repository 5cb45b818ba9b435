//! The gateway's cryptography, by profile. A federation runs in one [`Profile`]: `intl` —
//! TLS 1.3 with the usual suites, P-256 certificates, ECDSA signatures, SHA-256 — or `gm`,
//! the 商用密码 algorithms a 密评 asks for: RFC 8998 TLS ([`gm::tls`]), SM2 certificates
//! ([`gm::pki`]) and signatures, SM3. [`gm`] holds the primitives, each held to the
//! standards' own test vectors and checked against an implementation nobody here wrote
//! (OpenSSL).

pub mod gm;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The cryptographic profile of a federation (`[crypto] profile`). Every party of a
/// federation uses the same one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// International algorithms: TLS 1.3 (AES-GCM, ChaCha20-Poly1305; X25519, P-256), P-256
    /// certificates, ECDSA signatures, SHA-256.
    #[default]
    Intl,
    /// 商用密码: TLS_SM4_GCM_SM3 with curveSM2 and sm2sig_sm3 (RFC 8998), SM2 certificates
    /// and signatures, SM3.
    Gm,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::Intl, Profile::Gm];

    /// The name in config files, on the wire and on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Intl => "intl",
            Profile::Gm => "gm",
        }
    }

    /// The profile named `name` (`intl` or `gm`).
    pub fn parse(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// What the profile's certificates and keys are, for messages to operators.
    pub fn key_kind(self) -> &'static str {
        match self {
            Profile::Intl => "an ECDSA, Ed25519 or RSA key (P-256 from `certs init`)",
            Profile::Gm => "an SM2 key (from `certs init --profile gm`)",
        }
    }

    /// The hash the profile's gateways list envelopes with in their manifests.
    pub fn digest(self) -> Digest {
        match self {
            Profile::Intl => Digest::Sha256,
            Profile::Gm => Digest::Sm3,
        }
    }

    /// The TLS provider of the profile: in `gm`, RFC 8998's suite, group and scheme only.
    pub fn tls_provider(self) -> Arc<CryptoProvider> {
        match self {
            Profile::Intl => Arc::new(rustls::crypto::ring::default_provider()),
            Profile::Gm => Arc::new(gm::tls::provider()),
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(name: &str) -> Result<Profile, String> {
        Profile::parse(name).ok_or_else(|| format!("`{name}` is not a profile: use intl or gm"))
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hash of evidence: what a manifest lists each envelope by, and what a receiver keeps of an
/// envelope whose items it erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sm3,
}

impl Digest {
    /// The name stores and exports keep: `sha256` or `sm3`.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha256 => "sha256",
            Digest::Sm3 => "sm3",
        }
    }

    /// The digest named `name` ([`Self::name`]).
    pub fn parse(name: &str) -> Option<Digest> {
        [Digest::Sha256, Digest::Sm3]
            .into_iter()
            .find(|d| d.name() == name)
    }

    /// The hash of `data`.
    pub fn of(self, data: &[u8]) -> Vec<u8> {
        match self {
            Digest::Sha256 => {
                use sha2::Digest as _;
                sha2::Sha256::digest(data).to_vec()
            }
            Digest::Sm3 => gm::sm3(data).to_vec(),
        }
    }

    /// The hash that goes with a signature code: SM3 with an SM2 signature
    /// ([`SM2_SM3_SIGNATURE`]), SHA-256 with any other — as the gateways of each profile make
    /// their manifests.
    pub fn for_signature(scheme: u16) -> Digest {
        if scheme == SM2_SM3_SIGNATURE {
            Digest::Sm3
        } else {
            Digest::Sha256
        }
    }
}

/// How evidence (batch signatures, signed chain heads) names an SM2 signature over SM3 with
/// the standard distinguishing id [`gm::CERT_DIST_ID`], DER-encoded: the code point of
/// sm2sig_sm3. The other codes are TLS signature schemes as rustls names them (ECDSA P-256
/// with SHA-256 is 0x0403).
pub const SM2_SM3_SIGNATURE: u16 = 0x0708;
