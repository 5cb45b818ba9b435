//! Several replicas of one party's gateway on one PostgreSQL database (the server named by
//! `YRD_TEST_POSTGRES_URL`; `tests/with-postgres.sh` starts one): concurrent writes through
//! both keep one gapless change log that a peer receives exactly once, Watch on either
//! replica sees every change, and when the replica pulling from a peer is killed the other
//! takes over without losing or repeating a change.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use yrd_gateway::identity::tls;
use yrd_gateway::store::postgres::testing;
use yrd_gateway::wire::pb;

use crate::common::*;

/// A free loopback port (bound, then released for the gateway to take).
pub(crate) fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Writes `<name>.toml` for `party` listening on `grpc` with its admin server on `admin`,
/// pulling from `peers`; stored in PostgreSQL at `store_url` if given, else in SQLite.
pub(crate) fn config(
    root: &Path,
    name: &str,
    party: &str,
    grpc: SocketAddr,
    admin: SocketAddr,
    peers: &[(String, String)],
    store_url: Option<&str>,
) -> PathBuf {
    let options = Options {
        postgres_url: store_url.map(str::to_string),
        listen_admin: Some(admin.to_string()),
        ..Options::default()
    };
    let written = write_config(root, party, &grpc.to_string(), peers, &options);
    let path = root.join(format!("{name}.toml"));
    std::fs::rename(written, &path).unwrap();
    path
}

struct Replica {
    gateway: ChildGateway,
    config: PathBuf,
    admin: SocketAddr,
}

impl Replica {
    fn spawn(config: &Path, admin: SocketAddr) -> Replica {
        Replica {
            gateway: ChildGateway::spawn(config),
            config: config.to_owned(),
            admin,
        }
    }

    /// The value of a per-peer gauge on this replica's metrics page.
    async fn gauge(&self, name: &str, peer: &str) -> Option<u64> {
        peer_metric(self.admin, name, peer).await
    }

    /// Whether this replica is the one pulling from `peer` (holds the lease, stream open).
    async fn pulls_from(&self, peer: &str) -> bool {
        self.gauge("yrd_peer_standby", peer).await == Some(0)
            && self.gauge("yrd_peer_connected", peer).await == Some(1)
    }
}

