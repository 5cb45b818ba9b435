//! `WatchService`: a resumable stream of every change visible to the caller's party — its own
//! records and the replicas shared with it — in the order they were committed here.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::{bad_request, record_status, store_status};
use crate::domain::RecordKind;
use crate::records::{AnyRecord, Feed, Records, ResourceName, Violations, decode_record};
use crate::store::FeedEntry;
use crate::wire::access::access_request_to;
use crate::wire::allocations::{allocation_to, decision_to};
use crate::wire::catalog::catalog_entry_to;
use crate::wire::pb;
use crate::wire::projects::project_to;
use crate::wire::referrals::referral_to;
use crate::wire::timestamp;

/// Feed entries read per store query.
const BATCH: usize = 256;
/// Upper bound on how long a caught-up stream waits before looking at the store again.
const POLL: Duration = Duration::from_secs(1);

pub struct WatchApi {
    /// Turns feed entries into the views clients see (an allocation with its status, ...).
    records: Records,
    feed: Feed,
    stop: watch::Receiver<bool>,
}

impl WatchApi {
    /// `stop` turning true ends every stream, so a graceful shutdown is not held up.
    pub fn new(records: Records, feed: Feed, stop: watch::Receiver<bool>) -> Self {
        WatchApi {
            records,
            feed,
            stop,
        }
    }
}

/// Resume tokens are the feed position, hex-encoded; opaque to clients.
pub(crate) fn parse_token(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(token.strip_prefix("w").unwrap_or("?"), 16).map_err(|_| {
        let mut v = Violations::new();
        v.add("resume_token", "is not a token this service issued");
        bad_request(&v)
    })
}

pub(crate) fn token(position: u64) -> String {
    format!("w{position:016x}")
}

async fn event(records: &Records, entry: &FeedEntry) -> Result<pb::WatchResponse, Status> {
    use pb::watch_response::Record;
    let record = match decode_record(&entry.change.record).map_err(record_status)? {
        AnyRecord::Project(p) => Record::Project(project_to(p)),
        AnyRecord::Allocation(a) => {
            let name = ResourceName::new(&a.owner, RecordKind::Allocation, a.id);
            let view = records
                .get_allocation(&name.to_string())
                .await
                .map_err(record_status)?;
            Record::Allocation(allocation_to(view))
        }
        AnyRecord::Decision(d) => {
            // Whether it counted depends on the other decisions: ask the allocation.
            let superseded = match records.get_allocation(&d.allocation).await {
                Ok(view) => view.outcome.superseded.contains(&d.id),
                Err(_) => false,
            };
            Record::Decision(decision_to(d, superseded))
        }
        AnyRecord::Referral(r) => {
            let name = ResourceName::new(&r.owner, RecordKind::Referral, r.id);
            Record::Referral(referral_to(
                records
                    .get_referral(&name.to_string())
                    .await
                    .map_err(record_status)?,
            ))
        }
        AnyRecord::ReferralResponse(r) => Record::Referral(referral_to(
            records
                .get_referral(&r.referral)
                .await
                .map_err(record_status)?,
        )),
        AnyRecord::CatalogEntry(e) => Record::CatalogEntry(catalog_entry_to(e)),
        AnyRecord::AccessRequest(r) => {
            let name = ResourceName::new(&r.owner, RecordKind::AccessRequest, r.id);
            Record::AccessRequest(access_request_to(
                records
                    .get_access_request(&name.to_string())
                    .await
                    .map_err(record_status)?,
            ))
        }
        AnyRecord::AccessAnswer(a) => Record::AccessRequest(access_request_to(
            records
                .get_access_request(&a.request)
                .await
                .map_err(record_status)?,
        )),
    };
    Ok(pb::WatchResponse {
        resume_token: token(entry.position),
        owner: entry.change.owner.clone(),
        seq: entry.change.seq,
        commit_time: Some(timestamp(entry.change.time)),
        record: Some(record),
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::watch_service_server::WatchService for WatchApi {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let mut after = parse_token(&request.get_ref().resume_token)?;
        let records = self.records.clone();
        let feed = self.feed.clone();
        let mut stop = self.stop.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut changed = feed.subscribe();
            loop {
                let entries = match feed.entries(after, BATCH).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                };
                if entries.is_empty() {
                    tokio::select! {
                        _ = changed.changed() => {}
                        _ = tokio::time::sleep(POLL) => {}
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tx.closed() => return,
                    }
                    continue;
                }
                for entry in &entries {
                    let item = event(&records, entry).await;
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                    after = entry.position;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
