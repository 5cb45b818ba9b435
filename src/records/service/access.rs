//! Access requests (申请—审核): filed by the requester at its own gateway against a catalog entry
//! replicated there, answered by the provider at the provider's gateway, withdrawn by the
//! requester, escalated by the requester to the coordinating party. Deadlines count working
//! days ([`crate::workdays`]).

use uuid::Uuid;

use super::{Page, Records, WriteMeta, decode, non_empty, parent, parse_name, stored};
use crate::domain::RecordKind;
use crate::records::access::MAX_ITEMS;
use crate::records::{
    AccessAnswer, AccessOutcome, AccessRequest, AccessState, CatalogEntry, DeletionReceipt,
    RecordError, ResourceName, SharingClass, Violations, check_text,
};
use crate::store::{Idempotency, ListQuery, StoreError, StoredRecord};

/// Filters of `ListAccessRequests`.
#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    /// Empty: any requester.
    pub requester: String,
    /// Empty: any provider.
    pub provider: String,
    /// `None`: any state.
    pub state: Option<AccessState>,
    /// Only requests past their deadline without an answer.
    pub overdue_only: bool,
    /// Only requests escalated to the coordinating party.
    pub escalated_only: bool,
}

/// A request with its answer, if one arrived, and what they amount to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessView {
    pub request: AccessRequest,
    pub answer: Option<AccessAnswer>,
    pub outcome: AccessOutcome,
}

/// The provider's answer as requested by one of its systems.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Resource name of the request.
    pub request: String,
    pub approve: bool,
    /// Empty: every item requested.
    pub items: Vec<String>,
    /// 0: the period requested.
    pub validity_days: i32,
    pub reason: String,
}

