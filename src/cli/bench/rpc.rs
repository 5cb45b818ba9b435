//! Throughput and memory (parts 1 and 4 of the suite): the baseline echo, then CreateProject,
//! GetProject (over gRPC, then over HTTP/JSON on the same kind of HTTP/2 connections) and
//! ListProjects at one gateway, each driven by the same load generator over the same number
//! of connections; resident memory of the gateway idle and under that load;
//! the store's size per record afterwards.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use serde::Serialize;

use super::baseline::pb as echo;
use super::child::Server;
use super::load::{Throughput, drive};
use crate::wire::pb;

#[derive(Debug, Clone)]
pub struct RpcOptions {
    pub concurrency: usize,
    pub connections: usize,
    pub seconds: u64,
    /// Servers on the last CPU, this process (the load generator) on the others.
    pub pin: bool,
}

#[derive(Debug, Serialize)]
pub struct RpcFigures {
    pub concurrency: usize,
    pub connections: usize,
    pub seconds_per_phase: u64,
    /// Whether servers and load generator were pinned to CPUs of their own.
    pub pinned: bool,
    /// Encoded size of a CreateProject request; the echo carries a payload of this size.
    pub request_bytes: usize,
    pub baseline_echo: Throughput,
    pub create_project: Throughput,
    pub get_project: Throughput,
    /// GetProject as `GET /v1/parties/zone/projects/{id}` with a JSON answer.
    pub get_project_http_json: Throughput,
    pub list_projects_page_50: Throughput,
    pub memory: Memory,
    pub store: StoreSize,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// The gateway started, peers none, before its first call.
    pub gateway_idle_rss_kib: u64,
    /// Right after the last load phase.
    pub gateway_loaded_rss_kib: u64,
    /// The high-water mark over the whole run.
    pub gateway_peak_rss_kib: u64,
    pub baseline_idle_rss_kib: u64,
    pub baseline_peak_rss_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct StoreSize {
    /// The SQLite file after a checkpoint: records, change log, request log and the audit
    /// trail of every call the run made (reads included).
    pub bytes: u64,
    pub projects: u64,
    pub audit_events: u64,
    pub file_bytes_per_project: f64,
    /// The file compacted (`VACUUM INTO` a copy), per project: no free pages.
    pub compacted_bytes_per_project: f64,
    /// The compacted file with the audit trail dropped, per project: the records, the change
    /// log and the request log with their indexes. The run's reads are audited too, so the
    /// trail's share depends on how many calls the run made per project.
    pub without_audit_bytes_per_project: f64,
    /// Bytes of record JSON per project: its body, held once, in its change-log entry (the
    /// record's row and the create request's stored answer name that entry; requests stored
    /// before that kept a copy, counted here too). SQLite pages and indexes come on top.
    pub json_bytes_per_project: f64,
    /// Bytes of an audit event's columns, on average.
    pub bytes_per_audit_event: f64,
}

/// A short unmeasured run first (connections up, caches warm), then the measured one, with
/// the CPU time `server` used per call during it.
async fn phase<F, Fut>(options: &RpcOptions, server: &Server, call: F) -> anyhow::Result<Throughput>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let warm_up = Duration::from_secs(options.seconds)
        .div_f64(5.0)
        .min(Duration::from_secs(2));
    drive(options.concurrency, warm_up, call.clone()).await;
    let cpu_before = server.cpu_seconds()?;
    let mut t = drive(
        options.concurrency,
        Duration::from_secs(options.seconds),
        call,
    )
    .await;
    let cpu = server.cpu_seconds()? - cpu_before;
    t.server_cpu_us_per_call = (t.calls > 0).then(|| cpu * 1e6 / t.calls as f64);
    Ok(t)
}

/// Pins every thread of this process to `cpus` (a `taskset` list such as "0" or "0-1").
fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin the load generator")?;
    anyhow::ensure!(status.success(), "taskset -a -p -c {cpus} failed");
    Ok(())
}

