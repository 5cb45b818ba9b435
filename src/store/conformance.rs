//! The storage conformance suite: every guarantee of the [`Store`] trait, written once as
//! functions over `Arc<dyn Store>`. Each backend's tests run all of them through
//! [`conformance_tests!`](crate::conformance_tests) with a factory for a fresh, empty store, so
//! a behaviour exists in every backend or in none.

use std::sync::Arc;

use uuid::Uuid;

use super::{
    AuditQuery, Evidence, GENESIS, Idempotency, IndexFields, ListQuery, NewAuditEvent,
    ReplicaBatch, ReplicaChange, SignedManifest, Store, StoreError, StoredEvidence, StoredRecord,
    WitnessedHead, Write, WriteOutcome,
};
use crate::domain::RecordKind;

pub fn record(owner: &str, id: Uuid, revision: i64, body: &str) -> StoredRecord {
    StoredRecord {
        kind: RecordKind::Project,
        owner: owner.into(),
        id,
        revision,
        index: IndexFields {
            stage: Some("lead".into()),
            ..IndexFields::default()
        },
        body: body.into(),
    }
}

pub fn write(record: StoredRecord, expected_revision: Option<i64>, request_id: &str) -> Write {
    Write {
        key: Idempotency {
            party: record.owner.clone(),
            request_id: request_id.into(),
            fingerprint: format!("{request_id}/{}", record.body).into_bytes(),
        },
        record,
        expected_revision,
        also_create: vec![],
        unique: None,
        time: 1,
    }
}

fn applied(outcome: Result<WriteOutcome, StoreError>) -> StoredRecord {
    match outcome {
        Ok(WriteOutcome::Applied(r)) => r,
        other => panic!("expected Applied, got {other:?}"),
    }
}

async fn seqs(store: &dyn Store, owner: &str) -> Vec<u64> {
    let changes = store.changes(owner, 0, 10_000).await.unwrap();
    changes.iter().map(|c| c.seq).collect()
}

/// Create, read, update at the expected revision; every refusal names its reason and writes
/// nothing to the change log.
pub async fn create_read_update_and_refusals(store: Arc<dyn Store>) {
    let id = Uuid::now_v7();
    applied(
        store
            .write(write(record("zone", id, 1, "v1"), None, "a"))
            .await,
    );
    let got = store.get(RecordKind::Project, "zone", id).await.unwrap();
    assert_eq!(got.unwrap().body, "v1");
    assert!(
        store
            .get(RecordKind::Project, "anji", id)
            .await
            .unwrap()
            .is_none()
    );

    let again = store
        .write(write(record("zone", id, 1, "v1 again"), None, "b"))
        .await;
    assert!(matches!(again, Err(StoreError::AlreadyExists)), "{again:?}");
    applied(
        store
            .write(write(record("zone", id, 2, "v2"), Some(1), "c"))
            .await,
    );
    let stale = store
        .write(write(record("zone", id, 2, "v2'"), Some(1), "d"))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: 2 })),
        "{stale:?}"
    );
    let missing = store
        .write(write(record("zone", Uuid::now_v7(), 2, "x"), Some(1), "e"))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    assert_eq!(seqs(&*store, "zone").await, vec![1, 2]);
    assert_eq!(store.last_seq("zone").await.unwrap(), 2);
    let now = store
        .get(RecordKind::Project, "zone", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.revision, now.body.as_str()), (2, "v2"));
}

