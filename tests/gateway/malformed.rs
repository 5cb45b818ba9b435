//! Requests that do not decode — invalid UTF-8 in a string field, a truncated message, a wrong
//! wire type, garbage — sent as raw bytes over real mutual TLS: each is answered
//! INVALID_ARGUMENT with `ErrorInfo` reason `MALFORMED_REQUEST` (not INTERNAL, which a county
//! system would read as a server fault), audited, and changes nothing; the gateway serves the
//! next well-formed call as before.

use bytes::{Buf, BufMut};
use tonic::Code;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, EncodeBuf, Encoder};
use yrd_gateway::wire::pb;

use crate::common::*;

/// Sends and receives message bytes as they are.
#[derive(Clone, Default)]
struct RawCodec;

#[derive(Clone, Default)]
struct Raw;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// A unary call of `path` with `bytes` as the request message.
async fn raw_call(
    channel: tonic::transport::Channel,
    path: &'static str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(bytes),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

const GET: &str = "/yrd.exchange.v1.ProjectService/GetProject";
const CREATE: &str = "/yrd.exchange.v1.ProjectService/CreateProject";

#[tokio::test]
async fn requests_that_do_not_decode_are_invalid_argument_audited_and_change_nothing() {
    let fed = TestFederation::start(&["zone"]).await;
    let cases: [(&str, &str, Vec<u8>); 5] = [
        // GetProjectRequest.name (field 1, string) holding bytes that are not UTF-8.
        ("invalid UTF-8", GET, vec![0x0a, 0x02, 0xff, 0xfe]),
        // Field 1 announces 16 bytes; one follows.
        ("truncated", GET, vec![0x0a, 0x10, b'p']),
        // Field 1 sent as a varint, not length-delimited.
        ("wrong wire type", GET, vec![0x08, 0x01]),
        // A key whose varint never ends.
        ("garbage", GET, vec![0xff; 11]),
        // CreateProjectRequest.project (field 1, a message) cut off inside the project.
        (
            "truncated write",
            CREATE,
            vec![0x0a, 0x20, 0x0a, 0x05, b'a', b'b'],
        ),
    ];
    for (what, path, bytes) in cases {
        let status = raw_call(fed.client("zone", "zone"), path, bytes)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(
            error_reason(&status),
            "MALFORMED_REQUEST",
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains("does not decode"),
            "{what}: {status:?}"
        );
    }

    // Audited as refused calls, under their methods.
    let audit = pb::audit_service_client::AuditServiceClient::new(fed.client("zone", "zone"));
    for (path, expected) in [(GET, 4), (CREATE, 1)] {
        let events = eventually(std::time::Duration::from_secs(10), "audit events", || {
            let mut audit = audit.clone();
            async move {
                audit
                    .list_audit_events(pb::ListAuditEventsRequest {
                        method: path.into(),
                        code: "INVALID_ARGUMENT".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner().events)
                    .filter(|e| e.len() == expected)
            }
        })
        .await;
        assert!(
            events
                .iter()
                .all(|e| e.caller == "spiffe://yrd-huzhou/party/zone/client/demo"),
            "{events:?}"
        );
    }

    // Nothing was written; a well-formed call works as before.
    let mut projects = fed.projects("zone", "zone");
    assert!(all_projects(&mut projects).await.is_empty());
    let created = create(&fed, "zone", "after the malformed calls").await;
    assert_eq!(get_with(&mut projects, &created.name).await, created);
}