pub async fn run(root: &Path, config: &Path, options: &RpcOptions) -> anyhow::Result<RpcFigures> {
    let request_bytes = super::create_request(0).encoded_len();

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server_cpu = if options.pin {
        anyhow::ensure!(cpus >= 2, "--pin needs at least two CPUs");
        pin_self(&format!("0-{}", cpus - 2))?;
        say!(
            "  pinned: servers on CPU {}, load generator on CPUs 0-{}",
            cpus - 1,
            cpus - 2
        );
        Some(cpus - 1)
    } else {
        None
    };
    let result = measure(root, config, options, request_bytes, server_cpu).await;
    if options.pin {
        pin_self(&format!("0-{}", cpus - 1))?;
    }
    result
}

async fn measure(
    root: &Path,
    config: &Path,
    options: &RpcOptions,
    request_bytes: usize,
    server_cpu: Option<usize>,
) -> anyhow::Result<RpcFigures> {
    say!("  baseline: bare tonic echo of {request_bytes} bytes, same mTLS");
    let baseline = Server::baseline(config, server_cpu)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (baseline_idle, _) = baseline.memory_kib()?;
    let clients: Arc<Vec<_>> = Arc::new(
        super::client_channels(root, "zone", baseline.addr, options.connections)?
            .into_iter()
            .map(echo::echo_service_client::EchoServiceClient::new)
            .collect(),
    );
    let payload = vec![0x5a_u8; request_bytes];
    let baseline_echo = phase(options, &baseline, move |w, _| {
        let mut client = clients[w % clients.len()].clone();
        let payload = payload.clone();
        async move { client.echo(echo::EchoRequest { payload }).await.map(|_| ()) }
    })
    .await?;
    let (_, baseline_peak) = baseline.memory_kib()?;
    baseline.stop()?;

    let gateway = Server::gateway(config, server_cpu)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (gateway_idle, _) = gateway.memory_kib()?;
    let clients: Arc<Vec<_>> = Arc::new(
        super::client_channels(root, "zone", gateway.addr, options.connections)?
            .into_iter()
            .map(pb::project_service_client::ProjectServiceClient::new)
            .collect(),
    );

    say!("  CreateProject (durable, audited, signed change log)");
    let c = clients.clone();
    let create_project = phase(options, &gateway, move |w, i| {
        let mut client = c[w % c.len()].clone();
        async move {
            let index = (w as u64) << 40 | i;
            client
                .create_project(super::create_request(index))
                .await
                .map(|_| ())
        }
    })
    .await?;

    let mut names = Vec::new();
    let mut lister = clients[0].clone();
    let first = lister
        .list_projects(pb::ListProjectsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .context("listing projects for the GetProject phase")?;
    names.extend(first.into_inner().projects.into_iter().map(|p| p.name));
    anyhow::ensure!(!names.is_empty(), "the CreateProject phase wrote nothing");
    let names = Arc::new(names);

    say!("  GetProject");
    let c = clients.clone();
    let n = names.clone();
    let get_project = phase(options, &gateway, move |w, i| {
        let mut client = c[w % c.len()].clone();
        let request = super::get_request(&n, w, i);
        async move { client.get_project(request).await.map(|_| ()) }
    })
    .await?;

    say!("  GetProject over HTTP/JSON");
    let channels = Arc::new(super::client_channels(
        root,
        "zone",
        gateway.addr,
        options.connections,
    )?);
    let get_project_http_json = phase(options, &gateway, move |w, i| {
        let channel = channels[w % channels.len()].clone();
        let name = super::get_request(&names, w, i).name;
        get_json(channel, name)
    })
    .await?;

    say!("  ListProjects (page of 50)");
    let c = clients.clone();
    let list_projects_page_50 = phase(options, &gateway, move |w, _| {
        list_page_of_50(c[w % c.len()].clone())
    })
    .await?;
    let (gateway_loaded, gateway_peak) = gateway.memory_kib()?;
    drop(clients);
    gateway.stop()?;

    Ok(RpcFigures {
        concurrency: options.concurrency,
        connections: options.connections,
        seconds_per_phase: options.seconds,
        pinned: server_cpu.is_some(),
        request_bytes,
        baseline_echo,
        create_project,
        get_project,
        get_project_http_json,
        list_projects_page_50,
        memory: Memory {
            gateway_idle_rss_kib: gateway_idle,
            gateway_loaded_rss_kib: gateway_loaded,
            gateway_peak_rss_kib: gateway_peak,
            baseline_idle_rss_kib: baseline_idle,
            baseline_peak_rss_kib: baseline_peak,
        },
        store: store_size(&root.join("zone/store.db"))?,
    })
}

/// `GET /v1/{name}` on an HTTP/2 connection to the gateway, the answer read as JSON: the
/// project named must be in it.
async fn get_json(
    mut channel: tonic::transport::Channel,
    name: String,
) -> Result<(), tonic::Status> {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};
    let failed = |e: &dyn std::fmt::Display| tonic::Status::internal(e.to_string());
    let request = http::Request::get(format!("/v1/{name}"))
        .body(tonic::body::Body::empty())
        .map_err(|e| failed(&e))?;
    let ready = channel.ready().await.map_err(|e| failed(&e))?;
    let response = ready.call(request).await.map_err(|e| failed(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(&e))?
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| failed(&e))?;
    if status != http::StatusCode::OK || json["project"]["name"] != name.as_str() {
        return Err(tonic::Status::internal(format!("HTTP {status}: {json}")));
    }
    Ok(())
}

