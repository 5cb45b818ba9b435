//! `yrd-gateway bench suite` end to end with tiny parameters: it must keep working and report
//! every call it made, but its figures are printed, never asserted here (shared machines).

use std::process::Command;

#[test]
fn the_bench_suite_runs_and_writes_complete_results() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args([
            "bench",
            "suite",
            "--seconds",
            "1",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--rate",
            "100",
            "--lag-seconds",
            "1",
            "--catch-up",
            "300",
            // The pinned view (servers on one CPU, load on the other) where there are two.
            if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
                "--pin"
            } else {
                "--seconds=1"
            },
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("running bench suite");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench suite failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let json = std::fs::read_to_string(out.path().join("results.json")).unwrap();
    let both: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Without --profile the suite runs both crypto profiles, one after the other.
    for profile in ["intl", "gm"] {
        let results = &both[profile];
        assert_eq!(results["profile"], profile, "{json}");
        complete(results, &json);
    }
    let markdown = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(markdown.contains("| GetProject |"), "{markdown}");
    assert!(
        markdown.contains("| GetProject over HTTP/JSON |"),
        "{markdown}"
    );
    assert!(markdown.contains("server CPU µs/call"), "{markdown}");
    assert!(markdown.contains("### Side by side"), "{markdown}");
    assert!(markdown.contains("| catch-up, records/s |"), "{markdown}");
    assert!(markdown.contains("gm catch-up is"), "{markdown}");
}

/// Every phase of one profile's results made its calls, none failed, and every figure is there.
fn complete(results: &serde_json::Value, json: &str) {
    let rpc = &results["rpc"];
    for phase in [
        "baseline_echo",
        "create_project",
        "get_project",
        "get_project_http_json",
        "list_projects_page_50",
    ] {
        assert!(rpc[phase]["calls"].as_u64().unwrap() > 0, "{phase}: {json}");
        assert_eq!(rpc[phase]["failed"], 0, "{phase}: {json}");
        // The server's own CPU accounting was read around the phase.
        let cpu = rpc[phase]["server_cpu_us_per_call"].as_f64();
        assert!(cpu.is_some_and(|c| c > 0.0), "{phase}: {json}");
    }
    let lag = &results["replication"]["lag"];
    assert_eq!(lag["writes"], 100, "{json}");
    assert_eq!(lag["failed"], 0, "{json}");
    assert_eq!(
        lag["seen_at_peer"], 100,
        "every write reaches the peer: {json}"
    );
    assert_eq!(results["replication"]["catch_up"]["applied"], 300, "{json}");
    assert!(rpc["memory"]["gateway_idle_rss_kib"].as_u64().unwrap() > 0);
    // Every project the create phases wrote is in the store.
    assert!(
        rpc["store"]["projects"].as_u64().unwrap()
            >= rpc["create_project"]["calls"].as_u64().unwrap()
    );
}

/// `bench replication` (the command `docs/protocol.md` shows) with tiny parameters: it runs
/// and prints its lag and catch-up figures.
#[test]
fn the_replication_bench_runs() {
    let run = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(["bench", "replication", "--rate", "100", "--seconds", "1"])
        .args(["--catch-up", "200"])
        .output()
        .expect("running bench replication");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench replication failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    // Two lines saying what runs, then the figures as JSON.
    let json = &stdout[stdout.find('{').expect("figures printed")..];
    let figures: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(figures["catch_up"]["applied"], 200, "{stdout}");
    assert_eq!(figures["lag"]["failed"], 0, "{stdout}");
}

/// `bench federation` (the command BENCHMARKS.md shows) with three parties and tiny
/// parameters: every write reaches both others, the newcomer pulls every owner's history, and
/// the figures are written where it says.
#[test]
fn the_federation_bench_runs() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args([
            "bench",
            "federation",
            "--parties",
            "3",
            "--idle-seconds",
            "1",
        ])
        .args(["--writes", "20", "--catch-up", "40", "--out"])
        .arg(out.path())
        .output()
        .expect("running bench federation");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "bench federation failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let json = std::fs::read_to_string(out.path().join("federation.json")).unwrap();
    let runs: serde_json::Value = serde_json::from_str(&json).unwrap();
    let run = &runs[0];
    assert_eq!(run["parties"], 3, "{stdout}");
    assert_eq!(run["streams"], 6, "{stdout}");
    assert_eq!(run["lag"]["failed"], 0, "{stdout}");
    assert_eq!(run["lag"]["seen_everywhere"], 20, "{stdout}");
    assert_eq!(run["catch_up"]["owners"], 2, "{stdout}");
    // 40 records and each owner's catalog entries, at least.
    assert!(
        run["catch_up"]["applied"].as_u64().unwrap() >= 40,
        "{stdout}"
    );
    assert!(stdout.contains("| 3 | 6 |"), "{stdout}");
}
