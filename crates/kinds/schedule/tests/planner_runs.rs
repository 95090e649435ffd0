//! The planner, parts (a), (c) and (e): active runs (a controller that died mid-run, retries,
//! timeouts, images not known yet), history, status and conditions.

mod fixtures;

use fixtures::*;

const INSTANT: &str = "2025-06-01T02:00:00Z";

/// A daily schedule at 02:00 whose cursor is at today's instant, `secs_after` it.
fn world(s: Sched, secs_after: i64) -> World {
    let instant = at(INSTANT);
    World::new(s.build(), plus(instant, secs_after)).cursor(Some(instant))
}

#[test]
fn running_when_the_controller_died_and_the_job_succeeded_is_recorded_once() {
    let i = at(INSTANT);
    let mut w = world(schedule("0 2 * * *"), 600)
        .run(running(5, i, plus(i, 1)))
        .job(&job_of(i, 1), succeeded_job("dumped 42 tables\n"));
    let p = w.step();
    assert_eq!(p.update.len(), 1);
    let (expected, row) = &p.update[0];
    assert_eq!((*expected, row.outcome), (Outcome::Running, Outcome::Succeeded));
    assert_eq!(row.finished_at, Some(w.now));
    assert_eq!(row.logs, "dumped 42 tables\n");
    assert_eq!(p.remove, [job_of(i, 1)]);
    assert_eq!(reasons(&p), [Reason::RunSucceeded]);
    assert_eq!(p.events[0].message, "run of 2025-06-01T02:00:00Z succeeded in 9m59s");
    assert_eq!(
        p.conditions.ready,
        (
            true,
            "LastRunSucceeded",
            "run of 2025-06-01T02:00:00Z succeeded at 2025-06-01T02:10:00Z".to_string()
        )
    );
    assert_eq!(p.status.last_successful_time, Some(w.now));
    assert_eq!(p.status.last_outcome.as_deref(), Some("Succeeded"));
    // The next pass has nothing left to do.
    w.now = plus(w.now, 1);
    assert_eq!(writes(&w.plan()), 0);
}

#[test]
fn running_whose_job_disappeared_is_failed() {
    let i = at(INSTANT);
    let p = world(schedule("0 2 * * *"), 600)
        .run(running(5, i, plus(i, 1)))
        .job(&job_of(i, 1), JobObs::Missing)
        .plan();
    assert_eq!(p.update[0].1.outcome, Outcome::Failed);
    assert_eq!(
        p.update[0].1.message,
        "the job service disappeared before it finished (removed outside steward?)"
    );
    assert!(p.remove.is_empty() && p.stop.is_empty());
    assert_eq!(reasons(&p), [Reason::RunFailed]);
    assert_eq!(p.conditions.degraded.1, "RunFailed");
    assert_eq!(p.conditions.ready.1, "LastRunFailed");
}

#[test]
fn running_whose_job_cannot_be_seen_is_left_alone_even_past_its_timeout() {
    let i = at(INSTANT);
    for w in [
        world(schedule("0 2 * * *").timeout(secs(60)), 600)
            .run(running(5, i, plus(i, 1)))
            .job_unknown(&job_of(i, 1)),
        world(schedule("0 2 * * *").timeout(secs(60)), 600).run(running(5, i, plus(i, 1))),
    ] {
        let p = w.plan();
        assert_eq!(writes(&p), 0, "{}", p.display());
        assert!(p.events.is_empty());
        assert_eq!(p.requeue, Requeue::After(secs(1)));
        assert_eq!(p.status.active, [5]);
    }
}

#[test]
fn a_pending_row_whose_job_exists_becomes_running_without_a_second_start() {
    let i = at(INSTANT);
    let w = world(schedule("0 2 * * *"), 5)
        .run(pending(5, i))
        .job(&job_of(i, 1), JobObs::Running);
    let p = w.plan();
    assert!(p.start.is_empty());
    assert_eq!(p.update.len(), 1);
    let (expected, row) = &p.update[0];
    assert_eq!(
        (*expected, row.outcome, row.started_at),
        (Outcome::Pending, Outcome::Running, Some(w.now))
    );
    assert_eq!(p.requeue, Requeue::After(secs(0)));
}

#[test]
fn a_pending_row_is_not_started_while_swarm_cannot_be_read() {
    let i = at(INSTANT);
    let p = world(schedule("0 2 * * *").deadline(secs(1)), 600)
        .run(pending(5, i))
        .job_unknown(&job_of(i, 1))
        .plan();
    // Not started, and not given up on either (past its starting deadline): its job may exist.
    assert_eq!(writes(&p), 0, "{}", p.display());
    assert_eq!(p.requeue, Requeue::After(secs(1)));
}

