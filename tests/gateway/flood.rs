//! Connection floods before any call: 1,000 idle TCP connections (slowloris) and 1,000 stalled
//! TLS handshakes from one address. The gateway holds at most `max_handshakes_per_address` of
//! them, closes the rest at once (counted), closes the ones it holds when
//! `handshake_timeout_ms` passes, and serves a legitimate client from another address
//! meanwhile. The figures (latency of the legitimate call, this process's memory before,
//! during and after) are printed, not asserted (shared machines).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use yrd_gateway::wire::pb;

use crate::backup::metric;
use crate::common::*;

const FLOOD: usize = 1_000;
const PER_ADDRESS: u64 = 16;

/// Resident memory of this process (the gateway runs in it), KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `FLOOD` connections to `addr` from 127.0.0.2, each sending `first` (nothing, or the
/// start of a ClientHello) and then nothing more.
async fn flood(addr: SocketAddr, first: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        if !first.is_empty() {
            // A connection closed by the gateway may refuse the write; that is the point.
            let _ = stream.write_all(first).await;
        }
        held.push(stream);
    }
    held
}

/// How many of `held` the gateway has closed (a read returns end of file or an error).
async fn closed(held: &mut [TcpStream]) -> usize {
    let mut n = 0;
    for stream in held.iter_mut() {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => n += 1,
            _ => {}
        }
    }
    n
}

async fn flooded_gateway_serves_others(what: &str, first: &[u8]) {
    let options = Options {
        extra_toml: format!(
            "[limits]\nhandshake_timeout_ms = 3000\nmax_handshakes_per_address = {PER_ADDRESS}\n"
        ),
        ..Options::default()
    };
    let fed = TestFederation::start_with(&["zone"], options).await;
    let addr = fed.addr("zone");
    let admin = fed.gateways["zone"].admin;
    let before = rss_kib();

    let mut held = flood(addr, first).await;
    let shed = eventually(Duration::from_secs(10), "connections shed", || async {
        let n = metric(admin, "yrd_connections_shed_total").await;
        (n >= (FLOOD as u64 - PER_ADDRESS)).then_some(n)
    })
    .await;
    assert_eq!(
        shed,
        FLOOD as u64 - PER_ADDRESS,
        "{what}: all but {PER_ADDRESS} shed"
    );
    let during = rss_kib();

    // A legitimate client from 127.0.0.1 is served while the flood holds its places.
    let started = Instant::now();
    let me = tokio::time::timeout(
        Duration::from_secs(5),
        pb::directory_service_client::DirectoryServiceClient::new(fed.client("zone", "zone"))
            .who_am_i(pb::WhoAmIRequest {}),
    )
    .await
    .expect("served while flooded")
    .unwrap()
    .into_inner();
    let latency = started.elapsed();
    assert_eq!(me.party, "zone");

    // The places held are given back when the handshake timeout passes.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = closed(&mut held).await;
        if n == FLOOD {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n} of {FLOOD} closed after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
    let after = rss_kib();
    println!(
        "{what}: {FLOOD} connections from one address, {shed} closed at once, {PER_ADDRESS} held \
         until the 3 s handshake timeout; WhoAmI from another address answered in {:.1} ms; \
         test process memory {before} KiB before, {during} KiB during, {after} KiB after",
        latency.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_stop_others_being_served() {
    flooded_gateway_serves_others("idle TCP (slowloris)", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_from_one_address_do_not_stop_others_being_served() {
    // A TLS record header announcing a 512-byte handshake message, then silence.
    flooded_gateway_serves_others("stalled TLS handshakes", &[0x16, 0x03, 0x01, 0x02, 0x00]).await;
}
