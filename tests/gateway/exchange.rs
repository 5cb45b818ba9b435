//! SPEC §4: replication between real gateways over real mutual TLS: delivery within the
//! catalog, crashes and network cuts, who may pull. Hostile peers and paths are in
//! [`hostile`], Watch in [`watch`].

mod hostile;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tonic::Code;
use yrd_gateway::identity::tls;
use yrd_gateway::store::{RecordStore, ReplicaStore};
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::federation_service_client::FederationServiceClient;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

async fn replicated(fed: &TestFederation, gateway: &str, name: &str) -> pb::Project {
    eventually(WAIT, &format!("{name} at {gateway}"), || {
        try_get(fed, gateway, name)
    })
    .await
}

fn allocation() -> pb::Allocation {
    pb::Allocation {
        kind: pb::FactorKind::EnergyQuota as i32,
        quantity: "1500.5".into(),
        from_party: "changxing".into(),
        to_party: "zone".into(),
        benefit_shares: vec![pb::BenefitShare {
            party: "zone".into(),
            basis_points: 10_000,
        }],
        valid_until: Some(prost_types::Timestamp::from(
            std::time::SystemTime::now() + Duration::from_secs(86_400),
        )),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_project_reaches_every_party_within_its_catalog() {
    // The zone publishes its own catalog: projects to everyone with contact phones open to
    // the Zhejiang members only; allocations CONDITIONAL, so without a grant no one gets them.
    let options = Options {
        without_default_catalog: vec!["zone".to_string()],
        ..Options::default()
    };
    let fed = TestFederation::start_with(&PARTIES, options).await;
    let mut phone = data_item("contact.phone", pb::SharingClass::Conditional, "");
    phone.open_to = vec!["changxing".into(), "anji".into()];
    let entries = [
        (
            pb::RecordKind::Project,
            pb::SharingClass::Unconditional,
            vec![phone],
        ),
        (
            pb::RecordKind::Allocation,
            pb::SharingClass::Conditional,
            vec![data_item("description", pb::SharingClass::Unspecified, "")],
        ),
    ];
    for (kind, class, items) in entries {
        fed.catalog("zone", "zone")
            .publish_catalog_entry(pb::PublishCatalogEntryRequest {
                entry: Some(pb::CatalogEntry {
                    resource_code: format!("ZONE-{}", kind.as_str_name()),
                    display_name: "zone records".into(),
                    record_kind: kind as i32,
                    items,
                    sharing_class: class as i32,
                    ..Default::default()
                }),
                request_id: uuid::Uuid::now_v7().to_string(),
            })
            .await
            .unwrap();
    }
    let project = create(&fed, "zone", "shared with everyone").await;
    let proposed = fed
        .factors("zone", "zone")
        .propose_allocation(pb::ProposeAllocationRequest {
            allocation: Some(allocation()),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();

    for party in ["changxing", "anji", "guangde"] {
        let copy = replicated(&fed, party, &project.name).await;
        assert_eq!(copy.owner, "zone", "replicas are marked with their owner");
        assert_eq!(copy.etag, project.etag, "same version everywhere");
        assert_eq!(copy.display_name, project.display_name);
        let phone = copy.contact.as_ref().unwrap().phone.clone();
        if party == "guangde" {
            assert_eq!(
                phone, "",
                "contact phones do not cross the provincial border"
            );
            assert_eq!(copy.contact.as_ref().unwrap().name, "张三");
        } else {
            assert_eq!(phone, "+86 138-0000-0000");
        }
        // Replicas are listed too.
        let listed = fed
            .projects(party, party)
            .list_projects(pb::ListProjectsRequest {
                owner: "zone".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.projects.len(), 1);
    }
    // Every party has applied the zone's four changes (two entries, the project, the
    // allocation), but the allocation was sent to no one.
    for party in ["changxing", "anji", "guangde"] {
        eventually(WAIT, "cursor at the zone's head", || async {
            (fed.gateways[party].peer("zone").cursor == 4).then_some(())
        })
        .await;
        let err = fed
            .factors(party, party)
            .get_allocation(pb::GetAllocationRequest {
                name: proposed.name.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{party}");
        let all = fed
            .factors(party, party)
            .list_allocations(pb::ListAllocationsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(all.allocations.is_empty(), "{party}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_stream_loses_nothing_and_applies_nothing_twice() {
    const TOTAL: usize = 3000;
    let fed = TestFederation::start(&["zone"]).await;
    let root = fed.root.path();
    let config = write_config(
        root,
        "guangde",
        "127.0.0.1:0",
        &[("zone".to_string(), fed.addr("zone").to_string())],
        &Options::default(),
    );
    let receiver = ChildGateway::spawn(&config);
    let guangde_count = |addr: std::net::SocketAddr| {
        let pki = &fed.pki;
        async move {
            let channel = tls::channel(
                &addr.to_string(),
                "localhost",
                pki.client_config("guangde", "client"),
            )
            .unwrap();
            let mut client = pb::project_service_client::ProjectServiceClient::new(channel);
            all_projects(&mut client).await
        }
    };

    // Four writers create TOTAL projects at the zone while guangde follows.
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut client = fed.projects("zone", "zone");
        writers.push(tokio::spawn(async move {
            for i in 0..TOTAL / 4 {
                let request = create_request(sample_project(&format!("writer {w} #{i}")));
                client.create_project(request).await.unwrap();
            }
        }));
    }
    let addr = receiver.addr;
    let seen_at_kill = eventually(WAIT, "guangde in the middle of the stream", || async {
        let n = guangde_count(addr).await.len();
        (n >= 500).then_some(n)
    })
    .await;
    receiver.kill_9();
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        seen_at_kill < TOTAL,
        "the kill should land mid-stream ({seen_at_kill})"
    );

    let restarted = ChildGateway::spawn(&config);
    let addr = restarted.addr;
    let copies = eventually(Duration::from_secs(60), "guangde caught up", || async {
        let all = guangde_count(addr).await;
        (all.len() >= TOTAL).then_some(all)
    })
    .await;
    restarted.kill_9();

    let names: BTreeSet<String> = copies.iter().map(|p| p.name.clone()).collect();
    assert_eq!(copies.len(), TOTAL, "no duplicates");
    let originals: BTreeSet<String> = all_projects(&mut fed.projects("zone", "zone"))
        .await
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, originals, "no loss");

    // The receiver's own bookkeeping: cursor at the head, each change once in its feed.
    let store =
        yrd_gateway::store::sqlite::SqliteStore::open(&root.join("guangde/store.db")).unwrap();
    let head = TOTAL as u64 + DEFAULT_ENTRIES;
    assert_eq!(store.cursor("zone").await.unwrap(), head);
    let feed = store.feed(0, TOTAL * 2).await.unwrap();
    let seqs: Vec<u64> = feed
        .iter()
        .filter(|e| e.change.owner == "zone")
        .map(|e| e.change.seq)
        .collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    println!(
        "killed guangde with {seen_at_kill} of {TOTAL} applied; it resumed and applied the rest once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_network_cut_both_sides_converge_without_help() {
    let to_zone = TcpProxy::start().await;
    let to_guangde = TcpProxy::start().await;
    let options = Options {
        routes: HashMap::from([
            (
                ("guangde".to_string(), "zone".to_string()),
                to_zone.addr.to_string(),
            ),
            (
                ("zone".to_string(), "guangde".to_string()),
                to_guangde.addr.to_string(),
            ),
        ]),
        ..Options::default()
    };
    let fed = TestFederation::start_with(&["zone", "guangde"], options).await;
    to_zone.set_upstream(fed.addr("zone"));
    to_guangde.set_upstream(fed.addr("guangde"));

    let before = create(&fed, "zone", "before the cut").await;
    replicated(&fed, "guangde", &before.name).await;

    to_zone.cut();
    to_guangde.cut();
    let mut zone_side = Vec::new();
    let mut guangde_side = Vec::new();
    for i in 0..5 {
        zone_side.push(
            create(&fed, "zone", &format!("zone during cut {i}"))
                .await
                .name,
        );
        guangde_side.push(
            create(&fed, "guangde", &format!("guangde during cut {i}"))
                .await
                .name,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        try_get(&fed, "guangde", &zone_side[0]).await.is_none(),
        "the cut did not cut"
    );
    assert!(
        try_get(&fed, "zone", &guangde_side[0]).await.is_none(),
        "the cut did not cut"
    );

    to_zone.heal();
    to_guangde.heal();
    for name in &zone_side {
        replicated(&fed, "guangde", name).await;
    }
    for name in &guangde_side {
        replicated(&fed, "zone", name).await;
    }
    assert_eq!(
        fed.gateways["guangde"].peer("zone").cursor,
        DEFAULT_ENTRIES + 6
    );
    assert_eq!(
        fed.gateways["zone"].peer("guangde").cursor,
        DEFAULT_ENTRIES + 5
    );
}

#[tokio::test]
async fn a_client_identity_cannot_pull_and_a_peer_cannot_pull_another_owner() {
    let fed = TestFederation::start(&["zone"]).await;
    let err = FederationServiceClient::new(fed.client("zone", "zone"))
        .pull_changes(pb::PullChangesRequest {
            owner: "zone".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let peer = fed.channel_with("zone", fed.pki.client_config("anji", "gateway"));
    let err = FederationServiceClient::new(peer)
        .pull_changes(pb::PullChangesRequest {
            owner: "changxing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["owner".to_string()]);
}
