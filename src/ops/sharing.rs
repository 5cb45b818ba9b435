//! Governed sharing as the operator sees it: how many access requests are past their answer
//! deadline — those this party must answer (its obligation under 政务数据共享条例) and those it
//! filed and waits on — refreshed in the background for the status page and the metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::OpsState;
use crate::records::Records;

/// How often the overdue requests are counted (deadlines are days long).
pub const COUNT_INTERVAL: Duration = Duration::from_secs(30);

/// Counts overdue requests now and every [`COUNT_INTERVAL`] until `stop` turns true; logs a
/// warning when the number this party must answer grows.
pub async fn monitor(records: Records, state: Arc<OpsState>, mut stop: watch::Receiver<bool>) {
    let mut last_to_answer = 0;
    loop {
        match records.count_overdue_access_requests().await {
            Ok((to_answer, awaiting)) => {
                state
                    .access_overdue_to_answer
                    .store(to_answer, Ordering::Relaxed);
                state
                    .access_overdue_awaiting
                    .store(awaiting, Ordering::Relaxed);
                if to_answer > last_to_answer {
                    tracing::warn!(
                        overdue = to_answer,
                        "access requests to this party are past their answer deadline; list them with `client request list --overdue`"
                    );
                }
                last_to_answer = to_answer;
            }
            Err(e) => tracing::warn!(error = %e, "cannot count overdue access requests"),
        }
        tokio::select! {
            _ = tokio::time::sleep(COUNT_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
