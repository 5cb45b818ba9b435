//! `AuditService`: a party's own systems read its gateway's audit trail.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::{bad_request, store_status};
use crate::ops::metrics::code_name;
use crate::records::Violations;
use crate::store::{AuditQuery, AuditStore};
use crate::wire::pb;
use crate::wire::{micros, timestamp};

pub struct AuditApi {
    store: Arc<dyn AuditStore>,
}

impl AuditApi {
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        AuditApi { store }
    }
}

fn known_code(name: &str) -> bool {
    (0..=16).any(|c| code_name(tonic::Code::from_i32(c)) == name)
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = match req.page_size {
            s if s < 0 => {
                v.add("page_size", "must not be negative");
                0
            }
            0 => 50,
            s => (s as usize).min(500),
        };
        let after = if req.page_token.is_empty() {
            0
        } else {
            u64::from_str_radix(req.page_token.strip_prefix('a').unwrap_or("?"), 16).unwrap_or_else(
                |_| {
                    v.add("page_token", "is not a token this service issued");
                    0
                },
            )
        };
        if !req.code.is_empty() && !known_code(&req.code) {
            v.add(
                "code",
                format!(
                    "`{}` is not a gRPC code name like OK or PERMISSION_DENIED",
                    req.code
                ),
            );
        }
        let since = req.start_time.map(|t| micros(&t, "start_time", &mut v));
        let until = req.end_time.map(|t| micros(&t, "end_time", &mut v));
        if !v.is_empty() {
            return Err(bad_request(&v));
        }
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let mut events = self
            .store
            .audit_events(AuditQuery {
                after_seq: after,
                since,
                until,
                caller: non_empty(req.caller),
                method: non_empty(req.method),
                code: non_empty(req.code),
                limit: limit + 1,
            })
            .await
            .map_err(store_status)?;
        let more = events.len() > limit;
        events.truncate(limit);
        let next_page_token = match (more, events.last()) {
            (true, Some(last)) => format!("a{:x}", last.seq),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AuditEvent {
                    seq: e.seq,
                    time: Some(timestamp(e.event.time)),
                    caller: e.event.caller,
                    method: e.event.method,
                    records: e.event.records,
                    code: e.event.code,
                    request_id: e.event.request_id,
                    prev_hash: e.prev_hash,
                    hash: e.hash,
                    digest: e.digest.name().to_string(),
                })
                .collect(),
            next_page_token,
        }))
    }
}
