//! SPEC §3 要素共商 and 项目共推 across real gateways.

use std::time::Duration;

use tonic::Code;
use yrd_gateway::wire::pb;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn land_quota_proposal() -> pb::Allocation {
    pb::Allocation {
        kind: pb::FactorKind::LandQuota as i32,
        quantity: "200".into(),
        from_party: "guangde".into(),
        to_party: "zone".into(),
        benefit_shares: vec![
            pb::BenefitShare {
                party: "zone".into(),
                basis_points: 6000,
            },
            pb::BenefitShare {
                party: "guangde".into(),
                basis_points: 4000,
            },
        ],
        valid_until: Some(prost_types::Timestamp::from(
            std::time::SystemTime::now() + Duration::from_secs(30 * 86_400),
        )),
        description: "land quota for a new-energy-vehicle project".into(),
        ..Default::default()
    }
}

pub(crate) async fn propose(
    fed: &TestFederation,
    party: &str,
    allocation: pb::Allocation,
) -> pb::Allocation {
    fed.factors(party, party)
        .propose_allocation(pb::ProposeAllocationRequest {
            allocation: Some(allocation),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap()
}

pub(crate) fn decide_request(
    name: &str,
    round: i32,
    verdict: pb::Verdict,
) -> pb::DecideAllocationRequest {
    pb::DecideAllocationRequest {
        allocation: name.to_string(),
        round,
        verdict: verdict as i32,
        request_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    }
}

async fn decide(
    fed: &TestFederation,
    party: &str,
    request: pb::DecideAllocationRequest,
) -> Result<pb::Allocation, tonic::Status> {
    fed.factors(party, party)
        .decide_allocation(request)
        .await
        .map(|r| r.into_inner().allocation.unwrap())
}

pub(crate) async fn get_allocation(
    fed: &TestFederation,
    party: &str,
    name: &str,
) -> Option<pb::Allocation> {
    fed.factors(party, party)
        .get_allocation(pb::GetAllocationRequest {
            name: name.to_string(),
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().allocation)
}

/// Waits until `party` sees `name` with `status` at `round` and `decisions` decisions.
async fn wait_for(
    fed: &TestFederation,
    party: &str,
    name: &str,
    status: pb::AllocationStatus,
    round: i32,
    decisions: usize,
) -> pb::Allocation {
    eventually(
        WAIT,
        &format!("{name} {status:?} round {round} at {party}"),
        || async {
            get_allocation(fed, party, name).await.filter(|a| {
                a.status == status as i32 && a.round == round && a.decisions.len() == decisions
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_scenario_with_a_party_offline() {
    let mut fed = TestFederation::start(&PARTIES).await;
    // Anji is offline while the zone and Guangde negotiate.
    fed.gateway("anji").stop().await;

    let proposed = propose(&fed, "zone", land_quota_proposal()).await;
    let name = proposed.name.clone();
    assert_eq!(proposed.status, pb::AllocationStatus::Proposed as i32);
    assert_eq!(
        proposed.required_parties,
        vec!["zone".to_string(), "guangde".to_string()]
    );

    // Guangde counters with 150 mu once the proposal reached it.
    wait_for(&fed, "guangde", &name, pb::AllocationStatus::Proposed, 1, 0).await;
    let mut counter = decide_request(&name, 1, pb::Verdict::Counter);
    counter.counter_quantity = "150".into();
    counter.comment = "150 mu is what our quota allows this year".into();
    let after_counter = decide(&fed, "guangde", counter).await.unwrap();
    assert_eq!(after_counter.round, 2);
    assert_eq!(after_counter.current_quantity, "150");

    // The zone sees round 2 and approves; Guangde approves its own counter.
    wait_for(&fed, "zone", &name, pb::AllocationStatus::Proposed, 2, 1).await;
    decide(&fed, "zone", decide_request(&name, 2, pb::Verdict::Approve))
        .await
        .unwrap();
    wait_for(&fed, "guangde", &name, pb::AllocationStatus::Proposed, 2, 2).await;
    let agreed = decide(
        &fed,
        "guangde",
        decide_request(&name, 2, pb::Verdict::Approve),
    )
    .await
    .unwrap();
    assert_eq!(agreed.status, pb::AllocationStatus::Agreed as i32);

    for party in ["zone", "changxing", "guangde"] {
        let seen = wait_for(&fed, party, &name, pb::AllocationStatus::Agreed, 2, 3).await;
        assert_eq!(seen.current_quantity, "150");
        assert_eq!(seen.quantity, "200", "the proposal itself is unchanged");
        let mut authors: Vec<(String, i32, bool)> = seen
            .decisions
            .iter()
            .map(|d| (d.party.clone(), d.round, d.superseded))
            .collect();
        authors.sort();
        assert_eq!(
            authors,
            vec![
                ("guangde".to_string(), 1, false),
                ("guangde".to_string(), 2, false),
                ("zone".to_string(), 2, false),
            ]
        );
    }

    // Anji comes back and catches up by itself.
    fed.gateway("anji").restart().await;
    let at_anji = wait_for(&fed, "anji", &name, pb::AllocationStatus::Agreed, 2, 3).await;
    assert_eq!(at_anji.current_quantity, "150");
    assert_eq!(at_anji.decisions.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_decisions_change_nothing_anywhere() {
    let fed = TestFederation::start(&["zone", "changxing", "guangde"]).await;
    let name = propose(&fed, "zone", land_quota_proposal()).await.name;
    wait_for(&fed, "guangde", &name, pb::AllocationStatus::Proposed, 1, 0).await;
    wait_for(
        &fed,
        "changxing",
        &name,
        pb::AllocationStatus::Proposed,
        1,
        0,
    )
    .await;

    // Not a required party.
    let err = decide(
        &fed,
        "changxing",
        decide_request(&name, 1, pb::Verdict::Approve),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_str()),
        (Code::PermissionDenied, "NOT_REQUIRED_PARTY")
    );
    // Wrong round.
    let err = decide(
        &fed,
        "guangde",
        decide_request(&name, 2, pb::Verdict::Approve),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_str()),
        (Code::FailedPrecondition, "STALE_ROUND")
    );
    // Bad counter terms: shares not summing to 10000, and a float-looking quantity.
    let mut bad = decide_request(&name, 1, pb::Verdict::Counter);
    bad.counter_benefit_shares = vec![pb::BenefitShare {
        party: "zone".into(),
        basis_points: 9000,
    }];
    bad.counter_quantity = "1.5e2".into();
    let err = decide(&fed, "guangde", bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = bad_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "counter_benefit_shares".to_string(),
            "counter_quantity".to_string()
        ]
    );
    // No verdict; terms on an approval.
    let err = decide(
        &fed,
        "guangde",
        decide_request(&name, 1, pb::Verdict::Unspecified),
    )
    .await
    .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["verdict".to_string()]);
    let mut approve_with_terms = decide_request(&name, 1, pb::Verdict::Approve);
    approve_with_terms.counter_quantity = "100".into();
    let err = decide(&fed, "guangde", approve_with_terms)
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["counter_quantity".to_string()]);

    // A good decision, then a second one in the same round.
    decide(
        &fed,
        "guangde",
        decide_request(&name, 1, pb::Verdict::Approve),
    )
    .await
    .unwrap();
    let err = decide(
        &fed,
        "guangde",
        decide_request(&name, 1, pb::Verdict::Reject),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_str()),
        (Code::AlreadyExists, "ALREADY_DECIDED")
    );

    // Once the good decision has reached everyone, each gateway holds exactly that one.
    for party in ["zone", "changxing", "guangde"] {
        let seen = wait_for(&fed, party, &name, pb::AllocationStatus::Proposed, 1, 1).await;
        assert_eq!(seen.decisions[0].party, "guangde");
        assert_eq!(seen.decisions[0].verdict, pb::Verdict::Approve as i32);
    }
    for party in ["zone", "guangde"] {
        // changxing made no decision: its log holds nothing of it (its default catalog only).
        assert_eq!(
            fed.gateways[party].peer("changxing").cursor,
            DEFAULT_ENTRIES
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_second_decisions_in_a_round_admit_exactly_one() {
    let fed = TestFederation::start(&["zone", "guangde"]).await;
    let name = propose(&fed, "zone", land_quota_proposal()).await.name;
    wait_for(&fed, "guangde", &name, pb::AllocationStatus::Proposed, 1, 0).await;
    let mut calls = Vec::new();
    // Approvals only: none of them closes the round, so each call either wins the one
    // decision guangde may make in round 1 or meets the unique key.
    for verdict in [pb::Verdict::Approve; 6] {
        let mut client = fed.factors("guangde", "guangde");
        let request = decide_request(&name, 1, verdict);
        calls.push(tokio::spawn(async move {
            client.decide_allocation(request).await
        }));
    }
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        get_allocation(&fed, "guangde", &name)
            .await
            .unwrap()
            .decisions
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_proposer_withdraws_and_a_withdrawn_allocation_takes_no_decisions() {
    let fed = TestFederation::start(&["zone", "guangde"]).await;
    let proposed = propose(&fed, "zone", land_quota_proposal()).await;
    let name = proposed.name.clone();
    wait_for(&fed, "guangde", &name, pb::AllocationStatus::Proposed, 1, 0).await;

    let err = fed
        .factors("guangde", "guangde")
        .withdraw_allocation(pb::WithdrawAllocationRequest {
            name: name.clone(),
            etag: proposed.etag.clone(),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_str()),
        (Code::PermissionDenied, "NOT_PROPOSER")
    );

    let withdrawn = fed
        .factors("zone", "zone")
        .withdraw_allocation(pb::WithdrawAllocationRequest {
            name: name.clone(),
            etag: proposed.etag.clone(),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .allocation
        .unwrap();
    assert_eq!(withdrawn.status, pb::AllocationStatus::Withdrawn as i32);
    wait_for(
        &fed,
        "guangde",
        &name,
        pb::AllocationStatus::Withdrawn,
        1,
        0,
    )
    .await;
    let err = decide(
        &fed,
        "guangde",
        decide_request(&name, 1, pb::Verdict::Approve),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_str()),
        (Code::FailedPrecondition, "NEGOTIATION_CLOSED")
    );
    let listed = fed
        .factors("guangde", "guangde")
        .list_allocations(pb::ListAllocationsRequest {
            status: pb::AllocationStatus::Withdrawn as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.allocations.len(), 1);
}

async fn refer(
    fed: &TestFederation,
    party: &str,
    project: &str,
    to: &str,
) -> Result<pb::Referral, tonic::Status> {
    fed.projects(party, party)
        .refer_project(pb::ReferProjectRequest {
            project: project.to_string(),
            to_party: to.to_string(),
            reason: "the investor's CNC line fits the other party's industry map".into(),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .map(|r| r.into_inner().referral.unwrap())
}

pub(crate) async fn respond(
    fed: &TestFederation,
    party: &str,
    referral: &str,
    accept: bool,
) -> Result<pb::Referral, tonic::Status> {
    fed.projects(party, party)
        .respond_to_referral(pb::RespondToReferralRequest {
            referral: referral.to_string(),
            accept,
            comment: if accept {
                "welcome".into()
            } else {
                "no land left".into()
            },
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .map(|r| r.into_inner().referral.unwrap())
}

pub(crate) async fn referral_at(
    fed: &TestFederation,
    party: &str,
    name: &str,
    state: pb::ReferralState,
) -> pb::Referral {
    eventually(WAIT, &format!("{name} {state:?} at {party}"), || async {
        fed.projects(party, party)
            .list_referrals(pb::ListReferralsRequest::default())
            .await
            .ok()
            .and_then(|r| {
                r.into_inner()
                    .referrals
                    .into_iter()
                    .find(|r| r.name == name)
            })
            .filter(|r| r.state == state as i32)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_referral_moves_the_project_and_a_declined_one_changes_nothing() {
    let fed = TestFederation::start(&["changxing", "anji", "guangde"]).await;
    let original = create(&fed, "changxing", "CNC machine tool lead").await;

    // Refused: not the owner, to itself, to a non-member.
    eventually(WAIT, "project at anji", || {
        try_get(&fed, "anji", &original.name)
    })
    .await;
    let err = refer(&fed, "anji", &original.name, "guangde")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_str()),
        (Code::PermissionDenied, "NOT_OWNER")
    );
    let err = refer(&fed, "changxing", &original.name, "changxing")
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&err), vec!["to_party".to_string()]);

    // Declined: the original is unchanged.
    let declined = refer(&fed, "changxing", &original.name, "guangde")
        .await
        .unwrap();
    assert_eq!(declined.state, pb::ReferralState::Pending as i32);
    let err = refer(&fed, "changxing", &original.name, "anji")
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err), "REFERRAL_PENDING");
    referral_at(&fed, "guangde", &declined.name, pb::ReferralState::Pending).await;
    let err = respond(&fed, "anji", &declined.name, true).await;
    let err = match err {
        Err(e) => e,
        Ok(_) => panic!("anji answered a referral made to guangde"),
    };
    assert!(
        matches!(err.code(), Code::PermissionDenied | Code::NotFound),
        "{err:?}"
    );
    respond(&fed, "guangde", &declined.name, false)
        .await
        .unwrap();
    referral_at(
        &fed,
        "changxing",
        &declined.name,
        pb::ReferralState::Declined,
    )
    .await;
    let unchanged = try_get(&fed, "changxing", &original.name).await.unwrap();
    assert_eq!(unchanged.stage, pb::Stage::Lead as i32);
    assert_eq!(unchanged.etag, original.etag);

    // Accepted: anji owns a new linked project, the original becomes REFERRED everywhere.
    let referral = refer(&fed, "changxing", &original.name, "anji")
        .await
        .unwrap();
    referral_at(&fed, "anji", &referral.name, pb::ReferralState::Pending).await;
    let accepted = respond(&fed, "anji", &referral.name, true).await.unwrap();
    assert_eq!(accepted.state, pb::ReferralState::Accepted as i32);
    let err = respond(&fed, "anji", &referral.name, false)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), error_reason(&err).as_str()),
        (Code::AlreadyExists, "ALREADY_ANSWERED")
    );

    let new_project = try_get(&fed, "anji", &accepted.accepted_project)
        .await
        .unwrap();
    assert_eq!(new_project.owner, "anji");
    assert_eq!(new_project.referred_from, original.name);
    assert_eq!(new_project.stage, pb::Stage::Lead as i32);
    assert_eq!(new_project.display_name, original.display_name);

    for party in ["changxing", "anji", "guangde"] {
        eventually(WAIT, &format!("original REFERRED at {party}"), || async {
            try_get(&fed, party, &original.name)
                .await
                .filter(|p| p.stage == pb::Stage::Referred as i32)
        })
        .await;
        referral_at(&fed, party, &referral.name, pb::ReferralState::Accepted).await;
        eventually(WAIT, &format!("new project at {party}"), || {
            try_get(&fed, party, &accepted.accepted_project)
        })
        .await;
    }
    // A referred project is closed for further referral.
    let err = refer(&fed, "changxing", &original.name, "guangde")
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err), "PROJECT_CLOSED");
}
