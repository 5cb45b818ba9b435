//! The PostgreSQL backend against the storage conformance suite, each test on a fresh database
//! of the server named by `YRD_TEST_POSTGRES_URL`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::{PostgresOptions, PostgresStore, SESSION_TIMEOUT, testing};
use crate::store::{LeaseStore, RecordStore};

async fn fresh_store() -> PostgresStore {
    let url = testing::scratch_database().await;
    PostgresStore::connect(PostgresOptions::parse(&url, None, 8).unwrap())
        .await
        .unwrap()
}

crate::conformance_tests!(|_dir| Arc::new(fresh_store().await));

/// Two replicas' stores on one database.
async fn two_replicas() -> (Arc<PostgresStore>, Arc<PostgresStore>, String) {
    let url = testing::scratch_database().await;
    let open = || async {
        Arc::new(
            PostgresStore::connect(PostgresOptions::parse(&url, None, 8).unwrap())
                .await
                .unwrap(),
        )
    };
    let a = open().await;
    let b = open().await;
    (a, b, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_changed_digest_keeps_each_events() {
    let url = testing::scratch_database().await;
    let open = |digest| {
        let url = url.clone();
        async move {
            PostgresStore::connect(PostgresOptions::parse(&url, None, 8).unwrap())
                .await
                .unwrap()
                .chained_by(digest)
        }
    };
    use crate::crypto::Digest;
    crate::store::conformance::a_chain_that_changed_digest_keeps_each_events(
        Arc::new(open(Digest::Sha256).await),
        Arc::new(open(Digest::Sm3).await),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_writing_at_once_keep_one_gapless_log() {
    let (a, b, _) = two_replicas().await;
    crate::store::conformance::concurrent_writes_through(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_woken_by_the_other_replicas_commits() {
    let (a, b, _) = two_replicas().await;
    let mut woken = a.feed_signal().unwrap().subscribe();
    // The listener's first connect bumps once; wait for that to settle.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    woken.borrow_and_update();
    let id = uuid::Uuid::now_v7();
    b.write(crate::store::conformance::write(
        crate::store::conformance::record("zone", id, 1, "v1"),
        None,
        "w1",
    ))
    .await
    .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), woken.changed())
        .await
        .expect("replica a was not told of replica b's commit within 10 s")
        .unwrap();
    let feed = a.feed(0, 10).await.unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].change.record.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_lease_is_held_once_and_taken_over_when_its_session_dies() {
    let (a, b, url) = two_replicas().await;
    let mut held = a
        .pull_lease("changxing")
        .await
        .unwrap()
        .expect("first claim");
    assert!(b.pull_lease("changxing").await.unwrap().is_none());
    assert!(
        a.pull_lease("changxing").await.unwrap().is_none(),
        "a second session of a"
    );
    // Leases of different peers are independent.
    let other = b
        .pull_lease("anji")
        .await
        .unwrap()
        .expect("another peer's lease");

    // Given back on drop.
    drop(held);
    held = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Some(l) = b.pull_lease("changxing").await.unwrap() {
                return l;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("b could not take over a dropped lease within 10 s");
    assert!(a.pull_lease("changxing").await.unwrap().is_none());

    // The holder's session is killed by the server (as when its replica dies): the holder
    // learns it lost the lease, and the other replica can take it.
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "the two leases' sessions");
    tokio::time::timeout(std::time::Duration::from_secs(15), held.lost())
        .await
        .expect("the holder did not notice its session ended within 15 s");
    let mut other = other;
    tokio::time::timeout(std::time::Duration::from_secs(15), other.lost())
        .await
        .expect("the other holder did not notice either");
    // A terminated backend releases its locks as it exits, which can be a moment after its
    // client saw the connection end: a replica retries its claim, and so does this test.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while a.pull_lease("changxing").await.unwrap().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a could not take the lease of a killed session within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_commit_durably_even_where_the_database_default_is_not() {
    let url = testing::scratch_database().await;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name: String = admin
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off; \
             ALTER DATABASE {name} SET idle_in_transaction_session_timeout = 0"
        ))
        .await
        .unwrap();
    let store = PostgresStore::connect(PostgresOptions::parse(&url, None, 2).unwrap())
        .await
        .unwrap();
    let conn = store.conn().await.unwrap();
    for (setting, expected) in [
        ("synchronous_commit", "on"),
        ("idle_in_transaction_session_timeout", "30s"),
        ("statement_timeout", "1min"),
    ] {
        let value: String = conn
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(value, expected, "{setting}");
    }
}

#[test]
fn a_vanished_database_node_ends_its_connections_and_every_host_may_be_tried() {
    let options = PostgresOptions::parse(
        "postgres://yrd@pg-1,pg-2,pg-3/yrd_zone?target_session_attrs=read-write",
        None,
        2,
    )
    .unwrap();
    let c = &options.connection;
    assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(10)));
    assert_eq!(c.get_keepalives_idle(), Duration::from_secs(10));
    assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(2)));
    assert_eq!(c.get_keepalives_retries(), Some(3));
    // The pool waits for a new session as long as trying all three hosts may take.
    assert!(super::session_deadline(c) > SESSION_TIMEOUT * 3);
    let one = PostgresOptions::parse("postgres://yrd@db/yrd_zone", None, 2).unwrap();
    assert!(super::session_deadline(&one.connection) < SESSION_TIMEOUT * 2);
}

