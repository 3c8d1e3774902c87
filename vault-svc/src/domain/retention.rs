//! Rules of retention classes (crypto-deletion by time): what a class may be called, how long it
//! keeps data, the period one of its keys covers (a calendar day or month, in UTC), when a period's
//! key is due for destruction, and the associated data a period key is sealed with. No I/O.
//!
//! A period's key is destroyed once the *whole* period is past retention: a message written on the
//! last day of a month lives at least `retention_days`, one written on the first day at most a
//! period longer.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use kit::ApiError;

use crate::domain::crypto::Aad;

/// Longest retention a class may have (about a hundred years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// A retention class's name: `[a-z][a-z0-9_-]{0,63}`, e.g. `messages`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassName(String);

impl ClassName {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        Self::valid(raw).map(|()| Self(raw.to_owned())).ok_or_else(|| Self::refusal("name"))
    }

    /// The same rule for a request field named otherwise (transit's `retention_class`).
    pub fn parse_field(field: &str, raw: &str) -> Result<Self, ApiError> {
        Self::parse(raw).map_err(|_| Self::refusal(field))
    }

    fn refusal(field: &str) -> ApiError {
        ApiError::invalid_field(field, "[a-z][a-z0-9_-]{0,63}")
    }

    fn valid(raw: &str) -> Option<()> {
        let mut b = raw.bytes();
        let ok = matches!(b.next(), Some(c) if c.is_ascii_lowercase())
            && raw.len() <= 64
            && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        ok.then_some(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Refuses a retention outside 1–[`MAX_RETENTION_DAYS`] days.
pub fn check_retention_days(days: u32) -> Result<u32, ApiError> {
    if (1..=MAX_RETENTION_DAYS).contains(&days) {
        Ok(days)
    } else {
        Err(ApiError::invalid_field("retention_days", "1–36500"))
    }
}

/// What one key of a class covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// One period: its label (`2026-12`, `2026-12-24`) and its bounds, `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub label: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// A stored name back.
    pub fn from_stored(name: &str) -> Option<Self> {
        match name {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            _ => None,
        }
    }

    /// The period `at` falls in.
    pub fn containing(self, at: DateTime<Utc>) -> Window {
        let day = at.date_naive();
        let (start, end, label) = match self {
            Self::Day => (day, day + Duration::days(1), day.format("%Y-%m-%d").to_string()),
            Self::Month => {
                let first = day.with_day(1).unwrap_or(day);
                (first, first_of_next_month(first), first.format("%Y-%m").to_string())
            }
        };
        Window { label, start: midnight(start), end: midnight(end) }
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

fn first_of_next_month(first: NaiveDate) -> NaiveDate {
    let (year, month) = if first.month() == 12 { (first.year() + 1, 1) } else { (first.year(), first.month() + 1) };
    // Day 1 of a month within chrono's range always exists; the fallback is never taken.
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(first)
}

/// The latest period end whose key is due for destruction at `now`: a period that ended at or
/// before this instant is wholly past `retention_days`.
pub fn destroy_ended_by(now: DateTime<Utc>, retention_days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(retention_days))
}

/// Associated data of period key number `number` of `class`, sealed by a tenant key: a sealed key
/// copied to another tenant, class or row does not open. The period's label and bounds are not
/// bound: the number names the row, and the row says which period it covers.
pub fn period_key_aad(tenant: uuid::Uuid, class: &str, number: u32) -> Aad {
    Aad::new("strongroom.vault.period-key")
        .with("tenant", tenant.as_bytes())
        .with("class", class.as_bytes())
        .with("number", &number.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("time")
    }

    #[test]
    fn class_names() {
        for good in ["a", "messages", "chat_logs-2", &"a".repeat(64)] {
            assert!(ClassName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Messages", "1x", "-x", "a.b", "a b", "é", &"a".repeat(65)] {
            assert_eq!(ClassName::parse(bad).expect_err(bad).message, "name: [a-z][a-z0-9_-]{0,63}", "{bad}");
        }
        let e = ClassName::parse_field("retention_class", "X").expect_err("upper case");
        assert_eq!(e.message, "retention_class: [a-z][a-z0-9_-]{0,63}");
    }

    #[test]
    fn retention_is_one_day_to_a_hundred_years() {
        assert_eq!(check_retention_days(1).expect("one"), 1);
        assert_eq!(check_retention_days(36_500).expect("most"), 36_500);
        assert!(check_retention_days(0).is_err());
        assert_eq!(check_retention_days(36_501).expect_err("long").message, "retention_days: 1–36500");
    }

    #[test]
    fn a_month_runs_from_its_first_midnight_to_the_next_months() {
        let w = Period::Month.containing(at(2026, 12, 24, 18));
        assert_eq!(w.label, "2026-12");
        assert_eq!((w.start, w.end), (at(2026, 12, 1, 0), at(2027, 1, 1, 0)));
        let feb = Period::Month.containing(at(2028, 2, 29, 23));
        assert_eq!(feb.label, "2028-02");
        assert_eq!(feb.end - feb.start, Duration::days(29));
        // The first instant of a month belongs to it, the last instant of the previous one not.
        let first = at(2026, 3, 1, 0);
        assert_eq!(Period::Month.containing(first).label, "2026-03");
        assert_eq!(Period::Month.containing(first - Duration::nanoseconds(1)).label, "2026-02");
    }

    #[test]
    fn a_day_runs_from_midnight_to_midnight_in_utc() {
        let w = Period::Day.containing(at(2026, 12, 31, 23));
        assert_eq!(w.label, "2026-12-31");
        assert_eq!(w.end - w.start, Duration::days(1));
        assert_eq!(Period::Day.containing(w.end).label, "2027-01-01");
        assert_eq!(Period::Day.containing(w.end - Duration::nanoseconds(1)).label, "2026-12-31");
    }

    #[test]
    fn periods_round_trip_through_their_stored_names() {
        for p in [Period::Day, Period::Month] {
            assert_eq!(Period::from_stored(p.as_str()), Some(p));
        }
        assert_eq!(Period::from_stored("week"), None);
    }

    #[test]
    fn a_key_is_due_once_its_whole_period_is_past_retention() {
        let december = Period::Month.containing(at(2024, 12, 10, 12));
        let due = |now| december.end <= destroy_ended_by(now, 730);
        // Ended 2025-01-01; 730 days later is 2027-01-01 (2026 is no leap year).
        let deadline = december.end + Duration::days(730);
        assert_eq!(deadline, at(2027, 1, 1, 0));
        assert!(!due(deadline - Duration::seconds(1)));
        assert!(due(deadline));
        // Data written on the period's first day is kept the period longer, never shorter.
        assert!(!due(december.start + Duration::days(730)));
    }

    #[test]
    fn a_sealed_period_key_is_bound_to_tenant_class_and_number() {
        let t = uuid::Uuid::from_u128(1);
        let aad = period_key_aad(t, "messages", 1);
        assert_eq!(aad.bytes(), period_key_aad(t, "messages", 1).bytes());
        assert_ne!(aad.bytes(), period_key_aad(uuid::Uuid::from_u128(2), "messages", 1).bytes());
        assert_ne!(aad.bytes(), period_key_aad(t, "logs", 1).bytes());
        assert_ne!(aad.bytes(), period_key_aad(t, "messages", 2).bytes());
    }
}
