//! Servers under test run as child processes of this binary, so their resident memory is
//! theirs alone and the load generator in this process competes with them for the same two
//! cores exactly as it does with the baseline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// A command running this binary, through `taskset -c CPU` when pinned (taskset executes it
/// in its own process, so the child's pid is the server's).
fn this_binary(cpu: Option<usize>) -> anyhow::Result<Command> {
    let exe = std::env::current_exe()?;
    Ok(match cpu {
        None => Command::new(exe),
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(exe);
            c
        }
    })
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// `yrd-gateway serve --config CONFIG` (on CPU `cpu` alone, if given), ready once it logs
    /// "gateway serving".
    pub fn gateway(config: &Path, cpu: Option<usize>) -> anyhow::Result<Server> {
        let mut command = this_binary(cpu)?;
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("YRD_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Self::start(command, "gateway", |line| {
            let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
            if v["message"] == "gateway serving" {
                Some(Ok(v["addr"].as_str().unwrap_or_default().to_string()))
            } else if v["level"] == "ERROR" {
                Some(Err(line.to_string()))
            } else {
                None
            }
        })
    }

    /// The baseline echo server (`bench baseline-server --config CONFIG`, on CPU `cpu` alone,
    /// if given), ready once it prints `listening <addr>`.
    pub fn baseline(config: &Path, cpu: Option<usize>) -> anyhow::Result<Server> {
        let mut command = this_binary(cpu)?;
        command
            .args(["bench", "baseline-server", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self::start(command, "baseline server", |line| {
            line.strip_prefix("listening ")
                .map(|addr| Ok(addr.to_string()))
        })
    }

    /// Spawns `command` (one of stdout and stderr piped) and waits until `announce` finds the
    /// bound address, or a failure, in a line of the piped output. The output is read to its
    /// end, so the child never blocks on a full pipe.
    fn start(
        mut command: Command,
        what: &str,
        announce: fn(&str) -> Option<Result<String, String>>,
    ) -> anyhow::Result<Server> {
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {what}"))?;
        let output: Box<dyn std::io::Read + Send> = match (child.stdout.take(), child.stderr.take())
        {
            (Some(out), _) => Box::new(out),
            (None, Some(err)) => Box::new(err),
            (None, None) => anyhow::bail!("the {what}'s output is not piped"),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                if let Some(found) = announce(&line) {
                    let _ = tx.send(found);
                }
            }
        });
        Self::ready(child, rx, what)
    }

    fn ready(
        mut child: Child,
        rx: std::sync::mpsc::Receiver<Result<String, String>>,
        what: &str,
    ) -> anyhow::Result<Server> {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => Ok(Server {
                addr: addr
                    .parse()
                    .with_context(|| format!("{what} reported address {addr:?}"))?,
                child,
            }),
            Ok(Err(line)) => {
                let _ = child.kill();
                anyhow::bail!("{what} failed to start: {line}")
            }
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("{what} did not report its address within 30 s")
            }
        }
    }

    /// Resident memory now and at its peak, in KiB (`VmRSS`, `VmHWM` of /proc/PID/status).
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading /proc/PID/status (Linux only)")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("{name} missing from /proc/PID/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU time (user and system) the process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .context("reading /proc/PID/stat (Linux only)")?;
        // Fields after the command name, which is in parentheses and may hold spaces:
        // utime and stime are the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .context("unexpected /proc/PID/stat")
        };
        Ok((tick(11)? + tick(12)?) as f64 / 100.0)
    }

    /// Open sockets of the process (listeners and connections, both directions).
    pub fn sockets(&self) -> anyhow::Result<usize> {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .context("listing /proc/PID/fd (Linux only)")?;
        Ok(fds
            .filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count())
    }

    /// SIGTERM, then waits for the process to exit (its graceful shutdown).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        // The crate forbids unsafe code, so no kill(2) here: procps' kill(1) sends the signal.
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            self.child.kill()?;
            anyhow::bail!("could not send SIGTERM to server {pid} (is `kill` installed?); killed");
        }
        for _ in 0..300 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        anyhow::bail!("server {pid} did not stop within 15 s of SIGTERM; killed")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
