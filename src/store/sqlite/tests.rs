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
