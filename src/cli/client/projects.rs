//! `yrd-gateway client project …`: create, read, list projects and move them to a later
//! stage; the referral subcommands (`refer`, `respond`, `referrals`) run in
//! [`super::referrals`].

use clap::{Subcommand, ValueEnum};
use tonic::transport::Channel;

use super::explain;
use crate::wire::pb;
use crate::wire::pb::project_service_client::ProjectServiceClient;

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

pub(super) async fn run(channel: Channel, cmd: ProjectCommand) -> anyhow::Result<()> {
    let mut client = ProjectServiceClient::new(channel);
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
            super::referrals::refer(&mut client, name, to, reason).await?
        }
        ProjectCommand::Respond {
            referral,
            accept,
            decline,
            comment,
        } => super::referrals::respond(&mut client, referral, accept, decline, comment).await?,
        ProjectCommand::Referrals => super::referrals::list(&mut client).await?,
    }
    Ok(())
}

fn print_project(p: &pb::Project) {
    let stage = pb::Stage::try_from(p.stage)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let industry = pb::Industry::try_from(p.industry)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let investor = p.investor.clone().unwrap_or_default();
    let contact = p.contact.clone().unwrap_or_default();
    say!("{}", p.name);
    say!("  display_name: {}", p.display_name);
    say!(
        "  owner: {}  stage: {stage}  industry: {industry} {}",
        p.owner,
        p.industry_code
    );
    say!("  investor: {} ({})", investor.name, investor.credit_code);
    say!(
        "  investment: {} yuan  land: {} mu  platform: {}",
        p.total_investment_yuan,
        p.land_area_mu,
        p.platform
    );
    say!("  contact: {} {}", contact.name, contact.phone);
    say!("  etag: {}", p.etag);
}
