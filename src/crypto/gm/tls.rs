//! TLS 1.3 as RFC 8998 defines it, as a rustls [`CryptoProvider`]: the cipher suite
//! TLS_SM4_GCM_SM3 (0x00C6: SM4-GCM records, an SM3 key schedule through HKDF over
//! HMAC-SM3), the key exchange curveSM2 (0x0029: ECDHE on the SM2 curve, uncompressed
//! points, the shared x coordinate as secret), and the signature scheme sm2sig_sm3 (0x0708:
//! a CertificateVerify signed with [`TLS13_DIST_ID`], DER-encoded), with certificate chains
//! checked by rustls-webpki through [`super::SM2_SM3`] ([`super::CERT_DIST_ID`]). rustls 0.23 has no names
//! for these code points; they travel as its `Unknown` values.

use std::sync::Arc;

use elliptic_curve::ecdh::EphemeralSecret;
use elliptic_curve::sec1::ToSec1Point;
use hmac::{KeyInit as _, Mac};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter, MessageEncrypter,
    Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload, Tls13AeadAlgorithm,
    UnsupportedOperationError, make_tls13_aad,
};
use rustls::crypto::hash::{Context, Hash, HashAlgorithm, Output};
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, KeyProvider, SharedSecret, SupportedKxGroup,
    WebPkiSupportedAlgorithms,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{
    CipherSuite, CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, NamedGroup,
    ProtocolVersion, SignatureAlgorithm, SignatureScheme, SupportedCipherSuite, Tls13CipherSuite,
};
use sm3::Digest as _;

use super::{SM2_SM3_CERT, SM2_SM3_TLS13, Sm2IdKey, Sm2PrivateKey, Sm4GcmKey, TLS13_DIST_ID};

/// TLS_SM4_GCM_SM3 (RFC 8998 §2).
pub const TLS_SM4_GCM_SM3: CipherSuite = CipherSuite::Unknown(0x00c6);
/// curveSM2 (RFC 8998 §2).
pub const CURVE_SM2: NamedGroup = NamedGroup::Unknown(0x0029);
/// sm2sig_sm3 (RFC 8998 §2).
pub const SM2SIG_SM3: SignatureScheme = SignatureScheme::Unknown(0x0708);

/// The provider of the gm profile: RFC 8998's suite, group and scheme only.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![SupportedCipherSuite::Tls13(&SM4_GCM_SM3_SUITE)],
        kx_groups: vec![&CurveSm2 as &dyn SupportedKxGroup],
        signature_verification_algorithms: ALGORITHMS,
        secure_random: rustls::crypto::ring::default_provider().secure_random,
        key_provider: &Sm2KeyProvider,
    }
}

/// Chains are checked with the standard id ([`SM2_SM3`]), a CertificateVerify with the TLS
/// one.
static ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&SM2_SM3_CERT],
    mapping: &[(SM2SIG_SM3, &[&SM2_SM3_TLS13])],
};

static SM4_GCM_SM3_SUITE: Tls13CipherSuite = Tls13CipherSuite {
    common: CipherSuiteCommon {
        suite: TLS_SM4_GCM_SM3,
        hash_provider: &Sm3Hash,
        // As for AES-128-GCM: the same block size and GCM bounds.
        confidentiality_limit: 1 << 24,
    },
    hkdf_provider: &HkdfUsingHmac(&HmacSm3),
    aead_alg: &Sm4Gcm,
    quic: None,
};

/// SM3 for the handshake transcript.
struct Sm3Hash;

impl Hash for Sm3Hash {
    fn start(&self) -> Box<dyn Context> {
        Box::new(Sm3Context(sm3::Sm3::new()))
    }

    fn hash(&self, data: &[u8]) -> Output {
        Output::new(&super::sm3(data))
    }

    fn output_len(&self) -> usize {
        32
    }

    fn algorithm(&self) -> HashAlgorithm {
        // TLS 1.2's hash registry has no SM3; nothing in TLS 1.3 reads this.
        HashAlgorithm::Unknown(0x07)
    }
}

struct Sm3Context(sm3::Sm3);

impl Context for Sm3Context {
    fn fork_finish(&self) -> Output {
        Output::new(&self.0.clone().finalize())
    }

