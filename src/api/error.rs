//! The one place domain errors become gRPC statuses. Each `match` is exhaustive without a
//! wildcard arm, so a new error variant cannot silently become INTERNAL. Internal causes are
//! logged here; clients get a code, a safe message, `google.rpc.ErrorInfo`, and
//! `google.rpc.BadRequest` for invalid input.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::config::Limits;
use crate::exchange::ExchangeError;
use crate::identity::AuthzError;
use crate::records::{RecordError, Violations};
use crate::store::StoreError;

/// Why a call was refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitError {
    /// The caller exceeded its calls per second.
    RateLimited,
    /// The gateway is at its concurrent-call limit.
    Overloaded,
    /// The gateway holds as many open streams as it may.
    TooManyStreams,
    /// The call took longer than the call timeout.
    Timeout,
    /// The request message exceeded the configured maximum size.
    MessageTooLarge,
}

/// `google.rpc.ErrorInfo.domain` of every error this gateway returns.
pub use crate::wire::ERROR_DOMAIN;

fn with_info(code: Code, message: String, reason: &str, metadata: &[(&str, &str)]) -> Status {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// INVALID_ARGUMENT carrying one field violation per bad field.
pub fn bad_request(v: &Violations) -> Status {
    let mut details =
        ErrorDetails::with_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, HashMap::new());
    for fv in v.iter() {
        details.add_bad_request_violation(fv.field.clone(), fv.description.clone());
    }
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {v}"),
        details,
    )
}

pub fn record_status(err: RecordError) -> Status {
    match err {
        RecordError::Invalid(v) => bad_request(&v),
        RecordError::NotFound { ref name } => with_info(
            Code::NotFound,
            err.to_string(),
            "NOT_FOUND",
            &[("name", name)],
        ),
        RecordError::NotOwner {
            ref name,
            ref owner,
        } => with_info(
            Code::PermissionDenied,
            err.to_string(),
            "NOT_OWNER",
            &[("name", name), ("owner", owner)],
        ),
        RecordError::StaleEtag { ref name } => with_info(
            Code::FailedPrecondition,
            err.to_string(),
            "STALE_ETAG",
            &[("name", name)],
        ),
        RecordError::RequestIdReused { request_id } => request_id_reused(&request_id),
        RecordError::Denied {
            reason,
            ref message,
        } => with_info(Code::PermissionDenied, message.clone(), reason, &[]),
        RecordError::Precondition {
            reason,
            ref message,
        } => with_info(Code::FailedPrecondition, message.clone(), reason, &[]),
        RecordError::Duplicate {
            reason,
            ref message,
        } => with_info(Code::AlreadyExists, message.clone(), reason, &[]),
        RecordError::Held { message } => {
            let mut details =
                ErrorDetails::with_error_info("WRITES_HELD", ERROR_DOMAIN, HashMap::new());
            details.set_retry_info(Some(std::time::Duration::from_secs(2)));
            Status::with_error_details(Code::Unavailable, message, details)
        }
        RecordError::Store(e) => store_status(e),
    }
}

/// How long a client should wait before retrying a call the store or the audit trail could
/// not take (a database failover takes seconds; the gateway's health shows when it is back).
const RETRY_AFTER_UNAVAILABLE: std::time::Duration = std::time::Duration::from_secs(1);

/// UNAVAILABLE with `reason` and a `RetryInfo` delay.
fn retry_later(message: &str, reason: &str) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(RETRY_AFTER_UNAVAILABLE));
    Status::with_error_details(Code::Unavailable, message, details)
}

/// UNAVAILABLE `AUDIT_UNAVAILABLE`: the call's audit event could not be made durable, so its
/// outcome is not given (it may have been applied); a retry with the same request id is safe.
pub fn audit_unavailable() -> Status {
    retry_later(
        "the audit trail cannot be written; the call's outcome is unknown, retry with the same request_id",
        "AUDIT_UNAVAILABLE",
    )
}

fn request_id_reused(request_id: &str) -> Status {
    let mut details = ErrorDetails::with_error_info(
        "REQUEST_ID_REUSED",
        ERROR_DOMAIN,
        HashMap::from([("request_id".to_string(), request_id.to_string())]),
    );
    details.add_bad_request_violation(
        "request_id",
        "was already used for a different request; use a new UUID for a new request",
    );
    Status::with_error_details(
        Code::InvalidArgument,
        format!("request id `{request_id}` was already used for a different request"),
        details,
    )
}

