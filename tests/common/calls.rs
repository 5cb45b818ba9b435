//! What tests do to running gateways: calls with the demo client, waiting until something
//! holds, reading errors, the admin HTTP server and its metrics.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Channel;
use yrd_gateway::wire::pb;

use super::*;

/// Polls `check` until it returns `Some`, for at most `limit`; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a project at a gateway, `None` if it is not (yet) there.
pub async fn try_get(fed: &TestFederation, gateway: &str, name: &str) -> Option<pb::Project> {
    fed.projects(gateway, gateway)
        .get_project(pb::GetProjectRequest {
            name: name.to_string(),
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().project)
}

/// Every project visible at a gateway, walking all pages.
pub async fn all_projects(
    client: &mut pb::project_service_client::ProjectServiceClient<Channel>,
) -> Vec<pb::Project> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_projects(pb::ListProjectsRequest {
                page_size: 500,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.projects);
        token = page.next_page_token;
        if token.is_empty() {
            return out;
        }
    }
}

/// The field paths of a status's google.rpc.BadRequest.
pub fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// The reason of a status's google.rpc.ErrorInfo.
pub fn error_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// GETs a path from an admin HTTP server and returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

type Projects = pb::project_service_client::ProjectServiceClient<Channel>;

/// Creates `sample_project(display_name)` through `client` and returns it.
pub async fn create_with(client: &mut Projects, display_name: &str) -> pb::Project {
    client
        .create_project(create_request(sample_project(display_name)))
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap()
}

/// Creates `sample_project(display_name)` at `party`'s gateway as its demo client.
pub async fn create(fed: &TestFederation, party: &str, display_name: &str) -> pb::Project {
    create_with(&mut fed.projects(party, party), display_name).await
}

/// Reads a project that must exist.
pub async fn get_with(client: &mut Projects, name: &str) -> pb::Project {
    client
        .get_project(pb::GetProjectRequest {
            name: name.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .project
        .unwrap()
}

/// The next Watch event, which must be a project.
pub async fn next_project(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::Project {
    let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("a watch event in time")
        .unwrap()
        .expect("stream open");
    match event.record {
        Some(pb::watch_response::Record::Project(p)) => p,
        // Catalog entries (the default catalogs at start) are not what these tests follow.
        Some(pb::watch_response::Record::CatalogEntry(_)) => Box::pin(next_project(stream)).await,
        other => panic!("expected a project event, got {other:?}"),
    }
}

/// Waits until the catalog entry `name` has reached `gateway`.
pub async fn replicated_entry(fed: &TestFederation, gateway: &str, name: &str) -> pb::CatalogEntry {
    eventually(
        Duration::from_secs(10),
        "the catalog entry at another party",
        || async {
            fed.catalog(gateway, gateway)
                .get_catalog_entry(pb::GetCatalogEntryRequest { name: name.into() })
                .await
                .ok()
                .and_then(|r| r.into_inner().entry)
        },
    )
    .await
}

/// The audit events `method` recorded at `at` with code OK, once there is one.
pub async fn audit_events_of(fed: &TestFederation, at: &str, method: &str) -> Vec<pb::AuditEvent> {
    audit_events_until(fed, at, method, "OK", |e| !e.is_empty()).await
}

/// The audit events `method` recorded at `at` with `code`, once `enough` holds of them.
pub async fn audit_events_until(
    fed: &TestFederation,
    at: &str,
    method: &str,
    code: &str,
    enough: impl Fn(&[pb::AuditEvent]) -> bool,
) -> Vec<pb::AuditEvent> {
    eventually(Duration::from_secs(10), "the audit event", || async {
        let events = pb::audit_service_client::AuditServiceClient::new(fed.client(at, at))
            .list_audit_events(pb::ListAuditEventsRequest {
                method: method.into(),
                code: code.into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .events;
        enough(&events).then_some(events)
    })
    .await
}

/// The chain heads of `party` the gateway `witness` holds, once it holds one (asked as
/// `party`'s gateway, as a peer would).
pub async fn witnessed_heads(
    fed: &TestFederation,
    witness: &str,
    party: &str,
) -> Vec<pb::SignedChainHead> {
    let peer = pb::federation_service_client::FederationServiceClient::new(
        fed.channel_with(witness, fed.pki.client_config(party, "gateway")),
    );
    let what = format!("{witness} witnessing {party}'s head");
    eventually(Duration::from_secs(30), &what, || {
        let mut peer = peer.clone();
        async move {
            let heads = peer
                .list_witnessed_heads(pb::ListWitnessedHeadsRequest {
                    party: party.into(),
                })
                .await
                .ok()?
                .into_inner()
                .heads;
            (!heads.is_empty()).then_some(heads)
        }
    })
    .await
}

/// The value of a per-peer metric (`name{peer="PEER"}`) on an admin server, if listed.
pub async fn peer_metric(admin: SocketAddr, name: &str, peer: &str) -> Option<u64> {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    let prefix = format!("{name}{{peer=\"{peer}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

/// The value of an unlabelled series on a gateway's metrics page (at its admin address).
pub async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let (code, body) = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    let prefix = format!("{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .trim()
        .parse()
        .unwrap()
}
