//! Access requests at one gateway with a controlled clock: deadlines over a holiday calendar,
//! the OVERDUE flag and its filter, and the refusals that change nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

use super::*;
use crate::domain::{Federation, PartyInfo};
use crate::records::service::catalog::entry_stored;
use crate::records::{DataItem, Feed};
use crate::store::sqlite::SqliteStore;
use crate::store::{Idempotency, Store, Write};
use crate::workdays::{Deadlines, WorkCalendar};

fn federation() -> Federation {
    let p = |id: &str| PartyInfo {
        id: id.into(),
        display_name: id.into(),
        province: String::new(),
        division_code: String::new(),
        suspended: false,
    };
    Federation::new(vec![p("zone"), p("changxing"), p("guangde")]).unwrap()
}

/// Microseconds since the epoch of a wall-clock time in China Standard Time.
fn cst(y: i32, m: u8, d: u8, hour: u8, minute: u8) -> i64 {
    let date = Date::from_calendar_date(y, Month::try_from(m).unwrap(), d).unwrap();
    let offset = UtcOffset::from_hms(8, 0, 0).unwrap();
    let t = OffsetDateTime::new_in_offset(date, Time::from_hms(hour, minute, 0).unwrap(), offset);
    t.unix_timestamp() * 1_000_000
}

fn item(field: &str, class: SharingClass) -> DataItem {
    DataItem {
        field: field.into(),
        data_type: "string".into(),
        description: String::new(),
        sharing_class: class,
        legal_basis: if class == SharingClass::NotShared {
            "《个人信息保护法》".into()
        } else {
            String::new()
        },
        open_to: Vec::new(),
    }
}

struct Guangde {
    records: Records,
    clock: Arc<AtomicI64>,
    entry: String,
    _dir: tempfile::TempDir,
}

/// Guangde's gateway holding a replica of Changxing's catalog entry, with a National Day week
/// in its holiday calendar and a clock the test sets.
async fn guangde() -> Guangde {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let entry = CatalogEntry {
        id: Uuid::now_v7(),
        owner: "changxing".into(),
        resource_code: "CX-1".into(),
        display_name: "长兴县招商项目信息".into(),
        summary: String::new(),
        record_kind: Some(RecordKind::Project),
        items: vec![
            item("display_name", SharingClass::Unconditional),
            item("contact.phone", SharingClass::Conditional),
            item("investor.credit_code", SharingClass::NotShared),
        ],
        sharing_class: SharingClass::Unconditional,
        legal_basis: String::new(),
        conditions: String::new(),
        update_cycle: String::new(),
        revision: 1,
        create_time: 0,
        update_time: 0,
    };
    store
        .write(Write {
            resend: None,
            audit: None,
            record: entry_stored(&entry).unwrap(),
            expected_revision: None,
            also_create: vec![],
            unique: None,
            key: Idempotency {
                party: "changxing".into(),
                request_id: Uuid::now_v7().to_string(),
                fingerprint: vec![],
            },
            time: 0,
        })
        .await
        .unwrap();
    let calendar = WorkCalendar::parse(
        r#"holidays = ["2026-10-01..2026-10-07"]
working_days = ["2026-09-27", "2026-10-10"]"#,
    )
    .unwrap();
    let clock = Arc::new(AtomicI64::new(0));
    let now = clock.clone();
    let records = Records::new(
        store.clone(),
        Feed::new(store),
        "guangde".into(),
        crate::domain::Members::fixed(federation()),
    )
    .with_clock(Arc::new(move || now.load(Ordering::SeqCst)))
    .with_deadlines(Deadlines {
        calendar: Arc::new(calendar),
        answer_working_days: 10,
    });
    let entry = ResourceName::new("changxing", RecordKind::CatalogEntry, entry.id).to_string();
    Guangde {
        records,
        clock,
        entry,
        _dir: dir,
    }
}

fn meta() -> WriteMeta {
    WriteMeta {
        request_id: Uuid::now_v7().to_string(),
        fingerprint: vec![],
        audit: None,
    }
}

fn ask(entry: &str, items: &[&str]) -> AccessRequest {
    AccessRequest {
        id: Uuid::nil(),
        owner: String::new(),
        provider: String::new(),
        entry: entry.into(),
        items: items.iter().map(|s| s.to_string()).collect(),
        purpose: "联合招商对接".into(),
        scenario: String::new(),
        validity_days: 30,
        answer_by: 0,
        granted_at_once: false,
        withdraw_time: None,
        escalate_time: None,
        escalation_reason: String::new(),
        deletion: None,
        revision: 0,
        create_time: 0,
        update_time: 0,
    }
}

