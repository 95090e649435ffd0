//! The rollout state machine driven pass by pass with a fake clock: what each pass decides
//! (phases, events, jobs to start or remove, finished revisions) and what `effective()` lets
//! the planner do at each point.

mod fixtures;

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

// ---------------------------------------------------------------------------------------------
// Swarm's own failures
// ---------------------------------------------------------------------------------------------

/// Single-service rollout of v1 → v2, after pass 1 at T0 (Updating since T0).
fn updating_rollout() -> (DesiredService, DesiredService, Desired, Rollout) {
    let (old, new) = (v1(), v2());
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    assert_eq!(phase_of(&r, "web"), SvcPhase::Updating);
    (old, new, d, r)
}

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
// Analysis
// ---------------------------------------------------------------------------------------------

fn analysed(a: Analysis) -> DesiredService {
    with_policy(v2(), |p| {
        p.analysis = Some(a);
        p.verify_window_ms = 0;
    })
}

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

// ---------------------------------------------------------------------------------------------
// Pre-deploy jobs
// ---------------------------------------------------------------------------------------------

fn with_jobs(d: DesiredService, jobs: Vec<PreDeployJob>) -> DesiredService {
    with_policy(d, |p| p.pre_deploy = jobs)
}

#[test]
fn pre_deploy_jobs_run_one_at_a_time_then_the_update_starts() {
    let old = desired("web")
        .image("app:v1")
        .secret_env("DB_PASSWORD", "hunter2")
        .build();
    let mut migrate = job("migrate", 300);
    migrate.command = Some(vec!["python".into(), "manage.py".into(), "migrate".into()]);
    let mut collect = job("collectstatic", 300);
    collect.args = Some(vec!["--noinput".into()]);
    let new = with_jobs(
        desired("web")
            .image("app:v2")
            .env("MODE", "prod")
            .secret_env("DB_PASSWORD", "hunter2")
            .build(),
        vec![migrate, collect],
    );
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert_eq!(r.phase, Phase::PreDeploy);
    let names: Vec<&str> = r.jobs.iter().map(|j| j.swarm_name.as_str()).collect();
    let (m, c) = (
        job_swarm_name("web", "migrate", &new.spec_hash),
        job_swarm_name("web", "collectstatic", &new.spec_hash),
    );
    assert_eq!(names, [m.as_str(), c.as_str()]);
    assert_eq!(m, format!("web-migrate-{}", &new.spec_hash[..8]));
    assert!(r.jobs.iter().all(|j| j.started_ms.is_none() && !j.done));
    let running_old = || vec![converged(&old)];

    // Every pass until the jobs are done, the old spec is what the planner keeps.
    let keeps_old = |r: &Rollout| {
        assert_eq!(phase_of(r, "web"), SvcPhase::Pending);
        let eff = effective(&d, Some(r), &swarm(running_old()));
        assert_eq!(target_hash(&eff, "web"), Some(old.spec_hash.clone()));
        assert!(eff.gates.is_empty());
        assert!(plan_for(&d, r, &running_old()).actions.is_empty());
    };
    keeps_old(&r);

    // Pass 1: the first job starts with the new image and environment.
    let out = step(&mut r, &d, &at(T0, running_old()));
    assert_eq!(reasons(&out), ["PreDeployStarted"]);
    assert_eq!(out.start_jobs.len(), 1);
    let s = &out.start_jobs[0];
    assert_eq!(
        (
            s.swarm_name.as_str(),
            s.service.as_str(),
            s.job.as_str(),
            s.image.as_str()
        ),
        (m.as_str(), "web", "migrate", "app:v2")
    );
    assert_eq!(s.command, ["python", "manage.py", "migrate"]);
    assert!(s.args.is_empty());
    assert_eq!(s.env.get("MODE").map(String::as_str), Some("prod"));
    assert_eq!(
        s.env.get("DB_PASSWORD").map(String::as_str),
        Some("hunter2"),
        "jobs get the real secret"
    );
    assert_eq!(r.jobs[0].started_ms, Some(T0));
    assert_eq!(r.phase, Phase::PreDeploy);
    keeps_old(&r);

    // Running, then briefly not visible: never started twice.
    for (t, j) in [(T0 + SEC, JobObs::Running), (T0 + 2 * SEC, JobObs::Missing)] {
        let out = step(&mut r, &d, &at(t, running_old()).job(&m, j));
        assert!(out.events.is_empty() && out.start_jobs.is_empty() && out.remove_jobs.is_empty());
        keeps_old(&r);
    }

    // Succeeds: removed; the next job waits for the next pass.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 3 * SEC, running_old()).job(
            &m,
            JobObs::Succeeded {
                logs: "Applied 3 migrations".into(),
            },
        ),
    );
    assert_eq!(reasons(&out), ["PreDeploySucceeded"]);
    assert!(event(&out, "PreDeploySucceeded")
        .message
        .contains("Applied 3 migrations"));
    assert_eq!(out.remove_jobs, std::slice::from_ref(&m));
    assert!(out.start_jobs.is_empty());
    assert!(r.jobs[0].done && r.jobs[1].started_ms.is_none());
    assert_eq!(r.phase, Phase::PreDeploy);
    keeps_old(&r);

    let done_m = || JobObs::Succeeded { logs: String::new() };
    let out = step(&mut r, &d, &at(T0 + 4 * SEC, running_old()).job(&m, done_m()));
    assert_eq!(reasons(&out), ["PreDeployStarted"]);
    assert_eq!(out.start_jobs.len(), 1);
    assert_eq!(
        (out.start_jobs[0].swarm_name.as_str(), out.start_jobs[0].job.as_str()),
        (c.as_str(), "collectstatic")
    );
    assert!(out.start_jobs[0].command.is_empty());
    assert_eq!(out.start_jobs[0].args, ["--noinput"]);
    keeps_old(&r);

    // Last job done: the same pass moves on to updating the service.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 5 * SEC, running_old())
            .job(&m, done_m())
            .job(&c, JobObs::Succeeded { logs: String::new() }),
    );
    assert_eq!(
        reasons(&out),
        ["PreDeploySucceeded", "PreDeployComplete", "RolloutUpdating"]
    );
    assert_eq!(out.remove_jobs, std::slice::from_ref(&c));
    assert!(event(&out, "PreDeployComplete")
        .message
        .contains("web/migrate, web/collectstatic"));
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Updating, SvcPhase::Updating));
    assert_eq!(r.phase_started_ms, T0 + 5 * SEC);
    assert_eq!(effective_hash(&d, &r, &running_old(), "web"), new.spec_hash);

    // No job is started again afterwards, whatever Swarm shows.
    let out = step(&mut r, &d, &at(T0 + 6 * SEC, vec![rolling(&new, T0 + 6 * SEC)]));
    assert!(out.start_jobs.is_empty() && out.remove_jobs.is_empty() && out.events.is_empty());
    let out = step(&mut r, &d, &at(T0 + 9 * SEC, vec![converged(&new)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    assert!(out.start_jobs.is_empty());
}

#[test]
fn pre_deploy_failure_rolls_back_without_any_write() {
    let old = v1();
    let new = with_jobs(v2(), vec![job("migrate", 300)]);
    let cache = desired("cache").image("redis:7").build();
    let d = gen2(vec![new.clone(), cache.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert_eq!(r.phase, Phase::PreDeploy);
    assert!(r.service("cache").unwrap().from.is_none());
    let m = r.jobs[0].swarm_name.clone();
    let observed = || vec![converged(&old)];

    let no_write = |r: &Rollout| {
        let eff = effective(&d, Some(r), &swarm(observed()));
        assert_eq!(target_hash(&eff, "web"), Some(old.spec_hash.clone()));
        let p = plan(&eff, &known(observed()));
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
    };

    // While the job runs: web keeps v1, the new cache waits for the jobs.
    let out = step(&mut r, &d, &at(T0, observed()));
    assert_eq!(out.start_jobs.len(), 1);
    assert!(r.services.iter().all(|s| s.phase == SvcPhase::Pending));
    let eff = effective(&d, Some(&r), &swarm(observed()));
    assert_eq!(
        eff.gates.get("cache"),
        Some(&Hold::WaitingOn {
            what: "pre-deploy jobs (migrate)".into()
        })
    );
    no_write(&r);
    let out = step(&mut r, &d, &at(T0 + SEC, observed()).job(&m, JobObs::Running));
    assert!(out.events.is_empty());
    assert!(r.services.iter().all(|s| s.phase == SvcPhase::Pending));
    no_write(&r);

    let out = step(
        &mut r,
        &d,
        &at(T0 + 2 * SEC, observed()).job(
            &m,
            JobObs::Failed {
                reason: "exit code 1".into(),
                logs: "relation \"orders\" does not exist".into(),
            },
        ),
    );
    assert_eq!(reasons(&out), ["PreDeployFailed", "RolledBack"]);
    assert!(out.start_jobs.is_empty());
    assert_eq!(out.remove_jobs, std::slice::from_ref(&m));
    let failed = event(&out, "PreDeployFailed");
    assert!(failed.warning() && failed.object == "Service/web");
    assert!(
        failed.message.contains("exit code 1") && failed.message.contains("relation \"orders\" does not exist"),
        "{}",
        failed.message
    );
    assert!(event(&out, "RolledBack").message.contains("no service was changed"));
    let mut fin = out.finished.clone();
    fin.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fin,
        [
            finished("cache", &cache.spec_hash, Outcome::RolledBack),
            finished("web", &new.spec_hash, Outcome::RolledBack)
        ]
    );
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(r.services.iter().all(|s| s.phase == SvcPhase::RolledBack));
    assert_eq!(
        r.cause.as_deref(),
        Some("pre-deploy job web/migrate failed: exit code 1")
    );

    // Afterwards: web stays on v1, the cache is never created.
    no_write(&r);
    let eff = effective(&d, Some(&r), &swarm(observed()));
    assert!(target_hash(&eff, "cache").is_none());
    assert_eq!(eff.remove, BTreeSet::from(["cache".to_string()]));
    let out = step(&mut r, &d, &at(T0 + 60 * SEC, observed()).job(&m, JobObs::Missing));
    assert!(out.events.is_empty() && out.start_jobs.is_empty() && out.finished.is_empty());
}

#[test]
fn job_missing_after_start_is_not_restarted_and_fails_after_its_timeout() {
    let old = v1();
    let new = with_jobs(v2(), vec![job("migrate", 60)]);
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    let out = step(&mut r, &d, &at(T0, vec![converged(&old)]));
    assert_eq!(out.start_jobs.len(), 1);
    for t in [T0 + SEC, T0 + 30 * SEC, T0 + 60 * SEC] {
        let out = step(&mut r, &d, &at(t, vec![converged(&old)]));
        assert!(
            out.start_jobs.is_empty() && out.events.is_empty(),
            "at +{}ms: {:?}",
            t - T0,
            out.events
        );
        assert_eq!(r.phase, Phase::PreDeploy);
    }
    let out = step(&mut r, &d, &at(T0 + 60 * SEC + 1, vec![converged(&old)]));
    assert_eq!(reasons(&out), ["PreDeployFailed", "RolledBack"]);
    assert!(out.start_jobs.is_empty());
    assert!(event(&out, "PreDeployFailed")
        .message
        .contains("job service disappeared"));
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(phase_of(&r, "web"), SvcPhase::RolledBack);
    assert_eq!(effective_hash(&d, &r, &[converged(&old)], "web"), old.spec_hash);
}

#[test]
fn running_job_times_out() {
    let new = with_jobs(v2(), vec![job("migrate", 60)]);
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&v1())]));
    let m = r.jobs[0].swarm_name.clone();
    assert!(step(&mut r, &d, &at(T0 + 60 * SEC, vec![]).job(&m, JobObs::Running))
        .events
        .is_empty());
    let out = step(&mut r, &d, &at(T0 + 61 * SEC, vec![]).job(&m, JobObs::Running));
    assert_eq!(reasons(&out), ["PreDeployFailed", "RolledBack"]);
    assert_eq!(out.remove_jobs, [m]);
    assert!(event(&out, "PreDeployFailed").message.contains("timed out after 60s"));
}

