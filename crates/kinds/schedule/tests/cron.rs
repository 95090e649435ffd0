//! Cron expressions in time zones: parsing, and the daylight-saving contract of `cron.rs`.

mod fixtures;

use fixtures::{at, plus};
use steward_schedule::cron::MAX_COUNT;
use steward_schedule::{CronError, CronSchedule};
use time::OffsetDateTime;

fn cron(expr: &str, tz: &str) -> CronSchedule {
    CronSchedule::parse(expr, tz).unwrap_or_else(|e| panic!("{expr} in {tz}: {e}"))
}

/// The first `n` instants after `from`, as RFC 3339 UTC.
fn next_n(c: &CronSchedule, from: OffsetDateTime, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = from;
    for _ in 0..n {
        t = c.next_after(t).expect("a next instant");
        out.push(steward_core::rfc3339(t));
    }
    out
}

fn schedule_error(expr: &str) -> String {
    match CronSchedule::parse(expr, "UTC") {
        Err(CronError::Schedule(m)) => m,
        other => panic!("{expr}: expected a schedule error, got {other:?}"),
    }
}

#[test]
fn five_fields_six_with_leading_seconds_and_nicknames() {
    let t = at("2025-06-01T10:00:00Z");
    assert_eq!(next_n(&cron("15 3 * * *", "UTC"), t, 1), ["2025-06-02T03:15:00Z"]);
    assert_eq!(
        next_n(&cron("*/20 * * * * *", "UTC"), t, 2),
        ["2025-06-01T10:00:20Z", "2025-06-01T10:00:40Z"]
    );
    for (nick, next) in [
        ("@yearly", "2026-01-01T00:00:00Z"),
        ("@annually", "2026-01-01T00:00:00Z"),
        ("@monthly", "2025-07-01T00:00:00Z"),
        ("@weekly", "2025-06-08T00:00:00Z"),
        ("@daily", "2025-06-02T00:00:00Z"),
        ("@midnight", "2025-06-02T00:00:00Z"),
        ("@hourly", "2025-06-01T11:00:00Z"),
    ] {
        assert_eq!(next_n(&cron(nick, "UTC"), t, 1), [next], "{nick}");
    }
    // Vixie cron: a restricted day-of-month and day-of-week match either.
    assert_eq!(
        next_n(&cron("0 0 13 * 5", "UTC"), t, 2),
        ["2025-06-06T00:00:00Z", "2025-06-13T00:00:00Z"]
    );
}

#[test]
fn anything_else_is_refused_with_a_clear_message() {
    assert!(
        schedule_error("0 2 * *").contains("expected 5 fields"),
        "{}",
        schedule_error("0 2 * *")
    );
    assert!(schedule_error("0 0 2 * * * 2030").contains("has 7"));
    assert!(schedule_error("@reboot").contains("unknown nickname \"@reboot\"; expected one of @yearly"));
    assert!(schedule_error("61 * * * *").contains("invalid cron expression \"61 * * * *\""));
    assert!(schedule_error("0 0 30 2 *").contains("never matches"));
    assert_eq!(
        CronSchedule::parse("0 2 * * *", "Europe/Pariss").unwrap_err(),
        CronError::TimeZone("unknown time zone \"Europe/Pariss\"; expected an IANA name such as Europe/Paris".into())
    );
}

#[test]
fn the_hour_field_decides_the_reading() {
    for e in [
        "*/30 * * * *",
        "*/5 * * * * *",
        "@hourly",
        "0 0-23 * * *",
        "15 */1 * * *",
    ] {
        assert!(cron(e, "UTC").is_real_time(), "{e}");
    }
    for e in ["30 2 * * *", "0 */2 * * *", "*/15 2 * * *", "30 2,14 * * *", "@daily"] {
        assert!(!cron(e, "UTC").is_real_time(), "{e}");
    }
}

// Europe/Paris, 2025: spring forward on 30 March at 01:00 UTC (02:00 CET -> 03:00 CEST), fall
// back on 26 October at 01:00 UTC (03:00 CEST -> 02:00 CET).

