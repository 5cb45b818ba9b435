//! The sharing decision against random histories of publish / grant / time passing: a
//! CONDITIONAL item never reaches a party without an active grant for it (or a standing
//! `open_to`), a NOT_SHARED item never reaches anyone, and a granted item does reach its
//! consumer while the grant holds.

use proptest::prelude::*;
use uuid::Uuid;

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
