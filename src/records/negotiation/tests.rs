use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::domain::PartyInfo;
use crate::domain::RecordKind;
use crate::records::{Allocation, FactorKind, Pollutant};
use crate::store::sqlite::SqliteStore;
use crate::store::{Idempotency, IndexFields, ListQuery, RecordStore, StoredRecord, Write};

const DAY: i64 = 86_400 * 1_000_000;

fn federation() -> Federation {
    let p = |id: &str, province: &str| PartyInfo {
        id: id.into(),
        display_name: id.into(),
        province: province.into(),
        division_code: String::new(),
        suspended: false,
    };
    Federation::new(vec![
        p("zone", "Zhejiang"),
        p("changxing", "Zhejiang"),
        p("anji", "Zhejiang"),
        p("guangde", "Anhui"),
    ])
    .unwrap()
}

fn shares(zone: i32, guangde: i32) -> Vec<BenefitShare> {
    vec![
        BenefitShare {
            party: "zone".into(),
            basis_points: zone,
        },
        BenefitShare {
            party: "guangde".into(),
            basis_points: guangde,
        },
    ]
}

/// The README scenario's proposal: Guangde provides 200 mu of land quota to the zone, 60/40.
fn proposal(required: &[&str]) -> Allocation {
    Allocation {
        id: Uuid::from_u128(7),
        owner: "zone".into(),
        kind: FactorKind::LandQuota,
        quantity: "200".into(),
        pollutant: Pollutant::Unspecified,
        from_party: "guangde".into(),
        to_party: "zone".into(),
        project: None,
        benefit_shares: shares(6000, 4000),
        required_parties: required.iter().map(|s| s.to_string()).collect(),
        valid_until: 10 * DAY,
        round: 1,
        description: String::new(),
        withdraw_time: None,
        revision: 1,
        create_time: 0,
        update_time: 0,
    }
}

fn name(a: &Allocation) -> String {
    format!("parties/{}/allocations/{}", a.owner, a.id)
}

fn decision(
    a: &Allocation,
    n: u128,
    party: &str,
    round: i32,
    verdict: Verdict,
    time: i64,
) -> Decision {
    Decision {
        id: Uuid::from_u128(1000 + n),
        owner: party.into(),
        allocation: name(a),
        round,
        verdict,
        counter_quantity: None,
        counter_shares: None,
        comment: String::new(),
        revision: 1,
        create_time: time,
        update_time: time,
    }
}

fn counter(mut d: Decision, quantity: &str) -> Decision {
    d.counter_quantity = Some(quantity.into());
    d
}

#[test]
fn the_readme_scenario_counter_then_agree() {
    let fed = federation();
    let a = proposal(&["zone", "guangde"]);
    let now = DAY;
    let mut ds = vec![counter(
        decision(&a, 1, "guangde", 1, Verdict::Counter, 10),
        "150",
    )];
    let o = derive(&a, &ds, &fed, now);
    assert_eq!(
        (o.status, o.round, o.quantity.as_str()),
        (AllocationStatus::Proposed, 2, "150")
    );
    assert_eq!(
        o.shares,
        shares(6000, 4000),
        "a counter of the quantity keeps the shares"
    );

    ds.push(decision(&a, 2, "zone", 2, Verdict::Approve, 20));
    assert_eq!(
        derive(&a, &ds, &fed, now).status,
        AllocationStatus::Proposed
    );
    ds.push(decision(&a, 3, "guangde", 2, Verdict::Approve, 30));
    let o = derive(&a, &ds, &fed, now);
    assert_eq!(
        (o.status, o.round, o.quantity.as_str()),
        (AllocationStatus::Agreed, 2, "150")
    );
    assert!(o.superseded.is_empty());
}

#[test]
fn a_counter_resets_approvals_of_its_round() {
    let fed = federation();
    let a = proposal(&["zone", "guangde"]);
    let ds = vec![
        decision(&a, 1, "zone", 1, Verdict::Approve, 10),
        counter(decision(&a, 2, "guangde", 1, Verdict::Counter, 20), "150"),
    ];
    let o = derive(&a, &ds, &fed, DAY);
    assert_eq!((o.status, o.round), (AllocationStatus::Proposed, 2));
    assert!(
        o.superseded.contains(&ds[0].id),
        "the zone's round-1 approval no longer counts"
    );
}

#[test]
fn competing_counters_are_won_by_party_order() {
    let fed = federation();
    let a = proposal(&["zone", "changxing", "guangde"]);
    // guangde counters first in time, changxing later: changxing is earlier in party order.
    let ds = vec![
        counter(decision(&a, 1, "guangde", 1, Verdict::Counter, 10), "120"),
        counter(decision(&a, 2, "changxing", 1, Verdict::Counter, 20), "180"),
    ];
    let o = derive(&a, &ds, &fed, DAY);
    assert_eq!((o.round, o.quantity.as_str()), (2, "180"));
    assert!(o.superseded.contains(&ds[0].id));
    assert!(!o.superseded.contains(&ds[1].id));
}

#[test]
fn a_rejection_ends_the_negotiation_even_beside_a_counter() {
    let fed = federation();
    let a = proposal(&["zone", "changxing", "guangde"]);
    let ds = vec![
        counter(decision(&a, 1, "changxing", 1, Verdict::Counter, 10), "180"),
        decision(&a, 2, "guangde", 1, Verdict::Reject, 20),
    ];
    let o = derive(&a, &ds, &fed, DAY);
    assert_eq!((o.status, o.round), (AllocationStatus::Rejected, 1));
}

