//! How `client` shows the records a gateway returns: one readable block per record.

use crate::wire::pb;

pub(super) fn print_project(p: &pb::Project) {
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

pub(super) fn print_referral(r: &pb::Referral) {
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

pub(super) fn print_allocation(a: &pb::Allocation) {
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
