//! Sealing at rest: the whole storage conformance suite through [`SealedStore`] over SQLite,
//! what the files hold, what a ciphertext moved by hand gives, what a gateway without its keys
//! answers, the key files refused, and the migration of a store written in clear.

use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::store::conformance::record;
use crate::store::sqlite::SqliteStore;
use crate::store::{Evidence, LeaseStore, RecordStore, ReplicaBatch, ReplicaChange, ReplicaStore};

const PHONE: &str = "13912345678";

fn keys_in(dir: &Path, profile: Profile) -> KeysConfig {
    let keys = KeysConfig {
        kek: KekSource::File(dir.join("kek")),
        ring: dir.join("ring.db"),
    };
    let file = dir.join("kek");
    if !file.exists() {
        kek::Kek::create(&file, Algorithm::of(profile)).unwrap();
    }
    keys
}

/// The store of `zone` in `dir`, sealed.
fn sealed_sqlite(dir: &Path, profile: Profile) -> SealedStore {
    sealed_file(dir, &dir.join("store.db"), profile)
}

/// The store file `store` of `zone`, sealed with the keys in `dir`.
fn sealed_file(dir: &Path, store: &Path, profile: Profile) -> SealedStore {
    let vault = Vault::open(&keys_in(dir, profile), profile).unwrap();
    let inner = Arc::new(SqliteStore::open(store).unwrap());
    SealedStore::new(inner, Some(vault), "zone")
}

fn clear_sqlite(dir: &Path) -> SealedStore {
    SealedStore::new(
        Arc::new(SqliteStore::open(&dir.join("store.db")).unwrap()),
        None,
        "zone",
    )
}

crate::conformance_tests!(|dir| Arc::new(sealed_sqlite(dir.path(), Profile::Gm)));

/// Every byte of the store's files (the database and its WAL).
fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["store.db", "store.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            all.extend(bytes);
        }
    }
    all
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The conformance suite's write, with a request fingerprint that is not the body (a gateway's
/// is a digest of the request).
fn write(record: StoredRecord, expected: Option<i64>, request_id: &str) -> crate::store::Write {
    let mut write = crate::store::conformance::write(record, expected, request_id);
    write.key.fingerprint = request_id.as_bytes().to_vec();
    write
}

