//! The outermost tower layer: every call — allowed or refused — gets one tracing span with its
//! request id, caller identity and method; limits are applied before any work (per-caller rate,
//! global concurrency: RESOURCE_EXHAUSTED at once rather than queueing); unary answers are
//! bounded by a timeout; and the call's outcome code and latency are recorded when its
//! response ends (trailers), so streams are counted for as long as they are open.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{BoxFuture, Either};
use http_body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Code;
use tower::{Layer, Service};
use tracing::Instrument;

pub use super::error::LimitError;
use super::error::limit_status;
use crate::audit::AuditLog;
use crate::config::Limits;
use crate::identity::tls::PeerInfo;
use crate::ops::metrics::{Metrics, code_name};
use crate::store::{NewAuditEvent, WriteAudit};

/// Metadata key a client may set to correlate its logs with ours.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Resource names a handler reports for the call's audit event. The call layer puts one in
/// every request's extensions; handlers add to it. A handler whose call makes one write may
/// instead hand the event to the write ([`AuditRecords::for_write`]): the service names the
/// records the event reports, the store commits it with the write, and the call layer does not
/// append it again when the call ends `OK` (a call that writes nothing — a replay, a refusal —
/// is audited by the call layer with the names the handler noted).
#[derive(Clone, Default, Debug)]
pub struct AuditRecords(Arc<Mutex<CallAudit>>);

#[derive(Default, Debug)]
struct CallAudit {
    names: Vec<String>,
    /// The call's event as it began; `None` without an audit trail.
    started: Option<NewAuditEvent>,
    write: Option<WriteAudit>,
}

