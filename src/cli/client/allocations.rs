//! `yrd-gateway client allocation …`: propose, read, list, decide and withdraw factor
//! allocations (要素共商).

use clap::{Subcommand, ValueEnum};
use tonic::transport::Channel;

use super::explain;
use crate::wire::pb;
use crate::wire::pb::factor_service_client::FactorServiceClient;

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

pub(super) async fn run(channel: Channel, cmd: AllocationCommand) -> anyhow::Result<()> {
    let mut client = FactorServiceClient::new(channel);
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

fn print_allocation(a: &pb::Allocation) {
    let status = pb::AllocationStatus::try_from(a.status)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let kind = pb::FactorKind::try_from(a.kind)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    say!("{}", a.name);
    say!(
        "  {kind}: {} {} from {} to {}",
        a.quantity,
        a.unit,
        a.from_party,
        a.to_party
    );
    say!(
        "  status: {status}  round: {}  required: {}",
        a.round,
        a.required_parties.join(", ")
    );
    let shares: Vec<String> = a
        .benefit_shares
        .iter()
        .map(|s| format!("{}={}", s.party, s.basis_points))
        .collect();
    say!("  benefit shares (bp): {}", shares.join(" "));
    if !a.project.is_empty() {
        say!("  project: {}", a.project);
    }
    let current: Vec<String> = a
        .current_benefit_shares
        .iter()
        .map(|s| format!("{}={}", s.party, s.basis_points))
        .collect();
    say!(
        "  current terms: {} {}  {}",
        a.current_quantity,
        a.unit,
        current.join(" ")
    );
    for d in &a.decisions {
        let verdict = pb::Verdict::try_from(d.verdict)
            .map(|v| v.as_str_name())
            .unwrap_or("?");
        let superseded = if d.superseded { " (superseded)" } else { "" };
        let terms = if d.counter_quantity.is_empty() {
            String::new()
        } else {
            format!(" to {} {}", d.counter_quantity, a.unit)
        };
        let comment = if d.comment.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", d.comment)
        };
        say!(
            "  round {}: {} {verdict}{terms}{superseded}{comment}",
            d.round,
            d.party
        );
    }
}
