//! Factor allocations and their negotiation (要素共商): propose, decide, withdraw, and the view
//! with every decision and the derived status.

use uuid::Uuid;

use super::{
    Page, Records, WriteMeta, decode, non_empty, parent, parse_name, stale_on_conflict, stored,
};
use crate::domain::RecordKind;
use crate::records::negotiation::{Decision, Outcome, Verdict, derive};
use crate::records::{
    Allocation, AllocationStatus, BenefitShare, FactorKind, RecordError, ResourceName, Violations,
    check_text, etag,
};
use crate::store::{Idempotency, IndexFields, ListQuery, StoreError, StoredRecord};

#[derive(Debug, Clone)]
pub struct AllocationFilter {
    pub owner: String,
    pub kind: FactorKind,
    pub status: AllocationStatus,
}

/// An allocation as parties see it: the proposal, every decision, the derived outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationView {
    pub allocation: Allocation,
    pub decisions: Vec<Decision>,
    pub outcome: Outcome,
}

/// A decision as requested by a party system.
#[derive(Debug, Clone)]
pub struct Decide {
    /// Resource name of the allocation.
    pub allocation: String,
    pub round: i32,
    pub verdict: Verdict,
    pub counter_quantity: Option<String>,
    pub counter_shares: Option<Vec<BenefitShare>>,
    pub comment: String,
}

