//! Watch: the resumable change stream of everything visible to a party.

use std::collections::BTreeSet;
use std::time::Duration;

use yrd_gateway::wire::pb;

use crate::common::*;

use super::{WAIT, replicated};

async fn next_events(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    n: usize,
) -> Vec<pb::WatchResponse> {
    let mut out = Vec::new();
    while out.len() < n {
        let event = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("watch event in time")
            .unwrap()
            .expect("stream open");
        // The default catalogs published at start are not what these tests follow.
        if matches!(
            event.record,
            Some(pb::watch_response::Record::CatalogEntry(_))
        ) {
            continue;
        }
        out.push(event);
    }
    out
}

fn event_name(e: &pb::WatchResponse) -> String {
    match e.record.as_ref().unwrap() {
        pb::watch_response::Record::Project(p) => p.name.clone(),
        pb::watch_response::Record::Allocation(a) => a.name.clone(),
        pb::watch_response::Record::Decision(d) => d.name.clone(),
        pb::watch_response::Record::Referral(r) => r.name.clone(),
        pb::watch_response::Record::CatalogEntry(e) => e.name.clone(),
        pb::watch_response::Record::AccessRequest(r) => r.name.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_token_and_misses_nothing() {
    let fed = TestFederation::start(&["zone", "changxing"]).await;
    let mut expected = vec![
        create(&fed, "zone", "z1").await.name,
        create(&fed, "zone", "z2").await.name,
    ];
    let c1 = create(&fed, "changxing", "c1").await.name;
    replicated(&fed, "zone", &c1).await;
    expected.push(c1);

    let mut watch = fed.watch("zone", "zone");
    let mut stream = watch
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = next_events(&mut stream, 2).await;
    let token = first[1].resume_token.clone();
    drop(stream);

    // Changes while the client is away: one own, one replicated.
    expected.push(create(&fed, "zone", "z3").await.name);
    let c2 = create(&fed, "changxing", "c2").await.name;
    replicated(&fed, "zone", &c2).await;
    expected.push(c2);

    let mut resumed = watch
        .watch(pb::WatchRequest {
            resume_token: token,
        })
        .await
        .unwrap()
        .into_inner();
    let rest = next_events(&mut resumed, 3).await;
    let seen: Vec<String> = first.iter().chain(&rest).map(event_name).collect();
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>(),
        "every change exactly once across the reconnect"
    );
    assert_eq!(seen.len(), expected.len());
    assert!(
        rest.iter().any(|e| e.owner == "changxing"),
        "replicas are in the stream"
    );
    // Nothing more is pending.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.message())
            .await
            .is_err()
    );

    // A live change arrives on the open stream.
    let z4 = create(&fed, "zone", "z4").await.name;
    assert_eq!(event_name(&next_events(&mut resumed, 1).await[0]), z4);

    let err = watch
        .watch(pb::WatchRequest {
            resume_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["resume_token".to_string()]);
}
