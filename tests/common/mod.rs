//! The shared harness: a development PKI in a temp dir, and N real gateways with real mutual
//! TLS and real SQLite files, either in this process on port 0 or as child processes of the
//! built binary (for kill -9 tests).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
use yrd_gateway::identity::pki::{Authority, Issued, LeafSpec};
use yrd_gateway::identity::tls;
use yrd_gateway::wire::pb;

pub const PARTIES: [&str; 4] = ["zone", "changxing", "anji", "guangde"];
pub const TRUST_DOMAIN: &str = "yrd-huzhou";

/// A made-up unified social credit code with a correct GB 32100-2015 check character.
pub const CREDIT_CODE: &str = "91330522MA2B3C4D57";

/// A development PKI in a temporary folder.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Authority,
}

impl Pki {
    /// Where `party`'s gateway certificate and key are (for a test playing that gateway).
    pub fn gateway_paths(&self, party: &str) -> yrd_gateway::identity::tls::TlsPaths {
        yrd_gateway::identity::tls::TlsPaths {
            ca: self.dir.join("ca.crt"),
            cert: self.dir.join(party).join("gateway.crt"),
            key: self.dir.join(party).join("gateway.key"),
            crl: None,
        }
    }

    pub fn new(root: &Path) -> Pki {
        let dir = root.join("certs");
        let parties: Vec<String> = PARTIES.iter().map(|s| s.to_string()).collect();
        yrd_gateway::identity::pki::init_dev_pki(&dir, TRUST_DOMAIN, &parties).expect("dev pki");
        let ca = Authority::from_pem(
            &std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
            &std::fs::read_to_string(dir.join("ca.key")).unwrap(),
        )
        .unwrap();
        Pki { dir, ca }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Client config presenting `<party>/<stem>.crt` (stem: "client" or "gateway").
    pub fn client_config(&self, party: &str, stem: &str) -> Arc<ClientConfig> {
        let d = self.dir.join(party);
        tls::client_config(
            &self.ca_path(),
            &d.join(format!("{stem}.crt")),
            &d.join(format!("{stem}.key")),
        )
        .unwrap()
    }

    /// Writes an issued certificate and key under the PKI folder and returns a client config
    /// presenting them.
    pub fn client_config_for(&self, name: &str, issued: &Issued) -> Arc<ClientConfig> {
        let crt = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        std::fs::write(&crt, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        tls::client_config(&self.ca_path(), &crt, &key).unwrap()
    }

    /// Issues a client certificate for `party`/`system` from the federation CA.
    pub fn issue_client(&self, party: &str, system: &str) -> Issued {
        self.ca
            .issue(&LeafSpec::client(TRUST_DOMAIN, party, system))
            .unwrap()
    }
}

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
    }
    .render();
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
        let pki = Pki::new(root.path());
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

    /// Stops every gateway (their temp folder stays until the federation is dropped).
    pub async fn stop_all(&mut self) {
        for g in self.gateways.values_mut() {
            g.stop().await;
        }
    }
}

/// Polls `check` until it returns `Some`, for at most `limit`; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a project at a gateway, `None` if it is not (yet) there.
pub async fn try_get(fed: &TestFederation, gateway: &str, name: &str) -> Option<pb::Project> {
    fed.projects(gateway, gateway)
        .get_project(pb::GetProjectRequest {
            name: name.to_string(),
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().project)
}

/// A process's resident memory, KiB: now, and the peak so far.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB (peak {:.1} MiB)",
            self.rss_kib as f64 / 1024.0,
            self.peak_kib as f64 / 1024.0
        )
    }
}