#[test]
fn spring_forward_a_skipped_local_time_runs_once_right_after_the_gap() {
    let paris = |e| cron(e, "Europe/Paris");
    let from = at("2025-03-29T12:00:00Z");
    // 02:30 does not exist on the 30th: it runs at 03:00 CEST (01:00 UTC), then 02:30 CEST.
    assert_eq!(
        next_n(&paris("30 2 * * *"), from, 3),
        ["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z", "2025-04-01T00:30:00Z"]
    );
    // Four matching local times fall in the gap: one run.
    assert_eq!(
        next_n(&paris("*/15 2 * * *"), from, 3),
        ["2025-03-30T01:00:00Z", "2025-03-31T00:00:00Z", "2025-03-31T00:15:00Z"]
    );
    // Every other hour: 02:00 becomes 03:00 CEST, then 04:00 CEST as usual.
    assert_eq!(
        next_n(&paris("0 */2 * * *"), at("2025-03-29T22:30:00Z"), 3),
        ["2025-03-29T23:00:00Z", "2025-03-30T01:00:00Z", "2025-03-30T02:00:00Z"]
    );
}

#[test]
fn fall_back_a_repeated_local_time_runs_once_at_its_first_occurrence() {
    let paris = |e| cron(e, "Europe/Paris");
    let from = at("2025-10-25T12:00:00Z");
    assert_eq!(
        next_n(&paris("30 2 * * *"), from, 2),
        ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"]
    );
    assert_eq!(
        next_n(&paris("*/15 2 * * *"), from, 5),
        [
            "2025-10-26T00:00:00Z",
            "2025-10-26T00:15:00Z",
            "2025-10-26T00:30:00Z",
            "2025-10-26T00:45:00Z",
            "2025-10-27T01:00:00Z"
        ]
    );
    assert_eq!(
        next_n(&paris("0 */2 * * *"), at("2025-10-25T21:30:00Z"), 3),
        ["2025-10-25T22:00:00Z", "2025-10-26T00:00:00Z", "2025-10-26T03:00:00Z"]
    );
    // Asked from inside the second occurrence (02:10 CET), the rest of the repeated hour is
    // already past: the next run is the next day's.
    assert_eq!(
        next_n(&paris("*/15 2 * * *"), at("2025-10-26T01:10:00Z"), 1),
        ["2025-10-27T01:00:00Z"]
    );
    // From inside the first occurrence, the first occurrence continues.
    assert_eq!(
        next_n(&paris("*/15 2 * * *"), at("2025-10-26T00:10:00Z"), 1),
        ["2025-10-26T00:15:00Z"]
    );
}

#[test]
fn hourly_and_faster_cadences_keep_real_time_through_both_changes() {
    let c = cron("*/30 * * * *", "Europe/Paris");
    // Spring: 01:30 CET, then 03:00 CEST — thirty minutes later in real time.
    assert_eq!(
        next_n(&c, at("2025-03-30T00:00:00Z"), 4),
        [
            "2025-03-30T00:30:00Z",
            "2025-03-30T01:00:00Z",
            "2025-03-30T01:30:00Z",
            "2025-03-30T02:00:00Z"
        ]
    );
    // Fall: the repeated hour runs on both of its occurrences.
    assert_eq!(
        next_n(&c, at("2025-10-25T23:50:00Z"), 6),
        [
            "2025-10-26T00:00:00Z",
            "2025-10-26T00:30:00Z",
            "2025-10-26T01:00:00Z",
            "2025-10-26T01:30:00Z",
            "2025-10-26T02:00:00Z",
            "2025-10-26T02:30:00Z"
        ]
    );
    assert_eq!(next_n(&c, at("2025-10-26T01:10:00Z"), 1), ["2025-10-26T01:30:00Z"]);
    let (_, count) = c.between(at("2025-10-25T22:00:00Z"), at("2025-10-26T23:00:00Z"), 0);
    assert_eq!(count, 50, "a 25-hour day has 50 half hours");
}