#[test]
fn a_started_job_survives_a_restart_and_is_not_started_again() {
    let new = with_jobs(v2(), vec![job("migrate", 300)]);
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0).unwrap();
    assert_eq!(step(&mut r, &d, &at(T0, vec![converged(&v1())])).start_jobs.len(), 1);
    // The controller persists, crashes, and reloads before Swarm lists the job.
    let text = serde_json::to_string(&r).unwrap();
    let mut reloaded: Rollout = serde_json::from_str(&text).unwrap();
    assert_eq!(reloaded, r);
    let out = step(&mut reloaded, &d, &at(T0 + 5 * SEC, vec![converged(&v1())]));
    assert!(out.start_jobs.is_empty() && out.events.is_empty());
    // And a fresh `begin` for the same revision names the job the same: Swarm's copy is found.
    let again = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0 + 9 * SEC).unwrap();
    assert_eq!(again.jobs[0].swarm_name, r.jobs[0].swarm_name);
}

#[test]
fn job_names_are_deterministic_and_fit_swarm() {
    let h = "0123456789abcdef";
    assert_eq!(job_swarm_name("web", "migrate", h), "web-migrate-01234567");
    assert_eq!(job_swarm_name("web", "migrate", h), job_swarm_name("web", "migrate", h));
    assert_ne!(
        job_swarm_name("web", "migrate", h),
        job_swarm_name("web", "migrate", "fedcba9876543210")
    );
    let long = "s".repeat(63);
    let n = job_swarm_name(&long, "migrate", h);
    assert_eq!(n.len(), 63);
    assert!(n.ends_with("-migrate-01234567"), "{n}");
}

