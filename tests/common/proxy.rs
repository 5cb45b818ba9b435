//! A TCP proxy a test controls, to cut and heal the link between two gateways.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

/// A TCP proxy the test controls: forwards bytes to an upstream set at any time, and can cut
/// every connection (and refuse new ones) until healed. TLS passes through untouched.
pub struct TcpProxy {
    pub addr: SocketAddr,
    state: Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    upstream: Option<SocketAddr>,
    cut: bool,
    connections: Vec<tokio::task::AbortHandle>,
}

impl TcpProxy {
    pub async fn start() -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<std::sync::Mutex<ProxyState>> = Arc::default();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (upstream, cut) = {
                    let s = shared.lock().unwrap();
                    (s.upstream, s.cut)
                };
                let Some(upstream) = upstream.filter(|_| !cut) else {
                    drop(inbound);
                    continue;
                };
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                shared.lock().unwrap().connections.push(task.abort_handle());
            }
        });
        TcpProxy { addr, state }
    }

    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.state.lock().unwrap().upstream = Some(upstream);
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.cut = true;
        for c in s.connections.drain(..) {
            c.abort();
        }
    }

    pub fn heal(&self) {
        self.state.lock().unwrap().cut = false;
    }
}
