//! HTTP/JSON access to the party-facing gRPC methods, for systems without a gRPC stack.
//!
//! The routes come from the `google.api.http` options in the protos ([`routes`]). A request
//! that is not gRPC (its content type is not `application/grpc`) is transcoded here into the
//! gRPC call its route names — the JSON body, path variables and query string become the
//! request message by the proto3 JSON mapping ([`transcode`]) — and handed to the same stack
//! gRPC calls go through: the call layer (limits, audit trail, metrics), authorization from the
//! TLS identity, validation in the handlers. The answer comes back as JSON, an error as
//! `google.rpc.Status` with its details and the HTTP status Google's mapping gives
//! ([`status`]). A request refused before it becomes a call (no such route, a body that is not
//! JSON or does not fit the message) is still handed to the call layer, already refused, so it
//! is limited, counted and audited like any call.
//!
//! `Watch` answers newline-delimited JSON (one `WatchResponse` per line), or server-sent
//! events when the client accepts `text/event-stream` (each event's id is its resume token,
//! so `Last-Event-ID` resumes). The OpenAPI document of the routes ([`openapi`]) is served at
//! `/openapi.json`.

pub mod openapi;
pub mod routes;
pub mod status;
pub mod transcode;

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use tonic::Status;
use tower::{Layer, Service};

use crate::api::calls::Refused;
use crate::config::Limits;
use routes::{Found, Routes};
use status::{bytes_response, error_response, status_json};

/// The descriptors of every proto the gateway serves, and the routes their options declare.
pub struct Api {
    pub pool: DescriptorPool,
    pub routes: Routes,
}

static API: LazyLock<Result<Api, String>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(crate::wire::pb::FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("the compiled descriptor set does not decode: {e}"))?;
    let routes = Routes::from_pool(&pool)?;
    Ok(Api { pool, routes })
});

/// The API of the protos built into this binary. An error means the build itself is broken
/// (a bad `google.api.http` option); the gateway refuses to start with it.
pub fn api() -> Result<&'static Api, String> {
    API.as_ref().map_err(Clone::clone)
}

/// How much JSON a request body may hold: JSON spells out names and numbers, so it is allowed
/// four times the protobuf limit; the request message it becomes is then held to that limit
/// like any gRPC request.
pub const JSON_BODY_FACTOR: usize = 4;

#[derive(Clone)]
pub struct HttpJsonLayer {
    shared: Arc<Shared>,
}

struct Shared {
    api: &'static Api,
    limits: Limits,
    body_limit: usize,
    /// Request bodies being read at once. Bodies are read before the call layer admits the
    /// call, so they are bounded here: at most `max_concurrent_calls / JSON_BODY_FACTOR`, which
    /// holds the memory they can take to what the admitted gRPC calls' messages can.
    reading: Arc<tokio::sync::Semaphore>,
}

impl HttpJsonLayer {
    pub fn new(limits: Limits, max_message_bytes: usize) -> Result<Self, String> {
        Ok(HttpJsonLayer {
            shared: Arc::new(Shared {
                api: api()?,
                reading: Arc::new(tokio::sync::Semaphore::new(
                    (limits.max_concurrent_calls / JSON_BODY_FACTOR).max(1),
                )),
                limits,
                body_limit: max_message_bytes.saturating_mul(JSON_BODY_FACTOR),
            }),
        })
    }
}

