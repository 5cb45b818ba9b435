//! Records and their writes: revisions and refusals, idempotent retries, concurrent writes
//! through the group commit, unique keys and companion records, lists.

use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::domain::RecordKind;
use crate::store::*;

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

    // The first answer is the written record's own change-log entry, whatever the write
    // appended before it (a companion record) or after it (every project sent again).
    let allocation = |body: &str| StoredRecord {
        kind: RecordKind::Allocation,
        ..record("zone", Uuid::now_v7(), 1, body)
    };
    let mut pair = write(allocation("main"), None, "pair");
    pair.also_create = vec![allocation("companion")];
    pair.resend = Some(RecordKind::Project);
    let main = applied(store.write(pair.clone()).await);
    match store.write(pair.clone()).await {
        Ok(WriteOutcome::Replayed(r)) => assert_eq!(r, main),
        other => panic!("expected Replayed, got {other:?}"),
    }
    assert_eq!(store.replay(&pair.key).await.unwrap(), Some(main));
    assert_eq!(seqs(&*store, "zone").await, vec![1, 2, 3, 4, 5]);
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

/// Requests as stores kept them before the schema that names the answer's log entry: each with a copy of its first answer.
/// `named`'s copy is the text of a change-log entry appended at the same time (as every write
/// left it); `orphan`'s matches no entry. A backend's migration test inserts these rows in a
/// store at the schema before, migrates it, and checks them with [`copied_answers_still_replay`].
pub struct CopiedAnswers {
    /// The record, logged as `zone`'s change 1 at time [`CopiedAnswers::TIME`], and its request.
    pub named: (StoredRecord, Idempotency),
    /// A record whose copy matches no log entry, and its request.
    pub orphan: (StoredRecord, Idempotency),
}

impl CopiedAnswers {
    pub const TIME: i64 = 7;

    pub fn new() -> Self {
        let named = write(record("zone", Uuid::now_v7(), 1, "logged"), None, "named");
        let orphan = write(record("zone", Uuid::now_v7(), 1, "orphan"), None, "orphan");
        CopiedAnswers {
            named: (named.record, named.key),
            orphan: (orphan.record, orphan.key),
        }
    }
}

impl CopiedAnswers {
    /// The `requests` rows after the migration, as (request id, response, answer) by request
    /// id: `named` names log position 1 and holds no copy, `orphan` keeps its copy.
    pub fn converted_rows(&self) -> Vec<(String, Option<String>, Option<i64>)> {
        let copy = self.orphan.0.encode().unwrap();
        vec![
            ("named".to_string(), None, Some(1)),
            ("orphan".to_string(), Some(copy), None),
        ]
    }
}

impl Default for CopiedAnswers {
    fn default() -> Self {
        Self::new()
    }
}

/// After the migration, both requests of `copied` answer their first result, and a different
/// request under a used id is still refused.
pub async fn copied_answers_still_replay(store: &dyn Store, copied: &CopiedAnswers) {
    for (record, key) in [&copied.named, &copied.orphan] {
        assert_eq!(store.replay(key).await.unwrap().as_ref(), Some(record));
    }
    let mut reused = copied.named.1.clone();
    reused.fingerprint = b"a different request".to_vec();
    assert!(matches!(
        store.replay(&reused).await,
        Err(StoreError::RequestIdReused(_))
    ));
    assert_eq!(seqs(store, "zone").await, vec![1]);
}

/// Record versions as stores kept them before each version was stored once (a record's row held
/// a copy of its current version, and each change-log entry the version's JSON). A backend's
/// migration test writes [`LoggedVersions::entries`] at feed positions 1, 2, … (each as
/// [`StoredRecord::encode`] JSON) and a row per [`LoggedVersions::current`] version, in a store
/// at the schema before, then migrates it and checks it with [`logged_versions_still_read`].
pub struct LoggedVersions {
    /// (owner, seq, time, version), in feed order: `zone`'s project at revisions 1 and 2 and
    /// revision 2 again (sent again after a grant widened it, so with another body), and a
    /// project received from `anji`.
    pub entries: Vec<(String, u64, i64, StoredRecord)>,
    /// The current version of each record: the last entry of each.
    pub current: Vec<StoredRecord>,
    /// A request whose answer is the entry at position 2.
    pub request: Idempotency,
}

