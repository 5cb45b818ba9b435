//! Factor allocations (要素共商) and their rules. Status is derived, never written: see
//! [`Allocation::status`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ResourceName, Violations, check_decimal, check_text, decimal_is_positive};
use crate::domain::Federation;
use crate::domain::RecordKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FactorKind {
    Unspecified,
    LandQuota,
    EnergyQuota,
    EmissionQuota,
    Water,
    PowerCapacity,
    Funding,
}

impl FactorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FactorKind::Unspecified => "UNSPECIFIED",
            FactorKind::LandQuota => "LAND_QUOTA",
            FactorKind::EnergyQuota => "ENERGY_QUOTA",
            FactorKind::EmissionQuota => "EMISSION_QUOTA",
            FactorKind::Water => "WATER",
            FactorKind::PowerCapacity => "POWER_CAPACITY",
            FactorKind::Funding => "FUNDING",
        }
    }

    /// The unit quantities of this kind are given in.
    pub fn unit(self) -> &'static str {
        match self {
            FactorKind::Unspecified => "",
            FactorKind::LandQuota => "mu",
            FactorKind::EnergyQuota => "tce",
            FactorKind::EmissionQuota => "t",
            FactorKind::Water => "m3",
            FactorKind::PowerCapacity => "kVA",
            FactorKind::Funding => "yuan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Pollutant {
    Unspecified,
    So2,
    Nox,
    Cod,
    AmmoniaNitrogen,
    Vocs,
    ParticulateMatter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AllocationStatus {
    Unspecified,
    Proposed,
    Agreed,
    Rejected,
    Withdrawn,
    Expired,
}

impl AllocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationStatus::Unspecified => "UNSPECIFIED",
            AllocationStatus::Proposed => "PROPOSED",
            AllocationStatus::Agreed => "AGREED",
            AllocationStatus::Rejected => "REJECTED",
            AllocationStatus::Withdrawn => "WITHDRAWN",
            AllocationStatus::Expired => "EXPIRED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenefitShare {
    pub party: String,
    pub basis_points: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub id: Uuid,
    /// The proposing party.
    pub owner: String,
    pub kind: FactorKind,
    pub quantity: String,
    pub pollutant: Pollutant,
    pub from_party: String,
    pub to_party: String,
    /// Resource name of the project served, if any.
    pub project: Option<String>,
    pub benefit_shares: Vec<BenefitShare>,
    /// Sorted in federation party order; always includes from_party and to_party.
    pub required_parties: Vec<String>,
    /// Microseconds since the epoch.
    pub valid_until: i64,
    pub round: i32,
    pub description: String,
    /// When the proposer withdrew it (microseconds since the epoch).
    #[serde(default)]
    pub withdraw_time: Option<i64>,
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

fn check_member(federation: &Federation, field: String, party: &str, v: &mut Violations) {
    if party.is_empty() {
        v.add(field, "is required");
    } else if !federation.contains(party) {
        v.add(
            field,
            format!("`{party}` is not a member of the federation"),
        );
    } else if !federation.is_active(party) {
        v.add(field, format!("`{party}` is suspended from the federation"));
    }
}

/// Benefit shares are in basis points and must add up to the whole.
pub const BASIS_POINTS_TOTAL: i32 = 10_000;

/// How far ahead valid_until may be set.
const MAX_VALIDITY_MICROS: i64 = 5 * 366 * 24 * 3600 * 1_000_000;

impl Allocation {
    /// Adds from_party and to_party to the required parties and puts them in party order.
    pub fn normalize(&mut self, federation: &Federation) {
        let mut set: BTreeSet<(usize, String)> = BTreeSet::new();
        for p in self
            .required_parties
            .iter()
            .chain([&self.from_party, &self.to_party])
        {
            if let Some(order) = federation.order_of(p) {
                set.insert((order, p.clone()));
            }
        }
        self.required_parties = set.into_iter().map(|(_, p)| p).collect();
    }

    /// Checks every field of a proposal, prefixing paths with `prefix` (e.g. "allocation").
    pub fn validate(&self, prefix: &str, federation: &Federation, now: i64, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        self.validate_terms(
            &f("quantity"),
            &f("benefit_shares"),
            &self.quantity,
            &self.benefit_shares,
            federation,
            v,
        );
        if self.kind == FactorKind::Unspecified {
            v.add(f("kind"), "is required");
        }
        match (self.kind, self.pollutant) {
            (FactorKind::EmissionQuota, Pollutant::Unspecified) => {
                v.add(f("pollutant"), "is required for an emission quota")
            }
            (FactorKind::EmissionQuota, _) | (_, Pollutant::Unspecified) => {}
            _ => v.add(f("pollutant"), "is only for emission quotas"),
        }
        check_member(federation, f("from_party"), &self.from_party, v);
        check_member(federation, f("to_party"), &self.to_party, v);
        if !self.from_party.is_empty() && self.from_party == self.to_party {
            v.add(f("to_party"), "must differ from from_party");
        }
        if let Some(project) = &self.project {
            if let Err(e) = ResourceName::parse(project, RecordKind::Project) {
                v.add(f("project"), e);
            }
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.required_parties.iter().enumerate() {
            check_member(federation, format!("{prefix}.required_parties[{i}]"), p, v);
            if !seen.insert(p.as_str()) {
                v.add(
                    format!("{prefix}.required_parties[{i}]"),
                    "party is listed twice",
                );
            }
        }
        if self.valid_until == 0 {
            v.add(f("valid_until"), "is required");
        } else if self.valid_until <= now {
            v.add(f("valid_until"), "must be in the future");
        } else if self.valid_until - now > MAX_VALIDITY_MICROS {
            v.add(f("valid_until"), "must be within five years");
        }
        check_text(v, &f("description"), &self.description, 2000, false);
    }

    /// Checks a quantity and benefit shares, of the proposal or of a counter-proposal,
    /// reporting problems under the given field names.
    pub fn validate_terms(
        &self,
        quantity_field: &str,
        shares_field: &str,
        quantity: &str,
        shares: &[BenefitShare],
        federation: &Federation,
        v: &mut Violations,
    ) {
        if quantity.is_empty() {
            v.add(quantity_field, "is required");
        } else if let Err(e) = check_decimal(quantity) {
            v.add(quantity_field, e);
        } else if !decimal_is_positive(quantity) {
            v.add(quantity_field, "must be greater than zero");
        } else if self.kind == FactorKind::Funding && quantity.contains('.') {
            v.add(quantity_field, "funding is in whole yuan");
        }
        if shares.is_empty() {
            v.add(shares_field, "at least one share is required");
        }
        let mut seen = BTreeSet::new();
        let mut total: i64 = 0;
        for (i, share) in shares.iter().enumerate() {
            check_member(
                federation,
                format!("{shares_field}[{i}].party"),
                &share.party,
                v,
            );
            if !seen.insert(share.party.as_str()) {
                v.add(
                    format!("{shares_field}[{i}].party"),
                    "party is listed twice",
                );
            }
            if !(0..=BASIS_POINTS_TOTAL).contains(&share.basis_points) {
                v.add(
                    format!("{shares_field}[{i}].basis_points"),
                    format!("must be between 0 and {BASIS_POINTS_TOTAL}"),
                );
            }
            total += i64::from(share.basis_points);
        }
        if !shares.is_empty() && total != i64::from(BASIS_POINTS_TOTAL) {
            v.add(
                shares_field,
                format!("basis points sum to {total}, not {BASIS_POINTS_TOTAL}"),
            );
        }
    }
}
