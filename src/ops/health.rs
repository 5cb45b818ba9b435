//! `grpc.health.v1` that reflects reality: every service is SERVING only while the store
//! answers and the gateway's own certificate is valid; the overall ("") status follows.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::{EXPIRY_WARNING_DAYS, OpsState};
use crate::store::Store;

/// gRPC services whose health is reported, besides the overall "" entry.
pub const SERVICES: &[&str] = &[
    "yrd.exchange.v1.ProjectService",
    "yrd.exchange.v1.FactorService",
    "yrd.exchange.v1.WatchService",
    "yrd.exchange.v1.DirectoryService",
    "yrd.exchange.v1.AuditService",
    "yrd.exchange.v1.CatalogService",
    "yrd.exchange.v1.AccessService",
    "yrd.exchange.v1.FederationService",
];

/// How often the store and certificate are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for s in SERVICES {
        reporter.set_service_status(*s, status).await;
    }
}

/// Runs the checks until `stop` turns true, then reports NOT_SERVING (draining).
pub async fn monitor(
    reporter: HealthReporter,
    store: Arc<dyn Store>,
    state: Arc<OpsState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<bool> = None;
    let mut last_warned_day = None;
    loop {
        let store_result = store.ping().await;
        let now = crate::domain::now_micros() / 1_000_000;
        let cert_not_after = state.tls.borrow().cert_not_after;
        let cert_ok = now < cert_not_after;
        let serving = store_result.is_ok() && cert_ok;
        state
            .store_up
            .store(store_result.is_ok(), Ordering::Relaxed);
        state.serving.store(serving, Ordering::Relaxed);
        if let Ok(feed) = store.feed_position().await {
            state.feed_position.store(feed, Ordering::Relaxed);
        }
        if let Ok(Some(head)) = store.audit_head().await {
            state.audit_head.store(head.seq, Ordering::Relaxed);
        }
        if last != Some(serving) {
            if serving {
                tracing::info!("health: SERVING");
                set_all(&reporter, ServingStatus::Serving).await;
            } else {
                let reason = match (&store_result, cert_ok) {
                    (Err(e), _) => format!("store: {e}"),
                    (Ok(()), _) => {
                        "the gateway's certificate has expired; install a new one".to_string()
                    }
                };
                tracing::error!(reason = %reason, "health: NOT_SERVING");
                state.metrics.note_error(format!("NOT_SERVING: {reason}"));
                set_all(&reporter, ServingStatus::NotServing).await;
            }
            last = Some(serving);
        }
        let days_left = (cert_not_after - now) / 86_400;
        let today = now / 86_400;
        if days_left < EXPIRY_WARNING_DAYS && last_warned_day != Some(today) {
            tracing::warn!(
                days_left,
                "the gateway's certificate expires soon; replace it (it is reloaded without restart)"
            );
            last_warned_day = Some(today);
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(CHECK_INTERVAL) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            set_all(&reporter, ServingStatus::NotServing).await;
            return;
        }
    }
}
