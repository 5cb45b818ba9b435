//! Whether every gateway has the same party list: each shows a digest of its list with every
//! pull it sends and every response it serves; a peer whose list differs is named in
//! `ListParties`, on the status page and in `yrd_membership_differs`, and stops being named
//! once its list is the same again.

use std::time::Duration;

use yrd_gateway::domain::{Federation, PartyInfo};
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

/// The shipped four and 上海临港 after them.
fn with_lingang() -> Federation {
    let mut parties = federation().parties().to_vec();
    parties.push(PartyInfo {
        id: "lingang".into(),
        display_name: "中国（上海）自由贸易试验区临港新片区 Lingang".into(),
        province: "Shanghai".into(),
        division_code: String::new(),
        suspended: false,
    });
    Federation::new(parties).unwrap()
}

/// Rewrites `party`'s config (same address, default options) with `list` as its party list
/// and every other party in `running` as a peer: what its operator does to change it.
fn rewrite(fed: &TestFederation, party: &str, running: &[&str], list: Federation) {
    let peers: Vec<(String, String)> = running
        .iter()
        .filter(|p| **p != party)
        .map(|p| (p.to_string(), fed.addr(p).to_string()))
        .collect();
    write_config_of(
        fed.root.path(),
        party,
        &fed.addr(party).to_string(),
        &peers,
        &Options::default(),
        list,
    );
}

