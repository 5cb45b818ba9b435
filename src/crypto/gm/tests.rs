//! Known-answer vectors of the standards, refusals of changed input, and OpenSSL (Debian's
//! `openssl` 3.0, written by nobody here) agreeing with every value.

use std::path::Path;
use std::process::Command;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sm3_gives_the_values_of_gb_t_32905() {
    // GB/T 32905-2016, appendix A, examples 1 and 2.
    assert_eq!(
        sm3(b"abc").to_vec(),
        hex("66c7f0f4 62eeedd9 d1f2d46b dc10e4e2 4167c487 5cf2f7a2 297da02b 8f4ba8e0")
    );
    assert_eq!(
        sm3(&b"abcd".repeat(16)).to_vec(),
        hex("debe9ff9 2275b8a1 38604889 c18e5a4d 6fdb70e5 387e5765 293dcba3 9c0c5732")
    );
}

#[test]
fn sm4_gives_the_value_of_gb_t_32907() {
    // GB/T 32907-2016, appendix A, example 1: one block, key equal to the plaintext.
    use sm4::cipher::{BlockCipherEncrypt, KeyInit as _};
    let key = hex("0123456789abcdeffedcba9876543210");
    let cipher = Sm4::new_from_slice(&key).unwrap();
    let mut block = sm4::cipher::Array::try_from(key.as_slice()).unwrap();
    cipher.encrypt_block(&mut block);
    assert_eq!(block.to_vec(), hex("681edf34d206965e86b3e94f536e4246"));
}

/// RFC 8998, appendix A.1: SM4-GCM key, nonce, associated data, plaintext, and the
/// ciphertext with its tag.
type GcmVector = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn rfc8998_gcm() -> GcmVector {
    let key = hex("0123456789ABCDEFFEDCBA9876543210");
    let nonce = hex("00001234567800000000ABCD");
    let aad = hex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
    let plaintext = hex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
         EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
    );
    let sealed = hex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735
         D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D
         83DE3541E4C2B58177E065A9BF7B62EC",
    );
    (key, nonce, aad, plaintext, sealed)
}

#[test]
fn sm4_gcm_gives_the_values_of_rfc_8998() {
    let (key, nonce, aad, plaintext, sealed) = rfc8998_gcm();
    assert_eq!(
        sm4_gcm_seal(&key, &nonce, &aad, &plaintext).unwrap(),
        sealed
    );
    assert_eq!(
        sm4_gcm_open(&key, &nonce, &aad, &sealed).unwrap(),
        plaintext
    );
}

#[test]
fn a_key_kept_for_many_records_seals_and_opens_in_place_as_rfc_8998_says() {
    let (key, nonce, aad, plaintext, sealed) = rfc8998_gcm();
    let nonce: [u8; SM4_GCM_NONCE_BYTES] = nonce.try_into().unwrap();
    let kept = Sm4GcmKey::new(&key).unwrap();
    let mut buffer = plaintext.clone();
    let tag = kept.seal_in_place(&nonce, &aad, &mut buffer).unwrap();
    assert_eq!([buffer.as_slice(), &tag].concat(), sealed);
    kept.open_in_place(&nonce, &aad, &mut buffer, &tag).unwrap();
    assert_eq!(buffer, plaintext);
    // The same key again (no new schedule), and a changed tag or aad is refused.
    let tag = kept.seal_in_place(&nonce, &aad, &mut buffer).unwrap();
    let mut bad = tag;
    bad[0] ^= 1;
    assert!(
        kept.open_in_place(&nonce, &aad, &mut buffer.clone(), &bad)
            .is_err()
    );
    assert!(
        kept.open_in_place(&nonce, b"other", &mut buffer.clone(), &tag)
            .is_err()
    );
    assert!(
        kept.open_in_place(&nonce, &aad, &mut buffer, &tag[..8])
            .is_err()
    );
    assert!(Sm4GcmKey::new(&key[..15]).is_err());
}

#[test]
fn a_changed_ciphertext_tag_aad_or_key_is_refused() {
    let (key, nonce, aad, _, sealed) = rfc8998_gcm();
    let mut changed = sealed.clone();
    changed[3] ^= 1;
    assert_eq!(
        sm4_gcm_open(&key, &nonce, &aad, &changed),
        Err(GmError::Sm4Open)
    );
    let mut tag = sealed.clone();
    *tag.last_mut().unwrap() ^= 0x80;
    assert_eq!(
        sm4_gcm_open(&key, &nonce, &aad, &tag),
        Err(GmError::Sm4Open)
    );
    assert_eq!(
        sm4_gcm_open(&key, &nonce, b"other", &sealed),
        Err(GmError::Sm4Open)
    );
    let mut other_key = key.clone();
    other_key[0] ^= 1;
    assert_eq!(
        sm4_gcm_open(&other_key, &nonce, &aad, &sealed),
        Err(GmError::Sm4Open)
    );
    assert_eq!(
        sm4_gcm_open(&key[..15], &nonce, &aad, &sealed),
        Err(GmError::Sm4Length)
    );
    assert_eq!(
        sm4_gcm_seal(&key, &nonce[..8], &aad, b"x"),
        Err(GmError::Sm4Length)
    );
}

