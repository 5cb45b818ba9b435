//! The targets driven by proptest (stable, in every test run), the regressions found, and
//! the replay of what coverage-guided fuzzing kept.

use proptest::prelude::*;
use prost::Message;

use super::*;

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

/// Feeds `target` the raw input and each of its seeds edited by `edits`.
fn drive(target: &str, raw: &[u8], edits: &[(usize, u8, u8)]) {
    let (_, run) = TARGETS.iter().find(|(name, _)| *name == target).unwrap();
    run(raw);
    for seed in seeds(target) {
        run(&mutate(seed, edits));
    }
}

proptest! {
    /// Every federation message a peer can send decodes or fails cleanly; an envelope that
    /// decodes is turned into a record or refused, never a panic.
    #[test]
    fn fuzz_federation_messages(raw in proptest::collection::vec(any::<u8>(), 0..512),
                                edits in edits()) {
        drive("federation_message", &raw, &edits);
    }

    /// A record body a peer sends, edited anywhere, is rebuilt or refused.
    #[test]
    fn fuzz_replicated_record_bodies(edits in edits(), text in ".{0,200}") {
        drive("record_body", text.as_bytes(), &edits);
    }

    /// Page and resume tokens: whatever a client sends back is a position or a refusal, and
    /// what the gateway issued reads back as issued.
    #[test]
    fn fuzz_tokens(token in ".{0,64}", hex in "[0-9a-fw]{0,64}", size in any::<i32>(),
                   edits in edits()) {
        for t in [&token, &hex] {
            let mut input = size.to_le_bytes().to_vec();
            input.extend_from_slice(t.as_bytes());
            drive("token", &input, &edits);
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
    fn fuzz_names_and_validators(text in "\\PC{0,80}", ascii in "[ -~]{0,40}", edits in edits()) {
        drive("names", text.as_bytes(), &edits);
        drive("names", ascii.as_bytes(), &[]);
    }

    /// Config files and holiday calendars: any text, and valid files edited, are a config or
    /// an error naming what is wrong.
    #[test]
    fn fuzz_config_and_calendar(text in "\\PC{0,300}", edits in edits()) {
        drive("config", text.as_bytes(), &edits);
    }

    /// Audit export files: any lines, and a valid export edited, verify or are refused.
    #[test]
    fn fuzz_audit_exports(lines in proptest::collection::vec("\\PC{0,120}", 0..6), edits in edits()) {
        drive("audit_export", lines.join("\n").as_bytes(), &edits);
    }

    /// HTTP/JSON requests: any route line and body, and valid ones edited, map onto their
    /// request message or are refused.
    #[test]
    fn fuzz_http_json_requests(line in "(GET|POST|PATCH) /v1/[ -~]{0,60}", body in "\\PC{0,200}", edits in edits()) {
        drive("http_json", format!("{line}\n{body}").as_bytes(), &edits);
    }
}

/// The valid inputs the properties mutate are valid: mutations start next to what is accepted.
#[test]
fn the_seeds_are_valid() {
    let e = pb::ChangeEnvelope::decode(seeds("federation_message")[0].as_slice()).unwrap();
    let (_, record) = crate::exchange::inbound::record_of(&records(), "zone", &e).unwrap();
    assert_eq!(record.unwrap().kind, RecordKind::Project);
    let config = String::from_utf8(seeds("config")[0].clone()).unwrap();
    let path = std::path::Path::new("/nonexistent/zone.toml");
    crate::config::Config::from_toml(&config, path, &HashMap::new()).unwrap();
    let export = String::from_utf8(seeds("audit_export")[0].clone()).unwrap();
    // Read as an export (its chain does not verify: the hashes are made up).
    let _ = crate::cli::audit::check_export(export.lines().map(|l| Ok(l.to_string()))).unwrap();
    for seed in seeds("http_json") {
        let t = String::from_utf8(seed).unwrap();
        let (head, body) = t.split_once('\n').unwrap();
        let (verb, target) = head.split_once(' ').unwrap();
        let (path, query) = target
            .split_once('?')
            .map_or((target, None), |(p, q)| (p, Some(q)));
        let api = crate::http_json::api().unwrap();
        let verb = http::Method::from_bytes(verb.as_bytes()).unwrap();
        let crate::http_json::routes::Found::Route(route, values) = api.routes.find(&verb, path)
        else {
            panic!("{head}: no route")
        };
        crate::http_json::transcode::request_message(route, &values, query, body.as_bytes())
            .unwrap_or_else(|e| panic!("{head}: {e:?}"));
    }
    for (name, _) in TARGETS {
        assert!(!seeds(name).is_empty(), "{name} has no seed");
    }
}

/// A peer's commit time beyond 9999 (found by fuzzing: it overflowed the conversion to
/// microseconds) refuses the change instead of panicking.
#[test]
fn a_commit_time_out_of_range_is_refused() {
    let mut e = pb::ChangeEnvelope::decode(seeds("federation_message")[0].as_slice()).unwrap();
    for seconds in [i64::MAX, i64::MIN, 253_402_300_800] {
        e.commit_time = Some(prost_types::Timestamp { seconds, nanos: 0 });
        let refused = crate::exchange::inbound::record_of(&records(), "zone", &e).unwrap_err();
        assert!(refused.contains("commit time"), "{refused}");
    }
}

/// Every input coverage-guided fuzzing kept, and every crash it found (committed with its
/// fix), fed to its target: a panic fails the test and names the file.
#[test]
fn the_kept_corpus_replays() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut replayed = 0;
    for (name, run) in TARGETS {
        for folder in ["corpus", "crashes"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let input = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| run(&input));
                assert!(outcome.is_ok(), "{name} panics on {}", path.display());
                replayed += 1;
            }
        }
        assert!(
            root.join("corpus").join(name).is_dir(),
            "no corpus kept for {name}"
        );
    }
    assert!(replayed > 0);
}

/// Writes each target's seeds into `tests/fuzz/corpus/TARGET/` (run by `tests/fuzz/run.sh`
/// before fuzzing, so a new target starts from valid input).
#[test]
#[ignore = "writes into the source tree; run by tests/fuzz/run.sh"]
fn write_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    for (name, _) in TARGETS {
        let folder = root.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(folder.join(format!("seed-{i}")), seed).unwrap();
        }
    }
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