/// A retried request returns its first result, even after the record moved on; a request id
/// reused for a different request is refused.
pub async fn retries_return_the_first_result(store: Arc<dyn Store>) {
    let id = Uuid::now_v7();
    let first = write(record("zone", id, 1, "v1"), None, "create");
    let created = applied(store.write(first.clone()).await);
    applied(
        store
            .write(write(record("zone", id, 2, "v2"), Some(1), "update"))
            .await,
    );

    match store.write(first.clone()).await {
        Ok(WriteOutcome::Replayed(r)) => assert_eq!(r, created),
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert_eq!(store.replay(&first.key).await.unwrap(), Some(created));
    let mut reused = write(record("zone", Uuid::now_v7(), 1, "other"), None, "create");
    reused.key.fingerprint = b"a different request".to_vec();
    let refused = store.write(reused.clone()).await;
    assert!(
        matches!(refused, Err(StoreError::RequestIdReused(_))),
        "{refused:?}"
    );
    assert!(matches!(
        store.replay(&reused.key).await,
        Err(StoreError::RequestIdReused(_))
    ));
    assert_eq!(seqs(&*store, "zone").await, vec![1, 2]);
}

/// Concurrent writes keep their own outcomes (one of many conflicting updates wins, distinct
/// creates all apply, simultaneous retries apply once) and the change log stays gapless.
pub async fn concurrent_writes_keep_their_own_outcomes(store: Arc<dyn Store>) {
    concurrent_writes_through(vec![store]).await;
}

/// The concurrent writes above, spread over several handles on one database (replicas of a
/// gateway sharing a store): the outcomes and the gapless log must be the same.
pub async fn concurrent_writes_through(stores: Vec<Arc<dyn Store>>) {
    let handle = |i: usize| stores[i % stores.len()].clone();
    let store = handle(0);
    let contested = Uuid::now_v7();
    applied(
        store
            .write(write(record("zone", contested, 1, "v1"), None, "c0"))
            .await,
    );
    let retried = Uuid::now_v7();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (s1, s2) = (handle(i), handle(i + 1));
        tasks.spawn(async move {
            let w = write(
                record("zone", contested, 2, &format!("v2 by {i}")),
                Some(1),
                &format!("u{i}"),
            );
            ("update", s1.write(w).await)
        });
        tasks.spawn(async move {
            let w = write(
                record("zone", Uuid::now_v7(), 1, "new"),
                None,
                &format!("c{}", i + 1),
            );
            ("create", s2.write(w).await)
        });
    }
    for i in 0..10 {
        let store = handle(i);
        tasks.spawn(async move {
            let w = write(record("zone", retried, 1, "retried"), None, "retried");
            ("retry", store.write(w).await)
        });
    }
    let mut counts = std::collections::BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined.unwrap() {
            ("update", Ok(WriteOutcome::Applied(_))) => "update applied",
            ("update", Err(StoreError::Conflict { current: 2 })) => "update conflict",
            ("create", Ok(WriteOutcome::Applied(_))) => "create applied",
            ("retry", Ok(WriteOutcome::Applied(_))) => "retry applied",
            ("retry", Ok(WriteOutcome::Replayed(r))) if r.id == retried => "retry replayed",
            (what, other) => panic!("{what}: unexpected {other:?}"),
        };
        *counts.entry(outcome).or_insert(0) += 1;
    }
    let expected = [
        ("create applied", 30),
        ("retry applied", 1),
        ("retry replayed", 9),
        ("update applied", 1),
        ("update conflict", 29),
    ];
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), expected);
    for store in &stores {
        assert_eq!(seqs(&**store, "zone").await, (1..=33).collect::<Vec<u64>>());
        let positions: Vec<u64> = store
            .feed(0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(positions, (1..=33).collect::<Vec<u64>>());
    }
}