impl LoggedVersions {
    pub fn new() -> Self {
        let id = Uuid::now_v7();
        let received = Uuid::now_v7();
        // Bodies with what JSON escapes, and text beyond ASCII.
        let first = record(
            "zone",
            id,
            1,
            r#"{"name":"长兴 \"一期\"","note":"a\nb\\c"}"#,
        );
        let mut second = record("zone", id, 2, r#"{"name":"长兴 二期","stage":"signed"}"#);
        second.index.stage = Some("signed".into());
        second.index.industry = Some("新能源".into());
        let mut widened = second.clone();
        widened.body = r#"{"name":"长兴 二期","stage":"signed","investor":"某公司"}"#.into();
        let mut theirs = record("anji", received, 4, r#"{"name":"安吉"}"#);
        theirs.index.parent = Some("projects/x".into());
        let request = write(second.clone(), Some(1), "second").key;
        LoggedVersions {
            entries: vec![
                ("zone".into(), 1, 10, first),
                ("zone".into(), 2, 20, second),
                ("zone".into(), 3, 30, widened.clone()),
                ("anji".into(), 7, 40, theirs.clone()),
            ],
            current: vec![widened, theirs],
            request,
        }
    }
}

impl Default for LoggedVersions {
    fn default() -> Self {
        Self::new()
    }
}

/// After the migration, `logged` reads as it was written: each record's current version, the
/// lists, both owners' change logs and the feed, the request's first answer. A write that
/// follows gets the next sequence number and a feed position after every earlier one; that
/// position is returned.
pub async fn logged_versions_still_read(store: &dyn Store, logged: &LoggedVersions) -> u64 {
    for current in &logged.current {
        let found = store.get(current.kind, &current.owner, current.id).await;
        assert_eq!(found.unwrap().as_ref(), Some(current));
    }
    let mut listed = logged.current.clone();
    listed.sort_by_key(|r| r.id);
    let list = store.list(ListQuery::of(RecordKind::Project, 10)).await;
    assert_eq!(list.unwrap(), listed);
    let filtered = ListQuery {
        stage: Some("signed".into()),
        ..ListQuery::of(RecordKind::Project, 10)
    };
    assert_eq!(
        store.list(filtered).await.unwrap(),
        vec![logged.current[0].clone()]
    );
    let feed = store.feed(0, 100).await.unwrap();
    let expected = logged
        .entries
        .iter()
        .enumerate()
        .map(|(i, (owner, seq, time, record))| FeedEntry {
            position: i as u64 + 1,
            change: Change {
                owner: owner.clone(),
                seq: *seq,
                time: *time,
                record: record.clone(),
            },
        });
    assert_eq!(feed, expected.clone().collect::<Vec<_>>());
    for owner in ["zone", "anji"] {
        let changes = store.changes(owner, 0, 100).await.unwrap();
        let of_owner = expected
            .clone()
            .map(|e| e.change)
            .filter(|c| c.owner == owner);
        assert_eq!(changes, of_owner.collect::<Vec<_>>());
    }
    let answer = store.replay(&logged.request).await.unwrap();
    assert_eq!(answer.as_ref(), Some(&logged.entries[1].3));
    let mut next = logged.current[0].clone();
    next.revision = 3;
    applied(store.write(write(next.clone(), Some(2), "third")).await);
    assert_eq!(
        store.get(next.kind, "zone", next.id).await.unwrap(),
        Some(next)
    );
    let last = store.feed(0, 100).await.unwrap().pop().unwrap();
    assert_eq!((last.change.owner.as_str(), last.change.seq), ("zone", 4));
    last.position
}
