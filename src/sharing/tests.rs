//! The sharing decision against random histories of publish / grant / revoke / time passing
//! (restarts are shown over real gateways in `tests/gateway/grants.rs`): a
//! CONDITIONAL item never reaches a party without an active grant for it (or a standing
//! `open_to`), a NOT_SHARED item never reaches anyone, and a granted item does reach its
//! consumer while the grant holds.

use proptest::prelude::*;
use uuid::Uuid;

use super::erasure::keep_only_granted;
use super::*;

const HOUR: i64 = 3_600 * 1_000_000;
const CONSUMER: &str = "guangde";

#[derive(Debug, Clone)]
enum Step {
    Publish {
        entry: SharingClass,
        phone: SharingClass,
        open: bool,
    },
    Grant {
        entry: usize,
        phone: bool,
        hours: i64,
    },
    Wait {
        hours: i64,
    },
    /// The provider revokes grant `grant` (if there is one): a revoked request is no longer a
    /// grant of the view.
    Revoke {
        grant: usize,
    },
}

fn class() -> impl Strategy<Value = SharingClass> {
    prop_oneof![
        Just(SharingClass::Unspecified),
        Just(SharingClass::Unconditional),
        Just(SharingClass::Conditional),
        Just(SharingClass::NotShared),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (class(), class(), any::<bool>()).prop_map(|(entry, phone, open)| Step::Publish {
            entry: if entry == SharingClass::Unspecified {
                SharingClass::Unconditional
            } else {
                entry
            },
            phone,
            open
        }),
        (0usize..4, any::<bool>(), 1i64..200).prop_map(|(entry, phone, hours)| Step::Grant {
            entry,
            phone,
            hours
        }),
        (0i64..100).prop_map(|hours| Step::Wait { hours }),
        (0usize..6).prop_map(|grant| Step::Revoke { grant }),
    ]
}

