//! SPEC §6 for the operator: health, reflection, metrics, limits, shutdown, certificate reload.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use yrd_gateway::identity::pki::LeafSpec;
use yrd_gateway::identity::tls;
use yrd_gateway::wire::pb;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

async fn health(fed: &TestFederation, party: &str, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(fed.client(party, party));
    let answer = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(answer.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_store() {
    let fed = TestFederation::start(&["zone"]).await;
    let wait_for = |status: ServingStatus| {
        let fed = &fed;
        async move {
            eventually(WAIT, &format!("health {status:?}"), || async {
                (health(fed, "zone", "").await == status
                    && health(fed, "zone", "yrd.exchange.v1.ProjectService").await == status)
                    .then_some(())
            })
            .await
        }
    };
    wait_for(ServingStatus::Serving).await;
    let db = fed.root.path().join("zone/store.db");
    let moved = fed.root.path().join("zone/store.db.away");
    std::fs::rename(&db, &moved).unwrap();
    wait_for(ServingStatus::NotServing).await;
    let (code, body) = http_get(fed.gateways["zone"].admin, "/healthz").await;
    assert_eq!((code, body.trim()), (503, "NOT_SERVING"));
    std::fs::rename(&moved, &db).unwrap();
    wait_for(ServingStatus::Serving).await;
    let (code, _) = http_get(fed.gateways["zone"].admin, "/healthz").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_generic_reflection_client_lists_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let fed = TestFederation::start(&["anji"]).await;
    let mut client = ServerReflectionClient::new(fed.client("anji", "anji"));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "yrd.exchange.v1.DirectoryService",
        "yrd.exchange.v1.FactorService",
        "yrd.exchange.v1.FederationService",
        "yrd.exchange.v1.ProjectService",
        "yrd.exchange.v1.WatchService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // v1alpha, which many tools still use, answers too.
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaMessage;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    let mut alpha = Alpha::new(fed.client("anji", "anji"));
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter(vec![AlphaMessage {
            host: String::new(),
            message_request: Some(AlphaRequest::FileContainingSymbol(
                "yrd.exchange.v1.ProjectService".into(),
            )),
        }]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    assert!(
        format!("{answer:?}").contains("FileDescriptorResponse"),
        "{answer:?}"
    );
}

/// Parses the exposition text: every sample line is `name{labels} value` with a number value.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            assert!(
                series
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic()),
                "bad series name in {l}"
            );
            if let Some(open) = series.find('{') {
                assert!(series.ends_with('}'), "unclosed labels in {l}");
                for pair in series[open + 1..series.len() - 1].split("\",") {
                    assert!(pair.contains("=\""), "bad label {pair} in {l}");
                }
            }
            (series.to_string(), value)
        })
        .collect()
}

