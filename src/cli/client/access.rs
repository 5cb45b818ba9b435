//! `yrd-gateway client request …`: file, read, list, answer, withdraw and escalate access
//! requests.

use clap::Subcommand;
use tonic::transport::Channel;

use super::explain;
use crate::wire::pb;
use crate::wire::pb::access_service_client::AccessServiceClient;

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// File a request of this party for items of another party's catalog entry.
    File {
        /// Resource name of the catalog entry (see `catalog list`).
        entry: String,
        /// A field path of the entry's items, repeated.
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        /// 使用用途: what the data will be used for.
        #[arg(long)]
        purpose: String,
        /// 应用场景.
        #[arg(long, default_value = "")]
        scenario: String,
        #[arg(long, default_value_t = 30)]
        days: i32,
    },
    /// Read one request by name.
    Get { name: String },
    /// List requests this party made or received (at the zone: every request).
    List {
        /// Only requests past their deadline without an answer.
        #[arg(long)]
        overdue: bool,
        /// Only requests escalated to the coordinating party.
        #[arg(long)]
        escalated: bool,
    },
    /// Approve a request made to this party (optionally fewer items or days).
    Approve {
        name: String,
        /// Items granted, repeated (default: every item requested).
        #[arg(long = "item")]
        items: Vec<String>,
        /// Days granted (default: as requested).
        #[arg(long, default_value_t = 0)]
        days: i32,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse a request made to this party, saying why.
    Refuse {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Withdraw a request this party made.
    Withdraw { name: String },
    /// Take an overdue or refused request of this party to the coordinating party.
    Escalate {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// End a grant this party gave, before it expires (the provider only).
    Revoke {
        name: String,
        #[arg(long)]
        reason: String,
    },
}

fn print_request(r: &pb::AccessRequest) {
    let state = pb::AccessRequestState::try_from(r.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let when = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    say!("{}", r.name);
    say!(
        "  {} asks {} for {}",
        r.requester,
        r.provider,
        r.items.join(", ")
    );
    say!("  entry: {}", r.entry);
    say!("  purpose: {}  scenario: {}", r.purpose, r.scenario);
    say!(
        "  state: {state}{}  answer by: {}",
        if r.overdue { " (OVERDUE)" } else { "" },
        when(&r.answer_by)
    );
    if !r.granted_items.is_empty() {
        say!(
            "  granted: {} until {}",
            r.granted_items.join(", "),
            when(&r.valid_until)
        );
    }
    if !r.answer_reason.is_empty() {
        say!("  answer: {}", r.answer_reason);
    }
    if r.escalated {
        say!(
            "  escalated {}: {}",
            when(&r.escalate_time),
            r.escalation_reason
        );
    }
    if r.revoke_time.is_some() {
        say!("  revoked {}: {}", when(&r.revoke_time), r.revoke_reason);
    }
    if let Some(d) = &r.deletion_receipt {
        let what = if d.records_deleted {
            format!("records deleted ({} granted)", d.items.join(", "))
        } else {
            format!("{} erased", d.items.join(", "))
        };
        say!(
            "  deletion receipt ({}, {}): {what} in {} records, {} log entries, {} kept envelopes",
            d.cause,
            when(&d.erase_time),
            d.records,
            d.log_entries,
            d.evidence
        );
        if d.keys_destroyed > 0 {
            say!(
                "  {} data keys destroyed: every other copy (backups, database leftovers) is unreadable",
                d.keys_destroyed
            );
        }
    }
}

fn request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(super) async fn run(channel: Channel, cmd: RequestCommand) -> anyhow::Result<()> {
    let mut client = AccessServiceClient::new(channel);
    let shown = match cmd {
        RequestCommand::File {
            entry,
            items,
            purpose,
            scenario,
            days,
        } => {
            client
                .create_access_request(pb::CreateAccessRequestRequest {
                    access_request: Some(pb::AccessRequest {
                        entry,
                        items,
                        purpose,
                        scenario,
                        validity_days: days,
                        ..Default::default()
                    }),
                    request_id: request_id(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .access_request
        }
        RequestCommand::Get { name } => {
            client
                .get_access_request(pb::GetAccessRequestRequest { name })
                .await
                .map_err(explain)?
                .into_inner()
                .access_request
        }
        RequestCommand::List { overdue, escalated } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_access_requests(pb::ListAccessRequestsRequest {
                        page_token,
                        overdue_only: overdue,
                        escalated_only: escalated,
                        ..Default::default()
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                page.access_requests.iter().for_each(print_request);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            None
        }
        RequestCommand::Approve {
            name,
            items,
            days,
            reason,
        } => {
            client
                .answer_access_request(pb::AnswerAccessRequestRequest {
                    name,
                    approve: true,
                    items,
                    validity_days: days,
                    reason,
                    request_id: request_id(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .access_request
        }
        RequestCommand::Refuse { name, reason } => {
            client
                .answer_access_request(pb::AnswerAccessRequestRequest {
                    name,
                    approve: false,
                    reason,
                    request_id: request_id(),
                    ..Default::default()
                })
                .await
                .map_err(explain)?
                .into_inner()
                .access_request
        }
        RequestCommand::Revoke { name, reason } => {
            client
                .revoke_access_grant(pb::RevokeAccessGrantRequest {
                    name,
                    reason,
                    request_id: request_id(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .access_request
        }
        RequestCommand::Escalate { name, reason } => {
            client
                .escalate_access_request(pb::EscalateAccessRequestRequest {
                    name,
                    reason,
                    request_id: request_id(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .access_request
        }
        RequestCommand::Withdraw { name } => {
            client
                .withdraw_access_request(pb::WithdrawAccessRequestRequest {
                    name,
                    request_id: request_id(),
                })
                .await
                .map_err(explain)?
                .into_inner()
                .access_request
        }
    };
    if let Some(r) = shown {
        print_request(&r);
    }
    Ok(())
}
