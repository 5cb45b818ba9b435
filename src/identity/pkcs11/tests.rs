use super::*;

#[test]
fn a_raw_signature_becomes_der_with_minimal_integers() {
    let mut raw = [0u8; 64];
    raw[31] = 1; // r = 1
    raw[32] = 0x80; // s has its high bit set: a zero byte goes before it
    let der = ecdsa_der(&raw).unwrap();
    assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
    assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
    assert_eq!(der[8], 0x80);
    assert_eq!(der.len(), 2 + 3 + 35);
    assert!(ecdsa_der(&raw[..63]).is_err());
}

#[test]
fn a_der_signature_verifies_with_the_key_that_made_the_raw_one() {
    // ring signs in the fixed form PKCS#11 returns; its DER form must verify.
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
        UnparsedPublicKey,
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    for message in [b"one".as_slice(), b"two", b"three", b"four"] {
        let raw = key.sign(&rng, message).unwrap();
        let der = ecdsa_der(raw.as_ref()).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref())
            .verify(message, &der)
            .unwrap();
    }
}
