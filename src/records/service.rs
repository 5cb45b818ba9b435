//! [`Records`]: every read and write of projects and allocations at one gateway goes through
//! here, so the rules of SPEC §3 hold whichever API or test calls them.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Allocation, AllocationStatus, BenefitShare, FactorKind, Industry, Project, RecordError,
    Referral, ReferralResponse, ReferralState, ResourceName, Stage, Violations, check_text, etag,
    now_micros,
};
use crate::config::Federation;
use crate::negotiation::{Decision, Outcome, Verdict, derive};
use crate::store::{
    Idempotency, IndexFields, ListQuery, RecordKind, Store, StoreError, StoredRecord, Write,
};

/// Page size when the request gives none (AIP-158).
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Larger page sizes are lowered to this (AIP-158).
pub const MAX_PAGE_SIZE: usize = 500;

/// The idempotency part of a write request.
#[derive(Debug, Clone)]
pub struct WriteMeta {
    /// Client-chosen UUID.
    pub request_id: String,
    /// Hash of the request without its request id: the same id with another request is refused.
    pub fingerprint: Vec<u8>,
}

/// A page request (AIP-158).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub size: i32,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct ProjectFilter {
    /// Empty: any owner.
    pub owner: String,
    /// Unspecified: any stage.
    pub stage: Stage,
    /// Unspecified: any industry.
    pub industry: Industry,
}

#[derive(Debug, Clone)]
pub struct AllocationFilter {
    pub owner: String,
    pub kind: FactorKind,
    pub status: AllocationStatus,
}

#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    /// Empty: any referring party.
    pub from_party: String,
    /// Empty: any receiving party.
    pub to_party: String,
    pub state: Option<ReferralState>,
}

/// An allocation as parties see it: the proposal, every decision, the derived outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationView {
    pub allocation: Allocation,
    pub decisions: Vec<Decision>,
    pub outcome: Outcome,
}

/// A referral with its answer, if any, and the state derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralView {
    pub referral: Referral,
    pub response: Option<ReferralResponse>,
    pub state: ReferralState,
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

