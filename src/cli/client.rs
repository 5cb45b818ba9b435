//! `yrd-gateway client`: a small party system for operators to try a gateway without writing
//! code. It speaks the same gRPC API over the same mutual TLS as any county system.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use tonic::transport::Channel;

mod access;
mod catalog;
mod print;

use crate::wire::pb;
use crate::wire::pb::directory_service_client::DirectoryServiceClient;
use crate::wire::pb::factor_service_client::FactorServiceClient;
use crate::wire::pb::project_service_client::ProjectServiceClient;
use print::{print_allocation, print_project, print_referral};

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
    Project(ProjectCommand),
    /// Factor allocations.
    #[command(subcommand)]
    Allocation(AllocationCommand),
    /// The resource catalog of every party (政务数据目录).
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Access requests for other parties' catalog items (申请—审核).
    #[command(subcommand)]
    Request(access::RequestCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IndustryArg {
    NewEnergyVehicles,
    CncMachineTools,
    Other,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StageArg {
    Lead,
    Negotiating,
    Signed,
    Started,
    InStorage,
    Completed,
    Producing,
    Cancelled,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    LandQuota,
    EnergyQuota,
    EmissionQuota,
    Water,
    PowerCapacity,
    Funding,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project owned by this party.
    Create {
        #[arg(long)]
        display_name: String,
        #[arg(long)]
        investor_name: String,
        /// Unified social credit code, 18 characters.
        #[arg(long)]
        credit_code: String,
        #[arg(long, value_enum)]
        industry: IndustryArg,
        /// Whole yuan.
        #[arg(long, default_value_t = 0)]
        investment_yuan: i64,
        /// Decimal, e.g. 120.5.
        #[arg(long, default_value = "")]
        land_area_mu: String,
        #[arg(long, default_value = "")]
        platform: String,
        #[arg(long, default_value = "")]
        contact_name: String,
        #[arg(long, default_value = "")]
        contact_phone: String,
        /// Reuse to retry safely; default: a new UUID.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Read one project by name (parties/<party>/projects/<id>).
    Get { name: String },
    /// List projects; every page unless --page-size is given.
    List {
        #[arg(long, default_value = "")]
        owner: String,
        #[arg(long, value_enum)]
        stage: Option<StageArg>,
        #[arg(long, default_value_t = 0)]
        page_size: i32,
    },
    /// Move a project to a later stage (reads it first for the etag).
    SetStage {
        name: String,
        #[arg(value_enum)]
        stage: StageArg,
    },
    /// Hand a project lead to another party.
    Refer {
        name: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        reason: String,
    },
    /// Accept or decline a referral made to this party.
    Respond {
        /// parties/<party>/referrals/<id>
        referral: String,
        #[arg(long, conflicts_with = "decline")]
        accept: bool,
        #[arg(long)]
        decline: bool,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List referrals visible to this party.
    Referrals,
}

#[derive(Debug, Subcommand)]
pub enum AllocationCommand {
    /// Propose a factor allocation owned by this party.
    Propose {
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Decimal in the kind's unit.
        #[arg(long)]
        quantity: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Benefit share party=basis_points, repeated; they must sum to 10000.
        #[arg(long = "share", value_parser = parse_share)]
        shares: Vec<(String, i32)>,
        /// Days from now until the proposal expires.
        #[arg(long, default_value_t = 30)]
        valid_days: i64,
        /// Resource name of the project served.
        #[arg(long, default_value = "")]
        project: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Read one allocation by name.
    Get { name: String },
    /// List allocations.
    List {
        #[arg(long, default_value = "")]
        owner: String,
    },
    /// Decide on the current round (read it first with `get` for the round number).
    Decide {
        name: String,
        #[arg(long)]
        round: i32,
        #[arg(value_enum)]
        verdict: VerdictArg,
        /// COUNTER: new quantity.
        #[arg(long, default_value = "")]
        quantity: String,
        /// COUNTER: new benefit share party=basis_points, repeated.
        #[arg(long = "share", value_parser = parse_share)]
        shares: Vec<(String, i32)>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Withdraw an allocation this party proposed.
    Withdraw { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VerdictArg {
    Approve,
    Reject,
    Counter,
}

fn parse_share(s: &str) -> Result<(String, i32), String> {
    let (party, bp) = s.split_once('=').ok_or("expected party=basis_points")?;
    let bp = bp
        .parse()
        .map_err(|_| format!("`{bp}` is not a whole number of basis points"))?;
    Ok((party.to_string(), bp))
}

fn industry(i: IndustryArg) -> pb::Industry {
    match i {
        IndustryArg::NewEnergyVehicles => pb::Industry::NewEnergyVehicles,
        IndustryArg::CncMachineTools => pb::Industry::CncMachineTools,
        IndustryArg::Other => pb::Industry::Other,
    }
}

fn stage(s: StageArg) -> pb::Stage {
    match s {
        StageArg::Lead => pb::Stage::Lead,
        StageArg::Negotiating => pb::Stage::Negotiating,
        StageArg::Signed => pb::Stage::Signed,
        StageArg::Started => pb::Stage::Started,
        StageArg::InStorage => pb::Stage::InStorage,
        StageArg::Completed => pb::Stage::Completed,
        StageArg::Producing => pb::Stage::Producing,
        StageArg::Cancelled => pb::Stage::Cancelled,
    }
}

fn kind(k: KindArg) -> pb::FactorKind {
    match k {
        KindArg::LandQuota => pb::FactorKind::LandQuota,
        KindArg::EnergyQuota => pb::FactorKind::EnergyQuota,
        KindArg::EmissionQuota => pb::FactorKind::EmissionQuota,
        KindArg::Water => pb::FactorKind::Water,
        KindArg::PowerCapacity => pb::FactorKind::PowerCapacity,
        KindArg::Funding => pb::FactorKind::Funding,
    }
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
    let tls = crate::identity::tls::client_config(&ca, &cert, &key)?;
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
        ClientCommand::Whoami => {
            let me = DirectoryServiceClient::new(channel)
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            say!("spiffe id:  {}", me.spiffe_id);
            say!("party:      {}", me.party);
            say!(
                "role:       {}",
                pb::Role::try_from(me.role)
                    .map(|r| r.as_str_name())
                    .unwrap_or("?")
            );
            say!("system:     {}", me.system);
            say!("read only:  {}", me.read_only);
            say!("gateway of: {}", me.gateway_party);
        }
        ClientCommand::Parties => {
            let parties = DirectoryServiceClient::new(channel)
                .list_parties(pb::ListPartiesRequest {})
                .await
                .map_err(explain)?
                .into_inner()
                .parties;
            for p in parties {
                say!(
                    "{:<10} {:<8} {:<7} {}",
                    p.id,
                    p.province,
                    p.division_code,
                    p.display_name
                );
            }
        }
        ClientCommand::Project(cmd) => project(ProjectServiceClient::new(channel), cmd).await?,
        ClientCommand::Allocation(cmd) => {
            allocation(FactorServiceClient::new(channel), cmd).await?
        }
        ClientCommand::Catalog(cmd) => catalog::run(channel, cmd).await?,
        ClientCommand::Request(cmd) => access::run(channel, cmd).await?,
    }
    Ok(())
}

async fn project(
    mut client: ProjectServiceClient<Channel>,
    cmd: ProjectCommand,
) -> anyhow::Result<()> {
    match cmd {
        ProjectCommand::Create {
            display_name,
            investor_name,
            credit_code,
            industry: ind,
            investment_yuan,
            land_area_mu,
            platform,
            contact_name,
            contact_phone,
            request_id,
        } => {
            let request = pb::CreateProjectRequest {
                project: Some(pb::Project {
                    display_name,
                    investor: Some(pb::Investor {
                        name: investor_name,
                        credit_code,
                    }),
                    industry: industry(ind) as i32,
                    total_investment_yuan: investment_yuan,
                    land_area_mu,
                    platform,
                    contact: Some(pb::Contact {
                        name: contact_name,
                        phone: contact_phone,
                    }),
                    ..Default::default()
                }),
                request_id: request_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            };
            let created = client
                .create_project(request)
                .await
                .map_err(explain)?
                .into_inner();
            print_project(&created.project.unwrap_or_default());
        }
        ProjectCommand::Get { name } => {
            let got = client
                .get_project(pb::GetProjectRequest { name })
                .await
                .map_err(explain)?
                .into_inner();
            print_project(&got.project.unwrap_or_default());
        }
        ProjectCommand::List {
            owner,
            stage: st,
            page_size,
        } => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_projects(pb::ListProjectsRequest {
                        page_size,
                        page_token: token,
                        owner: owner.clone(),
                        stage: st.map(stage).unwrap_or_default() as i32,
                        industry: 0,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                for p in &page.projects {
                    print_project(p);
                }
                token = page.next_page_token;
                if token.is_empty() || page_size > 0 {
                    break;
                }
            }
        }
        ProjectCommand::SetStage { name, stage: st } => {
            let current = client
                .get_project(pb::GetProjectRequest { name: name.clone() })
                .await
                .map_err(explain)?
                .into_inner()
                .project
                .unwrap_or_default();
            let updated = client
                .update_project(pb::UpdateProjectRequest {
                    project: Some(pb::Project {
                        name,
                        etag: current.etag,
                        stage: stage(st) as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["stage".into()],
                    }),
                    request_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_project(&updated.project.unwrap_or_default());
        }
        ProjectCommand::Refer { name, to, reason } => {
            let referral = client
                .refer_project(pb::ReferProjectRequest {
                    project: name,
                    to_party: to,
                    reason,
                    request_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_referral(&referral.referral.unwrap_or_default());
        }
        ProjectCommand::Respond {
            referral,
            accept,
            decline,
            comment,
        } => {
            anyhow::ensure!(accept || decline, "say --accept or --decline");
            let answered = client
                .respond_to_referral(pb::RespondToReferralRequest {
                    referral,
                    accept,
                    comment,
                    request_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_referral(&answered.referral.unwrap_or_default());
        }
        ProjectCommand::Referrals => {
            let listed = client
                .list_referrals(pb::ListReferralsRequest::default())
                .await
                .map_err(explain)?
                .into_inner();
            for r in &listed.referrals {
                print_referral(r);
            }
        }
    }
    Ok(())
}

async fn allocation(
    mut client: FactorServiceClient<Channel>,
    cmd: AllocationCommand,
) -> anyhow::Result<()> {
    match cmd {
        AllocationCommand::Propose {
            kind: k,
            quantity,
            from,
            to,
            shares,
            valid_days,
            project,
            description,
        } => {
            let until = std::time::SystemTime::now()
                + std::time::Duration::from_secs(valid_days.max(0) as u64 * 86_400);
            let request = pb::ProposeAllocationRequest {
                allocation: Some(pb::Allocation {
                    kind: kind(k) as i32,
                    quantity,
                    from_party: from,
                    to_party: to,
                    project,
                    description,
                    benefit_shares: shares
                        .into_iter()
                        .map(|(party, basis_points)| pb::BenefitShare {
                            party,
                            basis_points,
                        })
                        .collect(),
                    valid_until: Some(prost_types::Timestamp::from(until)),
                    ..Default::default()
                }),
                request_id: uuid::Uuid::now_v7().to_string(),
            };
            let created = client
                .propose_allocation(request)
                .await
                .map_err(explain)?
                .into_inner();
            print_allocation(&created.allocation.unwrap_or_default());
        }
        AllocationCommand::Get { name } => {
            let got = client
                .get_allocation(pb::GetAllocationRequest { name })
                .await
                .map_err(explain)?
                .into_inner();
            print_allocation(&got.allocation.unwrap_or_default());
        }
        AllocationCommand::Decide {
            name,
            round,
            verdict,
            quantity,
            shares,
            comment,
        } => {
            let verdict = match verdict {
                VerdictArg::Approve => pb::Verdict::Approve,
                VerdictArg::Reject => pb::Verdict::Reject,
                VerdictArg::Counter => pb::Verdict::Counter,
            };
            let decided = client
                .decide_allocation(pb::DecideAllocationRequest {
                    allocation: name,
                    round,
                    verdict: verdict as i32,
                    counter_quantity: quantity,
                    counter_benefit_shares: shares
                        .into_iter()
                        .map(|(party, basis_points)| pb::BenefitShare {
                            party,
                            basis_points,
                        })
                        .collect(),
                    comment,
                    request_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_allocation(&decided.allocation.unwrap_or_default());
        }
        AllocationCommand::Withdraw { name } => {
            let current = client
                .get_allocation(pb::GetAllocationRequest { name: name.clone() })
                .await
                .map_err(explain)?
                .into_inner()
                .allocation
                .unwrap_or_default();
            let withdrawn = client
                .withdraw_allocation(pb::WithdrawAllocationRequest {
                    name,
                    etag: current.etag,
                    request_id: uuid::Uuid::now_v7().to_string(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            print_allocation(&withdrawn.allocation.unwrap_or_default());
        }
        AllocationCommand::List { owner } => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_allocations(pb::ListAllocationsRequest {
                        page_token: token,
                        owner: owner.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                for a in &page.allocations {
                    print_allocation(a);
                }
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
        }
    }
    Ok(())
}
