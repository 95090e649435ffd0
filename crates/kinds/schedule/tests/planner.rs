//! The planner, part (b): what is due, catch-up after downtime, starting deadlines, concurrency,
//! suspend, daylight saving, requeue. The clock is the `now` of each `World`.

mod fixtures;

use fixtures::*;

#[test]
fn first_sight_of_a_schedule_catches_nothing_up() {
    let now = at("2025-06-01T10:07:30Z");
    let p = World::new(schedule("0 2 * * *").build(), now).cursor(None).plan();
    assert!(p.record.is_empty() && p.start.is_empty() && p.events.is_empty());
    assert_eq!(p.cursor, Some(now));
    assert_eq!(p.requeue, Requeue::At(at("2025-06-02T02:00:00Z")));
    assert_eq!(p.conditions.ready.1, "NoRunYet");
    assert_eq!(p.conditions.progressing.1, "Idle");
}

#[test]
fn requeue_is_exactly_the_next_instant_and_a_quiet_pass_writes_nothing() {
    let now = at("2025-06-01T10:07:30Z");
    let w = World::new(schedule("*/15 * * * *").build(), now).cursor(Some(at("2025-06-01T10:00:00Z")));
    let p = w.plan();
    assert_eq!(writes(&p), 0, "{}", p.display());
    assert!(p.events.is_empty());
    assert_eq!(p.requeue, Requeue::At(at("2025-06-01T10:15:00Z")));
    assert_eq!(p.status.next_schedule_time, Some(at("2025-06-01T10:15:00Z")));
}

#[test]
fn a_due_instant_is_recorded_and_started() {
    let instant = at("2025-06-01T02:00:00Z");
    let now = plus(instant, 0) + time::Duration::milliseconds(300);
    let w = World::new(schedule("0 2 * * *").build(), now).cursor(Some(plus(instant, -86_400)));
    let p = w.plan();
    assert_eq!(p.record.len(), 1);
    let r = &p.record[0];
    assert_eq!(
        (r.scheduled_at, r.outcome, r.trigger),
        (instant, Outcome::Pending, Trigger::Schedule)
    );
    assert_eq!(r.job.as_deref(), Some(job_of(instant, 1).as_str()));
    assert_eq!(p.start.len(), 1);
    let s = &p.start[0];
    assert_eq!(
        (s.job.as_str(), s.image.as_str(), s.attempt),
        (job_of(instant, 1).as_str(), IMAGE, 1)
    );
    assert_eq!((s.running.outcome, s.running.started_at), (Outcome::Running, Some(now)));
    assert_eq!(p.cursor, Some(instant));
    assert_eq!(reasons(&p), [Reason::RunStarted]);
    assert_eq!(
        p.events[0].message,
        format!(
            "started run of 2025-06-01T02:00:00Z (Schedule) as job {} with {IMAGE}",
            job_of(instant, 1)
        )
    );
    assert_eq!(p.requeue, Requeue::After(secs(1)));
    assert_eq!(p.status.last_schedule_time, Some(instant));
}

#[test]
fn trigger_is_catch_up_for_an_instant_before_the_controller_started() {
    let instant = at("2025-06-01T02:00:00Z");
    let now = at("2025-06-01T02:00:05Z");
    let base = || World::new(schedule("0 2 * * *").build(), now).cursor(Some(plus(instant, -60)));
    let p = base().controller_started(plus(instant, -1)).plan();
    assert_eq!(p.record[0].trigger, Trigger::Schedule);
    let p = base().controller_started(plus(instant, 3)).plan();
    assert_eq!(p.record[0].trigger, Trigger::CatchUp);
    assert_eq!(p.start[0].running.trigger, Trigger::CatchUp);
}