#[test]
fn a_connection_string_is_pointed_at_another_database() {
    assert_eq!(
        super::with_dbname("postgres://yrd:pw@db:5432/postgres?connect_timeout=3", "x"),
        "postgres://yrd:pw@db:5432/x?connect_timeout=3"
    );
    assert_eq!(
        super::with_dbname("postgresql://db", "x"),
        "postgresql://db/x"
    );
    let kv = super::with_dbname("host=db user=yrd dbname=postgres", "x");
    let parsed = tokio_postgres::Config::from_str(&kv).unwrap();
    assert_eq!(parsed.get_dbname(), Some("x"));
}

/// A write through `store` (with request id `request_id`) is read back.
async fn writes_and_reads_back(store: &PostgresStore, request_id: &str) {
    let id = uuid::Uuid::now_v7();
    store
        .write(crate::store::conformance::write(
            crate::store::conformance::record("zone", id, 1, "v1"),
            None,
            request_id,
        ))
        .await
        .unwrap();
    let read = store
        .get(crate::domain::RecordKind::Project, "zone", id)
        .await
        .unwrap();
    assert!(read.is_some(), "the record written is read back");
}

/// The CA of the test server's certificate for `localhost` (tests/with-postgres.sh makes it).
fn test_server_ca() -> std::path::PathBuf {
    std::env::var("YRD_TEST_POSTGRES_CA")
        .unwrap_or_else(|_| {
            panic!(
                "YRD_TEST_POSTGRES_CA is not set: the TLS test needs the CA of the test server's \
                 certificate; run the tests as `bash tests/with-postgres.sh cargo nextest run`"
            )
        })
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified_against_the_configured_ca_and_host_name() {
    let url = testing::scratch_database().await;
    let by_name = url.replace("host=127.0.0.1", "host=localhost");
    assert_ne!(by_name, url, "the test server's URL names host=127.0.0.1");
    let open = |url: String, ca: std::path::PathBuf| async move {
        let options = PostgresOptions::parse(&url, None, 2)
            .unwrap()
            .with_tls(Some(ca))
            .unwrap();
        PostgresStore::connect(options).await
    };

    // The right CA and the name in the certificate: every session of the store is TLS.
    let store = open(by_name.clone(), test_server_ca()).await.unwrap();
    writes_and_reads_back(&store, "tls-1").await;
    // The listener session connects in the background; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let conn = store.conn().await.unwrap();
    let row = conn
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = current_database() AND a.application_name = 'yrd-gateway'",
            &[],
        )
        .await
        .unwrap();
    let (sessions, all_tls): (i64, Option<bool>) = (row.get(0), row.get(1));
    assert!(
        sessions >= 2,
        "the pool's session and the listener's: {sessions}"
    );
    assert_eq!(
        all_tls,
        Some(true),
        "every session of the store is encrypted"
    );
    drop(conn);

    // Another CA: refused, and the error says why.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.crt");
    let another = rcgen::generate_simple_self_signed(vec!["another-ca".to_string()]).unwrap();
    std::fs::write(&other, another.cert.pem()).unwrap();
    let refused = open(by_name, other)
        .await
        .err()
        .expect("another CA is refused");
    assert!(refused.to_string().contains("certificate"), "{refused}");

    // The right CA but a name the certificate does not carry (the IP address): refused.
    let refused = open(url, test_server_ca())
        .await
        .err()
        .expect("a wrong name is refused");
    assert!(refused.to_string().contains("certificate"), "{refused}");
}

