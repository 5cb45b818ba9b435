//! [`Records`]: every read and write of every record family at one gateway goes through
//! here, so the rules of SPEC §3 hold whichever API or test calls them. This file holds what
//! every record family shares (idempotency, etag conflicts, decoding), [`paging`] how lists
//! are paged; each family's rules are in a file of its own: [`projects`], [`allocations`]
//! (with their negotiation), [`referrals`], [`catalog`] entries and [`access`] requests.

mod access;
mod allocations;
mod catalog;
mod paging;
mod projects;
mod referrals;

pub use access::{AccessFilter, AccessView, Answer};
use access::{answer_stored, request_stored};
pub use allocations::{AllocationFilter, AllocationView, Decide};
use allocations::{allocation_stored, decision_stored};
pub use catalog::CatalogFilter;
use catalog::entry_stored;
pub use paging::{MAX_PAGE_SIZE, Page};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use paging::{page_token, parse_page};
pub use projects::ProjectFilter;
use projects::project_stored;
pub use referrals::{ReferralFilter, ReferralView};
use referrals::{referral_stored, response_stored};

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::Feed;
use super::{
    AccessAnswer, AccessRequest, Allocation, CatalogEntry, Project, RecordError, Referral,
    ReferralResponse, ResourceName, Violations, etag,
};
use crate::domain::{Federation, Members, RecordKind, now_micros};
use crate::records::negotiation::Decision;
use crate::store::{
    Idempotency, IndexFields, ListQuery, RecordStore, StoreError, StoredRecord, Write, WriteAudit,
    WriteOutcome,
};
use crate::workdays::Deadlines;

/// The idempotency part of a write request, and the call's audit event where the write may
/// commit it.
#[derive(Debug, Clone, Default)]
pub struct WriteMeta {
    /// Client-chosen UUID.
    pub request_id: String,
    /// Hash of the request without its request id: the same id with another request is refused.
    pub fingerprint: Vec<u8>,
    /// The call's audit event, for a method whose one write the store commits it with (the
    /// method's service code names the records it reports).
    pub audit: Option<WriteAudit>,
}

/// A record whose updates carry the revision the client read (as its etag).
pub(super) trait Versioned: DeserializeOwned + Clone {
    fn revision(&self) -> i64;
    /// Makes this version the next revision, written at `now`.
    fn advance(&mut self, now: i64);
    /// The version as the store keeps it.
    fn to_stored(&self) -> Result<StoredRecord, RecordError>;
}

/// Implements [`Versioned`] for a record type with `revision` and `update_time` fields,
/// stored by `$stored`.
macro_rules! versioned {
    ($record:ty, $stored:path) => {
        impl super::Versioned for $record {
            fn revision(&self) -> i64 {
                self.revision
            }

            fn advance(&mut self, now: i64) {
                self.revision += 1;
                self.update_time = now;
            }

            fn to_stored(&self) -> Result<StoredRecord, RecordError> {
                $stored(self)
            }
        }
    };
}
use versioned;

/// A clock returning microseconds since the epoch; replaceable so tests control time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The record rules of one gateway over its store.
#[derive(Clone)]
pub struct Records {
    /// Records, idempotency keys and writes; the feed has its own handle.
    store: Arc<dyn RecordStore>,
    party: String,
    /// The federation now: a running gateway's party list can change.
    members: Members,
    clock: Clock,
    /// Woken after every write this gateway commits.
    feed: Feed,
    /// When access requests filed here must be answered.
    deadlines: Deadlines,
}

impl Records {
    /// Record rules over `store`, whose feed is `feed` (the same store's).
    pub fn new(store: Arc<dyn RecordStore>, feed: Feed, party: String, members: Members) -> Self {
        Records {
            store,
            party,
            members,
            clock: Arc::new(now_micros),
            feed,
            deadlines: Deadlines::default(),
        }
    }

    /// Answer deadlines of access requests filed here (default: 10 working days, no
    /// holidays).
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
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
        let stored = match kind {
            RecordKind::Project => rebuild::<Project>(body, project_stored),
            RecordKind::Allocation => rebuild::<Allocation>(body, allocation_stored),
            RecordKind::Decision => rebuild::<Decision>(body, decision_stored),
            RecordKind::Referral => rebuild::<Referral>(body, referral_stored),
            RecordKind::ReferralResponse => rebuild::<ReferralResponse>(body, response_stored),
            RecordKind::CatalogEntry => rebuild::<CatalogEntry>(body, entry_stored),
            RecordKind::AccessRequest => rebuild::<AccessRequest>(body, request_stored),
            RecordKind::AccessAnswer => rebuild::<AccessAnswer>(body, answer_stored),
        }
        .map_err(|e| format!("{} body: {e}", kind.as_str()))?;
        let (o, i, r) = (&stored.owner, stored.id, stored.revision);
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

    /// The federation as it is now.
    pub fn federation(&self) -> Arc<Federation> {
        self.members.current()
    }