#[test]
fn three_days_down_one_catch_up_run_and_the_rest_missed() {
    let now = at("2025-03-04T09:00:00Z");
    let w = World::new(schedule("0 2 * * *").build(), now)
        .cursor(Some(at("2025-03-01T02:00:00Z")))
        .controller_started(plus(now, -1));
    let p = w.plan();
    let rows: Vec<_> = p
        .record
        .iter()
        .map(|r| (r.scheduled_at, r.outcome, r.trigger))
        .collect();
    assert_eq!(
        rows,
        [
            (at("2025-03-02T02:00:00Z"), Outcome::Missed, Trigger::CatchUp),
            (at("2025-03-03T02:00:00Z"), Outcome::Missed, Trigger::CatchUp),
            (at("2025-03-04T02:00:00Z"), Outcome::Pending, Trigger::CatchUp),
        ]
    );
    assert_eq!(p.record[0].message, "missed: a later instant ran instead");
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.start[0].scheduled_at, at("2025-03-04T02:00:00Z"));
    let warnings: Vec<_> = p.events.iter().filter(|e| e.reason.is_warning()).collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].reason, Reason::RunMissed);
    assert_eq!(
        warnings[0].message,
        "missed 2 instants from 2025-03-02T02:00:00Z to 2025-03-03T02:00:00Z while no controller ran"
    );
    assert_eq!(p.cursor, Some(at("2025-03-04T02:00:00Z")));
    // The run is what Degraded looks at, not the missed instants before it.
    assert_eq!(p.conditions.degraded.1, "AsExpected");
}

#[test]
fn three_days_down_every_five_seconds_records_a_bounded_number_of_rows() {
    let down = at("2025-03-01T00:00:00Z");
    let now = plus(down, 3 * 86_400);
    let w = World::new(schedule("*/5 * * * * *").build(), now)
        .cursor(Some(down))
        .controller_started(now);
    let p = w.plan();
    assert_eq!(p.record.len(), 100);
    assert_eq!(p.record.iter().filter(|r| r.outcome == Outcome::Missed).count(), 99);
    assert_eq!(p.record[99].scheduled_at, now);
    assert_eq!(p.start.len(), 1);
    let missed: Vec<_> = p.events.iter().filter(|e| e.reason == Reason::RunMissed).collect();
    assert_eq!(missed.len(), 1);
    assert_eq!(
        missed[0].message,
        "missed 51839 instants from 2025-03-01T00:00:05Z to 2025-03-03T23:59:55Z while no controller ran \
         (only the newest 99 are recorded)"
    );
}

#[test]
fn past_the_starting_deadline_everything_is_missed_and_nothing_starts() {
    let now = at("2025-03-04T09:00:00Z");
    let w = World::new(schedule("0 2 * * *").deadline(secs(3600)).build(), now)
        .cursor(Some(at("2025-03-01T02:00:00Z")))
        .controller_started(plus(now, -1));
    let p = w.plan();
    assert!(p.start.is_empty());
    assert!(p.record.iter().all(|r| r.outcome == Outcome::Missed));
    assert_eq!(p.record.len(), 3);
    assert_eq!(
        p.record[2].message,
        "missed: not started within the starting deadline (1h)"
    );
    assert_eq!(reasons(&p), [Reason::RunMissed]);
    assert!(p.events[0]
        .message
        .starts_with("missed 3 instants from 2025-03-02T02:00:00Z to 2025-03-04T02:00:00Z"));
    assert!(p.events[0]
        .message
        .contains("the latest is past the starting deadline (1h)"));
    assert_eq!(p.cursor, Some(at("2025-03-04T02:00:00Z")));
    assert!(p.conditions.degraded.0);
    assert_eq!(p.conditions.degraded.1, "RunMissed");
}

#[test]
fn within_the_starting_deadline_the_latest_instant_catches_up() {
    let now = at("2025-03-04T02:30:00Z");
    let w = World::new(schedule("0 2 * * *").deadline(secs(3600)).build(), now)
        .cursor(Some(at("2025-03-03T02:00:00Z")))
        .controller_started(plus(now, -1));
    let p = w.plan();
    assert_eq!(p.record.len(), 1);
    assert_eq!(p.record[0].trigger, Trigger::CatchUp);
    assert_eq!(p.start.len(), 1);
    assert!(p.events.iter().all(|e| e.reason != Reason::RunMissed));
}

/// A run of yesterday's instant still running (its job seen running), and today's instant due.
fn overlapping(policy: ConcurrencyPolicy) -> (World, OffsetDateTime, OffsetDateTime) {
    let old = at("2025-06-01T02:00:00Z");
    let new = at("2025-06-02T02:00:00Z");
    let now = plus(new, 2);
    let w = World::new(
        schedule("0 2 * * *").policy(policy).timeout(secs(2 * 86_400)).build(),
        now,
    )
    .cursor(Some(old))
    .run(running(7, old, plus(old, 1)))
    .job(&job_of(old, 1), JobObs::Running);
    (w, old, new)
}

