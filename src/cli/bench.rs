//! `yrd-gateway bench`: figures that matter, printed by a command rather than asserted by
//! tests. Everything runs on this machine over real mutual TLS with real SQLite files in a
//! temporary folder.
//!
//! `bench replication`: two gateways (zone → guangde). (1) Writes at a fixed rate at the zone
//! while a Watch client at guangde timestamps each arrival: lag = arrival − commit time at the
//! owner (same clock). (2) Catch-up: guangde offline while N records are written at the zone,
//! then started; records/s applied until its cursor reaches the zone's head.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::pb;
use crate::cli::default_federation;
use crate::config::{Config, ConfigTemplate, DEFAULT_TRUST_DOMAIN, LogFormat, default_share_rules};
use crate::exchange::inbound::PeerStatuses;
use crate::gateway::Gateway;
use crate::records::{Investor, Project, Records, Stage, Violations, WriteMeta, now_micros};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Replication lag at a fixed write rate, and catch-up speed after downtime.
    Replication {
        /// Writes per second offered at the owner during the lag run.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Length of the lag run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Records written while the peer is offline, for the catch-up run.
        #[arg(long, default_value_t = 20_000)]
        catch_up: usize,
    },
    /// CreateProject throughput of one gateway with and without the audit trail, same load.
    Writes {
        /// Concurrent calls in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds per configuration.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

struct Running {
    records: Records,
    peers: PeerStatuses,
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: &Path, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let gateway = Gateway::open(Config::load(config, &HashMap::new())?)?;
    let records = gateway.records().clone();
    let peers = gateway.peer_status();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = gateway
            .serve(listener, None, async {
                let _ = rx.await;
            })
            .await
        {
            eprintln!("gateway failed: {e}");
        }
    });
    Ok(Running {
        records,
        peers,
        addr,
        stop,
        task,
    })
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn sample(i: usize) -> Project {
    Project {
        id: uuid::Uuid::nil(),
        owner: String::new(),
        display_name: format!("bench project {i}"),
        investor: Investor {
            name: "基准测试有限公司".into(),
            credit_code: "91330522MA2B3C4D57".into(),
        },
        industry: crate::records::Industry::NewEnergyVehicles,
        industry_code: "C3612".into(),
        total_investment_yuan: 100_000_000,
        land_area_mu: "50.5".into(),
        platform: "南华山".into(),
        stage: Stage::Lead,
        contact: crate::records::Contact {
            name: "张三".into(),
            phone: "+86 138-0000-0000".into(),
        },
        service_officer: "李四".into(),
        checklist: Vec::new(),
        labels: Default::default(),
        referred_from: None,
        revision: 0,
        create_time: 0,
        update_time: 0,
    }
}

