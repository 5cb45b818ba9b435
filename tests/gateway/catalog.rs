//! The resource catalog over real gateways: an entry published at one party is listed at every
//! other (whatever its sharing rules), validation names every bad field, only the provider
//! writes, a resource code is published once, updates need the current etag.

use std::time::Duration;

use tonic::Code;
use yrd_gateway::wire::pb;

use crate::common::{Options, TestFederation, bad_fields, data_item, error_reason, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// Changxing's catalog entry of its investment projects: most items unconditional, contact
/// phones conditional, the investor's credit code not shared.
fn projects_entry() -> pb::CatalogEntry {
    pb::CatalogEntry {
        resource_code: "CX-PROJECT-001".into(),
        display_name: "长兴县招商项目信息".into(),
        summary: "长兴县在谈和落地的招商项目".into(),
        record_kind: pb::RecordKind::Project as i32,
        items: vec![
            data_item("display_name", pb::SharingClass::Unspecified, ""),
            data_item("contact.phone", pb::SharingClass::Conditional, ""),
            data_item(
                "investor.credit_code",
                pb::SharingClass::NotShared,
                "《中华人民共和国个人信息保护法》第十三条",
            ),
        ],
        sharing_class: pb::SharingClass::Unconditional as i32,
        conditions: "仅用于联合招商对接，不得转交第三方".into(),
        update_cycle: "实时".into(),
        ..Default::default()
    }
}

fn publish(entry: pb::CatalogEntry) -> pb::PublishCatalogEntryRequest {
    pb::PublishCatalogEntryRequest {
        entry: Some(entry),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

fn list_by(provider: &str) -> pb::ListCatalogEntriesRequest {
    pb::ListCatalogEntriesRequest {
        provider: provider.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_published_at_one_party_is_listed_at_every_other() {
    // Changxing starts without the default catalog: the entry it publishes still reaches
    // every member.
    let options = Options {
        without_default_catalog: vec!["changxing".to_string()],
        ..Options::default()
    };
    let fed = TestFederation::start_with(&["zone", "changxing", "guangde"], options).await;
    let published = fed
        .catalog("changxing", "changxing")
        .publish_catalog_entry(publish(projects_entry()))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert!(
        published
            .name
            .starts_with("parties/changxing/catalogEntries/")
    );
    assert_eq!(published.provider, "changxing");

    for at in ["guangde", "zone"] {
        let listed = eventually(WAIT, "the entry at another party", || async {
            let page = fed
                .catalog(at, at)
                .list_catalog_entries(list_by("changxing"))
                .await
                .unwrap()
                .into_inner();
            (!page.entries.is_empty()).then_some(page.entries)
        })
        .await;
        assert_eq!(
            listed,
            vec![published.clone()],
            "the entry as published, at {at}"
        );
    }
    let got = fed
        .catalog("guangde", "guangde")
        .get_catalog_entry(pb::GetCatalogEntryRequest {
            name: published.name.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(got, published);

    // Filters: by class of at least one item, by record kind.
    let mut conditional = list_by("changxing");
    conditional.sharing_class = pb::SharingClass::Conditional as i32;
    let found = fed
        .catalog("guangde", "guangde")
        .list_catalog_entries(conditional)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(found.len(), 1);
    let mut allocations = list_by("changxing");
    allocations.record_kind = pb::RecordKind::Allocation as i32;
    let found = fed
        .catalog("guangde", "guangde")
        .list_catalog_entries(allocations)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(found.is_empty(), "no entry covers allocations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_are_refused_naming_every_field_and_nothing_is_published() {
    let options = Options {
        without_default_catalog: vec!["changxing".to_string()],
        ..Options::default()
    };
    let fed = TestFederation::start_with(&["changxing"], options).await;
    let mut catalog = fed.catalog("changxing", "changxing");
    let mut bad = projects_entry();
    bad.resource_code = "CX 001".into();
    bad.record_kind = 0;
    bad.sharing_class = pb::SharingClass::NotShared as i32;
    bad.items.push(data_item(
        "contact.phone",
        pb::SharingClass::Unspecified,
        "",
    ));
    bad.items[2].legal_basis.clear();
    let err = catalog
        .publish_catalog_entry(publish(bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields(&err),
        [
            "entry.resource_code",
            "entry.record_kind",
            "entry.legal_basis",
            "entry.items[2].legal_basis",
            "entry.items[3].field",
        ]
    );
    let mut stranger = projects_entry();
    stranger.items[1].open_to = vec!["shanghai".into(), "changxing".into(), "anji".into()];
    let err = catalog
        .publish_catalog_entry(publish(stranger))
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&err),
        ["entry.items[1].open_to[0]", "entry.items[1].open_to[1]"],
        "open only to other members of the federation"
    );
    let mut unknown = projects_entry();
    unknown.items[0].sharing_class = 9;
    let err = catalog
        .publish_catalog_entry(publish(unknown))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["entry.items[0].sharing_class"]);
    let listed = catalog
        .list_catalog_entries(list_by(""))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(listed.is_empty(), "nothing was published: {listed:?}");
    let err = catalog
        .list_catalog_entries(list_by("shanghai"))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), ["provider"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_provider_writes_once_per_code_with_the_current_etag() {
    let fed = TestFederation::start(&["changxing", "guangde"]).await;
    let mut changxing = fed.catalog("changxing", "changxing");
    let request = publish(projects_entry());
    let first = changxing
        .publish_catalog_entry(request.clone())
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    let retried = changxing
        .publish_catalog_entry(request)
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(retried, first, "a retry returns the first result");
    let err = changxing
        .publish_catalog_entry(publish(projects_entry()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(error_reason(&err), "RESOURCE_CODE_TAKEN");

    let mut patch = first.clone();
    patch.conditions = "仅用于联合招商对接".into();
    let update = |entry: pb::CatalogEntry| pb::UpdateCatalogEntryRequest {
        entry: Some(entry),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["conditions".into()],
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    let updated = changxing
        .update_catalog_entry(update(patch.clone()))
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(updated.conditions, "仅用于联合招商对接");
    assert_eq!(updated.display_name, first.display_name);
    assert_ne!(updated.etag, first.etag);
    let err = changxing
        .update_catalog_entry(update(patch.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "stale etag: {err:?}");

    // Guangde holds the replica but may not change it.
    let replica = eventually(WAIT, "the update at guangde", || async {
        fed.catalog("guangde", "guangde")
            .get_catalog_entry(pb::GetCatalogEntryRequest {
                name: first.name.clone(),
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().entry)
            .filter(|e| e.etag == updated.etag)
    })
    .await;
    let err = fed
        .catalog("guangde", "guangde")
        .update_catalog_entry(update(replica))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}
