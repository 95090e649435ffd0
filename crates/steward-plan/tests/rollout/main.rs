//! The rollout state machine driven pass by pass with a fake clock: what each pass decides
//! (phases, events, jobs to start or remove, finished revisions) and what `effective()` lets
//! the planner do at each point.
//!
//! Shared builders and readers live here; the tests are in one module per topic beside this file.

#[path = "../fixtures/mod.rs"]
mod fixtures;

mod failures;
mod metric_analysis;
mod pre_deploy;
mod regressions;
mod revisions;
mod scheduling;
mod services;
mod verify;

use std::collections::{BTreeMap, BTreeSet};

use fixtures::*;
use steward_plan::rollout::*;
use steward_plan::{
    plan, Action, Desired, DesiredService, Hold, ObservedService, Plan, RolloutPolicy, UpdateState, UpdateStatus,
};
use steward_spec::{Analysis, AnalysisMetric, Condition, Duration, HealthCheck, PreDeployJob, ResourceName};

/// The fake clock's origin (unix ms).
const T0: i64 = 1_700_000_000_000;
const SEC: i64 = 1_000;
const DESIRED_HASH: &str = "desired-gen-2";

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

const HEALTH_URL: &str = "http://127.0.0.1:8000/health";

fn health(success_threshold: u32, failure_threshold: u32, interval_s: u64) -> HealthCheck {
    HealthCheck {
        url: HEALTH_URL.into(),
        expect_status: 200,
        interval: Duration::from_secs(interval_s),
        timeout: Duration::from_secs(1),
        success_threshold,
        failure_threshold,
    }
}

fn cond(text: &str) -> Condition {
    Condition::try_from(text.to_string()).expect("valid condition")
}

const ERROR_QUERY: &str = "sum(rate(http_errors[1m])) / sum(rate(http_requests[1m]))";

/// A metric named `error-rate` over [`ERROR_QUERY`].
fn error_rate(success: Option<&str>, failure: Option<&str>) -> AnalysisMetric {
    AnalysisMetric {
        name: "error-rate".into(),
        query: ERROR_QUERY.into(),
        success_condition: success.map(cond),
        failure_condition: failure.map(cond),
    }
}

/// Analysis with Argo Rollouts' defaults for the limits (0, 0, 4).
fn analysis(count: u32, interval_s: u64, metrics: Vec<AnalysisMetric>) -> Analysis {
    Analysis {
        prometheus: "http://127.0.0.1:9090".into(),
        interval: Duration::from_secs(interval_s),
        count,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        metrics,
    }
}

fn job(name: &str, timeout_s: u64) -> PreDeployJob {
    PreDeployJob {
        name: ResourceName::try_from(name.to_string()).expect("valid job name"),
        command: None,
        args: None,
        timeout: Duration::from_secs(timeout_s),
    }
}

/// `d` with its rollout policy changed (the policy is not part of the spec hash).
fn with_policy(mut d: DesiredService, f: impl FnOnce(&mut RolloutPolicy)) -> DesiredService {
    f(&mut d.rollout);
    d
}

/// The known-good revision of `d`.
fn good(d: &DesiredService) -> Revision {
    Revision::of(d, 1, T0 - 3_600 * SEC, Outcome::Complete)
}

fn last_good(ds: &[&DesiredService]) -> BTreeMap<String, Revision> {
    ds.iter().map(|d| (d.name.clone(), good(d))).collect()
}

/// Generation 2 of the stack.
fn gen2(services: Vec<DesiredService>) -> Desired {
    stack_with(STACK, false, 2, services)
}

fn swarm(services: Vec<ObservedService>) -> BTreeMap<String, ObservedService> {
    services.into_iter().map(|s| (s.name.clone(), s)).collect()
}

/// What the controller gathered at `now`: Swarm's services, nothing else yet.
fn at(now: i64, services: Vec<ObservedService>) -> Observations {
    Observations {
        now_ms: now,
        services: swarm(services),
        ..Default::default()
    }
}

trait ObsExt {
    fn probe(self, service: &str, ok: bool, detail: &str) -> Self;
    fn measure(self, service: &str, metric: &str, m: MeasureObs) -> Self;
    fn job(self, swarm_name: &str, j: JobObs) -> Self;
}