#[test]
fn a_pending_row_without_a_job_starts() {
    let i = at(INSTANT);
    let p = world(schedule("0 2 * * *"), 5)
        .run(pending(5, i))
        .job(&job_of(i, 1), JobObs::Missing)
        .plan();
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.start[0].running.id, 5);
    assert!(p.update.is_empty(), "the start stores the Running row itself");
}

#[test]
fn retries_back_off_then_the_last_failure_is_recorded_with_its_exit_code() {
    let i = at(INSTANT);
    let mut w = world(schedule("0 2 * * *").retries(2), 30)
        .run(running(5, i, plus(i, 1)))
        .job(&job_of(i, 1), failed_job(3));
    // Attempt 1 fails: attempt 2 after 10 s.
    let p = w.step();
    let row = &p.update[0].1;
    assert_eq!((row.outcome, row.attempt), (Outcome::Pending, 2));
    assert_eq!(row.job.as_deref(), Some(job_of(i, 2).as_str()));
    assert_eq!(
        row.started_at,
        Some(plus(i, 1)),
        "the timeout counts from the first start"
    );
    assert_eq!(row.retry_at, Some(plus(w.now, 10)));
    assert_eq!(
        row.message,
        "attempt 1 failed: task: non-zero exit (3); retrying at 2025-06-01T02:00:40Z"
    );
    assert_eq!(p.remove, [job_of(i, 1)]);
    assert_eq!(reasons(&p), [Reason::RunRetrying]);
    assert_eq!(p.requeue, Requeue::At(plus(w.now, 10)));
    assert_eq!(p.status.active, [5]);

    // Before the backoff: nothing.
    w.now = plus(w.now, 5);
    assert_eq!(writes(&w.plan()), 0);
    // At it: attempt 2 starts.
    w.now = at("2025-06-01T02:00:40Z");
    let p = w.step();
    assert_eq!(p.start.len(), 1);
    assert_eq!(
        (p.start[0].job.as_str(), p.start[0].attempt),
        (job_of(i, 2).as_str(), 2)
    );
    assert!(p.events[0]
        .message
        .starts_with("started attempt 2 of the run of 2025-06-01T02:00:00Z"));

    // Attempt 2 fails: attempt 3 after 20 s.
    w = w.job(&job_of(i, 2), failed_job(3));
    w.now = plus(w.now, 30);
    let p = w.step();
    assert_eq!(p.update[0].1.retry_at, Some(plus(w.now, 20)));
    w.now = plus(w.now, 20);
    let p = w.step();
    assert_eq!(p.start[0].attempt, 3);

    // Attempt 3 fails: no retries left.
    w = w.job(&job_of(i, 3), failed_job(3));
    w.now = plus(w.now, 30);
    let p = w.step();
    let row = &p.update[0].1;
    assert_eq!((row.outcome, row.exit_code, row.attempt), (Outcome::Failed, Some(3), 3));
    assert_eq!(row.message, "task: non-zero exit (3)");
    assert_eq!(row.logs, "pg_dump: error: exit 3\n");
    assert_eq!(reasons(&p), [Reason::RunFailed]);
    assert_eq!(
        p.events[0].message,
        "run of 2025-06-01T02:00:00Z failed: exit code 3 (attempt 3)"
    );
    assert_eq!(p.conditions.ready.1, "LastRunFailed");
    assert!(p.conditions.ready.2.contains("exit code 3"), "{}", p.conditions.ready.2);
    assert_eq!(p.conditions.degraded.1, "RunFailed");
    assert!(p.status.active.is_empty());
}

#[test]
fn backoff_doubles_and_is_capped_at_five_minutes() {
    let i = at(INSTANT);
    for (attempt, wait) in [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (9, 300)] {
        let mut r = running(5, i, plus(i, 1));
        r.attempt = attempt;
        r.job = Some(job_name(NAME, i, attempt, false));
        let p = world(schedule("0 2 * * *").retries(20).timeout(secs(86_400)), 60)
            .run(r)
            .job(&job_name(NAME, i, attempt, false), failed_job(1))
            .plan();
        assert_eq!(p.update[0].1.retry_at, Some(plus(i, 60 + wait)), "attempt {attempt}");
    }
}

#[test]
fn a_run_past_its_timeout_is_stopped_and_timed_out() {
    let i = at(INSTANT);
    let p = world(schedule("0 2 * * *").timeout(secs(3600)), 3601)
        .run(running(5, i, plus(i, 1)))
        .job(&job_of(i, 1), JobObs::Running)
        .plan();
    assert_eq!(p.stop.len(), 1);
    assert_eq!(
        (p.stop[0].job.as_str(), p.stop[0].why),
        (job_of(i, 1).as_str(), StopReason::TimedOut)
    );
    let (expected, row) = &p.update[0];
    assert_eq!((*expected, row.outcome), (Outcome::Running, Outcome::TimedOut));
    assert_eq!(row.message, "timed out after 1h");
    assert_eq!(reasons(&p), [Reason::RunTimedOut]);
    assert_eq!(p.conditions.degraded.1, "RunTimedOut");
    assert_eq!(p.conditions.ready.1, "LastRunTimedOut");
}

