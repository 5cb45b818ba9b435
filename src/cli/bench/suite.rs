//! `bench suite`: every phase in one run, and the results written as JSON and Markdown with
//! the machine they were measured on and each call's ratio to the baseline — for each crypto
//! profile asked for, and side by side when both ran.

use super::*;
use crate::crypto::Profile;

/// What `bench suite` writes to results.json for one profile.
#[derive(Debug, Serialize)]
struct Results {
    /// The crypto profile of every server and link measured (the baseline's TLS too).
    profile: &'static str,
    machine: Machine,
    /// Records sealed at rest (`[keys]`, the product's default).
    rpc: RpcFigures,
    ratios_to_baseline: Ratios,
    replication: ReplicationFigures,
    /// What sealing at rest costs: a gateway with `[keys]` and one without, in turns.
    at_rest: at_rest::AtRestFigures,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_kib: u64,
    gateway_version: &'static str,
    unix_time: u64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    create_project: f64,
    get_project: f64,
    get_project_http_json: f64,
    list_projects_page_50: f64,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        memory_kib: meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
        gateway_version: env!("CARGO_PKG_VERSION"),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// Runs the suite in each of `profiles`, one after the other on the same machine, prints and
/// writes each profile's results and, when both ran, the two side by side.
pub(super) async fn suite(
    rpc: &RpcOptions,
    replication: &ReplicationOptions,
    profiles: &[Profile],
    out: &Path,
) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    let mut markdown = String::new();
    for profile in profiles {
        let results = run(rpc, replication, *profile).await?;
        let md = self::markdown(&results);
        say!(
            "
{md}"
        );
        markdown.push_str(&format!(
            "### {} profile

{md}
",
            profile
        ));
        runs.push(results);
    }
    let json = match runs.as_slice() {
        [one] => serde_json::to_value(one)?,
        [intl, gm] => {
            let compared = side_by_side(intl, gm);
            say!(
                "
{compared}"
            );
            markdown.push_str(&format!(
                "### Side by side

{compared}"
            ));
            serde_json::json!({ "intl": intl, "gm": gm })
        }
        _ => anyhow::bail!("one profile or both"),
    };
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(out.join("results.md"), &markdown)?;
    say!("written: {0}/results.json, {0}/results.md", out.display());
    Ok(())
}

/// Every phase in `profile`.
async fn run(
    rpc: &RpcOptions,
    replication: &ReplicationOptions,
    profile: Profile,
) -> anyhow::Result<Results> {
    let machine = machine();
    say!(
        "bench suite, {profile} profile, on {} CPUs ({}); {} calls in flight over {} connections, {} s per phase",
        machine.cpus,
        machine.cpu_model,
        rpc.concurrency,
        rpc.connections,
        rpc.seconds
    );
    let options = rpc;
    say!("throughput and memory:");
    let rpc = rpc_run(options, profile, true).await?;
    say!("data at rest: a gateway in clear and one sealed, in turns:");
    let at_rest = at_rest_run(options, profile).await?;
    say!("replication:");
    let replication = replication_run(replication, profile).await?;
    let base = rpc.baseline_echo.requests_per_second;
    Ok(Results {
        profile: profile.as_str(),
        machine,
        ratios_to_baseline: Ratios {
            create_project: rpc.create_project.requests_per_second / base,
            get_project: rpc.get_project.requests_per_second / base,
            get_project_http_json: rpc.get_project_http_json.requests_per_second / base,
            list_projects_page_50: rpc.list_projects_page_50.requests_per_second / base,
        },
        rpc,
        replication,
        at_rest,
    })
}

/// The two profiles' figures in one table: what the gm profile costs against intl, measured in
/// one run on one machine.
fn side_by_side(intl: &Results, gm: &Results) -> String {
    use std::fmt::Write as _;
    let mut md = String::from("| figure | intl | gm | gm / intl |\n|---|---:|---:|---:|\n");
    let mut row = |name: &str, a: f64, b: f64, unit: &str| {
        // Rates as whole numbers; milliseconds and percentages with a decimal.
        let places = if unit.is_empty() && a >= 1000.0 { 0 } else { 1 };
        let _ = writeln!(
            md,
            "| {name} | {a:.places$}{unit} | {b:.places$}{unit} | {:.0}% |",
            if a > 0.0 { 100.0 * b / a } else { 0.0 }
        );
    };
    let calls = |r: &Results| {
        [
            r.rpc.baseline_echo.requests_per_second,
            r.rpc.create_project.requests_per_second,
            r.rpc.get_project.requests_per_second,
            r.rpc.list_projects_page_50.requests_per_second,
        ]
    };
    let names = [
        "baseline echo, requests/s",
        "CreateProject, requests/s",
        "GetProject, requests/s",
        "ListProjects (50), requests/s",
    ];
    for (name, (a, b)) in names.iter().zip(calls(intl).into_iter().zip(calls(gm))) {
        row(name, a, b, "");
    }
    let ratios = |r: &Results| {
        [
            r.ratios_to_baseline.create_project,
            r.ratios_to_baseline.get_project,
            r.ratios_to_baseline.list_projects_page_50,
        ]
    };
    let names = [
        "CreateProject vs its baseline",
        "GetProject vs its baseline",
        "ListProjects (50) vs its baseline",
    ];
    for (name, (a, b)) in names.iter().zip(ratios(intl).into_iter().zip(ratios(gm))) {
        row(name, 100.0 * a, 100.0 * b, "%");
    }
    let (a, b) = (&intl.replication, &gm.replication);
    row("replication lag p99, ms", a.lag.p99_ms, b.lag.p99_ms, "");
    row(
        "catch-up, records/s",
        a.catch_up.records_per_second,
        b.catch_up.records_per_second,
        "",
    );
    let share = if a.catch_up.records_per_second > 0.0 {
        b.catch_up.records_per_second / a.catch_up.records_per_second
    } else {
        0.0
    };
    let _ = writeln!(
        md,
        "\ngm catch-up is {:.0}% of intl's (target: at least 50%): {}.",
        100.0 * share,
        if share >= 0.5 { "met" } else { "NOT met" }
    );
    md
}

