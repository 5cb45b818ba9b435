//! The wire types every layer that talks protobuf shares: the generated code of
//! `yrd.exchange.v1` ([`pb`]) and the conversions between it and the domain, one file per
//! record family ([`projects`], [`allocations`] with their decisions, [`referrals`],
//! [`catalog`], [`access`]); the glue they share — timestamps, record kinds, enum numbers —
//! is here. The gRPC handlers (`api`), replication (`exchange`), witnessing (`audit`) and the
//! command line (`cli`) all use these, so no conversion is written twice.
//!
//! Type-level problems (an enum number that does not exist, a malformed timestamp) are
//! collected as field violations here; the `records` module adds the semantic ones.

use prost_types::Timestamp;

use crate::domain::RecordKind;
use crate::records::Violations;

pub mod access;
pub mod allocations;
pub mod catalog;
pub mod codec;
pub mod projects;
pub mod referrals;

pub use codec::{ERROR_DOMAIN, MALFORMED_REQUEST};

/// Generated protobuf and gRPC code for `yrd.exchange.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("yrd.exchange.v1");

    /// Encoded file descriptor set of every proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("yrd_descriptor");
}

/// A time in microseconds since the epoch as a protobuf timestamp.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// Microseconds since the epoch of a timestamp a peer or the gateway itself wrote (0 when
/// absent); unlike [`micros`] it does not check the range, for times that are evidence, not
/// input. A time beyond what microseconds can hold saturates rather than overflowing.
pub fn micros_of(ts: Option<Timestamp>) -> i64 {
    ts.map(|t| {
        t.seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(t.nanos) / 1000)
    })
    .unwrap_or(0)
}

/// Microseconds since the epoch of a timestamp within 0001..9999, `None` outside it.
pub fn micros_in_range(ts: &Timestamp) -> Option<i64> {
    const MIN: i64 = -62_135_596_800;
    const MAX: i64 = 253_402_300_799;
    let valid = (MIN..=MAX).contains(&ts.seconds) && (0..1_000_000_000).contains(&ts.nanos);
    valid.then(|| micros_of(Some(*ts)))
}

/// Microseconds since the epoch, or a violation for a timestamp outside 0001..9999.
pub fn micros(ts: &Timestamp, field: &str, v: &mut Violations) -> i64 {
    micros_in_range(ts).unwrap_or_else(|| {
        v.add(field, "is not a valid timestamp");
        0
    })
}

/// A record kind as replication envelopes name it.
pub fn kind_to_wire(kind: RecordKind) -> pb::RecordKind {
    match kind {
        RecordKind::Project => pb::RecordKind::Project,
        RecordKind::Allocation => pb::RecordKind::Allocation,
        RecordKind::Decision => pb::RecordKind::Decision,
        RecordKind::Referral => pb::RecordKind::Referral,
        RecordKind::ReferralResponse => pb::RecordKind::ReferralResponse,
        RecordKind::CatalogEntry => pb::RecordKind::CatalogEntry,
        RecordKind::AccessRequest => pb::RecordKind::AccessRequest,
        RecordKind::AccessAnswer => pb::RecordKind::AccessAnswer,
    }
}

/// The record kind an envelope names: `Ok(None)` for UNSPECIFIED (a change whose record is
/// not shared with the receiver), `Err(value)` for a number the contract does not define.
pub fn kind_from_wire(value: i32) -> Result<Option<RecordKind>, i32> {
    match pb::RecordKind::try_from(value) {
        Ok(pb::RecordKind::Unspecified) => Ok(None),
        Ok(pb::RecordKind::Project) => Ok(Some(RecordKind::Project)),
        Ok(pb::RecordKind::Allocation) => Ok(Some(RecordKind::Allocation)),
        Ok(pb::RecordKind::Decision) => Ok(Some(RecordKind::Decision)),
        Ok(pb::RecordKind::Referral) => Ok(Some(RecordKind::Referral)),
        Ok(pb::RecordKind::ReferralResponse) => Ok(Some(RecordKind::ReferralResponse)),
        Ok(pb::RecordKind::CatalogEntry) => Ok(Some(RecordKind::CatalogEntry)),
        Ok(pb::RecordKind::AccessRequest) => Ok(Some(RecordKind::AccessRequest)),
        Ok(pb::RecordKind::AccessAnswer) => Ok(Some(RecordKind::AccessAnswer)),
        Err(_) => Err(value),
    }
}

/// Reads a wire enum number, reporting numbers the contract does not define.
fn known<E: TryFrom<i32>>(value: i32, field: &str, v: &mut Violations) -> Option<E> {
    match E::try_from(value) {
        Ok(e) => Some(e),
        Err(_) => {
            v.add(field, format!("{value} is not a known value"));
            None
        }
    }
}
