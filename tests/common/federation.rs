//! Gateways in the test process: their configs, the shared moved clock, one gateway
//! ([`InProcess`]) and a federation of N parties pulling from each other ([`TestFederation`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls::ClientConfig;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use yrd_gateway::config::{Config, ConfigTemplate, LogFormat};
use yrd_gateway::exchange::inbound::{PeerStatus, PeerStatuses};
use yrd_gateway::gateway::Gateway;
use yrd_gateway::identity::tls;
use yrd_gateway::wire::pb;

use super::*;

/// Options for the gateways a test starts.
#[derive(Default, Clone)]
pub struct Options {
    /// Extra TOML appended to every gateway's config.
    pub extra_toml: String,
    /// Parties that start without the default catalog (they publish their own, or share
    /// nothing).
    pub without_default_catalog: Vec<String>,
    /// Address a puller uses to reach an owner instead of the owner's own: (puller, owner).
    pub routes: HashMap<(String, String), String>,
    /// Configure `certs/crl.pem` as the revocation list (the test writes it first).
    pub crl: bool,
    /// Store in this PostgreSQL database instead of an SQLite file.
    pub postgres_url: Option<String>,
    /// Admin HTTP address instead of port 0 (for a test that reads a child's metrics).
    pub listen_admin: Option<String>,
    /// The federation's crypto profile (its PKI and `[crypto] profile`).
    pub profile: yrd_gateway::crypto::Profile,
    /// Store records in clear: no `[keys]` (by default every gateway seals at rest).
    pub in_clear: bool,
}

/// Microseconds added to the clock of every in-process gateway of this test (each test runs in
/// a process of its own): [`advance_clock`] moves time forward for deadlines and grant ends.
pub static CLOCK_OFFSET: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Moves the clock of every in-process gateway forward by `by`.
pub fn advance_clock(by: Duration) {
    CLOCK_OFFSET.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
}

/// Entries of the default catalog each party publishes at start (one per governed record
/// kind): the first changes of every party's log.
pub const DEFAULT_ENTRIES: u64 = 5;

/// The shipped federation of the four parties, as the tests configure it.
pub fn federation() -> yrd_gateway::domain::Federation {
    yrd_gateway::cli::default_federation()
}

/// Writes the config of one party and returns its path. `peers` are (party, address) pairs.
pub fn write_config(
    root: &Path,
    party: &str,
    listen: &str,
    peers: &[(String, String)],
    options: &Options,
) -> PathBuf {
    write_config_of(root, party, listen, peers, options, federation())
}

/// [`write_config`] with another party list than the shipped four.
pub fn write_config_of(
    root: &Path,
    party: &str,
    listen: &str,
    peers: &[(String, String)],
    options: &Options,
    fed: yrd_gateway::domain::Federation,
) -> PathBuf {
    let text = ConfigTemplate {
        party: party.to_string(),
        trust_domain: TRUST_DOMAIN.into(),
        listen_grpc: listen.to_string(),
        listen_admin: options
            .listen_admin
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".into()),
        certs_dir: "certs".into(),
        crl: options.crl.then(|| "certs/crl.pem".to_string()),
        store_path: format!("{party}/store.db"),
        postgres_url: options.postgres_url.clone(),
        log_format: LogFormat::Text,
        default_catalog: !options.without_default_catalog.iter().any(|p| p == party),
        federation: fed,
        peers: peers.to_vec(),
        profile: options.profile,
        keys: !options.in_clear,
    };
    text.make_keys(root).unwrap();
    let text = text.render();
    let path = root.join(format!("{party}.toml"));
    std::fs::write(&path, format!("{text}\n{}", options.extra_toml)).unwrap();
    path
}

