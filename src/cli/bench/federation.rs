//! `bench federation --parties N`: what a full mesh of N gateways costs on this machine. Every
//! party is a child process (`serve`) on loopback pulling from every other, so its memory, CPU
//! time and sockets are read from its own /proc entry. Per size it measures:
//!
//! - start: from the first spawn until every one of the N·(N−1) pull streams is connected;
//! - idle: CPU per party over a quiet interval (heartbeats only), sockets and resident memory;
//! - lag: writes at the zone at a fixed rate, each seen by a Watch client at every other party;
//!   a write's lag to all others is its latest arrival minus its commit time (one clock);
//!   CPU of the whole federation per write (the fan-out cost);
//! - catch-up: the last party is stopped and its store deleted, the other N−1 write records,
//!   then it starts empty and pulls the whole history from every owner; records per second
//!   from its start until its cursor reaches every owner's head.
//!
//! The newcomer is listed in every configuration from the start: joining a running federation
//! without restarts is not measured here.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::child::Server;
use super::load::percentile_ms;
use super::{Setup, client_channel, create_request};
use crate::cli::default_federation;
use crate::domain::{Federation, PartyInfo, now_micros};
use crate::wire::{micros_of, pb};

#[derive(Debug, Clone)]
pub struct FederationOptions {
    /// Seconds of quiet over which idle CPU is measured.
    pub idle_seconds: u64,
    /// Writes at the zone in the lag run, and their rate per second.
    pub writes: usize,
    pub rate: u32,
    /// Records written across the other owners before the newcomer starts.
    pub catch_up: usize,
}

#[derive(Debug, Serialize)]
pub struct FederationFigures {
    pub parties: usize,
    /// Pull streams in the mesh: N·(N−1).
    pub streams: usize,
    pub start_seconds: f64,
    pub idle: Idle,
    pub lag: MeshLag,
    pub catch_up: Newcomer,
}

#[derive(Debug, Serialize)]
pub struct Idle {
    pub seconds: u64,
    /// CPU time per party over the interval, as a percentage of one core.
    #[serde(skip)]
    pub cpu_percent: Vec<f64>,
    pub cpu_percent_mean: f64,
    pub cpu_percent_max: f64,
    /// All parties together, percentage of one core.
    pub cpu_percent_total: f64,
    pub sockets_mean: f64,
    pub sockets_max: usize,
    pub rss_mib_mean: f64,
    pub rss_mib_max: f64,
    pub rss_mib_total: f64,
}

#[derive(Debug, Serialize)]
pub struct MeshLag {
    pub writes: usize,
    pub failed: usize,
    pub offered_per_second: u32,
    /// Writes seen at every other party.
    pub seen_everywhere: usize,
    /// Lag of a write to the last party it reached.
    pub to_all_p50_ms: f64,
    pub to_all_p99_ms: f64,
    pub to_all_max_ms: f64,
    /// CPU time of all gateways during the run above their idle use, per write.
    pub federation_cpu_ms_per_write: f64,
    /// The owner's share: serving the write and sending it to every puller.
    pub owner_cpu_ms_per_write: f64,
    /// One receiving party's share (mean): applying the change and its Watch client.
    pub receiver_cpu_ms_per_write: f64,
}

#[derive(Debug, Serialize)]
pub struct Newcomer {
    pub records: usize,
    pub owners: usize,
    /// Changes the newcomer applied (records and catalog entries of every owner).
    pub applied: u64,
    pub seconds: f64,
    pub changes_per_second: f64,
}

/// Gateways started as child processes; killed when dropped, before their folder goes.
struct Mesh {
    servers: Vec<Option<Server>>,
    setup: Setup,
    ids: Vec<String>,
    configs: Vec<PathBuf>,
    grpc: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
}

