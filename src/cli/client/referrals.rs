//! `yrd-gateway client project refer | respond | referrals`: hand a project lead to another
//! party (项目引荐), answer a referral made to this party, list the referrals it sees. The
//! subcommands belong to `project` because referrals are methods of `ProjectService`.

use tonic::transport::Channel;

use super::explain;
use crate::wire::pb;
use crate::wire::pb::project_service_client::ProjectServiceClient;

type Client = ProjectServiceClient<Channel>;

pub(super) async fn refer(
    client: &mut Client,
    name: String,
    to: String,
    reason: String,
) -> anyhow::Result<()> {
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
    Ok(())
}

pub(super) async fn respond(
    client: &mut Client,
    referral: String,
    accept: bool,
    decline: bool,
    comment: String,
) -> anyhow::Result<()> {
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
    Ok(())
}

pub(super) async fn list(client: &mut Client) -> anyhow::Result<()> {
    let listed = client
        .list_referrals(pb::ListReferralsRequest::default())
        .await
        .map_err(explain)?
        .into_inner();
    for r in &listed.referrals {
        print_referral(r);
    }
    Ok(())
}

fn print_referral(r: &pb::Referral) {
    let state = pb::ReferralState::try_from(r.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    say!("{}", r.name);
    say!("  {} -> {}  {state}", r.from_party, r.to_party);
    say!("  project: {}", r.project);
    say!("  reason: {}", r.reason);
    if !r.response_comment.is_empty() {
        say!("  answer: {}", r.response_comment);
    }
    if !r.accepted_project.is_empty() {
        say!("  new project: {}", r.accepted_project);
    }
}
