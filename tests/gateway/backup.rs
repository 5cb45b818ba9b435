//! Backing up a running party's store and restoring it on a new machine: the restored
//! gateway holds writes until its peers have given back the changes it made after the backup
//! (signed by its own key, checked like evidence), pulls what it missed from them, and then
//! writes on without reusing a sequence number a peer already holds; its audit chain and the
//! evidence it keeps still verify. Also the safety net for a store copied back by hand (no
//! restore mark): the first peer that asks for more than the store holds stops writes the same
//! way. A PostgreSQL store backed up with `pg_dump` and restored with `pg_restore`. And a peer
//! that forges what it gives back: refused, audited, never applied.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;
use yrd_gateway::identity::signer::ChangeSigner;
use yrd_gateway::identity::tls;
use yrd_gateway::store::postgres::testing;
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::federation_service_client::FederationServiceClient;
use yrd_gateway::wire::pb::federation_service_server::{
    FederationService, FederationServiceServer,
};

use crate::common::*;
use crate::replicas::{config as child_config, free_addr, projects_at};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `yrd-gateway store backup --config CONFIG --out BACKUP`.
fn back_up(config: &Path, backup: &Path) -> (bool, String) {
    cli(&[
        "store",
        "backup",
        "--config",
        path(config),
        "--out",
        path(backup),
    ])
}

/// Waits until every project named is readable at `gateway`; returns them.
async fn arrived(fed: &TestFederation, gateway: &str, names: &[&str]) -> Vec<pb::Project> {
    let mut out = Vec::new();
    for name in names {
        out.push(
            eventually(
                Duration::from_secs(30),
                &format!("{name} at {gateway}"),
                || try_get(fed, gateway, name),
            )
            .await,
        );
    }
    out
}

