//! Metric analysis: the count, the failure/inconclusive/error limits and odd results.

use super::*;

// ---------------------------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------------------------

#[test]
fn analysis_passes_after_count_successful_measurements() {
    let new = analysed(analysis(
        3,
        5,
        vec![error_rate(Some("result < 0.05"), Some("result > 0.1"))],
    ));
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    for i in 0..2 {
        let t = t1 + 5 * SEC * i;
        assert_eq!(due_analysis(&r, &d, t).len(), 1);
        let out = step(
            &mut r,
            &d,
            &at(t, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(0.01)),
        );
        assert!(out.events.is_empty());
    }
    let out = step(
        &mut r,
        &d,
        &at(t1 + 10 * SEC, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(0.0)),
    );
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    assert!(event(&out, "RolloutVerified")
        .message
        .contains("3 analysis measurements"));
    let a = &r.service("web").unwrap().analysis;
    assert_eq!(
        (a.measurements, a.successful, a.failed, a.inconclusive, a.error_streak),
        (3, 3, 0, 0, 0)
    );
    assert_eq!(a.last_detail, "all metrics passed");
}

#[test]
fn analysis_failure_condition_met_rolls_back_with_failure_limit_zero() {
    let new = analysed(analysis(3, 5, vec![error_rate(None, Some("result > 0.05"))]));
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(0.01)),
    );
    assert!(out.events.is_empty());
    let out = step(
        &mut r,
        &d,
        &at(t1 + 5 * SEC, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(0.2)),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(r.phase, Phase::RollingBack);
    let cause = r.cause.clone().unwrap();
    assert!(
        cause.contains("analysis failed")
            && cause.contains("= 0.2 meets failureCondition `result > 0.05`")
            && cause.contains(ERROR_QUERY),
        "{cause}"
    );
    assert_eq!(effective_hash(&d, &r, &[converged(&new)], "web"), v1().spec_hash);
}

#[test]
fn analysis_success_condition_unmet_counts_against_failure_limit() {
    let mut a = analysis(5, 5, vec![error_rate(Some("result < 0.05"), None)]);
    a.failure_limit = 1;
    let new = analysed(a);
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(0.2)),
    );
    assert!(out.events.is_empty(), "one failure tolerated with failureLimit 1");
    assert_eq!(r.service("web").unwrap().analysis.failed, 1);
    let out = step(
        &mut r,
        &d,
        &at(t1 + 5 * SEC, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(0.3)),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert!(
        r.cause
            .as_deref()
            .unwrap()
            .contains("does not meet successCondition `result < 0.05`"),
        "{:?}",
        r.cause
    );
}

#[test]
fn analysis_inconclusive_pauses_and_rolls_nothing_back() {
    let old = v1();
    let new = with_policy(
        analysed(analysis(3, 5, vec![error_rate(Some("result < 0.05"), None)])),
        |p| {
            p.health = Some(health(1, 3, 2));
        },
    );
    let (d, mut r, t1) = to_verifying(&old, &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Empty),
    );
    assert_eq!(reasons(&out), ["AnalysisInconclusive"]);
    let e = event(&out, "AnalysisInconclusive");
    assert!(e.warning() && e.object == "Service/web");
    assert!(out.finished.is_empty() && out.start_jobs.is_empty() && out.remove_jobs.is_empty());
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Paused, SvcPhase::Verifying));
    let cause = r.cause.clone().unwrap();
    assert!(
        cause.starts_with("web: error-rate:") && cause.contains("returned no data"),
        "{cause}"
    );

    // Nothing is rolled back: the new spec stays, for a human to decide.
    assert_eq!(effective_hash(&d, &r, &[converged(&new)], "web"), new.spec_hash);
    let mut p = plan_for(&d, &r, &[converged(&new)]);
    assert!(p.actions.is_empty());
    annotate(&mut p, &r);
    assert_eq!(p.held.len(), 1);
    assert!(
        matches!(&p.held[0].hold, Hold::WaitingOn { what } if what.starts_with("a decision (rollout paused: web: error-rate")),
        "{:?}",
        p.held
    );

    // Paused is final: no probes, no measurements, failing data changes nothing.
    assert!(due_probes(&r, &d, t1 + 60 * SEC).is_empty() && due_analysis(&r, &d, t1 + 60 * SEC).is_empty());
    assert_eq!(next_due_ms(&r, &d), None);
    let out = step(
        &mut r,
        &d,
        &at(t1 + 60 * SEC, vec![converged(&new)])
            .probe("web", false, "HTTP 500")
            .measure("web", "error-rate", MeasureObs::Value(0.9)),
    );
    assert!(out.events.is_empty() && out.finished.is_empty());
    assert_eq!(r.phase, Phase::Paused);
}

