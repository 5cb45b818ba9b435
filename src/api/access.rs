//! `AccessService`: access requests for other parties' catalog items (申请—审核). Authorization
//! already happened in the [`super::authz`] layer; who may answer or withdraw is a record rule
//! ([`Records`]).

use tonic::{Request, Response, Status};

use super::calls::AuditRecords;
use super::error::{bad_request, record_status};
use super::write_meta;
use crate::records::{AccessFilter, Answer, Page, Records, Violations};
use crate::wire::access::{access_request_from, access_request_to, access_state_from};
use crate::wire::pb;

#[derive(Clone)]
pub struct AccessApi {
    records: Records,
}

impl AccessApi {
    pub fn new(records: Records) -> Self {
        AccessApi { records }
    }
}

#[tonic::async_trait]
impl pb::access_service_server::AccessService for AccessApi {
    async fn create_access_request(
        &self,
        request: Request<pb::CreateAccessRequestRequest>,
    ) -> Result<Response<pb::CreateAccessRequestResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        let mut v = Violations::new();
        let filed = match req.access_request {
            Some(r) => {
                audit.note(r.entry.clone());
                access_request_from(r)
            }
            None => {
                v.add("access_request", "is required");
                access_request_from(pb::AccessRequest::default())
            }
        };
        let view = self
            .records
            .create_access_request(filed, meta, v)
            .await
            .map_err(record_status)?;
        let filed = access_request_to(view);
        audit.note(filed.name.clone());
        Ok(Response::new(pb::CreateAccessRequestResponse {
            access_request: Some(filed),
        }))
    }

    async fn get_access_request(
        &self,
        request: Request<pb::GetAccessRequestRequest>,
    ) -> Result<Response<pb::GetAccessRequestResponse>, Status> {
        let audit = AuditRecords::of(&request);
        audit.note(request.get_ref().name.clone());
        let view = self
            .records
            .get_access_request(&request.get_ref().name)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::GetAccessRequestResponse {
            access_request: Some(access_request_to(view)),
        }))
    }

    async fn list_access_requests(
        &self,
        request: Request<pb::ListAccessRequestsRequest>,
    ) -> Result<Response<pb::ListAccessRequestsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let filter = AccessFilter {
            requester: req.requester,
            provider: req.provider,
            state: access_state_from(req.state, "state", &mut v),
            overdue_only: req.overdue_only,
            escalated_only: req.escalated_only,
        };
        if !v.is_empty() {
            return Err(bad_request(&v));
        }
        let page = Page {
            size: req.page_size,
            token: req.page_token,
        };
        let (views, next) = self
            .records
            .list_access_requests(&filter, &page)
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::ListAccessRequestsResponse {
            access_requests: views.into_iter().map(access_request_to).collect(),
            next_page_token: next,
        }))
    }

    async fn answer_access_request(
        &self,
        request: Request<pb::AnswerAccessRequestRequest>,
    ) -> Result<Response<pb::AnswerAccessRequestResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        audit.note(req.name.clone());
        let answer = Answer {
            request: req.name,
            approve: req.approve,
            items: req.items,
            validity_days: req.validity_days,
            reason: req.reason,
        };
        let view = self
            .records
            .answer_access_request(answer, meta, Violations::new())
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::AnswerAccessRequestResponse {
            access_request: Some(access_request_to(view)),
        }))
    }

    async fn withdraw_access_request(
        &self,
        request: Request<pb::WithdrawAccessRequestRequest>,
    ) -> Result<Response<pb::WithdrawAccessRequestResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        audit.note(req.name.clone());
        let view = self
            .records
            .withdraw_access_request(&req.name, meta, Violations::new())
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::WithdrawAccessRequestResponse {
            access_request: Some(access_request_to(view)),
        }))
    }

    async fn escalate_access_request(
        &self,
        request: Request<pb::EscalateAccessRequestRequest>,
    ) -> Result<Response<pb::EscalateAccessRequestResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        audit.note(req.name.clone());
        let view = self
            .records
            .escalate_access_request(&req.name, &req.reason, meta, Violations::new())
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::EscalateAccessRequestResponse {
            access_request: Some(access_request_to(view)),
        }))
    }

    async fn revoke_access_grant(
        &self,
        request: Request<pb::RevokeAccessGrantRequest>,
    ) -> Result<Response<pb::RevokeAccessGrantResponse>, Status> {
        let audit = AuditRecords::of(&request);
        let req = request.into_inner();
        let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
        audit.note(req.name.clone());
        let view = self
            .records
            .revoke_access_grant(&req.name, &req.reason, meta, Violations::new())
            .await
            .map_err(record_status)?;
        Ok(Response::new(pb::RevokeAccessGrantResponse {
            access_request: Some(access_request_to(view)),
        }))
    }
}
