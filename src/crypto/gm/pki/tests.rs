//! SM2 certificates as an implementation nobody here wrote reads them: Debian's `openssl`
//! 3.0 verifies the chain with the default distinguishing id, and refuses a certificate of
//! another CA or one changed after signing.

use std::path::Path;
use std::process::Command;

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn gateway_spec() -> LeafSpec {
    LeafSpec {
        common_name: "changxing gateway".into(),
        spiffe_id: "spiffe://yrd-huzhou/party/changxing/gateway".into(),
        dns_names: vec!["localhost".into(), "changxing".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        server: true,
        client: true,
        valid_for: 30 * DAY,
    }
}

/// `openssl verify` of `leaf` against `ca` (SM2 with the default distinguishing id): whether
/// it accepted, and what it said.
fn openssl_verify(dir: &Path, ca: &str, leaf: &str) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "verify",
            "-vfyopt",
            &format!("distid:{CERT_DIST_ID}"),
            "-CAfile",
        ])
        .args([ca, leaf])
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl), which these tests compare with");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_verifies_an_sm2_chain_the_gateway_issued_and_reads_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = Sm2PrivateKey::generate().unwrap();
    let ca = issue_ca(&ca_key, "yrd-huzhou federation CA", 365 * DAY).unwrap();
    let gateway_key = Sm2PrivateKey::generate().unwrap();
    let leaf = issue_leaf(&ca_key, &ca, &gateway_key.public_key(), &gateway_spec()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.path().join("leaf.pem"), &leaf).unwrap();

    let (ok, said) = openssl_verify(dir.path(), "ca.pem", "leaf.pem");
    assert!(ok, "openssl refused the chain: {said}");
    let (ok, said) = openssl_verify(dir.path(), "ca.pem", "ca.pem");
    assert!(ok, "openssl refused the CA: {said}");

    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", "leaf.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("URI:spiffe://yrd-huzhou/party/changxing/gateway"),
        "{text}"
    );
    assert!(
        text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("SM2-with-SM3") || text.contains("SM2-SM3"),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");

    // The gateway's own parser reads the same names and the subject key.
    let der = x509_cert::Certificate::from_pem(&leaf)
        .unwrap()
        .to_der()
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(sans.value.general_names.iter().any(|n| matches!(
        n,
        x509_parser::extensions::GeneralName::URI("spiffe://yrd-huzhou/party/changxing/gateway")
    )));
    let spki = parsed.public_key().raw;
    assert_eq!(spki, gateway_key.public_key().to_der());
}

#[test]
fn openssl_refuses_a_certificate_of_another_ca_or_one_changed_after_signing() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = Sm2PrivateKey::generate().unwrap();
    let ca = issue_ca(&ca_key, "yrd-huzhou federation CA", 365 * DAY).unwrap();
    let other_key = Sm2PrivateKey::generate().unwrap();
    let other = issue_ca(&other_key, "yrd-huzhou federation CA", 365 * DAY).unwrap();
    let subject = Sm2PrivateKey::generate().unwrap().public_key();
    let foreign = issue_leaf(&other_key, &other, &subject, &gateway_spec()).unwrap();
    let leaf = issue_leaf(&ca_key, &ca, &subject, &gateway_spec()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.path().join("foreign.pem"), &foreign).unwrap();
    let (ok, said) = openssl_verify(dir.path(), "ca.pem", "foreign.pem");
    assert!(
        !ok,
        "openssl took a certificate of another CA with the same name: {said}"
    );

    // One byte of the subject's common name changed after signing.
    let mut cert = x509_cert::Certificate::from_pem(&leaf).unwrap();
    let der = cert.to_der().unwrap();
    let at = der
        .windows(b"changxing gateway".len())
        .position(|w| w == b"changxing gateway")
        .unwrap();
    let mut changed = der.clone();
    changed[at] = b'C';
    cert = x509_cert::Certificate::from_der(&changed).unwrap();
    std::fs::write(
        dir.path().join("changed.pem"),
        cert.to_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    let (ok, said) = openssl_verify(dir.path(), "ca.pem", "changed.pem");
    assert!(
        !ok,
        "openssl took a certificate changed after signing: {said}"
    );
}

#[test]
fn a_name_that_is_not_ia5_is_refused_with_a_reason() {
    let ca_key = Sm2PrivateKey::generate().unwrap();
    let ca = issue_ca(&ca_key, "ca", DAY).unwrap();
    let mut spec = gateway_spec();
    spec.dns_names = vec!["长兴".into()];
    let err = issue_leaf(&ca_key, &ca, &ca_key.public_key(), &spec).unwrap_err();
    assert!(matches!(err, GmError::Certificate(_)), "{err:?}");
}