/// A clock returning microseconds since the epoch; replaceable so tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The record rules of one gateway over its store.
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn Store>,
    party: String,
    federation: Federation,
    clock: Clock,
    /// Bumped after every commit to the feed (own write or applied replica), so live streams
    /// (peers pulling, Watch) wake up instead of polling.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Records {
    pub fn new(store: Arc<dyn Store>, party: String, federation: Federation) -> Self {
        // A store shared with other replicas bumps its own signal for their commits too.
        let changed = store
            .feed_signal()
            .unwrap_or_else(|| Arc::new(tokio::sync::watch::channel(0).0));
        Records {
            store,
            party,
            federation,
            clock: Arc::new(now_micros),
            changed,
        }
    }

    /// A receiver that sees a new value after every commit to the feed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Tells live streams that the feed grew.
    pub fn notify_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Rebuilds a stored record from a replicated record body, checking that the body is a
    /// well-formed record of `kind` and really is the one the envelope names.
    pub fn replica(
        &self,
        kind: RecordKind,
        owner: &str,
        id: Uuid,
        revision: i64,
        body: &str,
    ) -> Result<StoredRecord, String> {
        let (stored, (o, i, r)) = match kind {
            RecordKind::Project => {
                let p: Project =
                    serde_json::from_str(body).map_err(|e| format!("project body: {e}"))?;
                let key = (p.owner.clone(), p.id, p.revision);
                (project_stored(&p).map_err(|e| e.to_string())?, key)
            }
            RecordKind::Allocation => {
                let a: Allocation =
                    serde_json::from_str(body).map_err(|e| format!("allocation body: {e}"))?;
                let key = (a.owner.clone(), a.id, a.revision);
                (allocation_stored(&a).map_err(|e| e.to_string())?, key)
            }
            RecordKind::Decision => {
                let d: Decision =
                    serde_json::from_str(body).map_err(|e| format!("decision body: {e}"))?;
                let key = (d.owner.clone(), d.id, d.revision);
                (decision_stored(&d).map_err(|e| e.to_string())?, key)
            }
            RecordKind::Referral => {
                let r: Referral =
                    serde_json::from_str(body).map_err(|e| format!("referral body: {e}"))?;
                let key = (r.owner.clone(), r.id, r.revision);
                (referral_stored(&r).map_err(|e| e.to_string())?, key)
            }
            RecordKind::ReferralResponse => {
                let r: ReferralResponse = serde_json::from_str(body)
                    .map_err(|e| format!("referral response body: {e}"))?;
                let key = (r.owner.clone(), r.id, r.revision);
                (response_stored(&r).map_err(|e| e.to_string())?, key)
            }
        };
        if o != owner || i != id || r != revision {
            return Err(format!(
                "body is {o}/{i} revision {r}, envelope says {owner}/{id} revision {revision}"
            ));
        }
        Ok(stored)
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The party this gateway serves.
    pub fn party(&self) -> &str {
        &self.party
    }

    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // ---- projects ----

    pub async fn create_project(
        &self,
        mut project: Project,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<Project, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return decode(&first);
        }
        if matches!(project.stage, Stage::Referred) {
            v.add(
                "project.stage",
                "REFERRED is set only by accepting a referral",
            );
        }
        project.apply_defaults();
        project.validate("project", &mut v);
        v.into_result()?;
        let now = self.now();
        project.id = Uuid::now_v7();
        project.owner = self.party.clone();
        project.referred_from = None;
        project.revision = 1;
        project.create_time = now;
        project.update_time = now;
        self.write(project_stored(&project)?, None, vec![], None, key?, now)
            .await
    }

    pub async fn get_project(&self, name: &str) -> Result<Project, RecordError> {
        let name = parse_name(name, RecordKind::Project, "name")?;
        self.fetch(&name).await
    }

    /// Applies `patch` to the fields named in `mask` of the project `name`, if `etag` is current.
    pub async fn update_project(
        &self,
        name: &str,
        etag_seen: &str,
        patch: Project,
        mask: Vec<String>,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<Project, RecordError> {
        let name = match ResourceName::parse(name, RecordKind::Project) {
            Ok(n) => Some(n),
            Err(e) => {
                v.add("project.name", e);
                None
            }
        };
        if let Some(n) = &name {
            if n.owner != self.party {
                return Err(RecordError::NotOwner {
                    name: n.to_string(),
                    owner: n.owner.clone(),
                });
            }
        }
        if etag_seen.is_empty() {
            v.add(
                "project.etag",
                "is required: send the etag of the version you read",
            );
        }
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return decode(&first);
        }
        let Some(name) = name else {
            return Err(RecordError::Invalid(v));
        };
        let current: Project = self.fetch(&name).await?;
        if !etag_seen.is_empty() && etag_seen != etag(&name, current.revision) {
            return Err(RecordError::StaleEtag {
                name: name.to_string(),
            });
        }
        let mut next = current.clone();
        next.apply_mask(&patch, &mask, &mut v);
        if let Err(e) = current.stage.check_move(next.stage) {
            v.add("project.stage", e);
        }
        next.apply_defaults();
        next.validate("project", &mut v);
        v.into_result()?;
        let now = self.now();
        next.revision = current.revision + 1;
        next.update_time = now;
        self.write(
            project_stored(&next)?,
            Some(current.revision),
            vec![],
            None,
            key?,
            now,
        )
        .await
        .map_err(|e| stale_on_conflict(e, &name))
    }

    pub async fn list_projects(
        &self,
        filter: &ProjectFilter,
        page: &Page,
    ) -> Result<(Vec<Project>, String), RecordError> {
        let mut v = Violations::new();
        self.check_owner_filter(&filter.owner, &mut v);
        let fingerprint = format!(
            "p|{}|{:?}|{:?}",
            filter.owner, filter.stage, filter.industry
        );
        let (after, limit) = parse_page(page, &fingerprint, &mut v);
        v.into_result()?;
        let query = ListQuery {
            owner: non_empty(&filter.owner),
            stage: (filter.stage != Stage::Unspecified).then(|| filter.stage.as_str().to_string()),
            industry: (filter.industry != Industry::Unspecified)
                .then(|| filter.industry.as_str().to_string()),
            after,
            ..ListQuery::of(RecordKind::Project, limit)
        };
        self.scan_page(query, &fingerprint, |row| {
            Box::pin(async move { Ok(Some(decode(&row)?)) })
        })
        .await
    }

    // ---- allocations and their negotiation ----

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
        allocation.validate("allocation", &self.federation, now, &mut v);
        allocation.normalize(&self.federation);
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
        let created: Allocation = self
            .write(
                allocation_stored(&allocation)?,
                None,
                vec![],
                None,
                key?,
                now,
            )
            .await?;
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
        let mut v = Violations::new();
        self.check_owner_filter(&filter.owner, &mut v);
        let fingerprint = format!("a|{}|{:?}|{:?}", filter.owner, filter.kind, filter.status);
        let (after, limit) = parse_page(page, &fingerprint, &mut v);
        v.into_result()?;
        let query = ListQuery {
            owner: non_empty(&filter.owner),
            factor_kind: (filter.kind != FactorKind::Unspecified)
                .then(|| filter.kind.as_str().to_string()),
            after,
            ..ListQuery::of(RecordKind::Allocation, limit)
        };
        let status = filter.status;
        self.scan_page(query, &fingerprint, |row| {
            Box::pin(async move {
                let view = self.allocation_view(decode(&row)?).await?;
                Ok(
                    (status == AllocationStatus::Unspecified || view.outcome.status == status)
                        .then_some(view),
                )
            })
        })
        .await
    }

    /// Records the caller's party's decision on the current round of an allocation.
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
        check_text(&mut v, "comment", &decide.comment, 2000, false);
        let Some(name) = name else {
            return Err(RecordError::Invalid(v));
        };
        let view = self.get_allocation(&name.to_string()).await?;
        let alloc = &view.allocation;
        if decide.verdict == Verdict::Counter {
            let quantity = decide
                .counter_quantity
                .as_deref()
                .unwrap_or(&view.outcome.quantity);
            let shares = decide
                .counter_shares
                .as_deref()
                .unwrap_or(&view.outcome.shares);
            alloc.validate_terms(
                "counter_quantity",
                "counter_benefit_shares",
                quantity,
                shares,
                &self.federation,
                &mut v,
            );
        }
        v.into_result()?;
        if !alloc.required_parties.contains(&self.party) {
            return Err(RecordError::Denied {
                reason: "NOT_REQUIRED_PARTY",
                message: format!(
                    "{} is not among the parties whose approval {name} requires ({})",
                    self.party,
                    alloc.required_parties.join(", ")
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
        if decide.round != view.outcome.round {
            return Err(RecordError::Precondition {
                reason: "STALE_ROUND",
                message: format!(
                    "{name} is at round {}, not {}; read it again and decide on the current terms",
                    view.outcome.round, decide.round
                ),
            });
        }
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
        let decision: Decision = self
            .write(stored, None, vec![], Some(unique), key?, now)
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
            })?;
        let view = self.get_allocation(&name.to_string()).await?;
        Ok((view, decision))
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
        let written: Allocation = self
            .write(
                allocation_stored(&next)?,
                Some(view.allocation.revision),
                vec![],
                None,
                key?,
                now,
            )
            .await
            .map_err(|e| stale_on_conflict(e, &name))?;
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
        let outcome = derive(&allocation, &decisions, &self.federation, self.now());
        Ok(AllocationView {
            allocation,
            decisions,
            outcome,
        })
    }

    /// Every record of `kind` whose parent is `parent`.
    async fn children(
        &self,
        kind: RecordKind,
        parent: &str,
    ) -> Result<Vec<StoredRecord>, RecordError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let rows = self
                .store
                .list(ListQuery {
                    parent: Some(parent.to_string()),
                    after,
                    ..ListQuery::of(kind, 1000)
                })
                .await?;
            let done = rows.len() < 1000;
            after = rows.last().map(|r| r.id);
            out.extend(rows);
            if done {
                return Ok(out);
            }
        }
    }

    // ---- referrals ----

    /// The owner hands a project lead to another party.
    pub async fn refer_project(
        &self,
        project: &str,
        to_party: &str,
        reason: &str,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<ReferralView, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return self.referral_view(decode(&first)?).await;
        }
        let name = match ResourceName::parse(project, RecordKind::Project) {
            Ok(n) => Some(n),
            Err(e) => {
                v.add("project", e);
                None
            }
        };
        if to_party.is_empty() {
            v.add("to_party", "is required");
        } else if !self.federation.contains(to_party) {
            v.add(
                "to_party",
                format!("`{to_party}` is not a member of the federation"),
            );
        } else if to_party == self.party {
            v.add("to_party", "a party cannot refer a project to itself");
        }
        check_text(&mut v, "reason", reason, 2000, true);
        let Some(name) = name else {
            return Err(RecordError::Invalid(v));
        };
        if name.owner != self.party {
            return Err(RecordError::NotOwner {
                name: name.to_string(),
                owner: name.owner.clone(),
            });
        }
        v.into_result()?;
        let current: Project = self.fetch(&name).await?;
        if current.stage.is_terminal() {
            return Err(RecordError::Precondition {
                reason: "PROJECT_CLOSED",
                message: format!(
                    "{name} is {} and cannot be referred",
                    current.stage.as_str()
                ),
            });
        }
        for existing in self
            .children(RecordKind::Referral, &name.to_string())
            .await?
        {
            let view = self.referral_view(decode(&existing)?).await?;
            if view.state == ReferralState::Pending {
                return Err(RecordError::Precondition {
                    reason: "REFERRAL_PENDING",
                    message: format!(
                        "{name} is already referred to {} and awaits its answer",
                        view.referral.to_party
                    ),
                });
            }
        }
        let now = self.now();
        let referral = Referral {
            id: Uuid::now_v7(),
            owner: self.party.clone(),
            project: name.to_string(),
            to_party: to_party.to_string(),
            reason: reason.to_string(),
            revision: 1,
            create_time: now,
            update_time: now,
        };
        let written: Referral = self
            .write(referral_stored(&referral)?, None, vec![], None, key?, now)
            .await?;
        self.referral_view(written).await
    }

    /// The receiving party accepts (taking over the lead as a new project of its own) or
    /// declines a referral.
    pub async fn respond_to_referral(
        &self,
        referral: &str,
        accept: bool,
        comment: &str,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<ReferralView, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            let response: ReferralResponse = decode(&first)?;
            return self.get_referral(&response.referral).await;
        }
        let name = match ResourceName::parse(referral, RecordKind::Referral) {
            Ok(n) => Some(n),
            Err(e) => {
                v.add("referral", e);
                None
            }
        };
        check_text(&mut v, "comment", comment, 2000, false);
        let Some(name) = name else {
            return Err(RecordError::Invalid(v));
        };
        v.into_result()?;
        let view = self.get_referral(&name.to_string()).await?;
        if view.referral.to_party != self.party {
            return Err(RecordError::Denied {
                reason: "NOT_RECIPIENT",
                message: format!(
                    "{name} was referred to {}, not to {}",
                    view.referral.to_party, self.party
                ),
            });
        }
        if view.state != ReferralState::Pending {
            return Err(RecordError::Duplicate {
                reason: "ALREADY_ANSWERED",
                message: format!("{name} was already answered"),
            });
        }
        let now = self.now();
        let mut also_create = Vec::new();
        let mut new_project = None;
        if accept {
            let original_name =
                parse_name(&view.referral.project, RecordKind::Project, "referral")?;
            let original: Project = self.fetch(&original_name).await.map_err(|e| match e {
                RecordError::NotFound { name } => RecordError::Precondition {
                    reason: "PROJECT_NOT_YET_REPLICATED",
                    message: format!("{name} has not reached this gateway yet; retry shortly"),
                },
                other => other,
            })?;
            let mut project = original.clone();
            project.id = Uuid::now_v7();
            project.owner = self.party.clone();
            project.stage = Stage::Lead;
            project.referred_from = Some(original_name.to_string());
            project.revision = 1;
            project.create_time = now;
            project.update_time = now;
            new_project =
                Some(ResourceName::new(&self.party, RecordKind::Project, project.id).to_string());
            also_create.push(project_stored(&project)?);
        }
        let response = ReferralResponse {
            id: Uuid::now_v7(),
            owner: self.party.clone(),
            referral: name.to_string(),
            accept,
            comment: comment.to_string(),
            new_project,
            revision: 1,
            create_time: now,
            update_time: now,
        };
        self.write::<ReferralResponse>(
            response_stored(&response)?,
            None,
            also_create,
            Some(format!("referral-response|{name}")),
            key?,
            now,
        )
        .await
        .map_err(|e| match e {
            RecordError::Store(StoreError::AlreadyExists) => RecordError::Duplicate {
                reason: "ALREADY_ANSWERED",
                message: format!("{name} was already answered"),
            },
            other => other,
        })?;
        self.get_referral(&name.to_string()).await
    }

    pub async fn get_referral(&self, name: &str) -> Result<ReferralView, RecordError> {
        let name = parse_name(name, RecordKind::Referral, "name")?;
        let referral: Referral = self.fetch(&name).await?;
        self.referral_view(referral).await
    }

    /// Lists referrals visible here (made by this party, or to it, or shared with it).
    pub async fn list_referrals(
        &self,
        filter: &ReferralFilter,
        page: &Page,
    ) -> Result<(Vec<ReferralView>, String), RecordError> {
        let mut v = Violations::new();
        self.check_owner_filter(&filter.from_party, &mut v);
        self.check_owner_filter(&filter.to_party, &mut v);
        let fingerprint = format!(
            "r|{}|{}|{:?}",
            filter.from_party, filter.to_party, filter.state
        );
        let (after, limit) = parse_page(page, &fingerprint, &mut v);
        v.into_result()?;
        let query = ListQuery {
            owner: non_empty(&filter.from_party),
            after,
            ..ListQuery::of(RecordKind::Referral, limit)
        };
        self.scan_page(query, &fingerprint, |row| {
            Box::pin(async move {
                let view = self.referral_view(decode(&row)?).await?;
                let to_ok = filter.to_party.is_empty() || view.referral.to_party == filter.to_party;
                let state_ok = filter.state.is_none_or(|s| s == view.state);
                Ok((to_ok && state_ok).then_some(view))
            })
        })
        .await
    }

    async fn referral_view(&self, referral: Referral) -> Result<ReferralView, RecordError> {
        let name =
            ResourceName::new(&referral.owner, RecordKind::Referral, referral.id).to_string();
        let response: Option<ReferralResponse> = match self
            .children(RecordKind::ReferralResponse, &name)
            .await?
            .iter()
            .filter(|r| r.owner == referral.to_party)
            .min_by_key(|r| r.id)
        {
            Some(r) => Some(decode(r)?),
            None => None,
        };
        Ok(ReferralView {
            state: ReferralResponse::state(response.as_ref()),
            referral,
            response,
        })
    }

    /// The referring party's side of an accepted referral: its original project becomes
    /// REFERRED. Runs after answers arrive by replication and at start, and is idempotent
    /// (the answer's id is the request id), so a crash in between only delays it.
    pub async fn settle_referrals(&self) -> Result<usize, RecordError> {
        let mut settled = 0;
        let mut after = None;
        loop {
            let rows = self
                .store
                .list(ListQuery {
                    owner: Some(self.party.clone()),
                    after,
                    ..ListQuery::of(RecordKind::Referral, 500)
                })
                .await?;
            let done = rows.len() < 500;
            after = rows.last().map(|r| r.id);
            for row in rows {
                let view = self.referral_view(decode(&row)?).await?;
                let Some(response) = view.response.filter(|r| r.accept) else {
                    continue;
                };
                let name = parse_name(&view.referral.project, RecordKind::Project, "project")?;
                let current: Project = self.fetch(&name).await?;
                if current.stage == Stage::Referred {
                    continue;
                }
                let now = self.now();
                let mut next = current.clone();
                next.stage = Stage::Referred;
                next.revision += 1;
                next.update_time = now;
                let key = Idempotency {
                    party: self.party.clone(),
                    request_id: response.id.to_string(),
                    fingerprint: b"settle-referral".to_vec(),
                };
                match self
                    .write::<Project>(
                        project_stored(&next)?,
                        Some(current.revision),
                        vec![],
                        None,
                        key,
                        now,
                    )
                    .await
                {
                    Ok(_) => {
                        settled += 1;
                        tracing::info!(project = %name, referral = %response.referral, "project referred to another party");
                    }
                    // Changed concurrently: the next pass settles it.
                    Err(RecordError::Store(StoreError::Conflict { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            if done {
                return Ok(settled);
            }
        }
    }

    // ---- shared machinery ----

    /// Checks the request id and builds the idempotency key (an error when the id is bad).
    fn idempotency(
        &self,
        meta: &WriteMeta,
        v: &mut Violations,
    ) -> Result<Idempotency, RecordError> {
        if meta.request_id.is_empty() {
            v.add(
                "request_id",
                "is required: a UUID chosen by the client and reused on retry",
            );
        } else if Uuid::parse_str(&meta.request_id).is_err() {
            v.add("request_id", format!("`{}` is not a UUID", meta.request_id));
        } else {
            return Ok(Idempotency {
                party: self.party.clone(),
                request_id: meta.request_id.to_ascii_lowercase(),
                fingerprint: meta.fingerprint.clone(),
            });
        }
        Err(RecordError::Invalid(v.clone()))
    }

    /// The first result of a request already applied, if any.
    async fn replay(
        &self,
        key: &Result<Idempotency, RecordError>,
    ) -> Result<Option<StoredRecord>, RecordError> {
        let Ok(key) = key else { return Ok(None) };
        self.store.replay(key).await.map_err(|e| match e {
            StoreError::RequestIdReused(request_id) => RecordError::RequestIdReused { request_id },
            other => RecordError::Store(other),
        })
    }

    async fn write<T: DeserializeOwned>(
        &self,
        record: StoredRecord,
        expected_revision: Option<i64>,
        also_create: Vec<StoredRecord>,
        unique: Option<String>,
        key: Idempotency,
        time: i64,
    ) -> Result<T, RecordError> {
        let outcome = self
            .store
            .write(Write {
                record,
                expected_revision,
                also_create,
                unique,
                key,
                time,
            })
            .await
            .map_err(|e| match e {
                StoreError::RequestIdReused(request_id) => {
                    RecordError::RequestIdReused { request_id }
                }
                other => RecordError::Store(other),
            })?;
        if matches!(outcome, crate::store::WriteOutcome::Applied(_)) {
            self.notify_changed();
        }
        decode(&outcome.into_record())
    }

    async fn fetch<T: DeserializeOwned>(&self, name: &ResourceName) -> Result<T, RecordError> {
        match self.store.get(name.kind, &name.owner, name.id).await? {
            Some(rec) => decode(&rec),
            None => Err(RecordError::NotFound {
                name: name.to_string(),
            }),
        }
    }

    /// One page of `query` (whose `limit` is the page size), keeping what `keep` returns.
    /// Filters on derived state (an allocation's status, a referral's state) live in `keep`,
    /// so the scan reads on until the page is full; the token resumes after the last record
    /// examined.
    async fn scan_page<'a, T: Send + 'a>(
        &'a self,
        mut query: ListQuery,
        fingerprint: &str,
        mut keep: impl FnMut(StoredRecord) -> BoxFuture<'a, Result<Option<T>, RecordError>> + Send,
    ) -> Result<(Vec<T>, String), RecordError> {
        let limit = query.limit;
        query.limit = limit + 1;
        let mut out = Vec::new();
        loop {
            let rows = self.store.list(query.clone()).await?;
            let exhausted = rows.len() <= limit;
            for row in rows {
                if out.len() == limit {
                    return Ok((
                        out,
                        page_token(query.after.unwrap_or_default(), fingerprint),
                    ));
                }
                query.after = Some(row.id);
                if let Some(item) = keep(row).await? {
                    out.push(item);
                }
            }
            if exhausted {
                return Ok((out, String::new()));
            }
        }
    }

    fn check_owner_filter(&self, owner: &str, v: &mut Violations) {
        if !owner.is_empty() && !self.federation.contains(owner) {
            v.add(
                "owner",
                format!("`{owner}` is not a member of the federation"),
            );
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn parse_name(name: &str, kind: RecordKind, field: &str) -> Result<ResourceName, RecordError> {
    ResourceName::parse(name, kind).map_err(|e| {
        let mut v = Violations::new();
        v.add(field, e);
        RecordError::Invalid(v)
    })
}

fn stale_on_conflict(e: RecordError, name: &ResourceName) -> RecordError {
    match e {
        RecordError::Store(StoreError::Conflict { .. }) => RecordError::StaleEtag {
            name: name.to_string(),
        },
        other => other,
    }
}

/// A stored record decoded into its domain type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyRecord {
    Project(Project),
    Allocation(Allocation),
    Decision(Decision),
    Referral(Referral),
    ReferralResponse(ReferralResponse),
}

/// Decodes a stored record of any kind.
pub fn decode_record(rec: &StoredRecord) -> Result<AnyRecord, RecordError> {
    Ok(match rec.kind {
        RecordKind::Project => AnyRecord::Project(decode(rec)?),
        RecordKind::Allocation => AnyRecord::Allocation(decode(rec)?),
        RecordKind::Decision => AnyRecord::Decision(decode(rec)?),
        RecordKind::Referral => AnyRecord::Referral(decode(rec)?),
        RecordKind::ReferralResponse => AnyRecord::ReferralResponse(decode(rec)?),
    })
}

fn decode<T: DeserializeOwned>(rec: &StoredRecord) -> Result<T, RecordError> {
    serde_json::from_str(&rec.body).map_err(|e| {
        RecordError::Store(StoreError::Corrupt(format!(
            "{} {}: {e}",
            rec.kind.as_str(),
            rec.id
        )))
    })
}

fn encode(value: &impl Serialize) -> Result<String, RecordError> {
    serde_json::to_string(value).map_err(|e| RecordError::Store(StoreError::Corrupt(e.to_string())))
}

/// A record version as the store keeps it.
fn stored(
    kind: RecordKind,
    owner: &str,
    id: Uuid,
    revision: i64,
    index: IndexFields,
    body: &impl Serialize,
) -> Result<StoredRecord, RecordError> {
    Ok(StoredRecord {
        kind,
        owner: owner.to_string(),
        id,
        revision,
        index,
        body: encode(body)?,
    })
}

/// Index fields naming only a parent record.
fn parent(name: &str) -> IndexFields {
    IndexFields {
        parent: Some(name.to_string()),
        ..IndexFields::default()
    }
}

fn project_stored(p: &Project) -> Result<StoredRecord, RecordError> {
    let index = IndexFields {
        stage: Some(p.stage.as_str().to_string()),
        industry: Some(p.industry.as_str().to_string()),
        ..IndexFields::default()
    };
    stored(RecordKind::Project, &p.owner, p.id, p.revision, index, p)
}

fn allocation_stored(a: &Allocation) -> Result<StoredRecord, RecordError> {
    let index = IndexFields {
        factor_kind: Some(a.kind.as_str().to_string()),
        ..IndexFields::default()
    };
    stored(RecordKind::Allocation, &a.owner, a.id, a.revision, index, a)
}

fn decision_stored(d: &Decision) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::Decision,
        &d.owner,
        d.id,
        d.revision,
        parent(&d.allocation),
        d,
    )
}

fn referral_stored(r: &Referral) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::Referral,
        &r.owner,
        r.id,
        r.revision,
        parent(&r.project),
        r,
    )
}

fn response_stored(r: &ReferralResponse) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::ReferralResponse,
        &r.owner,
        r.id,
        r.revision,
        parent(&r.referral),
        r,
    )
}

