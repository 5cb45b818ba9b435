//! Conversions of factor allocations and the decisions on them between wire messages and
//! domain records.

use super::pb;
use super::{known, micros, timestamp};
use crate::domain::RecordKind;
use crate::records::negotiation::{Decision, Verdict};
use crate::records::{
    self, Allocation, AllocationStatus, AllocationView, BenefitShare, FactorKind, Pollutant,
    ResourceName, Violations,
};

pub fn factor_kind_from(value: i32, field: &str, v: &mut Violations) -> FactorKind {
    use pb::FactorKind as F;
    match known::<F>(value, field, v) {
        None | Some(F::Unspecified) => FactorKind::Unspecified,
        Some(F::LandQuota) => FactorKind::LandQuota,
        Some(F::EnergyQuota) => FactorKind::EnergyQuota,
        Some(F::EmissionQuota) => FactorKind::EmissionQuota,
        Some(F::Water) => FactorKind::Water,
        Some(F::PowerCapacity) => FactorKind::PowerCapacity,
        Some(F::Funding) => FactorKind::Funding,
    }
}

fn factor_kind_to(k: FactorKind) -> pb::FactorKind {
    use pb::FactorKind as F;
    match k {
        FactorKind::Unspecified => F::Unspecified,
        FactorKind::LandQuota => F::LandQuota,
        FactorKind::EnergyQuota => F::EnergyQuota,
        FactorKind::EmissionQuota => F::EmissionQuota,
        FactorKind::Water => F::Water,
        FactorKind::PowerCapacity => F::PowerCapacity,
        FactorKind::Funding => F::Funding,
    }
}

fn pollutant_from(value: i32, field: &str, v: &mut Violations) -> Pollutant {
    use pb::Pollutant as P;
    match known::<P>(value, field, v) {
        None | Some(P::Unspecified) => Pollutant::Unspecified,
        Some(P::So2) => Pollutant::So2,
        Some(P::Nox) => Pollutant::Nox,
        Some(P::Cod) => Pollutant::Cod,
        Some(P::AmmoniaNitrogen) => Pollutant::AmmoniaNitrogen,
        Some(P::Vocs) => Pollutant::Vocs,
        Some(P::ParticulateMatter) => Pollutant::ParticulateMatter,
    }
}

fn pollutant_to(p: Pollutant) -> pb::Pollutant {
    use pb::Pollutant as P;
    match p {
        Pollutant::Unspecified => P::Unspecified,
        Pollutant::So2 => P::So2,
        Pollutant::Nox => P::Nox,
        Pollutant::Cod => P::Cod,
        Pollutant::AmmoniaNitrogen => P::AmmoniaNitrogen,
        Pollutant::Vocs => P::Vocs,
        Pollutant::ParticulateMatter => P::ParticulateMatter,
    }
}

pub fn status_from(value: i32, field: &str, v: &mut Violations) -> AllocationStatus {
    use pb::AllocationStatus as A;
    match known::<A>(value, field, v) {
        None | Some(A::Unspecified) => AllocationStatus::Unspecified,
        Some(A::Proposed) => AllocationStatus::Proposed,
        Some(A::Agreed) => AllocationStatus::Agreed,
        Some(A::Rejected) => AllocationStatus::Rejected,
        Some(A::Withdrawn) => AllocationStatus::Withdrawn,
        Some(A::Expired) => AllocationStatus::Expired,
    }
}

fn status_to(s: AllocationStatus) -> pb::AllocationStatus {
    use pb::AllocationStatus as A;
    match s {
        AllocationStatus::Unspecified => A::Unspecified,
        AllocationStatus::Proposed => A::Proposed,
        AllocationStatus::Agreed => A::Agreed,
        AllocationStatus::Rejected => A::Rejected,
        AllocationStatus::Withdrawn => A::Withdrawn,
        AllocationStatus::Expired => A::Expired,
    }
}

