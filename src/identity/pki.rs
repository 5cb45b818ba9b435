//! The development PKI: a federation CA and, per party, a gateway certificate and a demo client
//! certificate, in the layout of SPEC §7, in either crypto profile — P-256 certificates made
//! with rcgen (`intl`), SM2 certificates made by [`crate::crypto::gm::pki`] (`gm`).
//! Production operators bring their own CA; the gateway only reads file paths. Tests use
//! [`Authority::issue`] to make the odd certificates they need (expired, foreign CA, no
//! SPIFFE id).

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::SpiffeId;
use crate::crypto::Profile;
use crate::crypto::gm::{self, Sm2PrivateKey};

/// How long development certificates stay valid.
const DEV_VALIDITY_DAYS: i64 = 825;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Inconsistent(String),
    #[error("SM2 certificate: {0}")]
    Gm(#[from] gm::GmError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a leaf certificate should say.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    /// URI SANs; a federation certificate has exactly one SPIFFE id.
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Gateways serve TLS and dial peers, so they need both server and client auth.
    pub server_auth: bool,
}

impl LeafSpec {
    /// A gateway certificate: SPIFFE id, DNS `localhost` and the party id, IPs of loopback.
    pub fn gateway(trust_domain: &str, party: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: format!("{party} gateway"),
            uris: vec![SpiffeId::gateway(trust_domain, party).to_string()],
            dns_names: vec!["localhost".into(), party.into()],
            ips: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(DEV_VALIDITY_DAYS),
            server_auth: true,
        }
    }

    /// A party system's client certificate.
    pub fn client(trust_domain: &str, party: &str, system: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: format!("{party} {system}"),
            uris: vec![SpiffeId::client(trust_domain, party, system).to_string()],
            dns_names: vec![],
            ips: vec![],
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(DEV_VALIDITY_DAYS),
            server_auth: false,
        }
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate's serial number (to revoke it).
    pub serial: Vec<u8>,
}

/// A certificate authority able to sign leaf certificates.
pub struct Authority {
    cert_pem: String,
    key: CaKey,
}

/// The CA's key, by profile.
enum CaKey {
    Intl(Box<Issuer<'static, KeyPair>>),
    Gm(Sm2PrivateKey),
}

fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source is available");
    bytes[0] &= 0x7f; // a positive DER integer
    SerialNumber::from_slice(&bytes)
}

impl Authority {
    /// Creates a new self-signed CA of the intl profile.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        Self::generate_in(Profile::Intl, common_name)
    }

    /// Creates a new self-signed CA of `profile`.
    pub fn generate_in(profile: Profile, common_name: &str) -> Result<Self, PkiError> {
        if profile == Profile::Gm {
            let key = Sm2PrivateKey::generate()?;
            let valid_for = std::time::Duration::from_secs(DEV_VALIDITY_DAYS as u64 * 2 * 86_400);
            let cert_pem = gm::pki::issue_ca(&key, common_name, valid_for)?;
            return Ok(Authority {
                cert_pem,
                key: CaKey::Gm(key),
            });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(
            DnType::OrganizationName,
            "YRD (Huzhou) Industrial Cooperation Zone federation",
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(DEV_VALIDITY_DAYS * 2);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key: CaKey::Intl(Box::new(Issuer::new(params, key))),
        })
    }

    /// Loads a CA from its PEM certificate and key; the certificate's key says the profile.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = match profile_of_pem(cert_pem)? {
            Profile::Intl => {
                let key = KeyPair::from_pem(key_pem)?;
                CaKey::Intl(Box::new(Issuer::from_ca_cert_pem(cert_pem, key)?))
            }
            Profile::Gm => CaKey::Gm(Sm2PrivateKey::from_pkcs8_pem(key_pem)?),
        };
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            key,
        })
    }

    /// The profile of the CA's key.
    pub fn profile(&self) -> Profile {
        match self.key {
            CaKey::Intl(_) => Profile::Intl,
            CaKey::Gm(_) => Profile::Gm,
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        match &self.key {
            CaKey::Intl(issuer) => issuer.key().serialize_pem(),
            CaKey::Gm(key) => key.to_pkcs8_pem(),
        }
    }

    /// Signs a leaf certificate with a fresh key of the CA's profile (ECDSA P-256 or SM2).
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let issuer = match &self.key {
            CaKey::Intl(issuer) => issuer,
            CaKey::Gm(ca_key) => return self.issue_gm(ca_key, spec),
        };
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = dn;
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&key, issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// [`Self::issue`] in the gm profile. The certificate is valid from a few minutes ago
    /// until `spec.not_after`; it always allows client authentication.
    fn issue_gm(&self, ca_key: &Sm2PrivateKey, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let [spiffe_id] = spec.uris.as_slice() else {
            return Err(PkiError::Inconsistent(
                "an SM2 certificate carries exactly one URI SAN".into(),
            ));
        };
        let left = spec.not_after - OffsetDateTime::now_utc();
        let key = Sm2PrivateKey::generate()?;
        let cert_pem = gm::pki::issue_leaf(
            ca_key,
            &self.cert_pem,
            &key.public_key(),
            &gm::pki::LeafSpec {
                common_name: spec.common_name.clone(),
                spiffe_id: spiffe_id.clone(),
                dns_names: spec.dns_names.clone(),
                ip_addresses: spec.ips.clone(),
                server: spec.server_auth,
                client: true,
                valid_for: std::time::Duration::from_secs(left.whole_seconds().max(0) as u64),
            },
        )?;
        Ok(Issued {
            serial: gm::pki::serial_of(&cert_pem)?,
            cert_pem,
            key_pem: key.to_pkcs8_pem(),
        })
    }

    /// A PEM certificate revocation list revoking the given serial numbers, valid for a week.
    pub fn revoke(&self, serials: &[Vec<u8>], crl_number: u64) -> Result<String, PkiError> {
        let issuer = match &self.key {
            CaKey::Intl(issuer) => issuer,
            CaKey::Gm(ca_key) => {
                let week = std::time::Duration::from_secs(7 * 86_400);
                return Ok(gm::pki::issue_crl(
                    ca_key,
                    &self.cert_pem,
                    crl_number,
                    serials,
                    week,
                )?);
            }
        };
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(issuer)?.pem()?)
    }
}