/// A page token: the last id returned plus a hash of the filters it was issued for, hex-encoded.
fn page_token(last: Uuid, fingerprint: &str) -> String {
    let mut bytes = last.as_bytes().to_vec();
    bytes.extend_from_slice(&Sha256::digest(fingerprint.as_bytes())[..8]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads page size and token; returns (after, limit).
fn parse_page(page: &Page, fingerprint: &str, v: &mut Violations) -> (Option<Uuid>, usize) {
    let limit = match page.size {
        s if s < 0 => {
            v.add("page_size", "must not be negative");
            DEFAULT_PAGE_SIZE
        }
        0 => DEFAULT_PAGE_SIZE,
        s => (s as usize).min(MAX_PAGE_SIZE),
    };
    if page.token.is_empty() {
        return (None, limit);
    }
    let bytes: Option<Vec<u8>> = (page.token.len() == 48)
        .then(|| {
            (0..48)
                .step_by(2)
                .map(|i| u8::from_str_radix(page.token.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    match bytes {
        Some(b) if b[16..] == Sha256::digest(fingerprint.as_bytes())[..8] => {
            (Some(Uuid::from_slice(&b[..16]).unwrap_or_default()), limit)
        }
        Some(_) => {
            v.add(
                "page_token",
                "was issued for different filters; keep the filters unchanged while paging",
            );
            (None, limit)
        }
        None => {
            v.add("page_token", "is not a token this service issued");
            (None, limit)
        }
    }
}