impl Records {
    pub async fn propose_allocation(
        &self,
        mut allocation: Allocation,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<AllocationView, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return self.allocation_view(decode(&first)?).await;
        }
        let now = self.now();
        let federation = self.federation();
        allocation.validate("allocation", &federation, now, &mut v);
        allocation.normalize(&federation);
        if let Some(project) = &allocation.project {
            if let Ok(name) = ResourceName::parse(project, RecordKind::Project) {
                if self
                    .store
                    .get(name.kind, &name.owner, name.id)
                    .await?
                    .is_none()
                {
                    v.add(
                        "allocation.project",
                        format!("{name} is not visible at this gateway"),
                    );
                }
            }
        }
        v.into_result()?;
        allocation.id = Uuid::now_v7();
        allocation.owner = self.party.clone();
        allocation.round = 1;
        allocation.withdraw_time = None;
        allocation.revision = 1;
        allocation.create_time = now;
        allocation.update_time = now;
        let created = self
            .write_audited(
                allocation_stored(&allocation)?,
                None,
                None,
                key?,
                now,
                meta.audit,
            )
            .await?
            .or_first(allocation)?;
        self.allocation_view(created).await
    }

    pub async fn get_allocation(&self, name: &str) -> Result<AllocationView, RecordError> {
        let name = parse_name(name, RecordKind::Allocation, "name")?;
        let allocation: Allocation = self.fetch(&name).await?;
        self.allocation_view(allocation).await
    }

    /// Lists allocations. The status filter applies to the derived status, so it is applied
    /// here, reading on until the page is full.
    pub async fn list_allocations(
        &self,
        filter: &AllocationFilter,
        page: &Page,
    ) -> Result<(Vec<AllocationView>, String), RecordError> {
        let fingerprint = format!("a|{}|{:?}|{:?}", filter.owner, filter.kind, filter.status);
        let query = ListQuery {
            owner: non_empty(&filter.owner),
            factor_kind: (filter.kind != FactorKind::Unspecified)
                .then(|| filter.kind.as_str().to_string()),
            ..ListQuery::of(RecordKind::Allocation, 0)
        };
        let status = filter.status;
        self.list_page(
            &[("owner", &filter.owner)],
            fingerprint,
            page,
            query,
            |row| {
                Box::pin(async move {
                    let view = self.allocation_view(decode(&row)?).await?;
                    Ok(
                        (status == AllocationStatus::Unspecified || view.outcome.status == status)
                            .then_some(view),
                    )
                })
            },
        )
        .await
    }

    /// Records the caller's party's decision on the current round of an allocation: the
    /// request is validated ([`validate_decide`], [`Records::validate_counter`]), the
    /// transition checked against the negotiation as it stands ([`Records::may_decide`]), and
    /// the decision written ([`Records::write_decision`]).
    pub async fn decide_allocation(
        &self,
        decide: Decide,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<(AllocationView, Decision), RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            let decision: Decision = decode(&first)?;
            let view = self.get_allocation(&decision.allocation).await?;
            return Ok((view, decision));
        }
        let Some(name) = validate_decide(&decide, &mut v) else {
            return Err(RecordError::Invalid(v));
        };
        let view = self.get_allocation(&name.to_string()).await?;
        self.validate_counter(&decide, &view, &mut v);
        v.into_result()?;
        self.may_decide(&name, &view, decide.round)?;
        let decision = self.write_decision(decide, &name, key?, meta).await?;
        let view = self.get_allocation(&name.to_string()).await?;
        Ok((view, decision))
    }

    /// The terms a COUNTER leaves, checked as a proposal's would be (what it does not change
    /// stays as the current round has it).
    fn validate_counter(&self, decide: &Decide, view: &AllocationView, v: &mut Violations) {
        if decide.verdict != Verdict::Counter {
            return;
        }
        let quantity = decide
            .counter_quantity
            .as_deref()
            .unwrap_or(&view.outcome.quantity);
        let shares = decide
            .counter_shares
            .as_deref()
            .unwrap_or(&view.outcome.shares);
        view.allocation.validate_terms(
            "counter_quantity",
            "counter_benefit_shares",
            quantity,
            shares,
            &self.federation(),
            v,
        );
    }

    /// Whether this party may decide `round` of the negotiation as it stands: it must be a
    /// required party, the negotiation open, the round the current one.
    fn may_decide(
        &self,
        name: &ResourceName,
        view: &AllocationView,
        round: i32,
    ) -> Result<(), RecordError> {
        let required = &view.allocation.required_parties;
        if !required.contains(&self.party) {
            return Err(RecordError::Denied {
                reason: "NOT_REQUIRED_PARTY",
                message: format!(
                    "{} is not among the parties whose approval {name} requires ({})",
                    self.party,
                    required.join(", ")
                ),
            });
        }
        if view.outcome.status != AllocationStatus::Proposed {
            return Err(RecordError::Precondition {
                reason: "NEGOTIATION_CLOSED",
                message: format!(
                    "{name} is {} and takes no more decisions",
                    view.outcome.status.as_str()
                ),
            });
        }
        if round != view.outcome.round {
            return Err(RecordError::Precondition {
                reason: "STALE_ROUND",
                message: format!(
                    "{name} is at round {}, not {round}; read it again and decide on the current terms",
                    view.outcome.round
                ),
            });
        }
        Ok(())
    }

    /// Writes this party's decision on a round, at most one per party and round (a second is
    /// `ALREADY_DECIDED`), with the call's audit event; a retry answers the first decision.
    async fn write_decision(
        &self,
        decide: Decide,
        name: &ResourceName,
        key: Idempotency,
        meta: WriteMeta,
    ) -> Result<Decision, RecordError> {
        let now = self.now();
        let decision = Decision {
            id: Uuid::now_v7(),
            owner: self.party.clone(),
            allocation: name.to_string(),
            round: decide.round,
            verdict: decide.verdict,
            counter_quantity: decide.counter_quantity,
            counter_shares: decide.counter_shares,
            comment: decide.comment,
            revision: 1,
            create_time: now,
            update_time: now,
        };
        let unique = format!("decision|{name}|{}|{}", decide.round, self.party);
        let stored = decision_stored(&decision)?;
        self.write_new_about(stored, name, Some(unique), key, now, meta.audit)
            .await
            .map_err(|e| match e {
                RecordError::Store(StoreError::AlreadyExists) => RecordError::Duplicate {
                    reason: "ALREADY_DECIDED",
                    message: format!(
                        "{} already decided round {} of {name}",
                        self.party, decide.round
                    ),
                },
                other => other,
            })?
            .or_first(decision)
    }

    /// The proposer withdraws an open allocation.
    pub async fn withdraw_allocation(
        &self,
        name: &str,
        etag_seen: &str,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<AllocationView, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return self.allocation_view(decode(&first)?).await;
        }
        let name = match ResourceName::parse(name, RecordKind::Allocation) {
            Ok(n) => n,
            Err(e) => {
                v.add("name", e);
                return Err(RecordError::Invalid(v));
            }
        };
        if name.owner != self.party {
            return Err(RecordError::Denied {
                reason: "NOT_PROPOSER",
                message: format!("only the proposer, {}, can withdraw {name}", name.owner),
            });
        }
        if etag_seen.is_empty() {
            v.add("etag", "is required: send the etag of the version you read");
        }
        v.into_result()?;
        let view = self.get_allocation(&name.to_string()).await?;
        if etag_seen != etag(&name, view.allocation.revision) {
            return Err(RecordError::StaleEtag {
                name: name.to_string(),
            });
        }
        if view.outcome.status != AllocationStatus::Proposed {
            return Err(RecordError::Precondition {
                reason: "NEGOTIATION_CLOSED",
                message: format!(
                    "{name} is {} and can no longer be withdrawn",
                    view.outcome.status.as_str()
                ),
            });
        }
        let now = self.now();
        let mut next = view.allocation.clone();
        next.withdraw_time = Some(now);
        next.revision += 1;
        next.update_time = now;
        let written = self
            .write_audited(
                allocation_stored(&next)?,
                Some(view.allocation.revision),
                None,
                key?,
                now,
                meta.audit,
            )
            .await
            .map_err(|e| stale_on_conflict(e, &name))?
            .or_first(next)?;
        self.allocation_view(written).await
    }

    /// An allocation with its decisions and derived status.
    async fn allocation_view(&self, allocation: Allocation) -> Result<AllocationView, RecordError> {
        let name =
            ResourceName::new(&allocation.owner, RecordKind::Allocation, allocation.id).to_string();
        let decisions: Vec<Decision> = self
            .children(RecordKind::Decision, &name)
            .await?
            .iter()
            .map(decode)
            .collect::<Result<_, _>>()?;
        let outcome = derive(&allocation, &decisions, &self.federation(), self.now());
        Ok(AllocationView {
            allocation,
            decisions,
            outcome,
        })
    }
}

