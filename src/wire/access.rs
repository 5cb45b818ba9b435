//! Conversions of access requests between wire messages and domain records.

use super::pb;
use super::{known, timestamp};
use crate::domain::RecordKind;
use crate::records::{self, AccessRequest, AccessState, AccessView, ResourceName, Violations};

/// A state named in a filter: `None` for UNSPECIFIED.
pub fn access_state_from(value: i32, field: &str, v: &mut Violations) -> Option<AccessState> {
    match known(value, field, v) {
        Some(pb::AccessRequestState::Requested) => Some(AccessState::Requested),
        Some(pb::AccessRequestState::Approved) => Some(AccessState::Approved),
        Some(pb::AccessRequestState::Refused) => Some(AccessState::Refused),
        Some(pb::AccessRequestState::Withdrawn) => Some(AccessState::Withdrawn),
        Some(pb::AccessRequestState::Revoked) => Some(AccessState::Revoked),
        Some(pb::AccessRequestState::Expired) => Some(AccessState::Expired),
        Some(pb::AccessRequestState::Unspecified) | None => None,
    }
}

fn access_state_to(s: AccessState) -> pb::AccessRequestState {
    match s {
        AccessState::Requested => pb::AccessRequestState::Requested,
        AccessState::Approved => pb::AccessRequestState::Approved,
        AccessState::Refused => pb::AccessRequestState::Refused,
        AccessState::Withdrawn => pb::AccessRequestState::Withdrawn,
        AccessState::Revoked => pb::AccessRequestState::Revoked,
        AccessState::Expired => pb::AccessRequestState::Expired,
    }
}

/// A request as filed by a client; output-only fields are ignored.
pub fn access_request_from(r: pb::AccessRequest) -> AccessRequest {
    AccessRequest {
        id: uuid::Uuid::nil(),
        owner: String::new(),
        provider: String::new(),
        entry: r.entry,
        items: r.items,
        purpose: r.purpose,
        scenario: r.scenario,
        validity_days: r.validity_days,
        answer_by: 0,
        granted_at_once: false,
        withdraw_time: None,
        escalate_time: None,
        escalation_reason: String::new(),
        deletion: None,
        revision: 0,
        create_time: 0,
        update_time: 0,
    }
}

/// A request as both parties read it: with its derived state, its answer and its grant.
pub fn access_request_to(view: AccessView) -> pb::AccessRequest {
    let r = view.request;
    let name = ResourceName::new(&r.owner, RecordKind::AccessRequest, r.id);
    let answer = view.answer.as_ref();
    let granted = matches!(
        view.outcome.state,
        AccessState::Approved | AccessState::Revoked | AccessState::Expired
    );
    // What was granted stays readable after the grant ended.
    let granted_items = match (view.outcome.state, answer) {
        (AccessState::Approved, _) => view.outcome.granted,
        (AccessState::Revoked | AccessState::Expired, Some(a)) => a.items.clone(),
        (AccessState::Revoked | AccessState::Expired, None) => r.items.clone(),
        _ => Vec::new(),
    };
    pb::AccessRequest {
        etag: records::etag(&name, r.revision),
        name: name.to_string(),
        requester: r.owner,
        provider: r.provider,
        entry: r.entry,
        items: r.items,
        purpose: r.purpose,
        scenario: r.scenario,
        validity_days: r.validity_days,
        state: access_state_to(view.outcome.state) as i32,
        overdue: view.outcome.overdue,
        answer_by: Some(timestamp(r.answer_by)),
        granted_at_once: r.granted_at_once,
        granted_items,
        valid_until: granted.then(|| timestamp(view.outcome.valid_until)),
        answer_reason: answer.map(|a| a.reason.clone()).unwrap_or_default(),
        answer_time: answer.map(|a| timestamp(a.create_time)),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        escalated: r.escalate_time.is_some(),
        escalation_reason: r.escalation_reason,
        escalate_time: r.escalate_time.map(timestamp),
        revoke_time: answer.and_then(|a| a.revoke_time).map(timestamp),
        revoke_reason: answer.map(|a| a.revoke_reason.clone()).unwrap_or_default(),
        deletion_receipt: r.deletion.map(|d| pb::DeletionReceipt {
            erase_time: Some(timestamp(d.time)),
            cause: d.cause,
            items: d.items,
            records: d.records as i64,
            log_entries: d.log_entries as i64,
            evidence: d.evidence as i64,
            records_deleted: d.records_deleted,
            keys_destroyed: d.keys_destroyed as i64,
        }),
    }
}
