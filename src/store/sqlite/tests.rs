//! The SQLite backend against the storage conformance suite.

use std::sync::Arc;

use super::SqliteStore;

crate::conformance_tests!(|dir| Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap()));

/// A store file that went away fails reads; no reader puts an empty database in its place
/// (it did: the health check then found a file, and an empty store could have been served).
#[tokio::test]
async fn a_reader_never_creates_a_store_file_that_went_away() {
    use crate::store::{LeaseStore, RecordStore};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    std::fs::rename(&path, dir.path().join("away.db")).unwrap();
    // No reader is open yet: this read opens one.
    let read = store.feed_position().await;
    assert!(read.is_err(), "{read:?}");
    assert!(!path.exists(), "a reader created {}", path.display());
    assert!(store.ping().await.is_err());
}

/// A write handed its call's audit event commits it in the write's own transaction, chained
/// after the events appended before it; a write that is refused or replayed does not.
#[tokio::test]
async fn a_write_commits_its_calls_audit_event_with_itself() {
    use crate::store::conformance::{record, write};
    use crate::store::{AuditQuery, AuditStore, NewAuditEvent, RecordStore, WriteAudit};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db")).unwrap();
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
    let audit = WriteAudit::new(event("create"));
    audit.name(vec![format!("parties/zone/projects/{id}")]);
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

    let events = store
        .audit_events(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
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
