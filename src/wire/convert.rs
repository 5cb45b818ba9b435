//! Conversions between wire messages (`pb`) and domain records, record kinds and times. Type-level problems (an enum
//! number that does not exist, a malformed timestamp) are collected as field violations here;
//! the `records` module adds the semantic ones.

use prost_types::Timestamp;

use super::pb;
use crate::domain::RecordKind;
use crate::records::negotiation::{Decision, Verdict};
use crate::records::{
    self, Allocation, AllocationStatus, AllocationView, BenefitShare, ChecklistItem,
    ChecklistStatus, Contact, FactorKind, Industry, Investor, Pollutant, Project, ReferralState,
    ReferralView, ResourceName, Stage, Violations,
};

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
pub(super) fn known<E: TryFrom<i32>>(value: i32, field: &str, v: &mut Violations) -> Option<E> {
    match E::try_from(value) {
        Ok(e) => Some(e),
        Err(_) => {
            v.add(field, format!("{value} is not a known value"));
            None
        }
    }
}

pub fn stage_from(value: i32, field: &str, v: &mut Violations) -> Stage {
    use pb::Stage as S;
    match known::<S>(value, field, v) {
        None | Some(S::Unspecified) => Stage::Unspecified,
        Some(S::Lead) => Stage::Lead,
        Some(S::Negotiating) => Stage::Negotiating,
        Some(S::Signed) => Stage::Signed,
        Some(S::Started) => Stage::Started,
        Some(S::InStorage) => Stage::InStorage,
        Some(S::Completed) => Stage::Completed,
        Some(S::Producing) => Stage::Producing,
        Some(S::Cancelled) => Stage::Cancelled,
        Some(S::Referred) => Stage::Referred,
    }
}

fn stage_to(s: Stage) -> pb::Stage {
    use pb::Stage as S;
    match s {
        Stage::Unspecified => S::Unspecified,
        Stage::Lead => S::Lead,
        Stage::Negotiating => S::Negotiating,
        Stage::Signed => S::Signed,
        Stage::Started => S::Started,
        Stage::InStorage => S::InStorage,
        Stage::Completed => S::Completed,
        Stage::Producing => S::Producing,
        Stage::Cancelled => S::Cancelled,
        Stage::Referred => S::Referred,
    }
}

pub fn industry_from(value: i32, field: &str, v: &mut Violations) -> Industry {
    use pb::Industry as I;
    match known::<I>(value, field, v) {
        None | Some(I::Unspecified) => Industry::Unspecified,
        Some(I::NewEnergyVehicles) => Industry::NewEnergyVehicles,
        Some(I::CncMachineTools) => Industry::CncMachineTools,
        Some(I::Other) => Industry::Other,
    }
}

fn industry_to(i: Industry) -> pb::Industry {
    use pb::Industry as I;
    match i {
        Industry::Unspecified => I::Unspecified,
        Industry::NewEnergyVehicles => I::NewEnergyVehicles,
        Industry::CncMachineTools => I::CncMachineTools,
        Industry::Other => I::Other,
    }
}

fn checklist_status_from(value: i32, field: &str, v: &mut Violations) -> ChecklistStatus {
    use pb::ChecklistStatus as C;
    match known::<C>(value, field, v) {
        None | Some(C::Unspecified) => ChecklistStatus::Unspecified,
        Some(C::Pending) => ChecklistStatus::Pending,
        Some(C::InProgress) => ChecklistStatus::InProgress,
        Some(C::Approved) => ChecklistStatus::Approved,
        Some(C::Rejected) => ChecklistStatus::Rejected,
        Some(C::NotRequired) => ChecklistStatus::NotRequired,
    }
}

fn checklist_status_to(s: ChecklistStatus) -> pb::ChecklistStatus {
    use pb::ChecklistStatus as C;
    match s {
        ChecklistStatus::Unspecified => C::Unspecified,
        ChecklistStatus::Pending => C::Pending,
        ChecklistStatus::InProgress => C::InProgress,
        ChecklistStatus::Approved => C::Approved,
        ChecklistStatus::Rejected => C::Rejected,
        ChecklistStatus::NotRequired => C::NotRequired,
    }
}

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

