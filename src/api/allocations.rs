//! `FactorService` (要素共商): proposing, reading, listing, deciding and withdrawing factor
//! allocations. Authorization already happened in the [`super::authz`] layer; who may decide
//! a round is a record rule ([`Records`]).

use tonic::{Request, Response, Status};

use super::calls::AuditRecords;
use super::error::{bad_request, record_status};
use super::write_meta;
use crate::records::{AllocationFilter, Decide, Page, Records, Violations};
use crate::wire::allocations::{
    allocation_from, allocation_to, decision_to, factor_kind_from, shares_from, status_from,
    verdict_from,
};
use crate::wire::pb;

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
            kind: factor_kind_from(req.kind, "kind", &mut v),
            status: status_from(req.status, "status", &mut v),
        };
        if !v.is_empty() {
            return Err(bad_request(&v));
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
            verdict: verdict_from(req.verdict, "verdict", &mut v),
            allocation: req.allocation,
            round: req.round,
            counter_quantity: (!req.counter_quantity.is_empty()).then_some(req.counter_quantity),
            counter_shares: (!req.counter_benefit_shares.is_empty())
                .then(|| shares_from(req.counter_benefit_shares)),
            comment: req.comment,
        };
        let (view, decision) = self
            .records
            .decide_allocation(decide, meta, v)
            .await
            .map_err(record_status)?;
        let superseded = view.outcome.superseded.contains(&decision.id);
        let decision = decision_to(decision, superseded);
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