fn entry(n: usize, class: SharingClass, phone: SharingClass, open: bool) -> CatalogEntry {
    CatalogEntry {
        id: Uuid::from_u128(n as u128 + 1),
        owner: "changxing".into(),
        resource_code: format!("CX-{n}"),
        display_name: "projects".into(),
        summary: String::new(),
        record_kind: Some(RecordKind::Project),
        items: vec![
            DataItem {
                field: "contact.phone".into(),
                data_type: "string".into(),
                description: String::new(),
                sharing_class: phone,
                legal_basis: "law".into(),
                open_to: if open {
                    vec![CONSUMER.into()]
                } else {
                    Vec::new()
                },
            },
            DataItem {
                field: "land_area_mu".into(),
                data_type: "decimal".into(),
                description: String::new(),
                sharing_class: SharingClass::Unspecified,
                legal_basis: String::new(),
                open_to: Vec::new(),
            },
        ],
        sharing_class: class,
        legal_basis: "law".into(),
        conditions: String::new(),
        update_cycle: String::new(),
        revision: 1,
        create_time: 0,
        update_time: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_restricted_item_goes_only_where_a_grant_or_standing_agreement_holds(
        steps in proptest::collection::vec(step(), 1..24)
    ) {
        let (mut entries, mut grants, mut now) = (Vec::new(), Vec::new(), 0i64);
        for step in steps {
            match step {
                Step::Publish { entry: class, phone, open } => {
                    let n = entries.len();
                    entries.push(entry(n, class, phone, open));
                }
                Step::Grant { entry, phone, hours } => {
                    if let Some(e) = entries.get(entry) {
                        grants.push(Grant {
                            consumer: CONSUMER.into(),
                            entry: entry_name(e),
                            items: vec![if phone { "contact.phone" } else { "land_area_mu" }.into()],
                            valid_until: now + hours * HOUR,
                        });
                    }
                }
                Step::Wait { hours } => now += hours * HOUR,
                Step::Revoke { grant } => {
                    if grant < grants.len() {
                        grants.remove(grant);
                    }
                }
            }
            let view = SharingView::new(entries.clone(), grants.clone(), 0);
            let active = |e: &CatalogEntry, field: Option<&str>| grants.iter().any(|g| {
                g.entry == entry_name(e)
                    && now < g.valid_until
                    && field.is_none_or(|f| g.items.iter().any(|i| i == f))
            });
            let admitted = |e: &CatalogEntry| match e.sharing_class {
                SharingClass::Unconditional => true,
                SharingClass::Conditional => active(e, None),
                _ => false,
            };
            // Whether `field` (item `i` of every entry) may reach the consumer now.
            let by_right = |i: usize| {
                let class = |e: &CatalogEntry| e.class_of(&e.items[i]);
                let field = entries.first().map(|e| e.items[i].field.clone()).unwrap_or_default();
                if entries.iter().any(|e| class(e) == SharingClass::NotShared) {
                    return false;
                }
                if !entries.iter().any(|e| class(e) == SharingClass::Conditional) {
                    return true;
                }
                entries.iter().filter(|e| admitted(e)).any(|e| match class(e) {
                    SharingClass::Unconditional => true,
                    SharingClass::Conditional => {
                        e.items[i].open_to.iter().any(|p| p == CONSUMER) || active(e, Some(&field))
                    }
                    _ => false,
                })
            };
            match view.visibility(CONSUMER, RecordKind::Project, now) {
                None => prop_assert!(!entries.iter().any(admitted), "an admitting entry, yet nothing sent"),
                Some(withheld) => {
                    prop_assert!(entries.iter().any(admitted), "sent with no admitting entry");
                    for (i, field) in ["contact.phone", "land_area_mu"].into_iter().enumerate() {
                        let sent = !withheld.contains(field);
                        prop_assert_eq!(sent, by_right(i), "{} sent: {}", field, sent);
                    }
                }
            }
            prop_assert!(view.visibility("anji", RecordKind::Allocation, now).is_none(), "a kind without an entry was sent");
        }
    }
}

/// A change the owner sealed while the grant held, arriving after it ended, is kept without the
/// granted item, in the record and in the envelope kept as evidence (whose hash as received is
/// kept); before the end, or when the owner already emptied the item, nothing changes.
#[test]
fn a_change_arriving_after_its_grant_ended_is_kept_without_the_item() {
    use prost::Message;

    use crate::store::{Evidence, ReplicaChange, StoredRecord, envelope_digest};
    use crate::wire::pb;

    let entry = entry(
        0,
        SharingClass::Unconditional,
        SharingClass::Conditional,
        false,
    );
    let grant = Grant {
        consumer: CONSUMER.into(),
        entry: entry_name(&entry),
        items: vec!["contact.phone".into()],
        valid_until: 100,
    };
    let view = SharingView::new(vec![entry], vec![grant], 0);
    let change = |phone: &str| {
        let body =
            format!(r#"{{"contact":{{"name":"张三","phone":"{phone}"}},"land_area_mu":"12"}}"#);
        let envelope = pb::ChangeEnvelope {
            owner: "changxing".into(),
            seq: 7,
            recipient: CONSUMER.into(),
            record_json: body.clone().into_bytes(),
            ..Default::default()
        }
        .encode_to_vec();
        ReplicaChange {
            apart: Vec::new(),
            seq: 7,
            time: 0,
            record: Some(StoredRecord {
                kind: RecordKind::Project,
                owner: "changxing".into(),
                id: Uuid::nil(),
                revision: 1,
                index: Default::default(),
                body,
            }),
            evidence: Evidence {
                envelope,
                scheme: 0x0403,
                signature: Vec::new(),
                signer: "fp".into(),
                erased_sha256: None,
            },
        }
    };

    let mut in_time = vec![change("+86 138")];
    assert!(keep_only_granted(&view, CONSUMER, 99, &mut in_time).is_empty());
    assert!(in_time[0].record.as_ref().unwrap().body.contains("+86 138"));

    let mut late = vec![change("+86 138")];
    let received = late[0].evidence.envelope.clone();
    let touched = keep_only_granted(&view, CONSUMER, 100, &mut late);
    assert_eq!(touched, vec![(7, vec!["contact.phone".to_string()])]);
    let kept = &late[0];
    let body = &kept.record.as_ref().unwrap().body;
    assert!(
        !body.contains("+86 138") && body.contains("张三") && body.contains("12"),
        "{body}"
    );
    let envelope = pb::ChangeEnvelope::decode(kept.evidence.envelope.as_slice()).unwrap();
    assert!(!String::from_utf8_lossy(&envelope.record_json).contains("+86 138"));
    assert_eq!(
        envelope.withheld_fields,
        vec!["project.contact.phone".to_string()]
    );
    assert_eq!(
        kept.evidence.erased_sha256,
        Some(envelope_digest(0x0403, &received))
    );

    let mut emptied_by_owner = vec![change("")];
    assert!(keep_only_granted(&view, CONSUMER, 100, &mut emptied_by_owner).is_empty());
    assert_eq!(emptied_by_owner[0].evidence.erased_sha256, None);
}
