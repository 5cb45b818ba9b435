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

/// An HTTP/2 connection to the zone as its demo client, spoken frame by frame.
async fn raw_h2(
    fed: &TestFederation,
    builder: h2::client::Builder,
) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(fed.addr("zone")).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(fed.pki.client_config("zone", "client"))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (client, connection) = builder.handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn grpc_request(method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A served call from another connection, and its latency.
async fn others_served(fed: &TestFederation) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        pb::directory_service_client::DirectoryServiceClient::new(fed.client("zone", "zone"))
            .who_am_i(pb::WhoAmIRequest {}),
    )
    .await
    .expect("served meanwhile")
    .unwrap();
    started.elapsed()
}

/// Rapid reset (CVE-2023-44487): streams opened and cancelled at once, as fast as the client
/// can. The connection is cut off (GOAWAY) long before 10,000; others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_streams_rapidly_is_cut_off_and_others_served() {
    let fed = TestFederation::start(&["zone"]).await;
    let before = rss_kib();
    let mut client = raw_h2(&fed, h2::client::Builder::new()).await;
    let mut opened = 0;
    let mut cut_off = None;
    for _ in 0..10_000 {
        let sent = async {
            client = client.clone().ready().await?;
            let (_response, mut body) = client.send_request(
                grpc_request("yrd.exchange.v1.DirectoryService/WhoAmI"),
                false,
            )?;
            body.send_reset(h2::Reason::CANCEL);
            Ok::<_, h2::Error>(())
        }
        .await;
        match sent {
            Ok(()) => opened += 1,
            Err(e) => {
                cut_off = Some(e);
                break;
            }
        }
    }
    let during = rss_kib();
    let latency = others_served(&fed).await;
    let error = cut_off.expect("the connection was cut off");
    println!(
        "rapid reset: cut off after {opened} streams ({error}); WhoAmI on another connection \
         answered in {:.1} ms; test process memory {before} KiB before, {during} KiB after",
        latency.as_secs_f64() * 1000.0
    );
    assert!(opened < 10_000);
}

/// A header list far over the limit (1 MiB in one header) is refused, the connection with it;
/// others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_is_refused_and_others_served() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut client = raw_h2(&fed, h2::client::Builder::new()).await;
    let mut request = grpc_request("yrd.exchange.v1.DirectoryService/WhoAmI");
    request
        .headers_mut()
        .insert("x-padding", "a".repeat(1 << 20).parse().unwrap());
    let outcome = async {
        client = client.clone().ready().await?;
        let (response, _body) = client.send_request(request, true)?;
        response.await
    }
    .await;
    match &outcome {
        Ok(response) => assert_ne!(response.status(), 200, "{response:?}"),
        Err(e) => println!("oversized header list: {e}"),
    }
    others_served(&fed).await;
}

/// A client that opens a Watch and never reads it, with a 1 KiB window: the gateway keeps
/// writing for others, its memory does not grow with what the reader does not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_is_never_read_holds_no_more_than_its_window() {
    let fed = TestFederation::start(&["zone"]).await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(1024);
    let client = raw_h2(&fed, builder).await;
    let mut client = client.ready().await.unwrap();
    let (_response, mut body) = client
        .send_request(grpc_request("yrd.exchange.v1.WatchService/Watch"), false)
        .unwrap();
    // An empty WatchRequest (from the beginning), framed: not compressed, length 0.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let before = rss_kib();
    let mut projects = fed.projects("zone", "zone");
    let writes = 2_000;
    for i in 0..writes {
        create_with(
            &mut projects,
            &format!("written while a watcher sleeps {i}"),
        )
        .await;
    }
    let after = rss_kib();
    let latency = others_served(&fed).await;
    println!(
        "unread Watch (1 KiB window): {writes} projects written meanwhile; test process memory \
         {before} KiB before, {after} KiB after; WhoAmI answered in {:.1} ms",
        latency.as_secs_f64() * 1000.0
    );
    assert_eq!(all_projects(&mut projects).await.len(), writes);
}
