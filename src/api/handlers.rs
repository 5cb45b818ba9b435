//! One handler type per party-facing service. Authorization already happened in the
//! [`super::authz`] layer; handlers translate and delegate to [`Records`].

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::calls::AuditRecords;
use super::error::record_status;
use crate::identity::{Caller, Role};
use crate::records::{
    AllocationFilter, Decide, Page, ProjectFilter, Records, ReferralFilter, Violations, WriteMeta,
};
use crate::wire::convert::{self, allocation_from, allocation_to, project_from, project_to};
use crate::wire::pb;

/// The caller the authorization layer attached to the request.
pub(super) fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

/// What a write call hands the service: the request id and a hash of the request without it
/// (idempotency), and the call's audit event, which the store commits with the write (the
/// service names the records it reports; a call that writes nothing leaves it to the call
/// layer).
pub(super) fn write_meta<M: Message + Clone>(
    audit: &AuditRecords,
    msg: &M,
    request_id: &str,
    clear: impl FnOnce(&mut M),
) -> WriteMeta {
    let mut bare = msg.clone();
    clear(&mut bare);
    WriteMeta {
        request_id: request_id.to_string(),
        fingerprint: Sha256::digest(bare.encode_to_vec()).to_vec(),
        audit: audit.for_write(),
    }
}

#[derive(Clone)]
pub struct ProjectApi {
    records: Records,
}

impl ProjectApi {
    pub fn new(records: Records) -> Self {
        ProjectApi { records }
    }
}

#[tonic::async_trait]
impl pb::project_service_server::ProjectService for ProjectApi {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::CreateProjectResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        let mut v = Violations::new();
        let project = match req.project {
            Some(p) => project_from(p, &mut v),
            None => {
                v.add("project", "is required");
                project_from(pb::Project::default(), &mut Violations::new())
            }
        };
        let created = self
            .records
            .create_project(project, meta, v)
            .await
            .map_err(record_status)?;
        let created = project_to(created);
        audit.note(created.name.clone());
        Ok(Response::new(pb::CreateProjectResponse {
            project: Some(created),
        }))
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::GetProjectResponse>, Status> {
        let audit = AuditRecords::of(&request);
        audit.note(request.get_ref().name.clone());
        let project = self
            .records
            .get_project(&request.get_ref().name)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::GetProjectResponse {
            project: Some(project_to(project)),
        }))
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> Result<Response<pb::UpdateProjectResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        let mut v = Violations::new();
        let Some(wire) = req.project else {
            v.add("project", "is required");
            return Err(super::error::bad_request(&v));
        };
        let name = wire.name.clone();
        audit.note(name.clone());
        let etag = wire.etag.clone();
        let patch = project_from(wire, &mut v);
        let mask = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .records
            .update_project(&name, &etag, patch, mask, meta, v)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::UpdateProjectResponse {
            project: Some(project_to(updated)),
        }))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let filter = ProjectFilter {
            owner: req.owner,
            stage: convert::stage_from(req.stage, "stage", &mut v),
            industry: convert::industry_from(req.industry, "industry", &mut v),
        };
        if !v.is_empty() {
            return Err(super::error::bad_request(&v));
        }
        let page = Page {
            size: req.page_size,
            token: req.page_token,
        };
        let (projects, next_page_token) = self
            .records
            .list_projects(&filter, &page)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::ListProjectsResponse {
            projects: projects.into_iter().map(project_to).collect(),
            next_page_token,
        }))
    }

    async fn refer_project(
        &self,
        request: Request<pb::ReferProjectRequest>,
    ) -> Result<Response<pb::ReferProjectResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        audit.note(req.project.clone());
        let view = self
            .records
            .refer_project(
                &req.project,
                &req.to_party,
                &req.reason,
                meta,
                Violations::new(),
            )
            .await
            .map_err(record_status)?;
        let referral = convert::referral_to(view);
        audit.note(referral.name.clone());
        Ok(Response::new(pb::ReferProjectResponse {
            referral: Some(referral),
        }))
    }

    async fn respond_to_referral(
        &self,
        request: Request<pb::RespondToReferralRequest>,
    ) -> Result<Response<pb::RespondToReferralResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        audit.note(req.referral.clone());
        let view = self
            .records
            .respond_to_referral(
                &req.referral,
                req.accept,
                &req.comment,
                meta,
                Violations::new(),
            )
            .await
            .map_err(record_status)?;
        if let Some(project) = view.response.as_ref().and_then(|r| r.new_project.clone()) {
            audit.note(project);
        }
        Ok(Response::new(pb::RespondToReferralResponse {
            referral: Some(convert::referral_to(view)),
        }))
    }

    async fn list_referrals(
        &self,
        request: Request<pb::ListReferralsRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let filter = ReferralFilter {
            from_party: req.from_party,
            to_party: req.to_party,
            state: convert::referral_state_from(req.state, "state", &mut v),
        };
        if !v.is_empty() {
            return Err(super::error::bad_request(&v));
        }
        let page = Page {
            size: req.page_size,
            token: req.page_token,
        };
        let (referrals, next_page_token) = self
            .records
            .list_referrals(&filter, &page)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::ListReferralsResponse {
            referrals: referrals.into_iter().map(convert::referral_to).collect(),
            next_page_token,
        }))
    }
}

#[derive(Clone)]
pub struct FactorApi {
    records: Records,
}

