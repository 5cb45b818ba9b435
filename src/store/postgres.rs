//! The PostgreSQL backend, for a party that runs several gateway replicas on one database.
//!
//! Guarantees are those of the SQLite store, held across replicas by the database:
//!
//! - Every transaction that appends to the feed (record writes, applied replicas) first takes
//!   one transaction-scoped advisory lock, so feed positions and each owner's sequence numbers
//!   are assigned in commit order without gaps, whichever replica writes. A Watch reader can
//!   never see position n+1 before position n.
//! - Audit appends take a second advisory lock, so the chain stays single and ordered.
//! - `synchronous_commit` is forced on for every session: a commit is durable before the call
//!   that made it is answered.
//! - Record writes are group-committed per replica as in SQLite (one transaction, a savepoint
//!   per write), so a busy replica pays one commit for many writes.
//! - Every feed commit sends `NOTIFY yrd_feed`; each replica listens and wakes its live
//!   streams, so Watch and peers pulling from any replica see every change.
//! - Pulling from a peer is guarded by a session-scoped advisory lock (the pull lease), held
//!   on a connection of its own: when the holding replica dies its session ends, the lock is
//!   released and another replica takes over. Applying a replica batch also re-reads the
//!   cursor under the feed lock, so even two pullers could not apply a change twice.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use uuid::Uuid;

use super::{
    AuditAnchor, AuditEvent, AuditQuery, Change, EVIDENCE_QUERY, FeedEntry, Idempotency,
    IndexFields, ListQuery, NewAuditEvent, PullLease, QueuedWrite, RecordKind, ReplicaBatch,
    SignedManifest, Store, StoreError, StoredEvidence, StoredRecord, WitnessedHead, Write,
    WriteOutcome, WriteQueue, answer_of,
};

/// Schema migrations, applied in order; `schema_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE records (
    kind        TEXT   NOT NULL,
    id          UUID   NOT NULL,
    owner       TEXT   NOT NULL,
    revision    BIGINT NOT NULL,
    stage       TEXT,
    industry    TEXT,
    factor_kind TEXT,
    parent      TEXT,
    body        TEXT   NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX records_by_owner ON records (kind, owner, id);
CREATE INDEX records_by_parent ON records (kind, parent, id) WHERE parent IS NOT NULL;

CREATE TABLE unique_keys (
    key TEXT PRIMARY KEY
);

-- The feed: own change log and applied replicas in commit order. Positions are assigned under
-- the feed lock, so they are gapless and in commit order (Watch resumes by position).
CREATE TABLE log (
    position BIGINT PRIMARY KEY,
    owner    TEXT   NOT NULL,
    seq      BIGINT NOT NULL,
    time     BIGINT NOT NULL,
    record   TEXT   NOT NULL,
    UNIQUE (owner, seq)
);

CREATE TABLE cursors (
    owner TEXT   PRIMARY KEY,
    seq   BIGINT NOT NULL,
    time  BIGINT NOT NULL
);

CREATE TABLE evidence (
    owner     TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    envelope  BYTEA   NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BYTEA   NOT NULL,
    signer    TEXT    NOT NULL,
    received  BIGINT  NOT NULL,
    PRIMARY KEY (owner, seq)
);

CREATE TABLE signers (
    fingerprint TEXT  PRIMARY KEY,
    certificate BYTEA NOT NULL
);

CREATE TABLE requests (
    party       TEXT   NOT NULL,
    request_id  TEXT   NOT NULL,
    fingerprint BYTEA  NOT NULL,
    response    TEXT   NOT NULL,
    time        BIGINT NOT NULL,
    PRIMARY KEY (party, request_id)
);

CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY,
    time       BIGINT NOT NULL,
    caller     TEXT   NOT NULL,
    method     TEXT   NOT NULL,
    records    TEXT   NOT NULL,
    code       TEXT   NOT NULL,
    request_id TEXT   NOT NULL,
    prev_hash  BYTEA  NOT NULL,
    hash       BYTEA  NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);

CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT  NOT NULL,
    hash BYTEA   NOT NULL
);

CREATE TABLE witnessed_heads (
    party     TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    hash      BYTEA   NOT NULL,
    time      BIGINT  NOT NULL,
    signed    BYTEA   NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BYTEA   NOT NULL,
    signer    BYTEA   NOT NULL,
    PRIMARY KEY (party, seq)
);
"#,
    r#"
-- Batches the owner signed once, over a manifest of their envelopes' hashes; the evidence of
-- each of their changes names the manifest instead of holding a signature of its own.
CREATE TABLE manifests (
    digest    BYTEA   PRIMARY KEY,
    owner     TEXT    NOT NULL,
    manifest  BYTEA   NOT NULL,
    scheme    INTEGER NOT NULL,
    signature BYTEA   NOT NULL,
    signer    TEXT    NOT NULL
);
ALTER TABLE evidence ADD COLUMN manifest BYTEA;
"#,
];

