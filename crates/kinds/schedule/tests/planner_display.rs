//! `Plan::display()` as `steward plan` prints it, snapshot-tested.

mod fixtures;

use fixtures::*;

#[test]
fn display_catch_up_after_downtime() {
    let now = at("2025-03-04T09:00:00Z");
    let old = at("2025-02-27T02:00:00Z");
    let p = World::new(schedule("0 2 * * *").history(3, 2).build(), now)
        .cursor(Some(at("2025-03-01T02:00:00Z")))
        .controller_started(plus(now, -1))
        .run(finished(1, old, Outcome::Failed))
        .run(finished(2, plus(old, 86_400), Outcome::Missed))
        .run(finished(3, plus(old, 2 * 86_400), Outcome::Succeeded))
        .plan();
    insta::assert_snapshot!(p.display());
}

#[test]
fn display_replace() {
    let old = at("2025-06-01T02:00:00Z");
    let new = at("2025-06-02T02:00:00Z");
    let p = World::new(
        schedule("0 2 * * *")
            .policy(ConcurrencyPolicy::Replace)
            .timeout(secs(2 * 86_400))
            .build(),
        plus(new, 1),
    )
    .cursor(Some(old))
    .run(running(7, old, plus(old, 1)))
    .job(&job_of(old, 1), JobObs::Running)
    .plan();
    insta::assert_snapshot!(p.display());
}

#[test]
fn display_retry_timeout_and_waiting_image() {
    let a = at("2025-06-01T02:00:00Z");
    let b = at("2025-06-01T03:00:00Z");
    let c = at("2025-06-01T04:00:00Z");
    let now = plus(c, 30);
    let p = World::new(
        schedule("0 * * * *")
            .image_from("web")
            .policy(ConcurrencyPolicy::Allow)
            .retries(1)
            .timeout(secs(7200))
            .build(),
        now,
    )
    .cursor(Some(b))
    .image_unknown()
    .run(running(4, a, plus(a, 1)))
    .job(&job_of(a, 1), JobObs::Running)
    .run(running(5, b, plus(b, 1)))
    .job(&job_of(b, 1), failed_job(2))
    .plan();
    insta::assert_snapshot!(p.display());
}