/// The profile of the first certificate in `pem`.
fn profile_of_pem(pem: &str) -> Result<Profile, PkiError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Inconsistent(format!("unreadable CA certificate: {e}")))?;
    super::pem::profile_of_certificate(&der).map_err(PkiError::Inconsistent)
}

/// What `certs init` did, for the operator's terminal.
#[derive(Debug, Default)]
pub struct InitReport {
    pub created: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// Creates the development PKI of `profile` under `dir`, or completes it: an existing CA is
/// reused (and must be of `profile`) and existing certificates are kept, so re-running after
/// adding a party issues only what is new.
pub fn init_dev_pki(
    dir: &Path,
    trust_domain: &str,
    parties: &[String],
    profile: Profile,
) -> Result<InitReport, PkiError> {
    let mut report = InitReport::default();
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let ca = match (ca_crt.exists(), ca_key.exists()) {
        (true, true) => {
            let crt = fs::read_to_string(&ca_crt).map_err(io_err(&ca_crt))?;
            let key = fs::read_to_string(&ca_key).map_err(io_err(&ca_key))?;
            report.kept.push(ca_crt.clone());
            let ca = Authority::from_pem(&crt, &key)?;
            if ca.profile() != profile {
                return Err(PkiError::Inconsistent(format!(
                    "{} is a CA of the {} profile, not {profile}: choose another folder for \
                     the {profile} certificates, or remove this one",
                    ca_crt.display(),
                    ca.profile()
                )));
            }
            ca
        }
        (false, false) => {
            let ca = Authority::generate_in(profile, "YRD Huzhou development CA")?;
            write_private(&ca_key, &ca.key_pem())?;
            write_public(&ca_crt, ca.cert_pem())?;
            report.created.push(ca_crt.clone());
            ca
        }
        _ => {
            return Err(PkiError::Inconsistent(format!(
                "{} and {} must both exist or both be absent; remove the one left over",
                ca_crt.display(),
                ca_key.display()
            )));
        }
    };
    for party in parties {
        let party_dir = dir.join(party);
        fs::create_dir_all(&party_dir).map_err(io_err(&party_dir))?;
        for (stem, spec) in [
            ("gateway", LeafSpec::gateway(trust_domain, party)),
            ("client", LeafSpec::client(trust_domain, party, "demo")),
        ] {
            let crt = party_dir.join(format!("{stem}.crt"));
            let key = party_dir.join(format!("{stem}.key"));
            if crt.exists() && key.exists() {
                report.kept.push(crt);
                continue;
            }
            let issued = ca.issue(&spec)?;
            write_private(&key, &issued.key_pem)?;
            write_public(&crt, &issued.cert_pem)?;
            report.created.push(crt);
        }
    }
    Ok(report)
}

/// Writes a private key readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(pem.as_bytes()).map_err(io_err(path))
}

fn write_public(path: &Path, pem: &str) -> Result<(), PkiError> {
    fs::write(path, pem).map_err(io_err(path))
}
