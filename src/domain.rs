//! The federation's shared vocabulary, at the bottom of the crate: its members and their
//! order ([`Federation`]), the kinds of record it exchanges ([`RecordKind`]), the rule for
//! party ids, and the clock. Every other module may use it; it uses none of them.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A member list that cannot be a federation, naming the list entry (a config key such as
/// `parties[2].id`) it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct MembershipError {
    pub key: String,
    pub message: String,
}

impl MembershipError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        MembershipError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// One member of the federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyInfo {
    pub id: String,
    pub display_name: String,
    pub province: String,
    pub division_code: String,
    /// Suspended by the federation (`suspended = true` in its `[[parties]]` entry): still a
    /// member — its records stay valid, its place in the order still breaks ties — but its
    /// gateway and systems are refused, nothing is pulled from it or served to it, and new
    /// records cannot name it.
    pub suspended: bool,
}

/// The federation's members in party order. The order is part of the contract: it breaks ties
/// between competing counter-proposals, so every gateway must be configured with the same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Federation {
    parties: Vec<PartyInfo>,
}

impl Federation {
    /// Builds a federation from an ordered member list. Ids must be valid and distinct.
    pub fn new(parties: Vec<PartyInfo>) -> Result<Self, MembershipError> {
        if parties.is_empty() {
            return Err(MembershipError::new(
                "parties",
                "at least one party is required",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, p) in parties.iter().enumerate() {
            if let Err(m) = check_party_id(&p.id) {
                return Err(MembershipError::new(format!("parties[{i}].id"), m));
            }
            if !seen.insert(p.id.clone()) {
                return Err(MembershipError::new(
                    format!("parties[{i}].id"),
                    format!("party `{}` is listed twice", p.id),
                ));
            }
            if p.display_name.trim().is_empty() {
                return Err(MembershipError::new(
                    format!("parties[{i}].display_name"),
                    "must not be empty",
                ));
            }
            let code = &p.division_code;
            if !(code.is_empty() || (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()))) {
                return Err(MembershipError::new(
                    format!("parties[{i}].division_code"),
                    "must be six digits (GB/T 2260) or empty",
                ));
            }
        }
        Ok(Federation { parties })
    }

    /// Members in party order.
    pub fn parties(&self) -> &[PartyInfo] {
        &self.parties
    }

    pub fn get(&self, id: &str) -> Option<&PartyInfo> {
        self.parties.iter().find(|p| p.id == id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// A member that is not suspended: one this gateway talks to.
    pub fn is_active(&self, id: &str) -> bool {
        self.get(id).is_some_and(|p| !p.suspended)
    }

    /// Position of a party in the federation's order.
    pub fn order_of(&self, id: &str) -> Option<usize> {
        self.parties.iter().position(|p| p.id == id)
    }
}

/// The federation as this gateway knows it now. A running gateway changes it when the party
/// list in its configuration file changes; everything that decides by membership reads the
/// current list through this handle (never a copy taken at start), and what must act on a
/// change (peer pullers, open peer streams) waits for one with [`Members::changed`].
#[derive(Debug, Clone)]
pub struct Members {
    current: tokio::sync::watch::Receiver<Arc<Federation>>,
}

impl Members {
    /// A list that never changes (tools, benchmarks, tests of one rule).
    pub fn fixed(federation: Federation) -> Members {
        Members::changeable(federation).1
    }

    /// A list and the sender that changes it.
    pub fn changeable(
        federation: Federation,
    ) -> (tokio::sync::watch::Sender<Arc<Federation>>, Members) {
        let (tx, current) = tokio::sync::watch::channel(Arc::new(federation));
        (tx, Members { current })
    }

    /// The list as it is now.
    pub fn current(&self) -> Arc<Federation> {
        self.current.borrow().clone()
    }

    /// Waits for the next change; false once the list can no longer change.
    pub async fn changed(&mut self) -> bool {
        self.current.changed().await.is_ok()
    }
}

/// Party ids appear in resource names, SPIFFE ids and file names: lowercase ASCII only.
pub fn check_party_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id.as_bytes()[0].is_ascii_lowercase()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a party id: 1-32 characters of a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

/// Kinds of record, as stored and as named in sharing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Project,
    Allocation,
    /// A party's decision on one round of an allocation; owned by the deciding party.
    Decision,
    /// A project handed to another party; owned by the referring party.
    Referral,
    /// The receiving party's answer to a referral; owned by the receiver.
    ReferralResponse,
    /// An entry of a party's resource catalog (政务数据目录); owned by the publishing party and
    /// always shared with every member.
    CatalogEntry,
    /// A request for items of another party's catalog entry; owned by the requester.
    AccessRequest,
    /// The provider's answer to an access request; owned by the provider.
    AccessAnswer,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Project => "project",
            RecordKind::Allocation => "allocation",
            RecordKind::Decision => "decision",
            RecordKind::Referral => "referral",
            RecordKind::ReferralResponse => "referral_response",
            RecordKind::CatalogEntry => "catalog_entry",
            RecordKind::AccessRequest => "access_request",
            RecordKind::AccessAnswer => "access_answer",
        }
    }

    /// Every kind, in a fixed order.
    pub const ALL: [RecordKind; 8] = [
        RecordKind::Project,
        RecordKind::Allocation,
        RecordKind::Decision,
        RecordKind::Referral,
        RecordKind::ReferralResponse,
        RecordKind::CatalogEntry,
        RecordKind::AccessRequest,
        RecordKind::AccessAnswer,
    ];

    /// The kinds an owner's sharing rules decide on, per peer. The sharing layer's own records
    /// are not among them: every party's catalog is visible to every member, and an access
    /// request and its answer go to the other party of the request.
    pub const GOVERNED: [RecordKind; 5] = [
        RecordKind::Project,
        RecordKind::Allocation,
        RecordKind::Decision,
        RecordKind::Referral,
        RecordKind::ReferralResponse,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "project" => Some(RecordKind::Project),
            "allocation" => Some(RecordKind::Allocation),
            "decision" => Some(RecordKind::Decision),
            "referral" => Some(RecordKind::Referral),
            "referral_response" => Some(RecordKind::ReferralResponse),
            "catalog_entry" => Some(RecordKind::CatalogEntry),
            "access_request" => Some(RecordKind::AccessRequest),
            "access_answer" => Some(RecordKind::AccessAnswer),
            _ => None,
        }
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Fields the gateway can empty before a record leaves, by record kind: the only fields an
/// item may make CONDITIONAL or NOT_SHARED apart from its entry. Identity fields (name,
/// owner, id) and what a negotiation or referral needs go with the record or not at all
/// (the entry's own class decides).
pub const RESTRICTABLE_FIELDS: &[(RecordKind, &str)] = &[
    (RecordKind::Project, "contact"),
    (RecordKind::Project, "contact.name"),
    (RecordKind::Project, "contact.phone"),
    (RecordKind::Project, "service_officer"),
    (RecordKind::Project, "investor.credit_code"),
    (RecordKind::Project, "total_investment_yuan"),
    (RecordKind::Project, "land_area_mu"),
    (RecordKind::Project, "platform"),
    (RecordKind::Project, "checklist"),
    (RecordKind::Project, "labels"),
    (RecordKind::Allocation, "description"),
    (RecordKind::Decision, "comment"),
    (RecordKind::Referral, "reason"),
    (RecordKind::ReferralResponse, "comment"),
];
