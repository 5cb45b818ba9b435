//! The SQLite backend against the storage conformance suite.

use std::sync::Arc;

use super::SqliteStore;

crate::conformance_tests!(|dir| Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap()));
