//! Project referrals (项目引荐): refer, answer, read, list, and the referring side's settling of
//! accepted referrals.

use uuid::Uuid;

use super::projects::project_stored;
use super::{Page, Records, WriteMeta, decode, non_empty, parent, parse_name, stored};
use crate::domain::RecordKind;
use crate::records::{
    Project, RecordError, Referral, ReferralResponse, ReferralState, ResourceName, Stage,
    Violations, check_text,
};
use crate::store::{Idempotency, ListQuery, StoreError, StoredRecord};

#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    /// Empty: any referring party.
    pub from_party: String,
    /// Empty: any receiving party.
    pub to_party: String,
    pub state: Option<ReferralState>,
}

/// A referral with its answer, if any, and the state derived from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralView {
    pub referral: Referral,
    pub response: Option<ReferralResponse>,
    pub state: ReferralState,
}

impl Records {
    /// The owner hands a project lead to another party: the request is validated
    /// ([`Records::validate_referral`]), the project must be open and not referred already
    /// ([`Records::may_refer`]), and the referral is written.
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
        let name = self.validate_referral(project, to_party, reason, &mut v);
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
        self.may_refer(&name).await?;
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
        let written = self
            .write_new_about(
                referral_stored(&referral)?,
                &name,
                None,
                key?,
                now,
                meta.audit,
            )
            .await?
            .or_first(referral)?;
        self.referral_view(written).await
    }

    /// The form of a referral: the project's name (returned when it parses), an active
    /// member of the federation other than this party, a reason.
    fn validate_referral(
        &self,
        project: &str,
        to_party: &str,
        reason: &str,
        v: &mut Violations,
    ) -> Option<ResourceName> {
        let name = match ResourceName::parse(project, RecordKind::Project) {
            Ok(n) => Some(n),
            Err(e) => {
                v.add("project", e);
                None
            }
        };
        if to_party.is_empty() {
            v.add("to_party", "is required");
        } else if !self.federation().contains(to_party) {
            v.add(
                "to_party",
                format!("`{to_party}` is not a member of the federation"),
            );
        } else if !self.federation().is_active(to_party) {
            v.add(
                "to_party",
                format!("`{to_party}` is suspended from the federation"),
            );
        } else if to_party == self.party {
            v.add("to_party", "a party cannot refer a project to itself");
        }
        check_text(v, "reason", reason, 2000, true);
        name
    }

    /// Whether the project may be referred now: not closed (`PROJECT_CLOSED`) and not
    /// referred already to a party that has not answered (`REFERRAL_PENDING`).
    async fn may_refer(&self, name: &ResourceName) -> Result<(), RecordError> {
        let current: Project = self.fetch(name).await?;
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
        Ok(())
    }

    /// The receiving party accepts (taking over the lead as a new project of its own,
    /// [`Records::taken_over`]) or declines a referral: only the party it was made to, once.
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
        may_respond(&name, &view, &self.party)?;
        let now = self.now();
        let taken_over = match accept {
            true => Some(self.taken_over(&view.referral, now).await?),
            false => None,
        };
        let new_project = taken_over
            .as_ref()
            .map(|p| ResourceName::new(&self.party, RecordKind::Project, p.id).to_string());
        let mut named = vec![name.to_string()];
        named.extend(new_project.clone());
        let audit = meta.audit.map(|a| a.naming(named));
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
        let also_create = match &taken_over {
            Some(project) => vec![project_stored(project)?],
            None => Vec::new(),
        };
        self.write(
            response_stored(&response)?,
            None,
            also_create,
            Some(format!("referral-response|{name}")),
            key?,
            now,
            audit,
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

    /// The new project an accepted referral makes: a copy of the referred project (which must
    /// have reached this gateway), owned by this party, at stage LEAD, linked to the original.
    async fn taken_over(&self, referral: &Referral, now: i64) -> Result<Project, RecordError> {
        let original_name = parse_name(&referral.project, RecordKind::Project, "referral")?;
        let original: Project = self.fetch(&original_name).await.map_err(|e| match e {
            RecordError::NotFound { name } => RecordError::Precondition {
                reason: "PROJECT_NOT_YET_REPLICATED",
                message: format!("{name} has not reached this gateway yet; retry shortly"),
            },
            other => other,
        })?;
        let mut project = original;
        project.id = Uuid::now_v7();
        project.owner = self.party.clone();
        project.stage = Stage::Lead;
        project.referred_from = Some(original_name.to_string());
        project.revision = 1;
        project.create_time = now;
        project.update_time = now;
        Ok(project)
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
        let fingerprint = format!(
            "r|{}|{}|{:?}",
            filter.from_party, filter.to_party, filter.state
        );
        let query = ListQuery {
            owner: non_empty(&filter.from_party),
            ..ListQuery::of(RecordKind::Referral, 0)
        };
        // Both are reported as `owner`, as before the filters were checked here.
        let parties = [
            ("owner", filter.from_party.as_str()),
            ("owner", filter.to_party.as_str()),
        ];
        self.list_page(&parties, fingerprint, page, query, |row| {
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
        let response: Option<ReferralResponse> = self
            .first_answer(RecordKind::ReferralResponse, &name, &referral.to_party)
            .await?;
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
                    .write(
                        project_stored(&next)?,
                        Some(current.revision),
                        vec![],
                        None,
                        key,
                        now,
                        None,
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
}

pub(super) fn referral_stored(r: &Referral) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::Referral,
        &r.owner,
        r.id,
        r.revision,
        parent(&r.project),
        r,
    )
}

pub(super) fn response_stored(r: &ReferralResponse) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::ReferralResponse,
        &r.owner,
        r.id,
        r.revision,
        parent(&r.referral),
        r,
    )
}

/// Whether `party` may answer a referral: only the party it was made to (`NOT_RECIPIENT`),
/// and only while it is pending (`ALREADY_ANSWERED`).
fn may_respond(name: &ResourceName, view: &ReferralView, party: &str) -> Result<(), RecordError> {
    if view.referral.to_party != party {
        return Err(RecordError::Denied {
            reason: "NOT_RECIPIENT",
            message: format!(
                "{name} was referred to {}, not to {party}",
                view.referral.to_party
            ),
        });
    }
    if view.state != ReferralState::Pending {
        return Err(RecordError::Duplicate {
            reason: "ALREADY_ANSWERED",
            message: format!("{name} was already answered"),
        });
    }
    Ok(())
}