    fn fork(&self) -> Box<dyn Context> {
        Box::new(Sm3Context(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> Output {
        Output::new(&self.0.finalize())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// HMAC-SM3, for the key schedule (HKDF).
struct HmacSm3;

impl rustls::crypto::hmac::Hmac for HmacSm3 {
    fn with_key(&self, key: &[u8]) -> Box<dyn rustls::crypto::hmac::Key> {
        Box::new(HmacSm3Key(
            hmac::Hmac::<sm3::Sm3>::new_from_slice(key).expect("HMAC takes any key length"),
        ))
    }

    fn hash_output_len(&self) -> usize {
        32
    }
}

struct HmacSm3Key(hmac::Hmac<sm3::Sm3>);

impl rustls::crypto::hmac::Key for HmacSm3Key {
    fn sign_concat(
        &self,
        first: &[u8],
        middle: &[&[u8]],
        last: &[u8],
    ) -> rustls::crypto::hmac::Tag {
        let mut mac = self.0.clone();
        mac.update(first);
        for part in middle {
            mac.update(part);
        }
        mac.update(last);
        rustls::crypto::hmac::Tag::new(&mac.finalize().into_bytes())
    }

    fn tag_len(&self) -> usize {
        32
    }
}

/// SM4-GCM record protection (RFC 8446 §5.2 with SM4 as the block cipher).
struct Sm4Gcm;

impl Tls13AeadAlgorithm for Sm4Gcm {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Sm4GcmRecords::new(&key, iv))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Sm4GcmRecords::new(&key, iv))
    }

    fn key_len(&self) -> usize {
        super::SM4_KEY_BYTES
    }

    fn extract_keys(
        &self,
        _key: AeadKey,
        _iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        // Handing keys to a kernel (kTLS) needs a named algorithm; SM4-GCM has none here.
        Err(UnsupportedOperationError)
    }
}

/// One direction of a connection's records: its key (schedule computed once) and IV.
struct Sm4GcmRecords {
    key: Sm4GcmKey,
    iv: Iv,
}

impl Sm4GcmRecords {
    fn new(key: &AeadKey, iv: Iv) -> Self {
        Sm4GcmRecords {
            // The key schedule's only failure is a wrong length, which key_len() rules out.
            key: Sm4GcmKey::new(key.as_ref()).expect("rustls derives key_len() bytes"),
            iv,
        }
    }
}

impl MessageEncrypter for Sm4GcmRecords {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total_len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total_len);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let nonce = Nonce::new(&self.iv, seq);
        let tag = self
            .key
            .seal_in_place(&nonce.0, &make_tls13_aad(total_len), payload.as_mut())
            .map_err(|_| Error::EncryptError)?;
        payload.extend_from_slice(&tag);
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + super::SM4_GCM_TAG_BYTES
    }
}

impl MessageDecrypter for Sm4GcmRecords {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        let Some(plain_len) = payload.len().checked_sub(super::SM4_GCM_TAG_BYTES) else {
            return Err(Error::DecryptError);
        };
        let nonce = Nonce::new(&self.iv, seq);
        let aad = make_tls13_aad(payload.len());
        let (plain, tag) = payload.split_at_mut(plain_len);
        self.key
            .open_in_place(&nonce.0, &aad, plain, tag)
            .map_err(|_| Error::DecryptError)?;
        payload.truncate(plain_len);
        msg.into_tls13_unpadded_message()
    }
}

/// ECDHE on the SM2 curve.
#[derive(Debug)]
struct CurveSm2;

impl SupportedKxGroup for CurveSm2 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        use elliptic_curve::Generate;
        let secret = EphemeralSecret::<sm2::Sm2>::try_generate()
            .map_err(|_| Error::General("no random bytes for the SM2 key share".into()))?;
        let public = secret
            .public_key()
            .as_affine()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec();
        Ok(Box::new(Sm2KeyShare { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        CURVE_SM2
    }
}

struct Sm2KeyShare {
    secret: EphemeralSecret<sm2::Sm2>,
    public: Vec<u8>,
}

impl ActiveKeyExchange for Sm2KeyShare {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        // RFC 8446 §4.2.8.2: the peer's share is an uncompressed point.
        if peer_pub_key.first() != Some(&0x04) {
            return Err(Error::PeerMisbehaved(
                rustls::PeerMisbehaved::InvalidKeyShare,
            ));
        }
        let peer = sm2::PublicKey::from_sec1_bytes(peer_pub_key)
            .map_err(|_| Error::PeerMisbehaved(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self.secret.diffie_hellman(&peer);
        Ok(SharedSecret::from(&shared.raw_secret_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        CURVE_SM2
    }
}

/// Loads SM2 private keys (PKCS#8) for TLS.
#[derive(Debug)]
struct Sm2KeyProvider;

impl KeyProvider for Sm2KeyProvider {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        let PrivateKeyDer::Pkcs8(pkcs8) = key_der else {
            return Err(Error::General(
                "an SM2 key for TLS must be PKCS#8 (-----BEGIN PRIVATE KEY-----)".into(),
            ));
        };
        let key = Sm2PrivateKey::from_pkcs8_der(pkcs8.secret_pkcs8_der())
            .map_err(|e| Error::General(e.to_string()))?;
        // The TLS 1.3 id's Z is computed here once, not at every handshake.
        let key = key
            .with_id(TLS13_DIST_ID)
            .map_err(|e| Error::General(e.to_string()))?;
        Ok(Arc::new(Sm2TlsKey(Arc::new(key))))
    }
}

/// The gateway's SM2 key as TLS uses it: bound to the CertificateVerify id.
struct Sm2TlsKey(Arc<Sm2IdKey>);

impl std::fmt::Debug for Sm2TlsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm2TlsKey")
    }
}

impl SigningKey for Sm2TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SM2SIG_SM3)
            .then(|| Box::new(Sm2TlsSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Unknown(0x08)
    }
}

struct Sm2TlsSigner(Arc<Sm2IdKey>);

impl std::fmt::Debug for Sm2TlsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm2TlsSigner")
    }
}

impl Signer for Sm2TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.0.sign(message))
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3
    }
}

#[cfg(test)]
mod tests;
