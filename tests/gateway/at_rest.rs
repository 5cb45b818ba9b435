//! Records sealed at rest in a running federation (every test gateway has `[keys]` unless its
//! options say `in_clear`): after a project with a contact phone reached the parties that may
//! hold it, no store file of any party — database or WAL — holds the phone, the contact name or
//! the investor in clear, while every authorized read returns them; `keys init` and
//! `keys status` do what the operator guide says.

use std::path::Path;
use std::time::Duration;

use yrd_gateway::wire::pb;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
const PHONE: &str = "138-0000-0000";

/// Every byte of `party`'s SQLite store files.
fn store_files(root: &Path, party: &str) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["store.db", "store.db-wal"] {
        if let Ok(bytes) = std::fs::read(root.join(party).join(name)) {
            all.extend(bytes);
        }
    }
    assert!(!all.is_empty(), "no store files of {party}");
    all
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_file_holds_a_phone_and_every_authorized_read_returns_it() {
    let fed = TestFederation::start(&["changxing", "anji", "guangde"]).await;
    let project = create(&fed, "changxing", "sealed at rest").await;
    assert!(phone_of(&project).contains(PHONE));
    // Anji (same province: the default catalog opens the phone to it) holds it; guangde holds
    // the project without it.
    let at_anji = eventually(WAIT, "the project with its phone at anji", || async {
        try_get(&fed, "anji", &project.name)
            .await
            .filter(|p| phone_of(p).contains(PHONE))
    })
    .await;
    assert_eq!(at_anji.display_name, "sealed at rest");
    let at_guangde = eventually(WAIT, "the project at guangde", || {
        try_get(&fed, "guangde", &project.name)
    })
    .await;
    assert_eq!(phone_of(&at_guangde), "");
    let own = try_get(&fed, "changxing", &project.name).await.unwrap();
    assert!(phone_of(&own).contains(PHONE));

    let root = fed.root.path();
    for party in ["changxing", "anji", "guangde"] {
        let files = store_files(root, party);
        for clear in [PHONE, "张三", "浙江某某新能源汽车零部件有限公司"] {
            assert!(
                !holds(&files, clear),
                "{party}'s store files hold `{clear}` in clear"
            );
        }
        assert!(holds(&files, "yrd-sealed:"), "{party} seals its records");
    }

    let config = root.join("changxing.toml");
    let (ok, out) = cli(&["keys", "status", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("live data keys") && out.contains("new keys aes-256-gcm"),
        "{out}"
    );
}

#[test]
fn keys_init_writes_a_private_key_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("zone.kek");
    let kek = kek.to_str().unwrap();
    let (ok, out) = cli(&["keys", "init", "--kek", kek, "--profile", "gm"]);
    assert!(ok && out.contains("sm4-gcm"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kek).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let first = std::fs::read(kek).unwrap();
    let (ok, out) = cli(&["keys", "init", "--kek", kek]);
    assert!(!ok && out.contains("cannot create"), "{out}");
    assert_eq!(
        std::fs::read(kek).unwrap(),
        first,
        "an existing key is never replaced"
    );
}

/// The erasure of a revoked grant destroys the keys of what it covered, and says so in its
/// receipt: a backup of guangde made while the grant held, restored after the revocation,
/// gives every record back but not one phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_made_while_a_grant_held_gives_no_phone_back_after_the_revocation() {
    use crate::grants::{phone_granted_to_guangde, request_at, revoke};
    let mut fed = TestFederation::start(&["zone", "changxing", "guangde"]).await;
    let (project, request) = phone_granted_to_guangde(&fed).await;
    let root = fed.root.path().to_path_buf();
    let config = root.join("guangde.toml");
    let backup = root.join("guangde-backup.db");
    let (ok, out) = cli(&[
        "store",
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let copy = std::fs::read(&backup).unwrap();
    assert!(
        !holds(&copy, PHONE),
        "the backup file holds the phone in clear"
    );
    assert!(holds(&copy, "yrd-sealed:"));

    fed.access("changxing", "changxing")
        .revoke_access_grant(revoke(&request, "项目对接已结束"))
        .await
        .unwrap();
    let receipt = eventually(WAIT, "the deletion receipt at guangde", || async {
        request_at(&fed, "guangde", &request)
            .await
            .and_then(|r| r.deletion_receipt)
    })
    .await;
    assert_eq!(receipt.items, vec!["contact.phone".to_string()]);
    assert!(receipt.keys_destroyed >= 1, "{receipt:?}");
    // The operator sees it: the ring's destroyed keys on the metrics and the status page.
    let admin = fed.gateway("guangde").admin;
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(metrics.contains("yrd_sealed_at_rest 1"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "yrd_data_keys{{state=\"destroyed\"}} {}",
            receipt.keys_destroyed
        )),
        "{metrics}"
    );
    let (_, page) = http_get(admin, "/").await;
    assert!(
        page.contains("Data at rest: sealed with aes-256-gcm"),
        "{page}"
    );

    // Guangde's store replaced by the backup of before the revocation.
    fed.gateway("guangde").stop().await;
    for name in ["store.db", "store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(root.join("guangde").join(name));
    }
    let (ok, out) = cli(&[
        "store",
        "restore",
        "--config",
        config.to_str().unwrap(),
        backup.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    fed.gateway("guangde").restart().await;
    let restored = eventually(WAIT, "the project at the restored guangde", || {
        try_get(&fed, "guangde", &project.name)
    })
    .await;
    assert_eq!(phone_of(&restored), "", "the backup gives no phone back");
    assert_eq!(restored.contact.unwrap().name, "张三", "the rest is kept");
    assert_eq!(restored.display_name, "长兴新能源电池项目");
}

/// `keys rotate` while writes go on: every write acknowledged reads back (at the writer and at
/// a peer), the ring holds only keys wrapped by the new key-encryption key, the old key file no
/// longer opens it, and the gateway starts again on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_encryption_key_rotates_while_writes_go_on() {
    let mut fed = TestFederation::start(&["changxing", "anji"]).await;
    let root = fed.root.path().to_path_buf();
    let config = root.join("changxing.toml");
    let kek_file = root.join("keys/changxing.kek");
    let old_key = std::fs::read(&kek_file).unwrap();

    let writes = {
        let mut client = fed.projects("changxing", "changxing");
        tokio::spawn(async move {
            let mut names = Vec::new();
            for i in 0..60 {
                let p = create_with(&mut client, &format!("rotation {i}")).await;
                names.push(p.name);
            }
            names
        })
    };
    for _ in 0..2 {
        let config = config.clone();
        let (ok, out) = tokio::task::spawn_blocking(move || {
            cli(&["keys", "rotate", "--config", config.to_str().unwrap()])
        })
        .await
        .unwrap();
        assert!(
            ok && out.contains("data keys wrapped by the new key-encryption key"),
            "{out}"
        );
    }
    let names = writes.await.unwrap();
    assert_eq!(names.len(), 60);
    assert_ne!(std::fs::read(&kek_file).unwrap(), old_key);

    // One key-encryption key wraps the ring: the one the key file holds now.
    let (ok, status) = cli(&["keys", "status", "--config", config.to_str().unwrap()]);
    assert!(ok, "{status}");
    let ring = rusqlite::Connection::open(root.join("keys/changxing.ring")).unwrap();
    let wrapping: Vec<String> = ring
        .prepare("SELECT DISTINCT kek FROM keys WHERE wrapped IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(wrapping.len(), 1);
    assert!(
        status.contains(&format!("key-encryption key {}", wrapping[0])),
        "{status}"
    );
    drop(ring);

    fed.gateway("changxing").restart().await;
    for name in &names {
        let own = try_get(&fed, "changxing", name)
            .await
            .expect("read at changxing");
        assert!(phone_of(&own).contains(PHONE));
    }
    let last = names.last().unwrap().clone();
    eventually(WAIT, "the last write at anji", || async {
        try_get(&fed, "anji", &last).await
    })
    .await;

    // The old key file no longer opens the ring.
    std::fs::write(&kek_file, &old_key).unwrap();
    let (ok, out) = cli(&["keys", "status", "--config", config.to_str().unwrap()]);
    assert!(
        !ok && out.contains("wrapped by the key-encryption key"),
        "{out}"
    );
}

/// A gateway started without its `[keys]` on a store it sealed before starts, serves what is
/// in clear (its catalog), and answers a read of a sealed record FAILED_PRECONDITION
/// `SEALED_AT_REST`, never with ciphertext; with its keys back it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_keys_a_gateway_serves_what_is_clear_and_refuses_sealed_reads() {
    let mut fed = TestFederation::start(&["changxing"]).await;
    let project = create(&fed, "changxing", "sealed before").await;
    fed.gateway("changxing").stop().await;
    let config = fed.root.path().join("changxing.toml");
    let with_keys = std::fs::read_to_string(&config).unwrap();
    let without: String = with_keys
        .lines()
        .filter(|l| {
            !(l.starts_with("[keys]") || l.starts_with("kek_file") || l.starts_with("ring"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, without).unwrap();
    fed.gateway("changxing").restart().await;

    let err = fed
        .projects("changxing", "changxing")
        .get_project(pb::GetProjectRequest {
            name: project.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(error_reason(&err), "SEALED_AT_REST");
    assert!(err.message().contains("[keys]"), "{}", err.message());
    let entries = fed
        .catalog("changxing", "changxing")
        .list_catalog_entries(pb::ListCatalogEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(!entries.is_empty(), "the catalog, in clear, is served");

    fed.gateway("changxing").stop().await;
    std::fs::write(&config, with_keys).unwrap();
    fed.gateway("changxing").restart().await;
    let again = try_get(&fed, "changxing", &project.name).await.unwrap();
    assert_eq!(phone_of(&again), phone_of(&project));
}