impl FactorApi {
    pub fn new(records: Records) -> Self {
        FactorApi { records }
    }
}

#[tonic::async_trait]
impl pb::factor_service_server::FactorService for FactorApi {
    async fn propose_allocation(
        &self,
        request: Request<pb::ProposeAllocationRequest>,
    ) -> Result<Response<pb::ProposeAllocationResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        let mut v = Violations::new();
        let allocation = match req.allocation {
            Some(a) => allocation_from(a, &mut v),
            None => {
                v.add("allocation", "is required");
                allocation_from(pb::Allocation::default(), &mut Violations::new())
            }
        };
        let created = self
            .records
            .propose_allocation(allocation, meta, v)
            .await
            .map_err(record_status)?;
        let created = allocation_to(created);
        audit.note(created.name.clone());
        Ok(Response::new(pb::ProposeAllocationResponse {
            allocation: Some(created),
        }))
    }

    async fn get_allocation(
        &self,
        request: Request<pb::GetAllocationRequest>,
    ) -> Result<Response<pb::GetAllocationResponse>, Status> {
        let audit = AuditRecords::of(&request);
        audit.note(request.get_ref().name.clone());
        let allocation = self
            .records
            .get_allocation(&request.get_ref().name)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::GetAllocationResponse {
            allocation: Some(allocation_to(allocation)),
        }))
    }

    async fn list_allocations(
        &self,
        request: Request<pb::ListAllocationsRequest>,
    ) -> Result<Response<pb::ListAllocationsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let filter = AllocationFilter {
            owner: req.owner,
            kind: convert::factor_kind_from(req.kind, "kind", &mut v),
            status: convert::status_from(req.status, "status", &mut v),
        };
        if !v.is_empty() {
            return Err(super::error::bad_request(&v));
        }
        let page = Page {
            size: req.page_size,
            token: req.page_token,
        };
        let (allocations, next_page_token) = self
            .records
            .list_allocations(&filter, &page)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::ListAllocationsResponse {
            allocations: allocations.into_iter().map(allocation_to).collect(),
            next_page_token,
        }))
    }

    async fn decide_allocation(
        &self,
        request: Request<pb::DecideAllocationRequest>,
    ) -> Result<Response<pb::DecideAllocationResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        let mut v = Violations::new();
        audit.note(req.allocation.clone());
        let decide = Decide {
            verdict: convert::verdict_from(req.verdict, "verdict", &mut v),
            allocation: req.allocation,
            round: req.round,
            counter_quantity: (!req.counter_quantity.is_empty()).then_some(req.counter_quantity),
            counter_shares: (!req.counter_benefit_shares.is_empty())
                .then(|| convert::shares_from(req.counter_benefit_shares)),
            comment: req.comment,
        };
        let (view, decision) = self
            .records
            .decide_allocation(decide, meta, v)
            .await
            .map_err(record_status)?;
        let superseded = view.outcome.superseded.contains(&decision.id);
        let decision = convert::decision_to(decision, superseded);
        audit.note(decision.name.clone());
        Ok(Response::new(pb::DecideAllocationResponse {
            allocation: Some(allocation_to(view)),
            decision: Some(decision),
        }))
    }

    async fn withdraw_allocation(
        &self,
        request: Request<pb::WithdrawAllocationRequest>,
    ) -> Result<Response<pb::WithdrawAllocationResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        audit.note(req.name.clone());
        let view = self
            .records
            .withdraw_allocation(&req.name, &req.etag, meta, Violations::new())
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::WithdrawAllocationResponse {
            allocation: Some(allocation_to(view)),
        }))
    }
}

#[derive(Clone)]
pub struct DirectoryApi {
    records: Records,
    membership: std::sync::Arc<crate::membership::Membership>,
}

impl DirectoryApi {
    pub fn new(
        records: Records,
        membership: std::sync::Arc<crate::membership::Membership>,
    ) -> Self {
        DirectoryApi {
            records,
            membership,
        }
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        let (role, system) = match &caller.id.role {
            Role::Gateway => (pb::Role::Gateway, String::new()),
            Role::Client { system } => (pb::Role::Client, system.clone()),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            spiffe_id: caller.id.to_string(),
            party: caller.id.party.clone(),
            role: role as i32,
            system,
            read_only: caller.read_only,
            gateway_party: self.records.party().to_string(),
        }))
    }

    async fn list_parties(
        &self,
        _request: Request<pb::ListPartiesRequest>,
    ) -> Result<Response<pb::ListPartiesResponse>, Status> {
        let parties = self
            .records
            .federation()
            .parties()
            .iter()
            .enumerate()
            .map(|(order, p)| pb::Party {
                id: p.id.clone(),
                display_name: p.display_name.clone(),
                province: p.province.clone(),
                division_code: p.division_code.clone(),
                order: order as i32,
                suspended: p.suspended,
            })
            .collect();
        let peers = self
            .membership
            .views()
            .into_iter()
            .map(|v| pb::PeerMembership {
                party: v.party,
                membership_sha256: v.digest.to_vec(),
                differs: v.differs,
                seen_time: Some(crate::wire::timestamp(v.seen_at)),
            })
            .collect();
        Ok(Response::new(pb::ListPartiesResponse {
            parties,
            membership_sha256: self.membership.own().to_vec(),
            peers,
        }))
    }
}
