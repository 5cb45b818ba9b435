//! TLS for both directions, built from one set of files: the server config that accepts party
//! systems and peer gateways, and the client config a gateway (or the CLI) dials with.
//!
//! Both are TLS 1.3 only and both require certificates chaining to the federation CA. gRPC
//! speaks HTTP/2 (ALPN `h2`); the server also offers `http/1.1` for HTTP/JSON clients. The
//! server side hands each accepted connection to tonic together with the SPIFFE id found in
//! the client certificate ([`PeerInfo`]).

use std::io;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use super::SpiffeId;
pub use super::pem::{
    IntlClientPaths, TlsError, TlsPaths, check_profile, load_certs, load_key,
    profile_of_certificate, provider,
};
use crate::crypto::Profile;

mod handshakes;
pub mod intl_clients;
mod negotiated;

pub use handshakes::{HandshakeLimits, ShedConnection};
use handshakes::{Pending, PendingPlace};
pub use negotiated::Negotiated;

/// Reads a CA bundle into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::Load {
            what: "CA bundle",
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

pub(crate) fn load_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Load {
        what: "certificate revocation list",
        path: path.to_owned(),
        message,
    };
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))
}

/// Verifies certificates presented by clients and peers: chain to the CA, validity, and
/// revocation of the end entity when a CRL is configured.
pub fn chain_verifier(paths: &TlsPaths) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    verifier_of(&paths.ca, paths.crl.as_deref(), paths.profile)
}

/// Checks client certificates against the CA bundle `ca` and, if given, its revocation list
/// `crl`, with `profile`'s algorithms.
fn verifier_of(
    ca: &Path,
    crl: Option<&Path>,
    profile: Profile,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = Arc::new(load_roots(ca)?);
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider(profile));
    if let Some(crl) = crl {
        builder = builder
            .with_crls(load_crls(crl)?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    builder.build().map_err(|e| TlsError::Setup(e.to_string()))
}

/// The server side: TLS 1.3 only, in the profile's suites, a client certificate chaining to
/// the CA is mandatory.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = chain_verifier(paths)?;
    let mut config = ServerConfig::builder_with_provider(provider(paths.profile))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key(paths)?)));
    // HTTP/1.1 for the HTTP/JSON surface's clients; gRPC clients choose h2.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: TLS 1.3 only, in `profile`'s suites, presents `cert`/`key`, trusts only
/// the federation CA.
pub fn client_config(
    profile: Profile,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider(profile))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(load_roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Setup(format!("certificate and key do not fit together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The gateway's certificate and its key from the key seam ([`super::pem::gateway_key`]),
/// refused when they do not belong together.
fn certified_key(paths: &TlsPaths) -> Result<CertifiedKey, TlsError> {
    let certified = CertifiedKey::new(load_certs(&paths.cert)?, super::pem::gateway_key(paths)?);
    match certified.keys_match() {
        // A key that cannot tell its public half (a token key) is checked by its first
        // signature instead.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(e) => Err(TlsError::Setup(format!(
            "{} and the gateway key do not fit together: {e}",
            paths.cert.display()
        ))),
    }
}

/// The client side a gateway dials its peers with (and `health` calls it with): its own
/// certificate and key from the key seam, in its profile.
pub fn gateway_client_config(paths: &TlsPaths) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider(paths.profile))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(load_roots(&paths.ca)?)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key(paths)?)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// As [`client_config`], in the profile of the certificate `cert` holds (an SM2 certificate
/// dials in `gm`): for tools that are given files, not a config.
pub fn client_config_for(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let own = load_certs(cert)?;
    let profile = profile_of_certificate(&own[0]).map_err(|message| TlsError::Load {
        what: "certificates",
        path: cert.to_owned(),
        message,
    })?;
    client_config(profile, ca, cert, key)
}

/// The single URI SAN of a certificate, parsed as a federation SPIFFE id.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?
        .ok_or_else(|| "certificate has no subject alternative name".to_string())?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => SpiffeId::parse(one),
        [] => Err("certificate has no URI SAN".into()),
        _ => Err(format!(
            "certificate has {} URI SANs, expected one",
            uris.len()
        )),
    }
}

