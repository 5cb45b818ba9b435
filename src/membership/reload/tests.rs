use std::collections::HashMap;
use std::path::Path;

use super::*;

/// A config of the zone with `parties` (id, suspended) and `peers` (party, address).
fn text(parties: &[(&str, bool)], peers: &[(&str, &str)], extra: &str) -> String {
    let mut t = String::from(
        "party = \"zone\"\n[listen]\ngrpc = \"127.0.0.1:50051\"\n[tls]\nca = \"ca.crt\"\ncert = \"gw.crt\"\nkey = \"gw.key\"\n[store]\nbackend = \"sqlite\"\npath = \"zone.db\"\n",
    );
    t.push_str(extra);
    for (id, suspended) in parties {
        t.push_str(&format!(
            "[[parties]]\nid = \"{id}\"\ndisplay_name = \"{id} name\"\nprovince = \"Zhejiang\"\nsuspended = {suspended}\n"
        ));
    }
    for (party, address) in peers {
        t.push_str(&format!(
            "[[peers]]\nparty = \"{party}\"\naddress = \"{address}\"\n"
        ));
    }
    t
}

fn config(t: &str) -> Config {
    Config::from_toml(t, Path::new("/etc/yrd/zone.toml"), &HashMap::new()).unwrap()
}

const FOUR: [(&str, bool); 4] = [
    ("zone", false),
    ("anji", false),
    ("guangde", false),
    ("changxing", false),
];
const THREE_PEERS: [(&str, &str); 3] = [
    ("anji", "127.0.0.1:1"),
    ("guangde", "127.0.0.1:2"),
    ("changxing", "127.0.0.1:3"),
];

fn four() -> Config {
    config(&text(&FOUR, &THREE_PEERS, ""))
}

fn decide_on(started: &Config, new: Config) -> Result<Decision, String> {
    decide(started, &started.federation, &started.peers, new)
}

#[test]
fn a_party_added_removed_or_suspended_and_its_peer_are_applied_and_described() {
    let started = four();
    let new = config(&text(
        &[
            ("zone", false),
            ("anji", false),
            ("guangde", true),
            ("lingang", false),
        ],
        &[
            ("anji", "127.0.0.1:9"),
            ("guangde", "127.0.0.1:2"),
            ("lingang", "127.0.0.1:5"),
        ],
        "",
    ));
    let d = decide_on(&started, new.clone()).unwrap();
    assert_eq!(d.federation.as_ref(), Some(&new.federation));
    assert_eq!(d.peers.as_ref(), Some(&new.peers));
    assert_eq!(
        d.changed,
        vec![
            "party guangde suspended",
            "party lingang added",
            "party changxing removed",
            "peer anji moved to 127.0.0.1:9",
            "peer lingang added at 127.0.0.1:5",
            "peer changxing removed",
        ]
    );
    assert!(d.restart_needed.is_empty(), "{:?}", d.restart_needed);

    // The same file again changes nothing.
    let again = decide(&started, &new.federation, &new.peers, new.clone()).unwrap();
    assert_eq!(again.federation, None);
    assert_eq!(again.peers, None);
    assert!(again.changed.is_empty());
}

#[test]
fn moving_a_listed_party_or_changing_the_own_party_is_refused() {
    let started = four();
    let moved = config(&text(
        &[
            ("zone", false),
            ("guangde", false),
            ("anji", false),
            ("lingang", false),
        ],
        &[],
        "",
    ));
    let why = decide_on(&started, moved).unwrap_err();
    assert!(why.contains("keep their order"), "{why}");

    // Removing one and adding one elsewhere keeps the others' order: applied.
    let reordered_by_removal = config(&text(
        &[("lingang", false), ("zone", false), ("changxing", false)],
        &[],
        "",
    ));
    assert!(decide_on(&started, reordered_by_removal).is_ok());

    let other = config(
        &text(&[("zone", false), ("anji", false)], &[], "")
            .replace("party = \"zone\"", "party = \"anji\""),
    );
    let why = decide_on(&started, other).unwrap_err();
    assert!(why.contains("`party` changed"), "{why}");
}

#[test]
fn other_keys_changed_are_named_as_waiting_for_a_restart() {
    let started = four();
    let t = text(
        &FOUR,
        &THREE_PEERS,
        "[limits]\nmax_concurrent_calls = 17\n[access]\nread_only_systems = [\"dashboard\"]\n",
    )
    .replace("zone.db", "elsewhere.db");
    let d = decide_on(&started, config(&t)).unwrap();
    assert_eq!(
        d.restart_needed,
        vec!["store", "access.read_only_systems", "limits"]
    );
    assert!(d.changed.is_empty());
    assert_eq!(d.federation, None);
}

#[tokio::test]
async fn the_file_is_followed_refused_while_bad_and_applied_once_mended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone.toml");
    let start = text(
        &[("zone", false), ("anji", false)],
        &[("anji", "127.0.0.1:1")],
        "",
    );
    std::fs::write(&path, &start).unwrap();
    let source = ConfigSource {
        path: path.clone(),
        env: HashMap::new(),
    };
    let started = Config::load(&source.path, &source.env).unwrap();
    let (live, mut members, mut peers) = Live::new(&started);
    let reloads = Arc::new(Reloads::default());
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(follow(
        source,
        started,
        live,
        reloads.clone(),
        Duration::from_millis(20),
        stop,
    ));

    // A bad file: refused, nothing changes.
    std::fs::write(&path, start.replace("id = \"anji\"", "id = \"Anji\"")).unwrap();
    while reloads.refused() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = reloads.status().refused.unwrap();
    assert!(why.contains("parties[1].id"), "{why}");
    assert!(members.current().contains("anji"));

    // Mended, with lingang: applied, the handles see it.
    std::fs::write(
        &path,
        text(
            &[("zone", false), ("anji", false), ("lingang", false)],
            &[("anji", "127.0.0.1:1"), ("lingang", "127.0.0.1:5")],
            "",
        ),
    )
    .unwrap();
    assert!(members.changed().await);
    assert!(members.current().is_active("lingang"));
    peers.changed().await.unwrap();
    assert_eq!(peers.borrow().len(), 2);
    while reloads.applied() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = reloads.status();
    assert_eq!(status.refused, None);
    assert_eq!(
        status.changed,
        vec!["party lingang added", "peer lingang added at 127.0.0.1:5"]
    );
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}
