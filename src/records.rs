//! The records the federation exchanges — projects and factor allocations — with their
//! validation rules, and [`Records`], the service that applies SPEC §3 to every write:
//! validation of every field, single-owner writes, idempotency by request id, optimistic
//! concurrency by etag, forward-only stages.
//!
//! Types here are domain types; the `api` module converts the wire messages to and from them.

pub mod access;
pub mod allocation;
pub mod catalog;
pub mod credit_code;
mod feed;
pub mod negotiation;
pub mod project;
pub mod referral;
mod service;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use service::{page_token, parse_page};

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use access::{AccessAnswer, AccessOutcome, AccessRequest, AccessState, DeletionReceipt};
pub use allocation::{Allocation, AllocationStatus, BenefitShare, FactorKind, Pollutant};
pub use catalog::{CatalogEntry, DataItem, SharingClass};
pub use feed::{Behind, Feed};
pub use project::{ChecklistItem, ChecklistStatus, Contact, Industry, Investor, Project, Stage};
pub use referral::{Referral, ReferralResponse, ReferralState};
pub use service::{
    AccessFilter, AccessView, AllocationFilter, AllocationView, Answer, AnyRecord, CatalogFilter,
    Clock, Decide, MAX_PAGE_SIZE, Page, ProjectFilter, Records, ReferralFilter, ReferralView,
    WriteMeta, decode_record,
};

use crate::domain::RecordKind;
use crate::store::StoreError;

