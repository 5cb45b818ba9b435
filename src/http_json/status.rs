//! A gRPC status as an HTTP/JSON answer: the HTTP status code Google's mapping gives
//! (google/rpc/code.proto), and the body as `google.rpc.Status` in proto3 JSON, with the
//! details the gateway sends (`ErrorInfo`, `BadRequest`, `RetryInfo`) under their `@type`.

use serde_json::{Value, json};
use tonic::Code;
use tonic_types::{ErrorDetail, StatusExt};

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as H;
    match code {
        Code::Ok => H::OK,
        // Client closed request (nginx's 499), as Google's mapping says.
        Code::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => H::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => H::BAD_REQUEST,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::Unauthenticated => H::UNAUTHORIZED,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
    }
}

const TYPE_PREFIX: &str = "type.googleapis.com/google.rpc.";

/// `status` as `google.rpc.Status` JSON: `code` (the number), `message`, `details`.
pub fn status_json(status: &tonic::Status) -> Value {
    let details: Vec<Value> = status
        .get_error_details_vec()
        .into_iter()
        .filter_map(|d| match d {
            ErrorDetail::ErrorInfo(info) => Some(json!({
                "@type": format!("{TYPE_PREFIX}ErrorInfo"),
                "reason": info.reason,
                "domain": info.domain,
                "metadata": info.metadata.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            })),
            ErrorDetail::BadRequest(bad) => Some(json!({
                "@type": format!("{TYPE_PREFIX}BadRequest"),
                "fieldViolations": bad.field_violations.into_iter().map(|v| json!({
                    "field": v.field,
                    "description": v.description,
                })).collect::<Vec<_>>(),
            })),
            ErrorDetail::RetryInfo(retry) => Some(json!({
                "@type": format!("{TYPE_PREFIX}RetryInfo"),
                "retryDelay": retry.retry_delay.map(duration_json).unwrap_or_else(|| "0s".into()),
            })),
            // The gateway sends no other detail types.
            _ => None,
        })
        .collect();
    json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": details,
    })
}

/// A duration in proto3 JSON: seconds with up to nine fractional digits and an `s`.
fn duration_json(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let text = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
        format!("{}s", text.trim_end_matches('0'))
    }
}

/// The whole JSON answer of a failed call: the `google.rpc.Status` itself, as grpc-gateway
/// answers.
pub fn error_response(status: &tonic::Status) -> http::Response<tonic::body::Body> {
    json_response(http_status(status.code()), &status_json(status))
}

/// A JSON document as an HTTP answer.
pub fn json_response(code: http::StatusCode, body: &Value) -> http::Response<tonic::body::Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes_response(code, "application/json", bytes)
}

pub fn bytes_response(
    code: http::StatusCode,
    content_type: &'static str,
    bytes: impl Into<bytes::Bytes>,
) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
        bytes.into(),
    )));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
