//! The admin HTTP server, on its own port (loopback by default): `/metrics` for Prometheus,
//! `/healthz` for load balancers, and `/` — a status page for people, plain HTML that needs no
//! JavaScript.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{EXPIRY_WARNING_DAYS, OpsState};
use crate::domain::now_micros;

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<OpsState>, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(addr = %addr, "admin http serving (/, /metrics, /healthz)");
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin http server failed");
    }
}

async fn metrics(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state),
    )
}

async fn healthz(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    if state.serving.load(Ordering::Relaxed) {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn when(micros: i64) -> String {
    if micros <= 0 {
        return "never".into();
    }
    let ago = (now_micros() - micros) / 1_000_000;
    match ago {
        a if a < 120 => format!("{a} s ago"),
        a if a < 7200 => format!("{} min ago", a / 60),
        a => format!("{} h ago", a / 3600),
    }
}

fn expiry(not_after: i64) -> String {
    let days = (not_after - now_micros() / 1_000_000) / 86_400;
    let warn = if days < 0 {
        " <b class=bad>EXPIRED</b>"
    } else if days < EXPIRY_WARNING_DAYS {
        " <b class=warn>renew soon</b>"
    } else {
        ""
    };
    format!("in {days} days{warn}")
}

async fn status_page(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    let mut h = String::new();
    summary(&mut h, &state);
    federation(&mut h, &state);
    peers(&mut h, &state);
    certificates_and_errors(&mut h, &state);
    h.push_str("</table><p><a href=/metrics>/metrics</a> · <a href=/healthz>/healthz</a></p>");
    Html(h)
}

/// The page's head and its first paragraphs: health, store, calls, the audit trail, overdue
/// access requests, erasures, and whether this party's own change log is whole.
fn summary(h: &mut String, state: &OpsState) {
    let serving = state.serving.load(Ordering::Relaxed);
    let _ = write!(
        h,
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=10>\
         <title>yrd-gateway {party}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.bad{{color:#b00}}.warn{{color:#a60}}.ok{{color:#070}}</style>\
         <h1>yrd-gateway — {party}</h1><p>Health: {health} · store {store} · calls in flight: {inflight} · feed position: {feed} · audit events: {audit}</p>\
         <p>Access requests past their answer deadline: {to_answer} to answer here · {awaiting} filed here, awaiting another party (<code>client request list --overdue</code>)</p>\
         <p>Grants that ended, their data erased here: {erased} · failed erasure passes (retried): {erase_failed}</p>\
         <p>Own change log: {own_log}</p>",
        party = esc(&state.party),
        health = if serving {
            "<b class=ok>SERVING</b>"
        } else {
            "<b class=bad>NOT_SERVING</b>"
        },
        store = if state.store_up.load(Ordering::Relaxed) {
            "up"
        } else {
            "<b class=bad>down</b>"
        },
        inflight = state.metrics.in_flight(),
        feed = state.feed_position.load(Ordering::Relaxed),
        audit = state.audit_head.load(Ordering::Relaxed),
        to_answer = match state.access_overdue_to_answer.load(Ordering::Relaxed) {
            0 => "0".to_string(),
            n => format!("<b class=bad>{n}</b>"),
        },
        awaiting = state.access_overdue_awaiting.load(Ordering::Relaxed),
        erased = state.erasures_done.load(Ordering::Relaxed),
        erase_failed = match state.erasures_failed.load(Ordering::Relaxed) {
            0 => "0".to_string(),
            n => format!("<b class=bad>{n}</b>"),
        },
        own_log = match state.feed.writes_held() {
            None => format!(
                "whole · changes taken back from peers since start: {}",
                state.taken_back.load(Ordering::Relaxed)
            ),
            Some(why) => format!(
                "<b class=bad>WRITES HELD</b>: {} (failed or incomplete attempts: {}; last: {})",
                esc(&why),
                state.take_back_failed.load(Ordering::Relaxed),
                esc(state
                    .take_back_problem
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_deref()
                    .unwrap_or("none yet"))
            ),
        },
    );
}

/// The federation's parties, the digest of the party list and what each peer showed.
fn federation(h: &mut String, state: &OpsState) {
    h.push_str("<h2>Federation</h2>");
    h.push_str(&reload_status(&state.reloads.status()));
    h.push_str(
        "<table><tr><th>order</th><th>party</th><th>name</th><th>province</th><th>status</th></tr>",
    );
    for (i, p) in state.members.current().parties().iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td>{i}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.id),
            esc(&p.display_name),
            esc(&p.province),
            if p.suspended {
                "<b class=bad>SUSPENDED</b>"
            } else {
                "member"
            }
        );
    }
    let own = crate::membership::hex(&state.membership.own());
    let profile = state.membership.profile();
    let what = match profile {
        crate::crypto::Profile::Intl => "TLS 1.3 with international suites, P-256, SHA-256",
        crate::crypto::Profile::Gm => "RFC 8998 TLS_SM4_GCM_SM3 with curveSM2, SM2, SM3",
    };
    let at_rest = match state.at_rest() {
        Some((algorithm, kek, counts)) => format!(
            "sealed with {algorithm} (key-encryption key {}; {} live data keys, {} destroyed by erasures)",
            esc(&kek),
            counts.live,
            counts.destroyed
        ),
        None => "<b class=bad>in clear</b>: no [keys] in the config".to_string(),
    };
    let _ = write!(h, "</table><p>Data at rest: {at_rest}.</p>");
    let _ = write!(
        h,
        "<p>Crypto profile: <b>{profile}</b> ({what}). Party list digest (SHA-256 over the list and the profile, the same at every gateway): <code>{own}</code></p><table><tr><th>peer</th><th>its party list</th><th>shown</th></tr>"
    );
    let views = state.membership.views();
    if views.is_empty() {
        h.push_str("<tr><td colspan=3>no peer has shown its digest yet</td></tr>");
    }
    for v in &views {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.party),
            if v.differs {
                format!(
                    "<b class=bad>DIFFERS</b>: <code>{}</code> — compare [[parties]] and [crypto] profile in both configurations",
                    crate::membership::hex(&v.digest)
                )
            } else {
                "<span class=ok>the same</span>".to_string()
            },
            when(v.seen_at)
        );
    }
}

