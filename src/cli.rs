//! The command line: `serve`, `dev`, `certs init` and the demo `client`. `main` parses, sets up
//! logging and signals, and calls in here.

/// Prints a line to stdout, ignoring a closed pipe (`yrd-gateway client ... | head` must not
/// panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod audit;
pub mod bench;
mod client;
mod dev;
pub mod keys;
pub mod store;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Deserialize;

pub use client::{ClientArgs, run as run_client};
pub use dev::{DevAction, DevArgs, add_party as dev_add_party, run as run_dev};

use crate::config::RawParty;
use crate::domain::{Federation, PartyInfo};

#[derive(Debug, Parser)]
#[command(
    name = "yrd-gateway",
    version,
    about = "Cross-provincial data-sharing gateway of the YRD (Huzhou) Industrial Cooperation Zone"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one party's gateway from a TOML config file.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the whole four-party federation on loopback with a development PKI.
    Dev(DevArgs),
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Call a gateway as a party system, with a client certificate.
    Client(Box<ClientArgs>),
    /// Check a gateway's gRPC health over mutual TLS, as its own gateway identity; exit code 0
    /// when SERVING, 1 otherwise (for container health checks).
    Health {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Service to check; empty for the whole gateway.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Verify, export and prune the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Keys of data at rest: make a key-encryption key, show a key ring.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Back up a party's store while its gateway runs, and restore it on a new machine.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Measure performance on this machine (build with --release).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print the OpenAPI 3 document of the HTTP/JSON surface (also served at /openapi.json;
    /// docs/openapi.json is this output).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create (or complete) a development PKI: CA, one gateway and one demo client certificate
    /// per party. Existing files are kept.
    Init {
        /// Folder to write into.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long, default_value = crate::config::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Party ids; default: the shipped four-party federation.
        #[arg(long, value_delimiter = ',')]
        parties: Vec<String>,
        /// Crypto profile: intl (P-256) or gm (SM2 certificates and CRLs).
        #[arg(long, default_value = "intl")]
        profile: crate::crypto::Profile,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FederationFile {
    parties: Vec<RawParty>,
}

/// The shipped default federation (`src/cli/federation.toml`).
pub fn default_federation() -> Federation {
    federation_from_toml(include_str!("cli/federation.toml"))
        .expect("the shipped federation file is valid")
}

/// A party list from a file of `[[parties]]` tables (as in a gateway config).
pub fn federation_from_toml(text: &str) -> anyhow::Result<Federation> {
    let file: FederationFile = toml::from_str(text)?;
    Ok(Federation::new(
        file.parties
            .into_iter()
            .map(|p| PartyInfo {
                id: p.id,
                display_name: p.display_name,
                province: p.province,
                division_code: p.division_code,
                suspended: p.suspended,
            })
            .collect(),
    )?)
}

/// A party's `[[parties]]` table and a `[[peers]]` table reaching it at `address`.
pub fn party_and_peer_toml(p: &PartyInfo, address: &str) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        "{}\n[[peers]]\nparty = {}\naddress = {}\n",
        crate::config::party_table(p),
        q(&p.id),
        q(address)
    )
}

/// A file of `[[parties]]` tables, which [`federation_from_toml`] reads back.
pub fn federation_toml(f: &Federation) -> String {
    let mut t = String::from("# The dev federation's party list, in party order.\n");
    for p in f.parties() {
        t.push('\n');
        t.push_str(&crate::config::party_table(p));
    }
    t
}

/// `certs init`.
pub fn certs_init(
    dir: &std::path::Path,
    trust_domain: &str,
    parties: &[String],
    profile: crate::crypto::Profile,
) -> anyhow::Result<()> {
    let parties: Vec<String> = if parties.is_empty() {
        default_federation()
            .parties()
            .iter()
            .map(|p| p.id.clone())
            .collect()
    } else {
        for p in parties {
            crate::domain::check_party_id(p).map_err(anyhow::Error::msg)?;
        }
        parties.to_vec()
    };
    let report = crate::identity::pki::init_dev_pki(dir, trust_domain, &parties, profile)?;
    for p in &report.created {
        say!("created {}", p.display())
    }
    for p in &report.kept {
        say!("kept    {}", p.display())
    }
    say!("private keys (*.key) are readable by their owner only; never commit them");
    Ok(())
}

/// `health`: true when the gateway named by `config` reports SERVING.
pub async fn check_health(config: &crate::config::Config, service: &str) -> anyhow::Result<bool> {
    use crate::identity::tls;
    let mut addr = config.listen_grpc;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = tls::gateway_client_config(&config.tls)?;
    let channel = tls::channel(&addr.to_string(), "localhost", client)?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.to_string(),
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), health.check(request))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr} within 5 s"))?
        .map_err(|s| anyhow::anyhow!("{addr}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(answer.status)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN");
    say!("{status}");
    Ok(status == "SERVING")
}