async fn database(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// `SELECT seq FROM log WHERE owner = $1` in order.
async fn logged_seqs(db: &tokio_postgres::Client, owner: &str) -> Vec<i64> {
    db.query(
        "SELECT seq FROM log WHERE owner = $1 ORDER BY seq",
        &[&owner],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Waits until the zone's cursor for `owner` reaches `seq`.
async fn applied_up_to(db: &tokio_postgres::Client, owner: &str, seq: i64) {
    eventually(
        Duration::from_secs(60),
        &format!("the zone applied {seq} changes of {owner}"),
        || async {
            let row = db
                .query_opt("SELECT seq FROM cursors WHERE owner = $1", &[&owner])
                .await
                .unwrap();
            (row.map(|r| r.get::<_, i64>(0)) == Some(seq)).then_some(())
        },
    )
    .await;
}

/// A channel to the gateway at `addr` as `party`'s demo client.
pub(crate) fn client_of(pki: &Pki, addr: SocketAddr, party: &str) -> tonic::transport::Channel {
    tls::channel(
        &addr.to_string(),
        "localhost",
        pki.client_config(party, "client"),
    )
    .unwrap()
}

pub(crate) fn projects_at(
    pki: &Pki,
    addr: SocketAddr,
    party: &str,
) -> pb::project_service_client::ProjectServiceClient<tonic::transport::Channel> {
    pb::project_service_client::ProjectServiceClient::new(client_of(pki, addr, party))
}

/// The zone as two replicas on one fresh database, both following changxing (SQLite).
struct Deployment {
    root: tempfile::TempDir,
    pki: Pki,
    url: String,
    /// Zone replicas a and b.
    replicas: Vec<Replica>,
    changxing: ChildGateway,
}

/// Starts changxing and two zone replicas; changxing pulls from replica a when
/// `changxing_pulls` (as it would through a load balancer in front of both).
async fn deploy(changxing_pulls: bool) -> Deployment {
    let url = testing::scratch_database().await;
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let cx_addr = free_addr();
    let zone_peers = [("changxing".to_string(), cx_addr.to_string())];
    let zone: Vec<(PathBuf, SocketAddr, SocketAddr)> = ["zone-a", "zone-b"]
        .into_iter()
        .map(|name| {
            let (grpc, admin) = (free_addr(), free_addr());
            let path = config(
                root.path(),
                name,
                "zone",
                grpc,
                admin,
                &zone_peers,
                Some(&url),
            );
            (path, grpc, admin)
        })
        .collect();
    let cx_peers = if changxing_pulls {
        vec![("zone".to_string(), zone[0].1.to_string())]
    } else {
        vec![]
    };
    let cx_config = config(
        root.path(),
        "changxing",
        "changxing",
        cx_addr,
        free_addr(),
        &cx_peers,
        None,
    );
    let changxing = ChildGateway::spawn(&cx_config);
    let replicas = zone
        .iter()
        .map(|(path, _, admin)| Replica::spawn(path, *admin))
        .collect();
    Deployment {
        root,
        pki,
        url,
        replicas,
        changxing,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_zone_replicas_on_one_postgres_take_concurrent_writes() {
    let Deployment {
        root,
        pki,
        url,
        replicas,
        changxing: _changxing,
    } = deploy(true).await;
    let (a_addr, b_addr) = (replicas[0].gateway.addr, replicas[1].gateway.addr);

    // A Watch on replica b from the start: it must see what replica a commits too.
    let mut watch =
        pb::watch_service_client::WatchServiceClient::new(client_of(&pki, b_addr, "zone"))
            .watch(pb::WatchRequest::default())
            .await
            .unwrap()
            .into_inner();

    // 8 clients, 4 on each replica, 20 creates each, all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..8 {
        let mut projects = projects_at(&pki, if client % 2 == 0 { a_addr } else { b_addr }, "zone");
        tasks.spawn(async move {
            let mut names = Vec::new();
            for i in 0..20 {
                names.push(
                    create_with(&mut projects, &format!("项目 {client}-{i}"))
                        .await
                        .name,
                );
            }
            names
        });
    }
    let mut created = BTreeSet::new();
    while let Some(names) = tasks.join_next().await {
        created.extend(names.unwrap());
    }
    // And one last write through a alone, which b's Watch must also deliver.
    let last = create_with(&mut projects_at(&pki, a_addr, "zone"), "最后一个")
        .await
        .name;
    created.insert(last);
    assert_eq!(created.len(), 161);
    let head = 161 + DEFAULT_ENTRIES as i64;

    let db = database(&url).await;
    assert_eq!(
        logged_seqs(&db, "zone").await,
        (1..=head).collect::<Vec<i64>>(),
        "the zone's change log is gapless across both replicas"
    );
    let positions: Vec<i64> = db
        .query("SELECT position FROM log ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The feed holds the zone's changes and the changxing catalog entries it applied, gapless.
    let n = positions.len() as i64;
    assert!(n >= head, "{n} feed positions for {head} zone changes");
    assert_eq!(positions, (1..=n).collect::<Vec<i64>>());

    let mut watched = BTreeSet::new();
    while watched.len() < created.len() {
        watched.insert(next_project(&mut watch).await.name);
    }
    assert_eq!(
        watched, created,
        "Watch on replica b saw every change of both"
    );

    // Changxing received every change of the zone exactly once, in order.
    let cx_db = root.path().join("changxing/store.db");
    let cx_store = yrd_gateway::store::sqlite::SqliteStore::open(&cx_db).unwrap();
    let changes = eventually(Duration::from_secs(60), "changxing caught up", || async {
        use yrd_gateway::store::RecordStore;
        let changes = cx_store.changes("zone", 0, 1000).await.unwrap();
        (changes.len() >= head as usize).then_some(changes)
    })
    .await;
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=head as u64).collect::<Vec<u64>>());
    let received: BTreeSet<String> = changes
        .iter()
        .filter(|c| c.record.kind == yrd_gateway::domain::RecordKind::Project)
        .map(|c| format!("parties/zone/projects/{}", c.record.id))
        .collect();
    assert_eq!(received, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_holding_the_pull_lease_dies_and_the_other_takes_over() {
    let Deployment {
        root: _root,
        pki,
        url,
        mut replicas,
        changxing: cx,
    } = deploy(false).await;
    let mut cx_projects = projects_at(&pki, cx.addr, "changxing");
    for i in 0..30 {
        create_with(&mut cx_projects, &format!("长兴 {i}")).await;
    }
    let db = database(&url).await;
    applied_up_to(&db, "changxing", 30 + DEFAULT_ENTRIES as i64).await;

    // Exactly one replica pulls; the other stands by.
    let holder = eventually(Duration::from_secs(10), "one replica pulling", || async {
        let a = replicas[0].pulls_from("changxing").await;
        let b = replicas[1].pulls_from("changxing").await;
        match (a, b) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            (true, true) => panic!("both replicas pull from changxing"),
            _ => None,
        }
    })
    .await;
    let standby = 1 - holder;
    assert_eq!(
        replicas[standby]
            .gauge("yrd_peer_standby", "changxing")
            .await,
        Some(1)
    );

    // Changxing keeps writing while the holder is killed.
    let writer = tokio::spawn(async move {
        for i in 30..90 {
            create_with(&mut cx_projects, &format!("长兴 {i}")).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = replicas.remove(holder);
    let killed_at = Instant::now();
    killed.gateway.kill_9();
    let survivor = &replicas[0];
    eventually(Duration::from_secs(15), "the standby took over", || async {
        survivor.pulls_from("changxing").await.then_some(())
    })
    .await;
    println!("takeover after {:?}", killed_at.elapsed());
    writer.await.unwrap();

    let head = 90 + DEFAULT_ENTRIES as i64;
    applied_up_to(&db, "changxing", head).await;
    assert_eq!(
        logged_seqs(&db, "changxing").await,
        (1..=head).collect::<Vec<i64>>(),
        "every change of changxing applied once"
    );
    let evidence = db
        .query_one(
            "SELECT count(*), count(DISTINCT seq) FROM evidence WHERE owner = 'changxing'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (evidence.get::<_, i64>(0), evidence.get::<_, i64>(1)),
        (head, head)
    );
    // Kept by two replicas in turn, the evidence still proves every change.
    let verified = yrd_gateway::cli::audit::run(
        yrd_gateway::cli::audit::AuditCommand::VerifyEvidence {
            config: survivor.config.clone(),
        },
        &std::collections::HashMap::new(),
    )
    .await
    .unwrap();
    assert!(verified, "the evidence of changxing's changes verifies");
}

/// The gateway's health for the whole server.
async fn serving(pki: &Pki, addr: SocketAddr) -> Option<i32> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    HealthClient::new(client_of(pki, addr, "zone"))
        .check(HealthCheckRequest::default())
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_turns_health_off_and_refuses_writes_until_it_returns() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let scratch = testing::scratch_database().await;
    let direct = tokio_postgres::Config::from_str(&scratch).unwrap();
    let (tokio_postgres::config::Host::Tcp(host), Some(port)) =
        (&direct.get_hosts()[0], direct.get_ports().first())
    else {
        panic!("the test server must be reached over TCP");
    };
    // The gateway reaches the database through a proxy the test can cut.
    let proxy = TcpProxy::start().await;
    proxy.set_upstream(format!("{host}:{port}").parse().unwrap());
    let url = format!(
        "host=127.0.0.1 port={} user={} dbname={}",
        proxy.addr.port(),
        direct.get_user().unwrap(),
        direct.get_dbname().unwrap()
    );
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let path = config(
        root.path(),
        "zone",
        "zone",
        free_addr(),
        free_addr(),
        &[],
        Some(&url),
    );
    let zone = ChildGateway::spawn(&path);
    let mut projects = projects_at(&pki, zone.addr, "zone");
    let before = create_with(&mut projects, "停电前").await;
    let is = |want: ServingStatus| {
        let pki = &pki;
        move || async move { (serving(pki, zone.addr).await == Some(want as i32)).then_some(()) }
    };
    eventually(
        Duration::from_secs(10),
        "SERVING",
        is(ServingStatus::Serving),
    )
    .await;

    proxy.cut();
    eventually(
        Duration::from_secs(15),
        "NOT_SERVING",
        is(ServingStatus::NotServing),
    )
    .await;
    let request = create_request(sample_project("停电中"));
    let refused = projects.create_project(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // Whichever failed first, the record write or its audit event: a reason and a retry delay.
    assert!(
        ["STORE_UNAVAILABLE", "AUDIT_UNAVAILABLE"].contains(&error_reason(&refused).as_str()),
        "{refused:?}"
    );
    {
        use tonic_types::StatusExt;
        let retry = refused.get_details_retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_secs(1)), "{refused:?}");
    }

    proxy.heal();
    eventually(
        Duration::from_secs(30),
        "SERVING again",
        is(ServingStatus::Serving),
    )
    .await;
    // The refused write can be retried with its request id; it is applied once.
    let first = projects
        .create_project(request.clone())
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    let again = projects
        .create_project(request)
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(first.name, again.name);
    assert_eq!(
        get_with(&mut projects, &before.name).await.display_name,
        "停电前"
    );
    let db = database(&scratch).await;
    let head = DEFAULT_ENTRIES as i64 + 2;
    assert_eq!(
        logged_seqs(&db, "zone").await,
        (1..=head).collect::<Vec<i64>>()
    );
}