/// The shipped four, then `bench-05`… up to `n`, in party order.
fn federation_of(n: usize) -> anyhow::Result<Federation> {
    let shipped = default_federation();
    let mut parties: Vec<PartyInfo> = shipped.parties().iter().take(n).cloned().collect();
    let provinces = ["Shanghai", "Jiangsu", "Zhejiang", "Anhui"];
    for i in parties.len()..n {
        parties.push(PartyInfo {
            id: format!("bench-{:02}", i + 1),
            display_name: format!("bench party {}", i + 1),
            province: provinces[i % provinces.len()].into(),
            division_code: String::new(),
            suspended: false,
        });
    }
    Ok(Federation::new(parties)?)
}

/// `n` free loopback ports, all held while they are chosen so none repeats.
fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(held
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?)
}

impl Mesh {
    fn new(n: usize) -> anyhow::Result<Mesh> {
        anyhow::ensure!(n >= 2, "a federation needs at least two parties");
        let federation = federation_of(n)?;
        let ids: Vec<String> = federation.parties().iter().map(|p| p.id.clone()).collect();
        let setup = Setup::with_federation(federation, &ids)?;
        let ports = free_ports(2 * n)?;
        let (grpc, admin) = (ports[..n].to_vec(), ports[n..].to_vec());
        let mut configs = Vec::with_capacity(n);
        for (i, id) in ids.iter().enumerate() {
            let peers: Vec<(&str, SocketAddr)> = ids
                .iter()
                .zip(&grpc)
                .filter(|(p, _)| *p != id)
                .map(|(p, a)| (p.as_str(), *a))
                .collect();
            configs.push(setup.config_with_admin(
                id,
                &grpc[i].to_string(),
                &admin[i].to_string(),
                &peers,
                "",
            )?);
        }
        Ok(Mesh {
            setup,
            servers: (0..n).map(|_| None).collect(),
            ids,
            configs,
            grpc,
            admin,
        })
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        self.servers[i] = Some(
            Server::gateway(&self.configs[i], None)
                .with_context(|| format!("starting {}", self.ids[i]))?,
        );
        Ok(())
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Server)> {
        self.servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// CPU seconds used so far by every running party.
    fn cpu_seconds(&self) -> anyhow::Result<Vec<f64>> {
        self.running().map(|(_, s)| s.cpu_seconds()).collect()
    }

    /// Waits until every running party has an open stream from every other running party.
    async fn connected(&self, within: Duration) -> anyhow::Result<()> {
        self.until_streams(within, "pull streams not connected", |at| {
            u64::from(at("yrd_peer_connected") != 1.0)
        })
        .await
    }

    /// Waits until every running party has applied every running owner's head.
    async fn settled(&self, within: Duration) -> anyhow::Result<()> {
        self.until_streams(within, "changes not yet applied", |at| {
            (at("yrd_peer_head") - at("yrd_peer_cursor")).max(0.0) as u64
        })
        .await
    }

    /// Polls every running party's metrics until `pending`, summed over the streams between
    /// running parties, is zero. `pending` reads a series of the receiving party for the
    /// owner at the other end (0 when absent).
    async fn until_streams(
        &self,
        within: Duration,
        what: &str,
        pending: fn(&dyn Fn(&'static str) -> f64) -> u64,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let mut left = 0;
            for (i, _) in self.running() {
                let m = scrape(self.admin[i]).await?;
                for (j, _) in self.running().filter(|(j, _)| *j != i) {
                    let owner = self.ids[j].clone();
                    left += pending(&|name| m.get(&(name, owner.clone())).copied().unwrap_or(0.0));
                }
            }
            if left == 0 {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < within,
                "{left} {what} after {} s",
                within.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The per-peer series of a gateway's /metrics, keyed by (name, peer); unlabelled series
/// under peer "".
async fn scrape(admin: SocketAddr) -> anyhow::Result<HashMap<(&'static str, String), f64>> {
    const WANTED: [&str; 3] = ["yrd_peer_connected", "yrd_peer_cursor", "yrd_peer_head"];
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the admin server at {admin}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    let mut out = HashMap::new();
    for line in body.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(name) = WANTED
            .iter()
            .find(|n| series.starts_with(&format!("{n}{{")))
        else {
            continue;
        };
        let peer = series
            .split_once("peer=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("", |(p, _)| p);
        if let Ok(v) = value.parse::<f64>() {
            out.insert((*name, peer.to_string()), v);
        }
    }
    Ok(out)
}

pub async fn run(n: usize, options: &FederationOptions) -> anyhow::Result<FederationFigures> {
    let mut mesh = Mesh::new(n)?;
    let started = Instant::now();
    for i in 0..n {
        mesh.start(i)?;
    }
    mesh.connected(Duration::from_secs(120)).await?;
    let start_seconds = started.elapsed().as_secs_f64();
    say!(
        "  {n} parties: {} pull streams connected {start_seconds:.1} s after the first start",
        n * (n - 1)
    );

    let idle = idle(&mesh, options.idle_seconds).await?;
    say!(
        "  idle {} s: CPU per party {:.2}% of a core (max {:.2}%), sockets {:.0}, RSS {:.1} MiB",
        idle.seconds,
        idle.cpu_percent_mean,
        idle.cpu_percent_max,
        idle.sockets_mean,
        idle.rss_mib_mean
    );

    let lag = lag(&mesh, options, &idle.cpu_percent).await?;
    say!(
        "  lag of {} writes at {}/s to all {} others: p50 {:.1} ms, p99 {:.1} ms; CPU per write: {:.2} ms all, {:.2} ms the owner, {:.2} ms a receiver",
        lag.writes,
        lag.offered_per_second,
        n - 1,
        lag.to_all_p50_ms,
        lag.to_all_p99_ms,
        lag.federation_cpu_ms_per_write,
        lag.owner_cpu_ms_per_write,
        lag.receiver_cpu_ms_per_write
    );

    let catch_up = newcomer(&mut mesh, options.catch_up).await?;
    say!(
        "  newcomer pulled {} changes from {} owners in {:.1} s: {:.0} changes/s",
        catch_up.applied,
        catch_up.owners,
        catch_up.seconds,
        catch_up.changes_per_second
    );
    for server in mesh.servers.iter_mut().filter_map(Option::take) {
        server.stop()?;
    }
    Ok(FederationFigures {
        parties: n,
        streams: n * (n - 1),
        start_seconds,
        idle,
        lag,
        catch_up,
    })
}

async fn idle(mesh: &Mesh, seconds: u64) -> anyhow::Result<Idle> {
    // Let the start-up work (catalog publication, first pulls) settle first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = mesh.cpu_seconds()?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = mesh.cpu_seconds()?;
    let cpu: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| 100.0 * (a - b) / seconds as f64)
        .collect();
    let mut sockets = Vec::new();
    let mut rss = Vec::new();
    for (_, server) in mesh.running() {
        sockets.push(server.sockets()?);
        rss.push(server.memory_kib()?.0 as f64 / 1024.0);
    }
    let n = cpu.len() as f64;
    Ok(Idle {
        seconds,
        cpu_percent_mean: cpu.iter().sum::<f64>() / n,
        cpu_percent_max: cpu.iter().cloned().fold(0.0, f64::max),
        cpu_percent_total: cpu.iter().sum(),
        cpu_percent: cpu.clone(),
        sockets_mean: sockets.iter().sum::<usize>() as f64 / n,
        sockets_max: sockets.iter().copied().max().unwrap_or(0),
        rss_mib_mean: rss.iter().sum::<f64>() / n,
        rss_mib_max: rss.iter().cloned().fold(0.0, f64::max),
        rss_mib_total: rss.iter().sum(),
    })
}

/// `idle_percent`: each party's idle CPU (percent of a core), subtracted from what it used
/// during the run.
async fn lag(
    mesh: &Mesh,
    options: &FederationOptions,
    idle_percent: &[f64],
) -> anyhow::Result<MeshLag> {
    let root = mesh.setup.root();
    let others = mesh.ids.len() - 1;
    // One Watch client at every party but the zone; each reports (seq, lag) of the zone's
    // projects it sees, until it has seen them all or goes quiet.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u64, u64)>();
    let mut watchers = tokio::task::JoinSet::new();
    for i in 1..mesh.ids.len() {
        let channel = client_channel(root, &mesh.ids[i], mesh.grpc[i])?;
        let mut stream = pb::watch_service_client::WatchServiceClient::new(channel)
            .watch(pb::WatchRequest::default())
            .await
            .with_context(|| format!("watching at {}", mesh.ids[i]))?
            .into_inner();
        let tx = tx.clone();
        watchers.spawn(async move {
            while let Ok(Ok(Some(event))) =
                tokio::time::timeout(Duration::from_secs(15), stream.message()).await
            {
                if event.owner == "zone"
                    && matches!(event.record, Some(pb::watch_response::Record::Project(_)))
                {
                    let lag = (now_micros() - micros_of(event.commit_time)).max(0) as u64;
                    if tx.send((i, event.seq, lag)).is_err() {
                        break;
                    }
                }
            }
        });
    }
    drop(tx);

    let cpu_before = mesh.cpu_seconds()?;
    let run_started = Instant::now();
    let zone = pb::project_service_client::ProjectServiceClient::new(client_channel(
        root,
        "zone",
        mesh.grpc[0],
    )?);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / options.rate.max(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..options.writes {
        ticker.tick().await;
        let mut client = zone.clone();
        writes.spawn(async move { client.create_project(create_request(i as u64)).await });
    }
    let mut failed = 0;
    while let Some(r) = writes.join_next().await {
        if !matches!(r, Ok(Ok(_))) {
            failed += 1;
        }
    }
    let expected = options.writes - failed;
    // Latest arrival per write (by the zone's sequence number) and how many parties saw it.
    let mut per_write: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while per_write.values().filter(|(_, k)| *k == others).count() < expected {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some((_, seq, lag))) => {
                let entry = per_write.entry(seq).or_insert((0, 0));
                entry.0 = entry.0.max(lag);
                entry.1 += 1;
            }
            _ => break,
        }
    }
    let cpu_after = mesh.cpu_seconds()?;
    let run_seconds = run_started.elapsed().as_secs_f64();
    let used: Vec<f64> = cpu_after
        .iter()
        .zip(&cpu_before)
        .zip(idle_percent)
        .map(|((a, b), idle)| {
            let busy = (a - b - idle / 100.0 * run_seconds).max(0.0);
            1000.0 * busy / expected.max(1) as f64
        })
        .collect();
    watchers.abort_all();
    let mut to_all: Vec<u64> = per_write
        .values()
        .filter(|(_, k)| *k == others)
        .map(|(lag, _)| *lag)
        .collect();
    to_all.sort_unstable();
    Ok(MeshLag {
        writes: options.writes,
        failed,
        offered_per_second: options.rate,
        seen_everywhere: to_all.len(),
        to_all_p50_ms: percentile_ms(&to_all, 0.50),
        to_all_p99_ms: percentile_ms(&to_all, 0.99),
        to_all_max_ms: percentile_ms(&to_all, 1.0),
        federation_cpu_ms_per_write: used.iter().sum(),
        owner_cpu_ms_per_write: used[0],
        receiver_cpu_ms_per_write: used[1..].iter().sum::<f64>() / others as f64,
    })
}

/// Stops the last party and deletes its store, writes `records` spread over the other owners,
/// waits until they have replicated among themselves, then starts the last party empty and
/// times its pulling of everything.
async fn newcomer(mesh: &mut Mesh, records: usize) -> anyhow::Result<Newcomer> {
    let last = mesh.ids.len() - 1;
    let id = mesh.ids[last].clone();
    if let Some(server) = mesh.servers[last].take() {
        server.stop()?;
    }
    std::fs::remove_dir_all(mesh.setup.root().join(&id))
        .with_context(|| format!("deleting {id}'s store"))?;

    let owners = last;
    let mut writers = tokio::task::JoinSet::new();
    for o in 0..owners {
        let channel = client_channel(mesh.setup.root(), &mesh.ids[o], mesh.grpc[o])?;
        let client = pb::project_service_client::ProjectServiceClient::new(channel);
        let share: Vec<usize> = (o..records).step_by(owners).collect();
        // Four writes in flight per owner.
        for lane in 0..4 {
            let mut client = client.clone();
            let mine: Vec<usize> = share.iter().copied().skip(lane).step_by(4).collect();
            writers.spawn(async move {
                for i in mine {
                    client
                        .create_project(create_request((1 << 32) + i as u64))
                        .await
                        .context("writing catch-up records")?;
                }
                anyhow::Ok(())
            });
        }
    }
    while let Some(r) = writers.join_next().await {
        r??;
    }
    mesh.settled(Duration::from_secs(300)).await?;

    let started = Instant::now();
    mesh.start(last)?;
    let admin = mesh.admin[last];
    let applied = loop {
        let m = scrape(admin).await?;
        let mut done = true;
        let mut applied = 0;
        for owner in &mesh.ids[..owners] {
            let at = |name| m.get(&(name, owner.clone())).copied().unwrap_or(0.0);
            let (connected, cursor, head) = (
                at("yrd_peer_connected"),
                at("yrd_peer_cursor"),
                at("yrd_peer_head"),
            );
            applied += cursor as u64;
            // A head of 0 means the owner has not answered yet (every owner has written).
            done &= connected == 1.0 && head > 0.0 && cursor >= head;
        }
        if done {
            break applied;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(900),
            "the newcomer did not catch up within 15 minutes ({applied} changes applied)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(Newcomer {
        records,
        owners,
        applied,
        seconds,
        changes_per_second: applied as f64 / seconds,
    })
}

/// The Markdown table of several runs, one row per federation size.
pub fn markdown(runs: &[FederationFigures], options: &FederationOptions) -> String {
    use std::fmt::Write as _;
    let mut md = format!(
        "Idle over {} s; lag of {} writes at the zone at {}/s, seen by a Watch client at every \
         other party; catch-up of the last party from an empty store after {} records were \
         written across the others.\n\n",
        options.idle_seconds, options.writes, options.rate, options.catch_up
    );
    md.push_str(
        "| parties | pull streams | connected after | idle CPU per party | idle CPU, all | \
         sockets per party | RSS per party (max) | RSS, all | lag to all p50 / p99 | \
         CPU per write above idle: all / owner / a receiver | newcomer catch-up |\n",
    );
    md.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} s | {:.2}% | {:.1}% | {:.0} | {:.1} MiB ({:.1}) | {:.0} MiB | \
             {:.1} / {:.1} ms | {:.1} / {:.2} / {:.2} ms | {} changes in {:.1} s ({:.0}/s) |",
            r.parties,
            r.streams,
            r.start_seconds,
            r.idle.cpu_percent_mean,
            r.idle.cpu_percent_total,
            r.idle.sockets_mean,
            r.idle.rss_mib_mean,
            r.idle.rss_mib_max,
            r.idle.rss_mib_total,
            r.lag.to_all_p50_ms,
            r.lag.to_all_p99_ms,
            r.lag.federation_cpu_ms_per_write,
            r.lag.owner_cpu_ms_per_write,
            r.lag.receiver_cpu_ms_per_write,
            r.catch_up.applied,
            r.catch_up.seconds,
            r.catch_up.changes_per_second,
        );
    }
    md
}
