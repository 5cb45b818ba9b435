//! The gm crypto profile (国密): a federation whose links and client port speak RFC 8998
//! (TLS_SM4_GCM_SM3, curveSM2, SM2 certificates), whose gateways sign what they send with
//! SM2, and which refuses what does not fit its profile — other suites, certificates of
//! another profile or CA, files of the wrong kind at start.

use std::collections::HashMap;
use std::time::Duration;

use yrd_gateway::config::Config;
use yrd_gateway::crypto::Profile;
use yrd_gateway::gateway::Gateway;
use yrd_gateway::identity::tls;
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::directory_service_client::DirectoryServiceClient;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

fn gm() -> Options {
    Options {
        profile: Profile::Gm,
        extra_toml: "[audit]\nwitness_interval_ms = 100\n".into(),
        ..Options::default()
    }
}

async fn who_am_i(channel: tonic::transport::Channel) -> Result<pb::WhoAmIResponse, tonic::Status> {
    DirectoryServiceClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner())
}

/// A call whose connection's TLS handshake failed (tonic reports no gRPC status of its own).
fn refused_in_the_handshake(err: &tonic::Status) {
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gm_federation_exchanges_over_rfc_8998_and_says_so() {
    let mut fed = TestFederation::start_with(&["changxing", "anji", "guangde"], gm()).await;

    // Every call's connection is RFC 8998, and the gateway says which profile it runs.
    for party in ["changxing", "anji", "guangde"] {
        let me = who_am_i(fed.client(party, party)).await.unwrap();
        assert_eq!(me.crypto_profile, "gm", "{party}");
        assert_eq!(me.tls_cipher_suite, "TLS_SM4_GCM_SM3", "{party}");
        assert_eq!(me.tls_group, "curveSM2", "{party}");
    }

    // A record crosses gm links, signed with SM2, within the default catalog: the phone to
    // the Zhejiang neighbour only; a Watch at guangde sees it arrive.
    let mut watch = fed.watching("guangde").await;
    let created = create(&fed, "changxing", "国密 project").await;
    let watched = next_project(&mut watch).await;
    assert_eq!(watched.name, created.name);
    assert_eq!(watched.contact.unwrap().phone, "");
    let at_anji = eventually(WAIT, "the project at anji", || {
        try_get(&fed, "anji", &created.name)
    })
    .await;
    assert_eq!(at_anji.contact.unwrap().phone, "+86 138-0000-0000");
    let at_guangde = eventually(WAIT, "the project at guangde", || {
        try_get(&fed, "guangde", &created.name)
    })
    .await;
    assert_eq!(at_guangde.contact.unwrap().phone, "");

    // The profile is part of the party list digest, and the peers agree on it.
    let parties = eventually(WAIT, "both peers' digests at anji", || async {
        let list = fed
            .directory("anji", "anji")
            .list_parties(pb::ListPartiesRequest {})
            .await
            .ok()?
            .into_inner();
        (list.peers.len() == 2).then_some(list)
    })
    .await;
    assert_eq!(parties.crypto_profile, "gm");
    assert!(parties.peers.iter().all(|p| !p.differs), "{parties:?}");
    let intl = yrd_gateway::membership::digest(&federation(), Profile::Intl);
    assert_ne!(parties.membership_sha256, intl.to_vec());

    let (status, page) = http_get(fed.gateways["anji"].admin, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("Crypto profile: <b>gm</b>"), "{page}");
    let (_, metrics) = http_get(fed.gateways["anji"].admin, "/metrics").await;
    assert!(
        metrics.contains("yrd_crypto_profile_info{profile=\"gm\"} 1"),
        "{metrics}"
    );

    // Audit chain heads are signed with SM2 and witnessed by the peers.
    let heads = witnessed_heads(&fed, "anji", "changxing").await;
    assert!(heads.iter().all(|h| h.scheme == 0x0708), "{heads:?}");

    // Offline, the evidence of every change received and the witnessed chain verify.
    fed.stop_all().await;
    for party in ["anji", "guangde"] {
        let config = fed.gateways[party].config.clone();
        let (ok, out) = audit_cli("verify-evidence", &config, &[]);
        assert!(ok, "{party}: {out}");
    }
    let config = fed.gateways["changxing"].config.clone();
    let (ok, out) = audit_cli("verify", &config, &["--with-witnesses"]);
    assert!(ok, "{out}");
    assert!(out.contains("anji"), "{out}");
    // Every event of a gateway that always ran in the gm profile is linked with SM3.
    assert!(out.contains("events verified (linked with SM3)"), "{out}");

    // An export keeps each event's digest: it verifies on its own, and pruned the rest does.
    let export = fed.root.path().join("changxing-audit.jsonl");
    let (ok, out) = audit_cli(
        "export",
        &config,
        &[
            "--through",
            "3",
            "--out",
            export.to_str().unwrap(),
            "--prune",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&["audit", "verify-export", export.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("export intact: 3 events of changxing (linked with SM3)"),
        "{out}"
    );
    let (ok, out) = audit_cli("verify", &config, &[]);
    assert!(ok && out.contains("(linked with SM3)"), "{out}");
}

#[tokio::test]
async fn a_gm_gateway_refuses_other_suites_other_cas_and_intl_certificates() {
    let fed = TestFederation::start_with(&["anji"], gm()).await;
    let other = tempfile::tempdir().unwrap();

    // An international client: its suites and certificate are not RFC 8998's.
    let intl = Pki::new(other.path());
    let err = who_am_i(fed.channel_with("anji", intl.client_config("anji", "client")))
        .await
        .unwrap_err();
    refused_in_the_handshake(&err);

    // An SM2 client certificate from another gm CA.
    let foreign = tempfile::tempdir().unwrap();
    let foreign = Pki::new_in(foreign.path(), Profile::Gm);
    let err = who_am_i(fed.channel_with("anji", foreign.client_config("anji", "client")))
        .await
        .unwrap_err();
    refused_in_the_handshake(&err);

    // A gm client of the federation's own CA gets in.
    assert!(who_am_i(fed.client("anji", "anji")).await.is_ok());
}

#[tokio::test]
async fn a_gateway_whose_files_do_not_fit_its_profile_refuses_to_start_and_names_the_file() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let config = write_config(root.path(), "anji", "127.0.0.1:0", &[], &gm());
    let refused = |config: &std::path::Path| {
        let config = Config::load(config, &HashMap::new()).unwrap();
        async move {
            match Gateway::open(config).await {
                Ok(_) => panic!("a gateway with files of the wrong profile started"),
                Err(e) => e.to_string(),
            }
        }
    };

    // gm in the config, the intl PKI on disk: the CA bundle is named first.
    let why = refused(&config).await;
    assert!(why.contains(&pki.ca_path().display().to_string()), "{why}");
    assert!(why.contains("certs init --profile gm"), "{why}");

    // SM2 certificates, but an international key beside them.
    let gm_dir = tempfile::tempdir().unwrap();
    let gm_pki = Pki::new_in(gm_dir.path(), Profile::Gm);
    for name in ["ca.crt", "anji/gateway.crt"] {
        std::fs::copy(gm_pki.dir.join(name), pki.dir.join(name)).unwrap();
    }
    let why = refused(&config).await;
    let key = pki.dir.join("anji/gateway.key");
    assert!(why.contains(&key.display().to_string()), "{why}");
    assert!(why.contains("international"), "{why}");

    // With all three of the profile the gateway's TLS material loads.
    std::fs::copy(gm_pki.dir.join("anji/gateway.key"), &key).unwrap();
    let loaded = Config::load(&config, &HashMap::new()).unwrap();
    assert_eq!(loaded.tls.profile, Profile::Gm);
    tls::TlsMaterial::load(&loaded.tls).expect("gm files in the gm profile load");

    // An intl config with SM2 files: the CA bundle again, the other way round.
    let intl = write_config(root.path(), "anji", "127.0.0.1:0", &[], &Options::default());
    let why = refused(&intl).await;
    assert!(why.contains("SM2 certificate"), "{why}");
    assert!(why.contains("certs init --profile intl"), "{why}");
}

/// The Python with OpenSSL 4.0 (PyPI `cryptography` 48 and `pyOpenSSL` 26.2) that
/// `tests/interop/run.sh` names, and the peer script.
fn python_peer() -> (String, &'static str) {
    let python = std::env::var("YRD_GM_PYTHON").expect("YRD_GM_PYTHON");
    (
        python,
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/gm_peer.py"),
    )
}

/// A folder holding `ca.crt` and `<role>.crt`/`<role>.key` copied from `pki`'s
/// `<party>/<stem>.*`, for the Python peer.
fn peer_files(pki: &Pki, party: &str, stem: &str, role: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(pki.ca_path(), dir.path().join("ca.crt")).unwrap();
    for ext in ["crt", "key"] {
        std::fs::copy(
            pki.dir.join(party).join(format!("{stem}.{ext}")),
            dir.path().join(format!("{role}.{ext}")),
        )
        .unwrap();
    }
    dir
}

/// An OpenSSL 4.0 client calls a gm gateway's HTTP/JSON WhoAmI over RFC 8998, and one with a
/// certificate of another gm CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs YRD_GM_PYTHON: a Python with cryptography 48 and pyOpenSSL 26.2"]
async fn python_openssl_4_calls_a_gm_gateway() {
    let (python, script) = python_peer();
    let fed = TestFederation::start_with(&["anji"], gm()).await;
    let port = fed.addr("anji").port().to_string();
    let call = |dir: tempfile::TempDir| {
        let (python, port) = (python.clone(), port.clone());
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(python)
                .args([
                    script,
                    "call",
                    dir.path().to_str().unwrap(),
                    &port,
                    "/v1/whoami",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };

    let said = call(peer_files(&fed.pki, "anji", "client", "client"))
        .await
        .unwrap();
    eprintln!("the OpenSSL 4.0 client said: {said}");
    assert!(said.contains("suite TLS_SM4_GCM_SM3"), "{said}");
    assert!(said.contains("peer anji gateway"), "{said}");
    assert!(said.contains("HTTP/1.1 200"), "{said}");
    // What the gateway saw of the same connection, including the group the bindings cannot name.
    assert!(
        said.contains("\"tlsCipherSuite\":\"TLS_SM4_GCM_SM3\""),
        "{said}"
    );
    assert!(said.contains("\"tlsGroup\":\"curveSM2\""), "{said}");
    assert!(said.contains("\"cryptoProfile\":\"gm\""), "{said}");
    assert!(
        said.contains("spiffe://yrd-huzhou/party/anji/client/demo"),
        "{said}"
    );

    let foreign = tempfile::tempdir().unwrap();
    let foreign = Pki::new_in(foreign.path(), Profile::Gm);
    let mut files = peer_files(&foreign, "anji", "client", "client");
    // The foreign client trusts the federation CA, so only the gateway's refusal is tested.
    std::fs::copy(fed.pki.ca_path(), files.path().join("ca.crt")).unwrap();
    let said = call(std::mem::replace(&mut files, tempfile::tempdir().unwrap()))
        .await
        .unwrap();
    assert!(said.contains("refused"), "{said}");
    assert!(!said.contains("HTTP/1.1 200"), "{said}");
}

/// A gateway's own TLS client (the config it dials peers with) reaches an OpenSSL 4.0 server
/// over RFC 8998, and refuses one whose certificate is of another gm CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs YRD_GM_PYTHON: a Python with cryptography 48 and pyOpenSSL 26.2"]
async fn python_openssl_4_serves_a_gm_gateways_tls_client() {
    use std::io::{BufRead, Read};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (python, script) = python_peer();
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new_in(root.path(), Profile::Gm);
    let foreign = tempfile::tempdir().unwrap();
    let foreign = Pki::new_in(foreign.path(), Profile::Gm);
    let paths = pki.gateway_paths("changxing");
    let material = tls::TlsMaterial::load(&paths).unwrap();

    for (server, trusted) in [(&pki, true), (&foreign, false)] {
        let files = peer_files(server, "anji", "gateway", "server");
        // The server trusts the federation CA either way: only the client's check is tested.
        std::fs::copy(pki.ca_path(), files.path().join("ca.crt")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut peer = std::process::Command::new(&python)
            .args([
                script,
                "serve",
                files.path().to_str().unwrap(),
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(peer.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");

        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(material.client.clone());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connected = connector.connect(name, tcp).await;
        if !trusted {
            let Err(err) = connected else {
                panic!("a server of another CA was accepted");
            };
            // Both development CAs bear one name: the chain is found and its signature fails.
            assert!(
                err.to_string().contains("invalid peer certificate"),
                "{err}"
            );
            let _ = peer.kill();
            continue;
        }
        let mut conn = connected.unwrap();
        let (_, state) = conn.get_ref();
        let negotiated = tls::Negotiated::of(state);
        assert_eq!(negotiated.cipher_suite, "TLS_SM4_GCM_SM3");
        assert_eq!(negotiated.group, "curveSM2");
        conn.write_all(b"hello").await.unwrap();
        let mut echoed = Vec::new();
        let _ = conn.read_to_end(&mut echoed).await;
        assert_eq!(echoed, b"echo:hello");
        let mut said = String::new();
        out.read_to_string(&mut said).unwrap();
        peer.wait().unwrap();
        eprintln!("the OpenSSL 4.0 server said: {said}");
        assert!(said.contains("suite TLS_SM4_GCM_SM3"), "{said}");
        assert!(said.contains("peer changxing gateway"), "{said}");
    }
}

/// In the gm profile, manifests list envelopes by SM3, so what a receiver keeps of an envelope
/// whose items it erased when a grant ended is its SM3: the evidence still verifies, and a
/// SHA-256 in its place would not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_of_erased_items_verifies_by_sm3_in_the_gm_profile() {
    let mut fed = TestFederation::start_with(&["zone", "changxing", "guangde"], gm()).await;
    let project = create(&fed, "changxing", "国密 grant").await;
    let request = crate::grants::granted_phones(&fed).await;
    eventually(WAIT, "the phone at guangde", || async {
        try_get(&fed, "guangde", &project.name)
            .await
            .filter(|p| p.contact.as_ref().is_some_and(|c| !c.phone.is_empty()))
    })
    .await;
    fed.access("changxing", "changxing")
        .revoke_access_grant(crate::grants::revoke(&request, "项目对接已结束"))
        .await
        .unwrap();
    eventually(WAIT, "the deletion receipt at guangde", || async {
        crate::grants::request_at(&fed, "guangde", &request)
            .await
            .filter(|r| r.deletion_receipt.as_ref().is_some_and(|d| d.evidence >= 1))
    })
    .await;
    fed.stop_all().await;

    let config = fed.gateways["guangde"].config.clone();
    let (ok, out) = audit_cli("verify-evidence", &config, &[]);
    assert!(ok, "{out}");
    // Changxing's manifests list by SM3, so the digest guangde kept of the erased envelope
    // matched only as an SM3.
    let changxing = out.lines().find(|l| l.starts_with("changxing:")).unwrap();
    assert!(
        changxing.contains("; 1 with items erased when a grant ended"),
        "{out}"
    );

    // And the check rests on the kept digest: with other bytes in its place it fails.
    let db = fed.root.path().join("guangde/store.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE evidence SET erased_sha256 = zeroblob(32) WHERE erased_sha256 IS NOT NULL",
            [],
        )
        .unwrap();
    assert!(changed >= 1);
    drop(conn);
    let (ok, out) = audit_cli("verify-evidence", &config, &[]);
    assert!(!ok, "{out}");
}

/// `[tls.intl_clients]`: a gm gateway's port also serves party systems that speak only the
/// international suites, with a P-256 certificate of a CA of their kind — while the links
/// between gateways stay RFC 8998, and a gateway identity over international TLS is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gm_gateway_may_serve_intl_clients_but_links_stay_gm() {
    let other = tempfile::tempdir().unwrap();
    let intl = Pki::new(other.path());
    let foreign_root = tempfile::tempdir().unwrap();
    let foreign = Pki::new(foreign_root.path());
    let at = |p: std::path::PathBuf| toml::Value::String(p.display().to_string()).to_string();
    let mut options = gm();
    options.extra_toml = format!(
        "[tls.intl_clients]\nca = {}\ncert = {}\nkey = {}\n",
        at(intl.ca_path()),
        at(intl.dir.join("anji/gateway.crt")),
        at(intl.dir.join("anji/gateway.key")),
    );
    let fed = TestFederation::start_with(&["anji", "zone"], options).await;

    // A party system of either kind is served, each over its own suites.
    let sm = who_am_i(fed.client("anji", "anji")).await.unwrap();
    assert_eq!(sm.tls_cipher_suite, "TLS_SM4_GCM_SM3");
    let international = intl.client_config("anji", "client");
    let me = who_am_i(fed.channel_with("anji", international))
        .await
        .unwrap();
    assert_eq!(me.spiffe_id, "spiffe://yrd-huzhou/party/anji/client/demo");
    assert_eq!(me.crypto_profile, "gm");
    assert!(me.tls_cipher_suite.starts_with("TLS13_"), "{me:?}");
    assert_ne!(me.tls_group, "curveSM2");

    // A gateway identity of the international CA: the handshake succeeds, the call does not.
    let peer = pb::federation_service_client::FederationServiceClient::new(
        fed.channel_with("anji", intl.client_config("zone", "gateway")),
    );
    let err = peer
        .clone()
        .list_witnessed_heads(pb::ListWitnessedHeadsRequest {
            party: "anji".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("RFC 8998"), "{err:?}");

    // A P-256 certificate of a CA that is not the configured one is refused.
    let err = who_am_i(fed.channel_with("anji", foreign.client_config("anji", "client")))
        .await
        .unwrap_err();
    refused_in_the_handshake(&err);

    // The gateways' own links are RFC 8998 and carry records as before.
    let created = create(&fed, "zone", "两种客户端").await;
    eventually(WAIT, "the zone's project at anji", || {
        try_get(&fed, "anji", &created.name)
    })
    .await;
    let parties = fed
        .directory("anji", "anji")
        .list_parties(pb::ListPartiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(parties.peers.iter().all(|p| !p.differs), "{parties:?}");
}

/// A federation that moves from intl to gm: its stores keep the evidence and audit events of
/// before, which still verify — the chain event by event, the evidence against the earlier
/// CA named in `tls.evidence_cas` (without it, the checker says which signer it cannot
/// place) — and exchange goes on in gm over the same stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_that_changed_profile_keeps_its_evidence_checkable() {
    let mut fed = TestFederation::start_with(&["zone", "anji"], Options::default()).await;
    let before = create(&fed, "zone", "before the change").await;
    eventually(WAIT, "the intl project at anji", || {
        try_get(&fed, "anji", &before.name)
    })
    .await;
    fed.stop_all().await;

    // New SM2 certificates; the international CA is kept aside for the evidence.
    let root = fed.root.path().to_path_buf();
    std::fs::rename(root.join("certs"), root.join("certs-intl")).unwrap();
    fed.pki = Pki::new_in(&root, Profile::Gm);
    let zone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let anji = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (z, a) = (zone.local_addr().unwrap(), anji.local_addr().unwrap());
    let gm = Options {
        profile: Profile::Gm,
        ..Options::default()
    };
    let zone_config = write_config(
        &root,
        "zone",
        &z.to_string(),
        &[("anji".into(), a.to_string())],
        &gm,
    );
    let anji_config = write_config(
        &root,
        "anji",
        &a.to_string(),
        &[("zone".into(), z.to_string())],
        &gm,
    );

    // Without the earlier CA the kept intl evidence cannot be placed.
    let (ok, out) = audit_cli("verify-evidence", &anji_config, &[]);
    assert!(!ok, "{out}");
    for config in [&zone_config, &anji_config] {
        let text = std::fs::read_to_string(config).unwrap();
        let with = text.replacen(
            "[tls]\n",
            "[tls]\nevidence_cas = [\"certs-intl/ca.crt\"]\n",
            1,
        );
        std::fs::write(config, with).unwrap();
    }
    let (ok, out) = audit_cli("verify-evidence", &anji_config, &[]);
    assert!(ok, "{out}");

    // The same stores, now in gm: exchange goes on, and everything verifies.
    fed.launch("zone", zone_config.clone(), zone).await;
    fed.launch("anji", anji_config.clone(), anji).await;
    let after = create(&fed, "zone", "after the change").await;
    eventually(WAIT, "the gm project at anji", || {
        try_get(&fed, "anji", &after.name)
    })
    .await;
    let me = who_am_i(fed.client("anji", "anji")).await.unwrap();
    assert_eq!(me.tls_cipher_suite, "TLS_SM4_GCM_SM3");
    fed.stop_all().await;
    let (ok, out) = audit_cli("verify-evidence", &anji_config, &[]);
    assert!(ok, "{out}");
    let (ok, out) = audit_cli("verify", &zone_config, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("linked with SHA-256,") && out.contains("with SM3)"),
        "{out}"
    );
}