pub fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::Unavailable(ref cause) => {
            tracing::error!(cause = %cause, "store unavailable");
            retry_later(
                "the gateway's store is unavailable; retry with the same request_id (a write is applied \
                 at most once)",
                "STORE_UNAVAILABLE",
            )
        }
        StoreError::Corrupt(ref cause) => {
            tracing::error!(cause = %cause, "stored data unreadable");
            with_info(
                Code::Internal,
                "stored data could not be read".into(),
                "STORE_CORRUPT",
                &[],
            )
        }
        StoreError::Sealed(ref cause) => {
            tracing::error!(cause = %cause, "sealed data cannot be opened");
            with_info(
                Code::FailedPrecondition,
                format!("{err}; the gateway's operator must restore its key provider"),
                "SEALED_AT_REST",
                &[],
            )
        }
        StoreError::Conflict { .. } => with_info(
            Code::Aborted,
            "the record changed concurrently; read it again and retry".into(),
            "CONFLICT",
            &[],
        ),
        StoreError::NotFound => {
            with_info(Code::NotFound, "record not found".into(), "NOT_FOUND", &[])
        }
        StoreError::AlreadyExists => with_info(
            Code::AlreadyExists,
            "record already exists".into(),
            "ALREADY_EXISTS",
            &[],
        ),
        StoreError::RequestIdReused(request_id) => request_id_reused(&request_id),
        StoreError::OutOfOrder { ref owner, .. } => {
            // Only replication applies replica batches; reaching a client means a bug.
            tracing::error!(owner = %owner, cause = %err, "replica change out of order");
            with_info(
                Code::Internal,
                "replication state inconsistent".into(),
                "OUT_OF_ORDER",
                &[],
            )
        }
    }
}

pub fn authz_status(err: &AuthzError) -> Status {
    match err {
        AuthzError::NoIdentity(_) => {
            with_info(Code::Unauthenticated, err.to_string(), "NO_IDENTITY", &[])
        }
        AuthzError::Denied { .. } => with_info(
            Code::PermissionDenied,
            err.to_string(),
            "PERMISSION_DENIED",
            &[],
        ),
    }
}

pub fn exchange_status(err: ExchangeError) -> Status {
    match err {
        ExchangeError::Store(e) => store_status(e),
        ExchangeError::Key(ref cause) => {
            tracing::error!(cause = %cause, "cannot sign changes");
            with_info(
                Code::Internal,
                "the gateway cannot sign changes".into(),
                "SIGNING_FAILED",
                &[],
            )
        }
        ExchangeError::Behind { peer_seq, head } => with_info(
            Code::Unavailable,
            format!(
                "this gateway's store ends at change {head} of its log but you hold changes \
                 through {peer_seq} (it was restored from an older backup); it is taking them \
                 back from you: retry later"
            ),
            "STORE_BEHIND_PEERS",
            &[],
        ),
        ExchangeError::NotMember(ref party) => with_info(
            Code::PermissionDenied,
            format!(
                "party `{party}` was removed from this gateway's [[parties]] or suspended while \
                 its stream was open: the stream ends and nothing more is sent to it"
            ),
            "NOT_A_MEMBER",
            &[],
        ),
        ExchangeError::BadSigner(_)
        | ExchangeError::BadSignature { .. }
        | ExchangeError::Refused(_)
        | ExchangeError::Transport(_) => {
            // These arise on the receiving side only; an owner never sends them.
            tracing::error!(cause = %err, "receiver-side exchange error reached the server");
            with_info(
                Code::Internal,
                "exchange failed".into(),
                "EXCHANGE_FAILED",
                &[],
            )
        }
    }
}

/// RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED for calls refused by a limit, with a retry hint.
/// RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE` for an HTTP/JSON request body over its limit.
pub fn too_large_json(limit: usize) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "the JSON request body is larger than {limit} bytes (four times limits.max_message_bytes)"
        ),
        ErrorDetails::with_error_info("MESSAGE_TOO_LARGE", ERROR_DOMAIN, HashMap::new()),
    )
}

pub fn limit_status(err: LimitError, limits: &Limits) -> Status {
    let (code, reason, message, retry) = match err {
        LimitError::RateLimited => (
            Code::ResourceExhausted,
            "RATE_LIMITED",
            format!(
                "more than {} calls per second from this caller; slow down and retry",
                limits.calls_per_second_per_caller
            ),
            Some(std::time::Duration::from_millis(100)),
        ),
        LimitError::Overloaded => (
            Code::ResourceExhausted,
            "OVERLOADED",
            format!(
                "the gateway is at its limit of {} concurrent calls; retry shortly",
                limits.max_concurrent_calls
            ),
            Some(std::time::Duration::from_millis(50)),
        ),
        LimitError::TooManyStreams => (
            Code::ResourceExhausted,
            "OVERLOADED",
            format!(
                "the gateway holds its limit of {} open streams (limits.max_open_streams); \
                 retry shortly",
                limits.max_open_streams
            ),
            Some(std::time::Duration::from_millis(500)),
        ),
        LimitError::Timeout => (
            Code::DeadlineExceeded,
            "CALL_TIMEOUT",
            format!(
                "the call took longer than {} ms",
                limits.call_timeout.as_millis()
            ),
            None,
        ),
        LimitError::MessageTooLarge => (
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            "the request message is larger than limits.max_message_bytes".to_string(),
            None,
        ),
    };
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
    if let Some(delay) = retry {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}
