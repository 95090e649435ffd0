//! Verification: the happy paths (health checks, the verify window) and health failures.

use super::*;

// ---------------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------------

#[test]
fn happy_path_without_verification_goes_updating_then_complete() {
    let (old, new) = (v1(), v2());
    let d = gen2(vec![new.clone()]);

    assert!(
        begin(&d, DESIRED_HASH, &last_good(&[&new]), T0).is_none(),
        "nothing changed, no rollout"
    );

    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).expect("a change");
    assert_eq!(
        (r.phase, r.generation, r.desired_hash.as_str()),
        (Phase::Updating, 2, DESIRED_HASH)
    );
    assert!(r.jobs.is_empty());
    let s = r.service("web").unwrap();
    assert_eq!(
        (s.phase, s.scale_only, s.to_hash.as_str(), s.to_image.as_str()),
        (SvcPhase::Pending, false, new.spec_hash.as_str(), "app:v2")
    );
    assert_eq!(
        s.from.as_ref().map(|f| f.spec_hash.as_str()),
        Some(old.spec_hash.as_str())
    );
    // Not started yet: the planner keeps the old spec.
    assert_eq!(effective_hash(&d, &r, &[converged(&old)], "web"), old.spec_hash);

    // Pass 1: the service starts updating; the planner may now write the new spec.
    let out = step(&mut r, &d, &at(T0, vec![converged(&old)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    assert_eq!(out.events[0].object, "Service/web");
    assert!(!out.events[0].warning());
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Updating, SvcPhase::Updating));
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&old)]));
    assert_eq!(target_hash(&eff, "web"), Some(new.spec_hash.clone()));
    assert!(eff.gates.is_empty() && eff.remove.is_empty());
    let p = plan_for(&d, &r, &[converged(&old)]);
    assert!(matches!(&p.actions[..], [Action::Update { service, .. }] if service.spec_hash == new.spec_hash));

    // Pass 2: written, Swarm still replacing tasks.
    let out = step(&mut r, &d, &at(T0 + 5 * SEC, vec![rolling(&new, T0 + SEC)]));
    assert!(out.events.is_empty() && out.finished.is_empty());
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Updating, SvcPhase::Updating));

    // Pass 3: converged, nothing to verify: Complete at once.
    let out = step(&mut r, &d, &at(T0 + 10 * SEC, vec![converged(&new)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    assert_eq!(out.finished, [finished("web", &new.spec_hash, Outcome::Complete)]);
    assert_eq!(event(&out, "RolloutComplete").object, "Rollout/2");
    assert!(event(&out, "RolloutComplete").message.contains("web app:v2"));
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Complete, SvcPhase::Verified));
    assert_eq!(r.progress(), (1, 1));

    // Terminal: later passes decide nothing.
    let out = step(&mut r, &d, &at(T0 + 20 * SEC, vec![converged(&new)]));
    assert!(out.events.is_empty() && out.finished.is_empty() && out.start_jobs.is_empty());
    assert_eq!(r.phase, Phase::Complete);
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&new)]));
    assert_eq!(target_hash(&eff, "web"), Some(new.spec_hash.clone()));
    assert!(eff.gates.is_empty() && eff.remove.is_empty());
    assert!(plan_for(&d, &r, &[converged(&new)]).actions.is_empty());
    assert!(next_due_ms(&r, &d).is_none());
}

#[test]
fn happy_path_with_health_needs_success_threshold_and_the_verify_window() {
    let old = v1();
    let new = with_policy(v2(), |p| {
        p.health = Some(health(2, 3, 2));
        p.verify_window_ms = 10_000;
    });
    let (d, mut r, t1) = to_verifying(&old, &new);
    assert_eq!(r.service("web").unwrap().phase_started_ms, t1);
    let verifying = effective(&d, Some(&r), &swarm(vec![converged(&new)]));
    assert_eq!(target_hash(&verifying, "web"), Some(new.spec_hash.clone()));

    // First probe: one success, threshold is two.
    assert_eq!(due_probes(&r, &d, t1).len(), 1);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).probe("web", true, "HTTP 200"),
    );
    assert!(out.events.is_empty());
    assert_eq!(r.service("web").unwrap().health.ok_streak, 1);
    assert!(due_probes(&r, &d, t1 + SEC).is_empty(), "interval is 2s");

    // Second success: threshold met, but the 10s window is not over.
    let out = step(
        &mut r,
        &d,
        &at(t1 + 2 * SEC, vec![converged(&new)]).probe("web", true, "HTTP 200"),
    );
    assert!(out.events.is_empty());
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Verifying, SvcPhase::Verifying));
    let out = step(
        &mut r,
        &d,
        &at(t1 + 4 * SEC, vec![converged(&new)]).probe("web", true, "HTTP 200"),
    );
    assert!(out.events.is_empty());
    assert_eq!(next_due_ms(&r, &d), Some(t1 + 6 * SEC));

    // Just before the window ends: still verifying.
    let out = step(&mut r, &d, &at(t1 + 10 * SEC - 1, vec![converged(&new)]));
    assert!(out.events.is_empty());
    assert_eq!(r.phase, Phase::Verifying);

    // Window over, streak held: verified and complete.
    let out = step(&mut r, &d, &at(t1 + 10 * SEC, vec![converged(&new)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    assert!(
        event(&out, "RolloutVerified").message.contains("3 health probes"),
        "{:?}",
        out.events
    );
    assert_eq!(out.finished, [finished("web", &new.spec_hash, Outcome::Complete)]);
    assert_eq!(r.phase, Phase::Complete);
    let h = &r.service("web").unwrap().health;
    assert_eq!(
        (h.probes, h.ok_streak, h.fail_streak, h.last_ms),
        (3, 3, 0, Some(t1 + 4 * SEC))
    );
    assert!(due_probes(&r, &d, t1 + 60 * SEC).is_empty(), "no probes once complete");
}

#[test]
fn verifying_event_states_the_window() {
    let new = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 2));
        p.verify_window_ms = 30_000;
    });
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&v1())]));
    let out = step(&mut r, &d, &at(T0 + SEC, vec![converged(&new)]));
    let e = event(&out, "RolloutVerifying");
    assert_eq!(e.object, "Service/web");
    assert!(
        e.message.contains("1/1 tasks on app:v2") && e.message.contains("verifying for 30s"),
        "{}",
        e.message
    );
}

