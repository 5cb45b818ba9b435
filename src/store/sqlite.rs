//! The embedded SQLite backend: one writer connection (SQLite allows one writer at a time
//! anyway), a small pool of reader connections, WAL journal and `synchronous = FULL`, so a
//! commit is on disk before the call that made it returns.
//!
//! Record writes are group-committed: writes that arrive while the writer is busy wait in a
//! queue, and whoever takes the writer next applies the whole queue in one transaction, each
//! write inside its own savepoint (a refused write rolls back alone), with one commit and so
//! one fsync for all of them. Every write is answered only after that commit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{
    AuditAnchor, AuditEvent, AuditQuery, Change, EVIDENCE_QUERY, FeedEntry, Idempotency,
    IndexFields, ListQuery, NewAuditEvent, QueuedWrite, RecordKind, ReplicaBatch, SignedManifest,
    Store, StoreError, StoredEvidence, StoredRecord, WitnessedHead, Write, WriteOutcome,
    WriteQueue, answer_of,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE records (
    kind        TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    stage       TEXT,
    industry    TEXT,
    factor_kind TEXT,
    parent      TEXT,
    body        TEXT    NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE INDEX records_by_owner ON records (kind, owner, id);
CREATE INDEX records_by_parent ON records (kind, parent, id) WHERE parent IS NOT NULL;

-- Natural keys that may be written once (one decision per party per round, one answer per
-- referral).
CREATE TABLE unique_keys (
    key TEXT PRIMARY KEY
) WITHOUT ROWID;

-- The feed: this party's own change log and every replicated change applied here, in commit
-- order. (owner, seq) is the owner's gapless numbering; position orders the feed (Watch).
CREATE TABLE log (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    owner    TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    time     INTEGER NOT NULL,
    record   TEXT    NOT NULL,
    UNIQUE (owner, seq)
);

-- Last change applied from each peer owner, committed with the change itself.
CREATE TABLE cursors (
    owner TEXT    PRIMARY KEY,
    seq   INTEGER NOT NULL,
    time  INTEGER NOT NULL
) WITHOUT ROWID;

-- What each applied change looked like on the wire, with the owner's signature.
CREATE TABLE evidence (
    owner     TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    envelope  BLOB    NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BLOB    NOT NULL,
    signer    TEXT    NOT NULL,
    received  INTEGER NOT NULL,
    PRIMARY KEY (owner, seq)
) WITHOUT ROWID;

CREATE TABLE signers (
    fingerprint TEXT PRIMARY KEY,
    certificate BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE requests (
    party       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    response    TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    PRIMARY KEY (party, request_id)
) WITHOUT ROWID;
"#,
    r#"
-- The hash-chained audit trail: every call, allowed or refused.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    time       INTEGER NOT NULL,
    caller     TEXT    NOT NULL,
    method     TEXT    NOT NULL,
    records    TEXT    NOT NULL,
    code       TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);

-- Where the chain continues from after old events were exported and pruned.
CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
);

-- Chain heads other parties signed and sent us: evidence against rewritten history.
CREATE TABLE witnessed_heads (
    party     TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    hash      BLOB    NOT NULL,
    time      INTEGER NOT NULL,
    signed    BLOB    NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BLOB    NOT NULL,
    signer    BLOB    NOT NULL,
    PRIMARY KEY (party, seq)
) WITHOUT ROWID;
"#,
    r#"
-- Batches the owner signed once, over a manifest of their envelopes' hashes; the evidence of
-- each of their changes names the manifest instead of holding a signature of its own.
CREATE TABLE manifests (
    digest    BLOB    PRIMARY KEY,
    owner     TEXT    NOT NULL,
    manifest  BLOB    NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BLOB    NOT NULL,
    signer    TEXT    NOT NULL
) WITHOUT ROWID;
ALTER TABLE evidence ADD COLUMN manifest BLOB;
"#,
];

/// Reads that run at once, each on its own connection (kept open for reuse).
const READERS: usize = 8;

/// How much of the database file a reader maps into memory (address space, shared by every
/// reader through the OS page cache; only the pages read count as resident).
const READER_MMAP_BYTES: i64 = 1 << 30;

pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_slots: Arc<tokio::sync::Semaphore>,
    queued: WriteQueue,
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
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
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
        })
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
            let c = Connection::open(path).map_err(unavailable)?;
            c.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(unavailable)?;
            c.pragma_update(None, "query_only", "ON")
                .map_err(unavailable)?;
            // Every commit elsewhere (the audit trail commits on each call) makes a reader
            // drop its page cache; mapped pages are read again without copying.
            c.pragma_update(None, "mmap_size", READER_MMAP_BYTES)
                .map_err(unavailable)?;
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
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

const RECORD_COLUMNS: &str =
    "kind, id, owner, revision, stage, industry, factor_kind, parent, body";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredRecord, StoreError>> {
    let kind: String = row.get(0)?;
    let id: String = row.get(1)?;
    let parsed = (|| {
        Ok(StoredRecord {
            kind: RecordKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown record kind `{kind}`")))?,
            id: Uuid::parse_str(&id)
                .map_err(|e| StoreError::Corrupt(format!("bad id `{id}`: {e}")))?,
            owner: row.get(2).map_err(unavailable)?,
            revision: row.get(3).map_err(unavailable)?,
            index: IndexFields {
                stage: row.get(4).map_err(unavailable)?,
                industry: row.get(5).map_err(unavailable)?,
                factor_kind: row.get(6).map_err(unavailable)?,
                parent: row.get(7).map_err(unavailable)?,
            },
            body: row.get(8).map_err(unavailable)?,
        })
    })();
    Ok(parsed)
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

static GET_RECORD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = ?1 AND id = ?2")
});

fn get_record(
    conn: &Connection,
    kind: RecordKind,
    id: Uuid,
) -> Result<Option<StoredRecord>, StoreError> {
    cached_row(
        conn,
        &GET_RECORD,
        params![kind.as_str(), id.to_string()],
        row_to_record,
    )
    .optional()
    .map_err(unavailable)?
    .transpose()
}

fn lookup_request(
    conn: &Connection,
    key: &Idempotency,
) -> Result<Option<StoredRecord>, StoreError> {
    let found: Option<(Vec<u8>, String)> = cached_row(
        conn,
        "SELECT fingerprint, response FROM requests WHERE party = ?1 AND request_id = ?2",
        params![key.party, key.request_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(unavailable)?;
    match found {
        None => Ok(None),
        Some((fingerprint, _)) if fingerprint != key.fingerprint => {
            Err(StoreError::RequestIdReused(key.request_id.clone()))
        }
        Some((_, response)) => serde_json::from_str(&response)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("stored response: {e}"))),
    }
}

/// Applies queued writes in one transaction and answers each after the commit. A write that
/// fails its checks rolls back to its savepoint and gets its error; a failed commit fails all.
fn apply_writes(conn: &mut Connection, queued: Vec<QueuedWrite>) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            for (_, reply) in queued {
                let _ = reply.send(Err(unavailable(&e)));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(queued.len());
    for (write, reply) in queued {
        let result = match tx.savepoint() {
            Ok(mut sp) => {
                let result = apply_write(&sp, write);
                let kept = if result.is_ok() {
                    sp.commit()
                } else {
                    sp.rollback()
                };
                kept.map_err(unavailable).and(result)
            }
            Err(e) => Err(unavailable(e)),
        };
        answers.push((reply, result));
    }
    match tx.commit() {
        Ok(()) => {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for (reply, _) in answers {
                let _ = reply.send(Err(unavailable(&e)));
            }
        }
    }
}

/// One write's checks and inserts, inside the caller's transaction.
fn apply_write(tx: &Connection, w: Write) -> Result<WriteOutcome, StoreError> {
    if let Some(first) = lookup_request(tx, &w.key)? {
        return Ok(WriteOutcome::Replayed(first));
    }
    let rec = &w.record;
    let current = get_record(tx, rec.kind, rec.id)?;
    w.check_revision(current.as_ref())?;
    if let Some(unique) = &w.unique {
        let fresh = tx
            .prepare_cached("INSERT OR IGNORE INTO unique_keys (key) VALUES (?1)")
            .and_then(|mut stmt| stmt.execute(params![unique]))
            .map_err(unavailable)?;
        if fresh == 0 {
            return Err(StoreError::AlreadyExists);
        }
    }
    for extra in &w.also_create {
        if get_record(tx, extra.kind, extra.id)?.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        upsert_record(tx, extra)?;
        append_own_change(tx, extra, w.time)?;
    }
    upsert_record(tx, rec)?;
    let encoded = append_own_change(tx, rec, w.time)?;
    tx.prepare_cached(
        "INSERT INTO requests (party, request_id, fingerprint, response, time) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![w.key.party, w.key.request_id, w.key.fingerprint, encoded, w.time])
    })
    .map_err(unavailable)?;
    Ok(WriteOutcome::Applied(w.record))
}

