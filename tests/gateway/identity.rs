//! SPEC §1-2: who may connect, and who may call what.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use tonic::Code;
use yrd_gateway::identity::pki::{Authority, LeafSpec};
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::directory_service_client::DirectoryServiceClient;
use yrd_gateway::wire::pb::project_service_client::ProjectServiceClient;

use crate::common::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(pki: &Pki) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.ca_path()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// Asserts the gateway refused the TLS handshake with the given alert: the call never reached
/// gRPC, and the client learns why (tonic reports it as a transport error).
fn assert_tls_refused(err: &tonic::Status, alert: &str) {
    let text = format!("{err:?}");
    assert!(
        text.contains(alert),
        "expected TLS alert {alert}, got {text}"
    );
    assert!(
        matches!(err.code(), Code::Unknown | Code::Unavailable),
        "{text}"
    );
}

async fn who_am_i(channel: tonic::transport::Channel) -> Result<pb::WhoAmIResponse, tonic::Status> {
    DirectoryServiceClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn the_demo_client_is_recognised() {
    let fed = TestFederation::start(&["anji"]).await;
    let me = who_am_i(fed.client("anji", "anji")).await.unwrap();
    assert_eq!(me.spiffe_id, "spiffe://yrd-huzhou/party/anji/client/demo");
    assert_eq!(me.party, "anji");
    assert_eq!(me.role, pb::Role::Client as i32);
    assert_eq!(me.system, "demo");
    assert!(!me.read_only);
    assert_eq!(me.gateway_party, "anji");
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(&fed.pki))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let err = who_am_i(fed.channel_with("zone", Arc::new(config)))
        .await
        .unwrap_err();
    assert_tls_refused(&err, "CertificateRequired");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let fed = TestFederation::start(&["zone"]).await;
    let foreign = Authority::generate("somebody else's CA").unwrap();
    let issued = foreign
        .issue(&LeafSpec::client(TRUST_DOMAIN, "zone", "demo"))
        .unwrap();
    let config = fed.pki.client_config_for("foreign", &issued);
    let err = who_am_i(fed.channel_with("zone", config))
        .await
        .unwrap_err();
    assert_tls_refused(&err, "UnknownCA");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut spec = LeafSpec::client(TRUST_DOMAIN, "zone", "demo");
    spec.not_before = OffsetDateTime::now_utc() - Duration::days(30);
    spec.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    let config = fed
        .pki
        .client_config_for("expired", &fed.pki.ca.issue(&spec).unwrap());
    let err = who_am_i(fed.channel_with("zone", config))
        .await
        .unwrap_err();
    assert_tls_refused(&err, "CertificateExpired");
}

#[tokio::test]
async fn a_certificate_without_a_spiffe_id_is_refused() {
    let fed = TestFederation::start(&["zone"]).await;
    for (name, uris) in [
        ("no-uri", vec![]),
        ("not-spiffe", vec!["https://example.org/zone".to_string()]),
        (
            "wrong-shape",
            vec!["spiffe://yrd-huzhou/party/zone/admin".to_string()],
        ),
        (
            "foreign-domain",
            vec!["spiffe://elsewhere/party/zone/client/demo".to_string()],
        ),
        (
            "non-member",
            vec!["spiffe://yrd-huzhou/party/shanghai/client/demo".to_string()],
        ),
    ] {
        let mut spec = LeafSpec::client(TRUST_DOMAIN, "zone", "demo");
        spec.uris = uris;
        spec.dns_names = vec!["client.example".into()];
        let config = fed
            .pki
            .client_config_for(name, &fed.pki.ca.issue(&spec).unwrap());
        let err = who_am_i(fed.channel_with("zone", config))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
        assert_eq!(error_reason(&err), "NO_IDENTITY", "{name}");
    }
}

