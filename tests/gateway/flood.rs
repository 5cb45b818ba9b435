//! Connection floods before any call: 1,000 idle TCP connections (slowloris) and 1,000 stalled
//! TLS handshakes from one address, and 1,008 stalled handshakes from 63 addresses. The gateway
//! holds at most `max_handshakes_per_address` from one address and
//! `max_handshakes_in_progress` in all (closing the oldest to make room for a newcomer),
//! closes the ones it holds when `handshake_timeout_ms` passes, and serves a legitimate client
//! from another address meanwhile. The gateway runs as a process of its own so that its
//! memory (now and peak) is measured alone. The figures (latency of the legitimate call, this process's memory before,
//! during and after) are printed, not asserted (shared machines).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use yrd_gateway::wire::pb;

use tonic::transport::Channel;

use crate::common::*;
use crate::replicas::{client_of, free_addr, projects_at};

const PER_ADDRESS: usize = 16;

/// The zone's gateway as a process of its own, so the memory figures are the gateway's alone.
struct Zone {
    _root: tempfile::TempDir,
    pki: Pki,
    gateway: ChildGateway,
    admin: SocketAddr,
}

impl Zone {
    fn start(extra_toml: &str) -> Zone {
        let root = tempfile::tempdir().unwrap();
        let pki = Pki::new(root.path());
        let admin = free_addr();
        let options = Options {
            extra_toml: extra_toml.into(),
            listen_admin: Some(admin.to_string()),
            ..Options::default()
        };
        let config = write_config(root.path(), "zone", "127.0.0.1:0", &[], &options);
        let gateway = ChildGateway::spawn(&config);
        Zone {
            _root: root,
            pki,
            gateway,
            admin,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.gateway.addr
    }

    fn memory(&self) -> Memory {
        self.gateway.memory()
    }

    fn projects(&self) -> pb::project_service_client::ProjectServiceClient<Channel> {
        projects_at(&self.pki, self.addr(), "zone")
    }

    /// The zone's own system calls WhoAmI on a new connection; the latency.
    async fn served(&self) -> Duration {
        let started = Instant::now();
        let me = tokio::time::timeout(
            Duration::from_secs(5),
            pb::directory_service_client::DirectoryServiceClient::new(client_of(
                &self.pki,
                self.addr(),
                "zone",
            ))
            .who_am_i(pb::WhoAmIRequest {}),
        )
        .await
        .expect("served within 5 s")
        .unwrap_or_else(|e| panic!("refused: {e:?}"))
        .into_inner();
        assert_eq!(me.party, "zone");
        started.elapsed()
    }
}

/// Where a flood comes from: `connections` from each address of `sources`, each sending
/// `first` (nothing, or the start of a ClientHello) and then nothing more.
struct Flood<'a> {
    what: &'a str,
    sources: Vec<IpAddr>,
    connections: usize,
    first: &'a [u8],
    /// `limits.max_handshakes_in_progress` of the flooded gateway.
    in_progress: usize,
}

impl Flood<'_> {
    fn total(&self) -> usize {
        self.sources.len() * self.connections
    }

    /// How many the gateway holds at the end: at most `PER_ADDRESS` from each source, at most
    /// `in_progress` in all.
    fn held(&self) -> usize {
        (self.sources.len() * self.connections.min(PER_ADDRESS)).min(self.in_progress)
    }

    async fn open(&self, addr: SocketAddr) -> Vec<TcpStream> {
        let mut held = Vec::with_capacity(self.total());
        for _ in 0..self.connections {
            for source in &self.sources {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(*source, 0)).unwrap();
                let mut stream = socket.connect(addr).await.unwrap();
                if !self.first.is_empty() {
                    // A connection closed by the gateway may refuse the write; that is the point.
                    let _ = stream.write_all(self.first).await;
                }
                held.push(stream);
            }
        }
        held
    }
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

