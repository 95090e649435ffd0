//! Verification of an updated service (health probes, analysis measurements) and when the
//! next of them is due.

use super::*;

pub(super) enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
}

/// Folds this pass's probe and measurement into the tallies; `Some` once decided.
pub(super) fn verify_service(s: &mut ServiceRollout, p: &RolloutPolicy, obs: &Observations) -> Option<Verdict> {
    let now = obs.now_ms;
    if let (Some(h), Some(probe)) = (&p.health, obs.probes.get(&s.name)) {
        s.health.probes += 1;
        s.health.last_ms = Some(now);
        s.health.last_detail = probe.detail.clone();
        if probe.ok {
            s.health.ok_streak += 1;
            s.health.fail_streak = 0;
        } else {
            s.health.fail_streak += 1;
            s.health.ok_streak = 0;
            if s.health.fail_streak >= h.failure_threshold {
                return Some(Verdict::Fail(format!(
                    "health check GET {} failed {} times in a row: {}",
                    h.url, s.health.fail_streak, probe.detail
                )));
            }
        }
    }
    if let (Some(a), Some(round)) = (&p.analysis, obs.measurements.get(&s.name)) {
        s.analysis.last_ms = Some(now);
        let mut failed = Vec::new();
        let mut inconclusive = Vec::new();
        let mut errors = Vec::new();
        for (metric, m) in round {
            let Some(def) = a.metrics.iter().find(|x| &x.name == metric) else {
                continue;
            };
            match m {
                MeasureObs::Error(e) => errors.push(format!("{metric}: {e}")),
                MeasureObs::Empty => inconclusive.push(format!("{metric}: query `{}` returned no data", def.query)),
                MeasureObs::Value(v) if v.is_nan() => {
                    inconclusive.push(format!("{metric}: query `{}` returned NaN", def.query))
                }
                MeasureObs::Value(v) => {
                    if let Some(fc) = &def.failure_condition {
                        if fc.eval(*v) {
                            failed.push(format!("{metric}: `{}` = {v} meets failureCondition `{fc}`", def.query));
                            continue;
                        }
                    }
                    if let Some(sc) = &def.success_condition {
                        if !sc.eval(*v) {
                            failed.push(format!(
                                "{metric}: `{}` = {v} does not meet successCondition `{sc}`",
                                def.query
                            ));
                        }
                    }
                }
            }
        }
        if failed.is_empty() && !errors.is_empty() {
            s.analysis.error_streak += 1;
            s.analysis.last_detail = errors.join("; ");
            if s.analysis.error_streak > a.consecutive_error_limit {
                return Some(Verdict::Fail(format!(
                    "analysis errored {} times in a row (consecutiveErrorLimit {}): {}",
                    s.analysis.error_streak, a.consecutive_error_limit, s.analysis.last_detail
                )));
            }
        } else {
            // A failed metric counts at once even if another metric of the round errored
            // (Argo Rollouts keeps each metric's tally separately).
            s.analysis.error_streak = if errors.is_empty() {
                0
            } else {
                s.analysis.error_streak + 1
            };
            s.analysis.measurements += 1;
            if !failed.is_empty() {
                s.analysis.failed += 1;
                s.analysis.last_detail = failed.join("; ");
                if s.analysis.failed > a.failure_limit {
                    return Some(Verdict::Fail(format!("analysis failed: {}", s.analysis.last_detail)));
                }
            } else if !inconclusive.is_empty() {
                s.analysis.inconclusive += 1;
                s.analysis.last_detail = inconclusive.join("; ");
                if s.analysis.inconclusive > a.inconclusive_limit {
                    return Some(Verdict::Inconclusive(s.analysis.last_detail.clone()));
                }
            } else {
                s.analysis.successful += 1;
                s.analysis.last_detail = "all metrics passed".into();
            }
        }
    }
    let health_ok = p
        .health
        .as_ref()
        .is_none_or(|h| s.health.ok_streak >= h.success_threshold);
    let analysis_ok = p.analysis.as_ref().is_none_or(|a| s.analysis.measurements >= a.count);
    let window_ok = now - s.phase_started_ms >= p.verify_window_ms;
    (health_ok && analysis_ok && window_ok).then_some(Verdict::Pass)
}

/// Services due for a health probe now.
pub fn due_probes(r: &Rollout, desired: &Desired, now_ms: i64) -> Vec<(String, steward_spec::HealthCheck)> {
    if r.phase.is_terminal() {
        return vec![];
    }
    r.services
        .iter()
        .filter(|s| s.phase == SvcPhase::Verifying)
        .filter_map(|s| {
            let d = desired.services.iter().find(|d| d.name == s.name)?;
            let h = d.rollout.health.clone()?;
            let interval = h.interval.get().as_millis() as i64;
            s.health
                .last_ms
                .is_none_or(|t| now_ms - t >= interval)
                .then(|| (s.name.clone(), h))
        })
        .collect()
}

/// Services due for an analysis round now.
pub fn due_analysis(r: &Rollout, desired: &Desired, now_ms: i64) -> Vec<(String, steward_spec::Analysis)> {
    if r.phase.is_terminal() {
        return vec![];
    }
    r.services
        .iter()
        .filter(|s| s.phase == SvcPhase::Verifying)
        .filter_map(|s| {
            let d = desired.services.iter().find(|d| d.name == s.name)?;
            let a = d.rollout.analysis.clone()?;
            if s.analysis.measurements >= a.count {
                return None;
            }
            let interval = a.interval.get().as_millis() as i64;
            s.analysis
                .last_ms
                .is_none_or(|t| now_ms - t >= interval)
                .then(|| (s.name.clone(), a))
        })
        .collect()
}

/// When the rollout next needs a look (probe or measurement due, or deadlines), if sooner than
/// the controller's convergence poll.
pub fn next_due_ms(r: &Rollout, desired: &Desired) -> Option<i64> {
    if r.phase.is_terminal() {
        return None;
    }
    let mut next: Option<i64> = None;
    let mut consider = |t: i64| next = Some(next.map_or(t, |n: i64| n.min(t)));
    for s in r.services.iter().filter(|s| s.phase == SvcPhase::Verifying) {
        if let Some(d) = desired.services.iter().find(|d| d.name == s.name) {
            if let Some(h) = &d.rollout.health {
                consider(s.health.last_ms.unwrap_or(0) + h.interval.get().as_millis() as i64);
            }
            if let Some(a) = d
                .rollout
                .analysis
                .as_ref()
                .filter(|a| s.analysis.measurements < a.count)
            {
                consider(s.analysis.last_ms.unwrap_or(0) + a.interval.get().as_millis() as i64);
            }
            consider(s.phase_started_ms + d.rollout.verify_window_ms);
        }
    }
    next
}
