//! When probes, analysis and the next wake-up are due, and the rollout's JSON round trip.

use super::*;

// ---------------------------------------------------------------------------------------------
// Scheduling: due probes, due analysis, next wake-up
// ---------------------------------------------------------------------------------------------

#[test]
fn due_probes_and_analysis_respect_interval_and_count() {
    let (web1, api1) = (v1(), desired("api").image("api:v1").build());
    let web2 = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 2));
        p.verify_window_ms = 60_000;
    });
    let api2 = with_policy(desired("api").image("api:v2").build(), |p| {
        p.analysis = Some(analysis(2, 5, vec![error_rate(Some("result < 0.05"), None)]));
        p.verify_window_ms = 60_000;
    });
    let d = gen2(vec![api2.clone(), web2.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &api1]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&web1), converged(&api1)]));
    assert!(
        due_probes(&r, &d, T0).is_empty() && due_analysis(&r, &d, T0).is_empty(),
        "nothing is due while updating"
    );

    let t1 = T0 + 10 * SEC;
    step(&mut r, &d, &at(t1, vec![converged(&web2), converged(&api2)]));
    assert_eq!(r.phase, Phase::Verifying);
    let probes = due_probes(&r, &d, t1);
    assert_eq!(probes.len(), 1);
    assert_eq!((probes[0].0.as_str(), probes[0].1.url.as_str()), ("web", HEALTH_URL));
    let rounds = due_analysis(&r, &d, t1);
    assert_eq!(rounds.len(), 1);
    assert_eq!((rounds[0].0.as_str(), rounds[0].1.count), ("api", 2));

    let obs = |t: i64| {
        at(t, vec![converged(&web2), converged(&api2)])
            .probe("web", true, "ok")
            .measure("api", "error-rate", MeasureObs::Value(0.0))
    };
    step(&mut r, &d, &obs(t1));
    assert!(due_probes(&r, &d, t1 + 2 * SEC - 1).is_empty());
    assert_eq!(due_probes(&r, &d, t1 + 2 * SEC).len(), 1);
    assert!(due_analysis(&r, &d, t1 + 5 * SEC - 1).is_empty());
    assert_eq!(due_analysis(&r, &d, t1 + 5 * SEC).len(), 1);

    step(&mut r, &d, &obs(t1 + 5 * SEC));
    assert_eq!(r.service("api").unwrap().analysis.measurements, 2);
    assert!(
        due_analysis(&r, &d, t1 + 50 * SEC).is_empty(),
        "count reached: no more rounds"
    );
    assert_eq!(
        due_probes(&r, &d, t1 + 50 * SEC).len(),
        1,
        "probes go on for the window"
    );
    assert_eq!(r.phase, Phase::Verifying);

    // Terminal: nothing is due.
    let out = step(&mut r, &d, &obs(t1 + 60 * SEC));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutVerified", "RolloutComplete"]);
    assert!(due_probes(&r, &d, t1 + 90 * SEC).is_empty() && due_analysis(&r, &d, t1 + 90 * SEC).is_empty());
}

#[test]
fn next_due_ms_is_the_earliest_probe_analysis_or_window_end() {
    let web2 = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 10));
        p.analysis = Some(analysis(3, 4, vec![error_rate(Some("result < 0.05"), None)]));
        p.verify_window_ms = 30_000;
    });
    let (d, mut r, t1) = to_verifying(&v1(), &web2);
    // Probe at t1, measurement at t1+3s: probe next at t1+10s, measurement at t1+7s.
    step(&mut r, &d, &at(t1, vec![converged(&web2)]).probe("web", true, "ok"));
    step(
        &mut r,
        &d,
        &at(t1 + 3 * SEC, vec![converged(&web2)]).measure("web", "error-rate", MeasureObs::Value(0.0)),
    );
    assert_eq!(next_due_ms(&r, &d), Some(t1 + 7 * SEC));
    step(
        &mut r,
        &d,
        &at(t1 + 7 * SEC, vec![converged(&web2)]).measure("web", "error-rate", MeasureObs::Value(0.0)),
    );
    assert_eq!(next_due_ms(&r, &d), Some(t1 + 10 * SEC));

    // The window end when it comes first.
    let short = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 10));
        p.verify_window_ms = 4_000;
    });
    let (d, mut r, t1) = to_verifying(&v1(), &short);
    step(&mut r, &d, &at(t1, vec![converged(&short)]).probe("web", true, "ok"));
    assert_eq!(next_due_ms(&r, &d), Some(t1 + 4 * SEC));

    // Nothing to look at while updating only; none once terminal.
    let (_, _, d, r) = updating_rollout();
    assert_eq!(next_due_ms(&r, &d), None);
}

#[test]
fn a_never_probed_service_is_due_at_once() {
    let web2 = with_policy(v2(), |p| {
        p.health = Some(health(1, 3, 2));
        p.verify_window_ms = 30_000;
    });
    let (d, r, t1) = to_verifying(&v1(), &web2);
    assert!(next_due_ms(&r, &d).unwrap() <= t1);
    assert_eq!(due_probes(&r, &d, t1).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------------

#[test]
fn rollout_json_round_trips_mid_flight() {
    let old = desired("web")
        .image("app:v1")
        .secret_env("DB_PASSWORD", "hunter2")
        .build();
    let new = with_jobs(
        with_policy(
            desired("web")
                .image("app:v2")
                .secret_env("DB_PASSWORD", "hunter2")
                .build(),
            |p| {
                p.health = Some(health(2, 3, 2));
                p.analysis = Some(analysis(3, 5, vec![error_rate(Some("result < 0.05"), None)]));
                p.verify_window_ms = 20_000;
            },
        ),
        vec![job("migrate", 300)],
    );
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    let m = r.jobs[0].swarm_name.clone();
    step(
        &mut r,
        &d,
        &at(T0 + SEC, vec![converged(&old)]).job(&m, JobObs::Succeeded { logs: String::new() }),
    );
    step(&mut r, &d, &at(T0 + 5 * SEC, vec![converged(&new)]));
    let t1 = T0 + 5 * SEC;
    step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).probe("web", true, "ok").measure(
            "web",
            "error-rate",
            MeasureObs::Error("timeout".into()),
        ),
    );
    assert_eq!(r.phase, Phase::Verifying);

    let text = serde_json::to_string(&r).unwrap();
    assert!(!text.contains("hunter2"), "secrets never persisted: {text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["phase"], "Verifying");
    assert_eq!(value["services"][0]["phase"], "Verifying");
    let mut back: Rollout = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);

    // Both copies decide the same from here on.
    let obs = at(t1 + 20 * SEC, vec![converged(&new)])
        .probe("web", true, "ok")
        .measure("web", "error-rate", MeasureObs::Value(0.0));
    let (a, b) = (step(&mut r, &d, &obs), step(&mut back, &d, &obs));
    assert_eq!(a.events, b.events);
    assert_eq!(back, r);

    // Terminal rollouts too.
    let (old, _, d, mut r) = updating_rollout();
    step(
        &mut r,
        &d,
        &at(
            T0 + 9 * SEC,
            vec![with_status(converged(&old), UpdateState::RollbackCompleted, T0 + SEC)],
        ),
    );
    assert_eq!(r.phase, Phase::RolledBack);
    let back: Rollout = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!(effective_hash(&d, &back, &[converged(&old)], "web"), old.spec_hash);
}
