//! The key seam: a gateway whose key is held by a PKCS#11 token (SoftHSM2 here, Debian's
//! `softhsm2`, which `tests/run.sh` installs) serves TLS, dials its peers and signs what it
//! sends with that key, the key file gone from disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::net::TcpListener;
use yrd_gateway::wire::pb;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token store of this test: its config file (named by `SOFTHSM2_CONF` for this
/// test process and the `softhsm2-util` it runs) and a token labelled `label` with user PIN
/// 1234.
fn token(dir: &Path, label: &str) -> PathBuf {
    assert!(
        Path::new(MODULE).exists(),
        "{MODULE} is missing: install Debian's softhsm2 (tests/run.sh does)"
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // Each test runs in a process of its own (nextest), before any thread reads the variable.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    softhsm(&[
        "--init-token",
        "--free",
        "--label",
        label,
        "--pin",
        "1234",
        "--so-pin",
        "12345678",
    ]);
    conf
}

fn softhsm(args: &[&str]) {
    let out = Command::new("softhsm2-util").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rewrites the config at `path` so the gateway key is the token's, not a file.
fn key_in_token(path: &Path, token: &str, pin_file: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let without_key: String = text
        .lines()
        .filter(|l| !l.starts_with("key = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let table = format!(
        "\n[tls.pkcs11]\nmodule = {MODULE:?}\ntoken = {token:?}\nkey_label = \"gateway\"\npin_file = {:?}\n",
        pin_file.display().to_string()
    );
    std::fs::write(path, without_key + &table).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_key_in_a_pkcs11_token_serves_dials_and_signs() {
    let mut fed = TestFederation::start_with(&[], Options::default()).await;
    let root = fed.root.path().to_path_buf();
    token(&root, "yrd-zone");
    // The zone's key goes into the token and leaves the disk.
    let key_file = fed.pki.dir.join("zone/gateway.key");
    let key_path = key_file.to_str().unwrap();
    softhsm(&[
        "--import", key_path, "--token", "yrd-zone", "--label", "gateway", "--id", "01", "--pin",
        "1234",
    ]);
    std::fs::remove_file(&key_file).unwrap();
    let pin = root.join("pin");
    std::fs::write(&pin, "1234\n").unwrap();

    let zone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let anji = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (z, a) = (zone.local_addr().unwrap(), anji.local_addr().unwrap());
    let options = Options::default();
    let zone_config = write_config(
        &root,
        "zone",
        &z.to_string(),
        &[("anji".into(), a.to_string())],
        &options,
    );
    key_in_token(&zone_config, "yrd-zone", &pin);
    let anji_config = write_config(
        &root,
        "anji",
        &a.to_string(),
        &[("zone".into(), z.to_string())],
        &options,
    );

    // A wrong PIN: the zone's gateway refuses to start and says why.
    std::fs::write(&pin, "9999\n").unwrap();
    let config = yrd_gateway::config::Config::load(&zone_config, &Default::default()).unwrap();
    let why = match yrd_gateway::gateway::Gateway::open(config).await {
        Ok(_) => panic!("a gateway whose token PIN is wrong started"),
        Err(e) => e.to_string(),
    };
    assert!(why.contains("login to token `yrd-zone`"), "{why}");
    std::fs::write(&pin, "1234\n").unwrap();

    fed.launch("zone", zone_config, zone).await;
    fed.launch("anji", anji_config.clone(), anji).await;

    // The token's key answers TLS handshakes of the zone's clients...
    let me = pb::directory_service_client::DirectoryServiceClient::new(fed.client("zone", "zone"))
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.gateway_party, "zone");
    // ... signs what the zone sends (anji verifies it) and authenticates the zone when it
    // dials anji.
    let from_zone = create(&fed, "zone", "HSM-signed").await;
    eventually(WAIT, "the zone's project at anji", || {
        try_get(&fed, "anji", &from_zone.name)
    })
    .await;
    let from_anji = create(&fed, "anji", "pulled by the zone").await;
    eventually(WAIT, "anji's project at the zone", || {
        try_get(&fed, "zone", &from_anji.name)
    })
    .await;
    assert!(!key_file.exists(), "the key file stayed away");

    fed.stop_all().await;
    let (ok, out) = audit_cli("verify-evidence", &anji_config, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("zone: evidence of"), "{out}");
}

/// The key-encryption key of data at rest can be an AES-256 key inside a PKCS#11 token
/// (`keys init --pkcs11-module …` makes it there, sensitive and not extractable): every data
/// key of the ring is wrapped and unwrapped by the token, records read back after a restart,
/// and a wrong PIN stops with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_encryption_key_of_data_at_rest_can_stay_in_a_pkcs11_token() {
    let dir = tempfile::tempdir().unwrap();
    token(dir.path(), "yrd-keys");
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "1234\n").unwrap();
    let pin = pin_file.to_str().unwrap();
    let init = [
        "keys",
        "init",
        "--pkcs11-module",
        MODULE,
        "--token",
        "yrd-keys",
        "--key-label",
        "kek",
        "--pin-file",
        pin,
    ];
    let (ok, out) = cli(&init);
    assert!(ok && out.contains("pkcs11:yrd-keys/kek"), "{out}");
    let (ok, out) = cli(&init);
    assert!(!ok && out.contains("already holds"), "{out}");

    let mut fed = TestFederation::start(&["changxing"]).await;
    fed.gateway("changxing").stop().await;
    let root = fed.root.path().to_path_buf();
    for path in [
        "keys/changxing.ring",
        "changxing/store.db",
        "changxing/store.db-wal",
    ] {
        let _ = std::fs::remove_file(root.join(path));
    }
    let config = root.join("changxing.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("kek_file = "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &config,
        format!(
            "{text}\n[keys.pkcs11]\nmodule = {MODULE:?}\ntoken = \"yrd-keys\"\nkey_label = \"kek\"\npin_file = {pin:?}\n"
        ),
    )
    .unwrap();
    fed.gateway("changxing").restart().await;
    let project = create(&fed, "changxing", "sealed by a token").await;
    fed.gateway("changxing").restart().await;
    let again = try_get(&fed, "changxing", &project.name).await.unwrap();
    assert_eq!(phone_of(&again), phone_of(&project));
    let store = std::fs::read(root.join("changxing/store.db")).unwrap();
    let phone = phone_of(&project);
    assert!(!store.windows(phone.len()).any(|w| w == phone.as_bytes()));
    let (ok, status) = cli(&["keys", "status", "--config", config.to_str().unwrap()]);
    assert!(ok && status.contains("pkcs11:yrd-keys/kek"), "{status}");
    let (ok, out) = cli(&["keys", "rotate", "--config", config.to_str().unwrap()]);
    assert!(!ok && out.contains("PKCS#11 token"), "{out}");

    std::fs::write(&pin_file, "0000\n").unwrap();
    let (ok, out) = cli(&["keys", "status", "--config", config.to_str().unwrap()]);
    assert!(!ok && out.contains("login"), "{out}");
}
