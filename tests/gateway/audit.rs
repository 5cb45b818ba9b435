//! SPEC §5: the tamper-evident audit trail and cross-party witnessing.

use std::collections::BTreeSet;
use std::time::Duration;

use tonic::Code;
use yrd_gateway::audit::{ChainBreak, link, verify_chain};
use yrd_gateway::store::AuditStore;
use yrd_gateway::store::sqlite::SqliteStore;
use yrd_gateway::wire::pb;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

async fn some_calls(fed: &TestFederation, party: &str, n: usize) {
    let mut projects = fed.projects(party, party);
    for i in 0..n {
        projects
            .create_project(create_request(sample_project(&format!("audited {i}"))))
            .await
            .unwrap();
    }
}

fn sql(path: &std::path::Path, statement: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(statement).unwrap();
}

async fn broken(path: &std::path::Path) -> ChainBreak {
    match verify_chain(&SqliteStore::open(path).unwrap()).await {
        Err(yrd_gateway::audit::AuditError::Broken(b)) => b,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_edits_of_the_store_are_detected_and_the_first_bad_event_named() {
    let mut fed = TestFederation::start(&["zone"]).await;
    some_calls(&fed, "zone", 10).await;
    fed.stop_all().await;
    let db = fed.root.path().join("zone/store.db");
    let config = fed.gateways["zone"].config.clone();
    let config = config.to_str().unwrap();
    let (ok, out) = cli(&["audit", "verify", "--config", config]);
    assert!(ok && out.contains("audit chain intact: 10 events"), "{out}");

    let backup = fed.root.path().join("backup.db");
    std::fs::copy(&db, &backup).unwrap();
    let restore = || std::fs::copy(&backup, &db).unwrap();

    // One field of one event.
    sql(
        &db,
        "UPDATE audit SET code = 'OK', caller = 'spiffe://yrd-huzhou/party/zone/client/x' WHERE seq = 5",
    );
    assert_eq!(broken(&db).await, ChainBreak::Changed { seq: 5 });
    let (ok, out) = cli(&["audit", "verify", "--config", config]);
    assert!(!ok && out.contains("event 5 was changed"), "{out}");
    restore();
    // One event deleted.
    sql(&db, "DELETE FROM audit WHERE seq = 7");
    assert_eq!(
        broken(&db).await,
        ChainBreak::Missing {
            expected: 7,
            found: 8
        }
    );
    restore();
    // Two events swapped.
    sql(
        &db,
        "CREATE TEMP TABLE a AS SELECT * FROM audit WHERE seq IN (3, 4);
         UPDATE audit SET time = (SELECT time FROM a WHERE seq = 4), caller = (SELECT caller FROM a WHERE seq = 4),
           method = (SELECT method FROM a WHERE seq = 4), records = (SELECT records FROM a WHERE seq = 4),
           code = (SELECT code FROM a WHERE seq = 4), request_id = (SELECT request_id FROM a WHERE seq = 4),
           prev_hash = (SELECT prev_hash FROM a WHERE seq = 4), hash = (SELECT hash FROM a WHERE seq = 4) WHERE seq = 3;
         UPDATE audit SET time = (SELECT time FROM a WHERE seq = 3), caller = (SELECT caller FROM a WHERE seq = 3),
           method = (SELECT method FROM a WHERE seq = 3), records = (SELECT records FROM a WHERE seq = 3),
           code = (SELECT code FROM a WHERE seq = 3), request_id = (SELECT request_id FROM a WHERE seq = 3),
           prev_hash = (SELECT prev_hash FROM a WHERE seq = 3), hash = (SELECT hash FROM a WHERE seq = 3) WHERE seq = 4;",
    );
    assert_eq!(broken(&db).await, ChainBreak::Relinked { seq: 3 });
    restore();
    assert!(verify_chain(&SqliteStore::open(&db).unwrap()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistently_rebuilt_chain_is_caught_by_a_peers_witness() {
    let options = Options {
        extra_toml: "[audit]\nwitness_interval_ms = 100\n".into(),
        ..Options::default()
    };
    let mut fed = TestFederation::start_with(&["zone", "guangde"], options).await;
    some_calls(&fed, "zone", 5).await;
    // Wait until guangde holds a head of the zone covering those calls.
    witnessed_heads(&fed, "guangde", "zone").await;
    fed.gateway("zone").stop().await;

    // The zone rewrites event 2 and rebuilds every hash after it: locally the chain verifies.
    let db = fed.root.path().join("zone/store.db");
    let store = SqliteStore::open(&db).unwrap();
    let events = all_events(&store).await;
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut prev = yrd_gateway::audit::GENESIS.to_vec();
    for mut e in events {
        if e.seq == 2 {
            e.event.code = "PERMISSION_DENIED".into();
        }
        let hash = link(e.digest, e.seq, &prev, &e.event);
        conn.execute(
            "UPDATE audit SET code = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![e.event.code, prev, hash, e.seq as i64],
        )
        .unwrap();
        prev = hash;
    }
    drop(conn);
    assert!(
        verify_chain(&SqliteStore::open(&db).unwrap()).await.is_ok(),
        "the forgery is locally consistent"
    );

    // The peer's signed head contradicts it.
    let config = fed.gateways["zone"].config.clone();
    let (ok, out) = audit_cli("verify", &config, &["--with-witnesses"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("CONTRADICTED: guangde holds a head signed by this party"),
        "{out}"
    );
}

/// Stops the federation and returns `party`'s whole audit trail, its chain verified.
async fn stopped_and_verified(
    fed: &mut TestFederation,
    party: &str,
) -> Vec<yrd_gateway::store::AuditEvent> {
    fed.stop_all().await;
    verified_trail(fed, party).await
}

/// `party`'s whole trail, verified (its gateway stopped).
async fn verified_trail(fed: &TestFederation, party: &str) -> Vec<yrd_gateway::store::AuditEvent> {
    let store = SqliteStore::open(&fed.root.path().join(party).join("store.db")).unwrap();
    let summary = verify_chain(&store).await.unwrap();
    let events = all_events(&store).await;
    assert_eq!(summary.events as usize, events.len());
    events
}

/// The records named by each event of `method` (a suffix) that ended with `code`, in order.
fn records_of_calls(
    events: &[yrd_gateway::store::AuditEvent],
    method: &str,
    code: &str,
) -> Vec<Vec<String>> {
    events
        .iter()
        .filter(|e| e.event.method.ends_with(method) && e.event.code == code)
        .map(|e| e.event.records.clone())
        .collect()
}

/// Every event of `store`'s trail (the tests' trails are small).
async fn all_events(store: &SqliteStore) -> Vec<yrd_gateway::store::AuditEvent> {
    store
        .audit_events(yrd_gateway::store::AuditQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_exactly_one_event_per_call_in_one_order() {
    let mut fed = TestFederation::start(&["anji"]).await;
    let mut tasks = Vec::new();
    for c in 0..10 {
        let mut directory = fed.directory("anji", "anji");
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let mut request = tonic::Request::new(pb::WhoAmIRequest {});
                request
                    .metadata_mut()
                    .insert("x-request-id", format!("c{c}-{i}").parse().unwrap());
                directory.who_am_i(request).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = stopped_and_verified(&mut fed, "anji").await;
    let ids: Vec<&str> = events
        .iter()
        .filter(|e| e.event.method == "/yrd.exchange.v1.DirectoryService/WhoAmI")
        .map(|e| e.event.request_id.as_str())
        .collect();
    assert_eq!(ids.len(), 200, "one event per call");
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 200, "no call recorded twice");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gapless, in one order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn party_systems_list_their_audit_trail_and_refusals_are_in_it() {
    let fed = TestFederation::start(&["zone"]).await;
    some_calls(&fed, "zone", 3).await;
    // Refused: another party's client, and a TLS handshake without a certificate.
    let _ = fed
        .projects("zone", "guangde")
        .list_projects(pb::ListProjectsRequest::default())
        .await;
    let mut no_cert = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates({
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(fed.pki.ca_path()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    })
    .with_no_client_auth();
    no_cert.alpn_protocols = vec![b"h2".to_vec()];
    let _ = fed.directory("zone", "zone"); // keep a valid client around
    let _ = pb::directory_service_client::DirectoryServiceClient::new(
        fed.channel_with("zone", std::sync::Arc::new(no_cert)),
    )
    .who_am_i(pb::WhoAmIRequest {})
    .await;

    let mut audit = pb::audit_service_client::AuditServiceClient::new(fed.client("zone", "zone"));
    let list = |method: &str, code: &str| pb::ListAuditEventsRequest {
        page_size: 100,
        method: method.into(),
        code: code.into(),
        ..Default::default()
    };
    let created = eventually(WAIT, "create events", || {
        let mut audit = audit.clone();
        let request = list("/yrd.exchange.v1.ProjectService/CreateProject", "OK");
        async move {
            audit
                .list_audit_events(request)
                .await
                .ok()
                .filter(|r| r.get_ref().events.len() == 3)
        }
    })
    .await
    .into_inner()
    .events;
    assert!(
        created
            .iter()
            .all(|e| e.records.len() == 1 && e.records[0].starts_with("parties/zone/projects/"))
    );
    assert!(
        created
            .iter()
            .all(|e| e.caller == "spiffe://yrd-huzhou/party/zone/client/demo")
    );
    let denied = audit
        .list_audit_events(list(
            "/yrd.exchange.v1.ProjectService/ListProjects",
            "PERMISSION_DENIED",
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(denied.len(), 1);
    assert_eq!(
        denied[0].caller,
        "spiffe://yrd-huzhou/party/guangde/client/demo"
    );
    let handshakes = eventually(WAIT, "the refused handshake", || {
        let mut audit = audit.clone();
        async move {
            audit
                .list_audit_events(list("tls-handshake", "UNAUTHENTICATED"))
                .await
                .ok()
                .filter(|r| !r.get_ref().events.is_empty())
        }
    })
    .await;
    assert!(
        handshakes.get_ref().events[0]
            .caller
            .starts_with("unknown (127.0.0.1:")
    );

    // Pagination walks everything once; a bad code name is refused.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_audit_events(pb::ListAuditEventsRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.events.iter().map(|e| e.seq));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>());
    let err = audit.list_audit_events(list("", "NOPE")).await.unwrap_err();
    assert_eq!(
        (err.code(), bad_fields(&err)),
        (Code::InvalidArgument, vec!["code".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_prune_keep_the_chain_verifiable() {
    let mut fed = TestFederation::start(&["changxing"]).await;
    some_calls(&fed, "changxing", 8).await;
    fed.stop_all().await;
    let config = fed.gateways["changxing"]
        .config
        .to_str()
        .unwrap()
        .to_string();
    let out = fed.root.path().join("export.jsonl");
    let (ok, text) = cli(&[
        "audit",
        "export",
        "--config",
        &config,
        "--through",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--prune",
    ]);
    assert!(ok, "{text}");
    let (ok, text) = cli(&["audit", "verify-export", out.to_str().unwrap()]);
    assert!(ok && text.contains("export intact: 5 events"), "{text}");
    let (ok, text) = cli(&["audit", "verify", "--config", &config]);
    assert!(
        ok && text.contains("audit chain intact: 3 events"),
        "{text}"
    );
    // A tampered export is caught.
    let tampered = std::fs::read_to_string(&out).unwrap().replacen(
        "\"code\":\"OK\"",
        "\"code\":\"NOT_FOUND\"",
        1,
    );
    std::fs::write(&out, tampered).unwrap();
    let (ok, text) = cli(&["audit", "verify-export", out.to_str().unwrap()]);
    assert!(
        !ok && text.contains("export BROKEN: event 1 was changed"),
        "{text}"
    );
    // The gateway keeps appending after the anchor.
    fed.gateway("changxing").restart().await;
    some_calls(&fed, "changxing", 1).await;
    fed.stop_all().await;
    let (ok, text) = cli(&["audit", "verify", "--config", &config]);
    assert!(
        ok && text.contains("audit chain intact: 4 events"),
        "{text}"
    );
}

/// Creates and updates commit their call's event with the record (one commit); replays and
/// refused updates are audited by the call layer as before. Either way: one event per call,
/// naming the project, with the call's outcome, in one verifiable chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_their_calls_event_once_whatever_the_outcome() {
    let mut fed = TestFederation::start(&["zone"]).await;
    let mut tasks = Vec::new();
    for c in 0..4 {
        let mut projects = fed.projects("zone", "zone");
        tasks.push(tokio::spawn(async move {
            let mut names = Vec::new();
            for i in 0..10 {
                let create = create_request(sample_project(&format!("c{c}-{i}")));
                let created = projects
                    .create_project(create.clone())
                    .await
                    .unwrap()
                    .into_inner()
                    .project
                    .unwrap();
                // The same request again: answered from the store, not written again.
                let replayed = projects.create_project(create).await.unwrap().into_inner();
                assert_eq!(replayed.project.unwrap().name, created.name);
                let mut changed = created.clone();
                changed.display_name = format!("c{c}-{i} renamed");
                let rename = || pb::UpdateProjectRequest {
                    project: Some(changed.clone()),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["display_name".into()],
                    }),
                    request_id: uuid::Uuid::now_v7().to_string(),
                };
                projects.update_project(rename()).await.unwrap();
                // The etag read before the update is stale now: refused.
                let stale = projects.update_project(rename()).await.unwrap_err();
                assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
                names.push(created.name);
            }
            names
        }));
    }
    let mut names = Vec::new();
    for t in tasks {
        names.extend(t.await.unwrap());
    }
    let events = stopped_and_verified(&mut fed, "zone").await;
    let of = |method: &str, code: &str| {
        events
            .iter()
            .filter(|e| e.event.method.ends_with(method) && e.event.code == code)
            .map(|e| e.event.records.clone())
            .collect::<Vec<_>>()
    };
    let creates = of("/CreateProject", "OK");
    assert_eq!(
        creates.len(),
        80,
        "40 creates and 40 replays, one event each"
    );
    let updates = of("/UpdateProject", "OK");
    assert_eq!(updates.len(), 40, "one event per update");
    let stale = of("/UpdateProject", "FAILED_PRECONDITION");
    assert_eq!(stale.len(), 40, "one event per refused update");
    for name in &names {
        for (what, list, n) in [
            ("create", &creates, 2),
            ("update", &updates, 1),
            ("stale", &stale, 1),
        ] {
            let naming = list
                .iter()
                .filter(|r| r.as_slice() == [name.clone()])
                .count();
            assert_eq!(naming, n, "{what} events naming {name}");
        }
    }
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gapless"
    );
}

/// Publishing and updating a catalog entry and withdrawing an access request commit their
/// call's event with the write too: one event per call, naming the written record, whether the
/// store committed it with a new version or the call layer appended it (a replay, a stale
/// etag, a withdrawal of a withdrawn request, which writes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_access_request_writes_commit_their_calls_event_once() {
    let mut fed = TestFederation::start(&["changxing", "guangde"]).await;
    let mut catalog = fed.catalog("changxing", "changxing");
    let publish = pb::PublishCatalogEntryRequest {
        entry: Some(pb::CatalogEntry {
            resource_code: "CX-AUDIT-001".into(),
            display_name: "长兴县招商项目信息".into(),
            record_kind: pb::RecordKind::Project as i32,
            items: vec![data_item(
                "contact.phone",
                pb::SharingClass::Conditional,
                "",
            )],
            sharing_class: pb::SharingClass::Unconditional as i32,
            ..Default::default()
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    let entry = catalog
        .publish_catalog_entry(publish.clone())
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    let replayed = catalog.publish_catalog_entry(publish).await.unwrap();
    assert_eq!(replayed.into_inner().entry.unwrap().name, entry.name);
    let update = || pb::UpdateCatalogEntryRequest {
        entry: Some(pb::CatalogEntry {
            conditions: "仅用于联合招商对接".into(),
            ..entry.clone()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["conditions".into()],
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    catalog.update_catalog_entry(update()).await.unwrap();
    let stale = catalog.update_catalog_entry(update()).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");

    replicated_entry(&fed, "guangde", &entry.name).await;
    let mut access = fed.access("guangde", "guangde");
    let filed = access
        .create_access_request(access_request(&entry.name, &["contact.phone"]))
        .await
        .unwrap()
        .into_inner()
        .access_request
        .unwrap();
    let withdraw = || pb::WithdrawAccessRequestRequest {
        name: filed.name.clone(),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    access.withdraw_access_request(withdraw()).await.unwrap();
    // Withdrawn already: nothing is written, and the call layer audits the call.
    access.withdraw_access_request(withdraw()).await.unwrap();

    fed.stop_all().await;
    let changxing = verified_trail(&fed, "changxing").await;
    let guangde = verified_trail(&fed, "guangde").await;
    for (events, method, code, name, n) in [
        (&changxing, "/PublishCatalogEntry", "OK", &entry.name, 2),
        (&changxing, "/UpdateCatalogEntry", "OK", &entry.name, 1),
        (
            &changxing,
            "/UpdateCatalogEntry",
            "FAILED_PRECONDITION",
            &entry.name,
            1,
        ),
        (&guangde, "/WithdrawAccessRequest", "OK", &filed.name, 2),
    ] {
        let found = records_of_calls(events, method, code);
        assert_eq!(found, vec![vec![name.clone()]; n], "{method} {code}");
    }
}

/// Proposing and withdrawing an allocation commit their call's event with the write: one event
/// per call naming the allocation, whether the store committed it with the new version or the
/// call layer appended it (a replayed proposal, a withdrawal with a stale etag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_writes_commit_their_calls_event_once() {
    let mut fed = TestFederation::start(&["zone", "guangde"]).await;
    let mut factors = fed.factors("zone", "zone");
    let propose = pb::ProposeAllocationRequest {
        allocation: Some(crate::negotiation::land_quota_proposal()),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    let proposed = factors
        .propose_allocation(propose.clone())
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();
    let replayed = factors.propose_allocation(propose).await.unwrap();
    assert_eq!(
        replayed.into_inner().allocation.unwrap().name,
        proposed.name
    );
    let withdraw = || pb::WithdrawAllocationRequest {
        name: proposed.name.clone(),
        etag: proposed.etag.clone(),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    factors.withdraw_allocation(withdraw()).await.unwrap();
    let stale = factors.withdraw_allocation(withdraw()).await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");

    fed.stop_all().await;
    let events = verified_trail(&fed, "zone").await;
    for (method, code, n) in [
        ("/ProposeAllocation", "OK", 2),
        ("/WithdrawAllocation", "OK", 1),
        ("/WithdrawAllocation", "FAILED_PRECONDITION", 1),
    ] {
        let found = records_of_calls(&events, method, code);
        assert_eq!(
            found,
            vec![vec![proposed.name.clone()]; n],
            "{method} {code}"
        );
    }
}

/// Every other write commits its call's event with what it writes as well: referring a
/// project and answering the referral, deciding an allocation, filing, answering and revoking
/// an access request. Each call has one event, naming what the call layer would name (the
/// records the call is about, then the records it made), whether the store committed it with
/// the write or the call layer appended it (a replay, a revocation of a revoked grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_commits_its_calls_event_once() {
    let mut fed = TestFederation::start(&["zone", "changxing", "guangde"]).await;
    let wait = Duration::from_secs(15);

    let project = create(&fed, "zone", "湖州新能源电池项目").await;
    let refer = pb::ReferProjectRequest {
        project: project.name.clone(),
        to_party: "guangde".into(),
        reason: "广德有可用工业用地".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    let mut zone = fed.projects("zone", "zone");
    let referral = zone.refer_project(refer.clone()).await.unwrap();
    let referral = referral.into_inner().referral.unwrap();
    let replayed = zone.refer_project(refer).await.unwrap().into_inner();
    assert_eq!(replayed.referral.unwrap().name, referral.name);
    crate::negotiation::referral_at(&fed, "guangde", &referral.name, pb::ReferralState::Pending)
        .await;
    eventually(wait, "the project at guangde", || {
        try_get(&fed, "guangde", &project.name)
    })
    .await;
    let accepted = crate::negotiation::respond(&fed, "guangde", &referral.name, true)
        .await
        .unwrap();
    assert!(!accepted.accepted_project.is_empty());

    let allocation =
        crate::negotiation::propose(&fed, "zone", crate::negotiation::land_quota_proposal()).await;
    eventually(wait, "the allocation at guangde", || {
        crate::negotiation::get_allocation(&fed, "guangde", &allocation.name)
    })
    .await;
    let decide = crate::negotiation::decide_request(&allocation.name, 1, pb::Verdict::Approve);
    let mut factors = fed.factors("guangde", "guangde");
    let decided = factors.decide_allocation(decide.clone()).await.unwrap();
    let decision = decided.into_inner().decision.unwrap();
    let replayed = factors
        .decide_allocation(decide)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.decision.unwrap().name, decision.name);

    let request = crate::grants::granted_phones(&fed).await;
    let entry = crate::grants::request_at(&fed, "guangde", &request)
        .await
        .unwrap()
        .entry;
    let mut access = fed.access("changxing", "changxing");
    access
        .revoke_access_grant(crate::grants::revoke(&request, "对接结束"))
        .await
        .unwrap();
    // Revoked already: nothing is written, and the call layer audits the call.
    access
        .revoke_access_grant(crate::grants::revoke(&request, "again"))
        .await
        .unwrap();

    fed.stop_all().await;
    let zone = verified_trail(&fed, "zone").await;
    let changxing = verified_trail(&fed, "changxing").await;
    let guangde = verified_trail(&fed, "guangde").await;
    let names = |list: &[&String]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (events, method, expected, n) in [
        (
            &zone,
            "/ReferProject",
            names(&[&project.name, &referral.name]),
            2,
        ),
        (
            &guangde,
            "/RespondToReferral",
            names(&[&referral.name, &accepted.accepted_project]),
            1,
        ),
        (
            &guangde,
            "/DecideAllocation",
            names(&[&allocation.name, &decision.name]),
            2,
        ),
        (
            &guangde,
            "/CreateAccessRequest",
            names(&[&entry, &request]),
            1,
        ),
        (&changxing, "/AnswerAccessRequest", names(&[&request]), 1),
        (&changxing, "/RevokeAccessGrant", names(&[&request]), 2),
    ] {
        let found = records_of_calls(events, method, "OK");
        assert_eq!(found, vec![expected; n], "{method}");
    }
}