/// What a connection proved about its peer; tonic puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The SPIFFE id of the client certificate, or why there is none usable.
    pub identity: Result<SpiffeId, String>,
    /// The cipher suite and key exchange group the handshake chose.
    pub negotiated: Negotiated,
}

/// An accepted, handshaken TLS connection.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    trust: StillTrusted,
}

/// Checks a connection's client certificate again whenever the TLS material is reloaded (a
/// new CRL, a new CA bundle): a connection whose certificate no longer verifies — revoked, or
/// no longer chaining to a trusted CA — fails its next read or write, so the server closes it
/// within the reload interval even while it is idle.
struct StillTrusted {
    source: TlsSource,
    chain: Vec<CertificateDer<'static>>,
    /// Resolves when the material changes; polled from `poll_read` so an idle connection is
    /// woken too.
    changed: Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
    refused: Option<String>,
    remote: SocketAddr,
}

impl StillTrusted {
    fn new(source: TlsSource, chain: Vec<CertificateDer<'static>>, remote: SocketAddr) -> Self {
        let changed = Self::next_change(&source);
        StillTrusted {
            source,
            chain,
            changed,
            refused: None,
            remote,
        }
    }

    fn next_change(
        source: &TlsSource,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>> {
        let mut rx = source.clone();
        rx.mark_unchanged();
        Box::pin(async move {
            if rx.changed().await.is_err() {
                // The sender is gone (the gateway is stopping): never again.
                std::future::pending::<()>().await;
            }
        })
    }

    /// An error once the certificate no longer verifies against the current material.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.refused.is_none() && self.changed.as_mut().poll(cx).is_ready() {
            self.changed = Self::next_change(&self.source);
            // Registers the waker for the change after this one.
            let _ = self.changed.as_mut().poll(cx);
            if let Some((leaf, intermediates)) = self.chain.split_first() {
                let verifier = self.source.borrow().clients.clone();
                let now = rustls::pki_types::UnixTime::now();
                if let Err(e) = verifier.verify_client_cert(leaf, intermediates, now) {
                    tracing::warn!(
                        remote = %self.remote, error = %e,
                        "closing a connection whose client certificate no longer verifies"
                    );
                    self.refused = Some(e.to_string());
                }
            }
        }
        match &self.refused {
            Some(why) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("client certificate no longer trusted: {why}"),
            )),
            None => Ok(()),
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.trust.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

/// Writes are encrypted into the session's buffer and sent when the writer flushes (or when
/// that buffer, 64 KiB, is full). HTTP/2 writes an answer frame by frame and flushes after
/// them; sending on every write, as `tokio_rustls` does, cost a system call per frame, and a
/// frame's payload over 256 bytes was written on its own. Reporting no vectored writes makes
/// HTTP/2 copy payloads up to 1 KiB into its buffer, so a typical answer's headers, message and
/// trailers leave in one system call (often with other answers).
impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.trust.check(cx) {
            return Poll::Ready(Err(e));
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        match self.stream.get_mut().1.writer().write_vectored(bufs) {
            // The buffer is full: the stream's own write sends some of it first.
            Ok(0) => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
            done => Poll::Ready(done),
        }
    }
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Everything TLS a gateway loads from its `[tls]` files; replaced as a whole when they change.
pub struct TlsMaterial {
    /// The crypto profile the files were loaded in.
    pub profile: Profile,
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// Checks certificates of clients, peers and change signers against CA and CRL.
    pub chain: Arc<dyn ClientCertVerifier>,
    /// Checks signer certificates of kept evidence against the CAs of `tls.evidence_cas`,
    /// each with its own profile's algorithms, when [`Self::chain`] does not take them.
    pub evidence_cas: Vec<Arc<dyn ClientCertVerifier>>,
    /// Checks the certificates connections were accepted with: [`Self::chain`], or with
    /// `[tls.intl_clients]` either CA by the certificate's kind.
    pub clients: Arc<dyn ClientCertVerifier>,
    /// Expiry of the gateway's own certificate (seconds since the epoch).
    pub cert_not_after: i64,
    /// Expiry of the first CA certificate (seconds since the epoch).
    pub ca_not_after: i64,
    /// Signs outgoing changes and chain heads with the current gateway key, so a rotated
    /// certificate is used for signatures as soon as it is for handshakes.
    pub signer: Arc<super::signer::ChangeSigner>,
}

