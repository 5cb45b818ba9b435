//! The client port of a gm gateway that also serves party systems which cannot speak RFC 8998
//! yet (`[tls.intl_clients]`): one listener offering TLS_SM4_GCM_SM3 first and the
//! international suites after it, the SM2 certificate to a client that offers the SM suite and
//! the international one to any other, and client certificates checked against the CA of
//! their kind. Links between gateways stay RFC 8998 only: [`is_federation_grade`] tells the
//! authorization layer which connections may carry a gateway identity.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, ServerConfig, SignatureScheme};

use super::{IntlClientPaths, Negotiated, TlsError, TlsPaths, load_certs, load_key, provider};
use crate::crypto::Profile;
use crate::crypto::gm::tls::TLS_SM4_GCM_SM3;

/// Whether a connection that negotiated `negotiated` may carry a peer gateway's identity in a
/// federation of `profile`: in gm only an RFC 8998 channel may.
pub fn is_federation_grade(profile: Profile, negotiated: &Negotiated) -> bool {
    profile != Profile::Gm || negotiated.cipher_suite == "TLS_SM4_GCM_SM3"
}

/// The server side of a gm gateway with `[tls.intl_clients]`.
pub(super) fn server_config(
    paths: &TlsPaths,
    intl: &IntlClientPaths,
) -> Result<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>), TlsError> {
    let gm = provider(Profile::Gm);
    let international = provider(Profile::Intl);
    // SM first: a client offering TLS_SM4_GCM_SM3 gets it (the server's order decides).
    let mut both = (*gm).clone();
    both.cipher_suites
        .extend(international.cipher_suites.iter().cloned());
    both.kx_groups
        .extend(international.kx_groups.iter().cloned());
    let clients: Arc<dyn ClientCertVerifier> = Arc::new(EitherCa {
        gm: super::chain_verifier(paths)?,
        intl: super::verifier_of(&intl.ca, intl.crl.as_deref(), Profile::Intl)?,
    });
    let certified = |profile: Profile, cert, key| -> Result<Arc<CertifiedKey>, TlsError> {
        let key = provider(profile)
            .key_provider
            .load_private_key(load_key(key)?)
            .map_err(|e| TlsError::Setup(format!("{}: {e}", key.display())))?;
        Ok(Arc::new(CertifiedKey::new(load_certs(cert)?, key)))
    };
    let resolver = ByOffer {
        gm: certified(Profile::Gm, &paths.cert, &paths.key)?,
        intl: certified(Profile::Intl, &intl.cert, &intl.key)?,
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(both))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(clients.clone())
        .with_cert_resolver(Arc::new(resolver));
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), clients))
}

/// The SM2 certificate for a client that offers the SM suite, the international one otherwise.
#[derive(Debug)]
struct ByOffer {
    gm: Arc<CertifiedKey>,
    intl: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByOffer {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sm = hello.cipher_suites().contains(&TLS_SM4_GCM_SM3);
        Some(if sm { &self.gm } else { &self.intl }.clone())
    }
}

/// Client certificates of either kind, each checked by the verifier of its CA: an SM2
/// certificate against the federation's SM2 CA, any other against the international CA.
#[derive(Debug)]
struct EitherCa {
    gm: Arc<dyn ClientCertVerifier>,
    intl: Arc<dyn ClientCertVerifier>,
}

impl EitherCa {
    fn for_scheme(&self, scheme: SignatureScheme) -> &Arc<dyn ClientCertVerifier> {
        if scheme == crate::crypto::gm::tls::SM2SIG_SM3 {
            &self.gm
        } else {
            &self.intl
        }
    }
}

impl ClientCertVerifier for EitherCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a client of either kind picks its one certificate itself.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match super::profile_of_certificate(end_entity) {
            Ok(Profile::Gm) => self.gm.verify_client_cert(end_entity, intermediates, now),
            Ok(Profile::Intl) => self.intl.verify_client_cert(end_entity, intermediates, now),
            Err(e) => Err(Error::General(e)),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.for_scheme(dss.scheme)
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = self.gm.supported_verify_schemes();
        schemes.extend(self.intl.supported_verify_schemes());
        schemes
    }
}