async fn flooded_gateway_serves_others(flood: Flood<'_>) {
    let what = flood.what;
    let extra_toml = format!(
        "[limits]\nhandshake_timeout_ms = 3000\nmax_handshakes_per_address = {PER_ADDRESS}\n\
         max_handshakes_in_progress = {}\n",
        flood.in_progress
    );
    let zone = Zone::start(&extra_toml);
    let addr = zone.addr();
    let admin = zone.admin;
    let before = zone.memory();

    let total = flood.total();
    let expected_shed = (total - flood.held()) as u64;
    let mut held = flood.open(addr).await;
    let shed = eventually(Duration::from_secs(10), "connections shed", || async {
        let n = metric(admin, "yrd_connections_shed_total").await;
        (n >= expected_shed).then_some(n)
    })
    .await;
    assert_eq!(shed, expected_shed, "{what}: all but {} shed", flood.held());
    let during = zone.memory();

    // A legitimate client from 127.0.0.1 is served while the flood holds its places.
    let latency = zone.served().await;

    // The places held are given back when the handshake timeout passes.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = closed(&mut held).await;
        if n == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n} of {total} closed after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(held);
    let after = zone.memory();
    println!(
        "{what}: {total} connections from {} address(es), {shed} closed at once, {} held \
         until the 3 s handshake timeout; WhoAmI from another address answered in {:.1} ms; \
         gateway memory {before} before, {during} during, {after} after",
        flood.sources.len(),
        flood.held(),
        latency.as_secs_f64() * 1000.0
    );
}