fn project(owner: &str, id: Uuid, revision: i64) -> StoredRecord {
    record(
        owner,
        id,
        revision,
        &format!(r#"{{"contact":{{"name":"张三","phone":"{PHONE}"}},"stage":"lead"}}"#),
    )
}

/// The phone in a project body (empty when erased).
fn phone(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["contact"]["phone"].as_str().unwrap().to_string()
}

fn replica(seq: u64, record: StoredRecord) -> ReplicaChange {
    ReplicaChange {
        // As the inbound path says of the default catalog: the phone is CONDITIONAL.
        apart: vec!["contact.phone".to_string()],
        seq,
        time: 1,
        evidence: Evidence {
            envelope: format!("envelope with {}", record.body).into_bytes(),
            scheme: 0x0708,
            signature: b"signature".to_vec(),
            signer: "fingerprint".into(),
            erased_sha256: None,
        },
        record: Some(record),
    }
}

fn batch(owner: &str, changes: Vec<ReplicaChange>) -> ReplicaBatch {
    ReplicaBatch {
        owner: owner.into(),
        signer: ("fingerprint".into(), b"certificate".to_vec()),
        changes,
        manifest: None,
        received: 1,
    }
}

#[tokio::test]
async fn the_files_hold_no_sealed_item_in_clear_in_either_profile() {
    for profile in [Profile::Intl, Profile::Gm] {
        let dir = tempfile::tempdir().unwrap();
        let store = sealed_sqlite(dir.path(), profile);
        let (own, theirs) = (Uuid::now_v7(), Uuid::now_v7());
        store
            .write(write(project("zone", own, 1), None, "r1"))
            .await
            .unwrap();
        store
            .apply_replicas(batch(
                "guangde",
                vec![replica(1, project("guangde", theirs, 1))],
            ))
            .await
            .unwrap();
        store.checkpoint().await.unwrap();
        let files = store_bytes(dir.path());
        assert!(
            !holds(&files, PHONE),
            "{profile:?}: a phone in clear in the store files"
        );
        assert!(
            holds(&files, "yrd-sealed:1:"),
            "{profile:?}: the bodies are sealed"
        );
        let read = store
            .get(RecordKind::Project, "zone", own)
            .await
            .unwrap()
            .unwrap();
        assert!(read.body.contains(PHONE));
        let kept = store.evidence("guangde", 0, 10).await.unwrap();
        assert_eq!(
            kept[0].envelope,
            format!("envelope with {}", project("guangde", theirs, 1).body).into_bytes()
        );
        let changes = store.changes("zone", 0, 10).await.unwrap();
        assert!(changes[0].record.body.contains(PHONE));
    }
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_record_or_revision_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed_sqlite(dir.path(), Profile::Gm);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    store
        .write(write(project("zone", a, 1), None, "a"))
        .await
        .unwrap();
    store
        .write(write(record("zone", b, 1, "{}"), None, "b"))
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        let a_body: String = conn
            .query_row("SELECT body FROM log WHERE id = ?1", [a.to_string()], |r| {
                r.get(0)
            })
            .unwrap();
        conn.execute(
            "UPDATE log SET body = ?1 WHERE id = ?2",
            [a_body, b.to_string()],
        )
        .unwrap();
    }
    let err = store.get(RecordKind::Project, "zone", b).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("does not open") && m.contains(&b.to_string())),
        "{err}"
    );
    // The record it was taken from still opens.
    assert!(
        store
            .get(RecordKind::Project, "zone", a)
            .await
            .unwrap()
            .is_some()
    );

    let vault = Vault::open(&keys_in(dir.path(), Profile::Gm), Profile::Gm).unwrap();
    let sealed = vault.seal_body(&project("zone", a, 1), &[]).unwrap();
    for moved in [
        StoredRecord {
            revision: 2,
            ..project("zone", a, 1)
        },
        project("anji", a, 1),
        StoredRecord {
            kind: RecordKind::Allocation,
            ..project("zone", a, 1)
        },
    ] {
        let moved = StoredRecord {
            body: sealed.clone(),
            ..moved
        };
        assert!(matches!(vault.open_body(&moved), Err(VaultError::Tampered)));
    }
    let envelope = vault.seal_envelope("zone", 3, b"envelope").unwrap();
    assert_eq!(
        vault.open_envelope("zone", 3, &envelope).unwrap(),
        b"envelope"
    );
    assert!(matches!(
        vault.open_envelope("zone", 4, &envelope),
        Err(VaultError::Tampered)
    ));
    assert!(matches!(
        vault.open_envelope("anji", 3, &envelope),
        Err(VaultError::Tampered)
    ));
}

#[tokio::test]
async fn without_its_keys_a_store_serves_what_is_clear_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (sealed, catalog) = (Uuid::now_v7(), Uuid::now_v7());
    {
        let store = sealed_sqlite(dir.path(), Profile::Intl);
        store
            .write(write(project("zone", sealed, 1), None, "p"))
            .await
            .unwrap();
        let entry = StoredRecord {
            kind: RecordKind::CatalogEntry,
            ..record("zone", catalog, 1, "{}")
        };
        store.write(write(entry, None, "c")).await.unwrap();
        store
            .apply_replicas(batch(
                "guangde",
                vec![replica(1, project("guangde", Uuid::now_v7(), 1))],
            ))
            .await
            .unwrap();
    }
    let store = clear_sqlite(dir.path());
    let entry = store
        .get(RecordKind::CatalogEntry, "zone", catalog)
        .await
        .unwrap();
    assert_eq!(entry.unwrap().body, "{}", "catalog entries are not sealed");
    let err = store
        .get(RecordKind::Project, "zone", sealed)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Sealed(m) if m.contains("no key provider") && m.contains("[keys]")),
        "{err}"
    );
    let err = store.evidence("guangde", 0, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Sealed(_)), "{err}");
}