/// A gateway running inside the test process.
pub struct InProcess {
    pub party: String,
    pub addr: SocketAddr,
    /// Admin HTTP address (metrics, status page).
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub peer_status: Option<PeerStatuses>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl InProcess {
    async fn launch(party: &str, config: PathBuf, listener: TcpListener) -> InProcess {
        let addr = listener.local_addr().unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let gateway = Gateway::open(Config::load(&config, &HashMap::new()).unwrap())
            .await
            .unwrap()
            .with_clock(Arc::new(|| {
                yrd_gateway::domain::now_micros() + CLOCK_OFFSET.load(Ordering::SeqCst)
            }));
        let peer_status = Some(gateway.peer_status());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gateway
                .serve(listener, Some(admin_listener), async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        InProcess {
            party: party.to_string(),
            addr,
            admin,
            config,
            peer_status,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops accepting, lets in-flight calls finish, and waits for the server to end.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Starts the gateway again from its config, on the same address.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        *self = InProcess::launch(&self.party.clone(), self.config.clone(), listener).await;
    }

    /// Replication state of the peers this gateway pulls from.
    pub fn peer(&self, party: &str) -> PeerStatus {
        let statuses = self.peer_status.as_ref().unwrap().lock().unwrap();
        statuses.get(party).cloned().unwrap_or_default()
    }
}

/// N parties' gateways in this process, each on its own loopback port, each pulling from all
/// the others.
pub struct TestFederation {
    pub root: TempDir,
    pub pki: Pki,
    pub gateways: HashMap<String, InProcess>,
}

impl TestFederation {
    pub async fn start(parties: &[&str]) -> TestFederation {
        Self::start_with(parties, Options::default()).await
    }

    pub async fn start_with(parties: &[&str], options: Options) -> TestFederation {
        let root = tempfile::tempdir().unwrap();
        let pki = Pki::new_in(root.path(), options.profile);
        if options.crl {
            std::fs::write(pki.dir.join("crl.pem"), pki.ca.revoke(&[], 1).unwrap()).unwrap();
        }
        let mut listeners = HashMap::new();
        for party in parties {
            listeners.insert(
                party.to_string(),
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
            );
        }
        let addrs: HashMap<String, String> = listeners
            .iter()
            .map(|(p, l)| (p.clone(), l.local_addr().unwrap().to_string()))
            .collect();
        let addr_of = |p: &str| addrs[p].clone();
        let mut gateways = HashMap::new();
        for party in parties {
            let peers: Vec<(String, String)> = parties
                .iter()
                .filter(|p| *p != party)
                .map(|p| {
                    let route = options.routes.get(&(party.to_string(), p.to_string()));
                    (p.to_string(), route.cloned().unwrap_or_else(|| addr_of(p)))
                })
                .collect();
            let config = write_config(root.path(), party, &addr_of(party), &peers, &options);
            let listener = listeners.remove(*party).unwrap();
            gateways.insert(
                party.to_string(),
                InProcess::launch(party, config, listener).await,
            );
        }
        TestFederation {
            root,
            pki,
            gateways,
        }
    }

    pub fn addr(&self, party: &str) -> SocketAddr {
        self.gateways[party].addr
    }

    /// Starts one more gateway from `config`, listening on `listener`.
    pub async fn launch(&mut self, party: &str, config: PathBuf, listener: TcpListener) {
        let gateway = InProcess::launch(party, config, listener).await;
        self.gateways.insert(party.to_string(), gateway);
    }

    pub fn gateway(&mut self, party: &str) -> &mut InProcess {
        self.gateways.get_mut(party).unwrap()
    }

    /// A channel to `gateway` presenting `config`'s client identity.
    pub fn channel_with(&self, gateway: &str, config: Arc<ClientConfig>) -> Channel {
        tls::channel(&self.addr(gateway).to_string(), "localhost", config).unwrap()
    }

    /// A channel to `gateway` as `party`'s demo client system.
    pub fn client(&self, gateway: &str, party: &str) -> Channel {
        self.channel_with(gateway, self.pki.client_config(party, "client"))
    }

    pub fn projects(
        &self,
        gateway: &str,
        party: &str,
    ) -> pb::project_service_client::ProjectServiceClient<Channel> {
        pb::project_service_client::ProjectServiceClient::new(self.client(gateway, party))
    }

    pub fn factors(
        &self,
        gateway: &str,
        party: &str,
    ) -> pb::factor_service_client::FactorServiceClient<Channel> {
        pb::factor_service_client::FactorServiceClient::new(self.client(gateway, party))
    }

    pub fn directory(
        &self,
        gateway: &str,
        party: &str,
    ) -> pb::directory_service_client::DirectoryServiceClient<Channel> {
        pb::directory_service_client::DirectoryServiceClient::new(self.client(gateway, party))
    }

    pub fn watch(
        &self,
        gateway: &str,
        party: &str,
    ) -> pb::watch_service_client::WatchServiceClient<Channel> {
        pb::watch_service_client::WatchServiceClient::new(self.client(gateway, party))
    }

    /// A Watch from the beginning, opened by `party`'s demo client at its own gateway.
    pub async fn watching(&self, party: &str) -> tonic::Streaming<pb::WatchResponse> {
        self.watch(party, party)
            .watch(pb::WatchRequest::default())
            .await
            .unwrap()
            .into_inner()
    }

    /// Stops every gateway (their temp folder stays until the federation is dropped).
    pub async fn stop_all(&mut self) {
        for g in self.gateways.values_mut() {
            g.stop().await;
        }
    }
}

impl TestFederation {
    pub fn access(
        &self,
        gateway: &str,
        party: &str,
    ) -> pb::access_service_client::AccessServiceClient<Channel> {
        pb::access_service_client::AccessServiceClient::new(self.client(gateway, party))
    }

    pub fn catalog(
        &self,
        gateway: &str,
        party: &str,
    ) -> pb::catalog_service_client::CatalogServiceClient<Channel> {
        pb::catalog_service_client::CatalogServiceClient::new(self.client(gateway, party))
    }
}
