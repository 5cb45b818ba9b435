//! `ProjectService`: creating, reading, updating and listing projects. The service's referral
//! methods (项目引荐) are answered in [`super::referrals`]. Authorization already happened in
//! the [`super::authz`] layer; handlers translate and delegate to [`Records`].

use tonic::{Request, Response, Status};

use super::calls::AuditRecords;
use super::error::{bad_request, record_status};
use super::write_meta;
use crate::records::{Page, ProjectFilter, Records, Violations};
use crate::wire::pb;
use crate::wire::projects::{industry_from, project_from, project_to, stage_from};

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
            return Err(bad_request(&v));
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
            stage: stage_from(req.stage, "stage", &mut v),
            industry: industry_from(req.industry, "industry", &mut v),
        };
        if !v.is_empty() {
            return Err(bad_request(&v));
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
        super::referrals::refer_project(&self.records, request).await
    }

    async fn respond_to_referral(
        &self,
        request: Request<pb::RespondToReferralRequest>,
    ) -> Result<Response<pb::RespondToReferralResponse>, Status> {
        super::referrals::respond_to_referral(&self.records, request).await
    }

    async fn list_referrals(
        &self,
        request: Request<pb::ListReferralsRequest>,
    ) -> Result<Response<pb::ListReferralsResponse>, Status> {
        super::referrals::list_referrals(&self.records, request).await
    }
}