/// Checkpoints the stopped gateway's database into its main file and relates its size to the
/// projects and audit events in it: as it is, compacted (a copy, `VACUUM INTO`), and compacted
/// without the audit trail (the copy with the table dropped; then deleted).
fn store_size(path: &Path) -> anyhow::Result<StoreSize> {
    let conn = rusqlite::Connection::open(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let count = |sql: &str| -> anyhow::Result<f64> {
        Ok(conn
            .query_row(sql, [], |r| r.get::<_, Option<f64>>(0))?
            .unwrap_or(0.0))
    };
    let projects = count("SELECT COUNT(*) FROM records WHERE kind = 'project'")?;
    let json = count("SELECT SUM(LENGTH(body)) FROM log")?
        + count("SELECT SUM(LENGTH(response)) FROM requests")?;
    let audit_events = count("SELECT COUNT(*) FROM audit")?;
    let audit_bytes = count(
        "SELECT SUM(LENGTH(caller) + LENGTH(method) + LENGTH(records) + LENGTH(code) \
         + LENGTH(request_id) + LENGTH(prev_hash) + LENGTH(hash) + 16) FROM audit",
    )?;
    let compacted = path.with_extension("compacted");
    conn.execute("VACUUM INTO ?1", [compacted.to_string_lossy()])?;
    drop(conn);
    let bytes = std::fs::metadata(path)?.len();
    let compacted_bytes = std::fs::metadata(&compacted)?.len();
    let copy = rusqlite::Connection::open(&compacted)?;
    copy.execute_batch("DROP TABLE audit; VACUUM;")?;
    drop(copy);
    let without_audit = std::fs::metadata(&compacted)?.len();
    std::fs::remove_file(&compacted)?;
    let per_project = |bytes: u64| bytes as f64 / projects.max(1.0);
    Ok(StoreSize {
        bytes,
        projects: projects as u64,
        audit_events: audit_events as u64,
        file_bytes_per_project: per_project(bytes),
        compacted_bytes_per_project: per_project(compacted_bytes),
        without_audit_bytes_per_project: per_project(without_audit),
        json_bytes_per_project: json / projects.max(1.0),
        bytes_per_audit_event: audit_bytes / audit_events.max(1.0),
    })
}

/// One ListProjects call for the first page of 50; a shorter page is a failure.
pub(super) async fn list_page_of_50(
    mut client: pb::project_service_client::ProjectServiceClient<tonic::transport::Channel>,
) -> Result<(), tonic::Status> {
    let page = client
        .list_projects(pb::ListProjectsRequest {
            page_size: 50,
            ..Default::default()
        })
        .await?
        .into_inner();
    if page.projects.len() == 50 {
        Ok(())
    } else {
        Err(tonic::Status::internal(format!(
            "page of {}",
            page.projects.len()
        )))
    }
}
