//! Working-day deadlines. Under 政务数据共享条例 a provider answers a conditional access request
//! within a number of working days (工作日), not calendar days: Saturdays, Sundays and the
//! statutory holidays the State Council announces each year do not count, and the adjusted
//! working days (调休, a Saturday or Sunday worked in exchange for a longer holiday) do.
//!
//! [`WorkCalendar`] holds those exceptions, read from a calendar file the operator keeps
//! (holidays and adjusted working days are published yearly, so they are configuration, never
//! code). Days are dates in China Standard Time (UTC+8), which every party shares.
//!
//! A calendar file (TOML; the dates here are an example, copy the year's official notice):
//!
//! ```toml
//! # 国务院办公厅关于部分节假日安排的通知
//! holidays = ["2026-01-01", "2026-10-01..2026-10-07"]
//! working_days = ["2026-09-27", "2026-10-10"]
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use time::{Date, Duration, Month, OffsetDateTime, UtcOffset, Weekday};

/// China Standard Time, in which working days are counted.
const CST: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => panic!("UTC+8 is a valid offset"),
};

/// Longest span one `from..to` entry may cover (a holiday is never longer).
const MAX_SPAN_DAYS: i64 = 31;

/// A calendar file that cannot be used, naming the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CalendarError {
    /// The entry, e.g. `holidays[3]`, or `file` for the file as a whole.
    pub key: String,
    pub message: String,
}

/// Which days are working days: Monday to Friday, except statutory holidays, plus adjusted
/// working days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkCalendar {
    holidays: BTreeSet<Date>,
    working_days: BTreeSet<Date>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    working_days: Vec<String>,
}

impl WorkCalendar {
    /// Reads a calendar file.
    pub fn load(path: &Path) -> Result<Self, CalendarError> {
        let text = std::fs::read_to_string(path).map_err(|e| CalendarError {
            key: "file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Parses a calendar file's text. A day may not be both a holiday and a working day.
    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let raw: RawCalendar = toml::from_str(text).map_err(|e| CalendarError {
            key: "file".into(),
            message: e.message().to_string(),
        })?;
        let holidays = days_of("holidays", &raw.holidays)?;
        let working_days = days_of("working_days", &raw.working_days)?;
        if let Some(both) = holidays.intersection(&working_days).next() {
            return Err(CalendarError {
                key: "working_days".into(),
                message: format!("{both} is listed as a holiday too"),
            });
        }
        Ok(WorkCalendar {
            holidays,
            working_days,
        })
    }

    /// Whether `day` is a working day.
    pub fn is_working_day(&self, day: Date) -> bool {
        if self.working_days.contains(&day) {
            return true;
        }
        !self.holidays.contains(&day)
            && !matches!(day.weekday(), Weekday::Saturday | Weekday::Sunday)
    }

    /// The `n`-th working day after `day` (`day` itself does not count; `n` = 0 is `day`).
    pub fn add_working_days(&self, day: Date, n: u32) -> Date {
        let mut current = day;
        let mut left = n;
        while left > 0 {
            current = current.next_day().unwrap_or(current);
            if self.is_working_day(current) {
                left -= 1;
            }
        }
        current
    }

    /// The deadline of an answer due within `n` working days of `filed` (microseconds since the
    /// epoch): the end of the `n`-th working day after the day of filing, China Standard Time,
    /// as microseconds since the epoch (the first instant past the deadline).
    pub fn deadline(&self, filed: i64, n: u32) -> i64 {
        let filed_day = day_of(filed);
        let due = self.add_working_days(filed_day, n);
        let next_midnight = due
            .next_day()
            .unwrap_or(due)
            .midnight()
            .assume_offset(CST)
            .unix_timestamp();
        next_midnight * 1_000_000
    }
}

/// Working days a provider has to answer a conditional access request when the config says
/// nothing (several provinces' rules use ten).
pub const DEFAULT_ANSWER_WORKING_DAYS: u32 = 10;

/// When answers are due: within a number of working days of filing, over a calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    pub calendar: std::sync::Arc<WorkCalendar>,
    pub answer_working_days: u32,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            calendar: Default::default(),
            answer_working_days: DEFAULT_ANSWER_WORKING_DAYS,
        }
    }
}

impl Deadlines {
    /// When the answer to a request filed at `filed` is due (microseconds since the epoch).
    pub fn answer_by(&self, filed: i64) -> i64 {
        self.calendar.deadline(filed, self.answer_working_days)
    }
}

/// The date in China Standard Time of an instant (microseconds since the epoch).
pub fn day_of(micros: i64) -> Date {
    let seconds = micros.div_euclid(1_000_000);
    OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(CST)
        .date()
}

/// Every day an entry list names: `YYYY-MM-DD` or `YYYY-MM-DD..YYYY-MM-DD` (both ends in).
fn days_of(key: &str, entries: &[String]) -> Result<BTreeSet<Date>, CalendarError> {
    let mut days = BTreeSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let bad = |message: String| CalendarError {
            key: format!("{key}[{i}]"),
            message,
        };
        let (from, to) = match entry.split_once("..") {
            Some((from, to)) => (parse_date(from).map_err(bad)?, parse_date(to).map_err(bad)?),
            None => {
                let day = parse_date(entry).map_err(bad)?;
                (day, day)
            }
        };
        if to < from || to - from > Duration::days(MAX_SPAN_DAYS) {
            return Err(bad(format!(
                "`{entry}` is not a span of 1 to {} days",
                MAX_SPAN_DAYS + 1
            )));
        }
        let mut day = from;
        loop {
            days.insert(day);
            if day == to {
                break;
            }
            day = day.next_day().unwrap_or(to);
        }
    }
    Ok(days)
}

/// A `YYYY-MM-DD` date.
fn parse_date(s: &str) -> Result<Date, String> {
    let bad = || format!("`{s}` is not a date like 2026-10-01");
    let mut parts = s.trim().splitn(3, '-');
    let mut next = || parts.next().and_then(|p| p.parse::<i32>().ok());
    let (Some(y), Some(m), Some(d)) = (next(), next(), next()) else {
        return Err(bad());
    };
    let month = u8::try_from(m)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let day = u8::try_from(d).map_err(|_| bad())?;
    Date::from_calendar_date(y, month, day).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
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
}
