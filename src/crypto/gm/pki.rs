//! SM2 certificates: a federation CA and the leaf certificates it issues (SPIFFE URI SAN, DNS
//! names, IP addresses), built with the x509-cert builder and signed by [`Sm2PrivateKey`] —
//! SM3 with SM2 under [`CERT_DIST_ID`], the signature DER-encoded as X.509 requires.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use sm2::pkcs8::LineEnding;
use x509_cert::builder::CrlBuilder;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::{Certificate, TbsCertificate};
use x509_cert::crl::RevokedCert;
use x509_cert::der::asn1::Uint;
use x509_cert::der::asn1::{BitString, Ia5String, OctetString};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Decode, DecodePem, Encode, EncodePem};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlNumber;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::Time;
use x509_cert::time::Validity;

use super::{CERT_DIST_ID, GmError, Sm2PrivateKey, Sm2PublicKey, sm3};

/// What a leaf certificate says of its holder.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// The subject's common name.
    pub common_name: String,
    /// The one URI SAN, `spiffe://<trust-domain>/party/<party>/…`.
    pub spiffe_id: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// May serve TLS (a gateway).
    pub server: bool,
    /// May authenticate as a TLS client (a gateway dialling peers, or a party system).
    pub client: bool,
    pub valid_for: Duration,
}

/// What a certificate is for: the extensions the profile writes.
enum Role {
    Ca,
    Leaf {
        sans: Vec<GeneralName>,
        server: bool,
        client: bool,
    },
}

struct Profile {
    issuer: Name,
    subject: Name,
    role: Role,
}