/// An allocation as proposed by a client; output-only fields are ignored.
pub fn allocation_from(a: pb::Allocation, v: &mut Violations) -> Allocation {
    Allocation {
        id: uuid::Uuid::nil(),
        owner: String::new(),
        kind: factor_kind_from(a.kind, "allocation.kind", v),
        quantity: a.quantity,
        pollutant: pollutant_from(a.pollutant, "allocation.pollutant", v),
        from_party: a.from_party,
        to_party: a.to_party,
        project: (!a.project.is_empty()).then_some(a.project),
        benefit_shares: a
            .benefit_shares
            .into_iter()
            .map(|s| BenefitShare {
                party: s.party,
                basis_points: s.basis_points,
            })
            .collect(),
        required_parties: a.required_parties,
        valid_until: a
            .valid_until
            .map(|t| micros(&t, "allocation.valid_until", v))
            .unwrap_or(0),
        round: 0,
        description: a.description,
        withdraw_time: None,
        revision: 0,
        create_time: 0,
        update_time: 0,
    }
}

fn shares_to(shares: Vec<BenefitShare>) -> Vec<pb::BenefitShare> {
    shares
        .into_iter()
        .map(|s| pb::BenefitShare {
            party: s.party,
            basis_points: s.basis_points,
        })
        .collect()
}

pub fn shares_from(shares: Vec<pb::BenefitShare>) -> Vec<BenefitShare> {
    shares
        .into_iter()
        .map(|s| BenefitShare {
            party: s.party,
            basis_points: s.basis_points,
        })
        .collect()
}

/// An allocation with its decisions and derived status, as clients see it.
pub fn allocation_to(view: AllocationView) -> pb::Allocation {
    let AllocationView {
        allocation: a,
        decisions,
        outcome,
    } = view;
    let name = ResourceName::new(&a.owner, RecordKind::Allocation, a.id);
    let mut decisions: Vec<pb::Decision> = decisions
        .into_iter()
        .map(|d| {
            let superseded = outcome.superseded.contains(&d.id);
            decision_to(d, superseded)
        })
        .collect();
    decisions.sort_by(|a, b| (a.round, &a.name).cmp(&(b.round, &b.name)));
    pb::Allocation {
        etag: records::etag(&name, a.revision),
        name: name.to_string(),
        owner: a.owner,
        kind: factor_kind_to(a.kind) as i32,
        quantity: a.quantity,
        unit: a.kind.unit().to_string(),
        pollutant: pollutant_to(a.pollutant) as i32,
        from_party: a.from_party,
        to_party: a.to_party,
        project: a.project.unwrap_or_default(),
        benefit_shares: shares_to(a.benefit_shares),
        required_parties: a.required_parties,
        valid_until: Some(timestamp(a.valid_until)),
        round: outcome.round,
        status: status_to(outcome.status) as i32,
        description: a.description,
        create_time: Some(timestamp(a.create_time)),
        update_time: Some(timestamp(a.update_time)),
        decisions,
        current_quantity: outcome.quantity,
        current_benefit_shares: shares_to(outcome.shares),
        withdraw_time: a.withdraw_time.map(timestamp),
    }
}

pub fn verdict_from(value: i32, field: &str, v: &mut Violations) -> Verdict {
    use pb::Verdict as W;
    match known::<W>(value, field, v) {
        None | Some(W::Unspecified) => Verdict::Unspecified,
        Some(W::Approve) => Verdict::Approve,
        Some(W::Reject) => Verdict::Reject,
        Some(W::Counter) => Verdict::Counter,
    }
}

fn verdict_to(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Unspecified => pb::Verdict::Unspecified,
        Verdict::Approve => pb::Verdict::Approve,
        Verdict::Reject => pb::Verdict::Reject,
        Verdict::Counter => pb::Verdict::Counter,
    }
}

pub fn decision_to(d: Decision, superseded: bool) -> pb::Decision {
    pb::Decision {
        name: ResourceName::new(&d.owner, RecordKind::Decision, d.id).to_string(),
        party: d.owner,
        allocation: d.allocation,
        round: d.round,
        verdict: verdict_to(d.verdict) as i32,
        counter_quantity: d.counter_quantity.unwrap_or_default(),
        counter_benefit_shares: shares_to(d.counter_shares.unwrap_or_default()),
        comment: d.comment,
        superseded,
        create_time: Some(timestamp(d.create_time)),
    }
}
