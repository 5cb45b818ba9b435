//! The embedded SQLite backend: one writer connection (SQLite allows one writer at a time
//! anyway), a small pool of reader connections, WAL journal and `synchronous = FULL`, so a
//! commit is on disk before the call that made it returns.
//!
//! Record writes are group-committed: writes that arrive while the writer is busy wait in a
//! queue, and whoever takes the writer next applies the whole queue in one transaction, each
//! write inside its own savepoint (a refused write rolls back alone), with one commit and so
//! one fsync for all of them. Every write is answered only after that commit.

mod audit;
pub mod backup;
mod lease;
mod records;
mod replication;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::{StoreError, WriteQueue};
use schema::MIGRATIONS;

/// Reads that run at once, each on its own connection (kept open for reuse).
const READERS: usize = 8;

pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_slots: Arc<tokio::sync::Semaphore>,
    queued: WriteQueue,
    /// The hash new audit events are linked with.
    chain: crate::crypto::Digest,
}

/// Locks a mutex, taking over its data if a thread panicked while holding it (every holder
/// leaves the data consistent at each step).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted and overwritten content is zeroed in the file, not left in free space: data a
    // grant no longer covers must be gone from the file once erased.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        configure(&conn).map_err(unavailable)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: Arc::new(Mutex::new(conn)),
            readers: Arc::new(Mutex::new(Vec::new())),
            read_slots: Arc::new(tokio::sync::Semaphore::new(READERS)),
            queued: WriteQueue::default(),
            chain: crate::crypto::Digest::Sha256,
        })
    }

    /// The store, linking the audit events it appends from now on by `digest` (SHA-256
    /// unless told otherwise; SM3 in the gm crypto profile).
    pub fn chained_by(mut self, digest: crate::crypto::Digest) -> Self {
        self.chain = digest;
        self
    }

    /// Runs `f` on a reader connection on the blocking pool. At most [`READERS`] reads run at
    /// once, so every read finds a connection already open (opening one re-reads the schema).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .read_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the store is closed"))?;
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            with_reader(&readers, &path, f)
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }

    /// Runs a point read (one row by primary key) on the calling runtime thread. It takes
    /// microseconds, and a WAL reader never waits for the writer, so this is cheaper than the
    /// two thread switches of the blocking pool; scans and anything long use [`Self::read`].
    fn point_read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        with_reader(&self.readers, &self.path, f)
    }

    /// Runs `f` on the writer connection on the blocking pool.
    async fn with_writer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&writer);
            f(&mut conn)
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }
}

/// Runs `f` on a pooled reader connection, opening one if none is idle.
fn with_reader<T>(
    readers: &Mutex<Vec<Connection>>,
    path: &Path,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let conn = match lock(readers).pop() {
        Some(c) => c,
        None => {
            // Never with CREATE: a store file that went away (an unmounted volume, a file
            // moved) must fail the read, not be replaced by an empty database that the next
            // health check or reader then finds.
            let flags = rusqlite::OpenFlags::default() - rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
            let c = Connection::open_with_flags(path, flags)
                .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
            c.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
            c.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(unavailable)?;
            c.pragma_update(None, "query_only", "ON")
                .map_err(unavailable)?;
            // No memory map, whatever SQLite was built with: every commit elsewhere (the audit
            // trail commits on each call) makes a reader with a map unmap all of it and fault
            // its pages in again, which cost a GetProject a fifth of its store time (profiled
            // 2026-12-04); reading the few pages a call needs through the OS cache is cheaper.
            c.pragma_update(None, "mmap_size", 0).map_err(unavailable)?;
            c
        }
    };
    let result = f(&conn);
    let mut idle = lock(readers);
    if idle.len() < READERS {
        idle.push(conn);
    }
    result
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(unavailable)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this gateway knows ({}); upgrade the gateway",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Unavailable(format!(
                "schema migration {} of {} failed, and the store is left at schema {i}: {e}",
                i + 1,
                MIGRATIONS.len()
            ))
        })?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

/// Statements each connection keeps prepared (list filters and page sizes each make their own).
const CACHED_STATEMENTS: usize = 64;

/// ` LIMIT n`, with the number in the statement's text. SQLite (3.50, built with STAT4 as
/// bundled) plans a statement again whenever a parameter its plan depends on is bound anew, and
/// a bound LIMIT is one: every ListProjects call re-prepared its statement (measured: 8% of the
/// call's CPU). The statement cache keeps one statement per limit used instead.
fn limit(n: usize) -> String {
    format!(" LIMIT {}", n.min(i64::MAX as usize))
}

/// `query_row` through the connection's statement cache, so hot paths parse their SQL once.
fn cached_row<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

#[cfg(test)]
mod tests;