#[test]
fn tls_is_asked_for_only_with_a_ca_to_verify_it_with() {
    let parse = |url: &str| PostgresOptions::parse(url, None, 2).unwrap();
    let refused = parse("host=db dbname=x sslmode=require")
        .with_tls(None)
        .unwrap_err();
    assert!(refused.contains("store.ca_file"), "{refused}");
    // Without a CA connections are plain (not "prefer": no unverified TLS).
    let plain = parse("host=db dbname=x").with_tls(None).unwrap();
    assert_eq!(plain.connection.get_ssl_mode(), super::SslMode::Disable);
    let missing = parse("host=db dbname=x")
        .with_tls(Some("/nonexistent/ca.crt".into()))
        .unwrap_err();
    assert!(missing.contains("/nonexistent/ca.crt"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_connection_string_reaches_the_host_that_answers_read_write() {
    // What a failover setup hands the gateway: every node, and "the one that takes writes".
    // Here the first node is down (nothing listens on its port) and the second is the server.
    let url = testing::scratch_database().await;
    let port = url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .expect("the test server's URL names its port")
        .to_string();
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let multi = url
        .replace("host=127.0.0.1", "host=127.0.0.1,127.0.0.1")
        .replace(&format!("port={port}"), &format!("port={down},{port}"))
        + " target_session_attrs=read-write";
    let options = PostgresOptions::parse(&multi, None, 2).unwrap();
    assert_eq!(options.connection.get_hosts().len(), 2);
    let store = PostgresStore::connect(options).await.unwrap();
    writes_and_reads_back(&store, "multi-1").await;
}

/// A scratch database brought to schema `version` as a gateway of then left it, and a
/// session on it to write what such a gateway wrote.
async fn older_database(version: usize) -> (String, tokio_postgres::Client) {
    let url = testing::scratch_database().await;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for sql in &super::schema::MIGRATIONS[..version] {
        admin.batch_execute(sql).await.unwrap();
    }
    admin
        .batch_execute(&format!(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); \
             INSERT INTO schema_version VALUES ({version})"
        ))
        .await
        .unwrap();
    (url, admin)
}

/// A database written before requests named their answer's change-log entry (a copy per
/// request) is converted when a gateway connects: a copy that is a log entry becomes a
/// reference to it, a copy that matches none is kept, and both still replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_an_older_database_name_their_log_entry_after_the_migration() {
    use crate::store::conformance::{CopiedAnswers, copied_answers_still_replay};

    let (url, admin) = older_database(super::schema::BEFORE_NAMED_ANSWERS).await;
    let copied = CopiedAnswers::new();
    let (named, named_key) = &copied.named;
    let text = named.encode().unwrap();
    admin
        .execute(
            "INSERT INTO log (position, owner, seq, time, record) VALUES (1, 'zone', 1, $1, $2)",
            &[&CopiedAnswers::TIME, &text],
        )
        .await
        .unwrap();
    for (key, response) in [
        (named_key, text.clone()),
        (&copied.orphan.1, copied.orphan.0.encode().unwrap()),
    ] {
        admin
            .execute(
                "INSERT INTO requests (party, request_id, fingerprint, response, time) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &key.party,
                    &key.request_id,
                    &key.fingerprint,
                    &response,
                    &CopiedAnswers::TIME,
                ],
            )
            .await
            .unwrap();
    }
    let store = PostgresStore::connect(PostgresOptions::parse(&url, None, 8).unwrap())
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>, Option<i64>)> = admin
        .query(
            "SELECT request_id, response, answer FROM requests ORDER BY request_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows, copied.converted_rows());
    copied_answers_still_replay(&store, &copied).await;
}