/// Replication into this gateway, a row per peer: stream, cursor, lag, refusals, last error.
fn peers(h: &mut String, state: &OpsState) {
    h.push_str("</table><h2>Peers (replication into this gateway)</h2><table><tr><th>peer</th><th>stream</th><th>applied up to</th><th>peer head</th><th>lag (changes)</th><th>last applied</th><th>applied</th><th>refused</th><th>last error</th></tr>");
    let peers = state.peers.lock().map(|p| p.clone()).unwrap_or_default();
    if peers.is_empty() {
        h.push_str("<tr><td colspan=9>no [[peers]] configured</td></tr>");
    }
    for (party, s) in &peers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(party),
            if s.connected {
                "<span class=ok>connected</span>"
            } else if s.standby {
                "standby: another replica of this gateway pulls"
            } else {
                "<span class=bad>disconnected</span>"
            },
            s.cursor,
            s.head_seq,
            s.head_seq.saturating_sub(s.cursor),
            when(s.last_applied_at.unwrap_or(0)),
            s.applied,
            if s.refused > 0 {
                format!("<b class=bad>{}</b>", s.refused)
            } else {
                "0".into()
            },
            esc(s.last_error.as_deref().unwrap_or("")),
        );
    }
}

/// When the gateway certificate and the CA expire, and the recent errors (the table is
/// closed by the caller).
fn certificates_and_errors(h: &mut String, state: &OpsState) {
    let (cert, ca) = {
        let tls = state.tls.borrow();
        (tls.cert_not_after, tls.ca_not_after)
    };
    let _ = write!(
        h,
        "</table><h2>Certificates</h2><table><tr><td>gateway certificate</td><td>expires {}</td></tr>\
         <tr><td>CA</td><td>expires {}</td></tr></table><h2>Recent errors</h2><table>",
        expiry(cert),
        expiry(ca)
    );
    let recent = state.metrics.recent_errors();
    if recent.is_empty() {
        h.push_str("<tr><td>none</td></tr>");
    }
    for (at, text) in recent {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", when(at), esc(&text));
    }
}

/// What the readings of the configuration file did, as a paragraph of the status page.
fn reload_status(s: &crate::membership::reload::ReloadStatus) -> String {
    let mut h = String::from("<p>Configuration file: ");
    match s.applied_at {
        Some(at) => {
            let _ = write!(
                h,
                "party list and peers last changed while running at {}: {}",
                when(at),
                esc(&s.changed.join("; "))
            );
        }
        None => h.push_str("as read at start"),
    }
    if let Some(why) = &s.refused {
        let _ = write!(
            h,
            " · <b class=bad>CHANGED FILE REFUSED</b> at {}: {} (the running party list and peers stay)",
            when(s.refused_at.unwrap_or(0)),
            esc(why)
        );
    }
    if !s.restart_needed.is_empty() {
        let _ = write!(
            h,
            " · <b class=bad>restart needed</b> for changed keys: {}",
            esc(&s.restart_needed.join(", "))
        );
    }
    h.push_str("</p>");
    h
}