#[test]
fn forbid_skips_an_instant_while_a_run_is_active() {
    let (w, _, new) = overlapping(ConcurrencyPolicy::Forbid);
    let p = w.plan();
    assert!(p.start.is_empty() && p.stop.is_empty() && p.update.is_empty());
    assert_eq!(p.record.len(), 1);
    let r = &p.record[0];
    assert_eq!((r.scheduled_at, r.outcome), (new, Outcome::Skipped));
    assert_eq!(r.message, "run #7 of 2025-06-01T02:00:00Z was still active");
    assert_eq!(reasons(&p), [Reason::RunSkipped]);
    assert!(!Reason::RunSkipped.is_warning());
    assert_eq!(p.status.active, [7]);
    assert_eq!(p.conditions.progressing.1, "RunActive");
}

#[test]
fn replace_stops_the_active_run_and_starts_the_new_one() {
    let (w, old, new) = overlapping(ConcurrencyPolicy::Replace);
    let p = w.plan();
    assert_eq!(p.stop.len(), 1);
    assert_eq!(
        (p.stop[0].job.as_str(), p.stop[0].why),
        (job_of(old, 1).as_str(), StopReason::Replaced)
    );
    assert_eq!(p.update.len(), 1);
    let (expected, row) = &p.update[0];
    assert_eq!(
        (*expected, row.outcome, row.finished_at),
        (Outcome::Running, Outcome::Replaced, Some(w.now))
    );
    assert_eq!(p.record.len(), 1);
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.start[0].scheduled_at, new);
    assert_eq!(reasons(&p), [Reason::RunReplaced, Reason::RunStarted]);
    assert_eq!(p.status.last_outcome.as_deref(), Some("Replaced"));
}

#[test]
fn replace_supersedes_a_start_planned_for_an_older_pending_run() {
    let old = at("2025-06-01T02:00:00Z");
    let new = at("2025-06-02T02:00:00Z");
    let now = plus(new, 1);
    // A retry of yesterday's run is due now too; it must not start and be replaced at once.
    let mut retry = running(7, old, plus(old, 1));
    retry.outcome = Outcome::Pending;
    retry.attempt = 2;
    retry.job = Some(job_of(old, 2));
    retry.retry_at = Some(plus(now, -1));
    let w = World::new(
        schedule("0 2 * * *")
            .policy(ConcurrencyPolicy::Replace)
            .timeout(secs(2 * 86_400))
            .retries(3)
            .build(),
        now,
    )
    .cursor(Some(old))
    .run(retry);
    let p = w.plan();
    assert!(p.stop.is_empty(), "its job was never created: {}", p.display());
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.start[0].scheduled_at, new);
    assert_eq!(p.update.len(), 1);
    assert_eq!(
        (p.update[0].0, p.update[0].1.outcome),
        (Outcome::Pending, Outcome::Replaced)
    );
}

#[test]
fn allow_runs_both() {
    let (w, _, new) = overlapping(ConcurrencyPolicy::Allow);
    let p = w.plan();
    assert!(p.stop.is_empty() && p.update.is_empty());
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.start[0].scheduled_at, new);
    assert_eq!(reasons(&p), [Reason::RunStarted]);
    assert!(
        p.conditions.progressing.2.ends_with("; 1 more active"),
        "{}",
        p.conditions.progressing.2
    );
}

#[test]
fn suspended_nothing_starts_and_the_cursor_follows_the_instants() {
    let now = at("2025-06-03T09:00:00Z");
    let mut w = World::new(schedule("0 2 * * *").suspend().build(), now).cursor(Some(at("2025-06-01T02:00:00Z")));
    let p = w.step();
    assert!(p.record.is_empty() && p.start.is_empty() && p.events.is_empty());
    assert_eq!(p.cursor, Some(at("2025-06-03T02:00:00Z")));
    assert_eq!(p.requeue, Requeue::Never);
    assert_eq!(p.status.next_schedule_time, None);
    assert!(p.status.suspended);
    assert_eq!(p.conditions.progressing.1, "Suspended");
    // A second pass while suspended writes nothing.
    w.now = plus(now, 60);
    assert_eq!(writes(&w.plan()), 0);
    // Resumed: the instants passed while suspended are not caught up.
    w.schedule = schedule("0 2 * * *").build();
    let p = w.plan();
    assert!(p.record.is_empty());
    assert_eq!(p.requeue, Requeue::At(at("2025-06-04T02:00:00Z")));
}