    /// The federation, to follow its changes.
    pub fn members(&self) -> &Members {
        &self.members
    }

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
        match key {
            Ok(key) => self.replay_of(key).await,
            Err(_) => Ok(None),
        }
    }

    /// The first result of the request `key`, if it was applied.
    async fn replay_of(&self, key: &Idempotency) -> Result<Option<StoredRecord>, RecordError> {
        self.store.replay(key).await.map_err(|e| match e {
            StoreError::RequestIdReused(request_id) => RecordError::RequestIdReused { request_id },
            other => RecordError::Store(other),
        })
    }

    /// A write of one record (and of `also_create`, new records that come with it). `audit` is
    /// the call's event, named as the call reports it (`WriteAudit::naming`), when the call
    /// layer handed it to the write (`WriteMeta::audit`): the store commits it with the write.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        record: StoredRecord,
        expected_revision: Option<i64>,
        also_create: Vec<StoredRecord>,
        unique: Option<String>,
        key: Idempotency,
        time: i64,
        audit: Option<WriteAudit>,
    ) -> Result<Committed, RecordError> {
        self.commit(Write {
            record,
            expected_revision,
            also_create,
            unique,
            key,
            time,
            resend: None,
            audit,
        })
        .await
    }

    /// A write of one record whose call's event (`audit`, see [`Records::write`]) names that
    /// record alone.
    async fn write_audited(
        &self,
        record: StoredRecord,
        expected_revision: Option<i64>,
        unique: Option<String>,
        key: Idempotency,
        time: i64,
        audit: Option<WriteAudit>,
    ) -> Result<Committed, RecordError> {
        let name = crate::records::ResourceName::new(&record.owner, record.kind, record.id);
        let audit = audit.map(|a| a.naming(vec![name.to_string()]));
        self.write(
            record,
            expected_revision,
            Vec::new(),
            unique,
            key,
            time,
            audit,
        )
        .await
    }

    /// A new record made by a call about another record, `about`: the call's event (`audit`,
    /// see [`Records::write`]) names `about`, then the new record.
    async fn write_new_about(
        &self,
        record: StoredRecord,
        about: &ResourceName,
        unique: Option<String>,
        key: Idempotency,
        time: i64,
        audit: Option<WriteAudit>,
    ) -> Result<Committed, RecordError> {
        let made = ResourceName::new(&record.owner, record.kind, record.id);
        let audit = audit.map(|a| a.naming(vec![about.to_string(), made.to_string()]));
        self.write(record, None, Vec::new(), unique, key, time, audit)
            .await
    }

    async fn commit(&self, mut write: Write) -> Result<Committed, RecordError> {
        if let Some(why) = self.feed.writes_held() {
            // A retry of a write applied before still gets its first answer (a create does
            // not look it up before it writes).
            if let Some(first) = self.replay_of(&write.key).await? {
                return Ok(Committed(WriteOutcome::Replayed(first)));
            }
            // A write now could take a sequence number a peer already holds another change
            // under: the peer would never see it, and the logs would differ for good.
            return Err(RecordError::Held {
                message: format!(
                    "writes are held: {why}; nothing was written, retry in a few seconds (the \
                     status page says why)"
                ),
            });
        }
        write.resend = self.widens(&write.record).await?;
        let outcome = self.store.write(write).await.map_err(|e| match e {
            StoreError::RequestIdReused(request_id) => RecordError::RequestIdReused { request_id },
            other => RecordError::Store(other),
        })?;
        if matches!(outcome, WriteOutcome::Applied(_)) {
            self.feed.notify_changed();
        }
        Ok(Committed(outcome))
    }

    /// The kind of this party's records that peers may see differently once `record` is
    /// written: the kind a catalog entry covers, the kind an approved request's entry covers.
    /// The write sends them again (see [`Write::resend`]).
    async fn widens(&self, record: &StoredRecord) -> Result<Option<RecordKind>, RecordError> {
        match record.kind {
            RecordKind::CatalogEntry => Ok(decode::<CatalogEntry>(record)?.record_kind),
            RecordKind::AccessAnswer => {
                let answer: AccessAnswer = decode(record)?;
                // A refusal or a revocation narrows: nothing to send again.
                if !answer.approve || answer.revoke_time.is_some() {
                    return Ok(None);
                }
                let request: AccessRequest = self
                    .fetch(&parse_name(
                        &answer.request,
                        RecordKind::AccessRequest,
                        "request",
                    )?)
                    .await?;
                let entry: CatalogEntry = self
                    .fetch(&parse_name(
                        &request.entry,
                        RecordKind::CatalogEntry,
                        "entry",
                    )?)
                    .await?;
                Ok(entry.record_kind)
            }
            _ => Ok(None),
        }
    }

    async fn fetch<T: DeserializeOwned>(&self, name: &ResourceName) -> Result<T, RecordError> {
        match self.store.get(name.kind, &name.owner, name.id).await? {
            Some(rec) => decode(&rec),
            None => Err(RecordError::NotFound {
                name: name.to_string(),
            }),
        }
    }

    /// An update with the etag the client read: parses `name` (a violation at
    /// `{prefix}.name`), refuses a record this party does not own, requires the etag, replays
    /// the first result of a retried request, refuses a stale etag, lets `change` turn a copy
    /// of the current version into the next one (adding violations of its own), and writes it.
    #[allow(clippy::too_many_arguments)]
    async fn update_with_etag<T: Versioned>(
        &self,
        kind: RecordKind,
        prefix: &str,
        name: &str,
        etag_seen: &str,
        meta: &WriteMeta,
        mut v: Violations,
        change: impl FnOnce(&T, &mut T, &mut Violations),
    ) -> Result<T, RecordError> {
        let name = match ResourceName::parse(name, kind) {
            Ok(n) => Some(n),
            Err(e) => {
                v.add(format!("{prefix}.name"), e);
                None
            }
        };
        if let Some(n) = name.as_ref().filter(|n| n.owner != self.party) {
            return Err(RecordError::NotOwner {
                name: n.to_string(),
                owner: n.owner.clone(),
            });
        }
        if etag_seen.is_empty() {
            v.add(
                format!("{prefix}.etag"),
                "is required: send the etag of the version you read",
            );
        }
        let key = self.idempotency(meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return decode(&first);
        }
        let Some(name) = name else {
            return Err(RecordError::Invalid(v));
        };
        let current: T = self.fetch(&name).await?;
        if !etag_seen.is_empty() && etag_seen != etag(&name, current.revision()) {
            return Err(RecordError::StaleEtag {
                name: name.to_string(),
            });
        }
        let mut next = current.clone();
        change(&current, &mut next, &mut v);
        v.into_result()?;
        let audit = meta.audit.clone().map(|a| a.naming(vec![name.to_string()]));
        self.write_next(next, key?, &name, self.now(), audit).await
    }

    /// Writes `next` (a changed copy of the version stored now) as the following revision at
    /// `now`, if nobody changed the record meanwhile (a conflict reads as a stale etag).
    /// `audit`: the call's event, named by the caller (see [`Records::write`]).
    async fn write_next<T: Versioned>(
        &self,
        mut next: T,
        key: Idempotency,
        name: &ResourceName,
        now: i64,
        audit: Option<WriteAudit>,
    ) -> Result<T, RecordError> {
        let expected = next.revision();
        next.advance(now);
        self.write(
            next.to_stored()?,
            Some(expected),
            vec![],
            None,
            key,
            now,
            audit,
        )
        .await
        .map_err(|e| stale_on_conflict(e, name))?
        .or_first(next)
    }

    /// The first answer (lowest id) of `kind` to the record `parent` written by `by`: the
    /// answer of a referral or an access request. Later ones, if a race let any in, do not
    /// count, so every gateway derives the same state.
    async fn first_answer<T: DeserializeOwned>(
        &self,
        kind: RecordKind,
        parent: &str,
        by: &str,
    ) -> Result<Option<T>, RecordError> {
        match self
            .children(kind, parent)
            .await?
            .iter()
            .filter(|r| r.owner == by)
            .min_by_key(|r| r.id)
        {
            Some(r) => Ok(Some(decode(r)?)),
            None => Ok(None),
        }
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
}