fn sample(all: &[(String, f64)], series: &str) -> f64 {
    all.iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_calls_exactly() {
    let fed = TestFederation::start(&["changxing"]).await;
    let mut projects = fed.projects("changxing", "changxing");
    for i in 0..3 {
        projects
            .create_project(create_request(sample_project(&format!("m{i}"))))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        let missing = format!("parties/changxing/projects/{}", uuid::Uuid::now_v7());
        assert_eq!(
            projects
                .get_project(pb::GetProjectRequest { name: missing })
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
    }
    let mut bad = sample_project("bad");
    bad.total_investment_yuan = -1;
    assert_eq!(
        projects
            .create_project(create_request(bad))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Refused by the authz layer: anji's client at changxing.
    let err = fed
        .projects("changxing", "anji")
        .list_projects(pb::ListProjectsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let (code, text) = http_get(fed.gateways["changxing"].admin, "/metrics").await;
    assert_eq!(code, 200);
    let all = samples(&text);
    let calls = |method: &str, code: &str| {
        sample(
            &all,
            &format!(
                "yrd_calls_total{{method=\"/yrd.exchange.v1.ProjectService/{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(calls("CreateProject", "OK"), 3.0);
    assert_eq!(calls("CreateProject", "INVALID_ARGUMENT"), 1.0);
    assert_eq!(calls("GetProject", "NOT_FOUND"), 2.0);
    assert_eq!(calls("ListProjects", "PERMISSION_DENIED"), 1.0);
    assert_eq!(
        sample(
            &all,
            "yrd_call_duration_seconds_count{method=\"/yrd.exchange.v1.ProjectService/CreateProject\"}"
        ),
        4.0
    );
    assert_eq!(sample(&all, "yrd_calls_in_flight"), 0.0);
    // The health monitor refreshes the audit head every second: every call above is in it.
    let audited = eventually(WAIT, "the audit chain length", || async {
        let (_, text) = http_get(fed.gateways["changxing"].admin, "/metrics").await;
        let n = sample(&samples(&text), "yrd_audit_chain_length");
        (n >= 7.0).then_some(n)
    })
    .await;
    assert!(audited >= 7.0);
    assert_eq!(sample(&all, "yrd_store_up"), 1.0);
    for side in ["to_answer", "awaiting"] {
        let series = format!("yrd_access_requests_overdue{{side=\"{side}\"}}");
        assert!(
            all.iter().any(|(s, v)| *s == series && *v == 0.0),
            "{series} is exported, 0 with no request"
        );
    }
    assert!(
        sample(
            &all,
            "yrd_certificate_expiry_timestamp_seconds{certificate=\"gateway\"}"
        ) > 1.7e9
    );

    let (code, page) = http_get(fed.gateways["changxing"].admin, "/").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("yrd-gateway — changxing") && page.contains("Certificates"),
        "{page}"
    );
}

/// Open streams have their own cap (`max_open_streams`): at it a new stream is refused at once,
/// while unary calls, counted apart, are still served (a federation of N parties holds N−1
/// peer streams open at every gateway all the time; they must not use up the unary budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_their_cap_are_refused_at_once_while_unary_calls_succeed() {
    let fed = TestFederation::start_with(
        &["zone"],
        Options {
            extra_toml: "[limits]\nmax_open_streams = 2\nmax_concurrent_calls = 2\n".into(),
            ..Options::default()
        },
    )
    .await;
    // Two open Watch streams hold both stream slots.
    let mut watch = fed.watch("zone", "zone");
    let first = watch
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let second = watch
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    // On a connection of its own: one connection holds at most max_concurrent_calls streams
    // (an HTTP/2 setting), which the first two use up.
    let err = tokio::time::timeout(
        WAIT,
        fed.watch("zone", "zone").watch(pb::WatchRequest::default()),
    )
    .await
    .expect("a refused stream is answered at once")
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(error_reason(&err), "OVERLOADED");
    assert!(err.message().contains("max_open_streams"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shed calls must not queue"
    );
    // Unary calls are not held back by the open streams.
    for _ in 0..3 {
        fed.directory("zone", "zone")
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .expect("a unary call while the streams are at their cap");
    }

    // The admitted streams still work, and a slot freed by closing one is taken again.
    let mut first = first;
    drop(second);
    let created = fed
        .projects("zone", "zone")
        .create_project(create_request(sample_project("after overload")))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(next_project(&mut first).await.name, created.name);
    eventually(WAIT, "a stream slot freed by closing a stream", || async {
        fed.watch("zone", "zone")
            .watch(pb::WatchRequest::default())
            .await
            .ok()
    })
    .await;
    let (_, text) = http_get(fed.gateways["zone"].admin, "/metrics").await;
    assert!(
        sample(
            &samples(&text),
            "yrd_calls_shed_total{reason=\"too_many_streams\"}"
        ) >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_caller_over_its_rate_is_refused() {
    let fed = TestFederation::start_with(
        &["zone"],
        Options {
            extra_toml: "[limits]\ncalls_per_second_per_caller = 1\nburst_per_caller = 5\n".into(),
            ..Options::default()
        },
    )
    .await;
    let mut dir = fed.directory("zone", "zone");
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes.push(
            dir.who_am_i(pb::WhoAmIRequest {})
                .await
                .map(|_| ())
                .map_err(|e| (e.code(), error_reason(&e))),
        );
    }
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!((5..=6).contains(&ok), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| o == &Err((Code::ResourceExhausted, "RATE_LIMITED".to_string())))
    );
    // Another caller has its own budget.
    assert!(
        fed.directory("zone", "zone")
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .is_err(),
        "same identity, same bucket"
    );
    let other = fed
        .pki
        .client_config_for("other", &fed.pki.issue_client("zone", "other"));
    assert!(
        pb::directory_service_client::DirectoryServiceClient::new(fed.channel_with("zone", other))
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted() {
    let fed = TestFederation::start_with(
        &["zone"],
        Options {
            extra_toml: "[limits]\nmax_message_bytes = 2048\n".into(),
            ..Options::default()
        },
    )
    .await;
    let mut project = sample_project("large");
    project.labels = (0..40)
        .map(|i| (format!("k{i}"), "v".repeat(200)))
        .collect();
    let err = fed
        .projects("zone", "zone")
        .create_project(create_request(project))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(error_reason(&err), "MESSAGE_TOO_LARGE");
    assert!(
        all_projects(&mut fed.projects("zone", "zone"))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_watch_and_writes_loses_nothing_and_exits_zero() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let options = Options {
        extra_toml: "[limits]\nshutdown_grace_ms = 3000\n".into(),
        ..Options::default()
    };
    let config = write_config(root.path(), "zone", "127.0.0.1:0", &[], &options);
    let mut gateway = ChildGateway::spawn(&config);
    let channel = || {
        tls::channel(
            &gateway.addr.to_string(),
            "localhost",
            pki.client_config("zone", "client"),
        )
        .unwrap()
    };
    let mut watch = pb::watch_service_client::WatchServiceClient::new(channel())
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();

    let acked: Arc<Mutex<Vec<pb::Project>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..3 {
        let mut client = pb::project_service_client::ProjectServiceClient::new(channel());
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                match client
                    .create_project(create_request(sample_project(&format!("w{w} #{i}"))))
                    .await
                {
                    Ok(r) => acked.lock().unwrap().push(r.into_inner().project.unwrap()),
                    Err(_) => return,
                }
            }
        }));
    }
    eventually(WAIT, "writes flowing", || async {
        (acked.lock().unwrap().len() >= 100).then_some(())
    })
    .await;
    let sent = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &gateway.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "no exit within the grace period (+margin)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("exited {status} {:?} after SIGTERM", sent.elapsed());
    assert!(status.success(), "{status}");
    for w in writers {
        w.await.unwrap();
    }
    // The Watch stream ended (the server closed it) rather than hanging.
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = watch.message().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "watch stream still open after the server exited"
    );

    let acked = acked.lock().unwrap().clone();
    let restarted = ChildGateway::spawn(&config);
    gateway = restarted;
    let mut client = pb::project_service_client::ProjectServiceClient::new(
        tls::channel(
            &gateway.addr.to_string(),
            "localhost",
            pki.client_config("zone", "client"),
        )
        .unwrap(),
    );
    let stored = all_projects(&mut client).await;
    for p in &acked {
        assert!(stored.contains(p), "acknowledged {} lost", p.name);
    }
    // The health subcommand used by container health checks agrees.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &gateway.addr.to_string());
    let probe = root.path().join("probe.toml");
    std::fs::write(&probe, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(["health", "--config"])
        .arg(&probe)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
}

/// A server-certificate verifier that remembers what the server presented.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl rustls::client::danger::ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.seen.lock().unwrap().push(end_entity.as_ref().to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

async fn who(
    fed: &TestFederation,
    config: Arc<rustls::ClientConfig>,
) -> Result<tonic::Response<pb::WhoAmIResponse>, tonic::Status> {
    pb::directory_service_client::DirectoryServiceClient::new(fed.channel_with("zone", config))
        .who_am_i(pb::WhoAmIRequest {})
        .await
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_used_by_the_next_handshake_and_a_revoked_client_is_refused() {
    let fed = TestFederation::start_with(
        &["zone"],
        Options {
            crl: true,
            ..Options::default()
        },
    )
    .await;
    let pki = &fed.pki;

    // A client that records the server certificate of each handshake.
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let recording_client = || {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca_path()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let dir = pki.dir.join("zone");
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("client.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recording {
                inner,
                seen: seen.clone(),
            }))
            .with_client_auth_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    };
    who(&fed, recording_client()).await.unwrap();
    let original = std::fs::read_to_string(pki.dir.join("zone/gateway.crt")).unwrap();
    assert_eq!(seen.lock().unwrap().last().unwrap(), &der_of(&original));

    // An established stream must survive the reload.
    let mut stream = fed.watching("zone").await;

    // Replace the gateway's certificate and key on disk.
    let renewed = pki
        .ca
        .issue(&LeafSpec::gateway(TRUST_DOMAIN, "zone"))
        .unwrap();
    std::fs::write(pki.dir.join("zone/gateway.key"), &renewed.key_pem).unwrap();
    std::fs::write(pki.dir.join("zone/gateway.crt"), &renewed.cert_pem).unwrap();
    eventually(
        WAIT,
        "the renewed certificate in a new handshake",
        || async {
            who(&fed, recording_client()).await.ok()?;
            (seen.lock().unwrap().last().unwrap() == &der_of(&renewed.cert_pem)).then_some(())
        },
    )
    .await;

    // Changes now leave signed with the renewed key: a new peer stream names the new signer.
    let mut pull = pb::federation_service_client::FederationServiceClient::new(
        fed.channel_with("zone", pki.client_config("anji", "gateway")),
    )
    .pull_changes(pb::PullChangesRequest {
        owner: "zone".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    let first = pull.message().await.unwrap().unwrap();
    assert_eq!(first.signer_certificate, der_of(&renewed.cert_pem));

    // Revoke a client: it is refused from its next connection on.
    let revokable = pki.issue_client("zone", "revokable");
    let revokable_config = pki.client_config_for("revokable", &revokable);
    assert!(who(&fed, revokable_config.clone()).await.is_ok());
    // A stream it holds open is closed once the revocation is loaded, idle as it is.
    let mut revoked_stream = pb::watch_service_client::WatchServiceClient::new(
        fed.channel_with("zone", revokable_config.clone()),
    )
    .watch(pb::WatchRequest::default())
    .await
    .unwrap()
    .into_inner();
    let closed = tokio::spawn(async move {
        loop {
            match revoked_stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "ended".to_string(),
                Err(e) => return format!("{:?}: {}", e.code(), e.message()),
            }
        }
    });
    std::fs::write(
        pki.dir.join("crl.pem"),
        pki.ca
            .revoke(std::slice::from_ref(&revokable.serial), 2)
            .unwrap(),
    )
    .unwrap();
    eventually(WAIT, "the revoked client refused", || async {
        who(&fed, revokable_config.clone()).await.err()
    })
    .await;
    let how = tokio::time::timeout(WAIT, closed)
        .await
        .expect("the revoked client's open stream closed")
        .unwrap();
    println!("the revoked client's open Watch stream: {how}");
    // From then on every new connection of it is refused (the TLS alert, CertificateRevoked,
    // may reach the client as a closed connection: TLS 1.3 clients finish before the server).
    for _ in 0..3 {
        assert!(who(&fed, revokable_config.clone()).await.is_err());
    }
    // Others are unaffected, and so is the stream opened before both reloads.
    assert!(
        who(&fed, fed.pki.client_config("zone", "client"))
            .await
            .is_ok()
    );
    let created = create(&fed, "zone", "after reloads").await;
    assert_eq!(next_project(&mut stream).await.name, created.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_own_certificate_turns_health_not_serving_until_renewed() {
    let fed = TestFederation::start(&["zone"]).await;
    let admin = fed.gateways["zone"].admin;
    eventually(WAIT, "SERVING", || async {
        (http_get(admin, "/healthz").await.0 == 200).then_some(())
    })
    .await;
    let dir = fed.pki.dir.join("zone");
    let install = |issued: &yrd_gateway::identity::pki::Issued| {
        std::fs::write(dir.join("gateway.key"), &issued.key_pem).unwrap();
        std::fs::write(dir.join("gateway.crt"), &issued.cert_pem).unwrap();
    };

    // The certificate on disk is replaced by one that has expired (as if renewal was missed).
    let mut spec = LeafSpec::gateway(TRUST_DOMAIN, "zone");
    spec.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    spec.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    install(&fed.pki.ca.issue(&spec).unwrap());
    eventually(WAIT, "NOT_SERVING", || async {
        (http_get(admin, "/healthz").await.0 == 503).then_some(())
    })
    .await;
    let (_, page) = http_get(admin, "/").await;
    assert!(
        page.contains("NOT_SERVING") && page.contains("EXPIRED"),
        "{page}"
    );
    let (_, text) = http_get(admin, "/metrics").await;
    assert_eq!(sample(&samples(&text), "yrd_serving"), 0.0);

    // Renewal fixes it without a restart.
    install(
        &fed.pki
            .ca
            .issue(&LeafSpec::gateway(TRUST_DOMAIN, "zone"))
            .unwrap(),
    );
    eventually(WAIT, "SERVING again", || async {
        (http_get(admin, "/healthz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(health(&fed, "zone", "").await, ServingStatus::Serving);
}