fn create_request(i: usize) -> pb::CreateProjectRequest {
    pb::CreateProjectRequest {
        project: Some(pb::Project {
            display_name: format!("bench project {i}"),
            investor: Some(pb::Investor {
                name: "基准测试有限公司".into(),
                credit_code: "91330522MA2B3C4D57".into(),
            }),
            industry: pb::Industry::NewEnergyVehicles as i32,
            total_investment_yuan: 100_000_000,
            land_area_mu: "50.5".into(),
            contact: Some(pb::Contact {
                name: "张三".into(),
                phone: "+86 138-0000-0000".into(),
            }),
            ..Default::default()
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// Runs a bench command and prints its figures.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Replication {
            rate,
            seconds,
            catch_up,
        } => replication(rate, seconds, catch_up).await,
        BenchCommand::Writes {
            concurrency,
            seconds,
        } => writes(concurrency, seconds).await,
    }
}

/// Drives CreateProject at `concurrency` for `seconds` against a fresh single gateway.
async fn write_run(
    audit: bool,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let dir = tempfile_dir()?;
    let root = dir.path();
    let federation = default_federation();
    crate::identity::pki::init_dev_pki(
        &root.join("certs"),
        DEFAULT_TRUST_DOMAIN,
        &["zone".to_string()],
    )?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let text = ConfigTemplate {
        party: "zone".into(),
        trust_domain: DEFAULT_TRUST_DOMAIN.into(),
        listen_grpc: addr.to_string(),
        listen_admin: "127.0.0.1:0".into(),
        certs_dir: "certs".into(),
        crl: None,
        store_path: "zone/store.db".into(),
        log_format: LogFormat::Text,
        federation: federation.clone(),
        peers: vec![],
        share: default_share_rules(&federation, "zone"),
    }
    .render();
    let path = root.join("zone.toml");
    std::fs::write(
        &path,
        format!("{text}\n[limits]\ncalls_per_second_per_caller = 0\nmax_concurrent_calls = 4096\n"),
    )?;
    let mut gateway = Gateway::open(Config::load(&path, &HashMap::new())?)?;
    if !audit {
        gateway = gateway.without_audit_for_benchmark();
    }
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(gateway.serve(listener, None, async {
        let _ = rx.await;
    }));
    let certs = root.join("certs");
    let tls = crate::identity::tls::client_config(
        &certs.join("ca.crt"),
        &certs.join("zone/client.crt"),
        &certs.join("zone/client.key"),
    )?;
    let channel = crate::identity::tls::channel(&addr.to_string(), "localhost", tls)?;
    let client = pb::project_service_client::ProjectServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let mut client = client.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            let mut i = 0;
            while Instant::now() < deadline {
                let started = Instant::now();
                match client
                    .create_project(create_request(w * 1_000_000 + i))
                    .await
                {
                    Ok(_) => latencies.push(started.elapsed().as_micros() as i64),
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            (latencies, failed)
        });
    }
    let mut all = Vec::new();
    let mut failed = 0;
    while let Some(r) = workers.join_next().await {
        let (l, f) = r?;
        all.extend(l);
        failed += f;
    }
    all.sort_unstable();
    let _ = stop.send(());
    let _ = task.await;
    Ok((
        all.len() as f64 / seconds as f64,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        failed,
    ))
}

async fn writes(concurrency: usize, seconds: u64) -> anyhow::Result<()> {
    say!(
        "CreateProject (durable, signed change log), {concurrency} concurrent calls, {seconds} s each, one gateway over mTLS"
    );
    let mut rows = Vec::new();
    for audit in [false, true] {
        let (rps, p50, p99, failed) = write_run(audit, concurrency, seconds).await?;
        say!(
            "  audit {:<3}  {rps:>8.0} calls/s   p50 {p50:.2} ms   p99 {p99:.2} ms   failed {failed}",
            if audit { "on" } else { "off" }
        );
        rows.push(rps);
    }
    say!("  audit on / audit off: {:.2}", rows[1] / rows[0]);
    Ok(())
}