impl AuditRecords {
    fn for_call(started: Option<NewAuditEvent>) -> Self {
        AuditRecords(Arc::new(Mutex::new(CallAudit {
            started,
            ..CallAudit::default()
        })))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, CallAudit> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The call's event for the store to commit with the call's one write; `None` when the
    /// gateway keeps no audit trail (or outside the call layer).
    pub fn for_write(&self) -> Option<WriteAudit> {
        let mut slot = self.slot();
        let write = WriteAudit::new(slot.started.clone()?);
        slot.write = Some(write.clone());
        Some(write)
    }

    /// Whether the call's event was committed with its write.
    fn committed_with_write(&self) -> bool {
        self.slot()
            .write
            .as_ref()
            .is_some_and(|w| w.committed().is_some())
    }

    /// The slot of a request (a detached one when the layer is absent, e.g. in unit tests).
    pub fn of<T>(req: &tonic::Request<T>) -> AuditRecords {
        req.extensions()
            .get::<AuditRecords>()
            .cloned()
            .unwrap_or_default()
    }

    pub fn note(&self, name: impl Into<String>) {
        let name = name.into();
        if !name.is_empty() {
            self.slot().names.push(name);
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.slot().names)
    }
}

/// A request refused before it became a call (the HTTP/JSON transcoder could not map it): the
/// call layer answers this status instead of calling the service, after the same limits, and
/// audits and counts it like any call.
#[derive(Clone, Debug)]
pub struct Refused(pub tonic::Status);

/// Methods whose responses are streams: audited when they open, never buffered.
fn is_streaming(path: &str) -> bool {
    matches!(
        path,
        "/yrd.exchange.v1.WatchService/Watch"
            | "/yrd.exchange.v1.FederationService/PullChanges"
            | "/grpc.health.v1.Health/Watch"
            | "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
            | "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    )
}

/// Health probes are audited without making the probe wait for the write, so a store outage
/// still gets a NOT_SERVING answer rather than an error.
fn is_probe(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Shared {
    metrics: Arc<Metrics>,
    /// `None` only in the benchmark that measures auditing's cost.
    audit: Option<AuditLog>,
    limits: Limits,
    /// Unary calls in progress.
    permits: Arc<Semaphore>,
    /// Open streams, counted apart: they last as long as a peer or a watcher stays.
    streams: Arc<Semaphore>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Shared {
    /// Takes one token from the caller's bucket.
    fn admit(&self, caller: &str) -> bool {
        let rate = f64::from(self.limits.calls_per_second_per_caller);
        if rate == 0.0 {
            return true;
        }
        let burst = f64::from(self.limits.burst_per_caller);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone)]
pub struct CallLayer {
    shared: Arc<Shared>,
}

impl CallLayer {
    pub fn new(metrics: Arc<Metrics>, audit: Option<AuditLog>, limits: Limits) -> Self {
        CallLayer {
            shared: Arc::new(Shared {
                metrics,
                audit,
                permits: Arc::new(Semaphore::new(limits.max_concurrent_calls)),
                streams: Arc::new(Semaphore::new(limits.max_open_streams)),
                limits,
                buckets: Mutex::default(),
            }),
        }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = Calls<S>;
    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
    shared: Arc<Shared>,
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// tonic reports an oversized request as OUT_OF_RANGE; the contract says RESOURCE_EXHAUSTED,
/// with the limit named. Recognised in headers (trailers-only answers) or trailers.
fn too_large(headers: &http::HeaderMap) -> bool {
    status_of(headers) == Some(Code::OutOfRange)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            // grpc-message is percent-encoded.
            .is_some_and(|m| m.replace("%20", " ").contains("message length too large"))
}

/// Answers a call the gateway refused before any work.
fn refuse(
    shared: &Shared,
    event: NewAuditEvent,
    why: LimitError,
) -> http::Response<tonic::body::Body> {
    let reason = match why {
        LimitError::RateLimited => "rate_limited",
        LimitError::TooManyStreams => "too_many_streams",
        _ => "overloaded",
    };
    tracing::warn!(reason, "call shed by a limit");
    shared
        .metrics
        .call_shed(&event.method, reason, Code::ResourceExhausted);
    if let Some(log) = &shared.audit {
        log.record(NewAuditEvent {
            code: code_name(Code::ResourceExhausted).to_string(),
            ..event
        });
    }
    limit_status(why, &shared.limits).into_http()
}

/// Writes the call's audit event; `Err` when it cannot be made durable.
async fn audit(
    shared: &Shared,
    mut event: NewAuditEvent,
    records: &AuditRecords,
    code: Code,
) -> Result<(), ()> {
    let Some(log) = &shared.audit else {
        return Ok(());
    };
    if code == Code::Ok && records.committed_with_write() {
        // Already durable, in the write's own transaction.
        return Ok(());
    }
    event.records = records.take();
    event.code = code_name(code).to_string();
    if is_probe(&event.method) {
        log.record(event);
        return Ok(());
    }
    log.append(event).await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "audit event not written; answering UNAVAILABLE");
    })
}

fn audit_unavailable() -> http::Response<tonic::body::Body> {
    super::error::audit_unavailable().into_http()
}

impl<S, B> Service<http::Request<B>> for Calls<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let refused = req.extensions_mut().remove::<Refused>();
        let (event, remote) = call_event(&req);
        let span = tracing::info_span!("call", method = %event.method, request_id = %event.request_id, caller = %event.caller, remote = %remote);
        let shared = self.shared.clone();
        let records = AuditRecords::for_call(shared.audit.as_ref().map(|_| event.clone()));
        req.extensions_mut().insert(records.clone());

        if !shared.admit(&event.caller) {
            let response = span.in_scope(|| refuse(&shared, event, LimitError::RateLimited));
            return Box::pin(async move { Ok(response) });
        }
        let (slots, full) = if is_streaming(&event.method) {
            (&shared.streams, LimitError::TooManyStreams)
        } else {
            (&shared.permits, LimitError::Overloaded)
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let response = span.in_scope(|| refuse(&shared, event, full));
            return Box::pin(async move { Ok(response) });
        };
        shared.metrics.call_started();
        let guard = CallGuard {
            shared: shared.clone(),
            method: event.method.clone(),
            started,
            span: span.clone(),
            permit: Some(permit),
        };
        let future = match refused {
            Some(Refused(status)) => Either::Left(std::future::ready(Ok(status.into_http()))),
            None => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Either::Right(inner.call(req))
            }
        };
        Box::pin(answer(shared, guard, event, records, future).instrument(span))
    }
}

/// The audit event a call starts with (time, method, caller, request id; the outcome is filled
/// in later) and the caller's address, from the request and the identity the TLS layer found.
fn call_event<B>(req: &http::Request<B>) -> (NewAuditEvent, String) {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let peer = req.extensions().get::<PeerInfo>();
    let caller = match peer.map(|p| &p.identity) {
        Some(Ok(id)) => id.to_string(),
        _ => "unauthenticated".to_string(),
    };
    let remote = peer
        .and_then(|p| p.remote_addr)
        .map(|a| a.to_string())
        .unwrap_or_default();
    let event = NewAuditEvent {
        time: crate::domain::now_micros(),
        caller,
        method: req.uri().path().to_string(),
        records: Vec::new(),
        code: String::new(),
        request_id,
    };
    (event, remote)
}

