//! Cron expressions evaluated in an IANA time zone.
//!
//! Expressions have 5 fields (`minute hour day-of-month month day-of-week`), or 6 with a leading
//! seconds field, or are one of the nicknames `@yearly` (`@annually`), `@monthly`, `@weekly`,
//! `@daily` (`@midnight`) and `@hourly`. Field syntax is croner's (Vixie cron plus `L`, `W`, `#`
//! and `?`); a day-of-month and a day-of-week that are both restricted match either, as in Vixie
//! cron. The time zone database is compiled in (chrono-tz), so every machine gives the same
//! answers whatever its `/usr/share/zoneinfo` holds.
//!
//! # Daylight saving: the contract
//!
//! An expression is read in one of two ways, decided by its hour field:
//!
//! - **Wall clock** (the hour field does not match every hour: `30 2 * * *`, `0 */2 * * *`,
//!   `*/15 2 * * *`). Each matching local time runs once:
//!   - a local time that does not exist (spring forward: 02:30 on the last Sunday of March in
//!     Europe/Paris) runs once at the first valid instant after the gap (03:00 local, 01:00 UTC),
//!     even when several matching local times fall inside the gap;
//!   - a local time that occurs twice (fall back: 02:00–03:00 repeats on the last Sunday of
//!     October in Europe/Paris) runs once, at its first occurrence. Kubernetes CronJob runs it
//!     twice (kubernetes#121594).
//! - **Real time** (the hour field matches every hour: `*/30 * * * *`, `*/5 * * * * *`,
//!   `@hourly`). The cadence continues in real time, as in Vixie cron: local times inside a gap
//!   simply do not exist, and the repeated hour runs on both of its occurrences.
//!
//! croner 4 on its own applies the wall-clock rules only to patterns whose second, minute and
//! hour are each one fixed value (`30 2 * * *`); any other pattern gets the real-time rules, so
//! `0 */2 * * *` would skip 02:00 on the spring day and run twice on the fall day. Wall-clock
//! patterns are therefore searched on naive local time here and mapped to instants by the rules
//! above; real-time patterns are searched by croner in the zone itself.
//!
//! All instants are whole seconds, in UTC at this API.

use std::collections::VecDeque;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use time::OffsetDateTime;

/// A parsed cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    expr: String,
    time_zone: String,
    cron: Cron,
    tz: Tz,
    /// The hour field matches every hour: the real-time reading (see the module doc).
    real_time: bool,
}

/// Which field a problem is in, for `file:line:col` errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CronError {
    Schedule(String),
    TimeZone(String),
}

impl std::fmt::Display for CronError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CronError::Schedule(m) | CronError::TimeZone(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CronError {}

/// [`CronSchedule::between`] stops counting after this many instants: 1,000,000 is 11.5 days
/// of an every-second schedule, and counting them costs a fraction of a second once.
pub const MAX_COUNT: u64 = 1_000_000;

/// Vixie cron's nicknames (`@reboot` has no meaning for a schedule and is refused).
const NICKNAMES: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// The longest a daylight-saving gap or repeated range lasts: Pacific/Apia skipped a whole day
/// at the end of 2011. Searches for the edge of one never look further than this.
const MAX_TRANSITION_SECONDS: i64 = 26 * 3600;

/// Checks an IANA time zone name.
pub(crate) fn parse_time_zone(name: &str) -> Result<Tz, CronError> {
    name.parse::<Tz>().map_err(|_| {
        CronError::TimeZone(format!(
            "unknown time zone {name:?}; expected an IANA name such as Europe/Paris"
        ))
    })
}

/// Parses the expression alone (its time zone is checked by [`parse_time_zone`]).
fn parse_expr(expr: &str) -> Result<Cron, CronError> {
    let trimmed = expr.trim();
    let pattern = if trimmed.starts_with('@') {
        NICKNAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(trimmed))
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                let names: Vec<&str> = NICKNAMES.iter().map(|(n, _)| *n).collect();
                CronError::Schedule(format!(
                    "unknown nickname {trimmed:?}; expected one of {}",
                    names.join(", ")
                ))
            })?
    } else {
        trimmed
    };
    let fields = pattern.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(CronError::Schedule(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds \
             field, or a nickname such as @daily; {expr:?} has {fields}"
        )));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(pattern)
        .map_err(|e| CronError::Schedule(format!("invalid cron expression {expr:?}: {e}")))?;
    // A pattern such as `0 0 30 2 *` parses but never matches; croner only finds out after a
    // search of every year up to 5000, which would then happen on every reconcile.
    let epoch = DateTime::<Utc>::UNIX_EPOCH.naive_utc();
    if cron.find_next_occurrence(&epoch, false).is_err() {
        return Err(CronError::Schedule(format!(
            "{expr:?} never matches a date (e.g. 30 February)"
        )));
    }
    Ok(cron)
}

