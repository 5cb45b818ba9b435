//! A small Prometheus registry: call counts by method and code, latency histograms, in-flight
//! calls and calls shed by limits are recorded as they happen; replication, certificate and
//! store figures are read from shared state at scrape time. Text exposition format 0.0.4.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tonic::Code;

use super::OpsState;
use crate::exchange::inbound::PeerStatus;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Recent errors kept for the status page.
const RECENT_ERRORS: usize = 20;

/// Distinct method labels kept at most. A caller can name any path (an unknown gRPC method, an
/// HTTP route that does not exist); past this many, further ones are counted as `(other)`, so
/// the metrics cannot be made to grow without bound.
const MAX_METHOD_LABELS: usize = 256;
const OTHER_METHOD: &str = "(other)";

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Calls {
    by_code: BTreeMap<(String, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    shed: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Metrics {
    calls: Mutex<Calls>,
    in_flight: AtomicI64,
    handshakes_refused: AtomicU64,
    connections_shed: AtomicU64,
    recent: Mutex<VecDeque<(i64, String)>>,
}

/// The canonical upper-case name of a gRPC code, as used in labels and logs.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a finished call (admitted calls only; see [`Metrics::call_started`]).
    pub fn call_finished(&self, method: &str, code: Code, seconds: f64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.record(method, code, seconds);
    }

    /// Records a call answered without being admitted (shed by a limit).
    pub fn call_shed(&self, method: &str, reason: &'static str, code: Code) {
        *lock(&self.calls).shed.entry(reason).or_default() += 1;
        self.record(method, code, 0.0);
    }

    fn record(&self, method: &str, code: Code, seconds: f64) {
        let mut calls = lock(&self.calls);
        let method =
            if calls.latency.contains_key(method) || calls.latency.len() < MAX_METHOD_LABELS - 1 {
                method
            } else {
                OTHER_METHOD
            };
        *calls
            .by_code
            .entry((method.to_string(), code_name(code)))
            .or_default() += 1;
        let h = calls.latency.entry(method.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Counts a TLS handshake the listener refused (no or untrusted client certificate, wrong
    /// protocol version, timeout).
    pub fn handshake_refused(&self) {
        self.handshakes_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed before its handshake (a cap reached); returns the total.
    pub fn connection_shed(&self) -> u64 {
        self.connections_shed.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Remembers an error for the status page (no personal data: callers pass codes and ids).
    pub fn note_error(&self, text: String) {
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back((crate::domain::now_micros(), text));
    }

    pub fn recent_errors(&self) -> Vec<(i64, String)> {
        lock(&self.recent).iter().rev().cloned().collect()
    }

    /// The exposition text.
    pub fn render(&self, state: &OpsState) -> String {
        let mut out = String::new();
        self.render_calls(&mut out);
        render_peers(&mut out, &lock(&state.peers).clone());
        render_gateway(&mut out, state);
        out
    }

    /// Calls by method and code, their durations, calls shed, in flight, refused handshakes.
    fn render_calls(&self, out: &mut String) {
        let calls = lock(&self.calls);
        out.push_str("# HELP yrd_calls_total gRPC calls by method and status code.\n# TYPE yrd_calls_total counter\n");
        for ((method, code), n) in &calls.by_code {
            let _ = writeln!(
                out,
                "yrd_calls_total{{method=\"{}\",code=\"{code}\"}} {n}",
                escape_label(method)
            );
        }
        out.push_str("# HELP yrd_call_duration_seconds Time to answer a call (to the end of its response).\n# TYPE yrd_call_duration_seconds histogram\n");
        for (method, h) in &calls.latency {
            let m = escape_label(method);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "yrd_call_duration_seconds_bucket{{method=\"{m}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "yrd_call_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "yrd_call_duration_seconds_sum{{method=\"{m}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "yrd_call_duration_seconds_count{{method=\"{m}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP yrd_calls_shed_total Calls refused by a limit before any work.\n# TYPE yrd_calls_shed_total counter\n");
        for reason in ["rate_limited", "overloaded", "too_many_streams"] {
            let _ = writeln!(
                out,
                "yrd_calls_shed_total{{reason=\"{reason}\"}} {}",
                calls.shed.get(reason).copied().unwrap_or(0)
            );
        }
        drop(calls);
        let _ = writeln!(
            out,
            "# HELP yrd_calls_in_flight Calls and streams in progress.\n# TYPE yrd_calls_in_flight gauge\nyrd_calls_in_flight {}",
            self.in_flight()
        );
        let _ = writeln!(
            out,
            "# HELP yrd_tls_handshakes_refused_total TLS handshakes refused before any call (client certificate missing or untrusted, TLS below 1.3, timeout).\n# TYPE yrd_tls_handshakes_refused_total counter\nyrd_tls_handshakes_refused_total {}",
            self.handshakes_refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP yrd_connections_shed_total Connections closed before their TLS handshake because too many handshakes were in progress (overall or from the address).\n# TYPE yrd_connections_shed_total counter\nyrd_connections_shed_total {}",
            self.connections_shed.load(Ordering::Relaxed)
        );
    }
}

/// `# HELP` and `# TYPE` lines of one metric.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A metric with one unlabelled value.
fn single(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// Replication state of each peer, one series per peer.
fn render_peers(out: &mut String, peers: &std::collections::BTreeMap<String, PeerStatus>) {
    // Per-peer series: name, help, type, value.
    type PeerValue = fn(&PeerStatus) -> String;
    let per_peer: [(&str, &str, &str, PeerValue); 10] = [
        (
            "yrd_peer_connected",
            "1 while a change stream from the peer is open.",
            "gauge",
            |s| u8::from(s.connected).to_string(),
        ),
        (
            "yrd_peer_standby",
            "1 while another replica sharing this gateway's PostgreSQL store holds the pull lease for the peer.",
            "gauge",
            |s| u8::from(s.standby).to_string(),
        ),
        (
            "yrd_peer_cursor",
            "Last change of the peer applied here.",
            "gauge",
            |s| s.cursor.to_string(),
        ),
        (
            "yrd_peer_head",
            "The peer's last committed change, as last reported.",
            "gauge",
            |s| s.head_seq.to_string(),
        ),
        (
            "yrd_peer_lag_changes",
            "Changes committed at the peer not yet applied here.",
            "gauge",
            |s| s.head_seq.saturating_sub(s.cursor).to_string(),
        ),
        (
            "yrd_peer_applied_total",
            "Changes applied from the peer since start.",
            "counter",
            |s| s.applied.to_string(),
        ),
        (
            "yrd_peer_refused_total",
            "Changes refused (signature, signer, owner, order) since start.",
            "counter",
            |s| s.refused.to_string(),
        ),
        (
            "yrd_peer_emptied_late_total",
            "Changes kept without items whose grant ended while they were on their way.",
            "counter",
            |s| s.emptied_late.to_string(),
        ),
        (
            "yrd_peer_last_applied_timestamp_seconds",
            "When a change of the peer was last applied.",
            "gauge",
            |s| {
                s.last_applied_at
                    .map_or(0.0, |t| t as f64 / 1e6)
                    .to_string()
            },
        ),
        (
            "yrd_peer_error",
            "1 while the last attempt to follow the peer failed.",
            "gauge",
            |s| u8::from(s.last_error.is_some()).to_string(),
        ),
    ];
    for (name, help, kind, value) in per_peer {
        header(out, name, help, kind);
        for (p, s) in peers {
            let _ = writeln!(out, "{name}{{peer=\"{p}\"}} {}", value(s));
        }
    }
}

/// Certificate expiry, store and serving state, audit chain length and feed position.
fn render_gateway(out: &mut String, state: &OpsState) {
    let (cert, ca) = {
        let tls = state.tls.borrow();
        (tls.cert_not_after, tls.ca_not_after)
    };
    header(
        out,
        "yrd_certificate_expiry_timestamp_seconds",
        "Expiry of the gateway's certificate and CA.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "yrd_certificate_expiry_timestamp_seconds{{certificate=\"gateway\"}} {cert}"
    );
    let _ = writeln!(
        out,
        "yrd_certificate_expiry_timestamp_seconds{{certificate=\"ca\"}} {ca}"
    );
    single(
        out,
        "yrd_store_up",
        "1 while the store answers.",
        u8::from(state.store_up.load(Ordering::Relaxed)),
    );
    single(
        out,
        "yrd_serving",
        "1 while health reports SERVING.",
        u8::from(state.serving.load(Ordering::Relaxed)),
    );
    single(
        out,
        "yrd_audit_chain_length",
        "Sequence number of the last audit event.",
        state.audit_head.load(Ordering::Relaxed),
    );
    header(
        out,
        "yrd_access_requests_overdue",
        "Access requests past their answer deadline: to_answer here, or awaiting another party.",
        "gauge",
    );
    for (side, n) in [
        ("to_answer", &state.access_overdue_to_answer),
        ("awaiting", &state.access_overdue_awaiting),
    ] {
        let _ = writeln!(
            out,
            "yrd_access_requests_overdue{{side=\"{side}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    header(
        out,
        "yrd_grant_erasures_total",
        "Erasures of data held under grants that ended: done (a deletion receipt written), or failed (retried).",
        "counter",
    );
    for (outcome, n) in [
        ("done", &state.erasures_done),
        ("failed", &state.erasures_failed),
    ] {
        let _ = writeln!(
            out,
            "yrd_grant_erasures_total{{outcome=\"{outcome}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    single(
        out,
        "yrd_writes_held",
        "1 while writes are refused because the store was restored from a backup: until every peer was asked for this party's changes it holds, and while one holds more than the store.",
        u8::from(state.feed.writes_held().is_some()),
    );
    for (name, help, n) in [
        (
            "yrd_changes_taken_back_total",
            "Changes of this party's own log taken back from peers after a restore, since start.",
            &state.taken_back,
        ),
        (
            "yrd_take_back_failures_total",
            "Attempts to take changes back from peers that failed or stopped short (retried).",
            &state.take_back_failed,
        ),
    ] {
        header(out, name, help, "counter");
        let _ = writeln!(out, "{name} {}", n.load(Ordering::Relaxed));
    }
    header(
        out,
        "yrd_config_reloads_total",
        "Changed configuration files read while running, by result (applied: a changed party list or peers put in force; refused: the running ones kept).",
        "counter",
    );
    for (result, n) in [
        ("applied", state.reloads.applied()),
        ("refused", state.reloads.refused()),
    ] {
        let _ = writeln!(out, "yrd_config_reloads_total{{result=\"{result}\"}} {n}");
    }
    let status = state.reloads.status();
    single(
        out,
        "yrd_config_reload_refused",
        "1 while the configuration file as it is now is refused (the status page says why).",
        u8::from(status.refused.is_some()),
    );
    single(
        out,
        "yrd_config_restart_needed",
        "1 while the configuration file changes keys that take effect only at the next restart.",
        u8::from(!status.restart_needed.is_empty()),
    );
    let name = "yrd_crypto_profile_info";
    header(
        out,
        name,
        "1, labelled with the crypto profile this gateway runs (intl, or gm: RFC 8998, SM2, SM3).",
        "gauge",
    );
    let _ = writeln!(
        out,
        "{name}{{profile=\"{}\"}} 1",
        state.membership.profile()
    );
    let at_rest = state.at_rest();
    single(
        out,
        "yrd_sealed_at_rest",
        "1 when records are sealed at rest ([keys]); 0 when they are stored in clear.",
        u8::from(at_rest.is_some()),
    );
    if let Some((_, _, counts)) = at_rest {
        let name = "yrd_data_keys";
        header(
            out,
            name,
            "Data keys of the key ring: live, and destroyed by erasures (what they sealed is unreadable everywhere).",
            "gauge",
        );
        let _ = writeln!(out, "{name}{{state=\"live\"}} {}", counts.live);
        let _ = writeln!(out, "{name}{{state=\"destroyed\"}} {}", counts.destroyed);
    }
    let name = "yrd_membership_differs";
    header(
        out,
        name,
        "1 while the peer's party list (its digest) differs from this gateway's; peers that have not shown one are not listed.",
        "gauge",
    );
    for v in state.membership.views() {
        let _ = writeln!(
            out,
            "{name}{{peer=\"{}\"}} {}",
            v.party,
            u8::from(v.differs)
        );
    }
    single(
        out,
        "yrd_feed_position",
        "Changes committed here (own and applied replicas).",
        state.feed_position.load(Ordering::Relaxed),
    );
}

#[cfg(test)]
mod tests;
