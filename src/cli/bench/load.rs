//! The load generator every throughput phase shares: the same channels, the same number of
//! calls in flight and the same duration, whether the server is the baseline or a gateway.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub calls: u64,
    pub failed: u64,
    /// The first failure's status, so a broken phase says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// CPU time the server process used per successful call during the phase (user and
    /// system, from /proc), in microseconds: steadier than the rate on a shared machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_call: Option<f64>,
}

/// The `p` quantile (0..=1) of sorted microsecond samples, in milliseconds.
pub fn percentile_ms(sorted_micros: &[u64], p: f64) -> f64 {
    if sorted_micros.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_micros.len() as f64 - 1.0) * p).round() as usize;
    sorted_micros[i] as f64 / 1000.0
}

/// Runs `call(worker, i)` from `concurrency` workers, each starting its next call when the
/// last one answered, until `duration` has passed. Only successful calls count towards the
/// rate and the latencies.
pub async fn drive<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Throughput
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let call = call.clone();
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut failed = 0u64;
            let mut first_error = None;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match call(worker, i).await {
                    Ok(()) => latencies.push(sent.elapsed().as_micros() as u64),
                    Err(status) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{:?}: {}", status.code(), status.message())
                        });
                    }
                }
                i += 1;
            }
            (latencies, failed, first_error)
        });
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((l, f, e)) => {
                latencies.extend(l);
                failed += f;
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("load worker failed: {e}"));
            }
        }
    }
    // The last calls may end after the deadline; the rate uses the real span.
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Throughput {
        requests_per_second: latencies.len() as f64 / seconds,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        calls: latencies.len() as u64,
        failed,
        first_error,
        server_cpu_us_per_call: None,
    }
}