/// An extension of a certificate: its OID, criticality and DER value.
fn extension<E: Encode + AssociatedOid>(
    value: &E,
    critical: bool,
) -> x509_cert::der::Result<Extension> {
    Ok(Extension {
        extn_id: E::OID,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// A key identifier: the first 20 bytes of the SM3 of the public key's bits.
fn key_id(spk: &SubjectPublicKeyInfoRef<'_>) -> x509_cert::der::Result<OctetString> {
    OctetString::new(&sm3(spk.subject_public_key.raw_bytes())[..20])
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut out = vec![
            extension(&SubjectKeyIdentifier(key_id(&spk)?), false)?,
            extension(
                &AuthorityKeyIdentifier {
                    key_identifier: Some(key_id(&issuer_spk)?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
                false,
            )?,
        ];
        match &self.role {
            Role::Ca => {
                out.push(extension(
                    &BasicConstraints {
                        ca: true,
                        path_len_constraint: Some(0),
                    },
                    true,
                )?);
                out.push(extension(
                    &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
                    true,
                )?);
            }
            Role::Leaf {
                sans,
                server,
                client,
            } => {
                out.push(extension(
                    &BasicConstraints {
                        ca: false,
                        path_len_constraint: None,
                    },
                    true,
                )?);
                out.push(extension(
                    &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyAgreement),
                    true,
                )?);
                let mut purposes = Vec::new();
                if *server {
                    purposes.push(x509_cert::der::oid::db::rfc5280::ID_KP_SERVER_AUTH);
                }
                if *client {
                    purposes.push(x509_cert::der::oid::db::rfc5280::ID_KP_CLIENT_AUTH);
                }
                out.push(extension(&ExtendedKeyUsage(purposes), false)?);
                out.push(extension(&SubjectAltName(sans.clone()), false)?);
            }
        }
        Ok(out)
    }
}

fn bad(e: impl std::fmt::Display) -> GmError {
    GmError::Certificate(e.to_string())
}

/// A serial number: unique (a time-ordered UUID with random bits), positive.
fn serial() -> Result<SerialNumber, GmError> {
    let mut bytes = *uuid::Uuid::now_v7().as_bytes();
    bytes[0] &= 0x7f;
    SerialNumber::new(&bytes).map_err(bad)
}

/// How long before its issue a certificate is already valid.
const NOT_BEFORE_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Builds, signs with `issuer_key` and PEM-encodes a certificate.
fn issue(
    profile: Profile,
    subject_key: &Sm2PublicKey,
    issuer_key: &Sm2PrivateKey,
    valid_for: Duration,
) -> Result<String, GmError> {
    let spki = SubjectPublicKeyInfoOwned::from_der(&subject_key.to_der()).map_err(bad)?;
    // Valid from a few minutes ago, so a party whose clock runs a little behind accepts it.
    let now = std::time::SystemTime::now();
    let validity = Validity::new(
        Time::try_from(now - NOT_BEFORE_MARGIN).map_err(bad)?,
        Time::try_from(now + valid_for).map_err(bad)?,
    );
    let mut builder = CertificateBuilder::new(profile, serial()?, validity, spki).map_err(bad)?;
    let tbs = builder.finalize(&issuer_key.key).map_err(bad)?;
    let signature = issuer_key.sign(CERT_DIST_ID, &tbs)?;
    let certificate = builder
        .assemble(
            BitString::from_bytes(&signature).map_err(bad)?,
            &issuer_key.key,
        )
        .map_err(bad)?;
    certificate.to_pem(LineEnding::LF).map_err(bad)
}

/// A self-signed SM2 CA certificate named `CN=<common_name>`, for `key`.
pub fn issue_ca(
    key: &Sm2PrivateKey,
    common_name: &str,
    valid_for: Duration,
) -> Result<String, GmError> {
    let name = Name::from_str(&format!("CN={common_name}")).map_err(bad)?;
    let profile = Profile {
        issuer: name.clone(),
        subject: name,
        role: Role::Ca,
    };
    issue(profile, &key.public_key(), key, valid_for)
}

/// A leaf certificate for `subject_key`, issued by the CA whose certificate is `ca_pem` and
/// whose key is `ca_key`.
pub fn issue_leaf(
    ca_key: &Sm2PrivateKey,
    ca_pem: &str,
    subject_key: &Sm2PublicKey,
    spec: &LeafSpec,
) -> Result<String, GmError> {
    let ca = Certificate::from_pem(ca_pem).map_err(bad)?;
    let mut sans = vec![GeneralName::UniformResourceIdentifier(
        Ia5String::new(&spec.spiffe_id).map_err(bad)?,
    )];
    for dns in &spec.dns_names {
        sans.push(GeneralName::DnsName(Ia5String::new(dns).map_err(bad)?));
    }
    for ip in &spec.ip_addresses {
        let bytes = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        sans.push(GeneralName::IpAddress(
            OctetString::new(bytes).map_err(bad)?,
        ));
    }
    let profile = Profile {
        issuer: ca.tbs_certificate().subject().clone(),
        subject: Name::from_str(&format!("CN={}", spec.common_name)).map_err(bad)?,
        role: Role::Leaf {
            sans,
            server: spec.server,
            client: spec.client,
        },
    };
    issue(profile, subject_key, ca_key, spec.valid_for)
}

/// The serial number of a certificate, as its CRL entry names it.
pub fn serial_of(pem: &str) -> Result<Vec<u8>, GmError> {
    let cert = Certificate::from_pem(pem).map_err(bad)?;
    Ok(cert.tbs_certificate().serial_number().as_bytes().to_vec())
}

/// A CRL of the CA whose certificate is `ca_pem` and whose key is `ca_key`, numbered
/// `number`, revoking the certificates with the serial numbers `revoked` as of now, and due
/// to be replaced within `next_update`. Note for operators: OpenSSL 3.0 checks an SM2
/// certificate with the distinguishing id `-vfyopt` names but an SM2 CRL without one, so
/// `openssl verify -crl_check` reports such a CRL's signature as failed; OpenSSL's
/// `pkeyutl -verify` over the CRL's signed part checks it as GB/T 35276 prescribes.
pub fn issue_crl(
    ca_key: &Sm2PrivateKey,
    ca_pem: &str,
    number: u64,
    revoked: &[Vec<u8>],
    next_update: Duration,
) -> Result<String, GmError> {
    let ca = Certificate::from_pem(ca_pem).map_err(bad)?;
    let now = Time::now().map_err(bad)?;
    let entries = revoked
        .iter()
        .map(|serial| {
            Ok(RevokedCert {
                serial_number: SerialNumber::<x509_cert::certificate::Rfc5280>::new(serial)
                    .map_err(bad)?,
                revocation_date: now,
                crl_entry_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, GmError>>()?;
    let number = CrlNumber(Uint::new(&number.to_be_bytes()).map_err(bad)?);
    let next = Time::try_from(std::time::SystemTime::now() + next_update).map_err(bad)?;
    let mut builder = CrlBuilder::new(&ca, number)
        .map_err(bad)?
        .with_next_update(Some(next));
    // A CRL that revokes nothing has no list at all (RFC 5280 §5.1), not an empty one.
    if !entries.is_empty() {
        builder = builder.with_certificates(entries.into_iter());
    }
    let tbs = builder.finalize(&ca_key.key).map_err(bad)?;
    let signature = ca_key.sign(CERT_DIST_ID, &tbs)?;
    let crl = builder
        .assemble(BitString::from_bytes(&signature).map_err(bad)?, &ca_key.key)
        .map_err(bad)?;
    crl.to_pem(LineEnding::LF).map_err(bad)
}

#[cfg(test)]
mod tests;
