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
mod tests;