impl ObsExt for Observations {
    fn probe(mut self, service: &str, ok: bool, detail: &str) -> Self {
        self.probes.insert(
            service.into(),
            ProbeObs {
                ok,
                detail: detail.into(),
            },
        );
        self
    }
    fn measure(mut self, service: &str, metric: &str, m: MeasureObs) -> Self {
        self.measurements
            .entry(service.into())
            .or_default()
            .push((metric.into(), m));
        self
    }
    fn job(mut self, swarm_name: &str, j: JobObs) -> Self {
        self.jobs.insert(swarm_name.into(), j);
        self
    }
}

/// Swarm's view of `o` with an update status that Swarm started at `started_ms`.
fn with_status(mut o: ObservedService, state: UpdateState, started_ms: i64) -> ObservedService {
    o.update_status = Some(UpdateStatus {
        state,
        message: format!("update {state:?}"),
        started_at_ms: Some(started_ms),
    });
    o
}

/// Steward wrote `d`; Swarm is replacing tasks (none running the new spec yet).
fn rolling(d: &DesiredService, started_ms: i64) -> ObservedService {
    with_status(observed_from(d).running(0).build(), UpdateState::Updating, started_ms)
}

/// Swarm finished the update to `d`: every task runs it.
fn converged(d: &DesiredService) -> ObservedService {
    observed_from(d).build()
}

// ---------------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------------

fn reasons(out: &StepOutput) -> Vec<&'static str> {
    out.events.iter().map(|e| e.reason.as_str()).collect()
}

fn event<'a>(out: &'a StepOutput, reason: &str) -> &'a RolloutEvent {
    out.events
        .iter()
        .find(|e| e.reason == reason)
        .unwrap_or_else(|| panic!("no {reason} event in {:#?}", out.events))
}

fn phase_of(r: &Rollout, name: &str) -> SvcPhase {
    r.service(name)
        .unwrap_or_else(|| panic!("{name} not in the rollout"))
        .phase
}

fn finished(name: &str, hash: &str, o: Outcome) -> (String, String, Outcome) {
    (name.into(), hash.into(), o)
}

/// The spec hash `effective()` gives the planner for `name`, `None` when absent.
fn target_hash(eff: &Desired, name: &str) -> Option<String> {
    eff.services
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.spec_hash.clone())
}

fn effective_hash(d: &Desired, r: &Rollout, observed: &[ObservedService], name: &str) -> String {
    let eff = effective(d, Some(r), &swarm(observed.to_vec()));
    target_hash(&eff, name).unwrap_or_else(|| panic!("{name} missing from effective: {eff:#?}"))
}

fn plan_for(d: &Desired, r: &Rollout, observed: &[ObservedService]) -> Plan {
    let eff = effective(d, Some(r), &swarm(observed.to_vec()));
    plan(&eff, &known(observed.to_vec()))
}

fn hold_reasons(p: &Plan) -> Vec<(&str, &'static str)> {
    p.held.iter().map(|h| (h.name.as_str(), h.hold.reason())).collect()
}

/// Begins the rollout of `new` over `old` (one service) and drives it to Verifying at
/// `T0 + 10s`, the time returned.
fn to_verifying(old: &DesiredService, new: &DesiredService) -> (Desired, Rollout, i64) {
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[old]), T0).expect("a change");
    let out = step(&mut r, &d, &at(T0, vec![converged(old)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    let t1 = T0 + 10 * SEC;
    let out = step(&mut r, &d, &at(t1, vec![converged(new)]));
    assert_eq!(reasons(&out), ["RolloutVerifying"]);
    assert_eq!(
        (r.phase, phase_of(&r, &new.name)),
        (Phase::Verifying, SvcPhase::Verifying)
    );
    (d, r, t1)
}

fn v1() -> DesiredService {
    desired("web").image("app:v1").build()
}

fn v2() -> DesiredService {
    desired("web").image("app:v2").build()
}

/// Single-service rollout of v1 → v2, after pass 1 at T0 (Updating since T0).
fn updating_rollout() -> (DesiredService, DesiredService, Desired, Rollout) {
    let (old, new) = (v1(), v2());
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    assert_eq!(phase_of(&r, "web"), SvcPhase::Updating);
    (old, new, d, r)
}

fn analysed(a: Analysis) -> DesiredService {
    with_policy(v2(), |p| {
        p.analysis = Some(a);
        p.verify_window_ms = 0;
    })
}

fn with_jobs(d: DesiredService, jobs: Vec<PreDeployJob>) -> DesiredService {
    with_policy(d, |p| p.pre_deploy = jobs)
}
