use super::*;
use crate::domain::PartyInfo;

fn party(id: &str) -> PartyInfo {
    PartyInfo {
        id: id.into(),
        display_name: id.into(),
        province: "Zhejiang".into(),
        division_code: String::new(),
        suspended: false,
    }
}

fn policy_over(members: Members) -> AccessPolicy {
    AccessPolicy {
        party: "zone".into(),
        trust_domain: "yrd-huzhou".into(),
        members,
        read_only_systems: ["dashboard".to_string()].into(),
        profile: crate::crypto::Profile::Intl,
    }
}

fn three() -> crate::domain::Federation {
    crate::domain::Federation::new(vec![party("zone"), party("anji"), party("guangde")]).unwrap()
}

fn policy() -> AccessPolicy {
    policy_over(Members::fixed(three()))
}

#[test]
fn spiffe_ids_parse_and_print_back() {
    for uri in [
        "spiffe://yrd-huzhou/party/zone/gateway",
        "spiffe://yrd-huzhou/party/anji/client/approval-system",
    ] {
        assert_eq!(SpiffeId::parse(uri).unwrap().to_string(), uri);
    }
    for bad in [
        "https://yrd-huzhou/party/zone/gateway",
        "spiffe:///party/zone/gateway",
        "spiffe://yrd-huzhou/party/zone",
        "spiffe://yrd-huzhou/party/Zone/gateway",
        "spiffe://yrd-huzhou/party/zone/client/",
        "spiffe://yrd-huzhou/party/zone/client/a/b",
        "spiffe://yrd-huzhou/party/zone/admin",
    ] {
        assert!(SpiffeId::parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn methods_are_classified_by_service_and_verb() {
    assert_eq!(
        classify("/yrd.exchange.v1.ProjectService/GetProject"),
        Access::ClientRead
    );
    assert_eq!(
        classify("/yrd.exchange.v1.ProjectService/ListProjects"),
        Access::ClientRead
    );
    assert_eq!(
        classify("/yrd.exchange.v1.DirectoryService/WhoAmI"),
        Access::ClientRead
    );
    assert_eq!(
        classify("/yrd.exchange.v1.ProjectService/CreateProject"),
        Access::ClientWrite
    );
    assert_eq!(
        classify("/yrd.exchange.v1.FactorService/DecideAllocation"),
        Access::ClientWrite
    );
    assert_eq!(
        classify("/yrd.exchange.v1.FederationService/PullChanges"),
        Access::Federation
    );
    assert_eq!(
        classify("/grpc.health.v1.Health/Check"),
        Access::Infrastructure
    );
}

#[test]
fn the_access_matrix_of_spec_section_2() {
    let p = policy();
    let caller = |uri: &str| p.caller(&SpiffeId::parse(uri).unwrap());
    let create = "/yrd.exchange.v1.ProjectService/CreateProject";
    let get = "/yrd.exchange.v1.ProjectService/GetProject";
    let pull = "/yrd.exchange.v1.FederationService/PullChanges";

    let own_client = caller("spiffe://yrd-huzhou/party/zone/client/demo").unwrap();
    assert!(p.authorize(&own_client, create).is_ok());
    assert!(p.authorize(&own_client, pull).is_err());

    let other_client = caller("spiffe://yrd-huzhou/party/anji/client/demo").unwrap();
    assert!(p.authorize(&other_client, get).is_err());

    let read_only = caller("spiffe://yrd-huzhou/party/zone/client/dashboard").unwrap();
    assert!(read_only.read_only);
    assert!(p.authorize(&read_only, get).is_ok());
    assert!(p.authorize(&read_only, create).is_err());

    let peer = caller("spiffe://yrd-huzhou/party/guangde/gateway").unwrap();
    assert!(p.authorize(&peer, pull).is_ok());
    assert!(p.authorize(&peer, get).is_err());

    assert!(caller("spiffe://other-domain/party/zone/client/demo").is_err());
    assert!(caller("spiffe://yrd-huzhou/party/shanghai/client/demo").is_err());
}

#[test]
fn a_party_removed_or_suspended_while_running_is_refused_at_its_next_call() {
    let (change, members) = Members::changeable(three());
    let p = policy_over(members);
    let guangde = SpiffeId::parse("spiffe://yrd-huzhou/party/guangde/gateway").unwrap();
    let anji = SpiffeId::parse("spiffe://yrd-huzhou/party/anji/gateway").unwrap();
    let lingang = SpiffeId::parse("spiffe://yrd-huzhou/party/lingang/gateway").unwrap();
    assert!(p.caller(&guangde).is_ok());
    assert!(p.caller(&lingang).is_err(), "not a member yet");

    // guangde suspended, anji removed, lingang joins: the same policy value decides anew.
    let mut suspended = party("guangde");
    suspended.suspended = true;
    change
        .send(std::sync::Arc::new(
            crate::domain::Federation::new(vec![party("zone"), suspended, party("lingang")])
                .unwrap(),
        ))
        .unwrap();
    let refused = p.caller(&guangde).unwrap_err().to_string();
    assert!(refused.contains("suspended"), "{refused}");
    let refused = p.caller(&anji).unwrap_err().to_string();
    assert!(refused.contains("not a member"), "{refused}");
    assert!(p.caller(&lingang).is_ok());
}