#[test]
fn an_instant_already_recorded_is_not_recorded_again() {
    // A pass recorded the row, then died before the cursor was stored.
    let instant = at("2025-06-01T02:00:00Z");
    let now = plus(instant, 3);
    let w = World::new(schedule("0 2 * * *").build(), now)
        .cursor(Some(plus(instant, -86_400)))
        .run(pending(3, instant));
    let p = w.plan();
    assert!(p.record.is_empty());
    assert_eq!(p.cursor, Some(instant));
    assert_eq!(p.start.len(), 1, "the Pending row starts through part (a)");
}

// Daylight saving through the planner: Europe/Paris, 2025.

#[test]
fn spring_forward_a_daily_0230_runs_at_0300_local() {
    let mut w = World::new(
        schedule("30 2 * * *").tz("Europe/Paris").build(),
        at("2025-03-29T23:00:00Z"),
    );
    let p = w.step();
    assert_eq!(p.requeue, Requeue::At(at("2025-03-30T01:00:00Z")), "03:00 CEST");
    w.now = at("2025-03-30T01:00:00Z");
    let p = w.step();
    assert_eq!(p.record.len(), 1);
    assert_eq!(p.record[0].scheduled_at, at("2025-03-30T01:00:00Z"));
    assert_eq!(p.start.len(), 1);
}

#[test]
fn fall_back_a_daily_0230_runs_once() {
    let w = World::new(
        schedule("30 2 * * *").tz("Europe/Paris").build(),
        at("2025-10-26T02:00:00Z"),
    )
    .cursor(Some(at("2025-10-25T23:00:00Z")));
    let p = w.plan();
    // Both 02:30s have passed (00:30 and 01:30 UTC): one instant, one run, nothing missed.
    assert_eq!(p.record.len(), 1);
    assert_eq!(p.record[0].scheduled_at, at("2025-10-26T00:30:00Z"));
    assert!(p.events.iter().all(|e| e.reason != Reason::RunMissed));
    assert_eq!(p.status.next_schedule_time, Some(at("2025-10-27T01:30:00Z")));
}

/// Steps a world through `until` one instant at a time, each run finishing at once; returns
/// the instants that started.
fn started_through(mut w: World, until: OffsetDateTime) -> Vec<String> {
    let mut started = Vec::new();
    while let Requeue::At(t) = w.plan().requeue {
        if t > until {
            break;
        }
        w.now = t;
        let p = w.step();
        for s in &p.start {
            started.push(steward_core::rfc3339(s.scheduled_at));
            w = w.job(&s.job, succeeded_job(""));
        }
        // The finished run is recorded by the next look (at once, for the test).
        w.step();
    }
    started
}

#[test]
fn every_half_hour_keeps_real_time_through_both_changes() {
    let spring = World::new(
        schedule("*/30 * * * *").tz("Europe/Paris").build(),
        at("2025-03-30T00:00:00Z"),
    );
    assert_eq!(
        started_through(spring, at("2025-03-30T02:00:00Z")),
        [
            "2025-03-30T00:30:00Z",
            "2025-03-30T01:00:00Z",
            "2025-03-30T01:30:00Z",
            "2025-03-30T02:00:00Z"
        ]
    );
    let fall = World::new(
        schedule("*/30 * * * *").tz("Europe/Paris").build(),
        at("2025-10-26T00:00:00Z"),
    );
    assert_eq!(
        started_through(fall, at("2025-10-26T02:00:00Z")),
        [
            "2025-10-26T00:30:00Z",
            "2025-10-26T01:00:00Z",
            "2025-10-26T01:30:00Z",
            "2025-10-26T02:00:00Z"
        ]
    );
}

#[test]
fn a_daily_0230_through_the_fall_day_runs_once() {
    let w = World::new(
        schedule("30 2 * * *").tz("Europe/Paris").build(),
        at("2025-10-25T22:00:00Z"),
    );
    assert_eq!(started_through(w, at("2025-10-26T22:00:00Z")), ["2025-10-26T00:30:00Z"]);
}