/// A database written before each record version was stored once is converted when a gateway
/// connects: the change log's JSON is split into columns, each record's row names its current
/// entry and holds no copy, and everything reads as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_versions_of_an_older_database_are_held_once_after_the_migration() {
    use crate::store::conformance::{LoggedVersions, logged_versions_still_read};

    let (url, admin) = older_database(super::schema::BEFORE_ONE_COPY).await;
    let logged = LoggedVersions::new();
    for (i, (owner, seq, time, record)) in logged.entries.iter().enumerate() {
        admin
            .execute(
                "INSERT INTO log (position, owner, seq, time, record) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &(i as i64 + 1),
                    owner,
                    &(*seq as i64),
                    time,
                    &record.encode().unwrap(),
                ],
            )
            .await
            .unwrap();
    }
    for r in &logged.current {
        admin
            .execute(
                "INSERT INTO records \
                 (kind, id, owner, revision, stage, industry, factor_kind, parent, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &r.kind.as_str(),
                    &r.id,
                    &r.owner,
                    &r.revision,
                    &r.index.stage,
                    &r.index.industry,
                    &r.index.factor_kind,
                    &r.index.parent,
                    &r.body,
                ],
            )
            .await
            .unwrap();
    }
    let key = &logged.request;
    admin
        .execute(
            "INSERT INTO requests (party, request_id, fingerprint, answer, time) \
             VALUES ($1, $2, $3, 2, 20)",
            &[&key.party, &key.request_id, &key.fingerprint],
        )
        .await
        .unwrap();
    let store = PostgresStore::connect(PostgresOptions::parse(&url, None, 8).unwrap())
        .await
        .unwrap();
    let columns = |table: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_name = $1",
                    &[&table],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert!(!columns("records").await.contains(&"body".to_string()));
    assert!(!columns("log").await.contains(&"record".to_string()));
    let next = logged.entries.len() as u64 + 1;
    assert_eq!(logged_versions_still_read(&store, &logged).await, next);
}

/// A record whose current version is in no change-log entry (no gateway wrote one) stops the
/// upgrade with a message naming the migration, and the database stays at the schema before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_cannot_name_a_records_entry_changes_nothing() {
    let before = super::schema::BEFORE_ONE_COPY;
    let (url, admin) = older_database(before).await;
    admin
        .execute(
            "INSERT INTO records VALUES ('project', $1, 'zone', 1, NULL, NULL, NULL, NULL, '{}')",
            &[&uuid::Uuid::now_v7()],
        )
        .await
        .unwrap();
    let refused = PostgresStore::connect(PostgresOptions::parse(&url, None, 2).unwrap())
        .await
        .err()
        .expect("the upgrade is refused");
    let message = refused.to_string();
    let expected = format!("schema migration {} of", before + 1);
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("\"position\""), "{message}");
    let version: i32 = admin
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version as usize, before);
    let kept: i64 = admin
        .query_one("SELECT COUNT(*) FROM records WHERE body = '{}'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1);
}
