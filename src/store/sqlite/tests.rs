//! Group commit: concurrent writes that land in one transaction keep their own outcomes.

use std::sync::Arc;

use uuid::Uuid;

use super::SqliteStore;
use crate::store::{
    Idempotency, IndexFields, RecordKind, Store, StoreError, StoredRecord, Write, WriteOutcome,
};

fn record(id: Uuid, revision: i64, body: &str) -> StoredRecord {
    StoredRecord {
        kind: RecordKind::Project,
        owner: "zone".into(),
        id,
        revision,
        index: IndexFields::default(),
        body: body.into(),
    }
}

fn write(record: StoredRecord, expected_revision: Option<i64>, request_id: &str) -> Write {
    Write {
        record,
        expected_revision,
        also_create: vec![],
        unique: None,
        key: Idempotency {
            party: "zone".into(),
            request_id: request_id.into(),
            fingerprint: request_id.as_bytes().to_vec(),
        },
        time: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_keep_their_own_outcomes_and_a_gapless_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let contested = Uuid::now_v7();
    store
        .write(write(record(contested, 1, "v1"), None, "create contested"))
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    // 30 updates of one record, all expecting revision 1: one wins, 29 conflict.
    for i in 0..30 {
        let store = store.clone();
        tasks.spawn(async move {
            let w = write(
                record(contested, 2, &format!("v2 by {i}")),
                Some(1),
                &format!("u{i}"),
            );
            ("update", store.write(w).await)
        });
    }
    // 30 creates of distinct records: all applied.
    for i in 0..30 {
        let store = store.clone();
        tasks.spawn(async move {
            let w = write(record(Uuid::now_v7(), 1, "new"), None, &format!("c{i}"));
            ("create", store.write(w).await)
        });
    }
    // One create retried 10 times at once: applied once, replayed 9 times.
    let retried = Uuid::now_v7();
    for _ in 0..10 {
        let store = store.clone();
        tasks.spawn(async move {
            let w = write(record(retried, 1, "retried"), None, "retried");
            ("retry", store.write(w).await)
        });
    }
    let (mut updated, mut conflicts, mut created, mut applied_retries, mut replays) =
        (0, 0, 0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            ("update", Ok(WriteOutcome::Applied(_))) => updated += 1,
            ("update", Err(StoreError::Conflict { current: 2 })) => conflicts += 1,
            ("create", Ok(WriteOutcome::Applied(_))) => created += 1,
            ("retry", Ok(WriteOutcome::Applied(_))) => applied_retries += 1,
            ("retry", Ok(WriteOutcome::Replayed(r))) => {
                assert_eq!(r.id, retried);
                replays += 1
            }
            (what, other) => panic!("{what}: unexpected {other:?}"),
        }
    }
    assert_eq!((updated, conflicts), (1, 29));
    assert_eq!(created, 30);
    assert_eq!((applied_retries, replays), (1, 9));

    // 1 create + 1 update + 30 creates + 1 retried create, numbered 1..=33 without a gap.
    let seqs: Vec<u64> = store
        .changes("zone", 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, (1..=33).collect::<Vec<u64>>());
    let now = store
        .get(RecordKind::Project, "zone", contested)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.revision, 2);
}