impl<S> Layer<S> for HttpJsonLayer {
    type Service = HttpJson<S>;
    fn layer(&self, inner: S) -> HttpJson<S> {
        HttpJson {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpJson<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Whether a request is gRPC (passed through untouched).
fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl<S> Service<http::Request<tonic::body::Body>> for HttpJson<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is ready only after poll_ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        if is_grpc(&req) {
            let mut inner = inner;
            return Box::pin(inner.call(req));
        }
        let shared = self.shared.clone();
        Box::pin(async move { shared.serve(req, inner).await })
    }
}

/// How a transcoded call's answer is written.
#[derive(Clone)]
struct Answer {
    /// The response message type (`None` for a call refused before it had a route).
    output: Option<MessageDescriptor>,
    streaming: bool,
    events: bool,
    /// 405 with `Allow` instead of the status's own HTTP code.
    allow: Option<String>,
}

/// The answer to a request no route takes: 405 with the verbs the path allows
/// (UNIMPLEMENTED), or NOT_FOUND naming where the routes are listed. The refusal still passes
/// the call layer, so it is limited, counted and audited like any call.
fn unrouted(found: Found<'_>, method: &http::Method, path: &str) -> (Answer, Status) {
    let (code, why, allow) = match found {
        Found::OtherVerbs(verbs) => {
            let allow = verbs
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let why = format!("{method} is not allowed on {path}; allowed: {allow}");
            (tonic::Code::Unimplemented, why, Some(allow))
        }
        _ => (
            tonic::Code::NotFound,
            format!("no HTTP route {method} {path}; the routes are listed in /openapi.json"),
            None,
        ),
    };
    let answer = Answer {
        output: None,
        streaming: false,
        events: false,
        allow,
    };
    (answer, Status::new(code, why))
}

impl Shared {
    async fn serve<S>(
        &self,
        req: http::Request<tonic::body::Body>,
        mut inner: S,
    ) -> Result<http::Response<tonic::body::Body>, S::Error>
    where
        S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    {
        let (parts, body) = req.into_parts();
        if parts.uri.path() == "/openapi.json" && parts.method == http::Method::GET {
            return Ok(bytes_response(
                http::StatusCode::OK,
                "application/json",
                Bytes::from_static(openapi::document().as_bytes()),
            ));
        }
        let events = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let (grpc_path, answer, message) =
            match self.api.routes.find(&parts.method, parts.uri.path()) {
                Found::Route(route, values) => {
                    let answer = Answer {
                        output: Some(route.method.output()),
                        streaming: route.method.is_server_streaming(),
                        events,
                        allow: None,
                    };
                    let message = match self.read_body(body).await {
                        Ok(bytes) => {
                            let mut query = parts.uri.query().map(str::to_string);
                            if let Some(id) = last_event_id(&parts.headers, route) {
                                query = Some(match query {
                                    Some(q) if !q.is_empty() => format!("{q}&resume_token={id}"),
                                    _ => format!("resume_token={id}"),
                                });
                            }
                            transcode::request_message(route, &values, query.as_deref(), &bytes)
                        }
                        Err(refusal) => Err(refusal),
                    };
                    (route.grpc_path.clone(), answer, message)
                }
                found => {
                    let (answer, refusal) = unrouted(found, &parts.method, parts.uri.path());
                    (parts.uri.path().to_string(), answer, Err(refusal))
                }
            };
        let mut call = http::Request::builder()
            .method(http::Method::POST)
            .version(http::Version::HTTP_2)
            .uri(grpc_path.as_str())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers");
        if let Some(id) = parts.headers.get(crate::api::calls::REQUEST_ID_HEADER) {
            call = call.header(crate::api::calls::REQUEST_ID_HEADER, id.clone());
        }
        let body = match &message {
            Ok(bytes) => {
                tonic::body::Body::new(http_body_util::Full::new(transcode::grpc_frame(bytes)))
            }
            Err(_) => tonic::body::Body::empty(),
        };
        let Ok(mut call) = call.body(body) else {
            return Ok(error_response(&Status::internal(
                "the gRPC request could not be built",
            )));
        };
        *call.extensions_mut() = parts.extensions;
        if let Err(refusal) = message {
            call.extensions_mut().insert(Refused(refusal));
        }
        let response = inner.call(call).await?;
        Ok(answer.write(response).await)
    }

    /// The request body, at most `body_limit` bytes, read within the call timeout, while one
    /// of the reading slots is free (none free: OVERLOADED at once, the body left unread).
    async fn read_body(&self, body: tonic::body::Body) -> Result<Bytes, Status> {
        if body.is_end_stream() {
            // No body (a GET): nothing to read, no slot taken.
            return Ok(Bytes::new());
        }
        let Ok(_slot) = self.reading.clone().try_acquire_owned() else {
            return Err(crate::api::error::limit_status(
                crate::api::error::LimitError::Overloaded,
                &self.limits,
            ));
        };
        let limited = http_body_util::Limited::new(body, self.body_limit);
        match tokio::time::timeout(self.limits.call_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(crate::api::error::too_large_json(self.body_limit))
            }
            Ok(Err(e)) => Err(Status::invalid_argument(format!(
                "the request body could not be read: {e}"
            ))),
            Err(_) => Err(crate::api::error::limit_status(
                crate::api::error::LimitError::Timeout,
                &self.limits,
            )),
        }
    }
}

/// A server-sent events client resuming: its `Last-Event-ID` is the resume token of the last
/// event it saw (only for the Watch route, which has a `resume_token` field).
fn last_event_id(headers: &http::HeaderMap, route: &routes::Route) -> Option<String> {
    route.method.input().get_field_by_name("resume_token")?;
    let id = headers.get("last-event-id")?.to_str().ok()?;
    // The token is URL-safe text; anything else is passed on percent-encoded.
    Some(
        id.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
    )
}