// ---------------------------------------------------------------------------------------------
// dependsOn
// ---------------------------------------------------------------------------------------------

fn worker(image: &str) -> DesiredService {
    desired("worker").image(image).build()
}

fn after_web(d: DesiredService) -> DesiredService {
    with_policy(d, |p| p.depends_on = vec!["web".into()])
}

#[test]
fn depends_on_waits_for_the_dependency_to_be_verified() {
    let (web1, web2) = (v1(), v2());
    let (wk1, wk2) = (worker("app:v1"), after_web(worker("app:v2")));
    let d = gen2(vec![web2.clone(), wk2.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &wk1]), T0).unwrap();

    let out = step(&mut r, &d, &at(T0, vec![converged(&web1), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    assert_eq!(out.events[0].object, "Service/web");
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::Updating, SvcPhase::Pending)
    );
    let obs = [converged(&web1), converged(&wk1)];
    assert_eq!(effective_hash(&d, &r, &obs, "web"), web2.spec_hash);
    assert_eq!(
        effective_hash(&d, &r, &obs, "worker"),
        wk1.spec_hash,
        "worker keeps its old spec while waiting"
    );
    assert!(effective(&d, Some(&r), &swarm(obs.to_vec())).gates.is_empty());

    // web written but not converged: worker still waits.
    let out = step(
        &mut r,
        &d,
        &at(T0 + SEC, vec![rolling(&web2, T0 + SEC), converged(&wk1)]),
    );
    assert!(out.events.is_empty());
    assert_eq!(phase_of(&r, "worker"), SvcPhase::Pending);

    // web verified; worker starts on the next pass.
    let out = step(&mut r, &d, &at(T0 + 5 * SEC, vec![converged(&web2), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolloutVerified"]);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker"), r.phase),
        (SvcPhase::Verified, SvcPhase::Pending, Phase::Updating)
    );
    assert_eq!(r.progress(), (1, 2));
    let out = step(&mut r, &d, &at(T0 + 6 * SEC, vec![converged(&web2), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    assert_eq!(out.events[0].object, "Service/worker");
    assert_eq!(
        effective_hash(&d, &r, &[converged(&web2), converged(&wk1)], "worker"),
        wk2.spec_hash
    );

    let out = step(&mut r, &d, &at(T0 + 9 * SEC, vec![converged(&web2), converged(&wk2)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    let mut fin = out.finished.clone();
    fin.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fin,
        [
            finished("web", &web2.spec_hash, Outcome::Complete),
            finished("worker", &wk2.spec_hash, Outcome::Complete)
        ]
    );
}

#[test]
fn a_failing_dependency_rolls_back_the_dependent_that_never_started() {
    let (web1, wk1) = (v1(), worker("app:v1"));
    let web2 = with_policy(v2(), |p| {
        p.health = Some(health(1, 1, 2));
        p.verify_window_ms = 10_000;
    });
    let wk2 = after_web(worker("app:v2"));
    let d = gen2(vec![web2.clone(), wk2.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &wk1]), T0).unwrap();
    let mut all_events = Vec::new();

    all_events.extend(step(&mut r, &d, &at(T0, vec![converged(&web1), converged(&wk1)])).events);
    all_events.extend(step(&mut r, &d, &at(T0 + 5 * SEC, vec![converged(&web2), converged(&wk1)])).events);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::Verifying, SvcPhase::Pending)
    );

    let out = step(
        &mut r,
        &d,
        &at(T0 + 6 * SEC, vec![converged(&web2), converged(&wk1)]).probe("web", false, "HTTP 500"),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert!(
        event(&out, "RollingBack").message.contains("web, worker"),
        "{}",
        event(&out, "RollingBack").message
    );
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::RollingBack, SvcPhase::RolledBack)
    );
    assert!(
        out.finished.is_empty(),
        "the revision is finished once every service is back"
    );
    all_events.extend(out.events);
    let obs = [converged(&web2), converged(&wk1)];
    assert_eq!(effective_hash(&d, &r, &obs, "web"), web1.spec_hash);
    assert_eq!(effective_hash(&d, &r, &obs, "worker"), wk1.spec_hash);

    let out = step(&mut r, &d, &at(T0 + 20 * SEC, vec![converged(&web1), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    let mut fin = out.finished.clone();
    fin.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fin,
        [
            finished("web", &web2.spec_hash, Outcome::RolledBack),
            finished("worker", &wk2.spec_hash, Outcome::RolledBack)
        ]
    );
    all_events.extend(out.events);
    assert!(
        !all_events
            .iter()
            .any(|e| e.object == "Service/worker" && e.reason == "RolloutUpdating"),
        "worker never started: {all_events:#?}"
    );
}

#[test]
fn a_new_dependent_waits_gated_and_is_removed_when_the_dependency_fails() {
    let web1 = v1();
    let web2 = with_policy(v2(), |p| p.progress_deadline_ms = 30_000);
    let wk = after_web(worker("app:v2"));
    let d = gen2(vec![web2.clone(), wk.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&web1)]));
    assert_eq!(phase_of(&r, "worker"), SvcPhase::Pending);
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&web1)]));
    assert_eq!(
        eff.gates.get("worker"),
        Some(&Hold::WaitingOn {
            what: "dependencies of worker".into()
        })
    );
    let p = plan(&eff, &known(vec![converged(&web1)]));
    assert!(
        !p.actions.iter().any(|a| a.object() == "Service/worker"),
        "not created while waiting: {:#?}",
        p.actions
    );
    assert_eq!(hold_reasons(&p), [("worker", "WaitingOn")]);

    let out = step(&mut r, &d, &at(T0 + 31 * SEC, vec![rolling(&web2, T0 + SEC)]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::RollingBack, SvcPhase::RolledBack),
        "never created: nothing to wait for"
    );
    let eff = effective(&d, Some(&r), &swarm(vec![rolling(&web2, T0 + SEC)]));
    assert!(target_hash(&eff, "worker").is_none());
    assert!(eff.remove.contains("worker"));
}

