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

mod audit;
mod lease;
mod records;
mod replication;
mod schema;
mod tls;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use super::{StoreError, WriteQueue};
use schema::MIGRATIONS;

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

/// How long opening a session may take: every host of the connection string may be tried,
/// each within [`SESSION_TIMEOUT`].
fn session_deadline(connection: &tokio_postgres::Config) -> Duration {
    let hosts = connection.get_hosts().len().max(1) as u32;
    SESSION_TIMEOUT * hosts + Duration::from_secs(1)
}

/// Connection settings of the PostgreSQL store.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresOptions {
    /// Parsed connection string (URL or `key=value` form), password included.
    pub connection: tokio_postgres::Config,
    /// Connections kept open for calls.
    pub pool_size: usize,
    /// The CA the database's certificate must chain to (`store.ca_file`); `None`: no TLS.
    pub ca_file: Option<PathBuf>,
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
        // TLS only as `with_tls` sets it up, verified; never the unverified "prefer".
        if connection.get_ssl_mode() != SslMode::Require {
            connection.ssl_mode(SslMode::Disable);
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
        // A database node that vanishes without closing its connections (a network partition,
        // a host that lost power) must not hold calls until the kernel gives up (~15 min):
        // data unacknowledged for 10 s ends the connection, and so do three unanswered
        // keepalive probes 2 s apart after 10 s of quiet. A session to the new primary is
        // made in its place.
        connection.tcp_user_timeout(Duration::from_secs(10));
        connection.keepalives_idle(Duration::from_secs(10));
        connection.keepalives_interval(Duration::from_secs(2));
        connection.keepalives_retries(3);
        Ok(PostgresOptions {
            connection,
            pool_size,
            ca_file: None,
        })
    }

    /// TLS to the database, verified against `ca_file` (the certificate chain and the host
    /// name), and required: no connection is made without it. Without a CA file connections
    /// are plain, and a connection string that asks for TLS (`sslmode=require`) is refused,
    /// since the gateway would have nothing to verify the server with.
    pub fn with_tls(mut self, ca_file: Option<PathBuf>) -> Result<Self, String> {
        match &ca_file {
            Some(path) => {
                tls::DbTls::new(Some(path))?;
                self.connection.ssl_mode(SslMode::Require);
            }
            None if self.connection.get_ssl_mode() == SslMode::Require => {
                return Err(
                    "sslmode=require needs store.ca_file, the CA certificate the database's \
                     certificate chains to (the gateway then verifies it and the host name)"
                        .into(),
                );
            }
            None => {
                self.connection.ssl_mode(SslMode::Disable);
            }
        }
        self.ca_file = ca_file;
        Ok(self)
    }
}

/// A party's store in one PostgreSQL database, shared by every replica of its gateway.
pub struct PostgresStore {
    options: PostgresOptions,
    tls: tls::DbTls,
    pool: Pool,
    /// Writes waiting for this replica's group commit (replicas serialise on the feed lock).
    queued: WriteQueue,
    signal: Arc<watch::Sender<u64>>,
    listener: tokio::task::AbortHandle,
    /// The hash new audit events are linked with.
    chain: crate::crypto::Digest,
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
        None => {
            // The cause (a refused certificate, a connection reset) is in the sources.
            let mut text = format!("postgres: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            StoreError::Unavailable(text)
        }
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
        let tls = tls::DbTls::new(options.ca_file.as_deref()).map_err(unavailable)?;
        let manager = Manager::from_config(
            options.connection.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            // A new session may try every host of a multi-host URL, each within
            // SESSION_TIMEOUT, before it reaches the one that takes writes.
            .create_timeout(Some(session_deadline(&options.connection)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(unavailable)?;
        {
            let mut conn = pool.get().await.map_err(pool_error)?;
            migrate(&mut conn).await?;
        }
        let signal = Arc::new(watch::channel(0).0);
        let listener = tokio::spawn(listen(
            options.connection.clone(),
            tls.clone(),
            Arc::downgrade(&signal),
        ))
        .abort_handle();
        Ok(PostgresStore {
            options,
            tls,
            pool,
            queued: WriteQueue::default(),
            signal,
            listener,
            chain: crate::crypto::Digest::Sha256,
        })
    }

    /// The store, linking the audit events it appends from now on by `digest` (SHA-256
    /// unless told otherwise; SM3 in the gm crypto profile).
    pub fn chained_by(mut self, digest: crate::crypto::Digest) -> Self {
        self.chain = digest;
        self
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// A session of its own, outside the pool, with its connection driven by a task.
    async fn session(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StoreError> {
        let (client, connection) = self
            .options
            .connection
            .connect(self.tls.clone())
            .await
            .map_err(db)?;
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
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "schema migration {} of {} failed, and the database is left at schema \
                 {version}: {e}",
                i + 1,
                MIGRATIONS.len(),
                e = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string())
            ))
        })?;
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
async fn listen(config: tokio_postgres::Config, tls: tls::DbTls, signal: Weak<watch::Sender<u64>>) {
    let bump = |signal: &Weak<watch::Sender<u64>>| match signal.upgrade() {
        Some(s) => {
            s.send_modify(|n| *n = n.wrapping_add(1));
            true
        }
        None => false,
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match config.connect(tls.clone()).await {
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