#[test]
fn expiry_withdrawal_and_outsiders() {
    let fed = federation();
    let a = proposal(&["zone", "guangde"]);
    assert_eq!(
        derive(&a, &[], &fed, DAY).status,
        AllocationStatus::Proposed
    );
    assert_eq!(
        derive(&a, &[], &fed, 11 * DAY).status,
        AllocationStatus::Expired
    );

    // Approvals after valid_until do not count.
    let late = vec![
        decision(&a, 1, "zone", 1, Verdict::Approve, 5 * DAY),
        decision(&a, 2, "guangde", 1, Verdict::Approve, 10 * DAY + 1),
    ];
    assert_eq!(
        derive(&a, &late, &fed, 11 * DAY).status,
        AllocationStatus::Expired
    );

    // An agreement reached in time survives expiry.
    let in_time = vec![
        decision(&a, 1, "zone", 1, Verdict::Approve, 5 * DAY),
        decision(&a, 2, "guangde", 1, Verdict::Approve, 6 * DAY),
    ];
    assert_eq!(
        derive(&a, &in_time, &fed, 11 * DAY).status,
        AllocationStatus::Agreed
    );

    let mut withdrawn = a.clone();
    withdrawn.withdraw_time = Some(5 * DAY + 1);
    assert_eq!(
        derive(&withdrawn, &late[..1], &fed, 6 * DAY).status,
        AllocationStatus::Withdrawn
    );
    assert_eq!(
        derive(&withdrawn, &in_time, &fed, 7 * DAY).status,
        AllocationStatus::Withdrawn
    );

    // A party not required does not count.
    let outsider = vec![
        decision(&a, 1, "anji", 1, Verdict::Reject, 10),
        decision(&a, 2, "zone", 1, Verdict::Approve, 20),
        decision(&a, 3, "guangde", 1, Verdict::Approve, 30),
    ];
    let o = derive(&a, &outsider, &fed, DAY);
    assert_eq!(o.status, AllocationStatus::Agreed);
    assert!(o.superseded.contains(&outsider[0].id));
}

/// Random decisions: (party index, round, verdict, counter quantity choice, time).
fn decisions_strategy() -> impl Strategy<Value = Vec<(usize, i32, u8, u8, i64)>> {
    prop::collection::vec((0usize..4, 1i32..4, 0u8..3, 0u8..3, 0i64..12 * DAY), 0..10)
}

fn build(a: &Allocation, raw: &[(usize, i32, u8, u8, i64)]) -> Vec<Decision> {
    const PARTIES: [&str; 4] = ["zone", "changxing", "anji", "guangde"];
    raw.iter()
        .enumerate()
        .map(|(i, (p, round, verdict, q, time))| {
            let verdict = [Verdict::Approve, Verdict::Reject, Verdict::Counter][*verdict as usize];
            let mut d = decision(a, i as u128, PARTIES[*p], *round, verdict, *time);
            if verdict == Verdict::Counter {
                d.counter_quantity = Some(["100", "150", "175.5"][*q as usize].into());
                if *q == 2 {
                    d.counter_shares = Some(shares(5000, 5000));
                }
            }
            d
        })
        .collect()
}

fn stored(d: &Decision) -> StoredRecord {
    StoredRecord {
        kind: RecordKind::Decision,
        owner: d.owner.clone(),
        id: d.id,
        revision: d.revision,
        index: IndexFields {
            parent: Some(d.allocation.clone()),
            ..IndexFields::default()
        },
        body: serde_json::to_string(d).unwrap(),
    }
}

/// Delivers `decisions` to a fresh SQLite store in the given order and derives the status
/// from what the store gives back.
async fn via_store(
    dir: &std::path::Path,
    a: &Allocation,
    decisions: &[Decision],
    now: i64,
) -> Outcome {
    let store = SqliteStore::open(&dir.join("store.db")).unwrap();
    for (i, d) in decisions.iter().enumerate() {
        store
            .write(Write {
                resend: None,
                audit: None,
                record: stored(d),
                expected_revision: None,
                also_create: vec![],
                unique: None,
                key: Idempotency {
                    party: d.owner.clone(),
                    request_id: format!("r{i}"),
                    fingerprint: vec![],
                },
                time: d.create_time,
            })
            .await
            .unwrap();
    }
    let rows = store
        .list(ListQuery {
            parent: Some(name(a)),
            ..ListQuery::of(RecordKind::Decision, 100)
        })
        .await
        .unwrap();
    let back: Vec<Decision> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    derive(a, &back, &federation(), now)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Four gateways receive the same decisions in four different orders: all compute the
    /// same status, round, terms and superseded set.
    #[test]
    fn every_gateway_derives_the_same_status_whatever_the_arrival_order(
        raw in decisions_strategy(),
        required_extra in prop::collection::vec(0usize..4, 0..3),
        now in 0i64..12 * DAY,
        seeds in prop::collection::vec(any::<u64>(), 4),
    ) {
        const PARTIES: [&str; 4] = ["zone", "changxing", "anji", "guangde"];
        let mut required = vec!["zone", "guangde"];
        required.extend(required_extra.iter().map(|i| PARTIES[*i]));
        let mut a = proposal(&required);
        a.normalize(&federation());
        let decisions = build(&a, &raw);
        let expected = derive(&a, &decisions, &federation(), now);

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for seed in seeds {
            let mut order = decisions.clone();
            // A seeded Fisher-Yates shuffle: each store gets its own arrival order.
            let mut state = seed | 1;
            for i in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            // The function itself must not depend on the order it is given (another backend may
            // return rows in any order)...
            prop_assert_eq!(&derive(&a, &order, &federation(), now), &expected);
            // ...and a real store fed in this order gives the same answer.
            let dir = tempfile::tempdir().unwrap();
            let got = runtime.block_on(via_store(dir.path(), &a, &order, now));
            prop_assert_eq!(&got, &expected);
        }
    }
}
