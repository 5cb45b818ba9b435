//! The receiver's side of a grant that ended (revoked by the provider, or past its end): this
//! gateway empties the granted items in every copy it holds of the provider's records — the
//! records, their change-log copies, the envelopes kept as evidence (whose SHA-256 as received
//! is kept, so the provider's signature still proves them) — unless another grant or a catalog
//! item still covers them, and then writes a deletion receipt into its own request, which
//! replicates to the provider signed by this gateway's key.
//!
//! A pass runs at start, after commits to the feed (a revocation arriving is one; at most once
//! a second) and at least every [`POLL`] (expiry needs no message). Passes are idempotent: a crash between the
//! erasure and the receipt erases again (nothing left to change) and then writes the receipt.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::watch;

use super::{SharingView, read_view_of, redact_body};
use crate::domain::RecordKind;
use crate::records::{
    AccessFilter, AccessState, AccessView, DeletionReceipt, Feed, RecordError, Records,
    ResourceName,
};
use crate::store::{BodyRewrite, EnvelopeRewrite, Redaction, ReplicaChange, envelope_digest};
use crate::wire::{kind_to_wire, pb};

/// How often a pass runs when nothing is committed (the delay before an expiry is acted on).
pub const POLL: Duration = Duration::from_secs(5);
/// The shortest time between two passes.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Told of each erasure (request name, receipt; e.g. to audit and count it), or of a failed
/// pass (with its error; the pass is retried).
pub type OnErased = Arc<dyn Fn(Result<(&str, &DeletionReceipt), &RecordError>) + Send + Sync>;

