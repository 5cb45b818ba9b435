//! Backing up a store file while its gateway runs, and putting a backup in place on a new
//! machine. `VACUUM INTO` copies one consistent snapshot (a read transaction: the running
//! gateway goes on writing) into a compact new file; the copy is written beside the target,
//! checked, synced and only then renamed into place, so a crash leaves no half file under the
//! target's name. A restored file is marked as such: the gateway takes back from its peers
//! what it wrote after the backup before it writes again (`exchange::recovery`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::replication::set_restored;
use super::{configure, migrate};
use crate::store::StoreError;

/// What a backup or a restored file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub bytes: u64,
    /// The last sequence number of `party`'s own change log.
    pub own_head: u64,
    /// The last audit event.
    pub audit_head: u64,
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// Writes a consistent copy of the store at `store` to `out` (which must not exist yet).
pub fn backup(store: &Path, out: &Path, party: &str) -> Result<BackupSummary, StoreError> {
    if !store.exists() {
        return Err(failed("no store at", store, "the file does not exist"));
    }
    refuse_existing(out)?;
    // Read-write without create: a WAL database needs its shared-memory file to read.
    let conn = Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| failed("cannot open", store, e))?;
    configure(&conn).map_err(|e| failed("cannot open", store, e))?;
    let partial = partial_path(out);
    let _ = std::fs::remove_file(&partial);
    conn.execute("VACUUM INTO ?1", [partial.to_string_lossy()])
        .map_err(|e| failed("cannot write", &partial, e))?;
    drop(conn);
    finish(&partial, out, party)
}

/// Puts the backup `backup` in place as the store file `store` of a stopped gateway (which
/// must not exist yet, nor its `-wal` file): checked, copied, synced, renamed.
pub fn restore(backup: &Path, store: &Path, party: &str) -> Result<BackupSummary, StoreError> {
    refuse_existing(store)?;
    let wal = sibling(store, "-wal");
    if wal.exists() {
        return Err(failed(
            "a write-ahead log of another store is in the way at",
            &wal,
            "remove it (and the -shm file) first",
        ));
    }
    if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed("cannot create", dir, e))?;
    }
    // Checked before the copy is migrated: migrating would give any SQLite file the tables of
    // a store, and the check of the copy in `finish` would then pass.
    check(backup, party)?;
    let partial = partial_path(store);
    std::fs::copy(backup, &partial).map_err(|e| failed("cannot copy to", &partial, e))?;
    // Brought to this version's schema and marked: at its start the gateway holds writes
    // until every peer has given back what it holds of this party's log.
    let marked = (|| {
        let mut conn =
            Connection::open(&partial).map_err(|e| failed("cannot open", &partial, e))?;
        configure(&conn).map_err(|e| failed("cannot open", &partial, e))?;
        migrate(&mut conn)?;
        set_restored(&conn, Some(crate::domain::now_micros()))
    })();
    if let Err(e) = marked {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    finish(&partial, store, party)
}

fn refuse_existing(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Err(failed(
            "refusing to overwrite",
            path,
            "it exists; choose a new name or move it away",
        ));
    }
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn partial_path(path: &Path) -> PathBuf {
    sibling(path, ".partial")
}

/// Checks the copy at `partial`, makes it durable and renames it to `out`.
fn finish(partial: &Path, out: &Path, party: &str) -> Result<BackupSummary, StoreError> {
    let summary = match check(partial, party) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(partial);
            return Err(e);
        }
    };
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| failed("cannot sync", partial, e))?;
    std::fs::rename(partial, out).map_err(|e| failed("cannot rename to", out, e))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the folder is.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(summary)
}

/// Opens a copy read-only, runs SQLite's integrity check and reads its heads.
fn check(path: &Path, party: &str) -> Result<BackupSummary, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| failed("cannot open", path, e))?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| failed("cannot check", path, e))?;
    if integrity != "ok" {
        return Err(StoreError::Corrupt(format!(
            "{} fails SQLite's integrity check: {integrity}",
            path.display()
        )));
    }
    let head = |sql: &str, args: &[&dyn rusqlite::ToSql]| {
        conn.query_row(sql, args, |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| failed("not a gateway store:", path, e))
    };
    let own_head = head(
        "SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = ?1",
        &[&party],
    )?;
    let audit_head = head("SELECT COALESCE(MAX(seq), 0) FROM audit", &[])?;
    let bytes = std::fs::metadata(path)
        .map_err(|e| failed("cannot read", path, e))?
        .len();
    Ok(BackupSummary {
        bytes,
        own_head,
        audit_head,
    })
}