async fn replication(rate: u32, seconds: u64, catch_up: usize) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let root = dir.path();
    let federation = default_federation();
    crate::identity::pki::init_dev_pki(
        &root.join("certs"),
        DEFAULT_TRUST_DOMAIN,
        &["zone".to_string(), "guangde".to_string()],
    )?;
    let zone_listener = TcpListener::bind("127.0.0.1:0").await?;
    let guangde_listener = TcpListener::bind("127.0.0.1:0").await?;
    let zone_addr = zone_listener.local_addr()?;
    let guangde_addr = guangde_listener.local_addr()?;
    let write = |party: &str, listen: std::net::SocketAddr, peer: (&str, std::net::SocketAddr)| {
        let text = ConfigTemplate {
            party: party.into(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            listen_grpc: listen.to_string(),
            listen_admin: "127.0.0.1:0".into(),
            certs_dir: "certs".into(),
            crl: None,
            store_path: format!("{party}/store.db"),
            log_format: LogFormat::Text,
            federation: federation.clone(),
            peers: vec![(peer.0.to_string(), peer.1.to_string())],
            share: default_share_rules(&federation, party),
        }
        .render();
        // The load generator is one identity: the per-caller rate limit would shape the figure.
        let text = format!("{text}\n[limits]\ncalls_per_second_per_caller = 0\n");
        let path = root.join(format!("{party}.toml"));
        std::fs::write(&path, text).map(|_| path)
    };
    let zone_config = write("zone", zone_addr, ("guangde", guangde_addr))?;
    let guangde_config = write("guangde", guangde_addr, ("zone", zone_addr))?;
    let zone = start(&zone_config, zone_listener).await?;
    let guangde = start(&guangde_config, guangde_listener).await?;

    let certs = root.join("certs");
    let client_tls = |party: &str| {
        crate::identity::tls::client_config(
            &certs.join("ca.crt"),
            &certs.join(party).join("client.crt"),
            &certs.join(party).join("client.key"),
        )
    };
    let zone_channel =
        crate::identity::tls::channel(&zone.addr.to_string(), "localhost", client_tls("zone")?)?;
    let guangde_channel = crate::identity::tls::channel(
        &guangde.addr.to_string(),
        "localhost",
        client_tls("guangde")?,
    )?;

    // (1) Lag at a fixed offered rate.
    let mut watch = pb::watch_service_client::WatchServiceClient::new(guangde_channel)
        .watch(pb::WatchRequest::default())
        .await?
        .into_inner();
    let total = (u64::from(rate) * seconds) as usize;
    let receiver = tokio::spawn(async move {
        let mut lags = Vec::with_capacity(total);
        while lags.len() < total {
            match tokio::time::timeout(Duration::from_secs(30), watch.message()).await {
                Ok(Ok(Some(event))) => {
                    if let Some(pb::watch_response::Record::Project(p)) = event.record {
                        let commit = p
                            .create_time
                            .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000);
                        lags.push(now_micros() - commit.unwrap_or(0));
                    }
                }
                _ => break,
            }
        }
        lags
    });
    say!(
        "replication lag: {rate} writes/s for {seconds} s at the zone, observed by a Watch client at guangde"
    );
    let projects = pb::project_service_client::ProjectServiceClient::new(zone_channel);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let mut client = projects.clone();
        writes.spawn(async move { client.create_project(create_request(i)).await.map(|_| ()) });
    }
    let mut failed = 0;
    while let Some(r) = writes.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let offered_for = started.elapsed();
    let mut lags = receiver.await?;
    lags.sort_unstable();
    say!(
        "  offered {total} writes in {:.2} s ({:.0}/s achieved), {failed} failed; {} seen at guangde",
        offered_for.as_secs_f64(),
        total as f64 / offered_for.as_secs_f64(),
        lags.len()
    );
    say!(
        "  lag ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0)
    );

    // (2) Catch-up after downtime.
    let guangde_config_path = guangde_config.clone();
    guangde.shutdown().await;
    let write_started = Instant::now();
    for i in 0..catch_up {
        zone.records
            .create_project(
                sample(i),
                WriteMeta {
                    request_id: uuid::Uuid::now_v7().to_string(),
                    fingerprint: i.to_le_bytes().to_vec(),
                },
                Violations::new(),
            )
            .await
            .context("writing catch-up records")?;
    }
    let head = zone.records.store().last_seq("zone").await?;
    say!(
        "catch-up: {catch_up} records written at the zone while guangde was down ({:.0} writes/s, one durable commit each)",
        catch_up as f64 / write_started.elapsed().as_secs_f64()
    );
    let listener = TcpListener::bind(guangde_addr).await?;
    let started = Instant::now();
    let guangde = start(&guangde_config_path, listener).await?;
    let before = guangde.records.store().cursor("zone").await?;
    loop {
        let cursor = guangde
            .peers
            .lock()
            .map(|m| m.get("zone").map(|s| s.cursor).unwrap_or(0))
            .unwrap_or(0);
        if cursor >= head {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "catch-up did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let applied = head - before;
    say!(
        "  {applied} changes applied in {:.2} s: {:.0} records/s (from restart to cursor at the head)",
        took.as_secs_f64(),
        applied as f64 / took.as_secs_f64()
    );
    guangde.shutdown().await;
    zone.shutdown().await;
    Ok(())
}

/// A temporary folder removed when dropped.
fn tempfile_dir() -> anyhow::Result<TempDir> {
    let path = std::env::temp_dir().join(format!("yrd-bench-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&path)?;
    Ok(TempDir(path))
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