/// Erases what ended grants covered, until `stop`.
pub async fn run(
    records: Records,
    feed: Feed,
    on_erased: OnErased,
    mut stop: watch::Receiver<bool>,
) {
    let mut changed = feed.subscribe();
    loop {
        match erase_ended_grants(&records, &feed).await {
            Ok(receipts) => {
                for (name, r) in receipts {
                    tracing::warn!(
                        request = %name,
                        cause = %r.cause,
                        items = ?r.items,
                        records = r.records,
                        log_entries = r.log_entries,
                        evidence = r.evidence,
                        keys_destroyed = r.keys_destroyed,
                        "grant ended: held data erased, deletion receipt written"
                    );
                    on_erased(Ok((&name, &r)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "erasing data of ended grants failed; retrying");
                on_erased(Err(&e));
            }
        }
        // A busy gateway commits many times a second: one pass per second at most, so the
        // scan of ended grants does not follow every write.
        tokio::select! {
            _ = tokio::time::sleep(MIN_GAP) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(POLL - MIN_GAP) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass: for each request of this party whose grant ended and has no receipt yet, erases
/// and writes the receipt. Returns the receipts written, by request name.
pub async fn erase_ended_grants(
    records: &Records,
    feed: &Feed,
) -> Result<Vec<(String, DeletionReceipt)>, RecordError> {
    let mut written = Vec::new();
    for state in [AccessState::Revoked, AccessState::Expired] {
        let filter = AccessFilter {
            requester: records.party().to_string(),
            state: Some(state),
            ..Default::default()
        };
        let mut page = super::first_page();
        loop {
            let (views, next) = records.list_access_requests(&filter, &page).await?;
            for view in views {
                if view.request.deletion.is_some() || view.answer.is_none() {
                    continue;
                }
                let name = ResourceName::new(
                    &view.request.owner,
                    RecordKind::AccessRequest,
                    view.request.id,
                )
                .to_string();
                let receipt = erase(records, feed, &view, state).await?;
                records.record_deletion(&name, receipt.clone()).await?;
                written.push((name, receipt));
            }
            if next.is_empty() {
                break;
            }
            page.token = next;
        }
    }
    Ok(written)
}

/// Erases what `view`'s ended grant covered and no longer holds.
async fn erase(
    records: &Records,
    feed: &Feed,
    view: &AccessView,
    state: AccessState,
) -> Result<DeletionReceipt, RecordError> {
    let request = &view.request;
    let granted = view
        .answer
        .as_ref()
        .map(|a| a.items.clone())
        .unwrap_or_default();
    let entry = records.get_catalog_entry(&request.entry).await?;
    let now = records.now();
    let cause = if state == AccessState::Revoked {
        "revoked"
    } else {
        "expired"
    };
    let Some(kind) = entry.record_kind else {
        return Ok(receipt(now, cause, Vec::new(), Default::default()));
    };
    // What this party may still see of the provider's records of that kind.
    let here: SharingView = read_view_of(records, &request.provider).await?;
    let (items, whole) = match here.visibility(records.party(), kind, now) {
        // The ended grant was what admitted the records at all (a CONDITIONAL entry): none of
        // them may be held any more.
        None => (granted, true),
        Some(withheld) => (
            granted
                .into_iter()
                .filter(|i| withheld.contains(i))
                .collect::<Vec<_>>(),
            false,
        ),
    };
    if items.is_empty() && !whole {
        return Ok(receipt(now, cause, items, Default::default()));
    }
    let done = feed
        .redact(redaction(&request.provider, kind, &items, whole))
        .await?;
    let mut r = receipt(now, cause, items, done);
    r.records_deleted = whole;
    Ok(r)
}

fn receipt(
    time: i64,
    cause: &str,
    items: Vec<String>,
    done: crate::store::Redacted,
) -> DeletionReceipt {
    DeletionReceipt {
        time,
        cause: cause.to_string(),
        items,
        records: done.records,
        log_entries: done.log_entries,
        evidence: done.evidence,
        records_deleted: false,
        keys_destroyed: done.keys_destroyed,
    }
}

/// Empties `items` in every stored copy of `owner`'s records of `kind`; with `whole`, deletes
/// the records and their change-log copies and empties the kept envelopes of their bodies.
fn redaction(owner: &str, kind: RecordKind, items: &[String], whole: bool) -> Redaction {
    let paths: Arc<Vec<String>> = Arc::new(items.to_vec());
    let body_paths = paths.clone();
    let wire_kind = kind_to_wire(kind) as i32;
    let prefix = format!("{}.", kind.as_str());
    Redaction {
        owner: owner.to_string(),
        kind,
        body: Arc::new(move |record| {
            Ok(redact_body(&record.body, &body_paths)
                .map(|(body, _)| BodyRewrite { body, erases: true }))
        }),
        envelope: Arc::new(move |_seq, bytes, scheme| {
            let erased = |envelope: pb::ChangeEnvelope| EnvelopeRewrite {
                envelope: envelope.encode_to_vec(),
                erased_from: Some(envelope_digest(scheme, bytes)),
            };
            let Ok(mut envelope) = pb::ChangeEnvelope::decode(bytes) else {
                return Ok(None);
            };
            if envelope.kind != wire_kind || envelope.record_json.is_empty() {
                return Ok(None);
            }
            if whole {
                envelope.record_json = Vec::new();
                envelope.withheld_fields = vec![kind.as_str().to_string()];
                return Ok(Some(erased(envelope)));
            }
            let Some((new, emptied)) = std::str::from_utf8(&envelope.record_json)
                .ok()
                .and_then(|body| redact_body(body, &paths))
            else {
                return Ok(None);
            };
            envelope.record_json = new.into_bytes();
            for path in emptied {
                let named = format!("{prefix}{path}");
                if !envelope.withheld_fields.contains(&named) {
                    envelope.withheld_fields.push(named);
                }
            }
            Ok(Some(erased(envelope)))
        }),
        delete_records: whole,
    }
}

/// Empties, in replicated changes about to be applied, the items `party` holds no grant for at
/// `now` under `view` (its view of the owner's catalog and grants): a change the owner sealed
/// while a grant held that arrives after it ended. The record and the kept envelope are
/// emptied alike; the envelope's SHA-256 as received is kept, so the owner's signature still
/// proves it. Returns (sequence number, items emptied) of each change touched.
pub fn keep_only_granted(
    view: &SharingView,
    party: &str,
    now: i64,
    changes: &mut [ReplicaChange],
) -> Vec<(u64, Vec<String>)> {
    let mut touched = Vec::new();
    let here = view.for_peer(party, now);
    for change in changes {
        let Some(record) = change.record.as_mut() else {
            continue;
        };
        if !RecordKind::GOVERNED.contains(&record.kind) {
            continue;
        }
        let Some(withheld) = here.visibility(record.kind) else {
            continue;
        };
        if withheld.is_empty() || all_empty_already(&record.body, withheld) {
            continue;
        }
        let paths: Vec<String> = withheld.iter().cloned().collect();
        let Some((body, emptied)) = redact_body(&record.body, &paths) else {
            continue;
        };
        let Ok(mut envelope) = pb::ChangeEnvelope::decode(change.evidence.envelope.as_slice())
        else {
            continue;
        };
        envelope.record_json = body.clone().into_bytes();
        for path in &emptied {
            let named = format!("{}.{path}", record.kind.as_str());
            if !envelope.withheld_fields.contains(&named) {
                envelope.withheld_fields.push(named);
            }
        }
        let scheme = change.evidence.scheme;
        change.evidence.erased_sha256 = Some(envelope_digest(scheme, &change.evidence.envelope));
        change.evidence.envelope = envelope.encode_to_vec();
        record.body = body;
        touched.push((change.seq, emptied));
    }
    touched
}

/// Whether every one of `paths` holds, as far as the text shows, an empty string (or is
/// absent): the usual case, the owner having emptied them, needs no parsing.
fn all_empty_already(body: &str, paths: &BTreeSet<String>) -> bool {
    paths.iter().all(|path| {
        let key = path.rsplit('.').next().unwrap_or(path);
        let any = body.matches(&format!("\"{key}\":")).count();
        let empty = body.matches(&format!("\"{key}\":\"\"")).count();
        any == empty
    })
}