/// First key of every advisory lock this gateway takes (ASCII "yrdg"), so its locks cannot
/// collide with another application's on the same server.
const LOCK_SPACE: i32 = 0x7972_6467;
/// Second keys of the transaction-scoped locks.
const FEED_LOCK: i32 = 1;
const AUDIT_LOCK: i32 = 2;
const MIGRATION_LOCK: i32 = 3;

/// The notification channel of feed commits.
const FEED_CHANNEL: &str = "yrd_feed";

/// How often a pull-lease holder checks that its session still answers.
const LEASE_CHECK: Duration = Duration::from_secs(2);
/// How long a session may take to connect or to answer a lease check.
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Parsed connection string (URL or `key=value` form), password included.
    pub connection: tokio_postgres::Config,
    /// Connections kept open for calls.
    pub pool_size: usize,
}

impl PostgresOptions {
    /// Parses a connection string; `password`, when given, replaces one in the string.
    pub fn parse(url: &str, password: Option<String>, pool_size: usize) -> Result<Self, String> {
        let mut connection = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
        if connection.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        if connection.get_dbname().is_none() {
            return Err("names no database (dbname)".into());
        }
        if let Some(password) = password {
            connection.password(password);
        }
        // Commits are durable before they are acknowledged, whatever the server's default. A
        // replica that stalls inside a transaction (frozen process, lost network) must not hold
        // the feed lock for long: the server ends such a session after 30 s, and no statement
        // runs longer than a minute.
        connection.options(
            "-c synchronous_commit=on -c idle_in_transaction_session_timeout=30000 \
             -c statement_timeout=60000",
        );
        connection.application_name("yrd-gateway");
        connection.connect_timeout(SESSION_TIMEOUT);
        connection.keepalives_idle(Duration::from_secs(10));
        Ok(PostgresOptions {
            connection,
            pool_size,
        })
    }
}

/// A party's store in one PostgreSQL database, shared by every replica of its gateway.
pub struct PostgresStore {
    options: PostgresOptions,
    pool: Pool,
    /// Writes waiting for this replica's group commit (replicas serialise on the feed lock).
    queued: WriteQueue,
    signal: Arc<watch::Sender<u64>>,
    listener: tokio::task::AbortHandle,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A database error as the store reports it: unique violations (a concurrent replica wrote the
/// same key) and everything else are "unavailable" with the server's message.
fn db(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Unavailable(format!("postgres: {}", d.message())),
        None => StoreError::Unavailable(format!("postgres: {e}")),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db(e),
        other => StoreError::Unavailable(format!("postgres pool: {other}")),
    }
}

impl PostgresStore {
    /// Connects, brings the schema up to date (one replica at a time) and starts listening
    /// for feed commits of other replicas.
    pub async fn connect(options: PostgresOptions) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            options.connection.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(SESSION_TIMEOUT))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(unavailable)?;
        {
            let mut conn = pool.get().await.map_err(pool_error)?;
            migrate(&mut conn).await?;
        }
        let signal = Arc::new(watch::channel(0).0);
        let listener = tokio::spawn(listen(options.connection.clone(), Arc::downgrade(&signal)))
            .abort_handle();
        Ok(PostgresStore {
            options,
            pool,
            queued: WriteQueue::default(),
            signal,
            listener,
        })
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// A session of its own, outside the pool, with its connection driven by a task.
    async fn session(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StoreError> {
        let (client, connection) = self.options.connection.connect(NoTls).await.map_err(db)?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, task))
    }
}

async fn migrate(conn: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let tx = conn.transaction().await.map_err(db)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_SPACE, &MIGRATION_LOCK],
    )
    .await
    .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .await
        .map_err(db)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(db)?
        .map(|r| r.get(0))
        .unwrap_or(0);
    let version = version as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this gateway knows ({}); upgrade the gateway",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[version..] {
        tx.batch_execute(sql).await.map_err(db)?;
    }
    tx.execute("DELETE FROM schema_version", &[])
        .await
        .map_err(db)?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&(MIGRATIONS.len() as i32)],
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

