//! Conversions of projects between wire messages and domain records.

use super::pb;
use super::{known, timestamp};
use crate::domain::RecordKind;
use crate::records::{
    self, ChecklistItem, ChecklistStatus, Contact, Industry, Investor, Project, ResourceName,
    Stage, Violations,
};

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
