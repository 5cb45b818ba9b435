//! Grants drive replication, over real gateways: with the default catalog a Changxing project
//! reaches Guangde without its contact phone (CONDITIONAL, open to Zhejiang members only) and
//! reaches Anji with it; once Changxing approves Guangde's request for the phones, the projects
//! it had already sent go out again and Guangde reads their phones, and new ones arrive whole.
//! The default catalog is published once, whatever the restarts.

use std::time::Duration;

use yrd_gateway::wire::pb;

use crate::common::{TestFederation, create, eventually, try_get};

const WAIT: Duration = Duration::from_secs(15);
const PHONE: &str = "+86 138-0000-0000";

fn phone_of(project: &pb::Project) -> String {
    project
        .contact
        .as_ref()
        .map(|c| c.phone.clone())
        .unwrap_or_default()
}

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

    let filed = fed
        .access("guangde", "guangde")
        .create_access_request(pb::CreateAccessRequestRequest {
            access_request: Some(pb::AccessRequest {
                entry: projects_entry.name.clone(),
                items: vec!["contact.phone".into()],
                purpose: "联合招商对接".into(),
                validity_days: 30,
                ..Default::default()
            }),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_request
        .unwrap();
    eventually(WAIT, "the request at changxing", || async {
        fed.access("changxing", "changxing")
            .get_access_request(pb::GetAccessRequestRequest {
                name: filed.name.clone(),
            })
            .await
            .ok()
    })
    .await;
    // Still withheld while the request waits.
    let waiting = try_get(&fed, "guangde", &before.name).await.unwrap();
    assert_eq!(phone_of(&waiting), "");

    fed.access("changxing", "changxing")
        .answer_access_request(pb::AnswerAccessRequestRequest {
            name: filed.name.clone(),
            approve: true,
            request_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
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
