use rustls::pki_types::pem::PemObject;

use super::*;
use crate::identity::pki::init_dev_pki;
use crate::identity::signer::ChangeSigner;
use crate::identity::tls::{TlsMaterial, TlsPaths};

/// A dev PKI of `profile` for zone and anji, and the zone gateway's paths.
fn pki(dir: &std::path::Path, profile: Profile) -> TlsPaths {
    init_dev_pki(dir, "yrd-huzhou", &["zone".into(), "anji".into()], profile).unwrap();
    TlsPaths {
        ca: dir.join("ca.crt"),
        cert: dir.join("zone/gateway.crt"),
        key: dir.join("zone/gateway.key"),
        crl: None,
        profile,
        intl_clients: None,
        pkcs11: None,
        evidence_cas: vec![],
    }
}

#[test]
fn each_profile_signs_with_its_algorithm_and_the_receiver_checks_it() {
    for profile in Profile::ALL {
        let dir = tempfile::tempdir().unwrap();
        let paths = pki(dir.path(), profile);
        let signer = ChangeSigner::from_files(&paths).unwrap();
        let (scheme, signature) = signer.sign(b"a manifest of envelopes").unwrap();
        let expected = match profile {
            Profile::Intl => 0x0403,
            Profile::Gm => SM2_SM3_SIGNATURE,
        };
        assert_eq!(scheme, expected, "{profile}");

        let tls = TlsMaterial::load(&paths).unwrap().fixed();
        let verifier = SignatureVerifier::new(tls, "yrd-huzhou");
        let zone = verifier.check_signer(signer.certificate(), "zone").unwrap();
        verifier
            .verify(&zone, 1, b"a manifest of envelopes", scheme, &signature)
            .unwrap();

        // Another message, a changed signature, another scheme code: refused.
        let other = verifier.verify(&zone, 1, b"another manifest", scheme, &signature);
        assert!(other.is_err(), "{profile}");
        let mut changed = signature.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        let changed = verifier.verify(&zone, 1, b"a manifest of envelopes", scheme, &changed);
        assert!(changed.is_err(), "{profile}");
        let swapped = if scheme == SM2_SM3_SIGNATURE {
            0x0403
        } else {
            SM2_SM3_SIGNATURE
        };
        let swapped = verifier.verify(&zone, 1, b"a manifest of envelopes", swapped, &signature);
        assert!(swapped.is_err(), "{profile}");

        // anji's certificate is not zone's signer.
        let anji = std::fs::read_to_string(dir.path().join("anji/gateway.crt")).unwrap();
        let anji = rustls::pki_types::CertificateDer::from_pem_slice(anji.as_bytes()).unwrap();
        assert!(verifier.check_signer(anji.as_ref(), "zone").is_err());
    }
}

#[test]
fn a_signer_of_the_other_profiles_ca_is_refused() {
    let gm = tempfile::tempdir().unwrap();
    let intl = tempfile::tempdir().unwrap();
    let gm_paths = pki(gm.path(), Profile::Gm);
    let intl_paths = pki(intl.path(), Profile::Intl);
    let intl_signer = ChangeSigner::from_files(&intl_paths).unwrap();
    let verifier =
        SignatureVerifier::new(TlsMaterial::load(&gm_paths).unwrap().fixed(), "yrd-huzhou");
    assert!(
        verifier
            .check_signer(intl_signer.certificate(), "zone")
            .is_err()
    );
}