/// A project as sent by a client; output-only fields are ignored.
pub fn project_from(p: pb::Project, v: &mut Violations) -> Project {
    let investor = p.investor.unwrap_or_default();
    let contact = p.contact.unwrap_or_default();
    Project {
        id: uuid::Uuid::nil(),
        owner: String::new(),
        display_name: p.display_name,
        investor: Investor {
            name: investor.name,
            credit_code: investor.credit_code,
        },
        industry: industry_from(p.industry, "project.industry", v),
        industry_code: p.industry_code,
        total_investment_yuan: p.total_investment_yuan,
        land_area_mu: p.land_area_mu,
        platform: p.platform,
        stage: stage_from(p.stage, "project.stage", v),
        contact: Contact {
            name: contact.name,
            phone: contact.phone,
        },
        service_officer: p.service_officer,
        checklist: p
            .checklist
            .into_iter()
            .enumerate()
            .map(|(i, c)| ChecklistItem {
                item: c.item,
                department: c.department,
                status: checklist_status_from(
                    c.status,
                    &format!("project.checklist[{i}].status"),
                    v,
                ),
                due_date: c.due_date,
            })
            .collect(),
        labels: p.labels,
        referred_from: None,
        revision: 0,
        create_time: 0,
        update_time: 0,
    }
}

pub fn project_to(p: Project) -> pb::Project {
    let name = ResourceName::new(&p.owner, RecordKind::Project, p.id);
    pb::Project {
        etag: records::etag(&name, p.revision),
        name: name.to_string(),
        owner: p.owner,
        display_name: p.display_name,
        investor: Some(pb::Investor {
            name: p.investor.name,
            credit_code: p.investor.credit_code,
        }),
        industry: industry_to(p.industry) as i32,
        industry_code: p.industry_code,
        total_investment_yuan: p.total_investment_yuan,
        land_area_mu: p.land_area_mu,
        platform: p.platform,
        stage: stage_to(p.stage) as i32,
        contact: Some(pb::Contact {
            name: p.contact.name,
            phone: p.contact.phone,
        }),
        service_officer: p.service_officer,
        checklist: p
            .checklist
            .into_iter()
            .map(|c| pb::ChecklistItem {
                item: c.item,
                department: c.department,
                status: checklist_status_to(c.status) as i32,
                due_date: c.due_date,
            })
            .collect(),
        labels: p.labels,
        referred_from: p.referred_from.unwrap_or_default(),
        create_time: Some(timestamp(p.create_time)),
        update_time: Some(timestamp(p.update_time)),
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

pub fn referral_state_from(value: i32, field: &str, v: &mut Violations) -> Option<ReferralState> {
    use pb::ReferralState as R;
    match known::<R>(value, field, v) {
        None | Some(R::Unspecified) => None,
        Some(R::Pending) => Some(ReferralState::Pending),
        Some(R::Accepted) => Some(ReferralState::Accepted),
        Some(R::Declined) => Some(ReferralState::Declined),
    }
}

pub fn referral_to(view: ReferralView) -> pb::Referral {
    let r = view.referral;
    let state = match view.state {
        ReferralState::Pending => pb::ReferralState::Pending,
        ReferralState::Accepted => pb::ReferralState::Accepted,
        ReferralState::Declined => pb::ReferralState::Declined,
    };
    let response = view.response;
    pb::Referral {
        name: ResourceName::new(&r.owner, RecordKind::Referral, r.id).to_string(),
        from_party: r.owner,
        to_party: r.to_party,
        project: r.project,
        reason: r.reason,
        state: state as i32,
        response_comment: response
            .as_ref()
            .map(|x| x.comment.clone())
            .unwrap_or_default(),
        accepted_project: response
            .as_ref()
            .and_then(|x| x.new_project.clone())
            .unwrap_or_default(),
        create_time: Some(timestamp(r.create_time)),
        response_time: response.map(|x| timestamp(x.create_time)),
    }
}