impl Answer {
    async fn write(
        self,
        response: http::Response<tonic::body::Body>,
    ) -> http::Response<tonic::body::Body> {
        let (parts, body) = response.into_parts();
        let Some(output) = self.output.clone() else {
            let status = Status::from_header_map(&parts.headers)
                .unwrap_or_else(|| Status::internal("a refused call was answered"));
            return self.failed(&status);
        };
        if let Some(status) = Status::from_header_map(&parts.headers) {
            // A trailers-only answer: the call ended before any message.
            if status.code() != tonic::Code::Ok || !self.streaming {
                return self.failed(&status);
            }
        }
        if self.streaming {
            let content_type = if self.events {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            };
            let mut answer = http::Response::new(tonic::body::Body::new(JsonStream {
                inner: body,
                buf: BytesMut::new(),
                output,
                events: self.events,
                done: false,
            }));
            answer.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            answer.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            return answer;
        }
        let collected = match body.collect().await {
            Ok(c) => c,
            Err(status) => return self.failed(&status),
        };
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let mut data = BytesMut::from(collected.to_bytes().as_ref());
        if let Some(status) = Status::from_header_map(&trailers) {
            if status.code() != tonic::Code::Ok {
                return self.failed(&status);
            }
        }
        let json = transcode::next_message(&mut data)
            .and_then(|m| m.ok_or_else(|| "the call answered no message".to_string()))
            .and_then(|m| transcode::message_json(&output, &m));
        match json {
            Ok(bytes) => bytes_response(http::StatusCode::OK, "application/json", bytes),
            Err(why) => {
                tracing::error!(error = %why, "a gRPC answer could not be written as JSON");
                self.failed(&Status::internal(why))
            }
        }
    }

    fn failed(&self, status: &Status) -> http::Response<tonic::body::Body> {
        let mut response = error_response(status);
        if let Some(allow) = &self.allow {
            *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
            if let Ok(v) = http::HeaderValue::from_str(allow) {
                response.headers_mut().insert(http::header::ALLOW, v);
            }
        }
        response
    }
}

/// A server stream's messages as JSON lines (or server-sent events); a failure that ends the
/// stream is a last line `{"error": Status}` (or an `error` event).
struct JsonStream {
    inner: tonic::body::Body,
    buf: BytesMut,
    output: MessageDescriptor,
    events: bool,
    done: bool,
}

impl JsonStream {
    fn line(&self, json: &[u8], id: Option<String>, event: Option<&str>) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 64);
        if self.events {
            if let Some(event) = event {
                out.extend_from_slice(format!("event: {event}\n").as_bytes());
            }
            if let Some(id) = id {
                out.extend_from_slice(format!("id: {id}\n").as_bytes());
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(json);
            out.extend_from_slice(b"\n\n");
        } else {
            out.extend_from_slice(json);
            out.push(b'\n');
        }
        Bytes::from(out)
    }

    fn error_line(&mut self, status: &Status) -> Bytes {
        self.done = true;
        let json = serde_json::to_vec(&serde_json::json!({ "error": status_json(status) }))
            .unwrap_or_default();
        self.line(&json, None, Some("error"))
    }
}

impl Body for JsonStream {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match transcode::next_message(&mut self.buf) {
                Ok(Some(message)) => {
                    let this = &mut *self;
                    let line = match transcode::message_json(&this.output, &message) {
                        Ok(json) => {
                            let id = this.events.then(|| resume_token(&json)).flatten();
                            this.line(&json, id, None)
                        }
                        Err(why) => this.error_line(&Status::internal(why)),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(line))));
                }
                Ok(None) => {}
                Err(why) => {
                    let line = self.error_line(&Status::internal(why));
                    return Poll::Ready(Some(Ok(Frame::data(line))));
                }
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(status))) => {
                    let line = self.error_line(&status);
                    return Poll::Ready(Some(Ok(Frame::data(line))));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        let status = frame
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .filter(|s| s.code() != tonic::Code::Ok);
                        self.done = true;
                        if let Some(status) = status {
                            let line = self.error_line(&status);
                            return Poll::Ready(Some(Ok(Frame::data(line))));
                        }
                        return Poll::Ready(None);
                    }
                },
            }
        }
    }
}

/// The `resumeToken` of a `WatchResponse` written as JSON, for the event's id.
fn resume_token(json: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(json).ok()?;
    value.get("resumeToken")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests;
