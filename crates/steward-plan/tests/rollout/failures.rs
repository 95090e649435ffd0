//! Failures Swarm reports itself (rollbacks, paused updates) and the progress deadline.

use super::*;

// ---------------------------------------------------------------------------------------------
// Swarm's own failures
// ---------------------------------------------------------------------------------------------

#[test]
fn swarm_rollback_completed_of_this_update_rolls_back_and_finishes_at_once() {
    let (old, new, d, mut r) = updating_rollout();
    // Swarm's failure action reverted the spec (and so the hash label) to the old one.
    let reverted = with_status(converged(&old), UpdateState::RollbackCompleted, T0 + 2 * SEC);
    let out = step(&mut r, &d, &at(T0 + 30 * SEC, vec![reverted]));
    assert_eq!(reasons(&out), ["RollingBack", "RolledBack"]);
    assert_eq!(out.finished, [finished("web", &new.spec_hash, Outcome::RolledBack)]);
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(
        r.cause.as_deref().unwrap().contains("Swarm update RollbackCompleted"),
        "{:?}",
        r.cause
    );
}

#[test]
fn swarm_rollback_started_of_this_update_waits_for_swarm_to_finish() {
    let (old, new, d, mut r) = updating_rollout();
    let out = step(
        &mut r,
        &d,
        &at(
            T0 + 20 * SEC,
            vec![with_status(converged(&old), UpdateState::RollbackStarted, T0 + 2 * SEC)],
        ),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(r.phase, Phase::RollingBack);
    let out = step(
        &mut r,
        &d,
        &at(
            T0 + 25 * SEC,
            vec![with_status(
                converged(&old),
                UpdateState::RollbackCompleted,
                T0 + 2 * SEC,
            )],
        ),
    );
    assert_eq!(reasons(&out), ["RolledBack"]);
    assert_eq!(out.finished, [finished("web", &new.spec_hash, Outcome::RolledBack)]);
}

#[test]
fn swarm_paused_update_rolls_back() {
    let (old, new, d, mut r) = updating_rollout();
    // Within the clock-skew grace (started 0.5s "before" the phase by Swarm's clock): ours.
    let paused = with_status(observed_from(&new).running(0).build(), UpdateState::Paused, T0 - 500);
    let out = step(&mut r, &d, &at(T0 + 20 * SEC, vec![paused.clone()]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(
        (r.phase, phase_of(&r, "web")),
        (Phase::RollingBack, SvcPhase::RollingBack)
    );
    assert!(
        r.cause.as_deref().unwrap().contains("Swarm update Paused"),
        "{:?}",
        r.cause
    );
    assert_eq!(effective_hash(&d, &r, &[paused], "web"), old.spec_hash);
}

#[test]
fn stale_swarm_rollback_from_before_the_phase_is_ignored() {
    let (old, new, d, mut r) = updating_rollout();
    // Left over from an update an hour ago; steward has not written yet.
    let stale = with_status(converged(&old), UpdateState::RollbackCompleted, T0 - 3_600 * SEC);
    let out = step(&mut r, &d, &at(T0 + SEC, vec![stale]));
    assert!(out.events.is_empty(), "{:?}", out.events);
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Updating, SvcPhase::Updating));
    // Also a stale Paused on the old spec.
    let stale = with_status(converged(&old), UpdateState::Paused, T0 - 3_600 * SEC);
    assert!(step(&mut r, &d, &at(T0 + 2 * SEC, vec![stale])).events.is_empty());

    // The write lands, Swarm runs the update: completes normally.
    assert!(step(&mut r, &d, &at(T0 + 3 * SEC, vec![rolling(&new, T0 + 3 * SEC)]))
        .events
        .is_empty());
    let done = with_status(converged(&new), UpdateState::Completed, T0 + 3 * SEC);
    let out = step(&mut r, &d, &at(T0 + 9 * SEC, vec![done]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
}

// ---------------------------------------------------------------------------------------------
// Progress deadline
// ---------------------------------------------------------------------------------------------

#[test]
fn progress_deadline_while_updating_rolls_back() {
    let old = v1();
    let new = with_policy(v2(), |p| p.progress_deadline_ms = 60_000);
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    let stuck = || with_status(observed_from(&new).running(0).build(), UpdateState::Updating, T0 + SEC);
    let out = step(&mut r, &d, &at(T0 + 60 * SEC, vec![stuck()]));
    assert!(out.events.is_empty(), "exactly at the deadline is still in time");
    let out = step(&mut r, &d, &at(T0 + 60 * SEC + 1, vec![stuck()]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(r.phase, Phase::RollingBack);
    assert!(
        r.cause
            .as_deref()
            .unwrap()
            .contains("progress deadline 60s exceeded while updating: 0/1 tasks running"),
        "{:?}",
        r.cause
    );
    assert_eq!(effective_hash(&d, &r, &[stuck()], "web"), old.spec_hash);
}

#[test]
fn progress_deadline_while_verifying_rolls_back() {
    let new = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 2));
        p.progress_deadline_ms = 60_000;
    });
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    // The probe never answers.
    assert!(step(&mut r, &d, &at(t1 + 60 * SEC, vec![converged(&new)]))
        .events
        .is_empty());
    let out = step(&mut r, &d, &at(t1 + 61 * SEC, vec![converged(&new)]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert!(
        r.cause
            .as_deref()
            .unwrap()
            .contains("progress deadline 60s exceeded while verifying"),
        "{:?}",
        r.cause
    );
}
