//! TLS from the gateway to PostgreSQL: the server's certificate must chain to the CA named by
//! `store.ca_file` and carry the host name the connection string gives (what libpq calls
//! `sslmode=verify-full`). Built on rustls, as the gateway's own TLS is; the store keeps its
//! own small loader so it depends on nothing above it.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How connections to the database are made: verified TLS, or none (then the connection
/// string's `sslmode` is set to `disable`, so this is never asked to connect).
#[derive(Clone)]
pub(crate) struct DbTls(Option<Arc<rustls::ClientConfig>>);

impl DbTls {
    /// TLS verified against the certificates in `ca_file` (PEM), or none.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<DbTls, String> {
        let Some(path) = ca_file else {
            return Ok(DbTls(None));
        };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(DbTls(Some(Arc::new(config))))
    }
}

impl<S> MakeTlsConnect<S> for DbTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = DbTlsStream<S>;
    type TlsConnect = DbTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<DbTlsConnect> {
        // Asked for every connection, TLS or not: what is missing fails only a handshake.
        Ok(DbTlsConnect {
            config: self.0.clone(),
            host: host.to_string(),
        })
    }
}

/// One connection's TLS handshake, to the host it was made for.
pub(crate) struct DbTlsConnect {
    config: Option<Arc<rustls::ClientConfig>>,
    host: String,
}

impl<S> TlsConnect<S> for DbTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = DbTlsStream<S>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<DbTlsStream<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::other("TLS to the database is not configured (store.ca_file)")
            })?;
            let name = ServerName::try_from(self.host.clone()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{}` is not a name a certificate can carry: {e}", self.host),
                )
            })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(DbTlsStream(tls))
        })
    }
}

/// A TLS connection to the database.
pub(crate) struct DbTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for DbTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding: the certificate check is what authenticates the
        // server.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for DbTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for DbTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