fn markdown(r: &Results) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let base = r.rpc.baseline_echo.requests_per_second;
    let _ = writeln!(
        md,
        "Machine: {} CPUs, {}, {:.1} GiB. {} calls in flight over {} connections, {} s per phase; \
         load generator on the same machine{}.\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.memory_kib as f64 / 1_048_576.0,
        r.rpc.concurrency,
        r.rpc.connections,
        r.rpc.seconds_per_phase,
        if r.rpc.pinned {
            ", pinned: servers on the last CPU, load generator on the others"
        } else {
            ""
        }
    );
    md.push_str("| call | requests/s | p50 ms | p99 ms | failed | vs baseline | server CPU µs/call | CPU vs baseline |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let base_cpu = r.rpc.baseline_echo.server_cpu_us_per_call;
    let mut row = |name: &str, t: &Throughput| {
        let cpu = t.server_cpu_us_per_call;
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.0}% | {} | {} |",
            t.requests_per_second,
            t.p50_ms,
            t.p99_ms,
            t.failed,
            100.0 * t.requests_per_second / base,
            cpu.map_or("–".to_string(), |c| format!("{c:.0}")),
            match (cpu, base_cpu) {
                (Some(c), Some(b)) if c > 0.0 => format!("{:.0}%", 100.0 * b / c),
                _ => "–".to_string(),
            }
        );
    };
    row(
        &format!("baseline echo ({} B)", r.rpc.request_bytes),
        &r.rpc.baseline_echo,
    );
    row("CreateProject (durable, audited)", &r.rpc.create_project);
    row("GetProject", &r.rpc.get_project);
    row("GetProject over HTTP/JSON", &r.rpc.get_project_http_json);
    row("ListProjects (page of 50)", &r.rpc.list_projects_page_50);
    for t in [
        &r.rpc.baseline_echo,
        &r.rpc.create_project,
        &r.rpc.get_project,
        &r.rpc.get_project_http_json,
        &r.rpc.list_projects_page_50,
    ] {
        if let Some(e) = &t.first_error {
            let _ = writeln!(md, "\nfirst failure: {e}");
        }
    }
    let a = &r.at_rest;
    let _ = writeln!(
        md,
        "\nData at rest: a gateway with `[keys]` against one without, {} turns of {} s each, \
         alternating (medians): CreateProject {:.0}% ({:.0}/s sealed, {:.0}/s in clear), \
         GetProject {:.0}% ({:.0}/s, {:.0}/s), ListProjects (50) {:.0}% ({:.0}/s, {:.0}/s).",
        a.rounds,
        a.seconds_per_turn,
        100.0 * a.sealed_over_clear.create_project,
        a.sealed.create_project,
        a.in_clear.create_project,
        100.0 * a.sealed_over_clear.get_project,
        a.sealed.get_project,
        a.in_clear.get_project,
        100.0 * a.sealed_over_clear.list_projects_page_50,
        a.sealed.list_projects_page_50,
        a.in_clear.list_projects_page_50
    );
    let lag = &r.replication.lag;
    let catch = &r.replication.catch_up;
    let mem = &r.rpc.memory;
    let _ = writeln!(
        md,
        "\n| figure | value |\n|---|---|\n\
         | replication lag at {} writes/s offered ({:.0}/s achieved, {} of {} seen) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |\n\
         | catch-up of {} records | {:.0} records/s ({:.1} s; owner wrote them at {:.0}/s) |\n\
         | gateway resident memory | idle {:.1} MiB, after load {:.1} MiB, peak {:.1} MiB |\n\
         | baseline resident memory | idle {:.1} MiB, peak {:.1} MiB |\n\
         | store size | {:.1} MiB for {} projects and {} audit events: {:.0} bytes of file per project ({:.0} compacted, {:.0} without the audit trail); {:.0} bytes of record JSON per project (held once, in the change log), {:.0} bytes per audit event |",
        lag.offered_per_second,
        lag.achieved_writes_per_second,
        lag.seen_at_peer,
        lag.writes,
        lag.p50_ms,
        lag.p99_ms,
        lag.max_ms,
        catch.records,
        catch.records_per_second,
        catch.seconds,
        catch.owner_writes_per_second,
        mem.gateway_idle_rss_kib as f64 / 1024.0,
        mem.gateway_loaded_rss_kib as f64 / 1024.0,
        mem.gateway_peak_rss_kib as f64 / 1024.0,
        mem.baseline_idle_rss_kib as f64 / 1024.0,
        mem.baseline_peak_rss_kib as f64 / 1024.0,
        r.rpc.store.bytes as f64 / 1_048_576.0,
        r.rpc.store.projects,
        r.rpc.store.audit_events,
        r.rpc.store.file_bytes_per_project,
        r.rpc.store.compacted_bytes_per_project,
        r.rpc.store.without_audit_bytes_per_project,
        r.rpc.store.json_bytes_per_project,
        r.rpc.store.bytes_per_audit_event,
    );
    md
}
