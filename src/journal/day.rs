//! Calendar days and timestamps in UTC, as the journal names its files and writes its
//! times: `2024-05-01` and `2024-05-01T10:00:00Z`.
//!
//! The journal needs only whole days and seconds, so this is the proleptic Gregorian
//! calendar over Unix time (Howard Hinnant's `days_from_civil` / `civil_from_days`), not a
//! date library. Parsers are strict (exact digits and separators) and never panic.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECS_PER_DAY: u64 = 86_400;

/// A calendar day in UTC, counted from 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(u32);

impl Day {
    /// The day `days` days after 1970-01-01.
    pub fn from_days(days: u32) -> Day {
        Day(days)
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> u32 {
        self.0
    }

    /// The day a Unix time (seconds) falls on.
    pub fn of_secs(secs: u64) -> Day {
        Day(u32::try_from(secs / SECS_PER_DAY).unwrap_or(u32::MAX))
    }

    /// The day a time falls on (times before 1970 count as 1970-01-01).
    pub fn of(time: SystemTime) -> Day {
        Day::of_secs(unix_secs(time))
    }

    /// Today, in UTC.
    pub fn today() -> Day {
        Day::of(SystemTime::now())
    }

    /// The day `n` days before this one (1970-01-01 at the earliest).
    pub fn minus(self, n: u32) -> Day {
        Day(self.0.saturating_sub(n))
    }

    /// The day after this one.
    pub fn next(self) -> Day {
        Day(self.0.saturating_add(1))
    }

    /// Parse `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let year = digits(s.get(0..4)?)?;
        let month = digits(s.get(5..7)?)?;
        let day = digits(s.get(8..10)?)?;
        if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month)
        {
            return None;
        }
        let days = days_from_civil(i64::from(year), month, day);
        u32::try_from(days).ok().map(Day)
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(i64::from(self.0))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl serde::Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Seconds since the Unix epoch (0 for earlier times).
pub fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The time `secs` seconds after the Unix epoch.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Format Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_timestamp(secs: u64) -> String {
    let day = Day::of_secs(secs);
    let rest = secs % SECS_PER_DAY;
    format!(
        "{day}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Parse `YYYY-MM-DDTHH:MM:SSZ` into Unix seconds.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || b.get(19) != Some(&b'Z')
    {
        return None;
    }
    let day = Day::parse(s.get(0..10)?)?;
    let h = digits(s.get(11..13)?)?;
    let m = digits(s.get(14..16)?)?;
    let sec = digits(s.get(17..19)?)?;
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(
        u64::from(day.days()) * SECS_PER_DAY
            + u64::from(h) * 3600
            + u64::from(m) * 60
            + u64::from(sec),
    )
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (month 1..=12, day 1..=31).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (month 1..=12, day 1..=31).
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_text() {
        assert_eq!(Day::from_days(0).to_string(), "1970-01-01");
        assert_eq!(
            Day::parse("2000-02-29").map(|d| d.to_string()).as_deref(),
            Some("2000-02-29")
        );
        for d in [0, 59, 60, 365, 10_957, 19_844, 20_000, 60_000] {
            let day = Day::from_days(d);
            assert_eq!(Day::parse(&day.to_string()), Some(day), "{day}");
        }
    }

    #[test]
    fn malformed_days_are_refused() {
        for s in [
            "",
            "2024-5-01",
            "2024-02-30",
            "2023-02-29",
            "1969-12-31",
            "2024-13-01",
            "2024-00-10",
            "2024/05/01",
            "２０２４-05-01",
            "2024-05-01 ",
        ] {
            assert_eq!(Day::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let secs = 1_714_563_845; // 2024-05-01T11:44:05Z
        assert_eq!(format_timestamp(secs), "2024-05-01T11:44:05Z");
        assert_eq!(parse_timestamp("2024-05-01T11:44:05Z"), Some(secs));
        assert_eq!(parse_timestamp("2024-05-01T24:00:00Z"), None);
        assert_eq!(parse_timestamp("2024-05-01 11:44:05Z"), None);
    }
}