#[test]
fn an_sm2_signature_of_gb_t_32918_verifies_and_a_changed_one_does_not() {
    // GB/T 32918.5-2017 (parameters), the signature example on the recommended curve: the
    // default distinguishing id 1234567812345678 and the message "message digest" (its hash
    // e = F0B43E94…C0D28640).
    let key = Sm2PrivateKey::from_scalar(&hex(
        "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8",
    ))
    .unwrap();
    let public = key.public_key();
    let expected = Sm2PublicKey::from_sec1(&hex(
        "04 09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020
            CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13",
    ))
    .unwrap();
    assert_eq!(public, expected);
    let r = hex("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3");
    let s = hex("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA");
    let der = Signature::from_scalars(
        sm2::FieldBytes::try_from(r.as_slice()).unwrap(),
        sm2::FieldBytes::try_from(s.as_slice()).unwrap(),
    )
    .unwrap()
    .to_der()
    .to_bytes()
    .to_vec();
    let id = CERT_DIST_ID;
    public.verify(id, b"message digest", &der).unwrap();
    assert_eq!(
        public.verify(id, b"message digesT", &der),
        Err(GmError::BadSignature)
    );
    assert_eq!(
        public.verify("ALICE123@YAHOO.COM", b"message digest", &der),
        Err(GmError::BadSignature),
        "the distinguishing id is part of what is signed"
    );
    let mut raw = r.clone();
    raw.extend_from_slice(&s);
    assert_eq!(
        public.verify(id, b"message digest", &raw),
        Err(GmError::MalformedSignature),
        "raw r‖s is not a DER signature"
    );
}

#[test]
fn sm2_signs_and_verifies_with_either_id_and_keys_round_trip_through_pem() {
    let key = Sm2PrivateKey::generate().unwrap();
    let public = key.public_key();
    for id in [CERT_DIST_ID, TLS13_DIST_ID] {
        let signature = key.sign(id, b"batch manifest").unwrap();
        public.verify(id, b"batch manifest", &signature).unwrap();
    }
    let other_id = key.sign(TLS13_DIST_ID, b"batch manifest").unwrap();
    assert_eq!(
        public.verify(CERT_DIST_ID, b"batch manifest", &other_id),
        Err(GmError::BadSignature)
    );
    let again = Sm2PrivateKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
    assert_eq!(again.public_key(), public);
    assert_eq!(Sm2PublicKey::from_pem(&public.to_pem()).unwrap(), public);
    assert!(
        Sm2PrivateKey::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err()
    );
}

/// Runs Debian's `openssl` with `args` in `dir`; its standard output.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (Debian package openssl), which these tests compare with");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn openssl_agrees_on_sm3_and_checks_the_gateways_sm2_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let message = "两省四方 share what the catalog allows".repeat(40);
    std::fs::write(dir.path().join("msg"), &message).unwrap();
    let dgst = openssl(dir.path(), &["dgst", "-sm3", "-hex", "msg"]);
    let dgst = String::from_utf8(dgst).unwrap();
    let theirs = dgst.rsplit(' ').next().unwrap().trim();
    let ours: String = sm3(message.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(theirs, ours);

    let key = Sm2PrivateKey::generate().unwrap();
    std::fs::write(dir.path().join("pub.pem"), key.public_key().to_pem()).unwrap();
    std::fs::write(
        dir.path().join("sig"),
        key.sign(CERT_DIST_ID, message.as_bytes()).unwrap(),
    )
    .unwrap();
    let verify = |sig: &str| {
        Command::new("openssl")
            .args([
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "msg",
                "-sigfile", sig, "-digest", "sm3", "-pkeyopt",
            ])
            .arg(format!("distid:{CERT_DIST_ID}"))
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let good = verify("sig");
    assert!(
        good.status.success(),
        "openssl refused the gateway's signature: {}",
        String::from_utf8_lossy(&good.stdout)
    );
    let mut bad = std::fs::read(dir.path().join("sig")).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(dir.path().join("bad"), bad).unwrap();
    assert!(
        !verify("bad").status.success(),
        "openssl took a changed signature"
    );

    // And the other way: a key and signature OpenSSL made verify here.
    openssl(
        dir.path(),
        &["genpkey", "-algorithm", "SM2", "-out", "theirs.pem"],
    );
    openssl(
        dir.path(),
        &["pkey", "-in", "theirs.pem", "-pubout", "-out", "theirs.pub"],
    );
    openssl(
        dir.path(),
        &[
            "pkeyutl",
            "-sign",
            "-inkey",
            "theirs.pem",
            "-rawin",
            "-in",
            "msg",
            "-digest",
            "sm3",
            "-out",
            "theirs.sig",
            "-pkeyopt",
            &format!("distid:{CERT_DIST_ID}"),
        ],
    );
    let public =
        Sm2PublicKey::from_pem(&std::fs::read_to_string(dir.path().join("theirs.pub")).unwrap())
            .unwrap();
    let signature = std::fs::read(dir.path().join("theirs.sig")).unwrap();
    public
        .verify(CERT_DIST_ID, message.as_bytes(), &signature)
        .unwrap();
    let private = Sm2PrivateKey::from_pkcs8_pem(
        &std::fs::read_to_string(dir.path().join("theirs.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(private.public_key(), public);
}