#[test]
fn a_running_job_is_polled_until_its_timeout() {
    let i = at(INSTANT);
    let p = world(schedule("0 2 * * *").timeout(secs(60)), 60)
        .run(running(5, i, plus(i, 0)))
        .job(&job_of(i, 1), JobObs::Running)
        .plan();
    assert_eq!(p.update[0].1.outcome, Outcome::TimedOut, "the deadline itself is past");
    let p = world(schedule("0 2 * * *").timeout(secs(60)), 30)
        .run(running(5, i, plus(i, 0)))
        .job(&job_of(i, 1), JobObs::Running)
        .plan();
    assert_eq!(writes(&p), 0);
    assert_eq!(p.requeue, Requeue::After(secs(1)));
    assert!(p
        .conditions
        .progressing
        .2
        .starts_with("run of 2025-06-01T02:00:00Z running since 2025-06-01T02:00:00Z (attempt 1)"));
}

#[test]
fn a_retry_waiting_past_the_timeout_of_its_first_start_times_out() {
    let i = at(INSTANT);
    let mut r = running(5, i, plus(i, 1));
    r.outcome = Outcome::Pending;
    r.attempt = 2;
    r.job = Some(job_of(i, 2));
    r.retry_at = Some(plus(i, 7200));
    let p = world(schedule("0 2 * * *").retries(3).timeout(secs(3600)), 3601)
        .run(r)
        .plan();
    assert!(p.stop.is_empty(), "attempt 2 never started");
    assert_eq!(p.update[0].1.outcome, Outcome::TimedOut);
    assert_eq!(p.update[0].1.retry_at, None);
}

#[test]
fn an_unknown_image_waits_then_the_run_is_missed_past_its_deadline() {
    let i = at(INSTANT);
    let s = || schedule("0 2 * * *").image_from("web").deadline(secs(300));
    let mut w = World::new(s().build(), plus(i, 1))
        .cursor(Some(plus(i, -1)))
        .image_unknown();
    let p = w.step();
    assert_eq!(p.record.len(), 1);
    assert_eq!(p.record[0].outcome, Outcome::Pending);
    assert_eq!(
        p.record[0].message,
        "waiting on Service/web: Service web is not running"
    );
    assert!(p.start.is_empty());
    assert_eq!(reasons(&p), [Reason::ImageUnknown]);
    // Status names the object waited on, typed.
    assert_eq!(
        p.waiting,
        Some(steward_core::WaitingOn::Dependency {
            object: steward_core::ObjectRef::service("web"),
            reason: "Service web is not running".into()
        })
    );
    assert_eq!(p.conditions.progressing.1, "WaitingOn");
    assert_eq!(p.requeue, Requeue::After(secs(5)));

    // Still unknown within the deadline: waits quietly (no event, no write).
    w.now = plus(i, 60);
    let p = w.step();
    assert_eq!(writes(&p), 0, "{}", p.display());
    assert!(p.events.is_empty());

    // Past the deadline: Missed.
    w.now = plus(i, 301);
    let p = w.step();
    assert_eq!(p.update[0].1.outcome, Outcome::Missed);
    assert_eq!(reasons(&p), [Reason::RunMissed]);
    assert_eq!(p.conditions.degraded.1, "RunMissed");
}

#[test]
fn a_waiting_run_starts_once_the_image_is_known() {
    let i = at(INSTANT);
    let mut w = World::new(schedule("0 2 * * *").image_from("web").build(), plus(i, 1))
        .cursor(Some(plus(i, -1)))
        .image_unknown();
    w.step();
    w.image = Observation::Known("registry.example/web:1.4.2".into());
    w.now = plus(i, 6);
    let p = w.step();
    assert_eq!(p.start.len(), 1);
    assert_eq!(p.start[0].image, "registry.example/web:1.4.2");
    assert_eq!(p.start[0].running.message, "", "the waiting message is cleared");
}

#[test]
fn history_keeps_the_newest_of_each_bucket() {
    let day = |n: i64| plus(at("2025-06-01T02:00:00Z"), n * 86_400);
    let mut w = World::new(schedule("0 2 * * *").history(2, 1).build(), plus(day(6), 600)).cursor(Some(day(6)));
    for (id, n, o) in [
        (1, 0, Outcome::Succeeded),
        (2, 1, Outcome::Failed),
        (3, 2, Outcome::Succeeded),
        (4, 3, Outcome::Missed),
        (5, 4, Outcome::Succeeded),
        (6, 5, Outcome::Skipped),
    ] {
        w = w.run(finished(id, day(n), o));
    }
    let p = w.plan();
    // Succeeded: keep 5 and 3. Others: keep 6.
    assert_eq!(p.prune, [1, 2, 4]);
}