// ---------------------------------------------------------------------------------------------
// Services created by a failed revision
// ---------------------------------------------------------------------------------------------

#[test]
fn a_service_created_by_a_failed_revision_is_removed_and_not_recreated() {
    let web1 = v1();
    let web2 = with_policy(v2(), |p| p.progress_deadline_ms = 60_000);
    let cache = desired("cache").image("redis:7").build();
    let d = gen2(vec![web2.clone(), cache.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1]), T0).unwrap();

    let out = step(&mut r, &d, &at(T0, vec![converged(&web1)]));
    assert_eq!(reasons(&out), ["RolloutUpdating", "RolloutUpdating"]);
    let p = plan_for(&d, &r, &[converged(&web1)]);
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Create { service } if service.name == "cache")),
        "{:#?}",
        p.actions
    );

    // cache comes up (no checks: verified at once); web never converges.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 5 * SEC, vec![rolling(&web2, T0 + SEC), converged(&cache)]),
    );
    assert_eq!(reasons(&out), ["RolloutVerified"]);
    assert_eq!(phase_of(&r, "cache"), SvcPhase::Verified);
    let out = step(
        &mut r,
        &d,
        &at(T0 + 61 * SEC, vec![rolling(&web2, T0 + SEC), converged(&cache)]),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "cache")),
        (SvcPhase::RollingBack, SvcPhase::RollingBack)
    );

    // The planner restores web and removes cache even with prune off.
    assert!(!d.prune);
    let obs = [rolling(&web2, T0 + SEC), converged(&cache)];
    let eff = effective(&d, Some(&r), &swarm(obs.to_vec()));
    assert!(target_hash(&eff, "cache").is_none());
    assert_eq!(eff.remove, BTreeSet::from(["cache".to_string()]));
    let p = plan(&eff, &known(obs.to_vec()));
    let mut objects: Vec<(String, &str)> = p
        .actions
        .iter()
        .map(|a| {
            (
                a.object().to_string(),
                match a {
                    Action::Create { .. } => "create",
                    Action::Update { .. } => "update",
                    Action::Remove { .. } => "remove",
                },
            )
        })
        .collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            ("Service/cache".to_string(), "remove"),
            ("Service/web".to_string(), "update")
        ]
    );

    // web back, cache still there: not done.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 70 * SEC, vec![converged(&web1), converged(&cache)]),
    );
    assert!(out.events.is_empty());
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "cache"), r.phase),
        (SvcPhase::RolledBack, SvcPhase::RollingBack, Phase::RollingBack)
    );

    // cache gone: RolledBack.
    let out = step(&mut r, &d, &at(T0 + 75 * SEC, vec![converged(&web1)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    assert!(
        event(&out, "RolledBack").message.contains("cache removed"),
        "{}",
        event(&out, "RolledBack").message
    );
    assert_eq!(r.phase, Phase::RolledBack);

    // Not created again while the desired state is unchanged.
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&web1)]));
    assert!(target_hash(&eff, "cache").is_none());
    assert!(eff.remove.contains("cache"));
    let p = plan(&eff, &known(vec![converged(&web1)]));
    assert!(p.actions.is_empty(), "{:#?}", p.actions);
}