/// A replicated body decoded as `T` and stored as `to_stored` stores it.
fn rebuild<T: DeserializeOwned>(
    body: &str,
    to_stored: fn(&T) -> Result<StoredRecord, RecordError>,
) -> Result<StoredRecord, String> {
    let value: T = serde_json::from_str(body).map_err(|e| e.to_string())?;
    to_stored(&value).map_err(|e| e.to_string())
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

/// What a write answers with: the record it applied now, or the first answer of the same
/// request applied before.
struct Committed(WriteOutcome);

impl Committed {
    /// `written`, the value whose encoding the write stored, when the write applied now (it
    /// is not decoded again); the first answer, decoded, when the request was applied before.
    fn or_first<T: DeserializeOwned>(self, written: T) -> Result<T, RecordError> {
        match self.0 {
            WriteOutcome::Applied(_) => Ok(written),
            WriteOutcome::Replayed(first) => decode(&first),
        }
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
    CatalogEntry(CatalogEntry),
    AccessRequest(AccessRequest),
    AccessAnswer(AccessAnswer),
}

/// Decodes a stored record of any kind.
pub fn decode_record(rec: &StoredRecord) -> Result<AnyRecord, RecordError> {
    Ok(match rec.kind {
        RecordKind::Project => AnyRecord::Project(decode(rec)?),
        RecordKind::Allocation => AnyRecord::Allocation(decode(rec)?),
        RecordKind::Decision => AnyRecord::Decision(decode(rec)?),
        RecordKind::Referral => AnyRecord::Referral(decode(rec)?),
        RecordKind::ReferralResponse => AnyRecord::ReferralResponse(decode(rec)?),
        RecordKind::CatalogEntry => AnyRecord::CatalogEntry(decode(rec)?),
        RecordKind::AccessRequest => AnyRecord::AccessRequest(decode(rec)?),
        RecordKind::AccessAnswer => AnyRecord::AccessAnswer(decode(rec)?),
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
