//! Gateways as child processes of the built binary (for kill -9 tests and figures of their own
//! memory), and the binary run as a command.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A process's resident memory, KiB: now, and the peak so far.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} MiB (peak {:.1} MiB)",
            self.rss_kib as f64 / 1024.0,
            self.peak_kib as f64 / 1024.0
        )
    }
}

/// A gateway run as a child process of the built binary, for crash tests and for figures of
/// its own memory.
pub struct ChildGateway {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ChildGateway {
    /// Starts `yrd-gateway serve --config` and waits until it logs its bound address.
    pub fn spawn(config: &Path) -> ChildGateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
            .args(["serve", "--config"])
            .arg(config)
            .env("YRD_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn yrd-gateway");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["message"] == "gateway serving" {
                            let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway did not report its address within 30 s");
        ChildGateway {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    /// This gateway process's resident memory now and its peak so far, KiB (`VmRSS`,
    /// `VmHWM` of `/proc/PID/status`).
    pub fn memory(&self) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `yrd-gateway audit COMMAND --config CONFIG` (`verify`, `verify-evidence`, …) with `more`
/// arguments; whether it succeeded, and what it said.
pub fn audit_cli(command: &str, config: &Path, more: &[&str]) -> (bool, String) {
    let config = config.to_str().unwrap();
    let args: Vec<&str> = ["audit", command, "--config", config]
        .into_iter()
        .chain(more.iter().copied())
        .collect();
    cli(&args)
}

/// Runs the built binary with `args`; whether it succeeded, and its stdout and stderr.
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