/// The current TLS material; readers take the latest value at each handshake.
pub type TlsSource = watch::Receiver<Arc<TlsMaterial>>;

fn not_after(cert: &CertificateDer<'_>) -> i64 {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(cert.as_ref())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or(0)
}

impl TlsMaterial {
    /// Loads the files of `paths`, refusing any that does not fit its crypto profile.
    pub fn load(paths: &TlsPaths) -> Result<Self, TlsError> {
        check_profile(paths)?;
        let own = load_certs(&paths.cert)?;
        let ca = load_certs(&paths.ca)?;
        let chain = chain_verifier(paths)?;
        let (server, clients) = match &paths.intl_clients {
            Some(intl) => intl_clients::server_config(paths, intl)?,
            None => (server_config(paths)?, chain.clone()),
        };
        let evidence_cas = paths
            .evidence_cas
            .iter()
            .map(|ca| {
                let first = &load_certs(ca)?[0];
                let profile = profile_of_certificate(first).map_err(|message| TlsError::Load {
                    what: "evidence CA",
                    path: ca.clone(),
                    message,
                })?;
                verifier_of(ca, None, profile)
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        Ok(TlsMaterial {
            profile: paths.profile,
            evidence_cas,
            server,
            clients,
            client: gateway_client_config(paths)?,
            chain,
            cert_not_after: not_after(&own[0]),
            ca_not_after: not_after(&ca[0]),
            signer: Arc::new(
                super::signer::ChangeSigner::from_files(paths)
                    .map_err(|e| TlsError::Setup(e.to_string()))?,
            ),
        })
    }

    /// A source that never changes (tools and tests).
    pub fn fixed(self) -> TlsSource {
        watch::channel(Arc::new(self)).1
    }
}

/// Size and modification time of each file, to notice replacements.
fn stamp(paths: &TlsPaths) -> Vec<Option<(u64, std::time::SystemTime)>> {
    let intl = paths.intl_clients.as_ref();
    [
        Some(&paths.ca),
        Some(&paths.cert),
        Some(&paths.key),
        paths.crl.as_ref(),
        intl.map(|i| &i.ca),
        intl.map(|i| &i.cert),
        intl.map(|i| &i.key),
        intl.and_then(|i| i.crl.as_ref()),
    ]
    .into_iter()
    .flatten()
    .chain(&paths.evidence_cas)
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    })
    .collect()
}

/// Reloads the TLS files when they change (checked every `every`), until `stop` turns true.
/// A change that fails to load is logged and the previous material stays in use. New
/// handshakes use the new material; established connections keep theirs, except that each
/// checks its client certificate against the new material and closes if it no longer
/// verifies (a revoked identity, see [`TlsConn`]).
pub async fn reload_on_change(
    paths: TlsPaths,
    tx: watch::Sender<Arc<TlsMaterial>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = stamp(&paths);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = stamp(&paths);
        if now == seen {
            continue;
        }
        // Files are often replaced one by one: let a rotation finish before reading.
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = stamp(&paths);
        match TlsMaterial::load(&paths) {
            Ok(material) => {
                tracing::info!(
                    cert = %paths.cert.display(),
                    cert_not_after = material.cert_not_after,
                    crl = paths.crl.is_some(),
                    "tls material reloaded; new handshakes use it"
                );
                let _ = tx.send(Arc::new(material));
            }
            Err(e) => {
                tracing::error!(error = %e, "tls files changed but cannot be loaded; keeping the previous ones")
            }
        }
    }
}

/// Accepts TCP connections and performs TLS handshakes concurrently, so one slow or hostile
/// client cannot hold up the others. Each handshake uses the TLS material current at that
/// moment. Failed handshakes are logged and dropped; the stream ends when the server stops.
/// Called with the remote address and the reason when a handshake is refused or times out
/// (for the audit trail and the refused-handshake metric).
pub type RefusedHandshake = Arc<dyn Fn(SocketAddr, String) + Send + Sync>;

pub fn incoming(
    listener: TcpListener,
    source: TlsSource,
    on_refused: Option<RefusedHandshake>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    incoming_with(
        listener,
        source,
        on_refused,
        HandshakeLimits::default(),
        None,
    )
}

