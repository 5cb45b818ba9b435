//! Projects (SPEC §3): create, read, update with etag and mask, list.

use uuid::Uuid;

use super::{Page, Records, WriteMeta, decode, non_empty, parse_name, stored};
use crate::domain::RecordKind;
use crate::records::{Industry, Project, RecordError, Stage, Violations};
use crate::store::{IndexFields, ListQuery, StoredRecord};

#[derive(Debug, Clone)]
pub struct ProjectFilter {
    /// Empty: any owner.
    pub owner: String,
    /// Unspecified: any stage.
    pub stage: Stage,
    /// Unspecified: any industry.
    pub industry: Industry,
}

impl Records {
    pub async fn create_project(
        &self,
        mut project: Project,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<Project, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if matches!(project.stage, Stage::Referred) {
            v.add(
                "project.stage",
                "REFERRED is set only by accepting a referral",
            );
        }
        project.apply_defaults();
        project.validate("project", &mut v);
        // A valid create is not looked up before it writes: the write answers a retry with
        // its first answer from inside its transaction. A refused one is, so that an id used
        // before (for this request under older rules, or for another) is still answered as
        // such.
        if !v.is_empty() {
            if let Some(first) = self.replay(&key).await? {
                return decode(&first);
            }
            return Err(RecordError::Invalid(v));
        }
        let now = self.now();
        project.id = Uuid::now_v7();
        project.owner = self.party.clone();
        project.referred_from = None;
        project.revision = 1;
        project.create_time = now;
        project.update_time = now;
        self.write_audited(project_stored(&project)?, None, None, key?, now, meta.audit)
            .await?
            .or_first(project)
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
        v: Violations,
    ) -> Result<Project, RecordError> {
        self.update_with_etag(
            RecordKind::Project,
            "project",
            name,
            etag_seen,
            &meta,
            v,
            |current: &Project, next, v| {
                next.apply_mask(&patch, &mask, v);
                if let Err(e) = current.stage.check_move(next.stage) {
                    v.add("project.stage", e);
                }
                next.apply_defaults();
                next.validate("project", v);
            },
        )
        .await
    }

    pub async fn list_projects(
        &self,
        filter: &ProjectFilter,
        page: &Page,
    ) -> Result<(Vec<Project>, String), RecordError> {
        let fingerprint = format!(
            "p|{}|{:?}|{:?}",
            filter.owner, filter.stage, filter.industry
        );
        let query = ListQuery {
            owner: non_empty(&filter.owner),
            stage: (filter.stage != Stage::Unspecified).then(|| filter.stage.as_str().to_string()),
            industry: (filter.industry != Industry::Unspecified)
                .then(|| filter.industry.as_str().to_string()),
            ..ListQuery::of(RecordKind::Project, 0)
        };
        self.list_page(
            &[("owner", &filter.owner)],
            fingerprint,
            page,
            query,
            |row| Box::pin(async move { Ok(Some(decode(&row)?)) }),
        )
        .await
    }
}

super::versioned!(Project, project_stored);

pub(super) fn project_stored(p: &Project) -> Result<StoredRecord, RecordError> {
    let index = IndexFields {
        stage: Some(p.stage.as_str().to_string()),
        industry: Some(p.industry.as_str().to_string()),
        ..IndexFields::default()
    };
    stored(RecordKind::Project, &p.owner, p.id, p.revision, index, p)
}
