//! 要素共商: factor-allocation negotiation. A decision is a record owned by the deciding party;
//! an allocation's status is never written but derived by [`derive`], one pure function of the
//! proposal, the set of decisions and the time, so every gateway holding the same proposal and
//! decisions computes the same status whatever order they arrived in.
//!
//! The rules, round by round starting at 1 with the proposed terms:
//! - only decisions of required parties on that round count, one per party (if a party somehow
//!   has several, the earliest by creation time, then id, counts);
//! - decisions made after `valid_until`, or after the proposer withdrew, do not count;
//! - a REJECT ends the negotiation as REJECTED (it takes precedence over counters in the same
//!   round);
//! - otherwise a COUNTER opens the next round with the counter's terms; when several parties
//!   counter the same round, the one earliest in the federation's party order wins and the
//!   other counters are superseded; approvals of the countered round are reset;
//! - otherwise, when every required party approved the round: AGREED;
//! - otherwise the round is open: WITHDRAWN if the proposer withdrew, EXPIRED past
//!   `valid_until`, else PROPOSED.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Federation;
use crate::records::{Allocation, AllocationStatus, BenefitShare};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Unspecified,
    Approve,
    Reject,
    Counter,
}

/// One required party's decision on one round of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: Uuid,
    /// The deciding party.
    pub owner: String,
    /// Resource name of the allocation decided on.
    pub allocation: String,
    pub round: i32,
    pub verdict: Verdict,
    /// New quantity proposed by a COUNTER (decimal string), if it changes the quantity.
    pub counter_quantity: Option<String>,
    /// New benefit shares proposed by a COUNTER, if it changes them.
    pub counter_shares: Option<Vec<BenefitShare>>,
    pub comment: String,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// The derived state of a negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: AllocationStatus,
    /// The round in force: the open one, or the one that ended the negotiation.
    pub round: i32,
    /// Terms of that round.
    pub quantity: String,
    pub shares: Vec<BenefitShare>,
    /// Decisions that did not count: losing counters, approvals reset by a counter, and
    /// decisions on rounds that never opened, by non-required parties, or too late.
    pub superseded: BTreeSet<Uuid>,
}

/// Derives the status of `allocation` from `decisions` at time `now` (microseconds).
pub fn derive(
    allocation: &Allocation,
    decisions: &[Decision],
    federation: &Federation,
    now: i64,
) -> Outcome {
    let name = crate::records::ResourceName::new(
        &allocation.owner,
        crate::domain::RecordKind::Allocation,
        allocation.id,
    )
    .to_string();
    let cutoff = allocation
        .withdraw_time
        .map_or(allocation.valid_until, |w| w.min(allocation.valid_until));
    let required: BTreeSet<&str> = allocation
        .required_parties
        .iter()
        .map(String::as_str)
        .collect();

    let (counting, mut superseded) = counting_decisions(&name, decisions, &required, cutoff);
    let mut round = 1;
    let mut quantity = allocation.quantity.clone();
    let mut shares = allocation.benefit_shares.clone();
    let status = loop {
        let this_round: Vec<&Decision> = counting
            .range((round, "")..(round + 1, ""))
            .map(|(_, d)| *d)
            .collect();
        if this_round.iter().any(|d| d.verdict == Verdict::Reject) {
            for d in this_round.iter().filter(|d| d.verdict != Verdict::Reject) {
                superseded.insert(d.id);
            }
            break AllocationStatus::Rejected;
        }
        let winner = this_round
            .iter()
            .filter(|d| d.verdict == Verdict::Counter)
            .min_by_key(|d| federation.order_of(&d.owner).unwrap_or(usize::MAX));
        if let Some(winner) = winner {
            for d in this_round.iter().filter(|d| d.id != winner.id) {
                superseded.insert(d.id);
            }
            if let Some(q) = &winner.counter_quantity {
                quantity = q.clone();
            }
            if let Some(s) = &winner.counter_shares {
                shares = s.clone();
            }
            round += 1;
            continue;
        }
        let approved: BTreeSet<&str> = this_round
            .iter()
            .filter(|d| d.verdict == Verdict::Approve)
            .map(|d| d.owner.as_str())
            .collect();
        if !required.is_empty() && approved == required {
            break AllocationStatus::Agreed;
        }
        break unsettled(allocation, now);
    };
    for ((r, _), d) in &counting {
        if *r > round {
            superseded.insert(d.id);
        }
    }
    Outcome {
        status,
        round,
        quantity,
        shares,
        superseded,
    }
}

/// The status of a negotiation no round of which settled: withdrawn by the proposer, expired
/// past its valid-until, or still proposed.
fn unsettled(allocation: &Allocation, now: i64) -> AllocationStatus {
    if allocation.withdraw_time.is_some() {
        AllocationStatus::Withdrawn
    } else if now > allocation.valid_until {
        AllocationStatus::Expired
    } else {
        AllocationStatus::Proposed
    }
}

/// The one counting decision per (round, party), chosen independently of arrival order (the
/// earliest, ties broken by id), and the decisions that do not count: from a party whose
/// approval is not required, made after the cutoff (withdrawal or expiry), without a round
/// or a verdict, or later than the counting one.
fn counting_decisions<'a>(
    name: &str,
    decisions: &'a [Decision],
    required: &BTreeSet<&str>,
    cutoff: i64,
) -> (BTreeMap<(i32, &'a str), &'a Decision>, BTreeSet<Uuid>) {
    let mut counting: BTreeMap<(i32, &str), &Decision> = BTreeMap::new();
    let mut superseded = BTreeSet::new();
    for d in decisions.iter().filter(|d| d.allocation == name) {
        let eligible = required.contains(d.owner.as_str())
            && d.create_time <= cutoff
            && d.round >= 1
            && d.verdict != Verdict::Unspecified;
        if !eligible {
            superseded.insert(d.id);
            continue;
        }
        let slot = counting.entry((d.round, d.owner.as_str())).or_insert(d);
        if (d.create_time, d.id) < (slot.create_time, slot.id) {
            superseded.insert(slot.id);
            *slot = d;
        } else if slot.id != d.id {
            superseded.insert(d.id);
        }
    }
    (counting, superseded)
}

#[cfg(test)]
mod tests;