impl Records {
    /// Files a request of this party for items of another party's catalog entry. A request
    /// naming a NOT_SHARED item is refused with the entry's legal basis; one naming only
    /// UNCONDITIONAL items is granted at once.
    pub async fn create_access_request(
        &self,
        mut request: AccessRequest,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<AccessView, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return self.access_view(decode(&first)?).await;
        }
        request.validate("access_request", &mut v);
        let Some(entry_name) = self.entry_asked(&request, &mut v) else {
            return Err(RecordError::Invalid(v));
        };
        let entry: CatalogEntry = self.fetch(&entry_name).await?;
        let (not_shared, all_unconditional) =
            classes_asked(&entry, &entry_name, &request.items, &mut v);
        v.into_result()?;
        if !not_shared.is_empty() {
            return Err(RecordError::Precondition {
                reason: "NOT_SHARED",
                message: format!(
                    "{} does not share {}; such items are refused at once",
                    entry_name.owner,
                    not_shared.join(", ")
                ),
            });
        }
        let now = self.now();
        request.id = Uuid::now_v7();
        request.owner = self.party.clone();
        request.provider = entry_name.owner.clone();
        request.entry = entry_name.to_string();
        request.answer_by = self.deadlines.answer_by(now);
        request.granted_at_once = all_unconditional;
        request.withdraw_time = None;
        request.revision = 1;
        request.create_time = now;
        request.update_time = now;
        let written = self
            .write_new_about(
                request_stored(&request)?,
                &entry_name,
                None,
                key?,
                now,
                meta.audit,
            )
            .await?
            .or_first(request)?;
        self.access_view(written).await
    }

    /// The catalog entry a request names, when it parses and is another party's.
    fn entry_asked(&self, request: &AccessRequest, v: &mut Violations) -> Option<ResourceName> {
        match ResourceName::parse(&request.entry, RecordKind::CatalogEntry) {
            Ok(n) if n.owner == self.party => {
                v.add("access_request.entry", "is this party's own entry");
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                if !request.entry.is_empty() {
                    v.add("access_request.entry", e);
                }
                None
            }
        }
    }

    /// Reads one request this party made, received or (as coordinator) holds.
    pub async fn get_access_request(&self, name: &str) -> Result<AccessView, RecordError> {
        let name = parse_name(name, RecordKind::AccessRequest, "name")?;
        let request: AccessRequest = self.fetch(&name).await?;
        self.access_view(request).await
    }

    /// Lists the requests visible here: those this party made, and those made to it.
    pub async fn list_access_requests(
        &self,
        filter: &AccessFilter,
        page: &Page,
    ) -> Result<(Vec<AccessView>, String), RecordError> {
        let fingerprint = format!(
            "q|{}|{}|{:?}|{}|{}",
            filter.requester,
            filter.provider,
            filter.state,
            filter.overdue_only,
            filter.escalated_only
        );
        let query = ListQuery {
            owner: non_empty(&filter.requester),
            ..ListQuery::of(RecordKind::AccessRequest, 0)
        };
        let parties = [
            ("requester", filter.requester.as_str()),
            ("provider", filter.provider.as_str()),
        ];
        self.list_page(&parties, fingerprint, page, query, |row| {
            Box::pin(async move {
                let request: AccessRequest = decode(&row)?;
                if !filter.provider.is_empty() && request.provider != filter.provider {
                    // Decided by the request alone: no need to look for its answer.
                    return Ok(None);
                }
                let view = self.access_view(request).await?;
                let keep = filter.state.is_none_or(|s| s == view.outcome.state)
                    && (!filter.overdue_only || view.outcome.overdue)
                    && (!filter.escalated_only || view.request.escalate_time.is_some());
                Ok(keep.then_some(view))
            })
        })
        .await
    }

    /// The provider's answer to a request made to this party: the answer is validated
    /// against the request ([`Records::validate_answer`]), the transition checked
    /// ([`may_answer`]), and the answer written ([`Records::write_answer`]).
    pub async fn answer_access_request(
        &self,
        answer: Answer,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<AccessView, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            let answer: AccessAnswer = decode(&first)?;
            return self.get_access_request(&answer.request).await;
        }
        let name = request_name(&answer.request, &mut v);
        check_text(&mut v, "reason", &answer.reason, 1000, !answer.approve);
        let Some(name) = name else {
            return Err(RecordError::Invalid(v));
        };
        let view = self.get_access_request(&name.to_string()).await?;
        self.validate_answer(&name, &answer, &view.request, &mut v)?;
        v.into_result()?;
        may_answer(&name, &view)?;
        self.write_answer(answer, &name, &view.request, key?, meta)
            .await?;
        self.get_access_request(&name.to_string()).await
    }

    /// An answer checked against its request: only the provider answers (`NOT_PROVIDER`,
    /// before anything else is looked at), and it grants only requested items for at most the
    /// days requested (field violations).
    fn validate_answer(
        &self,
        name: &ResourceName,
        answer: &Answer,
        request: &AccessRequest,
        v: &mut Violations,
    ) -> Result<(), RecordError> {
        if request.provider != self.party {
            return Err(RecordError::Denied {
                reason: "NOT_PROVIDER",
                message: format!(
                    "{name} asks {} for data; only {}'s systems answer it",
                    request.provider, request.provider
                ),
            });
        }
        if answer.items.len() > MAX_ITEMS {
            v.add("items", format!("names more than {MAX_ITEMS} items"));
        }
        for (i, item) in answer.items.iter().enumerate().take(MAX_ITEMS) {
            if !request.items.contains(item) {
                v.add(
                    format!("items[{i}]"),
                    format!("`{item}` was not requested; grant only requested items"),
                );
            }
        }
        if answer.validity_days < 0 || answer.validity_days > request.validity_days {
            v.add(
                "validity_days",
                format!(
                    "must be 0 (as requested) to the {} days requested",
                    request.validity_days
                ),
            );
        }
        Ok(())
    }

    /// Writes the provider's answer, at most one per request (a second is
    /// `ALREADY_ANSWERED`), with the call's audit event naming the request. An approval
    /// without items grants every requested item; 0 days means the days requested.
    async fn write_answer(
        &self,
        answer: Answer,
        name: &ResourceName,
        request: &AccessRequest,
        key: Idempotency,
        meta: WriteMeta,
    ) -> Result<(), RecordError> {
        let now = self.now();
        let days = match answer.validity_days {
            0 => request.validity_days,
            d => d,
        };
        let written = AccessAnswer {
            id: Uuid::now_v7(),
            owner: self.party.clone(),
            request: name.to_string(),
            approve: answer.approve,
            items: match (answer.approve, answer.items.is_empty()) {
                (false, _) => Vec::new(),
                (true, true) => request.items.clone(),
                (true, false) => answer.items,
            },
            valid_until: if answer.approve {
                AccessRequest::valid_until(now, days)
            } else {
                0
            },
            reason: answer.reason,
            revoke_time: None,
            revoke_reason: String::new(),
            revision: 1,
            create_time: now,
            update_time: now,
        };
        let unique = format!("access-answer/{name}");
        let audit = meta.audit.map(|a| a.naming(vec![name.to_string()]));
        self.write(
            answer_stored(&written)?,
            None,
            vec![],
            Some(unique),
            key,
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
        Ok(())
    }

    /// Ends a grant this party (the provider) gave, before it expires. The reason is required;
    /// revoking a revoked grant again changes nothing.
    pub async fn revoke_access_grant(
        &self,
        name: &str,
        reason: &str,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<AccessView, RecordError> {
        check_text(&mut v, "reason", reason, 1000, true);
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            let answer: AccessAnswer = decode(&first)?;
            return self.get_access_request(&answer.request).await;
        }
        let name = request_name(name, &mut v);
        let Some(name) = name else {
            return Err(RecordError::Invalid(v));
        };
        v.into_result()?;
        let view = self.get_access_request(&name.to_string()).await?;
        if view.request.provider != self.party {
            return Err(RecordError::Denied {
                reason: "NOT_PROVIDER",
                message: format!(
                    "{name} asks {} for data; only {}'s systems revoke its grant",
                    view.request.provider, view.request.provider
                ),
            });
        }
        match (view.outcome.state, &view.answer) {
            (AccessState::Revoked, _) => Ok(view),
            (AccessState::Approved, Some(answer)) => {
                let now = self.now();
                let mut next = answer.clone();
                next.revoke_time = Some(now);
                next.revoke_reason = reason.to_string();
                let answer_name =
                    ResourceName::new(&answer.owner, RecordKind::AccessAnswer, answer.id);
                // The call's event names the request, as the call layer would.
                let audit = meta.audit.map(|a| a.naming(vec![name.to_string()]));
                self.write_next(next, key?, &answer_name, now, audit)
                    .await?;
                tracing::warn!(request = %name, requester = %view.request.owner, "access grant revoked");
                self.get_access_request(&name.to_string()).await
            }
            (AccessState::Approved, None) => Err(RecordError::Precondition {
                reason: "NOT_REVOCABLE",
                message: format!(
                    "{name} names only unconditional items, granted at once: there is nothing to revoke"
                ),
            }),
            (state, _) => Err(RecordError::Precondition {
                reason: "NOT_APPROVED",
                message: format!(
                    "{name} is {state:?}, not an approved grant: there is nothing to revoke"
                ),
            }),
        }
    }

    /// Records in this party's own request that its gateway erased what it held under the
    /// grant after it ended. Written once (the request id is derived from the request), so a
    /// gateway that crashed after erasing and erases again writes no second receipt.
    pub async fn record_deletion(
        &self,
        name: &str,
        receipt: DeletionReceipt,
    ) -> Result<AccessView, RecordError> {
        use sha2::Digest;
        let seed = sha2::Sha256::digest(format!("deletion-receipt/{name}"));
        let mut id = [0u8; 16];
        id.copy_from_slice(&seed[..16]);
        let meta = WriteMeta {
            request_id: uuid::Builder::from_random_bytes(id).into_uuid().to_string(),
            fingerprint: seed.to_vec(),
            audit: None,
        };
        self.change_own_request(name, meta, Violations::new(), |_, view, _| {
            if view.request.deletion.is_some() {
                return Ok(None);
            }
            let mut next = view.request.clone();
            next.deletion = Some(receipt);
            Ok(Some(next))
        })
        .await
    }

    /// Withdraws a request this party made that has no answer yet.
    pub async fn withdraw_access_request(
        &self,
        name: &str,
        meta: WriteMeta,
        v: Violations,
    ) -> Result<AccessView, RecordError> {
        self.change_own_request(name, meta, v, |name, view, now| {
            match view.outcome.state {
                AccessState::Withdrawn => return Ok(None),
                _ if view.answer.is_some() => {
                    return Err(RecordError::Precondition {
                        reason: "ALREADY_ANSWERED",
                        message: format!(
                            "{name} was already answered by {}",
                            view.request.provider
                        ),
                    });
                }
                _ => {}
            }
            let mut next = view.request.clone();
            next.withdraw_time = Some(now);
            Ok(Some(next))
        })
        .await
    }

    /// Takes a request this party made to the coordinating party: one that is overdue, or was
    /// refused. The reason is required. Escalating again changes nothing.
    pub async fn escalate_access_request(
        &self,
        name: &str,
        reason: &str,
        meta: WriteMeta,
        mut v: Violations,
    ) -> Result<AccessView, RecordError> {
        check_text(&mut v, "reason", reason, 1000, true);
        let view = self
            .change_own_request(name, meta, v, |name, view, now| {
                if view.request.escalate_time.is_some() {
                    return Ok(None);
                }
                let outcome = &view.outcome;
                if !(outcome.overdue || outcome.state == AccessState::Refused) {
                    return Err(RecordError::Precondition {
                        reason: "NOT_DISPUTABLE",
                        message: format!(
                            "{name} is neither overdue nor refused; escalate it when its answer is late or a refusal is disputed"
                        ),
                    });
                }
                let mut next = view.request.clone();
                next.escalate_time = Some(now);
                next.escalation_reason = reason.to_string();
                Ok(Some(next))
            })
            .await?;
        tracing::warn!(request = %ResourceName::new(&view.request.owner, RecordKind::AccessRequest, view.request.id), provider = %view.request.provider, "access request escalated to the coordinating party");
        Ok(view)
    }

    /// A change by the requester to its own request: `change` sees the name, the request as it
    /// stands and the time, and returns the next version (`None`: nothing to change), which is
    /// written at the next revision if nobody changed the request meanwhile.
    async fn change_own_request(
        &self,
        name: &str,
        meta: WriteMeta,
        mut v: Violations,
        change: impl FnOnce(
            &ResourceName,
            &AccessView,
            i64,
        ) -> Result<Option<AccessRequest>, RecordError>,
    ) -> Result<AccessView, RecordError> {
        let key = self.idempotency(&meta, &mut v);
        if let Some(first) = self.replay(&key).await? {
            return self.access_view(decode(&first)?).await;
        }
        let name = parse_name(name, RecordKind::AccessRequest, "name")?;
        if name.owner != self.party {
            return Err(RecordError::NotOwner {
                name: name.to_string(),
                owner: name.owner.clone(),
            });
        }
        v.into_result()?;
        let view = self.get_access_request(&name.to_string()).await?;
        let now = self.now();
        let Some(next) = change(&name, &view, now)? else {
            return Ok(view);
        };
        let audit = meta.audit.map(|a| a.naming(vec![name.to_string()]));
        let written = self.write_next(next, key?, &name, now, audit).await?;
        self.access_view(written).await
    }

    /// Overdue requests visible here: (made to this party and waiting for its answer, made by
    /// this party and waiting for another's), for the status page and metrics.
    pub async fn count_overdue_access_requests(&self) -> Result<(u64, u64), RecordError> {
        // One pass over the overdue requests held here, counted by this party's side.
        let filter = AccessFilter {
            overdue_only: true,
            ..AccessFilter::default()
        };
        let mut page = Page {
            size: super::MAX_PAGE_SIZE as i32,
            token: String::new(),
        };
        let mut counts = (0, 0);
        loop {
            let (views, next) = self.list_access_requests(&filter, &page).await?;
            for view in &views {
                if view.request.provider == self.party {
                    counts.0 += 1;
                } else if view.request.owner == self.party {
                    counts.1 += 1;
                }
            }
            if next.is_empty() {
                return Ok(counts);
            }
            page.token = next;
        }
    }

    /// A request with its answer (the provider's earliest) and derived outcome.
    async fn access_view(&self, request: AccessRequest) -> Result<AccessView, RecordError> {
        let name = ResourceName::new(&request.owner, RecordKind::AccessRequest, request.id);
        let answer: Option<AccessAnswer> = self
            .first_answer(
                RecordKind::AccessAnswer,
                &name.to_string(),
                &request.provider,
            )
            .await?;
        let outcome = request.outcome(answer.as_ref(), self.now());
        Ok(AccessView {
            request,
            answer,
            outcome,
        })
    }
}