#[test]
fn history_counts_what_this_pass_records_and_finishes() {
    let day = |n: i64| plus(at("2025-06-01T02:00:00Z"), n * 86_400);
    let w = World::new(schedule("0 2 * * *").history(1, 1).build(), plus(day(1), 600))
        .cursor(Some(day(1)))
        .run(finished(1, day(0), Outcome::Succeeded))
        .run(running(2, day(1), day(1)))
        .job(&job_of(day(1), 1), succeeded_job(""));
    let p = w.plan();
    assert_eq!(p.prune, [1], "run 2 succeeding pushes run 1 out");
}

#[test]
fn logs_keep_their_end_cut_on_a_character_boundary() {
    let i = at(INSTANT);
    let logs = format!("{}{}", "é".repeat(40_000), "done\n");
    let p = world(schedule("0 2 * * *"), 60)
        .run(running(5, i, i))
        .job(&job_of(i, 1), succeeded_job(&logs))
        .plan();
    let kept = &p.update[0].1.logs;
    assert!(kept.len() <= steward_schedule::run::LOG_TAIL_BYTES);
    assert!(kept.len() >= steward_schedule::run::LOG_TAIL_BYTES - 1);
    assert!(kept.ends_with("done\n") && logs.ends_with(kept.as_str()));
}

#[test]
fn events_and_display_never_show_env_values() {
    let i = at(INSTANT);
    let w = World::new(
        schedule("0 2 * * *")
            .env("PGPASSWORD", "hunter2-secret", true)
            .env("MODE", "full-dump-mode", false)
            .build(),
        plus(i, 1),
    )
    .cursor(Some(plus(i, -1)));
    let p = w.plan();
    assert!(!p.start.is_empty());
    let all = format!("{}{:?}{:?}", p.display(), p.events, w.schedule.job);
    assert!(!all.contains("hunter2") && !all.contains("full-dump-mode"), "{all}");
}

#[test]
fn spec_hash_changes_with_the_spec_and_hides_env_values() {
    let a = schedule("0 2 * * *").env("PGPASSWORD", "one", true).build();
    let b = schedule("0 2 * * *").env("PGPASSWORD", "two", true).build();
    let c = schedule("0 3 * * *").env("PGPASSWORD", "one", true).build();
    let d = schedule("0 2 * * *").env("PGPASSWORD", "one", true).suspend().build();
    assert_eq!(a.spec_hash.len(), 16);
    assert_eq!(
        a.spec_hash,
        schedule("0 2 * * *").env("PGPASSWORD", "one", true).build().spec_hash
    );
    for other in [&b, &c, &d] {
        assert_ne!(a.spec_hash, other.spec_hash);
    }
}

#[test]
fn a_converged_schedule_with_history_writes_nothing() {
    let day = |n: i64| plus(at("2025-06-01T02:00:00Z"), n * 86_400);
    let w = World::new(schedule("0 2 * * *").build(), plus(day(2), 600))
        .cursor(Some(day(2)))
        .run(finished(1, day(0), Outcome::Succeeded))
        .run(finished(2, day(1), Outcome::Failed))
        .run(finished(3, day(2), Outcome::Succeeded));
    let p = w.plan();
    assert_eq!(writes(&p), 0);
    assert_eq!(p.status.last_schedule_time, Some(day(2)));
    assert_eq!(p.status.last_outcome.as_deref(), Some("Succeeded"));
    assert_eq!(p.conditions.degraded, (false, "AsExpected", String::new()));
    assert_eq!(p.conditions.progressing.1, "Idle");
    assert_eq!(p.conditions.progressing.2, "next run at 2025-06-04T02:00:00Z");
}

#[test]
fn manual_runs_start_and_do_not_count_as_instants() {
    let requested = at("2025-06-01T13:14:15.250Z");
    let mut r = Run::new(NAME, requested, Trigger::Manual, Outcome::Pending);
    r.id = 9;
    r.job = Some(job_name(NAME, requested, 1, true));
    let w = World::new(schedule("0 2 * * *").build(), plus(requested, 1)).run(r);
    let p = w.plan();
    assert_eq!(p.start.len(), 1);
    assert!(p.start[0].job.starts_with("db-backup-m"));
    assert!(p.events[0].message.starts_with("started manual run of"));
    assert_eq!(p.status.last_schedule_time, None);
}