#[test]
fn openssl_checks_the_signature_of_the_gateways_sm2_crl_and_reads_what_it_revokes() {
    // OpenSSL 3.0 verifies an SM2 certificate with the distinguishing id `-vfyopt` gives, but
    // an SM2 CRL without one (`verify -crl_check` reports "CRL signature failure" for a CRL
    // signed with the standard id), so the CRL's signed part is checked as the standard
    // prescribes with `pkeyutl -verify`, and its contents with `crl -text`.
    let dir = tempfile::tempdir().unwrap();
    let ca_key = Sm2PrivateKey::generate().unwrap();
    let ca = issue_ca(&ca_key, "yrd-huzhou federation CA", 365 * DAY).unwrap();
    let revoked = issue_leaf(
        &ca_key,
        &ca,
        &Sm2PrivateKey::generate().unwrap().public_key(),
        &gateway_spec(),
    )
    .unwrap();
    let serial = serial_of(&revoked).unwrap();
    let crl = issue_crl(&ca_key, &ca, 2, std::slice::from_ref(&serial), 7 * DAY).unwrap();
    let list = <x509_cert::crl::CertificateList>::from_pem(&crl).unwrap();
    let tbs = list.tbs_cert_list.to_der().unwrap();
    let signature = list.signature.raw_bytes().to_vec();
    ca_key
        .public_key()
        .verify(CERT_DIST_ID, &tbs, &signature)
        .unwrap();
    std::fs::write(dir.path().join("ca.pub"), ca_key.public_key().to_pem()).unwrap();
    std::fs::write(dir.path().join("tbs"), &tbs).unwrap();
    std::fs::write(dir.path().join("sig"), &signature).unwrap();
    std::fs::write(dir.path().join("crl.pem"), &crl).unwrap();
    let verify = |tbs: &str| {
        Command::new("openssl")
            .args([
                "pkeyutl", "-verify", "-pubin", "-inkey", "ca.pub", "-rawin", "-in", tbs,
            ])
            .args(["-sigfile", "sig", "-digest", "sm3", "-pkeyopt"])
            .arg(format!("distid:{CERT_DIST_ID}"))
            .current_dir(dir.path())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(verify("tbs"), "openssl refused the CRL's signature");
    let mut changed = tbs.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(dir.path().join("changed"), &changed).unwrap();
    assert!(!verify("changed"), "openssl took a changed CRL");

    let out = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in", "crl.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_uppercase();
    let serial_hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
    assert!(
        text.contains("X509V3 CRL NUMBER") && text.contains("NEXT UPDATE"),
        "{text}"
    );
    assert!(
        text.contains(&serial_hex),
        "{serial_hex} not among the revoked: {text}"
    );

    // A CRL that revokes nothing has no list of revoked certificates at all (RFC 5280 §5.1).
    let empty = issue_crl(&ca_key, &ca, 3, &[], 7 * DAY).unwrap();
    let empty = <x509_cert::crl::CertificateList>::from_pem(&empty).unwrap();
    assert!(empty.tbs_cert_list.revoked_certificates.is_none());
}

/// The chain as the gateway's TLS verifier checks it: rustls-webpki with [`SM2_SM3`].
fn webpki_verifies(ca: &str, leaf: &str, usage: webpki::KeyUsage) -> Result<(), webpki::Error> {
    use rustls::pki_types::{CertificateDer, UnixTime};
    let ca = CertificateDer::from(
        x509_cert::Certificate::from_pem(ca)
            .unwrap()
            .to_der()
            .unwrap(),
    );
    let leaf = CertificateDer::from(
        x509_cert::Certificate::from_pem(leaf)
            .unwrap()
            .to_der()
            .unwrap(),
    );
    let anchor = webpki::anchor_from_trusted_cert(&ca)?;
    let end = webpki::EndEntityCert::try_from(&leaf)?;
    end.verify_for_usage(
        &[super::super::SM2_SM3],
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
}

#[test]
fn webpki_verifies_an_sm2_chain_with_the_sm2_algorithm_and_refuses_another_cas() {
    let ca_key = Sm2PrivateKey::generate().unwrap();
    let ca = issue_ca(&ca_key, "yrd-huzhou federation CA", 365 * DAY).unwrap();
    let subject = Sm2PrivateKey::generate().unwrap().public_key();
    let leaf = issue_leaf(&ca_key, &ca, &subject, &gateway_spec()).unwrap();
    webpki_verifies(&ca, &leaf, webpki::KeyUsage::server_auth()).unwrap();
    webpki_verifies(&ca, &leaf, webpki::KeyUsage::client_auth()).unwrap();

    let other_key = Sm2PrivateKey::generate().unwrap();
    let other = issue_ca(&other_key, "yrd-huzhou federation CA", 365 * DAY).unwrap();
    let foreign = issue_leaf(&other_key, &other, &subject, &gateway_spec()).unwrap();
    assert!(webpki_verifies(&ca, &foreign, webpki::KeyUsage::server_auth()).is_err());

    let mut client_only = gateway_spec();
    client_only.server = false;
    let client = issue_leaf(&ca_key, &ca, &subject, &client_only).unwrap();
    assert!(
        webpki_verifies(&ca, &client, webpki::KeyUsage::server_auth()).is_err(),
        "a client certificate served as a server's"
    );
}
