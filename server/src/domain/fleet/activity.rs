//! What the console plots: connections and failed authentications per hour over the last 24
//! hours, registrations per day over the last 30 days, valid certificates by the month of their
//! notAfter over the next 12 months. Pure: the store hands over counts per hour or per day,
//! this fills the periods (a period with nothing is a zero, never missing).

use devid_core::api::{FleetActivity, HourCount, PeriodCount};
use time::{Date, Month, OffsetDateTime};

use crate::timefmt::rfc3339;

pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;
/// Hours, days and months shown.
pub const HOURS: i64 = 24;
pub const DAYS: i64 = 30;
pub const MONTHS: usize = 12;

/// The windows the store reads for `now`: (hours from, days from, expiries from, expiries to),
/// unix seconds, `to` exclusive.
pub fn windows(now: i64) -> (i64, i64, i64, i64) {
    let hour = now.div_euclid(HOUR) * HOUR;
    let day = now.div_euclid(DAY) * DAY;
    let first = month_start(now);
    let end = month_after(first, MONTHS);
    (hour - (HOURS - 1) * HOUR, day - (DAYS - 1) * DAY, now, end)
}

/// Counts read by the store.
#[derive(Debug, Default, Clone)]
pub struct ActivityCounts {
    /// (hour start, connects, failed authentications).
    pub hours: Vec<(i64, i64, i64)>,
    /// (day start, registrations).
    pub registrations: Vec<(i64, i64)>,
    /// (day start of notAfter, certificates).
    pub expiries: Vec<(i64, i64)>,
}

pub fn activity(now: i64, counts: &ActivityCounts) -> FleetActivity {
    let (hours_from, days_from, _, _) = windows(now);
    let hours = (0..HOURS)
        .map(|i| {
            let h = hours_from + i * HOUR;
            let (c, f) = counts
                .hours
                .iter()
                .filter(|r| r.0 == h)
                .fold((0, 0), |(c, f), r| (c + r.1, f + r.2));
            HourCount {
                hour: rfc3339(h),
                connects: c.unsigned_abs(),
                auth_failures: f.unsigned_abs(),
            }
        })
        .collect();
    let registrations = (0..DAYS)
        .map(|i| {
            let d = days_from + i * DAY;
            let n: i64 = counts
                .registrations
                .iter()
                .filter(|r| r.0 == d)
                .map(|r| r.1)
                .sum();
            PeriodCount {
                period: rfc3339(d)[..10].to_string(),
                count: n.unsigned_abs(),
            }
        })
        .collect();
    let first = month_start(now);
    let expiries = (0..MONTHS)
        .map(|i| {
            let (from, to) = (month_after(first, i), month_after(first, i + 1));
            let n: i64 = counts
                .expiries
                .iter()
                .filter(|r| r.0 >= from && r.0 < to)
                .map(|r| r.1)
                .sum();
            PeriodCount {
                period: rfc3339(from)[..7].to_string(),
                count: n.unsigned_abs(),
            }
        })
        .collect();
    FleetActivity {
        hours,
        registrations,
        expiries,
    }
}

/// Unix seconds of the first day of `now`'s month (UTC).
fn month_start(now: i64) -> i64 {
    let d = OffsetDateTime::from_unix_timestamp(now)
        .map(|t| t.date())
        .unwrap_or(Date::MIN);
    start_of(d.year(), d.month())
}

/// The start of the month `n` months after the month starting at `start`.
fn month_after(start: i64, n: usize) -> i64 {
    let d = OffsetDateTime::from_unix_timestamp(start)
        .map(|t| t.date())
        .unwrap_or(Date::MIN);
    let index = d.year() * 12 + (d.month() as i32 - 1) + n as i32;
    let month = Month::try_from((index.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
    start_of(index.div_euclid(12), month)
}

fn start_of(year: i32, month: Month) -> i64 {
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::parse_rfc3339;

    fn at(s: &str) -> i64 {
        parse_rfc3339(s).expect("time")
    }

    #[test]
    fn every_period_is_there_and_counts_land_in_theirs() {
        let now = at("2026-12-07T18:20:00Z");
        let counts = ActivityCounts {
            hours: vec![
                (at("2026-12-07T18:00:00Z"), 5, 1),
                (at("2026-12-06T19:00:00Z"), 2, 0),
                (at("2026-12-06T18:00:00Z"), 9, 9), // outside the 24 hours
            ],
            registrations: vec![
                (at("2026-12-07T00:00:00Z"), 7),
                (at("2026-11-08T00:00:00Z"), 3),
            ],
            expiries: vec![
                (at("2026-12-20T00:00:00Z"), 4),
                (at("2027-01-31T00:00:00Z"), 1),
                (at("2027-11-30T00:00:00Z"), 2),
                (at("2027-12-01T00:00:00Z"), 8), // the 13th month
            ],
        };
        let a = activity(now, &counts);
        assert_eq!(a.hours.len(), 24);
        assert_eq!(a.hours[0].hour, "2026-12-06T19:00:00Z");
        assert_eq!((a.hours[0].connects, a.hours[0].auth_failures), (2, 0));
        assert_eq!(a.hours[23].hour, "2026-12-07T18:00:00Z");
        assert_eq!((a.hours[23].connects, a.hours[23].auth_failures), (5, 1));
        assert_eq!(a.hours.iter().map(|h| h.connects).sum::<u64>(), 7);
        assert_eq!(a.registrations.len(), 30);
        assert_eq!(a.registrations[0].period, "2026-11-08");
        assert_eq!(a.registrations[0].count, 3);
        assert_eq!(a.registrations[29].period, "2026-12-07");
        assert_eq!(a.registrations[29].count, 7);
        assert_eq!(a.expiries.len(), 12);
        assert_eq!(a.expiries[0].period, "2026-12");
        assert_eq!(a.expiries[0].count, 4);
        assert_eq!(a.expiries[1].period, "2027-01");
        assert_eq!(a.expiries[1].count, 1);
        assert_eq!(a.expiries[11].period, "2027-11");
        assert_eq!(a.expiries[11].count, 2);
        let (_, _, from, to) = windows(now);
        assert_eq!((from, to), (now, at("2027-12-01T00:00:00Z")));
    }
}