// ---------------------------------------------------------------------------------------------
// Health failure
// ---------------------------------------------------------------------------------------------

#[test]
fn health_failure_rolls_back_and_is_rolled_back_once_old_hash_converged() {
    let old = v1();
    let new = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 2));
        p.verify_window_ms = 30_000;
    });
    let (d, mut r, t1) = to_verifying(&old, &new);

    for (i, t) in [t1, t1 + 2 * SEC].into_iter().enumerate() {
        let out = step(
            &mut r,
            &d,
            &at(t, vec![converged(&new)]).probe("web", false, "HTTP 503"),
        );
        assert!(out.events.is_empty(), "failure {} of 3 tolerated", i + 1);
        assert_eq!(r.phase, Phase::Verifying);
    }
    assert_eq!(r.service("web").unwrap().health.fail_streak, 2);

    // Third failure in a row: the revision is rolled back.
    let t = t1 + 4 * SEC;
    let out = step(
        &mut r,
        &d,
        &at(t, vec![converged(&new)]).probe("web", false, "HTTP 503"),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert!(event(&out, "RollingBack").warning());
    assert!(out.finished.is_empty());
    assert_eq!(
        (r.phase, phase_of(&r, "web")),
        (Phase::RollingBack, SvcPhase::RollingBack)
    );
    let cause = r.cause.clone().unwrap();
    assert!(
        cause.starts_with("web: health check GET http://127.0.0.1:8000/health failed 3 times in a row: HTTP 503"),
        "{cause}"
    );

    // The planner now writes the old spec back.
    assert_eq!(effective_hash(&d, &r, &[converged(&new)], "web"), old.spec_hash);
    let p = plan_for(&d, &r, &[converged(&new)]);
    assert!(
        matches!(&p.actions[..], [Action::Update { service, .. }] if service.spec_hash == old.spec_hash && service.state.image == "app:v1")
    );
    assert!(
        due_probes(&r, &d, t + 60 * SEC).is_empty(),
        "no probes while rolling back"
    );

    // Still on the new hash, then on the old hash but not converged: still rolling back.
    for obs in [
        at(t + SEC, vec![converged(&new)]),
        at(t + 2 * SEC, vec![rolling(&old, t + SEC)]),
        at(t + 3 * SEC, vec![observed_from(&old).running(0).build()]),
    ] {
        let out = step(&mut r, &d, &obs);
        assert!(out.events.is_empty() && out.finished.is_empty());
        assert_eq!(r.phase, Phase::RollingBack);
    }

    // Back on the old hash, converged.
    let out = step(&mut r, &d, &at(t + 10 * SEC, vec![converged(&old)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    let e = event(&out, "RolledBack");
    assert_eq!(e.object, "Rollout/2");
    assert!(
        e.message.contains("web app:v1") && e.message.contains("not applied again"),
        "{}",
        e.message
    );
    assert_eq!(out.finished, [finished("web", &new.spec_hash, Outcome::RolledBack)]);
    assert_eq!(
        (r.phase, phase_of(&r, "web")),
        (Phase::RolledBack, SvcPhase::RolledBack)
    );
    assert_eq!(r.progress(), (1, 1));

    // Rejected: the old spec stays in force while the desired state is unchanged.
    for k in 1..=3 {
        let out = step(
            &mut r,
            &d,
            &at(t + k * 60 * SEC, vec![converged(&old)]).probe("web", true, "HTTP 200"),
        );
        assert!(out.events.is_empty() && out.finished.is_empty());
        assert_eq!(effective_hash(&d, &r, &[converged(&old)], "web"), old.spec_hash);
    }
    let mut p = plan_for(&d, &r, &[converged(&old)]);
    assert!(p.actions.is_empty(), "{:#?}", p.actions);
    annotate(&mut p, &r);
    assert_eq!(hold_reasons(&p), [("web", "RevisionRejected")]);

    // A new desired state starts over from the last good revision.
    let v3 = desired("web").image("app:v3").build();
    let d3 = stack_with(STACK, false, 3, vec![v3.clone()]);
    let r3 = begin(&d3, "desired-gen-3", &last_good(&[&old]), t + 600 * SEC).unwrap();
    assert_eq!(
        r3.service("web").unwrap().from.as_ref().unwrap().spec_hash,
        old.spec_hash
    );
    assert_eq!(r3.service("web").unwrap().to_hash, v3.spec_hash);
}

#[test]
fn a_success_resets_the_health_failure_streak() {
    let new = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 2));
        p.verify_window_ms = 60_000;
    });
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    for (i, ok) in [false, false, true, false, false].into_iter().enumerate() {
        let out = step(
            &mut r,
            &d,
            &at(t1 + 2 * SEC * i as i64, vec![converged(&new)]).probe("web", ok, "x"),
        );
        assert!(out.events.is_empty(), "pass {i}: {:?}", out.events);
    }
    assert_eq!(r.phase, Phase::Verifying);
    let h = &r.service("web").unwrap().health;
    assert_eq!((h.fail_streak, h.ok_streak, h.probes), (2, 0, 5));
}
