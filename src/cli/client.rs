//! `yrd-gateway client`: a small party system for operators to try a gateway without writing
//! code. It speaks the same gRPC API over the same mutual TLS as any county system. One file
//! per record family beside this one; here are the arguments, the connection and how a
//! failed call is explained.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use tonic::transport::Channel;

mod access;
mod allocations;
mod catalog;
mod directory;
mod projects;
mod referrals;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Party whose demo client certificate and dev gateway to use.
    #[arg(long, default_value = "zone")]
    pub party: String,
    /// Data folder of `yrd-gateway dev`, where certs/ is found.
    #[arg(long, default_value = "data/dev")]
    pub data_dir: PathBuf,
    /// Gateway address host:port; default: the party's `dev` port (50051 + party order).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Name the gateway certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// CA bundle; default: <data-dir>/certs/ca.crt.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate; default: <data-dir>/certs/<party>/client.crt.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Client key; default: <data-dir>/certs/<party>/client.key.
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Show what the gateway concluded about this client.
    Whoami,
    /// List the federation's parties.
    Parties,
    /// Projects.
    #[command(subcommand)]
    Project(projects::ProjectCommand),
    /// Factor allocations.
    #[command(subcommand)]
    Allocation(allocations::AllocationCommand),
    /// The resource catalog of every party (政务数据目录).
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Access requests for other parties' catalog items (申请—审核).
    #[command(subcommand)]
    Request(access::RequestCommand),
}

fn connect(args: &ClientArgs) -> anyhow::Result<Channel> {
    let certs = args.data_dir.join("certs");
    let ca = args.ca.clone().unwrap_or_else(|| certs.join("ca.crt"));
    let cert = args
        .cert
        .clone()
        .unwrap_or_else(|| certs.join(&args.party).join("client.crt"));
    let key = args
        .key
        .clone()
        .unwrap_or_else(|| certs.join(&args.party).join("client.key"));
    let address = match &args.gateway {
        Some(a) => a.clone(),
        None => {
            let order = super::dev::dev_federation(&args.data_dir)?
                .order_of(&args.party)
                .with_context(|| format!("`{}` is not a dev party; give --gateway", args.party))?;
            format!("127.0.0.1:{}", 50051 + order)
        }
    };
    let tls = crate::identity::tls::client_config_for(&ca, &cert, &key)?;
    Ok(crate::identity::tls::channel(
        &address,
        &args.server_name,
        tls,
    )?)
}

/// Explains a failed call: code, message and each field violation.
fn explain(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    // The reason and retry hint, so a script can tell "try again" from "give up".
    let reason = status.get_details_error_info().map(|i| i.reason);
    let retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
    match (reason, retry) {
        (Some(reason), Some(delay)) => text.push_str(&format!(
            " [{reason}; retry after {} ms]",
            delay.as_millis()
        )),
        (Some(reason), None) => text.push_str(&format!(" [{reason}]")),
        (None, Some(delay)) => text.push_str(&format!(" [retry after {} ms]", delay.as_millis())),
        (None, None) => {}
    }
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    anyhow::anyhow!(text)
}

/// Runs one client command.
pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let channel = connect(&args)?;
    match args.command {
        ClientCommand::Whoami => directory::whoami(channel).await,
        ClientCommand::Parties => directory::parties(channel).await,
        ClientCommand::Project(cmd) => projects::run(channel, cmd).await,
        ClientCommand::Allocation(cmd) => allocations::run(channel, cmd).await,
        ClientCommand::Catalog(cmd) => catalog::run(channel, cmd).await,
        ClientCommand::Request(cmd) => access::run(channel, cmd).await,
    }
}