fn upsert_record(conn: &Connection, rec: &StoredRecord) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO records ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))
    .and_then(|mut stmt| {
        stmt.execute(params![
            rec.kind.as_str(),
            rec.id.to_string(),
            rec.owner,
            rec.revision,
            rec.index.stage,
            rec.index.industry,
            rec.index.factor_kind,
            rec.index.parent,
            rec.body,
        ])
    })
    .map_err(unavailable)?;
    Ok(())
}

fn append_log(
    conn: &Connection,
    owner: &str,
    seq: u64,
    time: i64,
    encoded: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO log (owner, seq, time, record) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut stmt| stmt.execute(params![owner, seq as i64, time, encoded]))
        .map_err(unavailable)?;
    Ok(())
}

/// Appends a record version to its owner's change log with the next sequence number; returns
/// the encoded record.
fn append_own_change(
    conn: &Connection,
    rec: &StoredRecord,
    time: i64,
) -> Result<String, StoreError> {
    let seq: i64 = cached_row(
        conn,
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM log WHERE owner = ?1",
        params![rec.owner],
        |r| r.get(0),
    )
    .map_err(unavailable)?;
    let encoded = serde_json::to_string(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    append_log(conn, &rec.owner, seq as u64, time, &encoded)?;
    Ok(encoded)
}

fn read_cursor(conn: &Connection, owner: &str) -> Result<u64, StoreError> {
    cached_row(
        conn,
        "SELECT seq FROM cursors WHERE owner = ?1",
        params![owner],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|s| s.unwrap_or(0) as u64)
    .map_err(unavailable)
}

fn apply_batch(conn: &mut Connection, batch: ReplicaBatch) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let mut cursor = read_cursor(&tx, &batch.owner)?;
    tx.execute(
        "INSERT OR IGNORE INTO signers (fingerprint, certificate) VALUES (?1, ?2)",
        params![batch.signer.0, batch.signer.1],
    )
    .map_err(unavailable)?;
    let manifest = batch.manifest.as_ref().map(|m| m.digest.as_slice());
    if let Some(m) = &batch.manifest {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO manifests (digest, owner, manifest, scheme, signature, signer) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                m.digest,
                batch.owner,
                m.manifest,
                m.scheme,
                m.signature,
                batch.signer.0
            ])
        })
        .map_err(unavailable)?;
    }
    for change in batch.changes {
        if change.seq <= cursor {
            continue;
        }
        if change.seq != cursor + 1 {
            return Err(StoreError::OutOfOrder {
                owner: batch.owner,
                cursor,
                got: change.seq,
            });
        }
        if let Some(rec) = &change.record {
            let newer =
                get_record(&tx, rec.kind, rec.id)?.is_none_or(|cur| cur.revision < rec.revision);
            if newer {
                upsert_record(&tx, rec)?;
            }
            let encoded =
                serde_json::to_string(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            append_log(&tx, &batch.owner, change.seq, change.time, &encoded)?;
        }
        let e = &change.evidence;
        tx.prepare_cached(
            "INSERT INTO evidence \
             (owner, seq, envelope, scheme, signature, signer, received, manifest) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                batch.owner,
                change.seq as i64,
                e.envelope,
                e.scheme,
                e.signature,
                e.signer,
                batch.received,
                manifest
            ])
        })
        .map_err(unavailable)?;
        cursor = change.seq;
    }
    tx.execute(
        "INSERT INTO cursors (owner, seq, time) VALUES (?1, ?2, ?3) \
         ON CONFLICT (owner) DO UPDATE SET seq = excluded.seq, time = excluded.time",
        params![batch.owner, cursor as i64, batch.received],
    )
    .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(cursor)
}