#[tokio::test]
async fn key_files_anyone_may_read_or_of_another_ring_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_in(dir.path(), Profile::Intl);
    {
        let vault = Vault::open(&keys, Profile::Intl).unwrap();
        vault
            .seal_body(&project("zone", Uuid::now_v7(), 1), &[])
            .unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("kek"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let err = Vault::open(&keys, Profile::Intl).err().unwrap().to_string();
        assert!(
            err.contains("may be read by others") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(
            dir.path().join("kek"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let other = KeysConfig {
        kek: KekSource::File(dir.path().join("other.kek")),
        ..keys.clone()
    };
    kek::Kek::create(&dir.path().join("other.kek"), Algorithm::Aes256Gcm).unwrap();
    let err = Vault::open(&other, Profile::Intl)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("wrapped by the key-encryption key"), "{err}");
    let missing = KeysConfig {
        kek: KekSource::File(dir.path().join("absent.kek")),
        ..keys.clone()
    };
    let err = Vault::open(&missing, Profile::Intl)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("keys init"), "{err}");
    std::fs::write(dir.path().join("bad.kek"), "aes-256-gcm:00ff\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("bad.kek"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let short = KeysConfig {
        kek: KekSource::File(dir.path().join("bad.kek")),
        ..keys
    };
    let err = Vault::open(&short, Profile::Intl)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("32 bytes"), "{err}");
}

#[tokio::test]
async fn a_store_written_in_clear_is_sealed_in_place_once() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    {
        let store = clear_sqlite(dir.path());
        store
            .write(write(project("zone", ids[0], 1), None, "a"))
            .await
            .unwrap();
        store
            .write(write(project("zone", ids[0], 2), Some(1), "b"))
            .await
            .unwrap();
        store
            .apply_replicas(batch(
                "guangde",
                vec![replica(1, project("guangde", ids[1], 1))],
            ))
            .await
            .unwrap();
        store.checkpoint().await.unwrap();
        assert!(holds(&store_bytes(dir.path()), PHONE));
    }
    let store = sealed_sqlite(dir.path(), Profile::Gm);
    let owners = ["zone".to_string(), "guangde".to_string()];
    let done = migrate(&store, &owners).await.unwrap();
    // Two versions of zone's project, guangde's project and the envelope kept of it.
    assert_eq!(done.sealed, 4);
    assert!(!holds(&store_bytes(dir.path()), PHONE));
    let read = store
        .get(RecordKind::Project, "zone", ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.revision, 2);
    assert!(read.body.contains(PHONE));
    assert!(
        store.evidence("guangde", 0, 1).await.unwrap()[0]
            .envelope
            .ends_with(b"}")
    );
    assert_eq!(migrate(&store, &owners).await.unwrap().sealed, 0);
}

