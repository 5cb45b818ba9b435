//! The referral methods of `ProjectService` (项目引荐): referring a project to another party,
//! answering a referral, listing referrals. [`super::ProjectApi`] hands these calls here.

use tonic::{Request, Response, Status};

use super::calls::AuditRecords;
use super::error::{bad_request, record_status};
use super::write_meta;
use crate::records::{Page, Records, ReferralFilter, Violations};
use crate::wire::pb;
use crate::wire::referrals::{referral_state_from, referral_to};

pub(super) async fn refer_project(
    records: &Records,
    request: Request<pb::ReferProjectRequest>,
) -> Result<Response<pb::ReferProjectResponse>, Status> {
    let audit = AuditRecords::of(&request);
    let req = request.into_inner();
    let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
    audit.note(req.project.clone());
    let view = records
        .refer_project(
            &req.project,
            &req.to_party,
            &req.reason,
            meta,
            Violations::new(),
        )
        .await
        .map_err(record_status)?;
    let referral = referral_to(view);
    audit.note(referral.name.clone());
    Ok(Response::new(pb::ReferProjectResponse {
        referral: Some(referral),
    }))
}

pub(super) async fn respond_to_referral(
    records: &Records,
    request: Request<pb::RespondToReferralRequest>,
) -> Result<Response<pb::RespondToReferralResponse>, Status> {
    let audit = AuditRecords::of(&request);
    let req = request.into_inner();
    let meta = write_meta(&audit, &req, &req.request_id, |m| m.request_id.clear());
    audit.note(req.referral.clone());
    let view = records
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
        referral: Some(referral_to(view)),
    }))
}

pub(super) async fn list_referrals(
    records: &Records,
    request: Request<pb::ListReferralsRequest>,
) -> Result<Response<pb::ListReferralsResponse>, Status> {
    let req = request.into_inner();
    let mut v = Violations::new();
    let filter = ReferralFilter {
        from_party: req.from_party,
        to_party: req.to_party,
        state: referral_state_from(req.state, "state", &mut v),
    };
    if !v.is_empty() {
        return Err(bad_request(&v));
    }
    let page = Page {
        size: req.page_size,
        token: req.page_token,
    };
    let (referrals, next_page_token) = records
        .list_referrals(&filter, &page)
        .await
        .map_err(record_status)?;
    Ok(Response::new(pb::ListReferralsResponse {
        referrals: referrals.into_iter().map(referral_to).collect(),
        next_page_token,
    }))
}
