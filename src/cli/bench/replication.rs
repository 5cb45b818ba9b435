//! Replication (parts 2 and 3 of the suite), two gateways in this process (zone → guangde):
//! lag at a fixed offered write rate, seen by a Watch client at guangde (lag = arrival − commit
//! time at the owner, one clock); then catch-up: guangde offline while N records are written at
//! the zone, then started; records/s applied from its start until its cursor reaches the head.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;

use super::load::percentile_ms;
use super::{Running, client_channel, start};
use crate::domain::now_micros;
use crate::records::{Violations, WriteMeta};
use crate::wire::{micros_of, pb};

#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    pub rate: u32,
    pub seconds: u64,
    pub catch_up: usize,
}

#[derive(Debug, Serialize)]
pub struct Lag {
    pub offered_per_second: u32,
    pub seconds: u64,
    pub achieved_writes_per_second: f64,
    pub writes: usize,
    pub failed: usize,
    pub seen_at_peer: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct CatchUp {
    pub records: usize,
    /// How fast the owner wrote them (64 concurrent writers, each write durable).
    pub owner_writes_per_second: f64,
    pub applied: u64,
    pub seconds: f64,
    pub records_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct ReplicationFigures {
    pub lag: Lag,
    pub catch_up: CatchUp,
}

/// Concurrent writers used to fill the owner for the catch-up run.
const FILL_WRITERS: usize = 64;

pub async fn run(
    root: &Path,
    configs: (PathBuf, PathBuf),
    listeners: (TcpListener, TcpListener),
    options: &ReplicationOptions,
) -> anyhow::Result<ReplicationFigures> {
    let (zone_config, guangde_config) = configs;
    let guangde_addr = listeners.1.local_addr()?;
    let zone = start(&zone_config, listeners.0).await?;
    let guangde = start(&guangde_config, listeners.1).await?;

    say!(
        "  lag: {} writes/s for {} s at the zone, observed by a Watch client at guangde",
        options.rate,
        options.seconds
    );
    let lag = lag(
        client_channel(root, "zone", zone.addr)?,
        client_channel(root, "guangde", guangde.addr)?,
        options,
    )
    .await?;
    guangde.shutdown().await;

    say!(
        "  catch-up: {} records written at the zone while guangde is down",
        options.catch_up
    );
    let catch_up = catch_up(&zone, &guangde_config, guangde_addr, options.catch_up).await?;
    zone.shutdown().await;
    Ok(ReplicationFigures { lag, catch_up })
}

async fn lag(
    zone: tonic::transport::Channel,
    guangde: tonic::transport::Channel,
    options: &ReplicationOptions,
) -> anyhow::Result<Lag> {
    let mut watch = pb::watch_service_client::WatchServiceClient::new(guangde)
        .watch(pb::WatchRequest::default())
        .await?
        .into_inner();
    let total = (u64::from(options.rate) * options.seconds) as usize;
    let receiver = tokio::spawn(async move {
        let mut lags = Vec::with_capacity(total);
        while lags.len() < total {
            match tokio::time::timeout(Duration::from_secs(30), watch.message()).await {
                Ok(Ok(Some(event))) => {
                    if let Some(pb::watch_response::Record::Project(p)) = event.record {
                        let commit = micros_of(p.create_time);
                        lags.push((now_micros() - commit).max(0) as u64);
                    }
                }
                _ => break,
            }
        }
        lags
    });
    let projects = pb::project_service_client::ProjectServiceClient::new(zone);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / options.rate.max(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let mut client = projects.clone();
        writes.spawn(async move {
            client
                .create_project(super::create_request(i as u64))
                .await
                .map(|_| ())
        });
    }
    let mut failed = 0;
    while let Some(r) = writes.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let offered_for = started.elapsed().as_secs_f64();
    let mut lags = receiver.await?;
    lags.sort_unstable();
    Ok(Lag {
        offered_per_second: options.rate,
        seconds: options.seconds,
        achieved_writes_per_second: total as f64 / offered_for,
        writes: total,
        failed,
        seen_at_peer: lags.len(),
        p50_ms: percentile_ms(&lags, 0.50),
        p99_ms: percentile_ms(&lags, 0.99),
        max_ms: percentile_ms(&lags, 1.0),
    })
}

async fn catch_up(
    zone: &Running,
    guangde_config: &Path,
    guangde_addr: std::net::SocketAddr,
    records: usize,
) -> anyhow::Result<CatchUp> {
    let write_started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..FILL_WRITERS {
        let service = zone.records.clone();
        writers.spawn(async move {
            for i in (w..records).step_by(FILL_WRITERS) {
                service
                    .create_project(
                        super::sample(i),
                        WriteMeta {
                            request_id: uuid::Uuid::now_v7().to_string(),
                            fingerprint: i.to_le_bytes().to_vec(),
                            audit: None,
                        },
                        Violations::new(),
                    )
                    .await
                    .context("writing catch-up records")?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r??;
    }
    let owner_writes_per_second = records as f64 / write_started.elapsed().as_secs_f64();
    let head = zone.store.last_seq("zone").await?;

    let listener = TcpListener::bind(guangde_addr).await?;
    let started = Instant::now();
    let guangde = start(guangde_config, listener).await?;
    let before = guangde.store.cursor("zone").await?;
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
            started.elapsed() < Duration::from_secs(900),
            "catch-up did not finish in 15 minutes (cursor {cursor} of {head})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    guangde.shutdown().await;
    let applied = head - before;
    Ok(CatchUp {
        records,
        owner_writes_per_second,
        applied,
        seconds,
        records_per_second: applied as f64 / seconds,
    })
}