fn read_anchor(conn: &Connection) -> Result<Option<AuditAnchor>, StoreError> {
    cached_row(
        conn,
        "SELECT seq, hash FROM audit_anchor WHERE id = 1",
        [],
        |r| {
            Ok(AuditAnchor {
                seq: r.get::<_, i64>(0)? as u64,
                hash: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(unavailable)
}

fn read_audit_head(conn: &Connection) -> Result<Option<AuditAnchor>, StoreError> {
    let last = cached_row(
        conn,
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| {
            Ok(AuditAnchor {
                seq: r.get::<_, i64>(0)? as u64,
                hash: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(unavailable)?;
    match last {
        Some(head) => Ok(Some(head)),
        None => read_anchor(conn),
    }
}

fn append_audit_events(
    conn: &mut Connection,
    events: Vec<NewAuditEvent>,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let (mut seq, mut prev) = match read_audit_head(&tx)? {
        Some(h) => (h.seq, h.hash),
        None => (0, crate::audit::GENESIS.to_vec()),
    };
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO audit (seq, time, caller, method, records, code, request_id, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(unavailable)?;
        for e in events {
            seq += 1;
            let hash = crate::audit::link(seq, &prev, &e);
            let records = serde_json::to_string(&e.records)
                .map_err(|x| StoreError::Corrupt(x.to_string()))?;
            stmt.execute(params![
                seq as i64,
                e.time,
                e.caller,
                e.method,
                records,
                e.code,
                e.request_id,
                prev,
                hash.to_vec()
            ])
            .map_err(unavailable)?;
            prev = hash.to_vec();
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(seq)
}

fn query_audit(conn: &Connection, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
    let mut sql = String::from(
        "SELECT seq, time, caller, method, records, code, request_id, prev_hash, hash FROM audit WHERE seq > ?",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![(q.after_seq as i64).into()];
    if let Some(since) = q.since {
        sql.push_str(" AND time >= ?");
        args.push(since.into());
    }
    if let Some(until) = q.until {
        sql.push_str(" AND time < ?");
        args.push(until.into());
    }
    for (column, value) in [
        ("caller", &q.caller),
        ("method", &q.method),
        ("code", &q.code),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(v.clone().into());
        }
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    args.push((q.limit as i64).into());
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Vec<u8>>(7)?,
                r.get::<_, Vec<u8>>(8)?,
            ))
        })
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, time, caller, method, records, code, request_id, prev_hash, hash) =
            row.map_err(unavailable)?;
        let records = super::decode_audit_records(records);
        out.push(AuditEvent {
            seq: seq as u64,
            event: NewAuditEvent {
                time,
                caller,
                method,
                records,
                code,
                request_id,
            },
            prev_hash,
            hash,
        });
    }
    Ok(out)
}

fn list_records(conn: &Connection, q: &ListQuery) -> Result<Vec<StoredRecord>, StoreError> {
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = ?");
    let mut args: Vec<rusqlite::types::Value> = vec![q.kind.as_str().to_string().into()];
    let mut eq = |column: &str, value: &Option<String>| {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(v.clone().into());
        }
    };
    eq("owner", &q.owner);
    eq("stage", &q.stage);
    eq("industry", &q.industry);
    eq("factor_kind", &q.factor_kind);
    eq("parent", &q.parent);
    if let Some(after) = q.after {
        sql.push_str(" AND id > ?");
        args.push(after.to_string().into());
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    args.push((q.limit as i64).into());
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), row_to_record)
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(unavailable)??);
    }
    Ok(out)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(
        &self,
        kind: RecordKind,
        owner: &str,
        id: Uuid,
    ) -> Result<Option<StoredRecord>, StoreError> {
        self.point_read(|c| Ok(get_record(c, kind, id)?.filter(|r| r.owner == owner)))
    }

    async fn list(&self, query: ListQuery) -> Result<Vec<StoredRecord>, StoreError> {
        self.read(move |c| list_records(c, &query)).await
    }

    async fn replay(&self, key: &Idempotency) -> Result<Option<StoredRecord>, StoreError> {
        self.point_read(|c| lookup_request(c, key))
    }

    async fn write(&self, write: Write) -> Result<WriteOutcome, StoreError> {
        let (answer, drain) = self.queued.push(write);
        if let Some(mut drain) = drain {
            // The writer is held for the whole drain (record commits go before audit appends
            // until the writes pause), and the write that started it waits for the drain:
            // measured, both keep replication lag's tail at half of what it is otherwise. The
            // blocking task runs to its end even if this caller goes away.
            self.with_writer(move |c| {
                while let Some(batch) = drain.next_batch() {
                    apply_writes(c, batch);
                }
                Ok(())
            })
            .await?;
        }
        answer_of(answer).await
    }

    async fn changes(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, time, record FROM log WHERE owner = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![owner, after as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, time, record) = row.map_err(unavailable)?;
                out.push(Change::decode(owner.clone(), seq, time, &record)?);
            }
            Ok(out)
        })
        .await
    }

    async fn last_seq(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = ?1",
                params![owner],
                |r| r.get::<_, i64>(0),
            )
            .map(|s| s as u64)
            .map_err(unavailable)
        })
        .await
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT position, owner, seq, time, record FROM log WHERE position > ?1 ORDER BY position LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![after as i64, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (position, owner, seq, time, record) = row.map_err(unavailable)?;
                out.push(FeedEntry {
                    position: position as u64,
                    change: Change::decode(owner, seq, time, &record)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn cursor(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| read_cursor(c, &owner)).await
    }

    async fn evidence(
        &self,
        owner: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(EVIDENCE_QUERY).map_err(unavailable)?;
            let rows = stmt
                .query_map(params![owner, after_seq as i64, limit as i64], |r| {
                    let digest: Option<Vec<u8>> = r.get(5)?;
                    let manifest = match (&digest, r.get::<_, Option<Vec<u8>>>(6)?) {
                        (Some(digest), Some(manifest)) => Some(SignedManifest {
                            digest: digest.clone(),
                            manifest,
                            scheme: r.get(7)?,
                            signature: r.get(8)?,
                        }),
                        _ => None,
                    };
                    Ok(StoredEvidence {
                        seq: r.get::<_, i64>(0)? as u64,
                        envelope: r.get(1)?,
                        scheme: r.get(2)?,
                        signature: r.get(3)?,
                        signer: r.get(4)?,
                        manifest_digest: digest,
                        manifest,
                        received: r.get(9)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<_, _>>().map_err(unavailable)
        })
        .await
    }

    async fn apply_replicas(&self, batch: ReplicaBatch) -> Result<u64, StoreError> {
        self.with_writer(move |c| apply_batch(c, batch)).await
    }

    async fn feed_position(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(position), 0) FROM log", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|p| p as u64)
            .map_err(unavailable)
        })
        .await
    }

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

    async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<u64, StoreError> {
        self.with_writer(move |c| append_audit_events(c, events))
            .await
    }

    async fn audit_events(&self, query: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(move |c| query_audit(c, &query)).await
    }

    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.read(read_anchor).await
    }

    async fn audit_head(&self) -> Result<Option<AuditAnchor>, StoreError> {
        self.read(read_audit_head).await
    }

    async fn prune_audit(&self, through: u64) -> Result<AuditAnchor, StoreError> {
        self.with_writer(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let hash: Vec<u8> = tx
                .query_row(
                    "SELECT hash FROM audit WHERE seq = ?1",
                    params![through as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?
                .ok_or(StoreError::NotFound)?;
            tx.execute("DELETE FROM audit WHERE seq <= ?1", params![through as i64])
                .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![through as i64, hash],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(AuditAnchor { seq: through, hash })
        })
        .await
    }

    async fn put_witnessed_head(&self, h: WitnessedHead) -> Result<(), StoreError> {
        self.with_writer(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO witnessed_heads (party, seq, hash, time, signed, scheme, signature, signer) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![h.party, h.seq as i64, h.hash, h.time, h.signed, h.scheme, h.signature, h.signer],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn witnessed_heads(&self, party: &str) -> Result<Vec<WitnessedHead>, StoreError> {
        let party = party.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT party, seq, hash, time, signed, scheme, signature, signer FROM witnessed_heads \
                     WHERE party = ?1 ORDER BY seq",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![party], |r| {
                    Ok(WitnessedHead {
                        party: r.get(0)?,
                        seq: r.get::<_, i64>(1)? as u64,
                        hash: r.get(2)?,
                        time: r.get(3)?,
                        signed: r.get(4)?,
                        scheme: r.get(5)?,
                        signature: r.get(6)?,
                        signer: r.get(7)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        self.with_writer(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