#[test]
fn what_croner_does_by_itself_and_why_it_is_not_enough() {
    use chrono::TimeZone as _;
    use std::str::FromStr as _;
    let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let every_other_hour = croner::Cron::from_str("0 */2 * * *").unwrap();
    let from = paris.with_ymd_and_hms(2025, 10, 26, 1, 0, 0).unwrap();
    let runs: Vec<i64> = every_other_hour
        .iter_after(from)
        .take(2)
        .map(|t| t.timestamp())
        .collect();
    // croner alone runs 02:00 on both occurrences (00:00 and 01:00 UTC) ...
    assert_eq!(
        runs,
        [
            at("2025-10-26T00:00:00Z").unix_timestamp(),
            at("2025-10-26T01:00:00Z").unix_timestamp()
        ]
    );
    // ... and skips it on the spring day (04:00 CEST is the first run after midnight).
    let from = paris.with_ymd_and_hms(2025, 3, 30, 1, 0, 0).unwrap();
    let first = every_other_hour.find_next_occurrence(&from, false).unwrap().timestamp();
    assert_eq!(first, at("2025-03-30T02:00:00Z").unix_timestamp());
}

#[test]
fn other_zones() {
    // New York springs forward at 07:00 UTC on 9 March 2025; 02:30 runs at 03:00 EDT.
    assert_eq!(
        next_n(&cron("30 2 * * *", "America/New_York"), at("2025-03-08T12:00:00Z"), 2),
        ["2025-03-09T07:00:00Z", "2025-03-10T06:30:00Z"]
    );
    // Samoa skipped 30 December 2011 entirely: noon that day runs at the first instant after
    // the gap, midnight of the 31st local (10:00 UTC on the 30th).
    assert_eq!(
        next_n(&cron("0 12 * * *", "Pacific/Apia"), at("2011-12-29T00:00:00Z"), 3),
        ["2011-12-29T22:00:00Z", "2011-12-30T10:00:00Z", "2011-12-30T22:00:00Z"]
    );
    // Antananarivo has no daylight saving: UTC+3 all year.
    assert_eq!(
        next_n(&cron("0 2 * * *", "Indian/Antananarivo"), at("2025-03-29T12:00:00Z"), 1),
        ["2025-03-29T23:00:00Z"]
    );
}

#[test]
fn instants_are_whole_seconds_strictly_after() {
    let c = cron("* * * * * *", "UTC");
    let t = at("2025-06-01T10:00:00.5Z");
    assert_eq!(c.next_after(t), Some(at("2025-06-01T10:00:01Z")));
    assert_eq!(
        c.next_after(at("2025-06-01T10:00:01Z")),
        Some(at("2025-06-01T10:00:02Z"))
    );
}

#[test]
fn between_is_from_exclusive_to_inclusive_and_keeps_the_newest() {
    let c = cron("0 * * * *", "UTC");
    let (v, n) = c.between(at("2025-06-01T10:00:00Z"), at("2025-06-01T14:00:00Z"), 2);
    assert_eq!(n, 4);
    assert_eq!(v, [at("2025-06-01T13:00:00Z"), at("2025-06-01T14:00:00Z")]);
    let (v, n) = c.between(at("2025-06-01T10:00:00Z"), at("2025-06-01T10:59:59Z"), 10);
    assert_eq!((v.len(), n), (0, 0));
}

#[test]
fn between_three_days_of_every_five_seconds() {
    let c = cron("*/5 * * * * *", "Europe/Paris");
    let from = at("2025-03-01T00:00:00Z");
    let to = plus(from, 3 * 86_400);
    let (v, n) = c.between(from, to, 100);
    assert_eq!(n, 51_840);
    assert_eq!(v.len(), 100);
    assert_eq!(v[99], to);
    assert_eq!(v[0], plus(to, -99 * 5));
}

#[test]
fn between_stops_counting_but_still_finds_the_newest() {
    let c = cron("* * * * * *", "UTC");
    let from = at("2025-01-01T00:00:00Z");
    let to = plus(from, 20 * 86_400);
    let (v, n) = c.between(from, to, 100);
    assert_eq!(n, MAX_COUNT);
    assert_eq!(v.len(), 100);
    assert_eq!(v[99], to);
    assert!(v.windows(2).all(|w| w[1] - w[0] == time::Duration::SECOND));
}
