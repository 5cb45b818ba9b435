//! [`Records`]: every read and write of projects and allocations at one gateway goes through
//! here, so the rules of SPEC §3 hold whichever API or test calls them.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Allocation, AllocationStatus, FactorKind, Industry, Project, RecordError, ResourceName, Stage,
    Violations, etag, now_micros,
};
use crate::config::Federation;
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
        Records {
            store,
            party,
            federation,
            clock: Arc::new(now_micros),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
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
        self.write(project_stored(&project)?, None, key?, now).await
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
        self.write(project_stored(&next)?, Some(current.revision), key?, now)
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
            kind: RecordKind::Project,
            owner: non_empty(&filter.owner),
            stage: (filter.stage != Stage::Unspecified).then(|| filter.stage.as_str().to_string()),
            industry: (filter.industry != Industry::Unspecified)
                .then(|| filter.industry.as_str().to_string()),
            factor_kind: None,
            status: None,
            now: self.now(),
            after,
            limit: limit + 1,
        };
        self.list_page(query, limit, &fingerprint).await
    }

    // ---- allocations ----

    pub async fn propose_allocation(
        &self,
        mut allocation: Allocation,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<Allocation, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return decode(&first);
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
        allocation.revision = 1;
        allocation.create_time = now;
        allocation.update_time = now;
        self.write(allocation_stored(&allocation)?, None, key?, now)
            .await
    }

    pub async fn get_allocation(&self, name: &str) -> Result<Allocation, RecordError> {
        let name = parse_name(name, RecordKind::Allocation, "name")?;
        self.fetch(&name).await
    }

    pub async fn list_allocations(
        &self,
        filter: &AllocationFilter,
        page: &Page,
    ) -> Result<(Vec<Allocation>, String), RecordError> {
        let mut v = Violations::new();
        self.check_owner_filter(&filter.owner, &mut v);
        let fingerprint = format!("a|{}|{:?}|{:?}", filter.owner, filter.kind, filter.status);
        let (after, limit) = parse_page(page, &fingerprint, &mut v);
        v.into_result()?;
        let query = ListQuery {
            kind: RecordKind::Allocation,
            owner: non_empty(&filter.owner),
            stage: None,
            industry: None,
            factor_kind: (filter.kind != FactorKind::Unspecified)
                .then(|| filter.kind.as_str().to_string()),
            status: (filter.status != AllocationStatus::Unspecified)
                .then(|| filter.status.as_str().to_string()),
            now: self.now(),
            after,
            limit: limit + 1,
        };
        self.list_page(query, limit, &fingerprint).await
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
        key: Idempotency,
        time: i64,
    ) -> Result<T, RecordError> {
        let outcome = self
            .store
            .write(Write {
                record,
                expected_revision,
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
        if matches!(outcome, crate::store::WriteOutcome::Applied { .. }) {
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

    async fn list_page<T: DeserializeOwned>(
        &self,
        query: ListQuery,
        limit: usize,
        fingerprint: &str,
    ) -> Result<(Vec<T>, String), RecordError> {
        let mut rows = self.store.list(query).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = match (more, rows.last()) {
            (true, Some(last)) => page_token(last.id, fingerprint),
            _ => String::new(),
        };
        let items = rows.iter().map(decode).collect::<Result<Vec<T>, _>>()?;
        Ok((items, next))
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
}

/// Decodes a stored record of any kind.
pub fn decode_record(rec: &StoredRecord) -> Result<AnyRecord, RecordError> {
    Ok(match rec.kind {
        RecordKind::Project => AnyRecord::Project(decode(rec)?),
        RecordKind::Allocation => AnyRecord::Allocation(decode(rec)?),
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

fn project_stored(p: &Project) -> Result<StoredRecord, RecordError> {
    Ok(StoredRecord {
        kind: RecordKind::Project,
        owner: p.owner.clone(),
        id: p.id,
        revision: p.revision,
        index: IndexFields {
            stage: Some(p.stage.as_str().to_string()),
            industry: Some(p.industry.as_str().to_string()),
            ..IndexFields::default()
        },
        body: encode(p)?,
    })
}

fn allocation_stored(a: &Allocation) -> Result<StoredRecord, RecordError> {
    Ok(StoredRecord {
        kind: RecordKind::Allocation,
        owner: a.owner.clone(),
        id: a.id,
        revision: a.revision,
        index: IndexFields {
            factor_kind: Some(a.kind.as_str().to_string()),
            // The stored status ignores time; list queries resolve expiry against "now".
            status: Some(AllocationStatus::Proposed.as_str().to_string()),
            expires_at: Some(a.valid_until),
            ..IndexFields::default()
        },
        body: encode(a)?,
    })
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