/// A natural key is written once; records created alongside commit with their write or not
/// at all.
pub async fn unique_keys_and_companion_records(store: Arc<dyn Store>) {
    let mut first = write(record("zone", Uuid::now_v7(), 1, "decision 1"), None, "d1");
    first.unique = Some("allocation-x/round-1/zone".into());
    applied(store.write(first).await);
    let mut second = write(record("zone", Uuid::now_v7(), 1, "decision 2"), None, "d2");
    second.unique = Some("allocation-x/round-1/zone".into());
    let refused = store.write(second).await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists)),
        "{refused:?}"
    );

    let companion = record("zone", Uuid::now_v7(), 1, "companion");
    let mut with = write(record("zone", Uuid::now_v7(), 1, "main"), None, "m1");
    with.also_create = vec![companion.clone()];
    let main = applied(store.write(with).await);
    assert!(
        store
            .get(RecordKind::Project, "zone", companion.id)
            .await
            .unwrap()
            .is_some()
    );

    // A fresh companion, then one that exists now: the whole write is refused and neither
    // the main record nor the fresh companion is written.
    let blocked_id = Uuid::now_v7();
    let fresh = record("zone", Uuid::now_v7(), 1, "fresh companion");
    let mut blocked = write(record("zone", blocked_id, 1, "blocked"), None, "m2");
    blocked.also_create = vec![fresh.clone(), companion];
    // Its natural key is not kept either: a later write may use it.
    blocked.unique = Some("referral-y/answer".into());
    let refused = store.write(blocked).await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists)),
        "{refused:?}"
    );
    assert!(
        store
            .get(RecordKind::Project, "zone", blocked_id)
            .await
            .unwrap()
            .is_none()
    );
    let fresh_after = store.get(RecordKind::Project, "zone", fresh.id).await;
    assert!(
        fresh_after.unwrap().is_none(),
        "half of a refused write was kept"
    );
    assert!(
        store
            .get(RecordKind::Project, "zone", main.id)
            .await
            .unwrap()
            .is_some()
    );
    let mut later = write(record("zone", Uuid::now_v7(), 1, "later"), None, "m3");
    later.unique = Some("referral-y/answer".into());
    applied(store.write(later).await);
    assert_eq!(seqs(&*store, "zone").await, vec![1, 2, 3, 4]);
}

fn replica(seq: u64, record: Option<StoredRecord>) -> ReplicaChange {
    ReplicaChange {
        seq,
        time: seq as i64,
        record,
        evidence: Evidence {
            envelope: format!("envelope {seq}").into_bytes(),
            scheme: 0x0403,
            signature: vec![seq as u8; 64],
            signer: "fingerprint".into(),
        },
    }
}

/// A batch signed through a manifest named after its first change, so applying the same batch
/// twice also stores its manifest twice.
fn batch(changes: Vec<ReplicaChange>) -> ReplicaBatch {
    let first = changes.first().map_or(0, |c| c.seq);
    ReplicaBatch {
        owner: "guangde".into(),
        signer: ("fingerprint".into(), b"certificate".to_vec()),
        changes,
        manifest: Some(SignedManifest {
            digest: format!("manifest from {first}").into_bytes(),
            manifest: b"manifest".to_vec(),
            scheme: 0x0403,
            signature: b"signature".to_vec(),
        }),
        received: 1,
    }
}

