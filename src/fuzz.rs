//! Hostile input to every decoder and parser that takes bytes or text from outside: the
//! federation messages a peer sends (envelopes, manifests, kept changes) and the records they
//! carry, page and resume tokens, resource names and SPIFFE ids, the decimal and credit-code
//! validators, config files, holiday calendars and audit exports. Each property feeds
//! arbitrary input and mutations of valid input (bytes flipped, cut, inserted) and requires an
//! answer — a value or an error — never a panic.
//!
//! Coverage-guided fuzzing needs a nightly toolchain; these run on stable with proptest. CI
//! runs each with proptest's default 256 cases (a few seconds in all); a longer run:
//!
//!     PROPTEST_CASES=500000 cargo nextest run --lib fuzz::
//!
//! A failing case is written to `proptest-regressions/fuzz.txt` and replayed first from then
//! on: commit that file with the fix.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use prost::Message;

use crate::domain::RecordKind;
use crate::records::{Feed, Records, ResourceName};
use crate::wire::pb;

/// Bytes edited: each (position, byte, kind) flips, inserts, or cuts at the position.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, byte, kind) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 3 {
            0 => bytes[at] ^= byte | 1,
            1 => bytes.insert(at, byte),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..6)
}

/// A valid project of the zone, as the record JSON an envelope carries: (id, body).
fn project_json() -> (String, String) {
    let mut v = crate::records::Violations::new();
    let mut project = crate::wire::convert::project_from(
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
        serde_json::to_string(&project).unwrap(),
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

/// Record rules over a throwaway store, opened once per test process: what rebuilds records
/// from envelopes.
fn records() -> Records {
    static RECORDS: std::sync::OnceLock<Records> = std::sync::OnceLock::new();
    RECORDS.get_or_init(open_records).clone()
}

fn open_records() -> Records {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn crate::store::Store> =
        Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    // The folder goes when the test process ends; the store stays open until then.
    std::mem::forget(dir);
    Records::new(
        store.clone(),
        Feed::new(store),
        "anji".into(),
        crate::cli::default_federation(),
    )
}

proptest! {
    /// Every federation message a peer can send decodes or fails cleanly; an envelope that
    /// decodes is turned into a record or refused, never a panic.
    #[test]
    fn fuzz_federation_messages(raw in proptest::collection::vec(any::<u8>(), 0..512),
                                edits in edits()) {
        let records = records();
        for bytes in [raw.clone(), mutate(envelope(), &edits)] {
            let _ = pb::PullChangesResponse::decode(bytes.as_slice());
            let _ = pb::ChangeManifest::decode(bytes.as_slice());
            let _ = pb::SignedManifest::decode(bytes.as_slice());
            let _ = pb::ReturnChangesResponse::decode(bytes.as_slice());
            let _ = pb::SignedChainHead::decode(bytes.as_slice());
            let _ = pb::ChainHead::decode(bytes.as_slice());
            if let Ok(e) = pb::ChangeEnvelope::decode(bytes.as_slice()) {
                let _ = crate::exchange::inbound::record_of(&records, "zone", &e);
            }
        }
    }

    /// A record body a peer sends, edited anywhere, is rebuilt or refused.
    #[test]
    fn fuzz_replicated_record_bodies(edits in edits(), text in ".{0,200}") {
        let records = records();
        let (id, json) = project_json();
        let id: uuid::Uuid = id.parse().unwrap();
        let edited = String::from_utf8_lossy(&mutate(json.into_bytes(), &edits)).to_string();
        for kind in RecordKind::ALL {
            let _ = records.replica(kind, "zone", id, 1, &edited);
            let _ = records.replica(kind, "zone", id, 1, &text);
        }
    }

    /// Page and resume tokens: whatever a client sends back is a position or a refusal.
    #[test]
    fn fuzz_tokens(token in ".{0,64}", hex in "[0-9a-fw]{0,64}", size in any::<i32>()) {
        for t in [&token, &hex] {
            let mut v = crate::records::Violations::new();
            let page = crate::records::Page { size, token: t.clone() };
            let _ = crate::records::parse_page(&page, "filters", &mut v);
            let _ = crate::api::parse_token(t);
        }
        let position = u64::from_str_radix(hex.trim_start_matches('w').get(..16).unwrap_or("0"), 16).unwrap_or(0);
        prop_assert_eq!(crate::api::parse_token(&crate::api::token(position)).ok(), Some(position));
        let last = uuid::Uuid::now_v7();
        let issued = crate::records::page_token(last, "filters");
        let mut v = crate::records::Violations::new();
        let page = crate::records::Page { size, token: issued };
        prop_assert_eq!(crate::records::parse_page(&page, "filters", &mut v).0, Some(last));
    }

    /// Resource names, SPIFFE ids, decimals and credit codes from any text.
    #[test]
    fn fuzz_names_and_validators(text in "\\PC{0,80}", ascii in "[ -~]{0,40}") {
        for t in [&text, &ascii] {
            for kind in RecordKind::ALL {
                let _ = ResourceName::parse(t, kind);
                let _ = ResourceName::parse(&format!("parties/zone/projects/{t}"), kind);
            }
            let _ = crate::identity::SpiffeId::parse(t);
            let _ = crate::identity::SpiffeId::parse(&format!("spiffe://yrd-huzhou/{t}"));
            let _ = crate::records::check_decimal(t);
            let _ = crate::records::credit_code::validate(t);
            let _ = crate::domain::check_party_id(t);
        }
    }

    /// Config files and holiday calendars: any text, and valid files edited, are a config or
    /// an error naming what is wrong.
    #[test]
    fn fuzz_config_and_calendar(text in "\\PC{0,300}", edits in edits()) {
        let valid = crate::config::ConfigTemplate {
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
        }
        .render();
        let edited = String::from_utf8_lossy(&mutate(valid.into_bytes(), &edits)).to_string();
        let path = std::path::Path::new("/nonexistent/zone.toml");
        for t in [&text, &edited] {
            let _ = crate::config::Config::from_toml(t, path, &HashMap::new());
            let _ = crate::workdays::WorkCalendar::parse(t);
        }
        let calendar = "holidays = [\"2026-01-01\", \"2026-10-01..2026-10-07\"]\nworking_days = [\"2026-09-27\"]\n";
        let edited = String::from_utf8_lossy(&mutate(calendar.as_bytes().to_vec(), &edits)).to_string();
        let _ = crate::workdays::WorkCalendar::parse(&edited);
    }

    /// Audit export files: any lines, and a valid export edited, verify or are refused.
    #[test]
    fn fuzz_audit_exports(lines in proptest::collection::vec("\\PC{0,120}", 0..6), edits in edits()) {
        let header = r#"{"format":"yrd-audit-export/1","party":"zone","anchor":null,"through":1}"#;
        let event = format!(
            r#"{{"seq":1,"time":1,"caller":"c","method":"m","records":[],"code":"OK","request_id":"r","prev_hash":"{}","hash":"{}"}}"#,
            "00".repeat(32),
            "11".repeat(32)
        );
        let valid = format!("{header}\n{event}\n");
        let edited = String::from_utf8_lossy(&mutate(valid.into_bytes(), &edits)).to_string();
        let as_lines = |t: &str| t.lines().map(|l| Ok(l.to_string())).collect::<Vec<_>>();
        let _ = crate::cli::audit::check_export(lines.into_iter().map(Ok));
        let _ = crate::cli::audit::check_export(as_lines(&edited).into_iter());
    }
}

/// The valid inputs the properties mutate are valid: mutations start next to what is accepted.
#[test]
fn the_seeds_are_valid() {
    let records = records();
    let e = pb::ChangeEnvelope::decode(envelope().as_slice()).unwrap();
    let (_, record) = crate::exchange::inbound::record_of(&records, "zone", &e).unwrap();
    assert_eq!(record.unwrap().kind, RecordKind::Project);
}

/// Found by `fuzz_audit_exports`: a hash holding a multibyte character panicked while sliced.
#[test]
fn an_export_hash_with_a_multibyte_character_is_refused() {
    let header = r#"{"format":"yrd-audit-export/1","party":"zone","anchor":null,"through":1}"#;
    let hash = format!("{}é{}", "0".repeat(36), "0".repeat(26));
    let event = format!(
        r#"{{"seq":1,"time":1,"caller":"c","method":"m","records":[],"code":"OK","request_id":"r","prev_hash":"{hash}","hash":"{hash}"}}"#
    );
    let lines = [header.to_string(), event].map(Ok);
    let refused = crate::cli::audit::check_export(lines.into_iter()).unwrap_err();
    assert!(refused.to_string().contains("not hex"), "{refused}");
}

/// Found by `fuzz_audit_exports` in a longer run: an event numbered 0, or an anchor at the
/// largest sequence number, overflowed while the break was described.
#[test]
fn an_export_numbered_at_the_edges_is_refused() {
    let hash = "00".repeat(32);
    let event = |seq: u64| {
        format!(
            r#"{{"seq":{seq},"time":1,"caller":"c","method":"m","records":[],"code":"OK","request_id":"r","prev_hash":"{hash}","hash":"{hash}"}}"#
        )
    };
    for (anchor, seq) in [
        ("null".to_string(), 0),
        (format!(r#"{{"seq":{},"hash":"{hash}"}}"#, u64::MAX), 5),
    ] {
        let header = format!(
            r#"{{"format":"yrd-audit-export/1","party":"zone","anchor":{anchor},"through":1}}"#
        );
        let lines = [header, event(seq)].map(Ok);
        let checked = crate::cli::audit::check_export(lines.into_iter()).unwrap();
        assert!(checked.is_err(), "{checked:?}");
    }
}