/// One accepted connection's TLS handshake, on a task of its own.
struct Accept {
    acceptor: TlsAcceptor,
    source: TlsSource,
    timeout: Duration,
    on_refused: Option<RefusedHandshake>,
}

impl Accept {
    /// Runs the handshake within the timeout, unless its place is taken for a newer one
    /// (`closed`), gives the place back, and hands an authenticated connection to the server
    /// (a refused or timed-out one to `on_refused`).
    async fn run(
        self,
        tcp: TcpStream,
        remote: SocketAddr,
        place: PendingPlace,
        closed: tokio::sync::oneshot::Receiver<()>,
        tx: tokio::sync::mpsc::Sender<Result<TlsConn, io::Error>>,
    ) {
        let handshake = tokio::select! {
            done = tokio::time::timeout(self.timeout, self.acceptor.accept(tcp)) => done,
            // Closed to make room for a newer handshake (counted by whoever closed it).
            _ = closed => return,
        };
        // The place is given back once the handshake ended, whichever way.
        drop(place);
        match handshake {
            Ok(Ok(stream)) => {
                let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
                let identity = match chain {
                    [leaf, ..] => spiffe_id_of(leaf),
                    _ => Err("no client certificate".into()),
                };
                let trust = StillTrusted::new(self.source, chain.to_vec(), remote);
                let info = PeerInfo {
                    remote_addr: Some(remote),
                    identity,
                    negotiated: Negotiated::of(stream.get_ref().1),
                };
                let _ = tx
                    .send(Ok(TlsConn {
                        stream,
                        info,
                        trust,
                    }))
                    .await;
            }
            Ok(Err(e)) => {
                tracing::info!(remote = %remote, error = %e, "tls handshake refused");
                if let Some(hook) = &self.on_refused {
                    hook(remote, e.to_string());
                }
            }
            Err(_) => {
                tracing::info!(remote = %remote, "tls handshake timed out");
                if let Some(hook) = &self.on_refused {
                    hook(remote, "tls handshake timed out".into());
                }
            }
        }
    }
}

/// [`incoming`] under `limits`, telling `on_shed` about each connection closed over a cap.
pub fn incoming_with(
    listener: TcpListener,
    source: TlsSource,
    on_refused: Option<RefusedHandshake>,
    limits: HandshakeLimits,
    on_shed: Option<ShedConnection>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Transient accept errors (EMFILE, ECONNABORTED) must not end the server.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let (place, closed) = match PendingPlace::take(&pending, remote, &limits) {
                Ok((place, closed, evicted)) => {
                    if let (Some(oldest), Some(hook)) = (evicted, &on_shed) {
                        hook(oldest, "oldest TLS handshake closed to make room");
                    }
                    (place, closed)
                }
                Err(why) => {
                    drop(tcp);
                    if let Some(hook) = &on_shed {
                        hook(remote, why);
                    }
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let accept = Accept {
                acceptor: TlsAcceptor::from(source.borrow().server.clone()),
                source: source.clone(),
                timeout: limits.timeout,
                on_refused: on_refused.clone(),
            };
            tokio::spawn(accept.run(tcp, remote, place, closed, tx.clone()));
        }
    });
    ReceiverStream::new(rx)
}

/// Opens a lazily-connecting gRPC channel to `addr` over mutual TLS, checking the server's
/// certificate for `server_name` (a DNS name or IP the gateway certificate carries).
pub fn channel(
    addr: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, TlsError> {
    channel_with(addr, server_name, move || config.clone())
}

/// Like [`channel`], taking the client config current at each (re)connection.
pub fn channel_with(
    addr: &str,
    server_name: &str,
    config: impl Fn() -> Arc<ClientConfig> + Send + Sync + 'static,
) -> Result<Channel, TlsError> {
    let server_name = ServerName::try_from(server_name.to_string())
        .map_err(|e| TlsError::Setup(format!("`{server_name}` is not a server name: {e}")))?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| TlsError::Setup(format!("`{addr}` is not host:port: {e}")))?
        .connect_timeout(Duration::from_secs(10));
    let config = Arc::new(config);
    let addr = addr.to_string();
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let connector = TlsConnector::from(config());
            let server_name = server_name.clone();
            let addr = addr.clone();
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}
