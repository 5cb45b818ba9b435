//! Access requests (申请—审核) under 政务数据共享条例: a party asks for items of another party's
//! catalog entry, stating purpose (使用用途) and scenario; the provider approves, possibly for
//! fewer items or a shorter period, or refuses with a reason. The request is owned by the
//! requester, the answer by the provider, and the state is derived from both — identically at
//! every gateway holding them, whatever order they arrived in — never written by two parties.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Violations, check_text};

/// Items one request may name at most (an entry lists at most as many).
pub const MAX_ITEMS: usize = 100;
/// Longest validity a request may ask for, in days (ten years).
pub const MAX_VALIDITY_DAYS: i32 = 3650;
const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// A request as stored and replicated (to the provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: Uuid,
    /// The requesting party.
    pub owner: String,
    /// The providing party (the entry's owner).
    pub provider: String,
    /// Resource name of the catalog entry.
    pub entry: String,
    /// Field paths of the entry's items requested.
    pub items: Vec<String>,
    pub purpose: String,
    pub scenario: String,
    pub validity_days: i32,
    /// When the answer is due (microseconds since the epoch; the first instant past it).
    pub answer_by: i64,
    /// Every item requested is UNCONDITIONAL: granted at filing.
    pub granted_at_once: bool,
    /// Set when the requester withdrew the request.
    pub withdraw_time: Option<i64>,
    /// Set when the requester escalated the request to the coordinating party.
    #[serde(default)]
    pub escalate_time: Option<i64>,
    /// Why the requester escalated.
    #[serde(default)]
    pub escalation_reason: String,
    /// Set once the requester's gateway erased what it held under the grant after it ended.
    #[serde(default)]
    pub deletion: Option<DeletionReceipt>,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// The provider's answer, as stored and replicated (to the requester).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessAnswer {
    pub id: Uuid,
    /// The providing party.
    pub owner: String,
    /// Resource name of the request answered.
    pub request: String,
    pub approve: bool,
    /// On approval: the items granted (a subset of those requested).
    pub items: Vec<String>,
    /// On approval: end of the grant (microseconds since the epoch).
    pub valid_until: i64,
    pub reason: String,
    /// Set when the provider revoked the grant before it expired.
    #[serde(default)]
    pub revoke_time: Option<i64>,
    #[serde(default)]
    pub revoke_reason: String,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// What the requester's gateway erased when a grant ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionReceipt {
    pub time: i64,
    /// "revoked" or "expired".
    pub cause: String,
    pub items: Vec<String>,
    pub records: u64,
    pub log_entries: u64,
    pub evidence: u64,
    /// The records themselves were deleted: the grant was what admitted them (a CONDITIONAL
    /// entry), not just some of their items.
    #[serde(default)]
    pub records_deleted: bool,
    /// Data keys destroyed with the erasure (a gateway that seals at rest): every copy they
    /// sealed — in backups, database leftovers, snapshots — is unreadable.
    #[serde(default)]
    pub keys_destroyed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessState {
    Requested,
    Approved,
    Refused,
    Withdrawn,
    /// Approved, then revoked by the provider.
    Revoked,
    /// Approved, and past its end.
    Expired,
}

/// What a request amounts to now: its state, whether its answer is overdue, and the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessOutcome {
    pub state: AccessState,
    /// REQUESTED and past the deadline.
    pub overdue: bool,
    /// The items granted (APPROVED only).
    pub granted: Vec<String>,
    /// End of the grant as given (APPROVED, REVOKED, EXPIRED; 0 otherwise).
    pub valid_until: i64,
}

impl AccessRequest {
    /// Checks what the requester wrote, prefixing paths with `prefix`.
    pub fn validate(&self, prefix: &str, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        if self.entry.is_empty() {
            v.add(f("entry"), "is required");
        }
        check_text(v, &f("purpose"), &self.purpose, 500, true);
        check_text(v, &f("scenario"), &self.scenario, 1000, false);
        if !(1..=MAX_VALIDITY_DAYS).contains(&self.validity_days) {
            v.add(
                f("validity_days"),
                format!("must be 1 to {MAX_VALIDITY_DAYS} days"),
            );
        }
        if self.items.is_empty() {
            v.add(f("items"), "names no item; name at least one");
        } else if self.items.len() > MAX_ITEMS {
            v.add(f("items"), format!("names more than {MAX_ITEMS} items"));
        }
        for (i, item) in self.items.iter().enumerate().take(MAX_ITEMS) {
            if self.items[..i].contains(item) {
                v.add(
                    format!("{prefix}.items[{i}]"),
                    format!("`{item}` is named twice"),
                );
            }
        }
    }

    /// The state derived from the request, its answer (if any arrived) and the time `now`. A
    /// withdrawal wins over an answer that crossed it; a request granted at filing needs none.
    pub fn outcome(&self, answer: Option<&AccessAnswer>, now: i64) -> AccessOutcome {
        let none = |state, overdue| AccessOutcome {
            state,
            overdue,
            granted: Vec::new(),
            valid_until: 0,
        };
        if self.withdraw_time.is_some() {
            return none(AccessState::Withdrawn, false);
        }
        let grant = |items: &[String], valid_until: i64, revoked: bool| {
            let state = if revoked {
                AccessState::Revoked
            } else if now >= valid_until {
                AccessState::Expired
            } else {
                AccessState::Approved
            };
            AccessOutcome {
                state,
                overdue: false,
                granted: if state == AccessState::Approved {
                    items.to_vec()
                } else {
                    Vec::new()
                },
                valid_until,
            }
        };
        if self.granted_at_once {
            let until = self.create_time + i64::from(self.validity_days) * DAY_MICROS;
            return grant(&self.items, until, false);
        }
        match answer {
            Some(a) if a.approve => grant(&a.items, a.valid_until, a.revoke_time.is_some()),
            Some(_) => none(AccessState::Refused, false),
            None => none(AccessState::Requested, now >= self.answer_by),
        }
    }

    /// End of the grant when approved for `days` from `from`.
    pub fn valid_until(from: i64, days: i32) -> i64 {
        from + i64::from(days) * DAY_MICROS
    }
}

#[cfg(test)]
mod tests;