#[test]
fn analysis_inconclusive_limit_tolerates_that_many() {
    let mut a = analysis(3, 5, vec![error_rate(Some("result < 0.05"), None)]);
    a.inconclusive_limit = 1;
    let new = analysed(a);
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Empty),
    );
    assert!(out.events.is_empty());
    assert_eq!(r.service("web").unwrap().analysis.inconclusive, 1);
    let out = step(
        &mut r,
        &d,
        &at(t1 + 5 * SEC, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(f64::NAN)),
    );
    assert_eq!(reasons(&out), ["AnalysisInconclusive"]);
    assert_eq!(r.phase, Phase::Paused);
}

#[test]
fn nan_result_is_inconclusive_not_a_failure() {
    // With a successCondition a NaN would "not meet" it; it must be Inconclusive instead.
    let new = analysed(analysis(
        3,
        5,
        vec![error_rate(Some("result < 0.05"), Some("result >= 0.05"))],
    ));
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Value(f64::NAN)),
    );
    assert_eq!(reasons(&out), ["AnalysisInconclusive"]);
    assert_eq!(r.phase, Phase::Paused);
    assert!(r.cause.as_deref().unwrap().contains("returned NaN"), "{:?}", r.cause);
    let a = &r.service("web").unwrap().analysis;
    assert_eq!((a.failed, a.inconclusive, a.measurements), (0, 1, 1));
}

#[test]
fn analysis_errors_fail_only_beyond_the_consecutive_error_limit() {
    let new = analysed(analysis(3, 5, vec![error_rate(Some("result < 0.05"), None)]));
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let err = || MeasureObs::Error("connection refused".into());
    for i in 0..4 {
        let out = step(
            &mut r,
            &d,
            &at(t1 + 5 * SEC * i, vec![converged(&new)]).measure("web", "error-rate", err()),
        );
        assert!(out.events.is_empty(), "error {} of 4 tolerated", i + 1);
    }
    let a = &r.service("web").unwrap().analysis;
    assert_eq!((a.error_streak, a.measurements), (4, 0), "errors are not measurements");
    assert_eq!(
        due_analysis(&r, &d, t1 + 20 * SEC).len(),
        1,
        "still due: errors do not count toward count"
    );

    let out = step(
        &mut r,
        &d,
        &at(t1 + 20 * SEC, vec![converged(&new)]).measure("web", "error-rate", err()),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    let cause = r.cause.clone().unwrap();
    assert!(
        cause.contains("analysis errored 5 times in a row (consecutiveErrorLimit 4)")
            && cause.contains("connection refused"),
        "{cause}"
    );
}

#[test]
fn a_good_measurement_resets_the_error_streak() {
    let new = analysed(analysis(3, 5, vec![error_rate(Some("result < 0.05"), None)]));
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let mut t = t1;
    let mut feed = |r: &mut Rollout, m: MeasureObs| {
        let out = step(r, &d, &at(t, vec![converged(&new)]).measure("web", "error-rate", m));
        t += 5 * SEC;
        out
    };
    for _ in 0..4 {
        assert!(feed(&mut r, MeasureObs::Error("timeout".into())).events.is_empty());
    }
    assert!(feed(&mut r, MeasureObs::Value(0.01)).events.is_empty());
    for _ in 0..4 {
        assert!(feed(&mut r, MeasureObs::Error("timeout".into())).events.is_empty());
    }
    assert_eq!(r.phase, Phase::Verifying);
    let a = &r.service("web").unwrap().analysis;
    assert_eq!((a.error_streak, a.measurements, a.successful), (4, 1, 1));
}

#[test]
fn consecutive_error_limit_zero_fails_on_the_first_error() {
    let mut a = analysis(3, 5, vec![error_rate(Some("result < 0.05"), None)]);
    a.consecutive_error_limit = 0;
    let new = analysed(a);
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)]).measure("web", "error-rate", MeasureObs::Error("bad query".into())),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
}

#[test]
fn results_for_unknown_metrics_are_ignored() {
    let new = analysed(analysis(1, 5, vec![error_rate(Some("result < 0.05"), None)]));
    let (d, mut r, t1) = to_verifying(&v1(), &new);
    let out = step(
        &mut r,
        &d,
        &at(t1, vec![converged(&new)])
            .measure("web", "not-configured", MeasureObs::Value(99.0))
            .measure("web", "error-rate", MeasureObs::Value(0.0)),
    );
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
}
