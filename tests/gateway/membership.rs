//! Whether every gateway has the same party list: each shows a digest of its list with every
//! pull it sends and every response it serves; a peer whose list differs is named in
//! `ListParties`, on the status page and in `yrd_membership_differs`, and stops being named
//! once its list is the same again.

use std::time::Duration;

use yrd_gateway::wire::pb;

use crate::common::*;

/// What `at` says of `peer`'s party list in `ListParties`: (its digest differs, our digest).
async fn view_of(fed: &TestFederation, at: &str, peer: &str) -> Option<(bool, Vec<u8>)> {
    let listed = pb::directory_service_client::DirectoryServiceClient::new(fed.client(at, at))
        .list_parties(pb::ListPartiesRequest {})
        .await
        .ok()?
        .into_inner();
    let view = listed.peers.iter().find(|v| v.party == peer)?;
    Some((view.differs, listed.membership_sha256))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_another_party_list_is_named_until_its_list_is_the_same() {
    let mut fed = TestFederation::start(&["zone", "anji", "guangde"]).await;
    let wait = Duration::from_secs(30);

    // All agree: each shows the same digest, and knows the others'.
    let (differs, zone_digest) = eventually(wait, "anji's digest at the zone", || {
        view_of(&fed, "zone", "anji")
    })
    .await;
    assert!(!differs);
    assert_eq!(zone_digest.len(), 32);
    let (_, anji_digest) = eventually(wait, "the zone's digest at anji", || {
        view_of(&fed, "anji", "zone")
    })
    .await;
    assert_eq!(anji_digest, zone_digest, "the same list, the same digest");

    // anji's operator renames guangde (广德县, the name before 2019) and restarts.
    let config = fed.gateways["anji"].config.clone();
    let original = std::fs::read_to_string(&config).unwrap();
    let guangde = yrd_gateway::cli::default_federation()
        .get("guangde")
        .unwrap()
        .display_name
        .clone();
    assert!(original.contains(&guangde), "{original}");
    std::fs::write(&config, original.replace(&guangde, "广德县 Guangde County")).unwrap();
    fed.gateway("anji").restart().await;

    // The zone and guangde name anji; anji names both of them.
    for (at, peer) in [
        ("zone", "anji"),
        ("guangde", "anji"),
        ("anji", "zone"),
        ("anji", "guangde"),
    ] {
        eventually(wait, &format!("{at} naming {peer}"), || async {
            view_of(&fed, at, peer)
                .await
                .filter(|(d, _)| *d)
                .map(|_| ())
        })
        .await;
    }
    let zone_admin = fed.gateways["zone"].admin;
    assert_eq!(
        peer_metric(zone_admin, "yrd_membership_differs", "anji").await,
        Some(1)
    );
    assert_eq!(
        peer_metric(zone_admin, "yrd_membership_differs", "guangde").await,
        Some(0)
    );
    let (_, page) = http_get(zone_admin, "/").await;
    assert!(page.contains("DIFFERS"), "{page}");
    // Replication goes on: the digest informs, it does not stop anyone.
    let p = create(&fed, "zone", "while anji's list differs").await;
    eventually(wait, "the project at anji", || {
        try_get(&fed, "anji", &p.name)
    })
    .await;

    // Put back: named no more.
    std::fs::write(&config, original).unwrap();
    fed.gateway("anji").restart().await;
    eventually(
        wait,
        "the zone seeing anji's list the same again",
        || async {
            view_of(&fed, "zone", "anji")
                .await
                .filter(|(d, _)| !*d)
                .map(|_| ())
        },
    )
    .await;
    let (_, page) = http_get(zone_admin, "/").await;
    assert!(!page.contains("DIFFERS"), "{page}");
    fed.stop_all().await;
}