async fn overdue_names(g: &Guangde) -> usize {
    let filter = AccessFilter {
        overdue_only: true,
        ..AccessFilter::default()
    };
    g.records
        .list_access_requests(&filter, &Page::default())
        .await
        .unwrap()
        .0
        .len()
}

#[tokio::test]
async fn an_unanswered_request_turns_overdue_after_ten_working_days_across_a_holiday() {
    let g = guangde().await;
    // Filed Friday 2026-09-25 10:00 CST. Ten working days: Sun 09-27 (adjusted), 09-28..09-30,
    // the holiday week off, 10-08, 10-09, Sat 10-10 (adjusted), 10-12..10-14.
    g.clock.store(cst(2026, 9, 25, 10, 0), Ordering::SeqCst);
    let view = g
        .records
        .create_access_request(ask(&g.entry, &["contact.phone"]), meta(), Violations::new())
        .await
        .unwrap();
    assert_eq!(view.request.answer_by, cst(2026, 10, 15, 0, 0));
    assert_eq!(view.request.provider, "changxing");
    assert!(!view.request.granted_at_once);
    let name = ResourceName::new("guangde", RecordKind::AccessRequest, view.request.id);

    g.clock.store(cst(2026, 10, 14, 23, 59), Ordering::SeqCst);
    let o = g
        .records
        .get_access_request(&name.to_string())
        .await
        .unwrap()
        .outcome;
    assert_eq!((o.state, o.overdue), (AccessState::Requested, false));
    assert_eq!(overdue_names(&g).await, 0);

    g.clock.store(cst(2026, 10, 15, 0, 0), Ordering::SeqCst);
    let o = g
        .records
        .get_access_request(&name.to_string())
        .await
        .unwrap()
        .outcome;
    assert_eq!((o.state, o.overdue), (AccessState::Requested, true));
    assert_eq!(overdue_names(&g).await, 1);
    assert_eq!(
        g.records.count_overdue_access_requests().await.unwrap(),
        (0, 1),
        "guangde waits for changxing's answer"
    );

    // Overdue, it may be escalated to the coordinating party; the escalation is kept.
    let escalated = g
        .records
        .escalate_access_request(&name.to_string(), "逾期未答复", meta(), Violations::new())
        .await
        .unwrap();
    assert_eq!(escalated.request.escalation_reason, "逾期未答复");
    assert_eq!(
        escalated.request.escalate_time,
        Some(cst(2026, 10, 15, 0, 0))
    );

    // Withdrawn, it is no longer overdue.
    let o = g
        .records
        .withdraw_access_request(&name.to_string(), meta(), Violations::new())
        .await
        .unwrap()
        .outcome;
    assert_eq!((o.state, o.overdue), (AccessState::Withdrawn, false));
    assert_eq!(overdue_names(&g).await, 0);
}

#[tokio::test]
async fn unconditional_items_are_granted_at_once_and_refusals_write_nothing() {
    let g = guangde().await;
    g.clock.store(cst(2026, 11, 2, 9, 0), Ordering::SeqCst);
    let view = g
        .records
        .create_access_request(ask(&g.entry, &["display_name"]), meta(), Violations::new())
        .await
        .unwrap();
    assert!(view.request.granted_at_once);
    assert_eq!(view.outcome.state, AccessState::Approved);
    assert_eq!(view.outcome.granted, ["display_name"]);

    let not_shared = g
        .records
        .create_access_request(
            ask(&g.entry, &["contact.phone", "investor.credit_code"]),
            meta(),
            Violations::new(),
        )
        .await
        .unwrap_err();
    match not_shared {
        RecordError::Precondition { reason, message } => {
            assert_eq!(reason, "NOT_SHARED");
            assert!(message.contains("《个人信息保护法》"), "{message}");
        }
        other => panic!("expected NOT_SHARED, got {other:?}"),
    }
    let unknown = g
        .records
        .create_access_request(ask(&g.entry, &["contact.email"]), meta(), Violations::new())
        .await
        .unwrap_err();
    match unknown {
        RecordError::Invalid(v) => {
            let fields: Vec<_> = v.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, ["access_request.items[0]"]);
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    let all = g
        .records
        .list_access_requests(&AccessFilter::default(), &Page::default())
        .await
        .unwrap()
        .0;
    assert_eq!(all.len(), 1, "only the granted request was written");
}
