//! Regressions: bugs these tests found in the rollout state machine, now fixed.

use super::*;

// ---------------------------------------------------------------------------------------------
// Regressions: bugs these tests found in the rollout state machine, now fixed.
// ---------------------------------------------------------------------------------------------

#[test]
fn secret_rotation_with_new_replicas_is_not_scale_only() {
    let old = desired("web").image("app:v1").secret_env("DB_PASSWORD", "old").build();
    let new = with_jobs(
        desired("web")
            .image("app:v1")
            .secret_env("DB_PASSWORD", "rotated")
            .replicas(3)
            .build(),
        vec![job("migrate", 300)],
    );
    let d = gen2(vec![new.clone()]);
    let r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert!(!r.service("web").unwrap().scale_only);
    assert_eq!(r.jobs.len(), 1);
}

#[test]
fn rolling_back_a_secret_rotation_completes() {
    let old = desired("web").image("app:v1").secret_env("DB_PASSWORD", "old").build();
    let new = with_policy(
        desired("web")
            .image("app:v2")
            .secret_env("DB_PASSWORD", "rotated")
            .build(),
        |p| p.health = Some(health(1, 1, 2)),
    );
    let (d, mut r, t1) = to_verifying(&old, &new);
    assert_eq!(
        reasons(&step(
            &mut r,
            &d,
            &at(t1, vec![converged(&new)]).probe("web", false, "HTTP 500")
        )),
        ["RollingBack"]
    );
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&new)]));
    let restored = eff.services.iter().find(|s| s.name == "web").unwrap().clone();
    let out = step(&mut r, &d, &at(t1 + 30 * SEC, vec![converged(&restored)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
}

#[test]
fn next_due_ignores_analysis_once_count_is_reached() {
    let web2 = with_policy(v2(), |p| {
        p.analysis = Some(analysis(1, 5, vec![error_rate(Some("result < 0.05"), None)]));
        p.verify_window_ms = 30_000;
    });
    let (d, mut r, t1) = to_verifying(&v1(), &web2);
    step(
        &mut r,
        &d,
        &at(t1, vec![converged(&web2)]).measure("web", "error-rate", MeasureObs::Value(0.0)),
    );
    assert_eq!(next_due_ms(&r, &d), Some(t1 + 30 * SEC));
}

#[test]
fn a_failed_metric_is_not_lost_when_another_errors() {
    let mut a = analysis(3, 5, vec![error_rate(Some("result < 0.05"), None)]);
    a.metrics.push(AnalysisMetric {
        name: "latency".into(),
        query: "p99".into(),
        success_condition: Some(cond("result < 0.5")),
        failure_condition: None,
    });
    let new = analysed(a);
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)])
            .measure("web", "error-rate", MeasureObs::Value(0.9))
            .measure("web", "latency", MeasureObs::Error("timeout".into())),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
}

#[test]
fn progress_deadline_covers_pre_deploy() {
    let new = with_policy(with_jobs(v2(), vec![job("migrate", 3600)]), |p| {
        p.progress_deadline_ms = 600_000
    });
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&v1())]));
    let m = r.jobs[0].swarm_name.clone();
    step(
        &mut r,
        &d,
        &at(T0 + 601 * SEC, vec![converged(&v1())]).job(&m, JobObs::Running),
    );
    assert_eq!(r.phase, Phase::RolledBack);
}