/// Follows `NOTIFY yrd_feed` on a session of its own and bumps `signal` for each, until the
/// store is dropped. Reconnects after a failure; every (re)connect bumps once, since
/// notifications sent meanwhile were missed.
async fn listen(config: tokio_postgres::Config, signal: Weak<watch::Sender<u64>>) {
    let bump = |signal: &Weak<watch::Sender<u64>>| match signal.upgrade() {
        Some(s) => {
            s.send_modify(|n| *n = n.wrapping_add(1));
            true
        }
        None => false,
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let sql = format!("LISTEN {FEED_CHANNEL}");
                let listening = client.batch_execute(&sql);
                // The connection must be polled for LISTEN to complete.
                let mut listening = std::pin::pin!(listening);
                let ready = loop {
                    tokio::select! {
                        r = &mut listening => break r.is_ok(),
                        m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                    }
                };
                if ready {
                    delay = Duration::from_millis(200);
                    if !bump(&signal) {
                        return;
                    }
                    while let Some(Ok(message)) = messages.next().await {
                        if matches!(message, AsyncMessage::Notification(_)) && !bump(&signal) {
                            return;
                        }
                    }
                }
                tracing::warn!(
                    "lost the PostgreSQL session that listens for other replicas' changes; reconnecting"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the PostgreSQL session that listens for other replicas' changes; retrying");
            }
        }
        if signal.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

const RECORD_COLUMNS: &str =
    "kind, id, owner, revision, stage, industry, factor_kind, parent, body";

fn row_to_record(row: &Row) -> Result<StoredRecord, StoreError> {
    let kind: String = row.try_get(0).map_err(db)?;
    Ok(StoredRecord {
        kind: RecordKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown record kind `{kind}`")))?,
        id: row.try_get(1).map_err(db)?,
        owner: row.try_get(2).map_err(db)?,
        revision: row.try_get(3).map_err(db)?,
        index: IndexFields {
            stage: row.try_get(4).map_err(db)?,
            industry: row.try_get(5).map_err(db)?,
            factor_kind: row.try_get(6).map_err(db)?,
            parent: row.try_get(7).map_err(db)?,
        },
        body: row.try_get(8).map_err(db)?,
    })
}

static GET_RECORD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1 AND id = $2")
});

static UPSERT_RECORD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO records ({RECORD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, revision = excluded.revision, \
         stage = excluded.stage, industry = excluded.industry, factor_kind = excluded.factor_kind, \
         parent = excluded.parent, body = excluded.body"
    )
});

async fn get_record(
    c: &impl GenericClient,
    kind: RecordKind,
    id: Uuid,
) -> Result<Option<StoredRecord>, StoreError> {
    let stmt = c.prepare_cached(&GET_RECORD).await.map_err(db)?;
    c.query_opt(&stmt, &[&kind.as_str(), &id])
        .await
        .map_err(db)?
        .as_ref()
        .map(row_to_record)
        .transpose()
}

async fn lookup_request(
    c: &impl GenericClient,
    key: &Idempotency,
) -> Result<Option<StoredRecord>, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT fingerprint, response FROM requests WHERE party = $1 AND request_id = $2",
        )
        .await
        .map_err(db)?;
    let Some(row) = c
        .query_opt(&stmt, &[&key.party, &key.request_id])
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let fingerprint: Vec<u8> = row.try_get(0).map_err(db)?;
    if fingerprint != key.fingerprint {
        return Err(StoreError::RequestIdReused(key.request_id.clone()));
    }
    let response: String = row.try_get(1).map_err(db)?;
    serde_json::from_str(&response)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("stored response: {e}")))
}

async fn upsert_record(c: &impl GenericClient, rec: &StoredRecord) -> Result<(), StoreError> {
    let stmt = c.prepare_cached(&UPSERT_RECORD).await.map_err(db)?;
    c.execute(
        &stmt,
        &[
            &rec.kind.as_str(),
            &rec.id,
            &rec.owner,
            &rec.revision,
            &rec.index.stage,
            &rec.index.industry,
            &rec.index.factor_kind,
            &rec.index.parent,
            &rec.body,
        ],
    )
    .await
    .map_err(db)?;
    Ok(())
}

/// Takes advisory lock `key` of this gateway's lock space until the transaction ends.
async fn lock(c: &impl GenericClient, key: i32) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached("SELECT pg_advisory_xact_lock($1, $2)")
        .await
        .map_err(db)?;
    c.execute(&stmt, &[&LOCK_SPACE, &key]).await.map_err(db)?;
    Ok(())
}

/// Takes the feed lock for the rest of the transaction and returns the last feed position.
async fn lock_feed(c: &impl GenericClient) -> Result<i64, StoreError> {
    lock(c, FEED_LOCK).await?;
    let stmt = c
        .prepare_cached("SELECT COALESCE(MAX(position), 0) FROM log")
        .await
        .map_err(db)?;
    c.query_one(&stmt, &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)
}

/// Appends one entry to the feed at `*position + 1` (the caller holds the feed lock).
async fn append_log(
    c: &impl GenericClient,
    position: &mut i64,
    owner: &str,
    seq: i64,
    time: i64,
    encoded: &str,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO log (position, owner, seq, time, record) VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .map_err(db)?;
    c.execute(&stmt, &[&(*position + 1), &owner, &seq, &time, &encoded])
        .await
        .map_err(db)?;
    *position += 1;
    Ok(())
}

