//! Hostile input to every decoder and parser that takes bytes or text from outside: the
//! federation messages a peer sends (envelopes, manifests, kept changes) and the records they
//! carry, page and resume tokens, resource names and SPIFFE ids, the decimal and credit-code
//! validators, config files, holiday calendars and audit exports. Each target below takes
//! arbitrary bytes and must return — a value or an error — never panic, hang or allocate
//! without bound.
//!
//! Three things drive them:
//!
//! - proptest properties (`fuzz::tests`, stable, in CI): arbitrary input and mutations of the
//!   valid [`seeds`] (bytes flipped, cut, inserted), 256 cases each; a longer run is
//!   `PROPTEST_CASES=500000 cargo nextest run --lib fuzz::`. A failing case is written to
//!   `proptest-regressions/fuzz/tests.txt` and replayed first from then on;
//! - libFuzzer, coverage-guided, on the stable toolchain (`tests/fuzz`, sanitizer coverage
//!   without a sanitizer): `bash tests/fuzz/run.sh TARGET SECONDS`; CI runs every target for
//!   a bounded time;
//! - the corpus replay test (`fuzz::tests::the_kept_corpus_replays`): every input libFuzzer
//!   kept (`tests/fuzz/corpus/TARGET`) and every crash found (`tests/fuzz/crashes/TARGET`,
//!   committed with its fix) is fed to its target in every test run.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use crate::domain::RecordKind;
use crate::records::{Feed, Records, ResourceName};
use crate::wire::pb;

/// A fuzz target: takes any bytes, returns without panicking.
pub type Target = fn(&[u8]);

/// Every target by name, as the libFuzzer harness and the corpus folders name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("federation_message", federation_message),
    ("record_body", record_body),
    ("token", token),
    ("names", names),
    ("config", config),
    ("audit_export", audit_export),
    ("http_json", http_json),
];

/// Text of arbitrary bytes, as a parser that takes text receives it (invalid UTF-8 replaced).
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// A federation message a peer sends: every message type decodes or fails cleanly; an
/// envelope that decodes is turned into a record or refused.
pub fn federation_message(data: &[u8]) {
    let _ = pb::PullChangesResponse::decode(data);
    let _ = pb::ChangeManifest::decode(data);
    let _ = pb::SignedManifest::decode(data);
    let _ = pb::ReturnChangesResponse::decode(data);
    let _ = pb::SignedChainHead::decode(data);
    let _ = pb::ChainHead::decode(data);
    if let Ok(e) = pb::ChangeEnvelope::decode(data) {
        let _ = crate::exchange::inbound::record_of(&records(), "zone", &e);
    }
}

/// A record body a peer sends, as each kind of record: rebuilt or refused.
pub fn record_body(data: &[u8]) {
    let records = records();
    let id = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    let body = text(data);
    for kind in RecordKind::ALL {
        let _ = records.replica(kind, "zone", id, 1, &body);
    }
}

/// A page or resume token a client sends back (the first four bytes are the page size).
pub fn token(data: &[u8]) {
    let (size, rest) = match data.split_first_chunk::<4>() {
        Some((size, rest)) => (i32::from_le_bytes(*size), rest),
        None => (0, data),
    };
    let token = text(rest).into_owned();
    let mut v = crate::records::Violations::new();
    let page = crate::records::Page {
        size,
        token: token.clone(),
    };
    let _ = crate::records::parse_page(&page, "filters", &mut v);
    let _ = crate::api::parse_token(&token);
}

/// Resource names, SPIFFE ids, decimals, credit codes and party ids from any text.
pub fn names(data: &[u8]) {
    let t = text(data);
    for kind in RecordKind::ALL {
        let _ = ResourceName::parse(&t, kind);
        let _ = ResourceName::parse(&format!("parties/zone/projects/{t}"), kind);
    }
    let _ = crate::identity::SpiffeId::parse(&t);
    let _ = crate::identity::SpiffeId::parse(&format!("spiffe://yrd-huzhou/{t}"));
    let _ = crate::records::check_decimal(&t);
    let _ = crate::records::credit_code::validate(&t);
    let _ = crate::domain::check_party_id(&t);
}

/// A config file or a holiday calendar: a value or an error naming what is wrong.
pub fn config(data: &[u8]) {
    let t = text(data);
    let path = std::path::Path::new("/nonexistent/zone.toml");
    let _ = crate::config::Config::from_toml(&t, path, &HashMap::new());
    let _ = crate::workdays::WorkCalendar::parse(&t);
}

/// An audit export file: verifies or is refused.
pub fn audit_export(data: &[u8]) {
    let t = text(data);
    let _ = crate::cli::audit::check_export(t.lines().map(|l| Ok(l.to_string())));
}

