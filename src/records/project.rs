//! Investment projects (项目) and their rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Violations, check_date, check_decimal, check_text, credit_code, effective_mask};

/// Stages of a project. Declaration order is the order stages move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    /// Not given in a request; never stored.
    Unspecified,
    Lead,
    Negotiating,
    Signed,
    Started,
    InStorage,
    Completed,
    Producing,
    Cancelled,
    Referred,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Unspecified => "UNSPECIFIED",
            Stage::Lead => "LEAD",
            Stage::Negotiating => "NEGOTIATING",
            Stage::Signed => "SIGNED",
            Stage::Started => "STARTED",
            Stage::InStorage => "IN_STORAGE",
            Stage::Completed => "COMPLETED",
            Stage::Producing => "PRODUCING",
            Stage::Cancelled => "CANCELLED",
            Stage::Referred => "REFERRED",
        }
    }

    /// CANCELLED and REFERRED end a project.
    pub fn is_terminal(self) -> bool {
        matches!(self, Stage::Cancelled | Stage::Referred)
    }

    /// Whether a project at `self` may move to `next` by an update. Stages move forward only
    /// (skipping is allowed); CANCELLED is reachable from any open stage; REFERRED only through
    /// an accepted referral, never by an update.
    pub fn check_move(self, next: Stage) -> Result<(), String> {
        if next == self {
            return Ok(());
        }
        if self.is_terminal() {
            return Err(format!(
                "project is {} and its stage can no longer change",
                self.as_str()
            ));
        }
        match next {
            Stage::Unspecified => Err("stage is required".into()),
            Stage::Referred => Err("REFERRED is set only by accepting a referral".into()),
            Stage::Cancelled => Ok(()),
            _ if next < self => Err(format!(
                "stages only move forward: {} cannot go back to {}",
                self.as_str(),
                next.as_str()
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Industry {
    Unspecified,
    NewEnergyVehicles,
    CncMachineTools,
    Other,
}

impl Industry {
    pub fn as_str(self) -> &'static str {
        match self {
            Industry::Unspecified => "UNSPECIFIED",
            Industry::NewEnergyVehicles => "NEW_ENERGY_VEHICLES",
            Industry::CncMachineTools => "CNC_MACHINE_TOOLS",
            Industry::Other => "OTHER",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChecklistStatus {
    /// Stored as PENDING.
    Unspecified,
    Pending,
    InProgress,
    Approved,
    Rejected,
    NotRequired,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Investor {
    pub name: String,
    pub credit_code: String,
}

/// Personal information; sharing policies can withhold it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub name: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecklistItem {
    pub item: String,
    pub department: String,
    pub status: ChecklistStatus,
    /// YYYY-MM-DD or empty.
    pub due_date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub owner: String,
    pub display_name: String,
    pub investor: Investor,
    pub industry: Industry,
    pub industry_code: String,
    pub total_investment_yuan: i64,
    /// Decimal string or empty.
    pub land_area_mu: String,
    pub platform: String,
    pub stage: Stage,
    pub contact: Contact,
    pub service_officer: String,
    pub checklist: Vec<ChecklistItem>,
    pub labels: BTreeMap<String, String>,
    /// Resource name of the project this one was referred from.
    pub referred_from: Option<String>,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

/// Fields an update may name in its mask, in the order a full update applies them.
pub const MUTABLE_FIELDS: &[&str] = &[
    "display_name",
    "investor",
    "industry",
    "industry_code",
    "total_investment_yuan",
    "land_area_mu",
    "platform",
    "stage",
    "contact",
    "service_officer",
    "checklist",
    "labels",
];

/// Sub-fields a mask may name individually.
const MUTABLE_SUBFIELDS: &[&str] = &[
    "investor.name",
    "investor.credit_code",
    "contact.name",
    "contact.phone",
];

const MAX_CHECKLIST_ITEMS: usize = 200;
const MAX_LABELS: usize = 64;

impl Project {
    /// Copies the masked fields of `patch` into `self`; unknown or output-only paths are
    /// reported under `update_mask`.
    pub fn apply_mask(&mut self, patch: &Project, mask: &[String], v: &mut Violations) {
        for path in effective_mask(mask, MUTABLE_FIELDS) {
            match path.as_str() {
                "display_name" => self.display_name = patch.display_name.clone(),
                "investor" => self.investor = patch.investor.clone(),
                "investor.name" => self.investor.name = patch.investor.name.clone(),
                "investor.credit_code" => {
                    self.investor.credit_code = patch.investor.credit_code.clone()
                }
                "industry" => self.industry = patch.industry,
                "industry_code" => self.industry_code = patch.industry_code.clone(),
                "total_investment_yuan" => self.total_investment_yuan = patch.total_investment_yuan,
                "land_area_mu" => self.land_area_mu = patch.land_area_mu.clone(),
                "platform" => self.platform = patch.platform.clone(),
                "stage" => self.stage = patch.stage,
                "contact" => self.contact = patch.contact.clone(),
                "contact.name" => self.contact.name = patch.contact.name.clone(),
                "contact.phone" => self.contact.phone = patch.contact.phone.clone(),
                "service_officer" => self.service_officer = patch.service_officer.clone(),
                "checklist" => self.checklist = patch.checklist.clone(),
                "labels" => self.labels = patch.labels.clone(),
                other => {
                    v.add(
                        "update_mask",
                        format!(
                            "`{other}` is not a field an update can change (mutable: {}, {})",
                            MUTABLE_FIELDS.join(", "),
                            MUTABLE_SUBFIELDS.join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// Checks every field, prefixing paths with `prefix` (e.g. "project").
    pub fn validate(&self, prefix: &str, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        check_text(v, &f("display_name"), &self.display_name, 200, true);
        check_text(v, &f("investor.name"), &self.investor.name, 200, true);
        if self.investor.credit_code.is_empty() {
            v.add(f("investor.credit_code"), "is required");
        } else if let Err(e) = credit_code::validate(&self.investor.credit_code) {
            v.add(
                f("investor.credit_code"),
                format!("not a valid unified social credit code: {e}"),
            );
        }
        if self.industry == Industry::Unspecified {
            v.add(f("industry"), "is required");
        }
        if !self.industry_code.is_empty() && !is_industry_code(&self.industry_code) {
            v.add(
                f("industry_code"),
                format!(
                    "`{}` is not a GB/T 4754 code like \"C3612\"",
                    self.industry_code
                ),
            );
        }
        if self.total_investment_yuan < 0 {
            v.add(f("total_investment_yuan"), "must not be negative");
        }
        if !self.land_area_mu.is_empty() {
            if let Err(e) = check_decimal(&self.land_area_mu) {
                v.add(f("land_area_mu"), e);
            }
        }
        check_text(v, &f("platform"), &self.platform, 100, false);
        if self.stage == Stage::Unspecified {
            v.add(f("stage"), "is required");
        }
        check_text(v, &f("contact.name"), &self.contact.name, 100, false);
        if !self.contact.phone.is_empty() && !is_phone(&self.contact.phone) {
            v.add(
                f("contact.phone"),
                "is not a phone number (digits, optional leading +, spaces and dashes)",
            );
        }
        check_text(v, &f("service_officer"), &self.service_officer, 100, false);
        self.validate_checklist(prefix, v);
        self.validate_labels(prefix, v);
    }

    /// The approval checklist (一项目一清单): at most so many items, each with an item and a
    /// department, and a due date that is a date.
    fn validate_checklist(&self, prefix: &str, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        if self.checklist.len() > MAX_CHECKLIST_ITEMS {
            v.add(
                f("checklist"),
                format!("has more than {MAX_CHECKLIST_ITEMS} items"),
            );
        }
        for (i, item) in self.checklist.iter().enumerate() {
            let g = |name: &str| format!("{prefix}.checklist[{i}].{name}");
            check_text(v, &g("item"), &item.item, 200, true);
            check_text(v, &g("department"), &item.department, 200, true);
            if !item.due_date.is_empty() {
                if let Err(e) = check_date(&item.due_date) {
                    v.add(g("due_date"), e);
                }
            }
        }
    }

    /// Free labels: at most so many, keys of a-z, 0-9, '_' and '-', values of bounded length.
    fn validate_labels(&self, prefix: &str, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        if self.labels.len() > MAX_LABELS {
            v.add(f("labels"), format!("has more than {MAX_LABELS} labels"));
        }
        for (key, value) in &self.labels {
            let key_ok = !key.is_empty()
                && key.len() <= 63
                && key.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !key_ok {
                v.add(
                    f("labels"),
                    format!("key `{key}` must be 1-63 of a-z, 0-9, '_' and '-'"),
                );
            }
            if value.chars().count() > 256 {
                v.add(
                    f("labels"),
                    format!("value of `{key}` is longer than 256 characters"),
                );
            }
        }
    }

    /// Fills defaults a create leaves open: stage LEAD, checklist items PENDING.
    pub fn apply_defaults(&mut self) {
        if self.stage == Stage::Unspecified {
            self.stage = Stage::Lead;
        }
        for item in &mut self.checklist {
            if item.status == ChecklistStatus::Unspecified {
                item.status = ChecklistStatus::Pending;
            }
        }
    }
}

/// GB/T 4754: a section letter A-T, then 2 to 4 digits (division, group, class).
fn is_industry_code(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=5).contains(&b.len())
        && (b'A'..=b'T').contains(&b[0])
        && b[1..].iter().all(u8::is_ascii_digit)
}

fn is_phone(s: &str) -> bool {
    let body = s.strip_prefix('+').unwrap_or(s);
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    (5..=20).contains(&digits)
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && body.as_bytes().first().is_some_and(u8::is_ascii_digit)
}