pub(super) fn allocation_stored(a: &Allocation) -> Result<StoredRecord, RecordError> {
    let index = IndexFields {
        factor_kind: Some(a.kind.as_str().to_string()),
        ..IndexFields::default()
    };
    stored(RecordKind::Allocation, &a.owner, a.id, a.revision, index, a)
}

pub(super) fn decision_stored(d: &Decision) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::Decision,
        &d.owner,
        d.id,
        d.revision,
        parent(&d.allocation),
        d,
    )
}

/// The form of a decision, before the negotiation is read: the allocation's name (returned
/// when it parses), a round, a verdict, new terms only with a COUNTER and at least one then,
/// a comment of reasonable length.
fn validate_decide(decide: &Decide, v: &mut Violations) -> Option<ResourceName> {
    let name = match ResourceName::parse(&decide.allocation, RecordKind::Allocation) {
        Ok(n) => Some(n),
        Err(e) => {
            v.add("allocation", e);
            None
        }
    };
    if decide.round < 1 {
        v.add(
            "round",
            "is required: the round being decided, starting at 1",
        );
    }
    match decide.verdict {
        Verdict::Unspecified => v.add("verdict", "is required: APPROVE, REJECT or COUNTER"),
        Verdict::Counter => {
            if decide.counter_quantity.is_none() && decide.counter_shares.is_none() {
                v.add(
                    "counter_quantity",
                    "a COUNTER needs a new quantity and/or new benefit shares",
                );
            }
        }
        Verdict::Approve | Verdict::Reject => {
            if decide.counter_quantity.is_some() {
                v.add("counter_quantity", "only a COUNTER carries new terms");
            }
            if decide.counter_shares.is_some() {
                v.add("counter_benefit_shares", "only a COUNTER carries new terms");
            }
        }
    }
    check_text(v, "comment", &decide.comment, 2000, false);
    name
}