/// 127.0.0.2, the one address of the single-address floods.
fn one_address() -> Vec<IpAddr> {
    vec![IpAddr::from([127, 0, 0, 2])]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_stop_others_being_served() {
    flooded_gateway_serves_others(Flood {
        what: "idle TCP (slowloris)",
        sources: one_address(),
        connections: 1_000,
        first: &[],
        in_progress: 1024,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_from_one_address_do_not_stop_others_being_served() {
    flooded_gateway_serves_others(Flood {
        what: "stalled TLS handshakes",
        sources: one_address(),
        connections: 1_000,
        // A TLS record header announcing a 512-byte handshake message, then silence.
        first: &[0x16, 0x03, 0x01, 0x02, 0x00],
        in_progress: 1024,
    })
    .await;
}

/// 1,008 stalled handshakes from 63 addresses (127.0.1.1 to 127.0.1.63), none over the cap per
/// address, filling the overall cap (256 here) four times over: each newcomer closes the
/// oldest, so the legitimate client's handshake finds a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_from_many_addresses_do_not_stop_others_being_served() {
    flooded_gateway_serves_others(Flood {
        what: "stalled TLS handshakes from many addresses",
        sources: (1..=63).map(|i| IpAddr::from([127, 0, 1, i])).collect(),
        connections: PER_ADDRESS,
        first: &[0x16, 0x03, 0x01, 0x02, 0x00],
        in_progress: 256,
    })
    .await;
}

/// An HTTP/2 connection to the zone as its demo client, spoken frame by frame.
async fn raw_h2(
    zone: &Zone,
    builder: h2::client::Builder,
) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(zone.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(zone.pki.client_config("zone", "client"))
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

/// Rapid reset (CVE-2023-44487): streams opened and cancelled at once, as fast as the client
/// can. The connection is cut off (GOAWAY) long before 10,000; others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_streams_rapidly_is_cut_off_and_others_served() {
    let zone = Zone::start("");
    let before = zone.memory();
    let mut client = raw_h2(&zone, h2::client::Builder::new()).await;
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
    let during = zone.memory();
    let latency = zone.served().await;
    let error = cut_off.expect("the connection was cut off");
    println!(
        "rapid reset: cut off after {opened} streams ({error}); WhoAmI on another connection \
         answered in {:.1} ms; gateway memory {before} before, {during} after",
        latency.as_secs_f64() * 1000.0
    );
    assert!(opened < 10_000);
}

/// A header list far over the limit (1 MiB in one header) is refused, the connection with it;
/// others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_is_refused_and_others_served() {
    let zone = Zone::start("");
    let mut client = raw_h2(&zone, h2::client::Builder::new()).await;
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
    zone.served().await;
}

/// A client that opens a Watch and never reads it, with a 1 KiB window: the gateway keeps
/// writing for others, its memory does not grow with what the reader does not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_is_never_read_holds_no_more_than_its_window() {
    let zone = Zone::start("");
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(1024);
    let client = raw_h2(&zone, builder).await;
    let mut client = client.ready().await.unwrap();
    let (_response, mut body) = client
        .send_request(grpc_request("yrd.exchange.v1.WatchService/Watch"), false)
        .unwrap();
    // An empty WatchRequest (from the beginning), framed: not compressed, length 0.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let before = zone.memory();
    let mut projects = zone.projects();
    let writes = 2_000;
    for i in 0..writes {
        create_with(
            &mut projects,
            &format!("written while a watcher sleeps {i}"),
        )
        .await;
    }
    let after = zone.memory();
    let latency = zone.served().await;
    println!(
        "unread Watch (1 KiB window): {writes} projects written meanwhile; gateway memory {before} \
         before, {after} after; WhoAmI answered in {:.1} ms",
        latency.as_secs_f64() * 1000.0
    );
    assert_eq!(all_projects(&mut projects).await.len(), writes);
}

/// An HTTP/2 frame: 9-byte header (length, type, flags, stream) and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a 7-bit prefix (RFC 7541 §5.1), the prefix's high bit clear.
fn hpack_int(mut v: usize, out: &mut Vec<u8>) {
    if v < 127 {
        out.push(v as u8);
        return;
    }
    out.push(127);
    v -= 127;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field without indexing, with a new name (RFC 7541 §6.2.2).
fn hpack_literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_int(name.len(), &mut out);
    out.extend_from_slice(name.as_bytes());
    hpack_int(value.len(), &mut out);
    out.extend_from_slice(value);
    out
}

/// Endless CONTINUATION frames (the 2024 "CONTINUATION flood", CVE-2024-27316 and its kin): a
/// HEADERS frame without END_HEADERS, then 16 KiB CONTINUATION frames of header literals that
/// never end, up to 64 MiB. The gateway ends the connection long before, its memory does not
/// grow with what was sent, and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_continuation_frames_are_cut_off_and_others_served() {
    const LIMIT: usize = 64 << 20;
    let zone = Zone::start("");
    let before = zone.memory();
    let tcp = TcpStream::connect(zone.addr()).await.unwrap();
    let mut config = (*zone.pki.client_config("zone", "client")).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    // What the gateway sends (its SETTINGS, then GOAWAY) is read until it closes.
    let reading = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
        received
    });

    let mut sent = 0usize;
    let start = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        frame(0x4, 0, 0, &[]),
        // :method POST, :scheme https, :path / from the static table, no END_HEADERS (0x4).
        frame(0x1, 0, 1, &[0x83, 0x87, 0x84]),
    ];
    for bytes in start {
        writer.write_all(&bytes).await.unwrap();
        sent += bytes.len();
    }
    let fragment = frame(0x9, 0, 1, &hpack_literal("x-pad", &[b'a'; 16_000]));
    let mut cut_off = false;
    while sent < LIMIT {
        if writer.write_all(&fragment).await.is_err() {
            cut_off = true;
            break;
        }
        sent += fragment.len();
    }
    let during = zone.memory();
    let received = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the gateway closed the connection")
        .unwrap();
    let latency = zone.served().await;
    // A GOAWAY frame (type 7) is among what the gateway sent before closing.
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= received.len() {
        let len =
            u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]) as usize;
        if received[at + 3] == 0x7 && at + 9 + 8 <= received.len() {
            let code = &received[at + 9 + 4..at + 9 + 8];
            goaway = Some(u32::from_be_bytes(code.try_into().unwrap()));
        }
        at += 9 + len;
    }
    println!(
        "CONTINUATION flood: {} KiB sent before the gateway closed the connection (cut off: \
         {cut_off}, GOAWAY code {goaway:?}); WhoAmI on another connection answered in {:.1} ms; \
         gateway memory {before} before, {during} at the end of the flood",
        sent / 1024,
        latency.as_secs_f64() * 1000.0
    );
    assert!(
        cut_off,
        "the gateway accepted {LIMIT} bytes of header block"
    );
    assert!(sent < LIMIT / 4, "{sent} bytes accepted before the cut");
}