#[tokio::test]
async fn tls_1_2_is_refused() {
    let fed = TestFederation::start(&["zone"]).await;
    let dir = fed.pki.dir.join("zone");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("client.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots(&fed.pki))
        .with_client_auth_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let err = who_am_i(fed.channel_with("zone", Arc::new(config)))
        .await
        .unwrap_err();
    assert_tls_refused(&err, "ProtocolVersion");
    // The same identity over TLS 1.3 gets through, so the refusal above was the version.
    assert!(who_am_i(fed.client("zone", "zone")).await.is_ok());
}

#[tokio::test]
async fn another_partys_client_cannot_write_at_the_zone() {
    let fed = TestFederation::start(&["zone"]).await;
    let err = fed
        .projects("zone", "anji")
        .create_project(create_request(sample_project("anji trying to write")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        all_projects(&mut fed.projects("zone", "zone"))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_zone_owned_record_cannot_be_written_at_anji() {
    let fed = TestFederation::start(&["zone", "anji"]).await;
    let created = create(&fed, "zone", "zone project").await;
    let mut patch = created.clone();
    patch.display_name = "renamed by anji".into();
    let err = fed
        .projects("anji", "anji")
        .update_project(pb::UpdateProjectRequest {
            project: Some(patch),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(error_reason(&err), "NOT_OWNER");
    let still = fed
        .projects("zone", "zone")
        .get_project(pb::GetProjectRequest {
            name: created.name.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap();
    assert_eq!(still, created);
}

#[tokio::test]
async fn a_gateway_identity_cannot_call_client_apis() {
    let fed = TestFederation::start(&["changxing"]).await;
    for gateway_party in ["zone", "changxing"] {
        let channel =
            fed.channel_with("changxing", fed.pki.client_config(gateway_party, "gateway"));
        let err = ProjectServiceClient::new(channel.clone())
            .list_projects(pb::ListProjectsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{gateway_party}: {err:?}"
        );
        let err = who_am_i(channel).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{gateway_party}: {err:?}"
        );
    }
}

#[tokio::test]
async fn read_only_clients_read_but_do_not_write() {
    let fed = TestFederation::start_with(
        &["guangde"],
        Options {
            extra_toml: "[access]\nread_only_systems = [\"dashboard\"]\n".into(),
            ..Options::default()
        },
    )
    .await;
    let config = fed
        .pki
        .client_config_for("dashboard", &fed.pki.issue_client("guangde", "dashboard"));
    let channel = fed.channel_with("guangde", config);
    assert!(who_am_i(channel.clone()).await.unwrap().read_only);
    let mut projects = ProjectServiceClient::new(channel);
    assert!(
        projects
            .list_projects(pb::ListProjectsRequest::default())
            .await
            .is_ok()
    );
    let err = projects
        .create_project(create_request(sample_project("from a dashboard")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

/// The gateway's side of a TLS connection sends what was written when the writer flushes, all
/// at once (HTTP/2 flushes after the frames of its answers), and a write many times its
/// buffer still arrives whole.
#[tokio::test]
async fn server_writes_leave_at_the_flush_and_a_large_one_arrives_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;
    use yrd_gateway::identity::tls::{self, TlsMaterial};

    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let source = TlsMaterial::load(&pki.gateway_paths("zone"))
        .unwrap()
        .fixed();
    let mut incoming = tls::incoming(listener, source, None);
    let connector = tokio_rustls::TlsConnector::from(pki.client_config("zone", "client"));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let localhost = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (client, server) = tokio::join!(connector.connect(localhost, tcp), incoming.next());
    let mut client = client.unwrap();
    let mut server = server.unwrap().unwrap();

    for part in [&b"one "[..], b"two ", b"three"] {
        server.write_all(part).await.unwrap();
    }
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        client.read(&mut byte),
    )
    .await;
    assert!(early.is_err(), "data was sent before the flush: {early:?}");
    server.flush().await.unwrap();
    let mut got = [0u8; 13];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"one two three");

    // 1 MiB, sixteen times the session's 64 KiB buffer, read while it is written.
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; 1 << 20];
        client.read_exact(&mut got).await.unwrap();
        got
    });
    server.write_all(&big).await.unwrap();
    server.flush().await.unwrap();
    assert!(
        reader.await.unwrap() == big,
        "the large write arrived altered"
    );
}