/// One bad field: its path in the request (e.g. `project.investor.credit_code`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Every bad field of one request, so a client can fix them all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a bad field. A field keeps its first violation only: the type-level problem
    /// (e.g. an unknown enum number) is more precise than what follows from it ("required").
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        let field = field.into();
        if self.0.iter().any(|v| v.field == field) {
            return;
        }
        self.0.push(FieldViolation {
            field,
            description: description.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldViolation> {
        self.0.iter()
    }

    /// `Ok(())` when nothing was found, else the violations as an error.
    pub fn into_result(self) -> Result<(), RecordError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid(self))
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

/// Why a record operation did not happen. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("invalid request: {0}")]
    Invalid(Violations),
    #[error("{name} not found")]
    NotFound { name: String },
    /// Only the owner's gateway accepts writes; replicas are read-only.
    #[error("{name} is owned by {owner}; only {owner}'s gateway accepts writes to it")]
    NotOwner { name: String, owner: String },
    /// The etag sent is not the record's current one (AIP-154).
    #[error("{name} was changed since it was read (etag is stale); read it again and retry")]
    StaleEtag { name: String },
    #[error("request id `{request_id}` was already used for a different request")]
    RequestIdReused { request_id: String },
    /// The caller's party may not do this to this record (e.g. decide when not required).
    #[error("{message}")]
    Denied {
        reason: &'static str,
        message: String,
    },
    /// The record is not in a state that allows this (e.g. a decision on a closed round).
    #[error("{message}")]
    Precondition {
        reason: &'static str,
        message: String,
    },
    /// It was already done and may be done once only (e.g. a second decision in a round).
    #[error("{message}")]
    Duplicate {
        reason: &'static str,
        message: String,
    },
    /// Writes are held for a while (the store was restored from a backup and is being
    /// checked against the peers); retrying in a few seconds succeeds.
    #[error("{message}")]
    Held { message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A parsed resource name `parties/{owner}/{collection}/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceName {
    pub owner: String,
    pub kind: RecordKind,
    pub id: Uuid,
}

impl ResourceName {
    fn collection(kind: RecordKind) -> &'static str {
        match kind {
            RecordKind::Project => "projects",
            RecordKind::Allocation => "allocations",
            RecordKind::Decision => "decisions",
            RecordKind::Referral => "referrals",
            RecordKind::ReferralResponse => "referralResponses",
            RecordKind::CatalogEntry => "catalogEntries",
            RecordKind::AccessRequest => "accessRequests",
            RecordKind::AccessAnswer => "accessAnswers",
        }
    }

    pub fn new(owner: &str, kind: RecordKind, id: Uuid) -> Self {
        ResourceName {
            owner: owner.to_string(),
            kind,
            id,
        }
    }

    /// Parses a name of the given kind, describing what is wrong otherwise.
    pub fn parse(name: &str, kind: RecordKind) -> Result<Self, String> {
        let collection = Self::collection(kind);
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["parties", owner, c, id] if *c == collection => {
                crate::domain::check_party_id(owner)?;
                let id = Uuid::parse_str(id).map_err(|_| format!("`{id}` is not a UUID"))?;
                Ok(ResourceName {
                    owner: owner.to_string(),
                    kind,
                    id,
                })
            }
            _ => Err(format!(
                "`{name}` is not of the form parties/{{party}}/{collection}/{{id}}"
            )),
        }
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parties/{}/{}/{}",
            self.owner,
            Self::collection(self.kind),
            self.id
        )
    }
}

/// The etag of a record version: opaque to clients, bound to the name and the revision.
/// Every record of a list page gets one, so it is written without a string per byte: the
/// SHA-256 of `NAME#REVISION`, its first 8 bytes in hex, after the revision.
pub fn etag(name: &ResourceName, revision: i64) -> String {
    use std::fmt::Write;
    /// Feeds formatted text straight into the hash.
    struct Hashing(Sha256);
    impl Write for Hashing {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hashing = Hashing(Sha256::new());
    let _ = write!(hashing, "{name}#{revision}");
    let digest = hashing.0.finalize();
    let mut etag = String::with_capacity(40);
    let _ = write!(etag, "\"{revision}-");
    for b in &digest[..8] {
        etag.push(HEX[usize::from(b >> 4)] as char);
        etag.push(HEX[usize::from(b & 15)] as char);
    }
    etag.push('"');
    etag
}

/// Largest number of digits before the decimal point of a quantity.
const MAX_INT_DIGITS: usize = 15;
/// Largest number of digits after the decimal point of a quantity.
const MAX_FRACTION_DIGITS: usize = 6;

/// Checks an exact decimal string such as `"120.5"`: plain digits, an optional fraction, no
/// sign, exponent or leading zeros. Floating-point spellings like `"1e5"` are refused.
pub fn check_decimal(s: &str) -> Result<(), String> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(format!(
            "`{s}` is not a decimal number like \"120.5\" (no exponent, sign or spaces)"
        ));
    }
    if int.len() > 1 && int.starts_with('0') {
        return Err(format!("`{s}` has leading zeros"));
    }
    if int.len() > MAX_INT_DIGITS {
        return Err(format!(
            "`{s}` has more than {MAX_INT_DIGITS} digits before the point"
        ));
    }
    if frac.is_some_and(|f| f.len() > MAX_FRACTION_DIGITS) {
        return Err(format!(
            "`{s}` has more than {MAX_FRACTION_DIGITS} digits after the point"
        ));
    }
    Ok(())
}

/// True when a valid decimal string is greater than zero.
pub fn decimal_is_positive(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'1'..=b'9'))
}

/// Checks a calendar date written `YYYY-MM-DD`.
pub fn check_date(s: &str) -> Result<(), String> {
    let bad = || format!("`{s}` is not a date like 2026-12-31");
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, String> {
        s[r].parse::<u32>().map_err(|_| bad())
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1..=days).contains(&d) || y < 1900 {
        return Err(bad());
    }
    Ok(())
}

/// The fields an update mask names (AIP-134): an empty mask or "*" names every mutable field.
pub(crate) fn effective_mask(mask: &[String], mutable: &[&str]) -> Vec<String> {
    if mask.is_empty() || mask.iter().any(|p| p == "*") {
        mutable.iter().map(|s| s.to_string()).collect()
    } else {
        mask.to_vec()
    }
}

/// Checks a free-text field's length in characters; `required` refuses blank text.
pub(crate) fn check_text(v: &mut Violations, field: &str, value: &str, max: usize, required: bool) {
    if required && value.trim().is_empty() {
        v.add(field, "is required");
    } else if value.chars().count() > max {
        v.add(field, format!("is longer than {max} characters"));
    } else if value.chars().any(|c| c.is_control()) {
        v.add(field, "contains control characters");
    }
}

#[cfg(test)]
mod tests;