/// An erasure at a receiver destroys the keys of what it erased: the live copies hold the rest
/// under new keys, and a copy of the store taken before (a backup) still reads — without the
/// erased items; erasing the records themselves leaves a backup's copies unreadable, so they
/// read as absent.
#[tokio::test]
async fn erasure_destroys_keys_so_a_backup_from_before_has_no_phone() {
    use crate::store::{BodyRewrite, Redaction};
    let dir = tempfile::tempdir().unwrap();
    let store = sealed_sqlite(dir.path(), Profile::Gm);
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let replicas = vec![
        replica(1, project("guangde", ids[0], 1)),
        replica(2, project("guangde", ids[1], 1)),
    ];
    store
        .apply_replicas(batch("guangde", replicas))
        .await
        .unwrap();
    store.checkpoint().await.unwrap();
    let backup = dir.path().join("backup.db");
    std::fs::copy(dir.path().join("store.db"), &backup).unwrap();
    let before = store.evidence("guangde", 0, 10).await.unwrap();

    // The phone of the first project erased (a grant ended); the other keeps it in its body
    // only because this erasure function leaves it (a real one empties the item everywhere).
    let target = ids[0];
    let done = store
        .redact(Redaction {
            owner: "guangde".into(),
            kind: RecordKind::Project,
            body: Arc::new(move |r: &StoredRecord| {
                Ok((r.id == target).then(|| BodyRewrite {
                    body: r.body.replace(PHONE, ""),
                    erases: true,
                }))
            }),
            envelope: Arc::new(|_, _: &[u8], _| Ok(None)),
            delete_records: false,
        })
        .await
        .unwrap();
    assert_eq!((done.records, done.log_entries), (1, 1));
    // The items key and the evidence key of guangde, generation 1 of each.
    assert_eq!(done.keys_destroyed, 2);
    let live = store
        .get(RecordKind::Project, "guangde", target)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(phone(&live.body), "");
    let other = store
        .get(RecordKind::Project, "guangde", ids[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        phone(&other.body),
        PHONE,
        "sealed anew under the new key, still readable"
    );
    assert_eq!(store.evidence("guangde", 0, 10).await.unwrap(), before);

    // The backup: every record still reads, the erasable items of both are gone for good.
    let restored = sealed_file(dir.path(), &backup, Profile::Gm);
    for id in ids {
        let old = restored
            .get(RecordKind::Project, "guangde", id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(phone(&old.body), "", "the backup gives no phone back");
        assert!(
            old.body.contains("张三") && old.body.contains("lead"),
            "{}",
            old.body
        );
    }
    let err = restored.evidence("guangde", 0, 10).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Sealed(m) if m.contains("destroyed")),
        "{err}"
    );

    // The records themselves erased: the backup's copies read as absent.
    let done = store
        .redact(Redaction {
            owner: "guangde".into(),
            kind: RecordKind::Project,
            body: Arc::new(|_: &StoredRecord| Ok(None)),
            envelope: Arc::new(|_, _: &[u8], _| Ok(None)),
            delete_records: true,
        })
        .await
        .unwrap();
    assert_eq!(done.records, 2);
    assert!(done.keys_destroyed >= 3, "{done:?}");
    // Another process (the restored copy here) gives up a destroyed key it holds in memory
    // the next time it looks at the ring.
    tokio::time::sleep(keyring::REREAD * 2).await;
    assert!(
        restored
            .get(RecordKind::Project, "guangde", ids[0])
            .await
            .unwrap()
            .is_none()
    );
    let listed = restored
        .list(crate::store::ListQuery::of(RecordKind::Project, 10))
        .await
        .unwrap();
    assert!(listed.is_empty());
    // Own records are sealed whole and never touched by an erasure.
    let own = Uuid::now_v7();
    store
        .write(write(project("zone", own, 1), None, "own"))
        .await
        .unwrap();
    assert_eq!(
        phone(
            &store
                .get(RecordKind::Project, "zone", own)
                .await
                .unwrap()
                .unwrap()
                .body
        ),
        PHONE
    );
}

/// The same on PostgreSQL (the server `tests/with-postgres.sh` starts): the conformance suite
/// through the seal, an older store sealed in place, and no phone in the server's files —
/// data directory and WAL — after writes, replicas and an erasure.
mod on_postgres {
    use super::*;
    use crate::store::postgres::{PostgresOptions, PostgresStore, testing};

    async fn postgres() -> Arc<dyn crate::store::Store> {
        let url = testing::scratch_database().await;
        Arc::new(
            PostgresStore::connect(PostgresOptions::parse(&url, None, 8).unwrap())
                .await
                .unwrap(),
        )
    }

    async fn sealed_postgres(dir: &Path) -> SealedStore {
        let vault = Vault::open(&keys_in(dir, Profile::Gm), Profile::Gm).unwrap();
        SealedStore::new(postgres().await, Some(vault), "zone")
    }