/// What a group-commit transaction knows once it holds the feed lock: the last feed position
/// and each owner's last sequence number, advanced in memory as writes append.
struct FeedTail {
    position: i64,
    seqs: std::collections::HashMap<String, i64>,
}

impl FeedTail {
    /// The next sequence number of `owner` (read from the log the first time).
    async fn next_seq(&mut self, c: &impl GenericClient, owner: &str) -> Result<i64, StoreError> {
        if !self.seqs.contains_key(owner) {
            let stmt = c
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = $1")
                .await
                .map_err(db)?;
            let last: i64 = c
                .query_one(&stmt, &[&owner])
                .await
                .map_err(db)?
                .try_get(0)
                .map_err(db)?;
            self.seqs.insert(owner.to_string(), last);
        }
        let seq = self.seqs.get_mut(owner).expect("inserted above");
        *seq += 1;
        Ok(*seq)
    }
}

/// One write, inside the caller's transaction. Every check runs before anything is modified
/// (the unique key, inserted only if new, is the last check), so a refused write leaves
/// nothing behind without a savepoint; the modifications are then sent in one pipeline.
async fn apply_write(
    c: &impl GenericClient,
    tail: &mut FeedTail,
    w: Write,
) -> Result<WriteOutcome, StoreError> {
    let rec = &w.record;
    let (first, current) =
        tokio::try_join!(lookup_request(c, &w.key), get_record(c, rec.kind, rec.id))?;
    if let Some(first) = first {
        return Ok(WriteOutcome::Replayed(first));
    }
    w.check_revision(current.as_ref())?;
    let existing = futures_util::future::try_join_all(
        w.also_create
            .iter()
            .map(|extra| get_record(c, extra.kind, extra.id)),
    )
    .await?;
    if existing.iter().any(Option::is_some) {
        return Err(StoreError::AlreadyExists);
    }
    let encoded: Vec<String> = w
        .also_create
        .iter()
        .chain([rec])
        .map(|r| serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect::<Result<_, _>>()?;
    if let Some(unique) = &w.unique {
        let stmt = c
            .prepare_cached("INSERT INTO unique_keys (key) VALUES ($1) ON CONFLICT DO NOTHING")
            .await
            .map_err(db)?;
        if c.execute(&stmt, &[unique]).await.map_err(db)? == 0 {
            return Err(StoreError::AlreadyExists);
        }
    }
    // Checks passed: number the changes, then send every insert at once.
    let mut entries = Vec::with_capacity(w.also_create.len() + 1);
    for (r, encoded) in w.also_create.iter().chain([rec]).zip(encoded) {
        let seq = tail.next_seq(c, &r.owner).await?;
        tail.position += 1;
        entries.push((r, tail.position, seq, encoded));
    }
    let (log, request) = tokio::try_join!(
        async {
            c.prepare_cached(
                "INSERT INTO log (position, owner, seq, time, record) VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(db)
        },
        async {
            c.prepare_cached(
                "INSERT INTO requests (party, request_id, fingerprint, response, time) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(db)
        }
    )?;
    let encoded = &entries.last().expect("the record itself").3;
    let (log, time) = (&log, &w.time);
    let inserts = entries
        .iter()
        .map(|(r, position, seq, encoded)| async move {
            tokio::try_join!(upsert_record(c, r), async {
                c.execute(log, &[position, &r.owner, seq, time, encoded])
                    .await
                    .map_err(db)
            })
            .map(|_| ())
        });
    tokio::try_join!(futures_util::future::try_join_all(inserts), async {
        c.execute(
            &request,
            &[
                &w.key.party,
                &w.key.request_id,
                &w.key.fingerprint,
                encoded,
                &w.time,
            ],
        )
        .await
        .map_err(db)
    })?;
    Ok(WriteOutcome::Applied(w.record))
}

/// Applies queued writes in one transaction under the feed lock and answers each after the
/// commit. A write that fails its checks changes nothing and gets its error; a database error
/// or a failed commit fails all (nothing of the group is written).
async fn apply_writes(conn: &mut deadpool_postgres::Object, queued: Vec<QueuedWrite>) {
    let fail_all = |queued: Vec<QueuedWrite>, e: StoreError| {
        for (_, reply) in queued {
            let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
        }
    };
    let tx = match conn.transaction().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(queued, db(e)),
    };
    let mut tail = match lock_feed(&tx).await {
        Ok(position) => FeedTail {
            position,
            seqs: Default::default(),
        },
        Err(e) => return fail_all(queued, e),
    };
    let start = tail.position;
    let mut answers = Vec::with_capacity(queued.len());
    let mut failed: Option<String> = None;
    for (write, reply) in queued {
        let result = match &failed {
            Some(e) => Err(StoreError::Unavailable(e.clone())),
            None => apply_write(&tx, &mut tail, write).await,
        };
        // A database error aborts the transaction: the rest of the group cannot be applied.
        if let Err(e @ StoreError::Unavailable(_)) = &result {
            failed.get_or_insert_with(|| e.to_string());
        }
        answers.push((reply, result));
    }
    let committed = async {
        if let Some(e) = failed {
            return Err(StoreError::Unavailable(e));
        }
        if tail.position > start {
            tx.execute("SELECT pg_notify($1, '')", &[&FEED_CHANNEL])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
    .await;
    match committed {
        Ok(()) => {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            for (reply, _) in answers {
                let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
            }
        }
    }
}

async fn read_cursor(c: &impl GenericClient, owner: &str) -> Result<u64, StoreError> {
    let stmt = c
        .prepare_cached("SELECT seq FROM cursors WHERE owner = $1")
        .await
        .map_err(db)?;
    Ok(c.query_opt(&stmt, &[&owner])
        .await
        .map_err(db)?
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0) as u64)
}

async fn apply_batch(
    conn: &mut deadpool_postgres::Object,
    batch: ReplicaBatch,
) -> Result<u64, StoreError> {
    let tx = conn.transaction().await.map_err(db)?;
    let mut position = lock_feed(&tx).await?;
    let start = position;
    let mut cursor = read_cursor(&tx, &batch.owner).await?;
    tx.execute(
        "INSERT INTO signers (fingerprint, certificate) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&batch.signer.0, &batch.signer.1],
    )
    .await
    .map_err(db)?;
    let manifest = batch.manifest.as_ref().map(|m| m.digest.as_slice());
    if let Some(m) = &batch.manifest {
        tx.execute(
            "INSERT INTO manifests (digest, owner, manifest, scheme, signature, signer) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &m.digest,
                &batch.owner,
                &m.manifest,
                &i32::from(m.scheme),
                &m.signature,
                &batch.signer.0,
            ],
        )
        .await
        .map_err(db)?;
    }
    let evidence = tx
        .prepare_cached(
            "INSERT INTO evidence \
             (owner, seq, envelope, scheme, signature, signer, received, manifest) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .map_err(db)?;
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
        let seq = change.seq as i64;
        if let Some(rec) = &change.record {
            let newer = get_record(&tx, rec.kind, rec.id)
                .await?
                .is_none_or(|cur| cur.revision < rec.revision);
            if newer {
                upsert_record(&tx, rec).await?;
            }
            let encoded =
                serde_json::to_string(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            append_log(&tx, &mut position, &batch.owner, seq, change.time, &encoded).await?;
        }
        let e = &change.evidence;
        tx.execute(
            &evidence,
            &[
                &batch.owner,
                &seq,
                &e.envelope,
                &i32::from(e.scheme),
                &e.signature,
                &e.signer,
                &batch.received,
                &manifest,
            ],
        )
        .await
        .map_err(db)?;
        cursor = change.seq;
    }
    tx.execute(
        "INSERT INTO cursors (owner, seq, time) VALUES ($1, $2, $3) \
         ON CONFLICT (owner) DO UPDATE SET seq = excluded.seq, time = excluded.time",
        &[&batch.owner, &(cursor as i64), &batch.received],
    )
    .await
    .map_err(db)?;
    if position > start {
        tx.execute("SELECT pg_notify($1, '')", &[&FEED_CHANNEL])
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(cursor)
}

fn row_to_anchor(row: &Row) -> Result<AuditAnchor, StoreError> {
    Ok(AuditAnchor {
        seq: row.try_get::<_, i64>(0).map_err(db)? as u64,
        hash: row.try_get(1).map_err(db)?,
    })
}

async fn read_anchor(c: &impl GenericClient) -> Result<Option<AuditAnchor>, StoreError> {
    c.query_opt("SELECT seq, hash FROM audit_anchor WHERE id = 1", &[])
        .await
        .map_err(db)?
        .as_ref()
        .map(row_to_anchor)
        .transpose()
}

async fn read_audit_head(c: &impl GenericClient) -> Result<Option<AuditAnchor>, StoreError> {
    let stmt = c
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .await
        .map_err(db)?;
    match c.query_opt(&stmt, &[]).await.map_err(db)? {
        Some(row) => row_to_anchor(&row).map(Some),
        None => read_anchor(c).await,
    }
}

/// A batch of audit events as columns, for one multi-row insert.
#[derive(Default)]
struct AuditColumns {
    seq: Vec<i64>,
    time: Vec<i64>,
    caller: Vec<String>,
    method: Vec<String>,
    records: Vec<String>,
    code: Vec<String>,
    request_id: Vec<String>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

/// Appends `SQL AND column = $n` for each filter that is set.
struct Filters {
    sql: String,
    args: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
}

impl Filters {
    fn new(sql: String) -> Self {
        Filters {
            sql,
            args: Vec::new(),
        }
    }

    fn push(
        &mut self,
        condition: &str,
        value: impl tokio_postgres::types::ToSql + Sync + Send + 'static,
    ) {
        self.args.push(Box::new(value));
        self.sql
            .push_str(&format!(" AND {condition} ${}", self.args.len()));
    }

    fn eq(&mut self, column: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.push(&format!("{column} ="), v.clone());
        }
    }

    fn finish(mut self, order: &str, limit: usize) -> (String, Self) {
        self.args.push(Box::new(limit as i64));
        let sql = format!("{} ORDER BY {order} LIMIT ${}", self.sql, self.args.len());
        (sql, self)
    }

    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        self.args
            .iter()
            .map(|a| a.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(
        &self,
        kind: RecordKind,
        owner: &str,
        id: Uuid,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let conn = self.conn().await?;
        Ok(get_record(&conn, kind, id)
            .await?
            .filter(|r| r.owner == owner))
    }

    async fn list(&self, q: ListQuery) -> Result<Vec<StoredRecord>, StoreError> {
        let mut f = Filters::new(format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE kind = $1"
        ));
        f.args.push(Box::new(q.kind.as_str().to_string()));
        f.eq("owner", &q.owner);
        f.eq("stage", &q.stage);
        f.eq("industry", &q.industry);
        f.eq("factor_kind", &q.factor_kind);
        f.eq("parent", &q.parent);
        if let Some(after) = q.after {
            f.push("id >", after);
        }
        let (sql, f) = f.finish("id", q.limit);
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(&sql).await.map_err(db)?;
        conn.query(&stmt, &f.params())
            .await
            .map_err(db)?
            .iter()
            .map(row_to_record)
            .collect()
    }

    async fn replay(&self, key: &Idempotency) -> Result<Option<StoredRecord>, StoreError> {
        let conn = self.conn().await?;
        lookup_request(&conn, key).await
    }

    async fn write(&self, write: Write) -> Result<WriteOutcome, StoreError> {
        let (answer, drain) = self.queued.push(write);
        if let Some(mut drain) = drain {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                while let Some(batch) = drain.next_batch() {
                    match pool.get().await {
                        Ok(mut conn) => apply_writes(&mut conn, batch).await,
                        Err(e) => {
                            for (_, reply) in batch {
                                let _ = reply.send(Err(unavailable(format!("postgres pool: {e}"))));
                            }
                        }
                    }
                }
            });
        }
        answer_of(answer).await
    }

    async fn changes(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT seq, time, record FROM log WHERE owner = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .await
            .map_err(db)?;
        let rows = conn
            .query(&stmt, &[&owner, &(after as i64), &(limit as i64)])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Change::decode(
                    owner.to_string(),
                    r.try_get(0).map_err(db)?,
                    r.try_get(1).map_err(db)?,
                    r.try_get(2).map_err(db)?,
                )
            })
            .collect()
    }

    async fn last_seq(&self, owner: &str) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COALESCE(MAX(seq), 0) FROM log WHERE owner = $1",
                &[&owner],
            )
            .await
            .map_err(db)?;
        Ok(row.try_get::<_, i64>(0).map_err(db)? as u64)
    }

    async fn feed(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT position, owner, seq, time, record FROM log WHERE position > $1 ORDER BY position LIMIT $2",
            )
            .await
            .map_err(db)?;
        let rows = conn
            .query(&stmt, &[&(after as i64), &(limit as i64)])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(FeedEntry {
                    position: r.try_get::<_, i64>(0).map_err(db)? as u64,
                    change: Change::decode(
                        r.try_get(1).map_err(db)?,
                        r.try_get(2).map_err(db)?,
                        r.try_get(3).map_err(db)?,
                        r.try_get(4).map_err(db)?,
                    )?,
                })
            })
            .collect()
    }

    async fn cursor(&self, owner: &str) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        read_cursor(&conn, owner).await
    }

    async fn evidence(
        &self,
        owner: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvidence>, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(EVIDENCE_QUERY).await.map_err(db)?;
        let rows = conn
            .query(&stmt, &[&owner, &(after_seq as i64), &(limit as i64)])
            .await
            .map_err(db)?;
        let scheme = |v: i32| {
            u16::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("signature scheme {v} out of range")))
        };
        rows.iter()
            .map(|r| {
                let digest: Option<Vec<u8>> = r.get(5);
                let manifest = match (&digest, r.get::<_, Option<Vec<u8>>>(6)) {
                    (Some(digest), Some(manifest)) => Some(SignedManifest {
                        digest: digest.clone(),
                        manifest,
                        scheme: scheme(r.get(7))?,
                        signature: r.get(8),
                    }),
                    _ => None,
                };
                Ok(StoredEvidence {
                    seq: r.get::<_, i64>(0) as u64,
                    envelope: r.get(1),
                    scheme: scheme(r.get(2))?,
                    signature: r.get(3),
                    signer: r.get(4),
                    manifest_digest: digest,
                    manifest,
                    received: r.get(9),
                })
            })
            .collect()
    }

    async fn apply_replicas(&self, batch: ReplicaBatch) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        // Its own task, like a group commit: a cancelled caller cannot leave it half done.
        tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            apply_batch(&mut conn, batch).await
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }

    async fn feed_position(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let row = conn
            .query_one("SELECT COALESCE(MAX(position), 0) FROM log", &[])
            .await
            .map_err(db)?;
        Ok(row.try_get::<_, i64>(0).map_err(db)? as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let (client, task) = self.session().await?;
        let checked = tokio::time::timeout(
            SESSION_TIMEOUT,
            client.query_one("SELECT version FROM schema_version", &[]),
        )
        .await;
        drop(client);
        task.abort();
        let version: i32 = checked
            .map_err(|_| unavailable("postgres did not answer within 5 s"))?
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if version != MIGRATIONS.len() as i32 {
            return Err(unavailable(format!(
                "database has schema version {version}, expected {}",
                MIGRATIONS.len()
            )));
        }
        Ok(())
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        // The server owns its files; every commit already reached its WAL.
        Ok(())
    }

    async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<u64, StoreError> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let tx = conn.transaction().await.map_err(db)?;
            lock(&tx, AUDIT_LOCK).await?;
            let (mut seq, mut prev) = match read_audit_head(&tx).await? {
                Some(h) => (h.seq, h.hash),
                None => (0, crate::audit::GENESIS.to_vec()),
            };
            // One statement for the whole batch: columns as arrays, unnested into rows.
            let mut rows = AuditColumns::default();
            for e in events {
                seq += 1;
                let hash = crate::audit::link(seq, &prev, &e).to_vec();
                rows.records.push(
                    serde_json::to_string(&e.records)
                        .map_err(|x| StoreError::Corrupt(x.to_string()))?,
                );
                rows.seq.push(seq as i64);
                rows.time.push(e.time);
                rows.caller.push(e.caller);
                rows.method.push(e.method);
                rows.code.push(e.code);
                rows.request_id.push(e.request_id);
                rows.prev_hash.push(std::mem::replace(&mut prev, hash.clone()));
                rows.hash.push(hash);
            }
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO audit (seq, time, caller, method, records, code, request_id, prev_hash, hash) \
                     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
                     $6::TEXT[], $7::TEXT[], $8::BYTEA[], $9::BYTEA[])",
                )
                .await
                .map_err(db)?;
            tx.execute(
                &stmt,
                &[
                    &rows.seq,
                    &rows.time,
                    &rows.caller,
                    &rows.method,
                    &rows.records,
                    &rows.code,
                    &rows.request_id,
                    &rows.prev_hash,
                    &rows.hash,
                ],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(seq)
        })
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
    }

    async fn audit_events(&self, q: AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let mut f = Filters::new(
            "SELECT seq, time, caller, method, records, code, request_id, prev_hash, hash \
             FROM audit WHERE seq > $1"
                .into(),
        );
        f.args.push(Box::new(q.after_seq as i64));
        if let Some(since) = q.since {
            f.push("time >=", since);
        }
        if let Some(until) = q.until {
            f.push("time <", until);
        }
        f.eq("caller", &q.caller);
        f.eq("method", &q.method);
        f.eq("code", &q.code);
        let (sql, f) = f.finish("seq", q.limit);
        let conn = self.conn().await?;
        let rows = conn.query(&sql, &f.params()).await.map_err(db)?;
        rows.iter()
            .map(|r| {
                let records: String = r.try_get(4).map_err(db)?;
                let records = super::decode_audit_records(records);
                Ok(AuditEvent {
                    seq: r.try_get::<_, i64>(0).map_err(db)? as u64,
                    event: NewAuditEvent {
                        time: r.try_get(1).map_err(db)?,
                        caller: r.try_get(2).map_err(db)?,
                        method: r.try_get(3).map_err(db)?,
                        records,
                        code: r.try_get(5).map_err(db)?,
                        request_id: r.try_get(6).map_err(db)?,
                    },
                    prev_hash: r.try_get(7).map_err(db)?,
                    hash: r.try_get(8).map_err(db)?,
                })
            })
            .collect()
    }

    async fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StoreError> {
        let conn = self.conn().await?;
        read_anchor(&conn).await
    }

    async fn audit_head(&self) -> Result<Option<AuditAnchor>, StoreError> {
        let conn = self.conn().await?;
        read_audit_head(&conn).await
    }

    async fn prune_audit(&self, through: u64) -> Result<AuditAnchor, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(db)?;
        lock(&tx, AUDIT_LOCK).await?;
        let through_seq = through as i64;
        let hash: Vec<u8> = tx
            .query_opt("SELECT hash FROM audit WHERE seq = $1", &[&through_seq])
            .await
            .map_err(db)?
            .ok_or(StoreError::NotFound)?
            .try_get(0)
            .map_err(db)?;
        tx.execute("DELETE FROM audit WHERE seq <= $1", &[&through_seq])
            .await
            .map_err(db)?;
        tx.execute(
            "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            &[&through_seq, &hash],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(AuditAnchor { seq: through, hash })
    }

    async fn put_witnessed_head(&self, h: WitnessedHead) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO witnessed_heads (party, seq, hash, time, signed, scheme, signature, signer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &h.party,
                &(h.seq as i64),
                &h.hash,
                &h.time,
                &h.signed,
                &i32::from(h.scheme),
                &h.signature,
                &h.signer,
            ],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn witnessed_heads(&self, party: &str) -> Result<Vec<WitnessedHead>, StoreError> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT party, seq, hash, time, signed, scheme, signature, signer FROM witnessed_heads \
                 WHERE party = $1 ORDER BY seq",
                &[&party],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let scheme: i32 = r.try_get(5).map_err(db)?;
                Ok(WitnessedHead {
                    party: r.try_get(0).map_err(db)?,
                    seq: r.try_get::<_, i64>(1).map_err(db)? as u64,
                    hash: r.try_get(2).map_err(db)?,
                    time: r.try_get(3).map_err(db)?,
                    signed: r.try_get(4).map_err(db)?,
                    scheme: u16::try_from(scheme)
                        .map_err(|_| StoreError::Corrupt(format!("signature scheme {scheme}")))?,
                    signature: r.try_get(6).map_err(db)?,
                    signer: r.try_get(7).map_err(db)?,
                })
            })
            .collect()
    }

    fn feed_signal(&self) -> Option<Arc<watch::Sender<u64>>> {
        Some(self.signal.clone())
    }

    async fn pull_lease(&self, peer: &str) -> Result<Option<PullLease>, StoreError> {
        let (client, mut task) = self.session().await?;
        let held: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LOCK_SPACE, &format!("pull:{peer}")],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if !held {
            drop(client);
            task.abort();
            return Ok(None);
        }
        // Held while this future lives: it owns the session. It resolves when the session
        // ends or stops answering; dropping it closes the session, which releases the lock.
        let lost = async move {
            loop {
                tokio::select! {
                    _ = &mut task => return,
                    _ = tokio::time::sleep(LEASE_CHECK) => {}
                }
                let answered =
                    tokio::time::timeout(SESSION_TIMEOUT, client.simple_query("SELECT 1")).await;
                if !matches!(answered, Ok(Ok(_))) {
                    task.abort();
                    return;
                }
            }
        };
        Ok(Some(PullLease::until(Box::pin(lost))))
    }
}

