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

/// A store written before requests named their answer's change-log entry (a copy per request)
/// is converted when opened: a copy that is a log entry becomes a reference to it, a copy that
/// matches none is kept, and both still replay.
#[tokio::test]
async fn requests_of_an_older_store_name_their_log_entry_after_the_migration() {
    use crate::store::conformance::{CopiedAnswers, copied_answers_still_replay};
    use rusqlite::params;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let copied = CopiedAnswers::new();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let before = super::schema::BEFORE_NAMED_ANSWERS;
        for sql in &super::schema::MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", before).unwrap();
        let (named, named_key) = &copied.named;
        let text = named.encode().unwrap();
        conn.execute(
            "INSERT INTO log (owner, seq, time, record) VALUES ('zone', 1, ?1, ?2)",
            params![CopiedAnswers::TIME, text],
        )
        .unwrap();
        for (key, response) in [
            (named_key, text.clone()),
            (&copied.orphan.1, copied.orphan.0.encode().unwrap()),
        ] {
            conn.execute(
                "INSERT INTO requests (party, request_id, fingerprint, response, time) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.party,
                    key.request_id,
                    key.fingerprint,
                    response,
                    CopiedAnswers::TIME
                ],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    let rows: Vec<(String, Option<String>, Option<i64>)> = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT request_id, response, answer FROM requests ORDER BY request_id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(rows, copied.converted_rows());
    copied_answers_still_replay(&store, &copied).await;
}

/// Pages of a list and of the change log are read by statements that stay prepared: a bound
/// LIMIT made SQLite plan the statement again on every call.
#[tokio::test]
async fn list_and_change_log_statements_are_not_prepared_again_for_each_page() {
    use crate::domain::RecordKind;
    use crate::store::conformance::{record, write};
    use crate::store::{ListQuery, RecordStore};
    use rusqlite::StatementStatus::RePrepare;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = uuid::Uuid::now_v7();
        store
            .write(write(record("zone", id, 1, "v"), None, &format!("w{i}")))
            .await
            .unwrap();
        ids.push(id);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let page = |after| ListQuery {
        after,
        ..ListQuery::of(RecordKind::Project, 2)
    };
    for after in [None, Some(ids[1]), Some(ids[3])] {
        let found = super::records::list_records(&conn, &page(after)).unwrap();
        assert!(!found.is_empty());
    }
    let (sql, _) = super::records::list_statement(&page(Some(ids[0])));
    let listed = conn.prepare_cached(&sql).unwrap().get_status(RePrepare);
    assert_eq!(listed, 0, "the list statement was prepared again");

    let changes = super::records::changes_statement(2);
    for after in 0..4i64 {
        let mut stmt = conn.prepare_cached(&changes).unwrap();
        let n = stmt
            .query_map(rusqlite::params!["zone", after], |_| Ok(()))
            .unwrap()
            .count();
        assert_eq!(n, 2);
    }
    let again = conn.prepare_cached(&changes).unwrap().get_status(RePrepare);
    assert_eq!(again, 0, "the change-log statement was prepared again");
}