    crate::conformance_tests!(|dir| Arc::new(sealed_postgres(dir.path()).await));

    fn project_with(owner: &str, id: Uuid, phone: &str) -> StoredRecord {
        record(
            owner,
            id,
            1,
            &format!(r#"{{"contact":{{"name":"张三","phone":"{phone}"}}}}"#),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_in_clear_is_sealed_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let inner = postgres().await;
        let id = Uuid::now_v7();
        let clear = SealedStore::new(inner.clone(), None, "zone");
        clear
            .write(write(project("zone", Uuid::now_v7(), 1), None, "a"))
            .await
            .unwrap();
        clear
            .apply_replicas(batch(
                "guangde",
                vec![replica(1, project("guangde", id, 1))],
            ))
            .await
            .unwrap();
        let vault = Vault::open(&keys_in(dir.path(), Profile::Gm), Profile::Gm).unwrap();
        let sealed = SealedStore::new(inner.clone(), Some(vault), "zone");
        let owners = ["zone".to_string(), "guangde".to_string()];
        assert_eq!(migrate(&sealed, &owners).await.unwrap().sealed, 3);
        assert_eq!(migrate(&sealed, &owners).await.unwrap().sealed, 0);
        let raw = inner
            .get(RecordKind::Project, "guangde", id)
            .await
            .unwrap()
            .unwrap();
        assert!(is_sealed_body(&raw.body) && !raw.body.contains(PHONE));
        let read = sealed
            .get(RecordKind::Project, "guangde", id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(phone(&read.body), PHONE);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_phone_reaches_the_server_files_and_an_erasure_destroys_its_keys() {
        // Written nowhere else in clear: whatever the server's files hold of it came from here.
        const SECRET: &str = "13700000001";
        let dir = tempfile::tempdir().unwrap();
        let store = sealed_postgres(dir.path()).await;
        let (own, theirs) = (Uuid::now_v7(), Uuid::now_v7());
        store
            .write(write(project_with("zone", own, SECRET), None, "own"))
            .await
            .unwrap();
        store
            .apply_replicas(batch(
                "guangde",
                vec![replica(1, project_with("guangde", theirs, SECRET))],
            ))
            .await
            .unwrap();
        let done = store
            .redact(crate::store::Redaction {
                owner: "guangde".into(),
                kind: RecordKind::Project,
                body: Arc::new(|r: &StoredRecord| {
                    Ok(Some(crate::store::BodyRewrite {
                        body: r.body.replace(SECRET, ""),
                        erases: true,
                    }))
                }),
                envelope: Arc::new(|_, _: &[u8], _| Ok(None)),
                delete_records: false,
            })
            .await
            .unwrap();
        assert_eq!(done.keys_destroyed, 2, "{done:?}");
        let erased = store
            .get(RecordKind::Project, "guangde", theirs)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(phone(&erased.body), "");
        let own = store
            .get(RecordKind::Project, "zone", own)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(phone(&own.body), SECRET);
        store.checkpoint().await.unwrap();
        match std::env::var("YRD_TEST_PGDATA") {
            Ok(pgdata) => {
                let held = files_holding(Path::new(&pgdata), SECRET.as_bytes());
                assert!(
                    held.is_empty(),
                    "the server's files hold the phone: {held:?}"
                );
                // The scan reads where the rows are: their sealed form is found.
                let sealed = files_holding(Path::new(&pgdata), b"yrd-sealed:");
                assert!(
                    !sealed.is_empty(),
                    "no sealed body in {pgdata}: is it the server's?"
                );
            }
            Err(_) => eprintln!(
                "YRD_TEST_PGDATA is not set (a server not started by tests/with-postgres.sh): its files are not looked at"
            ),
        }
    }

    /// The files under `dir` (recursively) that hold `needle`.
    fn files_holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return found;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_holding(&path, needle));
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
        found
    }
}
