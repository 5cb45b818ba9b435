//! The PostgreSQL backend against the storage conformance suite, each test on a fresh database
//! of the server named by `YRD_TEST_POSTGRES_URL`.

use std::str::FromStr;
use std::sync::Arc;

use super::{PostgresOptions, PostgresStore, testing};
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