/// An HTTP/JSON request: the first line is `VERB /path?query`, the rest the body. The route
/// is found and the request message built, or the request refused.
pub fn http_json(data: &[u8]) {
    let Ok(api) = crate::http_json::api() else {
        return;
    };
    let t = text(data);
    let (head, body) = t.split_once('\n').unwrap_or((&t, ""));
    let (verb, target) = head.split_once(' ').unwrap_or((head, "/"));
    let Ok(verb) = http::Method::from_bytes(verb.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if let crate::http_json::routes::Found::Route(route, values) = api.routes.find(&verb, path) {
        let _ =
            crate::http_json::transcode::request_message(route, &values, query, body.as_bytes());
    }
}

/// Valid inputs of `target`, the starting points of mutation.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "federation_message" => vec![envelope()],
        "record_body" => vec![project_json().1.into_bytes()],
        "token" => {
            let issued = crate::records::page_token(uuid::Uuid::now_v7(), "filters");
            let mut page = 50i32.to_le_bytes().to_vec();
            page.extend_from_slice(issued.as_bytes());
            vec![page, crate::api::token(42).into_bytes()]
        }
        "names" => vec![
            b"parties/zone/projects/0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b".to_vec(),
            b"spiffe://yrd-huzhou/party/zone/gateway".to_vec(),
            b"120.5".to_vec(),
            b"91330522MA2B3C4D57".to_vec(),
        ],
        "config" => vec![config_file().into_bytes(), calendar_file().into_bytes()],
        "audit_export" => vec![audit_export_file().into_bytes()],
        "http_json" => vec![
            format!(
                "PATCH /v1/parties/zone/projects/0190a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b\n{}",
                r#"{"project": {"displayName": "项目", "stage": "STAGE_SIGNED", "labels": {"a": "b"}}, "updateMask": "stage", "requestId": "r"}"#
            )
            .into_bytes(),
            b"GET /v1/accessRequests?pageSize=7&state=ACCESS_REQUEST_STATE_REQUESTED&overdueOnly=true\n".to_vec(),
            b"GET /v1/auditEvents?startTime=2026-12-01T00:00:00Z&caller=a%20b\n".to_vec(),
        ],
        _ => Vec::new(),
    }
}

/// A valid project of the zone, as the record JSON an envelope carries: (id, body).
fn project_json() -> (String, String) {
    let mut v = crate::records::Violations::new();
    let mut project = crate::wire::projects::project_from(
        pb::Project {
            display_name: "年产10万套新能源汽车零部件项目".into(),
            investor: Some(pb::Investor {
                name: "浙江某某汽车零部件有限公司".into(),
                credit_code: "91330522MA2B3C4D57".into(),
            }),
            industry: pb::Industry::NewEnergyVehicles as i32,
            land_area_mu: "120.5".into(),
            contact: Some(pb::Contact {
                name: "张三".into(),
                phone: "+86 138-0000-0000".into(),
            }),
            labels: [("batch".to_string(), "2026-q4".to_string())].into(),
            ..Default::default()
        },
        &mut v,
    );
    project.id = uuid::Uuid::now_v7();
    project.owner = "zone".into();
    project.revision = 1;
    (
        project.id.to_string(),
        serde_json::to_string(&project).unwrap_or_default(),
    )
}

/// A project envelope as an owner sends it.
fn envelope() -> Vec<u8> {
    let project = project_json();
    pb::ChangeEnvelope {
        owner: "zone".into(),
        seq: 7,
        recipient: "anji".into(),
        commit_time: Some(crate::wire::timestamp(1_700_000_000_000_000)),
        kind: pb::RecordKind::Project as i32,
        record_id: project.0,
        revision: 1,
        record_json: project.1.into_bytes(),
        withheld_fields: vec!["project.contact.phone".into()],
    }
    .encode_to_vec()
}

fn config_file() -> String {
    crate::config::ConfigTemplate {
        party: "zone".into(),
        trust_domain: "yrd-huzhou".into(),
        listen_grpc: "127.0.0.1:50051".into(),
        listen_admin: "127.0.0.1:9090".into(),
        certs_dir: "certs".into(),
        crl: Some("certs/crl.pem".into()),
        store_path: "zone/store.db".into(),
        postgres_url: None,
        log_format: crate::config::LogFormat::Json,
        federation: crate::cli::default_federation(),
        peers: vec![("anji".into(), "127.0.0.1:50053".into())],
        default_catalog: true,
        profile: crate::crypto::Profile::Gm,
        keys: true,
    }
    .render()
}

fn calendar_file() -> String {
    "holidays = [\"2026-01-01\", \"2026-10-01..2026-10-07\"]\nworking_days = [\"2026-09-27\"]\n"
        .into()
}

fn audit_export_file() -> String {
    let header = r#"{"format":"yrd-audit-export/1","party":"zone","anchor":null,"through":1}"#;
    let event = format!(
        r#"{{"seq":1,"time":1,"caller":"c","method":"m","records":[],"code":"OK","request_id":"r","prev_hash":"{}","hash":"{}"}}"#,
        "00".repeat(32),
        "11".repeat(32)
    );
    format!("{header}\n{event}\n")
}

/// Record rules over a throwaway store, opened once per process: what rebuilds records from
/// envelopes. The store is a file in the system's temporary folder, named for the process;
/// it is left there (a few hundred KiB; records are checked, never written).
fn records() -> Records {
    static RECORDS: std::sync::OnceLock<Records> = std::sync::OnceLock::new();
    RECORDS.get_or_init(open_records).clone()
}

fn open_records() -> Records {
    remove_stale_stores();
    let path = std::env::temp_dir().join(format!(
        "yrd-fuzz-{}-{}.db",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    let store: Arc<dyn crate::store::Store> = Arc::new(
        crate::store::sqlite::SqliteStore::open(&path).expect("a store in the temporary folder"),
    );
    Records::new(
        store.clone(),
        Feed::new(store),
        "anji".into(),
        crate::domain::Members::fixed(crate::cli::default_federation()),
    )
}

/// The stores of fuzzing processes that have ended (each process keeps one for its whole life
/// and cannot remove it at exit): a test run would otherwise leave about 3 MB in the temporary
/// folder every time.
fn remove_stale_stores() {
    // Whether a process still runs is read from /proc; without it, nothing is removed.
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("yrd-fuzz-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().filter(|p| p.parse::<u32>().is_ok()) else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests;