/// Runs an admitted call under the call timeout and answers it once its audit event is
/// durable: a trailers-only or unary answer with its outcome, a stream as opened. A call whose
/// event cannot be written is answered UNAVAILABLE instead.
async fn answer<E>(
    shared: Arc<Shared>,
    guard: CallGuard,
    event: NewAuditEvent,
    records: AuditRecords,
    future: impl Future<Output = Result<http::Response<tonic::body::Body>, E>>,
) -> Result<http::Response<tonic::body::Body>, E> {
    let mut response = match tokio::time::timeout(shared.limits.call_timeout, future).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            guard.finish(Code::Internal);
            return Err(e);
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = shared.limits.call_timeout.as_millis() as u64,
                "call timed out"
            );
            let response = limit_status(LimitError::Timeout, &shared.limits).into_http();
            guard.finish(Code::DeadlineExceeded);
            return Ok(response);
        }
    };
    if too_large(response.headers()) {
        response = limit_status(LimitError::MessageTooLarge, &shared.limits).into_http();
    }
    if let Some(code) = status_of(response.headers()) {
        // Trailers-only answer: the call is complete.
        if audit(&shared, event, &records, code).await.is_err() {
            guard.finish(Code::Unavailable);
            return Ok(audit_unavailable());
        }
        guard.finish(code);
        return Ok(response);
    }
    if is_streaming(&guard.method) {
        // Audited as opened; what flows is in the feed and the change logs.
        if audit(&shared, event, &records, Code::Ok).await.is_err() {
            guard.finish(Code::Unavailable);
            return Ok(audit_unavailable());
        }
    } else {
        // A unary answer is small: hold it until its audit event is durable.
        let (parts, body) = response.into_parts();
        let (frames, code) = collect_frames(body).await;
        if audit(&shared, event, &records, code).await.is_err() {
            guard.finish(Code::Unavailable);
            return Ok(audit_unavailable());
        }
        let replay = http_body_util::StreamBody::new(tokio_stream::iter(frames));
        response = http::Response::from_parts(parts, tonic::body::Body::new(replay));
    }
    let limits = shared.limits.clone();
    Ok(response.map(|body| {
        tonic::body::Body::new(CallBody {
            inner: body,
            guard: Some(guard),
            limits,
        })
    }))
}

/// A frame of a response body as held back for replay.
type HeldFrame = Result<Frame<bytes::Bytes>, tonic::Status>;

/// Every frame of a (unary) response body, and the status code its trailers carry.
async fn collect_frames(mut body: tonic::body::Body) -> (Vec<HeldFrame>, Code) {
    let mut frames = Vec::new();
    let mut code = Code::Ok;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(f) = &frame {
            if let Some(t) = f.trailers_ref() {
                code = status_of(t).unwrap_or(Code::Unknown);
            }
        } else {
            code = Code::Internal;
        }
        frames.push(frame);
    }
    (frames, code)
}

/// Finishes a call once: records metrics, logs the outcome, frees the concurrency permit.
struct CallGuard {
    shared: Arc<Shared>,
    method: String,
    started: Instant,
    span: tracing::Span,
    permit: Option<OwnedSemaphorePermit>,
}

impl CallGuard {
    fn finish(mut self, code: Code) {
        self.complete(code);
    }

    fn complete(&mut self, code: Code) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        drop(permit);
        let seconds = self.started.elapsed().as_secs_f64();
        self.shared
            .metrics
            .call_finished(&self.method, code, seconds);
        let _entered = self.span.enter();
        let ms = seconds * 1000.0;
        match code {
            Code::Ok => tracing::debug!(code = code_name(code), ms, "call finished"),
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
                tracing::warn!(code = code_name(code), ms, "call failed");
                self.shared
                    .metrics
                    .note_error(format!("{} {}", self.method, code_name(code)));
            }
            _ => tracing::info!(code = code_name(code), ms, "call refused"),
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        // The response was dropped before its end (client went away, stream closed early).
        self.complete(Code::Cancelled);
    }
}

/// A response body that finishes its call when the trailers (or the end) go out.
struct CallBody {
    inner: tonic::body::Body,
    guard: Option<CallGuard>,
    limits: Limits,
}

impl Body for CallBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &mut polled {
            if let Some(trailers) = frame.trailers_mut() {
                if too_large(trailers) {
                    let status = limit_status(LimitError::MessageTooLarge, &self.limits);
                    trailers.remove("grpc-message");
                    trailers.remove("grpc-status-details-bin");
                    let _ = status.add_header(trailers);
                }
            }
        }
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_of(trailers).unwrap_or(Code::Unknown);
                    if let Some(g) = self.guard.take() {
                        g.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(g) = self.guard.take() {
                    g.finish(Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(g) = self.guard.take() {
                    g.finish(Code::Ok);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