/// The party ids `at` lists in `ListParties`, and whether any peer's list differs.
async fn parties_at(fed: &TestFederation, at: &str) -> (Vec<(String, bool)>, bool) {
    let listed = fed
        .directory(at, at)
        .list_parties(pb::ListPartiesRequest {})
        .await
        .unwrap()
        .into_inner();
    (
        listed
            .parties
            .iter()
            .map(|p| (p.id.clone(), p.suspended))
            .collect(),
        listed.peers.iter().any(|v| v.differs),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_party_joins_a_running_federation_and_no_gateway_restarts() {
    let four = ["zone", "changxing", "anji", "guangde"];
    let mut fed = TestFederation::start(&four).await;
    let wait = Duration::from_secs(60);
    let earlier = create(&fed, "zone", "before lingang joined").await;
    // A Watch on the zone, opened now: it stays open through the change, so the zone's
    // gateway was never restarted (a restart ends every stream).
    let mut zone_watch = fed.watching("zone").await;

    // lingang's operator: certificates from the federation CA, a config listing all five,
    // the gateway started with an empty store.
    yrd_gateway::identity::pki::init_dev_pki(
        &fed.pki.dir,
        TRUST_DOMAIN,
        &["lingang".into()],
        fed.pki.profile,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lingang_addr = listener.local_addr().unwrap().to_string();
    let five = [&four[..], &["lingang"]].concat();
    let peers: Vec<(String, String)> = four
        .iter()
        .map(|p| (p.to_string(), fed.addr(p).to_string()))
        .collect();
    let config = write_config_of(
        fed.root.path(),
        "lingang",
        &lingang_addr,
        &peers,
        &Options::default(),
        with_lingang(),
    );
    fed.launch("lingang", config, listener).await;

    // The four operators add lingang to [[parties]] and [[peers]]; nobody restarts.
    for party in four {
        rewrite(&fed, party, &five, with_lingang());
    }

    // lingang pulls what it is entitled to from history...
    eventually(wait, "the zone's earlier project at lingang", || {
        try_get(&fed, "lingang", &earlier.name)
    })
    .await;
    // ...and what it writes reaches all four.
    let from_lingang = create(&fed, "lingang", "written at lingang").await;
    for party in four {
        eventually(wait, &format!("lingang's project at {party}"), || {
            try_get(&fed, party, &from_lingang.name)
        })
        .await;
    }
    // The zone's Watch, opened before lingang existed, delivers it.
    loop {
        let p = next_project(&mut zone_watch).await;
        if p.name == from_lingang.name {
            break;
        }
    }
    // All five list the same five parties, and nobody's list differs.
    for party in &five {
        let (listed, differs) = eventually(wait, "the same lists everywhere", || async {
            let (listed, differs) = parties_at(&fed, party).await;
            (listed.len() == 5 && !differs).then_some((listed, differs))
        })
        .await;
        assert_eq!(listed[4], ("lingang".to_string(), false), "at {party}");
        assert!(!differs);
    }
    for party in four {
        let admin = fed.gateways[party].admin;
        let applied = metric(admin, "yrd_config_reloads_total{result=\"applied\"}").await;
        assert_eq!(applied, 1, "{party}");
        assert_eq!(
            metric(admin, "yrd_config_reload_refused").await,
            0,
            "{party}"
        );
    }
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_or_removed_party_is_refused_at_once_and_what_it_sent_stays_verifiable() {
    let three = ["zone", "anji", "guangde"];
    let mut fed = TestFederation::start(&three).await;
    let wait = Duration::from_secs(60);
    let from_anji = create(&fed, "anji", "sent by anji before its suspension").await;
    eventually(wait, "anji's project at the zone", || {
        try_get(&fed, "zone", &from_anji.name)
    })
    .await;
    eventually(wait, "anji following the zone", || async {
        fed.gateways["anji"].peer("zone").connected.then_some(())
    })
    .await;

    // The zone's operator suspends anji.
    let mut parties = federation().parties().to_vec();
    for p in &mut parties {
        p.suspended = p.id == "anji";
    }
    let suspended = Federation::new(parties).unwrap();
    rewrite(&fed, "zone", &three, suspended);

    // anji's open stream from the zone ends, and reconnecting is refused.
    let error = eventually(wait, "anji refused by the zone", || async {
        let s = fed.gateways["anji"].peer("zone");
        s.last_error
            .filter(|e| e.contains("suspended") && !s.connected)
    })
    .await;
    assert!(error.contains("suspended"), "{error}");
    // The zone stops pulling from anji, and says so.
    eventually(wait, "the zone no longer following anji", || async {
        let statuses = fed.gateways["zone"].peer_status.as_ref().unwrap();
        (!statuses.lock().unwrap().contains_key("anji")).then_some(())
    })
    .await;
    let zone_admin = fed.gateways["zone"].admin;
    let (_, page) = http_get(zone_admin, "/").await;
    assert!(page.contains("SUSPENDED"), "{page}");
    assert!(page.contains("party anji suspended"), "{page}");
    let (listed, _) = parties_at(&fed, "zone").await;
    assert!(listed.contains(&("anji".to_string(), true)), "{listed:?}");

    // What the zone writes now reaches guangde but not anji.
    let after = create(&fed, "zone", "written while anji is suspended").await;
    eventually(wait, "the project at guangde", || {
        try_get(&fed, "guangde", &after.name)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(try_get(&fed, "anji", &after.name).await.is_none());
    // A new referral to a suspended party is refused by name.
    let refused = fed
        .projects("zone", "zone")
        .refer_project(pb::ReferProjectRequest {
            project: after.name.clone(),
            to_party: "anji".into(),
            reason: "一个被暂停的成员".into(),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&refused), vec!["to_party".to_string()]);

    // Reinstated: anji resumes from its cursor and receives what it missed.
    rewrite(&fed, "zone", &three, federation());
    eventually(wait, "the missed project at anji", || {
        try_get(&fed, "anji", &after.name)
    })
    .await;

    // Removed altogether: what anji sent stays, with evidence that verifies.
    let mut parties = federation().parties().to_vec();
    parties.retain(|p| p.id != "anji");
    rewrite(
        &fed,
        "zone",
        &["zone", "guangde"],
        Federation::new(parties).unwrap(),
    );
    eventually(wait, "anji gone from the zone's list", || async {
        let (listed, _) = parties_at(&fed, "zone").await;
        (!listed.iter().any(|(id, _)| id == "anji")).then_some(())
    })
    .await;
    assert!(try_get(&fed, "zone", &from_anji.name).await.is_some());
    let config = fed.gateways["zone"].config.clone();
    let (ok, out) = audit_cli("verify-evidence", &config, &[]);
    assert!(ok, "{out}");

    // A change that moves a listed party is refused as a whole; the running list stays.
    let mut moved = federation().parties().to_vec();
    moved.retain(|p| p.id != "anji");
    moved.reverse();
    rewrite(
        &fed,
        "zone",
        &["zone", "guangde"],
        Federation::new(moved).unwrap(),
    );
    eventually(wait, "the moved list refused", || async {
        (metric(zone_admin, "yrd_config_reload_refused").await == 1).then_some(())
    })
    .await;
    let (_, page) = http_get(zone_admin, "/").await;
    assert!(page.contains("CHANGED FILE REFUSED"), "{page}");
    assert!(page.contains("keep their order"), "{page}");
    let (listed, _) = parties_at(&fed, "zone").await;
    assert_eq!(listed[0].0, "zone", "{listed:?}");
    fed.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_moved_to_another_address_is_followed_there() {
    let fed = TestFederation::start(&["zone", "anji"]).await;
    let wait = Duration::from_secs(60);
    let proxy = TcpProxy::start().await;
    proxy.set_upstream(fed.addr("anji"));

    // The zone's operator points anji's [[peers]] entry at the new address (the proxy).
    write_config_of(
        fed.root.path(),
        "zone",
        &fed.addr("zone").to_string(),
        &[("anji".to_string(), proxy.addr.to_string())],
        &Options::default(),
        federation(),
    );
    let admin = fed.gateways["zone"].admin;
    eventually(wait, "the move applied at the zone", || async {
        (metric(admin, "yrd_config_reloads_total{result=\"applied\"}").await == 1).then_some(())
    })
    .await;
    eventually(wait, "the zone following anji again", || async {
        fed.gateways["zone"].peer("anji").connected.then_some(())
    })
    .await;
    // Cutting the new path disconnects the zone from anji: it follows anji through it.
    proxy.cut();
    eventually(wait, "the zone cut off from anji", || async {
        (!fed.gateways["zone"].peer("anji").connected).then_some(())
    })
    .await;
    let p = create(&fed, "anji", "written while the new path is cut").await;
    proxy.heal();
    eventually(
        wait,
        "anji's project at the zone through the new path",
        || try_get(&fed, "zone", &p.name),
    )
    .await;
}
