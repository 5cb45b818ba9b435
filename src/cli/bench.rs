//! `yrd-gateway bench`: performance figures printed (and written as JSON and Markdown) by a
//! command, never asserted by tests. Everything runs on this machine over real mutual TLS with
//! real SQLite files in a temporary folder; `BENCHMARKS.md` records what was measured.
//!
//! `bench suite` runs it all: throughput of a bare-tonic baseline and of the gateway's
//! CreateProject, GetProject and ListProjects under one load generator ([`rpc`]); replication
//! lag and catch-up between two gateways ([`replication`]); resident memory and store size.

mod at_rest;
mod baseline;
mod child;
mod codec;
mod federation;
mod load;
mod replication;
mod rpc;
mod suite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::cli::default_federation;
use crate::config::{Config, ConfigTemplate, DEFAULT_TRUST_DOMAIN, LogFormat};
use crate::domain::Federation;
use crate::exchange::inbound::PeerStatuses;
use crate::gateway::Gateway;
use crate::records::{Investor, Project, Records, Stage};
use crate::wire::pb;
use load::Throughput;
use replication::{ReplicationFigures, ReplicationOptions};
use rpc::{RpcFigures, RpcOptions};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Everything: baseline vs gateway throughput, memory, store size, replication lag and
    /// catch-up. Prints a table and writes results.json and results.md to --out.
    Suite {
        /// Calls in flight during each throughput phase.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Connections the calls are spread over (the same for baseline and gateway).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Seconds per throughput phase (after a short warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Writes per second offered at the owner during the lag run.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Length of the lag run in seconds.
        #[arg(long, default_value_t = 10)]
        lag_seconds: u64,
        /// Records written while the peer is offline, for the catch-up run.
        #[arg(long, default_value_t = 100_000)]
        catch_up: usize,
        /// Folder for results.json and results.md.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Throughput phases with the servers on the last CPU and the load generator on the
        /// others (a second view; needs `taskset`, util-linux).
        #[arg(long)]
        pin: bool,
        /// Crypto profile to measure, intl or gm; without it both, one after the other, and
        /// side by side.
        #[arg(long)]
        profile: Option<crate::crypto::Profile>,
    },
    /// Replication lag at a fixed write rate, and catch-up speed after downtime (part of suite).
    Replication {
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 100_000)]
        catch_up: usize,
    },
    /// CreateProject and GetProject throughput of one gateway with and without the audit
    /// trail, same load (the audit trail cannot be turned off in `serve`).
    AuditCost {
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// CreateProject and GetProject throughput of one gateway on SQLite and on PostgreSQL,
    /// same load. The PostgreSQL run uses a new database created on the server named by
    /// --postgres (the role needs CREATEDB) and dropped afterwards.
    Stores {
        /// Connection string of the PostgreSQL server, e.g. "host=127.0.0.1 user=postgres
        /// dbname=postgres".
        #[arg(long)]
        postgres: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// What a full mesh of N gateways costs here: each party a child process pulling from
    /// every other over loopback mTLS. Per size: time until every stream is connected, idle
    /// CPU, sockets and memory per party, lag of a write to all others, CPU per write, and the
    /// catch-up of a party that starts empty. Prints a table; writes federation.json and
    /// federation.md to --out.
    Federation {
        /// Federation sizes, run one after the other (e.g. 4,10,25,50).
        #[arg(long, value_delimiter = ',', default_value = "4")]
        parties: Vec<usize>,
        /// Seconds of quiet over which idle CPU is measured.
        #[arg(long, default_value_t = 20)]
        idle_seconds: u64,
        /// Writes at the zone in the lag run.
        #[arg(long, default_value_t = 200)]
        writes: usize,
        /// Writes per second in the lag run.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// Records written across the other parties before the newcomer starts.
        #[arg(long, default_value_t = 2000)]
        catch_up: usize,
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// What turning stored bodies into answers costs per record, step by step, in this
    /// process (one thread, no I/O): JSON decode, conversion, protobuf encoding, and what a
    /// store of protobuf bodies would pay instead.
    Codec {
        /// Stored versions per round.
        #[arg(long, default_value_t = 10_000)]
        records: usize,
        /// Rounds after one of warm-up; each step's fastest round is printed.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// The suite's baseline server (bare tonic echo, the gateway's TLS); started by `suite`.
    #[command(hide = true)]
    BaselineServer {
        #[arg(long)]
        config: PathBuf,
    },
}

/// A gateway served in this process.
struct Running {
    records: Records,
    store: std::sync::Arc<dyn crate::store::Store>,
    peers: PeerStatuses,
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config: &Path, listener: TcpListener) -> anyhow::Result<Running> {
    start_gateway(
        Gateway::open(Config::load(config, &HashMap::new())?).await?,
        listener,
    )
}

fn start_gateway(gateway: Gateway, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let records = gateway.records().clone();
    let store = gateway.store().clone();
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
        store,
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

/// A temporary federation folder: dev PKI for `parties` and a config per party.
struct Setup {
    dir: TempDir,
    /// Store in this PostgreSQL database instead of SQLite files.
    postgres_url: Option<String>,
    /// The `[[parties]]` every config lists: the shipped four unless set.
    federation: Federation,
    /// The crypto profile of the certificates and configs.
    profile: crate::crypto::Profile,
    /// Seal records at rest (`[keys]`).
    keys: bool,
}

impl Setup {
    fn new(parties: &[&str]) -> anyhow::Result<Setup> {
        Self::new_in(parties, crate::crypto::Profile::Intl)
    }

    /// [`Setup::new`] in `profile` (SM2 certificates and RFC 8998 TLS in `gm`).
    fn new_in(parties: &[&str], profile: crate::crypto::Profile) -> anyhow::Result<Setup> {
        let ids: Vec<String> = parties.iter().map(|p| p.to_string()).collect();
        let mut setup = Self::with_federation(default_federation(), &[])?;
        crate::identity::pki::init_dev_pki(
            &setup.root().join("certs"),
            DEFAULT_TRUST_DOMAIN,
            &ids,
            profile,
        )?;
        setup.profile = profile;
        Ok(setup)
    }

    /// A folder for `federation`, with intl certificates for the members named in `ids`.
    fn with_federation(federation: Federation, ids: &[String]) -> anyhow::Result<Setup> {
        let dir = tempfile_dir()?;
        if !ids.is_empty() {
            crate::identity::pki::init_dev_pki(
                &dir.path().join("certs"),
                DEFAULT_TRUST_DOMAIN,
                ids,
                crate::crypto::Profile::Intl,
            )?;
        }
        Ok(Setup {
            dir,
            postgres_url: None,
            federation,
            profile: crate::crypto::Profile::Intl,
            keys: true,
        })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<party>.toml` listening on `listen`, pulling from `peers`. The per-caller rate
    /// limit is off: the load generator is one identity and the limit would shape the figure.
    fn config(
        &self,
        party: &str,
        listen: &str,
        peers: &[(&str, std::net::SocketAddr)],
        extra: &str,
    ) -> anyhow::Result<PathBuf> {
        self.config_with_admin(party, listen, "127.0.0.1:0", peers, extra)
    }

    /// [`Setup::config`] with the admin server on `admin`.
    fn config_with_admin(
        &self,
        party: &str,
        listen: &str,
        admin: &str,
        peers: &[(&str, std::net::SocketAddr)],
        extra: &str,
    ) -> anyhow::Result<PathBuf> {
        let text = ConfigTemplate {
            party: party.into(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            listen_grpc: listen.into(),
            listen_admin: admin.into(),
            certs_dir: "certs".into(),
            crl: None,
            store_path: format!("{party}/store.db"),
            postgres_url: self.postgres_url.clone(),
            log_format: LogFormat::Json,
            federation: self.federation.clone(),
            peers: peers
                .iter()
                .map(|(p, a)| (p.to_string(), a.to_string()))
                .collect(),
            default_catalog: true,
            profile: self.profile,
            keys: self.keys,
        };
        text.make_keys(self.root())?;
        let text = text.render();
        let path = self.root().join(format!("{party}.toml"));
        std::fs::write(
            &path,
            format!("{text}\n[limits]\ncalls_per_second_per_caller = 0\n{extra}"),
        )?;
        Ok(path)
    }
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

fn create_request(i: u64) -> pb::CreateProjectRequest {
    pb::CreateProjectRequest {
        project: Some(pb::Project {
            display_name: format!("bench project {i}"),
            investor: Some(pb::Investor {
                name: "基准测试有限公司".into(),
                credit_code: "91330522MA2B3C4D57".into(),
            }),
            industry: pb::Industry::NewEnergyVehicles as i32,
            industry_code: "C3612".into(),
            total_investment_yuan: 100_000_000,
            land_area_mu: "50.5".into(),
            platform: "南华山".into(),
            contact: Some(pb::Contact {
                name: "张三".into(),
                phone: "+86 138-0000-0000".into(),
            }),
            service_officer: "李四".into(),
            ..Default::default()
        }),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

/// `n` channels (one connection each) to the gateway or baseline at `addr`, with `party`'s
/// demo client certificate from the setup's PKI under `root`.
fn client_channels(
    root: &Path,
    party: &str,
    addr: std::net::SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    let certs = root.join("certs");
    let tls = crate::identity::tls::client_config_for(
        &certs.join("ca.crt"),
        &certs.join(party).join("client.crt"),
        &certs.join(party).join("client.key"),
    )?;
    (0..n)
        .map(|_| {
            Ok(crate::identity::tls::channel(
                &addr.to_string(),
                "localhost",
                tls.clone(),
            )?)
        })
        .collect()
}

/// One channel to `addr` as `party`'s demo client.
fn client_channel(
    root: &Path,
    party: &str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tonic::transport::Channel> {
    client_channels(root, party, addr, 1)?
        .pop()
        .context("no channel opened")
}

/// The GetProject that worker `worker` sends as its `i`-th call: names spread over workers.
fn get_request(names: &[String], worker: usize, i: u64) -> pb::GetProjectRequest {
    pb::GetProjectRequest {
        name: names[(worker * 7919 + i as usize) % names.len()].clone(),
    }
}

/// Runs a bench command and prints its figures.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Suite {
            concurrency,
            connections,
            seconds,
            rate,
            lag_seconds,
            catch_up,
            out,
            pin,
            profile,
        } => {
            let rpc = RpcOptions {
                concurrency,
                connections,
                seconds,
                pin,
            };
            let replication = ReplicationOptions {
                rate,
                seconds: lag_seconds,
                catch_up,
            };
            let profiles = match profile {
                Some(one) => vec![one],
                None => crate::crypto::Profile::ALL.to_vec(),
            };
            suite::suite(&rpc, &replication, &profiles, &out).await
        }
        BenchCommand::Replication {
            rate,
            seconds,
            catch_up,
        } => {
            let figures = replication_run(
                &ReplicationOptions {
                    rate,
                    seconds,
                    catch_up,
                },
                crate::crypto::Profile::Intl,
            )
            .await?;
            say!("{}", serde_json::to_string_pretty(&figures)?);
            Ok(())
        }
        BenchCommand::AuditCost {
            concurrency,
            seconds,
        } => {
            say!(
                "audit cost: {concurrency} concurrent calls, {seconds} s per phase, one in-process gateway over mTLS"
            );
            let off = create_then_get("audit off", concurrency, seconds, false, None).await?;
            let on = create_then_get("audit on", concurrency, seconds, true, None).await?;
            say!(
                "  audit on / audit off: CreateProject {:.2}, GetProject {:.2}",
                on.0 / off.0,
                on.1 / off.1
            );
            Ok(())
        }
        BenchCommand::Stores {
            postgres,
            concurrency,
            seconds,
        } => {
            say!(
                "stores: {concurrency} concurrent calls, {seconds} s per phase, one in-process gateway over mTLS"
            );
            let sqlite = create_then_get("sqlite", concurrency, seconds, true, None).await?;
            let url = crate::store::postgres::create_database(&postgres, "yrd_bench").await?;
            let pg = create_then_get("postgres", concurrency, seconds, true, Some(&url)).await;
            crate::store::postgres::drop_database(&postgres, &url).await?;
            let pg = pg?;
            say!(
                "  postgres / sqlite: CreateProject {:.2}, GetProject {:.2}",
                pg.0 / sqlite.0,
                pg.1 / sqlite.1
            );
            Ok(())
        }
        BenchCommand::Federation {
            parties,
            idle_seconds,
            writes,
            rate,
            catch_up,
            out,
        } => {
            let options = federation::FederationOptions {
                idle_seconds,
                writes,
                rate,
                catch_up,
            };
            let mut runs = Vec::new();
            for n in parties {
                say!("federation of {n} parties:");
                runs.push(federation::run(n, &options).await?);
            }
            let markdown = federation::markdown(&runs, &options);
            say!("\n{markdown}");
            std::fs::create_dir_all(&out)?;
            std::fs::write(
                out.join("federation.json"),
                serde_json::to_string_pretty(&runs)?,
            )?;
            std::fs::write(out.join("federation.md"), &markdown)?;
            say!(
                "written: {0}/federation.json, {0}/federation.md",
                out.display()
            );
            Ok(())
        }
        BenchCommand::Codec { records, rounds } => {
            say!("{}", codec::table(&codec::run(records, rounds)?));
            Ok(())
        }
        BenchCommand::BaselineServer { config } => baseline::serve(&config).await,
    }
}

/// The throughput phases at one gateway of `profile`, its records sealed at rest (`keys`) or
/// in clear.
async fn rpc_run(
    options: &RpcOptions,
    profile: crate::crypto::Profile,
    keys: bool,
) -> anyhow::Result<RpcFigures> {
    let mut setup = Setup::new_in(&["zone"], profile)?;
    setup.keys = keys;
    let config = setup.config("zone", "127.0.0.1:0", &[], "")?;
    rpc::run(setup.root(), &config, options).await
}

/// A gateway of `profile` in clear and one sealed at rest, measured in turns.
async fn at_rest_run(
    options: &RpcOptions,
    profile: crate::crypto::Profile,
) -> anyhow::Result<at_rest::AtRestFigures> {
    let mut clear = Setup::new_in(&["zone"], profile)?;
    clear.keys = false;
    let sealed = Setup::new_in(&["zone"], profile)?;
    let clear_config = clear.config("zone", "127.0.0.1:0", &[], "")?;
    let sealed_config = sealed.config("zone", "127.0.0.1:0", &[], "")?;
    at_rest::run(
        (clear.root(), &clear_config),
        (sealed.root(), &sealed_config),
        options,
    )
    .await
}

async fn replication_run(
    options: &ReplicationOptions,
    profile: crate::crypto::Profile,
) -> anyhow::Result<ReplicationFigures> {
    let setup = Setup::new_in(&["zone", "guangde"], profile)?;
    let zone = TcpListener::bind("127.0.0.1:0").await?;
    let guangde = TcpListener::bind("127.0.0.1:0").await?;
    let (zone_addr, guangde_addr) = (zone.local_addr()?, guangde.local_addr()?);
    let configs = (
        setup.config(
            "zone",
            &zone_addr.to_string(),
            &[("guangde", guangde_addr)],
            "",
        )?,
        setup.config(
            "guangde",
            &guangde_addr.to_string(),
            &[("zone", zone_addr)],
            "",
        )?,
    );
    replication::run(setup.root(), configs, (zone, guangde), options).await
}

/// CreateProject, then GetProject, at one in-process gateway, with or without the audit trail
/// (which every call writes durably before it is answered), on SQLite or on the PostgreSQL
/// database `postgres`. Prints the figures under `label`; returns the two rates.
async fn create_then_get(
    label: &str,
    concurrency: usize,
    seconds: u64,
    audit: bool,
    postgres: Option<&str>,
) -> anyhow::Result<(f64, f64)> {
    {
        let mut setup = Setup::new(&["zone"])?;
        setup.postgres_url = postgres.map(str::to_string);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let config = setup.config("zone", &listener.local_addr()?.to_string(), &[], "")?;
        let mut gateway = Gateway::open(Config::load(&config, &HashMap::new())?).await?;
        if !audit {
            gateway = gateway.without_audit_for_benchmark();
        }
        let running = start_gateway(gateway, listener)?;
        let channel = client_channel(setup.root(), "zone", running.addr)?;
        let client = pb::project_service_client::ProjectServiceClient::new(channel);
        let c = client.clone();
        let create = load::drive(concurrency, Duration::from_secs(seconds), move |w, i| {
            let mut client = c.clone();
            async move {
                client
                    .create_project(create_request((w as u64) << 40 | i))
                    .await
                    .map(|_| ())
            }
        })
        .await;
        let names: Vec<String> = running
            .store
            .list(crate::store::ListQuery::of(
                crate::domain::RecordKind::Project,
                500,
            ))
            .await?
            .iter()
            .map(|r| format!("parties/zone/projects/{}", r.id))
            .collect();
        anyhow::ensure!(!names.is_empty(), "the CreateProject phase wrote nothing");
        let names = std::sync::Arc::new(names);
        let get = load::drive(concurrency, Duration::from_secs(seconds), move |w, i| {
            let mut client = client.clone();
            let request = get_request(&names, w, i);
            async move { client.get_project(request).await.map(|_| ()) }
        })
        .await;
        running.shutdown().await;
        for (what, t) in [("CreateProject", &create), ("GetProject", &get)] {
            say!(
                "  {label:<10} {what:<14} {:>8.0} calls/s   p50 {:.2} ms   p99 {:.2} ms   failed {}",
                t.requests_per_second,
                t.p50_ms,
                t.p99_ms,
                t.failed
            );
        }
        Ok((create.requests_per_second, get.requests_per_second))
    }
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