impl CronSchedule {
    pub fn parse(expr: &str, time_zone: &str) -> Result<CronSchedule, CronError> {
        let cron = parse_expr(expr)?;
        let tz = parse_time_zone(time_zone)?;
        let real_time = (0..24).all(|h| cron.pattern.hour_match(h).unwrap_or(false));
        Ok(CronSchedule {
            expr: expr.to_string(),
            time_zone: time_zone.to_string(),
            cron,
            tz,
            real_time,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The calendar day `t` falls on in the schedule's time zone.
    pub fn local_date(&self, t: OffsetDateTime) -> Option<time::Date> {
        use chrono::Datelike;
        let d = DateTime::<Utc>::from_timestamp(t.unix_timestamp(), 0)?
            .with_timezone(&self.tz)
            .date_naive();
        let month = time::Month::try_from(d.month() as u8).ok()?;
        time::Date::from_calendar_date(d.year(), month, d.day() as u8).ok()
    }

    pub fn time_zone(&self) -> &str {
        &self.time_zone
    }

    /// True when the cadence runs in real time through daylight-saving changes (the hour field
    /// matches every hour); false when each matching local time runs once (see the module doc).
    pub fn is_real_time(&self) -> bool {
        self.real_time
    }

    /// The first instant strictly after `t`; `None` when there is none before the year 5000.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let t = DateTime::<Utc>::from_timestamp(t.unix_timestamp(), 0)?;
        let next = if self.real_time {
            self.cron
                .find_next_occurrence(&t.with_timezone(&self.tz), false)
                .ok()?
                .with_timezone(&Utc)
        } else {
            self.next_wall_clock(t)?
        };
        OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
    }

    /// The instants in `(from, to]`, oldest first: at most `limit` of them, the newest ones, and
    /// how many there are in all. The count stops at [`MAX_COUNT`] (a larger count is reported
    /// as `MAX_COUNT`); the newest `limit` instants are exact either way.
    pub fn between(&self, from: OffsetDateTime, to: OffsetDateTime, limit: usize) -> (Vec<OffsetDateTime>, u64) {
        let (newest, count, last) = self.scan(from, to, limit);
        if count < MAX_COUNT {
            return (newest.into(), count);
        }
        // The count ran out before `to`: look again over windows ending at `to`, sized from the
        // density seen so far, growing until they hold `limit` instants or reach `from`.
        let seen = (last.unwrap_or(to) - from).as_seconds_f64().max(1.0);
        let per_instant = seen / MAX_COUNT as f64;
        let mut window = time::Duration::seconds_f64((per_instant * limit.max(1) as f64 * 2.0).max(1.0));
        loop {
            let start = (to - window).max(from);
            let (newest, count, _) = self.scan(start, to, limit);
            if newest.len() >= limit || start == from || count >= MAX_COUNT {
                return (newest.into(), MAX_COUNT);
            }
            window *= 4;
        }
    }

    /// Walks `(from, to]` keeping the newest `limit` instants; returns them, how many were seen
    /// (at most [`MAX_COUNT`]) and the last one seen.
    fn scan(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
    ) -> (VecDeque<OffsetDateTime>, u64, Option<OffsetDateTime>) {
        let mut newest = VecDeque::with_capacity(limit.min(1024));
        let mut count = 0u64;
        let mut t = from;
        let mut last = None;
        while count < MAX_COUNT {
            let Some(n) = self.next_after(t).filter(|n| *n <= to) else {
                break;
            };
            count += 1;
            if limit > 0 {
                if newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(n);
            }
            last = Some(n);
            t = n;
        }
        (newest, count, last)
    }

    /// The wall-clock reading: the next matching local time whose instant (by the rules of the
    /// module doc) is after `t`.
    fn next_wall_clock(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = t.with_timezone(&self.tz).naive_local();
        if let LocalResult::Ambiguous(_, later) = self.tz.from_local_datetime(&wall) {
            if later == t {
                // On the second occurrence of a repeated range every local time left in it
                // maps to its first occurrence, which is already past: resume after the range.
                let end = self.first_wall(wall, |w| {
                    !matches!(self.tz.from_local_datetime(w), LocalResult::Ambiguous(..))
                })?;
                wall = end - TimeDelta::seconds(1);
            }
        }
        // By the argument above one step always lands after `t`; the bound only guards it.
        for _ in 0..4 {
            let w = self.cron.find_next_occurrence(&wall, false).ok()?;
            let instant = match self.tz.from_local_datetime(&w) {
                LocalResult::Single(x) => x,
                LocalResult::Ambiguous(earlier, _) => earlier,
                LocalResult::None => {
                    let after = self.first_wall(w, |w| !matches!(self.tz.from_local_datetime(w), LocalResult::None))?;
                    self.tz.from_local_datetime(&after).earliest()?
                }
            }
            .with_timezone(&Utc);
            if instant > t {
                return Some(instant);
            }
            wall = w;
        }
        None
    }

    /// The first local time at or after `from` for which `edge` holds, where `edge` is false up
    /// to the end of one daylight-saving gap or repeated range and true after it (binary search
    /// to the second).
    fn first_wall(&self, from: NaiveDateTime, edge: impl Fn(&NaiveDateTime) -> bool) -> Option<NaiveDateTime> {
        let (mut lo, mut hi) = (0i64, MAX_TRANSITION_SECONDS);
        let at = |s: i64| from.checked_add_signed(TimeDelta::seconds(s));
        if !edge(&at(hi)?) {
            return None;
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if edge(&at(mid)?) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        at(lo)
    }
}