/// The request named in a call's `name` field, or a violation naming it.
fn request_name(name: &str, v: &mut Violations) -> Option<ResourceName> {
    ResourceName::parse(name, RecordKind::AccessRequest)
        .map_err(|e| v.add("name", e))
        .ok()
}

/// The classes of the items a request asks for: the NOT_SHARED ones with their legal basis,
/// and whether every one is UNCONDITIONAL. An item the entry does not have is a violation.
fn classes_asked(
    entry: &CatalogEntry,
    entry_name: &ResourceName,
    items: &[String],
    v: &mut Violations,
) -> (Vec<String>, bool) {
    let mut not_shared = Vec::new();
    let mut all_unconditional = true;
    for (i, field) in items.iter().enumerate().take(MAX_ITEMS) {
        match entry.items.iter().find(|item| &item.field == field) {
            None => v.add(
                format!("access_request.items[{i}]"),
                format!("`{field}` is not an item of {entry_name}"),
            ),
            Some(item) => match entry.class_of(item) {
                SharingClass::NotShared => {
                    let basis = if item.legal_basis.is_empty() {
                        &entry.legal_basis
                    } else {
                        &item.legal_basis
                    };
                    not_shared.push(format!("`{field}` ({basis})"));
                }
                SharingClass::Conditional | SharingClass::Unspecified => all_unconditional = false,
                SharingClass::Unconditional => {}
            },
        }
    }
    (not_shared, all_unconditional)
}