// ---------------------------------------------------------------------------------------------
// Scale-only changes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_scale_only_change_has_no_jobs_and_no_verification() {
    let policy = |d: DesiredService| {
        with_policy(d, |p| {
            p.health = Some(health(1, 3, 2));
            p.verify_window_ms = 30_000;
            p.pre_deploy = vec![job("migrate", 300)];
        })
    };
    let old = policy(
        desired("web")
            .image("app:v1")
            .secret_env("DB_PASSWORD", "hunter2")
            .build(),
    );
    let new = policy(
        desired("web")
            .image("app:v1")
            .secret_env("DB_PASSWORD", "hunter2")
            .replicas(3)
            .build(),
    );
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert!(r.service("web").unwrap().scale_only);
    assert!(r.jobs.is_empty());
    assert_eq!(r.phase, Phase::Updating);

    let out = step(&mut r, &d, &at(T0, vec![converged(&old)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    assert!(out.start_jobs.is_empty());
    let out = step(&mut r, &d, &at(T0 + SEC, vec![observed_from(&new).running(2).build()]));
    assert!(out.events.is_empty());
    assert!(due_probes(&r, &d, T0 + SEC).is_empty());
    let out = step(&mut r, &d, &at(T0 + 2 * SEC, vec![converged(&new)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    assert!(event(&out, "RolloutVerified").message.contains("3/3 tasks"));
    assert_eq!(r.phase, Phase::Complete);
}

/// Swarm starts no update for a scale: the status left by an old rollback must not hold the
/// rollout until its deadline (and then roll back a plain scale).
#[test]
fn a_scale_after_a_swarm_rollback_completes() {
    let (old, new) = (v1(), desired("web").image("app:v1").replicas(3).build());
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert!(r.service("web").unwrap().scale_only);
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    let stale = with_status(converged(&new), UpdateState::RollbackCompleted, T0 - 3_600 * SEC);
    let out = step(&mut r, &d, &at(T0 + SEC, vec![stale]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
}

#[test]
fn an_image_change_with_new_replicas_is_not_scale_only() {
    let old = v1();
    let new = with_jobs(
        desired("web").image("app:v2").replicas(3).build(),
        vec![job("migrate", 300)],
    );
    let d = gen2(vec![new.clone()]);
    let r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert!(!r.service("web").unwrap().scale_only);
    assert_eq!(r.jobs.len(), 1);
    assert_eq!(r.phase, Phase::PreDeploy);
}

#[test]
fn only_changed_services_join_the_rollout() {
    let (web1, db) = (v1(), desired("db").image("postgres:16").build());
    let d = gen2(vec![v2(), db.clone()]);
    let r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &db]), T0).unwrap();
    assert_eq!(r.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["web"]);
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&web1), converged(&db)]));
    assert_eq!(target_hash(&eff, "db"), Some(db.spec_hash.clone()));
}

