use super::*;

fn date(s: &str) -> Date {
    parse_date(s).unwrap()
}

/// A National Day week arranged the way the yearly notices arrange it (an example, not the
/// official 2026 notice): 10-01..10-07 off, Sunday 09-27 and Saturday 10-10 worked.
fn national_day() -> WorkCalendar {
    WorkCalendar::parse(
        r#"
holidays = ["2026-10-01..2026-10-07"]
working_days = ["2026-09-27", "2026-10-10"]
"#,
    )
    .unwrap()
}

#[test]
fn weekends_do_not_count_and_the_filing_day_is_not_the_first() {
    let plain = WorkCalendar::default();
    // Friday 2026-11-27 + 1 working day = Monday 11-30; + 10 = Friday 12-11.
    assert_eq!(
        plain.add_working_days(date("2026-11-27"), 1),
        date("2026-11-30")
    );
    assert_eq!(
        plain.add_working_days(date("2026-11-27"), 10),
        date("2026-12-11")
    );
    assert_eq!(
        plain.add_working_days(date("2026-11-27"), 0),
        date("2026-11-27")
    );
}

#[test]
fn a_deadline_crosses_a_holiday_week_and_an_adjusted_saturday() {
    let cal = national_day();
    assert!(cal.is_working_day(date("2026-09-27")), "adjusted Sunday");
    assert!(!cal.is_working_day(date("2026-10-05")), "holiday Monday");
    assert!(cal.is_working_day(date("2026-10-10")), "adjusted Saturday");
    // Filed Friday 09-25: 09-27 (Sun, worked) 1, 09-28 2, 09-29 3, 09-30 4, holidays,
    // 10-08 5, 10-09 6, 10-10 (Sat, worked) 7, 10-12 8, 10-13 9, 10-14 10.
    assert_eq!(
        cal.add_working_days(date("2026-09-25"), 10),
        date("2026-10-14")
    );
    assert_eq!(
        WorkCalendar::default().add_working_days(date("2026-09-25"), 10),
        date("2026-10-09"),
        "without the calendar the holidays would count"
    );
}

#[test]
fn the_deadline_is_the_end_of_the_due_day_in_china_standard_time() {
    let cal = WorkCalendar::default();
    // 2026-11-30 23:30 CST = 15:30 UTC, a Monday: the day counts as Monday in CST.
    let filed =
        OffsetDateTime::new_utc(date("2026-11-30"), time::Time::from_hms(15, 30, 0).unwrap());
    let filed = filed.unix_timestamp() * 1_000_000;
    assert_eq!(day_of(filed), date("2026-11-30"));
    // 1 working day: Tuesday 12-01 ends at 12-02 00:00 CST = 12-01 16:00 UTC.
    let due = cal.deadline(filed, 1);
    let expected =
        OffsetDateTime::new_utc(date("2026-12-01"), time::Time::from_hms(16, 0, 0).unwrap());
    assert_eq!(due, expected.unix_timestamp() * 1_000_000);
}

#[test]
fn bad_calendar_files_name_the_entry() {
    let err = WorkCalendar::parse(r#"holidays = ["2026-02-30"]"#).unwrap_err();
    assert_eq!(err.key, "holidays[0]");
    let err = WorkCalendar::parse(r#"holidays = ["2026-10-07..2026-10-01"]"#).unwrap_err();
    assert_eq!(err.key, "holidays[0]");
    let err = WorkCalendar::parse(r#"holidays = ["2026-01-01..2026-12-31"]"#).unwrap_err();
    assert_eq!(err.key, "holidays[0]");
    let err = WorkCalendar::parse(
        r#"holidays = ["2026-10-01"]
working_days = ["2026-10-01"]"#,
    )
    .unwrap_err();
    assert_eq!(err.key, "working_days");
    let err = WorkCalendar::parse(r#"holiday = []"#).unwrap_err();
    assert_eq!(err.key, "file");
}

proptest::proptest! {
    /// Whatever the calendar, the deadline day is a working day (for n > 0), later than the
    /// filing day, and exactly n working days lie in between.
    #[test]
    fn the_due_day_is_exactly_n_working_days_later(
        start in 0i64..2000,
        n in 1u32..30,
        holidays in proptest::collection::btree_set(0i64..2100, 0..200),
    ) {
        let base = date("2026-01-01");
        let cal = WorkCalendar {
            holidays: holidays.iter().map(|d| base + Duration::days(*d)).collect(),
            working_days: BTreeSet::new(),
        };
        let from = base + Duration::days(start);
        let due = cal.add_working_days(from, n);
        proptest::prop_assert!(due > from);
        proptest::prop_assert!(cal.is_working_day(due));
        let mut counted = 0;
        let mut day = from;
        while day < due {
            day = day.next_day().unwrap();
            if cal.is_working_day(day) {
                counted += 1;
            }
        }
        proptest::prop_assert_eq!(counted, n);
    }
}