/// Whether a request can be answered as it stands: not once withdrawn, and not when it named
/// only unconditional items and was granted at once.
fn may_answer(name: &ResourceName, view: &AccessView) -> Result<(), RecordError> {
    match view.outcome.state {
        AccessState::Withdrawn => Err(RecordError::Precondition {
            reason: "WITHDRAWN",
            message: format!("{name} was withdrawn by {}", view.request.owner),
        }),
        AccessState::Approved if view.request.granted_at_once => Err(RecordError::Precondition {
            reason: "GRANTED_AT_ONCE",
            message: format!("{name} names only unconditional items and was granted at once"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;

super::versioned!(AccessRequest, request_stored);
super::versioned!(AccessAnswer, answer_stored);

/// A request as stored: its parent is the catalog entry, whose owner is the provider (so the
/// request is replicated to the provider only).
pub(super) fn request_stored(r: &AccessRequest) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::AccessRequest,
        &r.owner,
        r.id,
        r.revision,
        parent(&r.entry),
        r,
    )
}

/// An answer as stored: its parent is the request, whose owner is the requester.
pub(super) fn answer_stored(a: &AccessAnswer) -> Result<StoredRecord, RecordError> {
    stored(
        RecordKind::AccessAnswer,
        &a.owner,
        a.id,
        a.revision,
        parent(&a.request),
        a,
    )
}