// ---------------------------------------------------------------------------------------------
// annotate
// ---------------------------------------------------------------------------------------------

#[test]
fn annotate_drops_update_failed_of_rollout_services_and_adds_revision_rejected() {
    let (web1, web2) = (v1(), v2());
    let db = desired("db").image("postgres:16").build();
    let d = gen2(vec![web2.clone(), db.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &db]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&web1), converged(&db)]));

    // Swarm rolled web back by itself; db, outside the rollout, has its own paused update.
    let web_obs = with_status(converged(&web1), UpdateState::RollbackStarted, T0 + SEC);
    let db_obs = with_status(converged(&db), UpdateState::Paused, T0 - 3_600 * SEC);
    let out = step(&mut r, &d, &at(T0 + 10 * SEC, vec![web_obs.clone(), db_obs.clone()]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    let mut p = plan_for(&d, &r, &[web_obs.clone(), db_obs.clone()]);
    // Swarm is restoring the spec the rollout wants back: to the planner that is a wait.
    assert_eq!(
        hold_reasons(&p),
        [("db", "UpdatePaused"), ("web", "AwaitingConvergence")],
        "planner's view before annotate"
    );
    annotate(&mut p, &r);
    assert_eq!(
        hold_reasons(&p),
        [("db", "UpdatePaused"), ("web", "AwaitingConvergence")],
        "annotate adds nothing while rolling back"
    );

    let web_done = with_status(converged(&web1), UpdateState::RollbackCompleted, T0 + SEC);
    let out = step(&mut r, &d, &at(T0 + 20 * SEC, vec![web_done.clone(), db_obs.clone()]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    let mut p = plan_for(&d, &r, &[web_done, db_obs]);
    annotate(&mut p, &r);
    assert_eq!(hold_reasons(&p), [("db", "UpdatePaused"), ("web", "RevisionRejected")]);
    let cause = r.cause.clone().unwrap();
    assert_eq!(p.held[1].hold, Hold::RevisionRejected { cause: cause.clone() });
    assert!(p.held[1].hold.is_error());
    assert!(p.held[1].hold.message("web").contains("not applied again"));
}

#[test]
fn annotate_adds_nothing_while_progressing() {
    let (old, new) = (v1(), v2());
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    let mut p = plan_for(&d, &r, &[rolling(&new, T0 + SEC)]);
    let before = p.held.clone();
    annotate(&mut p, &r);
    assert_eq!(p.held, before);
    assert_eq!(hold_reasons(&p), [("web", "AwaitingConvergence")]);
}

// ---------------------------------------------------------------------------------------------
// Manual rollback
// ---------------------------------------------------------------------------------------------

#[test]
fn manual_rollback_pins_the_chosen_revision() {
    let web1 = v1();
    let web3 = desired("web").image("app:v3").build();
    let db = desired("db").image("postgres:16").build();
    let d = stack_with(STACK, false, 3, vec![web3.clone(), db.clone()]);
    let mut target = Revision::of(&web1, 1, T0 - 7_200 * SEC, Outcome::Complete);
    target.number = 4;
    let mut r = manual_rollback(&d, "desired-gen-3", "web", target.clone(), T0);
    assert!(r.manual);
    assert_eq!(
        (r.phase, r.generation, r.desired_hash.as_str()),
        (Phase::RollingBack, 3, "desired-gen-3")
    );
    let s = r.service("web").unwrap();
    assert_eq!(
        (s.phase, s.to_hash.as_str(), s.to_image.as_str()),
        (SvcPhase::RollingBack, web3.spec_hash.as_str(), "app:v3")
    );
    assert_eq!(s.from.as_ref(), Some(&target));
    assert_eq!(r.cause.as_deref(), Some("web: manual rollback by an operator"));

    let running = [converged(&web3), converged(&db)];
    let eff = effective(&d, Some(&r), &swarm(running.to_vec()));
    assert_eq!(target_hash(&eff, "web"), Some(web1.spec_hash.clone()));
    assert_eq!(
        target_hash(&eff, "db"),
        Some(db.spec_hash.clone()),
        "other services untouched"
    );
    let p = plan(&eff, &known(running.to_vec()));
    assert!(
        matches!(&p.actions[..], [Action::Update { service, .. }] if service.state.image == "app:v1"),
        "{:#?}",
        p.actions
    );

    assert!(step(&mut r, &d, &at(T0 + SEC, running.to_vec())).events.is_empty());
    let out = step(&mut r, &d, &at(T0 + 10 * SEC, vec![converged(&web1), converged(&db)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    assert_eq!(out.finished, [finished("web", &web3.spec_hash, Outcome::RolledBack)]);
    assert_eq!(r.phase, Phase::RolledBack);

    // Pinned: the desired v3 is not applied again.
    for k in 1..=3 {
        assert!(step(
            &mut r,
            &d,
            &at(T0 + k * 60 * SEC, vec![converged(&web1), converged(&db)])
        )
        .events
        .is_empty());
        assert_eq!(
            effective_hash(&d, &r, &[converged(&web1), converged(&db)], "web"),
            web1.spec_hash
        );
    }
    let mut p = plan_for(&d, &r, &[converged(&web1), converged(&db)]);
    assert!(p.actions.is_empty());
    annotate(&mut p, &r);
    assert_eq!(
        p.held,
        [steward_plan::Held {
            name: "web".into(),
            hold: Hold::RevisionRejected {
                cause: "web: manual rollback by an operator".into()
            }
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Revisions and secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn revision_of_blanks_secrets_and_restore_refills_them() {
    let d = desired("web")
        .image("app:v1")
        .env("MODE", "a")
        .secret_env("DB_PASSWORD", "hunter2")
        .build();
    let rev = Revision::of(&d, 7, T0, Outcome::Baseline);
    assert_eq!(
        (
            rev.service.as_str(),
            rev.number,
            rev.generation,
            rev.created_ms,
            rev.outcome
        ),
        ("web", 0, 7, T0, Outcome::Baseline)
    );
    assert_eq!(
        (rev.spec_hash.as_str(), rev.image.as_str()),
        (d.spec_hash.as_str(), "app:v1")
    );
    assert_eq!(rev.state.env.get("DB_PASSWORD").map(String::as_str), Some(""));
    assert_eq!(rev.state.env.get("MODE").map(String::as_str), Some("a"));
    assert_eq!(rev.secret_env, BTreeSet::from(["DB_PASSWORD".to_string()]));
    let json = serde_json::to_string(&rev).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    assert_eq!(serde_json::from_str::<Revision>(&json).unwrap(), rev);

    let policy = RolloutPolicy {
        verify_window_ms: 5_000,
        ..RolloutPolicy::none()
    };
    // From what runs now.
    let running = observed_from(&d).build();
    let x = rev
        .restore(Some(&running.state), None, policy.clone())
        .expect("secret found");
    assert_eq!(x.state.env.get("DB_PASSWORD").map(String::as_str), Some("hunter2"));
    assert_eq!(
        x.spec_hash, d.spec_hash,
        "unchanged secrets: the restored service reads as in sync"
    );
    assert_eq!(
        (x.name.as_str(), x.adopt, &x.secret_env, &x.rollout),
        ("web", false, &d.secret_env, &policy)
    );
    assert_eq!(x.state, d.state);
    // From the desired state when the service is not running.
    let y = rev.restore(None, Some(&d), policy.clone()).expect("secret found");
    assert_eq!(y.spec_hash, d.spec_hash);
    // What runs wins over a rotated desired value.
    let rotated = desired("web")
        .image("app:v2")
        .secret_env("DB_PASSWORD", "rotated")
        .build();
    let z = rev
        .restore(Some(&running.state), Some(&rotated), policy.clone())
        .unwrap();
    assert_eq!(z.state.env.get("DB_PASSWORD").map(String::as_str), Some("hunter2"));
    assert_eq!(z.spec_hash, d.spec_hash);
    // A rotated secret gives another hash.
    let w = rev.restore(None, Some(&rotated), policy.clone()).unwrap();
    assert_eq!(w.state.env.get("DB_PASSWORD").map(String::as_str), Some("rotated"));
    assert_ne!(w.spec_hash, d.spec_hash);
    // Nowhere: no restore.
    assert!(rev.restore(None, None, policy.clone()).is_none());
    let without = desired("web").image("app:v2").build();
    assert!(rev
        .restore(Some(&observed_from(&without).build().state), Some(&without), policy)
        .is_none());
    // Without secrets, restore is exact.
    let plain = v1();
    assert_eq!(
        Revision::of(&plain, 1, T0, Outcome::Complete)
            .restore(None, None, RolloutPolicy::none())
            .unwrap(),
        plain
    );
}

#[test]
fn effective_gates_a_service_whose_previous_secrets_are_unavailable() {
    let old = desired("web")
        .image("app:v1")
        .secret_env("DB_PASSWORD", "hunter2")
        .build();
    let new = with_policy(desired("web").image("app:v2").build(), |p| {
        p.depends_on = vec!["api".into()]
    });
    let api1 = desired("api").image("api:v1").build();
    let api2 = with_policy(desired("api").image("api:v2").build(), |p| {
        p.progress_deadline_ms = 10_000
    });
    let d = gen2(vec![new.clone(), api2.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old, &api1]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&api1)]));
    assert_eq!(phase_of(&r, "web"), SvcPhase::Pending);
    // web is not visible in Swarm and the new desired state dropped the secret.
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&api1)]));
    assert_eq!(
        eff.gates.get("web"),
        Some(&Hold::WaitingOn {
            what: "secrets of the previous revision".into()
        })
    );
    // With it running, the old spec (with its secret) is kept.
    assert_eq!(
        effective_hash(&d, &r, &[converged(&old), converged(&api1)], "web"),
        old.spec_hash
    );
    assert!(effective(&d, Some(&r), &swarm(vec![converged(&old), converged(&api1)]))
        .gates
        .is_empty());

    // After a rollback, an unrestorable revision is rejected rather than applied.
    let out = step(&mut r, &d, &at(T0 + 11 * SEC, vec![rolling(&api2, T0 + SEC)]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(phase_of(&r, "web"), SvcPhase::RolledBack);
    let eff = effective(&d, Some(&r), &swarm(vec![rolling(&api2, T0 + SEC)]));
    assert!(
        matches!(eff.gates.get("web"), Some(Hold::RevisionRejected { .. })),
        "{:?}",
        eff.gates
    );
}

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
