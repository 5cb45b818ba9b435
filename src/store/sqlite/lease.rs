//! Health and checkpoint of the SQLite store (one process owns it, so the pull lease is always
//! granted).

use async_trait::async_trait;
use rusqlite::Connection;

use super::schema::MIGRATIONS;
use super::{SqliteStore, unavailable};
use crate::store::*;

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // Read-only without CREATE: fails when the file is gone instead of making a new one.
            let conn =
                Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(unavailable)?;
            if version != MIGRATIONS.len() as i64 {
                return Err(unavailable(format!(
                    "{} has schema version {version}, expected {}",
                    path.display(),
                    MIGRATIONS.len()
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        self.with_writer(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }
}