/// Replicated changes apply in order and once: a repeated batch changes nothing, a gap is
/// refused, a change of a kind not shared only moves the cursor, an older revision never
/// replaces a newer one; the feed lists own changes and replicas in commit order.
pub async fn replicas_apply_in_order_and_once(store: Arc<dyn Store>) {
    let id = Uuid::now_v7();
    let first = batch(vec![
        replica(1, Some(record("guangde", id, 1, "r1"))),
        replica(2, None),
        replica(3, Some(record("guangde", id, 2, "r2"))),
    ]);
    assert_eq!(store.apply_replicas(first.clone()).await.unwrap(), 3);
    assert_eq!(store.apply_replicas(first).await.unwrap(), 3);
    assert_eq!(store.cursor("guangde").await.unwrap(), 3);
    assert_eq!(seqs(&*store, "guangde").await, vec![1, 3]);

    let gap = store.apply_replicas(batch(vec![replica(5, None)])).await;
    assert!(
        matches!(
            gap,
            Err(StoreError::OutOfOrder {
                cursor: 3,
                got: 5,
                ..
            })
        ),
        "{gap:?}"
    );
    let older = batch(vec![replica(4, Some(record("guangde", id, 1, "r1 again")))]);
    assert_eq!(store.apply_replicas(older).await.unwrap(), 4);
    let now = store
        .get(RecordKind::Project, "guangde", id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.revision, now.body.as_str()), (2, "r2"));

    // Evidence: one piece per applied change, in order, with its signer and manifest.
    let kept = store.evidence("guangde", 0, 100).await.unwrap();
    let kept_seqs: Vec<u64> = kept.iter().map(|e| e.seq).collect();
    assert_eq!(kept_seqs, vec![1, 2, 3, 4]);
    assert_eq!(kept[1].envelope, b"envelope 2".to_vec());
    assert_eq!(kept[1].signature, vec![2u8; 64]);
    assert_eq!(kept[1].signer, b"certificate".to_vec());
    let named = |e: &StoredEvidence| e.manifest.as_ref().map(|m| m.digest.clone());
    assert_eq!(named(&kept[2]), Some(b"manifest from 1".to_vec()));
    assert_eq!(named(&kept[3]), Some(b"manifest from 4".to_vec()));
    assert_eq!(kept[3].manifest_digest, named(&kept[3]));
    assert_eq!(kept[3].manifest.as_ref().unwrap().signature, b"signature");
    let page = store.evidence("guangde", 2, 1).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    assert!(store.evidence("anji", 0, 10).await.unwrap().is_empty());

    applied(
        store
            .write(write(record("zone", Uuid::now_v7(), 1, "own"), None, "own"))
            .await,
    );
    let feed = store.feed(0, 100).await.unwrap();
    let order: Vec<(String, u64)> = feed
        .iter()
        .map(|e| (e.change.owner.clone(), e.change.seq))
        .collect();
    let expected = [("guangde", 1), ("guangde", 3), ("guangde", 4), ("zone", 1)];
    assert_eq!(order, expected.map(|(o, s)| (o.to_string(), s)));
    assert!(feed.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        store.feed_position().await.unwrap(),
        feed.last().unwrap().position
    );
    let after_first = store.feed(feed[0].position, 100).await.unwrap();
    assert_eq!(after_first.len(), 3);
}

/// Lists filter by owner and index fields and page by id.
pub async fn lists_filter_and_page(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for (i, owner) in ["zone", "anji", "zone", "zone"].iter().enumerate() {
        let id = Uuid::now_v7();
        ids.push((owner.to_string(), id));
        applied(
            store
                .write(write(record(owner, id, 1, "p"), None, &format!("l{i}")))
                .await,
        );
    }
    let zone: Vec<Uuid> = ids
        .iter()
        .filter(|(o, _)| o == "zone")
        .map(|(_, id)| *id)
        .collect();
    let mut query = ListQuery {
        owner: Some("zone".into()),
        ..ListQuery::of(RecordKind::Project, 2)
    };
    let page1 = store.list(query.clone()).await.unwrap();
    assert_eq!(page1.iter().map(|r| r.id).collect::<Vec<_>>(), zone[..2]);
    query.after = page1.last().map(|r| r.id);
    let page2 = store.list(query).await.unwrap();
    assert_eq!(page2.iter().map(|r| r.id).collect::<Vec<_>>(), zone[2..]);
    let none = ListQuery {
        stage: Some("producing".into()),
        ..ListQuery::of(RecordKind::Project, 10)
    };
    assert!(store.list(none).await.unwrap().is_empty());
}

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
/// gap, each event's hash being [`super::link`] of its content and predecessor; returns how many
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
            super::link(e.seq, &prev, &e.event).to_vec(),
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
    let all = store
        .audit_events(AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
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

/// One `#[tokio::test]` per conformance function, each on a fresh store from `$factory`
/// (an expression evaluating to `Arc<dyn Store>`; it may use `dir`, a temporary folder).
#[macro_export]
macro_rules! conformance_tests {
    (|$dir:ident| $factory:expr) => {
        $crate::conformance_tests!(@each |$dir| $factory;
            create_read_update_and_refusals,
            retries_return_the_first_result,
            concurrent_writes_keep_their_own_outcomes,
            unique_keys_and_companion_records,
            replicas_apply_in_order_and_once,
            lists_filter_and_page,
            the_audit_chain_is_single_and_verifiable
        );
    };
    (@each |$dir:ident| $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let $dir = tempfile::tempdir().unwrap();
                let store: std::sync::Arc<dyn $crate::store::Store> = $factory;
                $crate::store::conformance::$name(store).await;
            }
        )*
    };
}
