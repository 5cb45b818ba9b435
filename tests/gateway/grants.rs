//! Grants drive replication, over real gateways: with the default catalog a Changxing project
//! reaches Guangde without its contact phone (CONDITIONAL, open to Zhejiang members only) and
//! reaches Anji with it; once Changxing approves Guangde's request for the phones, the projects
//! it had already sent go out again and Guangde reads their phones, and new ones arrive whole.
//! The default catalog is published once, whatever the restarts.

use std::time::Duration;

use yrd_gateway::wire::pb;

use crate::common::{TestFederation, access_request, create, eventually, phone_of, try_get};

const WAIT: Duration = Duration::from_secs(15);
const PHONE: &str = "+86 138-0000-0000";

async fn default_entries(fed: &TestFederation, at: &str, provider: &str) -> Vec<pb::CatalogEntry> {
    fed.catalog(at, at)
        .list_catalog_entries(pb::ListCatalogEntriesRequest {
            provider: provider.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_sends_the_conditional_phones_of_records_already_replicated() {
    let mut fed = TestFederation::start(&["changxing", "anji", "guangde"]).await;
    let before = create(&fed, "changxing", "长兴新能源电池项目").await;
    assert_eq!(phone_of(&before), PHONE);

    let at_guangde = eventually(WAIT, "the project at guangde", || {
        try_get(&fed, "guangde", &before.name)
    })
    .await;
    assert_eq!(
        phone_of(&at_guangde),
        "",
        "conditional across the border: withheld"
    );
    let at_anji = eventually(WAIT, "the project at anji", || {
        try_get(&fed, "anji", &before.name)
    })
    .await;
    assert_eq!(phone_of(&at_anji), PHONE, "open to the Zhejiang members");

    // Guangde finds what Changxing shares on projects, with one List call.
    let entries = eventually(WAIT, "changxing's default catalog at guangde", || async {
        let e = default_entries(&fed, "guangde", "changxing").await;
        (e.len() == 5).then_some(e)
    })
    .await;
    let projects_entry = entries
        .iter()
        .find(|e| e.record_kind == pb::RecordKind::Project as i32)
        .expect("a project entry");
    assert_eq!(projects_entry.resource_code, "CHANGXING-PROJECT");
    let phone_item = projects_entry
        .items
        .iter()
        .find(|i| i.field == "contact.phone")
        .expect("the phone item");
    assert_eq!(
        phone_item.sharing_class,
        pb::SharingClass::Conditional as i32
    );
    // The Zhejiang members, in federation order (the zone is a member, though not started).
    assert_eq!(
        phone_item.open_to,
        vec!["zone".to_string(), "anji".to_string()]
    );

    let request = file_phones(&fed, &projects_entry.name).await;
    // Still withheld while the request waits.
    let waiting = try_get(&fed, "guangde", &before.name).await.unwrap();
    assert_eq!(phone_of(&waiting), "");
    let mut watch = fed.watching("guangde").await;
    approve(&fed, &request).await;
    // Guangde's Watch shows the approval, then the project sent again with its phone.
    let (mut approved_seen, mut resent_seen) = (false, false);
    while !(approved_seen && resent_seen) {
        let event = tokio::time::timeout(WAIT, watch.message())
            .await
            .expect("a watch event in time")
            .unwrap()
            .expect("stream open");
        match event.record {
            Some(pb::watch_response::Record::AccessRequest(r)) => {
                approved_seen |=
                    r.name == request && r.state == pb::AccessRequestState::Approved as i32;
            }
            Some(pb::watch_response::Record::Project(p)) => {
                resent_seen |= p.name == before.name && phone_of(&p) == PHONE;
            }
            _ => {}
        }
    }
    let resent = eventually(
        WAIT,
        "the phone of the earlier project at guangde",
        || async {
            try_get(&fed, "guangde", &before.name)
                .await
                .filter(|p| phone_of(p) == PHONE)
        },
    )
    .await;
    assert_eq!(
        resent.etag, before.etag,
        "the same revision, sent again whole"
    );

    let after = create(&fed, "changxing", "长兴储能项目").await;
    let arrived = eventually(WAIT, "the later project at guangde", || {
        try_get(&fed, "guangde", &after.name)
    })
    .await;
    assert_eq!(
        phone_of(&arrived),
        PHONE,
        "new records go out whole under the grant"
    );

    // Restarting publishes no second default catalog, and the grant still holds.
    for gateway in fed.gateways.values_mut() {
        gateway.restart().await;
    }
    let again = default_entries(&fed, "changxing", "changxing").await;
    assert_eq!(
        again.len(),
        5,
        "one default entry per record kind, whatever the restarts"
    );
    let later = create(&fed, "changxing", "长兴氢能项目").await;
    let arrived = eventually(WAIT, "a project after the restart at guangde", || {
        try_get(&fed, "guangde", &later.name)
    })
    .await;
    assert_eq!(phone_of(&arrived), PHONE);
}

/// Files Guangde's request for the phones of Changxing's projects (default catalog entry) and
/// has Changxing approve it; returns the request's name once the approval is at Guangde.
pub(crate) async fn granted_phones(fed: &TestFederation) -> String {
    let entry = eventually(WAIT, "changxing's project entry at guangde", || async {
        default_entries(fed, "guangde", "changxing")
            .await
            .into_iter()
            .find(|e| e.resource_code == "CHANGXING-PROJECT")
    })
    .await;
    let request = file_phones(fed, &entry.name).await;
    approve(fed, &request).await;
    request
}

/// Guangde's request for the phones of `entry`'s records; its name once it is at Changxing.
async fn file_phones(fed: &TestFederation, entry: &str) -> String {
    let filed = fed
        .access("guangde", "guangde")
        .create_access_request(access_request(entry, &["contact.phone"]))
        .await
        .unwrap()
        .into_inner()
        .access_request
        .unwrap();
    eventually(WAIT, "the request at changxing", || {
        request_at(fed, "changxing", &filed.name)
    })
    .await;
    filed.name
}

/// Changxing approves `request` as asked.
async fn approve(fed: &TestFederation, request: &str) {
    fed.access("changxing", "changxing")
        .answer_access_request(pb::AnswerAccessRequestRequest {
            name: request.into(),
            approve: true,
            request_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
}

pub(crate) async fn request_at(
    fed: &TestFederation,
    at: &str,
    name: &str,
) -> Option<pb::AccessRequest> {
    fed.access(at, at)
        .get_access_request(pb::GetAccessRequestRequest { name: name.into() })
        .await
        .ok()
        .and_then(|r| r.into_inner().access_request)
}

pub(crate) fn revoke(name: &str, reason: &str) -> pb::RevokeAccessGrantRequest {
    pb::RevokeAccessGrantRequest {
        name: name.into(),
        reason: reason.into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// Whether `needle` occurs in any of the store files of `party` (database and WAL).
fn in_store_files(fed: &TestFederation, party: &str, needle: &str) -> Vec<String> {
    let dir = fed.root.path().join(party);
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("store.db"))
        .filter(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_erased_at_the_receiver_which_answers_with_a_signed_receipt() {
    // In clear, so the store files show the bytes before and after the erasure (sealed at rest,
    // they never hold the phone: tests/gateway/at_rest.rs).
    let options = crate::common::Options {
        in_clear: true,
        ..Default::default()
    };
    let mut fed = TestFederation::start_with(&["zone", "changxing", "guangde"], options).await;
    let (project, request) = phone_granted_to_guangde(&fed).await;
    assert!(
        !in_store_files(&fed, "guangde", PHONE).is_empty(),
        "the phone is held"
    );

    // Refusals change nothing: not the provider, no reason, not an approved grant.
    let err = fed
        .access("guangde", "guangde")
        .revoke_access_grant(revoke(&request, "不再需要"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(crate::common::error_reason(&err), "NOT_PROVIDER");
    let err = fed
        .access("changxing", "changxing")
        .revoke_access_grant(revoke(&request, ""))
        .await
        .unwrap_err();
    assert_eq!(crate::common::bad_fields(&err), ["reason"]);
    assert_eq!(
        request_at(&fed, "changxing", &request).await.unwrap().state,
        pb::AccessRequestState::Approved as i32
    );

    let mut watch = fed.watching("changxing").await;
    let revoked = fed
        .access("changxing", "changxing")
        .revoke_access_grant(revoke(&request, "项目对接已结束"))
        .await
        .unwrap()
        .into_inner()
        .access_request
        .unwrap();
    assert_eq!(revoked.state, pb::AccessRequestState::Revoked as i32);
    assert_eq!(revoked.revoke_reason, "项目对接已结束");
    let err = fed
        .access("changxing", "changxing")
        .revoke_access_grant(revoke(&request, "again"))
        .await;
    assert!(err.is_ok(), "revoking again changes nothing: {err:?}");

    // Guangde erases what it held and answers with a receipt, which reaches Changxing.
    let at_guangde = eventually(WAIT, "the deletion receipt at guangde", || async {
        request_at(&fed, "guangde", &request)
            .await
            .filter(|r| r.deletion_receipt.is_some())
    })
    .await;
    assert_eq!(at_guangde.state, pb::AccessRequestState::Revoked as i32);
    let receipt = at_guangde.deletion_receipt.unwrap();
    assert_eq!(receipt.cause, "revoked");
    assert_eq!(receipt.items, vec!["contact.phone".to_string()]);
    assert!(
        receipt.records >= 1 && receipt.log_entries >= 1 && receipt.evidence >= 1,
        "{receipt:?}"
    );
    let copy = try_get(&fed, "guangde", &project.name).await.unwrap();
    assert_eq!(
        phone_of(&copy),
        "",
        "the replica keeps the other items only"
    );
    assert_eq!(copy.contact.unwrap().name, "张三");
    assert_eq!(
        in_store_files(&fed, "guangde", PHONE),
        Vec::<String>::new(),
        "the phone bytes are gone from guangde's store files"
    );
    let kept = eventually(WAIT, "the receipt at changxing", || async {
        request_at(&fed, "changxing", &request)
            .await
            .and_then(|r| r.deletion_receipt)
    })
    .await;
    assert_eq!(
        kept, receipt,
        "the provider holds the receipt as signed by guangde"
    );
    // Changxing's Watch shows the request revoked, then with the receipt.
    loop {
        let event = tokio::time::timeout(WAIT, watch.message())
            .await
            .expect("a watch event in time")
            .unwrap()
            .expect("stream open");
        if let Some(pb::watch_response::Record::AccessRequest(r)) = event.record
            && r.name == request
            && r.deletion_receipt.is_some()
        {
            assert_eq!(r.state, pb::AccessRequestState::Revoked as i32);
            break;
        }
    }
    drop(watch);

    let (_, metrics) = crate::common::http_get(fed.gateways["guangde"].admin, "/metrics").await;
    assert!(
        metrics.contains("yrd_grant_erasures_total{outcome=\"done\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("yrd_grant_erasures_total{outcome=\"failed\"} 0"));

    // Audited at both ends: the revocation call at changxing, the erasure at guangde.
    for (at, method) in [
        (
            "changxing",
            "/yrd.exchange.v1.AccessService/RevokeAccessGrant",
        ),
        ("guangde", "sharing/erase"),
    ] {
        let events = crate::common::audit_events_of(&fed, at, method).await;
        assert!(
            events.iter().any(|e| e.records.contains(&request)),
            "{at}: {events:?}"
        );
    }

    // Evidence still verifies at both ends: the erased envelopes by their kept hashes.
    for party in ["guangde", "changxing"] {
        let config = fed.gateways[party].config.clone();
        let intact = yrd_gateway::cli::audit::run(
            yrd_gateway::cli::audit::AuditCommand::VerifyEvidence { config },
            &std::collections::HashMap::new(),
        )
        .await
        .unwrap();
        assert!(intact, "evidence at {party} verifies");
    }

    never_sent_again(&mut fed, &project.name).await;
}

/// After a grant ended: a new project of Changxing reaches Guangde without its phone, and
/// after restarting both gateways neither a newer one nor the earlier ones (`earlier`) carry
/// it, nor do Guangde's store files.
async fn never_sent_again(fed: &mut TestFederation, earlier: &str) {
    let later = create(fed, "changxing", "长兴储能项目").await;
    let arrived = eventually(WAIT, "the later project at guangde", || {
        try_get(fed, "guangde", &later.name)
    })
    .await;
    assert_eq!(
        phone_of(&arrived),
        "",
        "the owner stopped sending at the end"
    );
    for party in ["changxing", "guangde"] {
        fed.gateways.get_mut(party).unwrap().restart().await;
    }
    let after_restart = create(fed, "changxing", "长兴氢能项目").await;
    let arrived = eventually(WAIT, "a project after the restarts at guangde", || {
        try_get(fed, "guangde", &after_restart.name)
    })
    .await;
    assert_eq!(phone_of(&arrived), "");
    for name in [earlier, later.name.as_str()] {
        assert_eq!(phone_of(&try_get(fed, "guangde", name).await.unwrap()), "");
    }
    assert_eq!(in_store_files(fed, "guangde", PHONE), Vec::<String>::new());
}

/// A changxing project whose phone guangde holds under an approved request: the project and
/// the request's name.
pub(crate) async fn phone_granted_to_guangde(fed: &TestFederation) -> (pb::Project, String) {
    let project = create(fed, "changxing", "长兴新能源电池项目").await;
    let request = granted_phones(fed).await;
    eventually(WAIT, "the phone at guangde", || async {
        try_get(fed, "guangde", &project.name)
            .await
            .filter(|p| phone_of(p) == PHONE)
    })
    .await;
    (project, request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_is_erased_without_a_message_and_never_sent_again_after_restarts() {
    let mut fed = TestFederation::start(&["zone", "changxing", "guangde"]).await;
    let (project, request) = phone_granted_to_guangde(&fed).await;

    // Thirty-one days later (at both gateways), the thirty-day grant has ended by itself.
    crate::common::advance_clock(Duration::from_secs(31 * 86_400));
    let at_guangde = eventually(WAIT, "the expiry's deletion receipt at guangde", || async {
        request_at(&fed, "guangde", &request)
            .await
            .filter(|r| r.deletion_receipt.is_some())
    })
    .await;
    assert_eq!(at_guangde.state, pb::AccessRequestState::Expired as i32);
    assert_eq!(
        at_guangde.deletion_receipt.as_ref().unwrap().cause,
        "expired"
    );
    assert_eq!(
        phone_of(&try_get(&fed, "guangde", &project.name).await.unwrap()),
        ""
    );
    assert_eq!(in_store_files(&fed, "guangde", PHONE), Vec::<String>::new());
    eventually(WAIT, "the receipt at changxing", || async {
        request_at(&fed, "changxing", &request)
            .await
            .and_then(|r| r.deletion_receipt)
    })
    .await;

    never_sent_again(&mut fed, &project.name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_grant_of_a_conditional_entry_ends_the_records_themselves_are_deleted() {
    // Changxing shares its projects only under a grant: one CONDITIONAL entry, no default.
    let options = crate::common::Options {
        without_default_catalog: vec!["changxing".to_string()],
        in_clear: true,
        ..Default::default()
    };
    let fed = TestFederation::start_with(&["zone", "changxing", "guangde"], options).await;
    let entry = fed
        .catalog("changxing", "changxing")
        .publish_catalog_entry(pb::PublishCatalogEntryRequest {
            entry: Some(pb::CatalogEntry {
                resource_code: "CX-PROJECT-RESTRICTED".into(),
                display_name: "长兴县在谈项目（有条件共享）".into(),
                record_kind: pb::RecordKind::Project as i32,
                items: vec![crate::common::data_item(
                    "contact.phone",
                    pb::SharingClass::Unspecified,
                    "",
                )],
                sharing_class: pb::SharingClass::Conditional as i32,
                ..Default::default()
            }),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    let secret = "长兴保密在谈项目";
    let project = create(&fed, "changxing", secret).await;
    eventually(WAIT, "guangde at changxing's head", || async {
        (fed.gateways["guangde"].peer("changxing").cursor >= 2).then_some(())
    })
    .await;
    assert!(
        try_get(&fed, "guangde", &project.name).await.is_none(),
        "no grant, no record"
    );
    eventually(WAIT, "the entry at guangde", || async {
        fed.catalog("guangde", "guangde")
            .get_catalog_entry(pb::GetCatalogEntryRequest {
                name: entry.name.clone(),
            })
            .await
            .ok()
    })
    .await;

    let request = file_phones(&fed, &entry.name).await;
    approve(&fed, &request).await;
    let held = eventually(WAIT, "the project at guangde under the grant", || {
        try_get(&fed, "guangde", &project.name)
    })
    .await;
    assert_eq!(phone_of(&held), PHONE);
    assert!(!in_store_files(&fed, "guangde", secret).is_empty());

    fed.access("changxing", "changxing")
        .revoke_access_grant(revoke(&request, "对接结束"))
        .await
        .unwrap();
    let at_guangde = eventually(WAIT, "the deletion receipt at guangde", || async {
        request_at(&fed, "guangde", &request)
            .await
            .filter(|r| r.deletion_receipt.is_some())
    })
    .await;
    let receipt = at_guangde.deletion_receipt.unwrap();
    assert!(receipt.records_deleted, "{receipt:?}");
    assert_eq!(receipt.records, 1);
    assert!(try_get(&fed, "guangde", &project.name).await.is_none());
    assert_eq!(
        in_store_files(&fed, "guangde", secret),
        Vec::<String>::new(),
        "nothing of the record is left in guangde's files"
    );
    let config = fed.gateways["guangde"].config.clone();
    let intact = yrd_gateway::cli::audit::run(
        yrd_gateway::cli::audit::AuditCommand::VerifyEvidence { config },
        &std::collections::HashMap::new(),
    )
    .await
    .unwrap();
    assert!(
        intact,
        "the evidence of the deleted record's changes still verifies"
    );
}