/// A gateway run as a child process of the built binary, for crash tests and for figures of
/// its own memory.
pub struct ChildGateway {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ChildGateway {
    /// Starts `yrd-gateway serve --config` and waits until it logs its bound address.
    pub fn spawn(config: &Path) -> ChildGateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
            .args(["serve", "--config"])
            .arg(config)
            .env("YRD_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn yrd-gateway");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["message"] == "gateway serving" {
                            let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway did not report its address within 30 s");
        ChildGateway {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    /// This gateway process's resident memory now and its peak so far, KiB (`VmRSS`,
    /// `VmHWM` of `/proc/PID/status`).
    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A complete, valid project as a client would send it.
pub fn sample_project(display_name: &str) -> pb::Project {
    pb::Project {
        display_name: display_name.to_string(),
        investor: Some(pb::Investor {
            name: "浙江某某新能源汽车零部件有限公司".into(),
            credit_code: CREDIT_CODE.into(),
        }),
        industry: pb::Industry::NewEnergyVehicles as i32,
        industry_code: "C3612".into(),
        total_investment_yuan: 1_500_000_000,
        land_area_mu: "120.5".into(),
        platform: "南华山".into(),
        contact: Some(pb::Contact {
            name: "张三".into(),
            phone: "+86 138-0000-0000".into(),
        }),
        service_officer: "李四".into(),
        checklist: vec![pb::ChecklistItem {
            item: "environmental impact assessment".into(),
            department: "湖州市生态环境局".into(),
            status: 0,
            due_date: "2027-03-31".into(),
        }],
        labels: [("batch".to_string(), "2026-q4".to_string())].into(),
        ..Default::default()
    }
}

pub fn create_request(project: pb::Project) -> pb::CreateProjectRequest {
    pb::CreateProjectRequest {
        project: Some(project),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// Every project visible at a gateway, walking all pages.
pub async fn all_projects(
    client: &mut pb::project_service_client::ProjectServiceClient<Channel>,
) -> Vec<pb::Project> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_projects(pb::ListProjectsRequest {
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.projects);
        token = page.next_page_token;
        if token.is_empty() {
            return out;
        }
    }
}

/// The field paths of a status's google.rpc.BadRequest.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The reason of a status's google.rpc.ErrorInfo.
pub fn error_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

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

/// GETs a path from an admin HTTP server and returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

type Projects = pb::project_service_client::ProjectServiceClient<Channel>;

/// Creates `sample_project(display_name)` through `client` and returns it.
pub async fn create_with(client: &mut Projects, display_name: &str) -> pb::Project {
    client
        .create_project(create_request(sample_project(display_name)))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap()
}

/// Creates `sample_project(display_name)` at `party`'s gateway as its demo client.
pub async fn create(fed: &TestFederation, party: &str, display_name: &str) -> pb::Project {
    create_with(&mut fed.projects(party, party), display_name).await
}

/// Reads a project that must exist.
pub async fn get_with(client: &mut Projects, name: &str) -> pb::Project {
    client
        .get_project(pb::GetProjectRequest {
            name: name.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap()
}

/// The next Watch event, which must be a project.
pub async fn next_project(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::Project {
    let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a watch event in time")
        .unwrap()
        .expect("stream open");
    match event.record {
        Some(pb::watch_response::Record::Project(p)) => p,
        // Catalog entries (the default catalogs at start) are not what these tests follow.
        Some(pb::watch_response::Record::CatalogEntry(_)) => Box::pin(next_project(stream)).await,
        other => panic!("expected a project event, got {other:?}"),
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

/// Guangde's request for `items` of the catalog entry `entry`, for a joint investment fair.
pub fn access_request(entry: &str, items: &[&str]) -> pb::CreateAccessRequestRequest {
    pb::CreateAccessRequestRequest {
        access_request: Some(pb::AccessRequest {
            entry: entry.into(),
            items: items.iter().map(|s| s.to_string()).collect(),
            purpose: "联合招商对接".into(),
            scenario: "广德—长兴联合招商会".into(),
            validity_days: 30,
            ..Default::default()
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// A catalog data item of a project entry.
pub fn data_item(field: &str, class: pb::SharingClass, legal_basis: &str) -> pb::DataItem {
    pb::DataItem {
        field: field.into(),
        r#type: "string".into(),
        description: format!("{field} of the project"),
        sharing_class: class as i32,
        legal_basis: legal_basis.into(),
        open_to: Vec::new(),
    }
}

/// Waits until the catalog entry `name` has reached `gateway`.
pub async fn replicated_entry(fed: &TestFederation, gateway: &str, name: &str) -> pb::CatalogEntry {
    eventually(
        Duration::from_secs(10),
        "the catalog entry at another party",
        || async {
            fed.catalog(gateway, gateway)
                .get_catalog_entry(pb::GetCatalogEntryRequest { name: name.into() })
                .await
                .ok()
                .and_then(|r| r.into_inner().entry)
        },
    )
    .await
}

/// The audit events `method` recorded at `at` with code OK, once there is one.
pub async fn audit_events_of(fed: &TestFederation, at: &str, method: &str) -> Vec<pb::AuditEvent> {
    audit_events_until(fed, at, method, "OK", |e| !e.is_empty()).await
}

/// The audit events `method` recorded at `at` with `code`, once `enough` holds of them.
pub async fn audit_events_until(
    fed: &TestFederation,
    at: &str,
    method: &str,
    code: &str,
    enough: impl Fn(&[pb::AuditEvent]) -> bool,
) -> Vec<pb::AuditEvent> {
    eventually(Duration::from_secs(10), "the audit event", || async {
        let events = pb::audit_service_client::AuditServiceClient::new(fed.client(at, at))
            .list_audit_events(pb::ListAuditEventsRequest {
                method: method.into(),
                code: code.into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .events;
        enough(&events).then_some(events)
    })
    .await
}

/// Runs the built binary with `args`; whether it succeeded, and its stdout and stderr.
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The value of an unlabelled series on a gateway's metrics page (at its admin address).
/// The value of a per-peer metric (`name{peer="PEER"}`) on an admin server, if listed.
pub async fn peer_metric(admin: SocketAddr, name: &str, peer: &str) -> Option<u64> {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    let prefix = format!("{name}{{peer=\"{peer}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

pub async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    let prefix = format!("{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .trim()
        .parse()
        .unwrap()
}
