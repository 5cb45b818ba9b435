//! The audit chain and witnessed heads.

use std::sync::Arc;

use super::*;
use crate::store::*;

fn audit_event(i: u64) -> NewAuditEvent {
    NewAuditEvent {
        time: i as i64,
        caller: format!("spiffe://yrd-huzhou/party/zone/client/c{}", i % 2),
        method: "/yrd.exchange.v1.ProjectService/GetProject".into(),
        records: vec![format!("parties/zone/projects/{i}")],
        code: "OK".into(),
        request_id: format!("r{i}"),
    }
}

/// Checks that the stored chain links from its anchor (or from genesis) to its head without a
/// gap, each event's hash being [`crate::store::link`] of its content and predecessor; returns how many
/// events it holds.
async fn chained_events(store: &dyn Store) -> usize {
    let anchor = store.audit_anchor().await.unwrap();
    let (mut seq, mut prev) = anchor.map_or((0, GENESIS.to_vec()), |a| (a.seq, a.hash));
    let events = store
        .audit_events(AuditQuery {
            after_seq: seq,
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    for e in &events {
        assert_eq!(e.seq, seq + 1, "the chain has no gap");
        assert_eq!(
            e.prev_hash, prev,
            "event {} links to its predecessor",
            e.seq
        );
        assert_eq!(
            e.hash,
            crate::store::link(e.digest, e.seq, &prev, &e.event),
            "event {}",
            e.seq
        );
        seq = e.seq;
        prev = e.hash.clone();
    }
    events.len()
}

/// The audit chain is single and ordered under concurrent appends, verifies, filters, and
/// keeps verifying after pruning (from its anchor); witnessed heads are kept per party.
pub async fn the_audit_chain_is_single_and_verifiable(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4u64 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..5 {
                store
                    .append_audit(vec![audit_event(t * 10 + i)])
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let all = all_events(store.as_ref()).await;
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<u64>>()
    );
    assert_eq!(chained_events(&*store).await, 20);
    assert_eq!(store.audit_head().await.unwrap().unwrap().seq, 20);

    let filtered = store
        .audit_events(AuditQuery {
            caller: Some("spiffe://yrd-huzhou/party/zone/client/c1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    // c1 made the calls with odd numbers: 2 of each task's 5.
    assert_eq!(filtered.len(), 8);
    assert!(filtered.iter().all(|e| e.event.caller.ends_with("/c1")));

    let anchor = store.prune_audit(12).await.unwrap();
    assert_eq!(anchor.seq, 12);
    assert_eq!(anchor.hash, all[11].hash);
    assert_eq!(store.audit_anchor().await.unwrap(), Some(anchor));
    assert_eq!(chained_events(&*store).await, 8);
    let seq = store.append_audit(vec![audit_event(99)]).await.unwrap();
    assert_eq!(seq, 21);
    assert_eq!(chained_events(&*store).await, 9);

    for seq in [5, 7] {
        store
            .put_witnessed_head(WitnessedHead {
                party: "anji".into(),
                seq,
                hash: vec![seq as u8; 32],
                time: 1,
                signed: vec![1],
                scheme: 0x0403,
                signature: vec![2],
                signer: vec![3],
            })
            .await
            .unwrap();
    }
    let heads = store.witnessed_heads("anji").await.unwrap();
    assert_eq!(heads.iter().map(|h| h.seq).collect::<Vec<_>>(), vec![5, 7]);
    assert!(store.witnessed_heads("zone").await.unwrap().is_empty());
}

/// A write handed its call's audit event commits it in the write's own transaction, chained
/// after the events appended before it; a write that is refused or replayed does not.
pub async fn a_write_commits_its_calls_audit_event_with_itself(store: Arc<dyn Store>) {
    let event = |request_id: &str| NewAuditEvent {
        time: 1,
        caller: "spiffe://yrd-huzhou/party/zone/client/a".into(),
        method: "/yrd.exchange.v1.ProjectService/CreateProject".into(),
        records: vec![],
        code: String::new(),
        request_id: request_id.into(),
    };
    store.append_audit(vec![event("before")]).await.unwrap();

    let id = uuid::Uuid::now_v7();
    let audit =
        WriteAudit::new(event("create")).naming(vec![format!("parties/zone/projects/{id}")]);
    let mut create = write(record("zone", id, 1, "v1"), None, "r1");
    create.audit = Some(audit.clone());
    store.write(create).await.unwrap();
    assert_eq!(
        audit.committed(),
        Some(2),
        "committed with the record, after event 1"
    );

    // The same request again is a replay: nothing new is committed for it.
    let replayed = WriteAudit::new(event("create"));
    let mut again = write(record("zone", id, 1, "v1"), None, "r1");
    again.audit = Some(replayed.clone());
    store.write(again).await.unwrap();
    assert_eq!(replayed.committed(), None);

    // A refused write (a second create of the same record) commits no event either.
    let refused = WriteAudit::new(event("dup"));
    let mut dup = write(record("zone", id, 1, "v1"), None, "r2");
    dup.audit = Some(refused.clone());
    assert!(store.write(dup).await.is_err());
    assert_eq!(refused.committed(), None);

    let events = all_events(store.as_ref()).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].event.request_id, "create");
    assert_eq!(events[1].event.code, "OK");
    assert_eq!(
        events[1].event.records,
        vec![format!("parties/zone/projects/{id}")]
    );
    assert_eq!(
        events[1].prev_hash, events[0].hash,
        "chained after the earlier event"
    );
}

/// Every event of `store`'s trail (the conformance trails are small).
async fn all_events(store: &dyn Store) -> Vec<AuditEvent> {
    store
        .audit_events(AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

/// Two handles on one store, the first linking by SHA-256 and the second by SM3 (a party
/// that moved to the gm profile): events appended through either, and the event of a write,
/// keep the digest they were linked with, and the whole chain verifies event by event.
pub async fn a_chain_that_changed_digest_keeps_each_events(
    before: Arc<dyn Store>,
    after: Arc<dyn Store>,
) {
    use crate::crypto::Digest;
    before
        .append_audit(vec![audit_event(1), audit_event(2)])
        .await
        .unwrap();
    after.append_audit(vec![audit_event(3)]).await.unwrap();
    let mut w = write(record("zone", Uuid::now_v7(), 1, "v1"), None, "sm3");
    let audit = WriteAudit::new(audit_event(4)).naming(vec!["parties/zone/projects/x".into()]);
    w.audit = Some(audit.clone());
    applied(after.write(w).await);
    assert_eq!(audit.committed(), Some(4));
    before.append_audit(vec![audit_event(5)]).await.unwrap();

    let events = before
        .audit_events(AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let digests: Vec<Digest> = events.iter().map(|e| e.digest).collect();
    use Digest::{Sha256, Sm3};
    assert_eq!(digests, [Sha256, Sha256, Sm3, Sm3, Sha256]);
    // Each event's hash is its link by its own digest, to its predecessor.
    assert_eq!(chained_events(&*after).await, 5);
}