/// Creates a project through a client from `client`, retrying while writes are held; panics
/// on any other error.
async fn create_when_writes_resume(
    client: impl Fn() -> pb::project_service_client::ProjectServiceClient<tonic::transport::Channel>,
    title: &str,
) -> pb::Project {
    eventually(Duration::from_secs(60), "writes to resume", || async {
        match client()
            .create_project(create_request(sample_project(title)))
            .await
        {
            Ok(r) => r.into_inner().project,
            Err(s) if s.code() == Code::Unavailable && error_reason(&s) == "WRITES_HELD" => None,
            Err(s) => panic!("create {title} failed: {s:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_restored_store_takes_back_what_it_wrote_after_the_backup_and_catches_up() {
    let mut fed = TestFederation::start(&["zone", "anji", "guangde"]).await;
    let root = fed.root.path().to_owned();
    let config = fed.gateways["zone"].config.clone();
    let backup = root.join("zone-backup.db");

    let p1_request = create_request(sample_project("before the backup"));
    let p1 = fed
        .projects("zone", "zone")
        .create_project(p1_request.clone())
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    arrived(&fed, "anji", &[&p1.name]).await;
    arrived(&fed, "guangde", &[&p1.name]).await;

    // Backed up while the gateway runs, by another process.
    let (ok, out) = back_up(&config, &backup);
    assert!(ok, "{out}");
    assert!(out.contains("integrity ok"), "{out}");
    let (ok, out) = back_up(&config, &backup);
    assert!(!ok && out.contains("refusing to overwrite"), "{out}");

    // After the backup: two more writes at the zone (held by both peers), one at anji.
    let p2 = create(&fed, "zone", "after the backup").await;
    let p3 = create(&fed, "zone", "after the backup, too").await;
    let a1 = create(&fed, "anji", "anji's, after the backup").await;
    arrived(&fed, "anji", &[&p2.name, &p3.name]).await;
    arrived(&fed, "guangde", &[&p2.name, &p3.name]).await;
    arrived(&fed, "zone", &[&a1.name]).await;

    // The zone's machine is lost; its peers are down for a while too.
    fed.gateway("zone").stop().await;
    fed.gateway("anji").stop().await;
    fed.gateway("guangde").stop().await;
    std::fs::rename(root.join("zone"), root.join("zone-lost")).unwrap();

    let (ok, out) = cli(&["store", "restore", "--config", path(&config), path(&backup)]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["store", "restore", "--config", path(&config), path(&backup)]);
    assert!(!ok && out.contains("refusing to overwrite"), "{out}");

    // Restarted with no peer reachable: reads work, writes are held (a write now could take
    // a sequence number the peers already hold p2 under).
    fed.gateway("zone").restart().await;
    assert!(try_get(&fed, "zone", &p1.name).await.is_some());
    assert!(try_get(&fed, "zone", &p2.name).await.is_none());
    let held = fed
        .projects("zone", "zone")
        .create_project(create_request(sample_project("too early")))
        .await
        .unwrap_err();
    assert_eq!(held.code(), Code::Unavailable, "{held:?}");
    assert_eq!(error_reason(&held), "WRITES_HELD");
    assert!(held.message().contains("anji"), "{}", held.message());
    // A retry of a create the backup holds still gets its first answer.
    let retried = fed
        .projects("zone", "zone")
        .create_project(p1_request)
        .await
        .expect("a retry is answered while writes are held")
        .into_inner()
        .project
        .unwrap();
    assert_eq!(retried, p1);
    let admin = fed.gateways["zone"].admin;
    assert_eq!(metric(admin, "yrd_writes_held").await, 1);
    let (_, page) = http_get(admin, "/").await;
    assert!(page.contains("WRITES HELD"), "{page}");

    // The peers return: the zone takes back p2 and p3 (with the phone anji was allowed to
    // hold and guangde was not), catches up with anji's project and writes on.
    fed.gateway("anji").restart().await;
    fed.gateway("guangde").restart().await;
    let p4 = create_when_writes_resume(|| fed.projects("zone", "zone"), "after the restore").await;
    let back = arrived(&fed, "zone", &[&p2.name, &p3.name, &a1.name]).await;
    assert_eq!(
        back[0], p2,
        "taken back whole, from the copy with the most items"
    );
    assert_eq!(back[1], p3);
    assert_eq!(metric(admin, "yrd_changes_taken_back_total").await, 2);
    assert_eq!(metric(admin, "yrd_writes_held").await, 0);
    // The new write reaches both peers: its sequence number follows what they hold.
    arrived(&fed, "anji", &[&p4.name]).await;
    arrived(&fed, "guangde", &[&p4.name]).await;
    let events = audit_events_of(&fed, "zone", "exchange/take-back").await;
    assert!(
        events[0].request_id.contains("taken back from"),
        "{:?}",
        events[0]
    );

    // Chain and evidence verify at the restored zone and at a peer.
    for party in ["zone", "anji"] {
        let config = fed.gateways[party].config.clone();
        for check in ["verify", "verify-evidence"] {
            let (ok, out) = cli(&["audit", check, "--config", path(&config)]);
            assert!(ok, "audit {check} at {party}: {out}");
        }
    }

    // The restore mark is gone: a later start does not hold writes, even with no peer up.
    fed.gateway("anji").stop().await;
    fed.gateway("guangde").stop().await;
    fed.gateway("zone").restart().await;
    create(&fed, "zone", "after a plain restart").await;
    fed.stop_all().await;
}

#[tokio::test]
async fn a_store_copied_back_by_hand_holds_writes_when_a_peer_asks_beyond_it() {
    let mut fed = TestFederation::start(&["zone", "anji"]).await;
    let root = fed.root.path().to_owned();
    let config = fed.gateways["zone"].config.clone();
    let backup = root.join("zone-backup.db");
    let p1 = create(&fed, "zone", "before the backup").await;
    arrived(&fed, "anji", &[&p1.name]).await;
    let (ok, out) = back_up(&config, &backup);
    assert!(ok, "{out}");
    let p2 = create(&fed, "zone", "after the backup").await;
    arrived(&fed, "anji", &[&p2.name]).await;

    // Put back with cp, not `store restore`: no mark says the store is old.
    fed.gateway("zone").stop().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(root.join(format!("zone/store.db{suffix}")));
    }
    std::fs::copy(&backup, root.join("zone/store.db")).unwrap();
    fed.gateway("zone").restart().await;

    // anji asks for changes after p2's: the zone sees it is behind, takes p2 back.
    let back = arrived(&fed, "zone", &[&p2.name]).await;
    assert_eq!(back[0], p2);
    let p3 = create_when_writes_resume(|| fed.projects("zone", "zone"), "after the copy").await;
    arrived(&fed, "anji", &[&p3.name]).await;
    assert_eq!(
        metric(fed.gateways["zone"].admin, "yrd_changes_taken_back_total").await,
        1
    );
    fed.stop_all().await;
}

/// A PostgreSQL client program (`pg_dump`, `pg_restore`) of the test server's version:
/// `tests/with-postgres.sh` names its folder, else the newest installed, else the PATH.
fn pg_tool(name: &str) -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("YRD_TEST_POSTGRES_BIN") {
        return Path::new(&dir).join(name);
    }
    let mut installed: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    installed.sort();
    installed.pop().unwrap_or_else(|| name.into())
}

fn run_pg_tool(name: &str, args: &[&str]) {
    let out = Command::new(pg_tool(name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_restored_with_pg_restore_takes_back_and_catches_up() {
    let url = testing::scratch_database().await;
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let (zone_addr, anji_addr) = (free_addr(), free_addr());
    let zone_peers = [("anji".to_string(), anji_addr.to_string())];
    let zone_config = |name: &str, url: &str| {
        child_config(
            root.path(),
            name,
            "zone",
            zone_addr,
            free_addr(),
            &zone_peers,
            Some(url),
        )
    };
    let anji_config = child_config(
        root.path(),
        "anji",
        "anji",
        anji_addr,
        free_addr(),
        &[("zone".to_string(), zone_addr.to_string())],
        None,
    );
    let zone = ChildGateway::spawn(&zone_config("zone", &url));
    let anji = ChildGateway::spawn(&anji_config);
    let at_anji = |name: String| {
        let pki = &pki;
        async move {
            eventually(Duration::from_secs(30), "the project at anji", || async {
                projects_at(pki, anji_addr, "anji")
                    .get_project(pb::GetProjectRequest { name: name.clone() })
                    .await
                    .ok()
            })
            .await
        }
    };
    let p1 = create_with(&mut projects_at(&pki, zone_addr, "zone"), "before the dump").await;
    at_anji(p1.name.clone()).await;

    let dump = root.path().join("zone.dump");
    run_pg_tool(
        "pg_dump",
        &["--format=custom", "--file", path(&dump), "--dbname", &url],
    );
    let p2 = create_with(&mut projects_at(&pki, zone_addr, "zone"), "after the dump").await;
    at_anji(p2.name.clone()).await;
    zone.kill_9();
    anji.kill_9();

    // A new database server, as on a new machine: restored, marked, started.
    let restored = testing::scratch_database().await;
    run_pg_tool(
        "pg_restore",
        &["--no-owner", "--dbname", &restored, path(&dump)],
    );
    let config = zone_config("zone-restored", &restored);
    let (ok, out) = cli(&["store", "restore", "--config", path(&config)]);
    assert!(ok && out.contains("marked restored"), "{out}");
    let _zone = ChildGateway::spawn(&config);
    // The mark holds writes while anji, which holds p2, is down.
    let held = projects_at(&pki, zone_addr, "zone")
        .create_project(create_request(sample_project("too early")))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&held), "WRITES_HELD", "{held:?}");
    let _anji = ChildGateway::spawn(&anji_config);

    let p3 =
        create_when_writes_resume(|| projects_at(&pki, zone_addr, "zone"), "after the restore")
            .await;
    let back = get_with(&mut projects_at(&pki, zone_addr, "zone"), &p2.name).await;
    assert_eq!(back, p2);
    at_anji(p3.name.clone()).await;
    let (ok, out) = cli(&["audit", "verify", "--config", path(&config)]);
    assert!(ok, "{out}");
}

/// What the relay between the restored zone and guangde does to what guangde gives back.
const GIVE_BACK_AS_IS: u8 = 0;
/// A byte of the first change's envelope altered (its title, say).
const ALTER: u8 = 1;
/// One more change after the last, made up by the peer and signed with its own key.
const INVENT: u8 = 2;

/// Stands between the zone and guangde as guangde (the test holds its key), forwarding every
/// call to the real guangde as the zone, and altering what `ReturnChanges` gives back on
/// demand: a peer that turned hostile while the zone was down.
struct ForgingPeer {
    upstream: FederationServiceClient<tonic::transport::Channel>,
    mode: Arc<AtomicU8>,
    /// guangde's own signing key, for the invented change.
    own_signer: Arc<ChangeSigner>,
}

type Forwarded<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl FederationService for ForgingPeer {
    type PullChangesStream = Forwarded<pb::PullChangesResponse>;
    type ReturnChangesStream = Forwarded<pb::ReturnChangesResponse>;

    async fn pull_changes(
        &self,
        request: tonic::Request<pb::PullChangesRequest>,
    ) -> Result<tonic::Response<Self::PullChangesStream>, tonic::Status> {
        let stream = self
            .upstream
            .clone()
            .pull_changes(request.into_inner())
            .await?
            .into_inner();
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn return_changes(
        &self,
        request: tonic::Request<pb::ReturnChangesRequest>,
    ) -> Result<tonic::Response<Self::ReturnChangesStream>, tonic::Status> {
        let upstream = self
            .upstream
            .clone()
            .return_changes(request.into_inner())
            .await?
            .into_inner();
        let mode = self.mode.load(Ordering::SeqCst);
        let signer = self.own_signer.clone();
        let stream = upstream.map(move |item| {
            let mut response = item?;
            match (mode, response.changes.last().cloned()) {
                (ALTER, Some(_)) => {
                    let first = &mut response.changes[0];
                    let mut envelope = pb::ChangeEnvelope::decode(first.envelope.as_slice())
                        .map_err(|e| tonic::Status::internal(e.to_string()))?;
                    envelope.record_json = envelope
                        .record_json
                        .iter()
                        .map(|b| if *b == b'a' { b'o' } else { *b })
                        .collect();
                    first.envelope = envelope.encode_to_vec();
                }
                (INVENT, Some(last)) => {
                    let mut envelope = pb::ChangeEnvelope::decode(last.envelope.as_slice())
                        .map_err(|e| tonic::Status::internal(e.to_string()))?;
                    envelope.seq += 1;
                    envelope.record_id = format!("{}-invented", envelope.record_id);
                    let bytes = envelope.encode_to_vec();
                    let (scheme, signature) = signer.sign(&bytes).unwrap();
                    response.changes.push(pb::KeptChange {
                        seq: last.seq + 1,
                        envelope: bytes,
                        scheme: u32::from(scheme),
                        signature,
                        signer_certificate: signer.certificate().to_vec(),
                        manifest: None,
                        received_time: last.received_time,
                        erased_sha256: Vec::new(),
                    });
                }
                _ => {}
            }
            Ok(response)
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn witness_head(
        &self,
        request: tonic::Request<pb::WitnessHeadRequest>,
    ) -> Result<tonic::Response<pb::WitnessHeadResponse>, tonic::Status> {
        self.upstream
            .clone()
            .witness_head(request.into_inner())
            .await
    }

    async fn list_witnessed_heads(
        &self,
        request: tonic::Request<pb::ListWitnessedHeadsRequest>,
    ) -> Result<tonic::Response<pb::ListWitnessedHeadsResponse>, tonic::Status> {
        self.upstream
            .clone()
            .list_witnessed_heads(request.into_inner())
            .await
    }
}

/// After a restore, the only peer gives back changes that are not the zone's: first one
/// altered (refused, nothing taken back, writes held, named on the status page), then one
/// invented and signed by the peer itself after the genuine ones (the genuine ones taken back,
/// the invented one refused). Each refusal is counted and audited with its reason; nothing the
/// peer made up is ever applied, and the zone writes on once the peer's pulls show what it
/// holds.
#[tokio::test]
async fn changes_a_peer_forges_while_giving_them_back_are_refused_and_never_applied() {
    let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay_listener.local_addr().unwrap().to_string();
    let options = Options {
        routes: HashMap::from([(("zone".to_string(), "guangde".to_string()), relay_addr)]),
        ..Options::default()
    };
    let mut fed = TestFederation::start_with(&["zone", "guangde"], options).await;
    let mode = Arc::new(AtomicU8::new(GIVE_BACK_AS_IS));
    let relay = ForgingPeer {
        upstream: FederationServiceClient::new(
            tls::channel(
                &fed.addr("guangde").to_string(),
                "localhost",
                fed.pki.client_config("zone", "gateway"),
            )
            .unwrap(),
        ),
        mode: mode.clone(),
        own_signer: Arc::new(ChangeSigner::from_files(&fed.pki.gateway_paths("guangde")).unwrap()),
    };
    let server_tls = tls::TlsMaterial::load(&fed.pki.gateway_paths("guangde"))
        .unwrap()
        .fixed();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FederationServiceServer::new(relay))
            .serve_with_incoming(tls::incoming(relay_listener, server_tls, None)),
    );

    let root = fed.root.path().to_owned();
    let config = fed.gateways["zone"].config.clone();
    let backup = root.join("zone-backup.db");
    let p1 = create(&fed, "zone", "before the backup").await;
    arrived(&fed, "guangde", &[&p1.name]).await;
    let (ok, out) = back_up(&config, &backup);
    assert!(ok, "{out}");
    let p2 = create(&fed, "zone", "a project after the backup").await;
    let p3 = create(&fed, "zone", "another after the backup").await;
    arrived(&fed, "guangde", &[&p2.name, &p3.name]).await;

    fed.gateway("zone").stop().await;
    std::fs::rename(root.join("zone"), root.join("zone-lost")).unwrap();
    let (ok, out) = cli(&["store", "restore", "--config", path(&config), path(&backup)]);
    assert!(ok, "{out}");

    // The first change given back altered: refused, nothing taken back.
    mode.store(ALTER, Ordering::SeqCst);
    fed.gateway("zone").restart().await;
    let admin = fed.gateways["zone"].admin;
    refused(&fed, 0, "change 7 given back: its manifest does not list").await;
    let held = fed
        .projects("zone", "zone")
        .create_project(create_request(sample_project("while forged")))
        .await
        .unwrap_err();
    assert_eq!(error_reason(&held), "WRITES_HELD", "{held:?}");
    let (_, page) = http_get(admin, "/").await;
    assert!(
        page.contains("WRITES HELD") && page.contains("refused guangde: change 7"),
        "{page}"
    );
    assert!(try_get(&fed, "zone", &p2.name).await.is_none());
    assert_eq!(metric(admin, "yrd_changes_taken_back_total").await, 0);

    // The two genuine changes, then one the peer made up and signed itself: the genuine ones
    // verify and are taken back, the invented one is refused. The peer's own pulls then show
    // it holds nothing beyond them, so writes resume even while it keeps inventing.
    mode.store(INVENT, Ordering::SeqCst);
    let failures = metric(admin, "yrd_take_back_failures_total").await;
    refused(
        &fed,
        failures,
        "change 9 given back: signer certificate refused",
    )
    .await;
    let back = arrived(&fed, "zone", &[&p2.name, &p3.name]).await;
    assert_eq!(back[0].display_name, p2.display_name);
    assert_eq!(back[1].etag, p3.etag);
    assert_eq!(metric(admin, "yrd_changes_taken_back_total").await, 2);
    assert!(
        try_get(&fed, "zone", &format!("{}-invented", p3.name))
            .await
            .is_none()
    );

    let p4 =
        create_when_writes_resume(|| fed.projects("zone", "zone"), "after the forgeries").await;
    arrived(&fed, "guangde", &[&p4.name]).await;
    assert_eq!(metric(admin, "yrd_changes_taken_back_total").await, 2);
    let (ok, out) = cli(&["audit", "verify-evidence", "--config", path(&config)]);
    assert!(ok, "{out}");
    fed.stop_all().await;
}

/// Waits until an attempt after `failures` failed attempts was refused with `why`: counted
/// and audited with the reason.
async fn refused(fed: &TestFederation, failures: u64, why: &str) {
    let admin = fed.gateways["zone"].admin;
    eventually(Duration::from_secs(60), why, || async {
        (metric(admin, "yrd_take_back_failures_total").await > failures).then_some(())
    })
    .await;
    audit_events_until(
        fed,
        "zone",
        "exchange/take-back",
        "INVALID_ARGUMENT",
        |events| {
            events
                .iter()
                .any(|e| e.request_id.contains(&format!("refused: guangde: {why}")))
        },
    )
    .await;
}