/// Creates an empty database named `<prefix>_<uuid>` on the server `url` names (its role needs
/// CREATEDB) and returns a connection string for it.
pub async fn create_database(url: &str, prefix: &str) -> Result<String, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(db)?;
    tokio::spawn(connection);
    let name = format!("{prefix}_{}", Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(db)?;
    Ok(with_dbname(url, &name))
}

/// Drops the database `database_url` names, connected through `url` (another database of the
/// same server), ending its sessions first.
pub async fn drop_database(url: &str, database_url: &str) -> Result<(), StoreError> {
    let target = tokio_postgres::Config::from_str(database_url).map_err(db)?;
    let name = target
        .get_dbname()
        .ok_or_else(|| unavailable("the connection string names no database"))?;
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(db)?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .map_err(db)
}

/// `url` naming database `name` instead of its own.
fn with_dbname(url: &str, name: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let scheme_end = path.find("://").unwrap() + 3;
        let host_part = match path[scheme_end..].find('/') {
            Some(i) => &path[..scheme_end + i],
            None => path,
        };
        if query.is_empty() {
            format!("{host_part}/{name}")
        } else {
            format!("{host_part}/{name}?{query}")
        }
    } else {
        format!("{url} dbname={name}")
    }
}

/// For tests: fresh databases on the server named by `YRD_TEST_POSTGRES_URL`.
#[doc(hidden)]
pub mod testing {
    /// The variable naming the test server (`key=value` connection string or URL).
    pub const URL_VARIABLE: &str = "YRD_TEST_POSTGRES_URL";

    /// Creates an empty database and returns a connection string for it.
    pub async fn scratch_database() -> String {
        let base = std::env::var(URL_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{URL_VARIABLE} is not set: the PostgreSQL tests need a server. Run the tests as \
                 `bash tests/with-postgres.sh cargo nextest run` (README), which starts one."
            )
        });
        super::create_database(&base, "yrd_test")
            .await
            .unwrap_or_else(|e| {
                panic!("cannot create a database on the test PostgreSQL at `{base}`: {e}")
            })
    }
}

#[cfg(test)]
mod tests;
