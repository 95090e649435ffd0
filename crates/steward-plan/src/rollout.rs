//! Rollouts: every change of the desired state is rolled out as one persisted state machine,
//! PreDeploy → Updating → Verifying → Complete, or RollingBack → RolledBack. Pure: observations
//! (Swarm, job states, probe results, measurements) come in, the next state and what the
//! planner may do come out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::plan::Hold;

/// What became of a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Being rolled out now.
    Progressing,
    /// Rolled out and verified: a known-good revision.
    Complete,
    /// Failed and rolled back; rejected until the desired state changes.
    RolledBack,
    /// Taken as the starting point (it was already running when steward first saw it).
    Baseline,
}

/// One entry of a service's revision history. Secret env values are blanked before it is
/// stored; a restore takes them from the running service or the current desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub service: String,
    /// Per-service sequence number, assigned by the store.
    pub number: u64,
    pub spec_hash: String,
    pub image: String,
    /// Desired-state generation the revision came from.
    pub generation: u64,
    pub created_ms: i64,
    pub outcome: Outcome,
    pub state: ServiceState,
    pub secret_env: BTreeSet<String>,
    /// [`task_hash`] of the full state (secrets included); empty in records that predate it,
    /// which then count as replacing tasks.
    #[serde(default)]
    pub task_hash: String,
}

impl Revision {
    pub fn of(d: &DesiredService, generation: u64, now_ms: i64, outcome: Outcome) -> Self {
        let mut state = d.state.clone();
        for k in &d.secret_env {
            if let Some(v) = state.env.get_mut(k) {
                v.clear();
            }
        }
        Revision {
            service: d.name.clone(),
            number: 0,
            spec_hash: d.spec_hash.clone(),
            image: d.state.image.clone(),
            generation,
            created_ms: now_ms,
            outcome,
            state,
            secret_env: d.secret_env.clone(),
            task_hash: task_hash(&d.state),
        }
    }

    /// The service to write to restore this revision, secrets filled from `observed` (what
    /// runs now) or `desired`; `None` when a secret cannot be found.
    pub fn restore(
        &self,
        observed: Option<&ServiceState>,
        desired: Option<&DesiredService>,
        policy: RolloutPolicy,
    ) -> Option<DesiredService> {
        let mut state = self.state.clone();
        for k in &self.secret_env {
            let v = observed
                .and_then(|o| o.env.get(k))
                .or_else(|| desired.and_then(|d| d.state.env.get(k)))?;
            state.env.insert(k.clone(), v.clone());
        }
        let mut d = DesiredService::new(self.service.clone(), state, self.secret_env.clone(), false);
        // The hash is of the restored state; it equals the revision's own hash when the secrets
        // are unchanged, which is what makes a restored service read as "in sync".
        d.rollout = policy;
        Some(d)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    PreDeploy,
    Updating,
    Verifying,
    Complete,
    RollingBack,
    RolledBack,
    /// Analysis was inconclusive: left as is for a human decision (Argo Rollouts' behaviour).
    Paused,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Complete | Phase::RolledBack | Phase::Paused)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreDeploy => "PreDeploy",
            Phase::Updating => "Updating",
            Phase::Verifying => "Verifying",
            Phase::Complete => "Complete",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Paused => "Paused",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SvcPhase {
    /// Not started: waiting for pre-deploy jobs or dependencies.
    Pending,
    Updating,
    Verifying,
    Verified,
    RollingBack,
    RolledBack,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthTally {
    pub ok_streak: u32,
    pub fail_streak: u32,
    pub probes: u32,
    pub last_ms: Option<i64>,
    pub last_detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalysisTally {
    pub measurements: u32,
    pub successful: u32,
    pub failed: u32,
    pub inconclusive: u32,
    pub error_streak: u32,
    pub last_ms: Option<i64>,
    pub last_detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRollout {
    pub name: String,
    pub to_hash: String,
    pub to_image: String,
    /// Last known-good revision; `None` for a service this revision creates.
    pub from: Option<Revision>,
    pub phase: SvcPhase,
    pub phase_started_ms: i64,
    /// No task is replaced (replicas, service labels or policies changed): there is nothing new
    /// to verify and Swarm runs no rolling update.
    pub scale_only: bool,
    pub health: HealthTally,
    pub analysis: AnalysisTally,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub service: String,
    pub job: String,
    /// Swarm service name of the job: deterministic per revision, so a restarted controller
    /// finds the job it started instead of starting it again.
    pub swarm_name: String,
    pub started_ms: Option<i64>,
    pub done: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub generation: u64,
    pub desired_hash: String,
    pub phase: Phase,
    pub phase_started_ms: i64,
    pub started_ms: i64,
    pub services: Vec<ServiceRollout>,
    pub jobs: Vec<JobRecord>,
    /// Why it rolled back or paused: the task error, probe result, or query and value.
    pub cause: Option<String>,
    /// Set for an operator's `steward rollback`.
    pub manual: bool,
}

impl Rollout {
    pub fn service(&self, name: &str) -> Option<&ServiceRollout> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Tasks-level progress for status: services verified / services in the rollout.
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .services
            .iter()
            .filter(|s| matches!(s.phase, SvcPhase::Verified | SvcPhase::RolledBack))
            .count();
        (done, self.services.len())
    }
}

/// State of a pre-deploy job as observed in Swarm.
#[derive(Clone, Debug, PartialEq)]
pub enum JobObs {
    Missing,
    Running,
    Succeeded { logs: String },
    Failed { reason: String, logs: String },
}

/// Result of one health probe.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeObs {
    pub ok: bool,
    pub detail: String,
}

/// Result of one analysis query.
#[derive(Clone, Debug, PartialEq)]
pub enum MeasureObs {
    Value(f64),
    Empty,
    Error(String),
}

#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub now_ms: i64,
    /// Swarm services by name (owned ones).
    pub services: BTreeMap<String, ObservedService>,
    pub jobs: BTreeMap<String, JobObs>,
    pub probes: BTreeMap<String, ProbeObs>,
    /// One round per service: (metric name, result) for every metric.
    pub measurements: BTreeMap<String, Vec<(String, MeasureObs)>>,
}

/// An event the rollout wants recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub object: String,
    pub message: String,
}

/// A job to start: the service's *new* image and environment, the job's command.
#[derive(Clone, Debug)]
pub struct JobStart {
    pub swarm_name: String,
    pub service: String,
    pub job: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct StepOutput {
    pub events: Vec<RolloutEvent>,
    pub start_jobs: Vec<JobStart>,
    pub remove_jobs: Vec<String>,
    /// Revisions whose outcome became known at this step.
    pub finished: Vec<(String, String, Outcome)>,
}

/// Deterministic Swarm name of a job: `<service>-<job>-<hash8>`, kept within Swarm's 63 characters.
pub fn job_swarm_name(service: &str, job: &str, hash: &str) -> String {
    let suffix = format!("-{job}-{}", &hash[..hash.len().min(8)]);
    let keep = 63usize.saturating_sub(suffix.len());
    let head: String = service.chars().take(keep).collect();
    format!("{head}{suffix}")
}

/// Starts a rollout for the services whose desired spec differs from their last known-good
/// revision. `None` when nothing changed.
pub fn begin(
    desired: &Desired,
    desired_hash: &str,
    last_good: &BTreeMap<String, Revision>,
    now_ms: i64,
) -> Option<Rollout> {
    let mut services = Vec::new();
    let mut jobs = Vec::new();
    for d in &desired.services {
        let from = last_good.get(&d.name);
        if from.is_some_and(|r| r.spec_hash == d.spec_hash) {
            continue;
        }
        let scale_only = from.is_some_and(|r| !r.task_hash.is_empty() && r.task_hash == task_hash(&d.state));
        if !scale_only {
            for j in &d.rollout.pre_deploy {
                jobs.push(JobRecord {
                    service: d.name.clone(),
                    job: j.name.to_string(),
                    swarm_name: job_swarm_name(&d.name, j.name.as_str(), &d.spec_hash),
                    started_ms: None,
                    done: false,
                });
            }
        }
        services.push(ServiceRollout {
            name: d.name.clone(),
            to_hash: d.spec_hash.clone(),
            to_image: d.state.image.clone(),
            from: from.cloned(),
            phase: SvcPhase::Pending,
            phase_started_ms: now_ms,
            scale_only,
            health: HealthTally::default(),
            analysis: AnalysisTally::default(),
        });
    }
    if services.is_empty() {
        return None;
    }
    Some(Rollout {
        generation: desired.generation,
        desired_hash: desired_hash.to_string(),
        phase: if jobs.is_empty() {
            Phase::Updating
        } else {
            Phase::PreDeploy
        },
        phase_started_ms: now_ms,
        started_ms: now_ms,
        services,
        jobs,
        cause: None,
        manual: false,
    })
}

/// What the planner works toward while `rollout` is in force, and what it must not touch.
pub fn effective(
    desired: &Desired,
    rollout: Option<&Rollout>,
    observed: &BTreeMap<String, ObservedService>,
) -> Desired {
    let mut out = desired.clone();
    let Some(r) = rollout else { return out };
    let mut services = Vec::new();
    for d in &desired.services {
        let Some(sr) = r.service(&d.name) else {
            services.push(d.clone());
            continue;
        };
        let restore = |rev: &Revision| rev.restore(observed.get(&d.name).map(|o| &o.state), Some(d), d.rollout.clone());
        match (sr.phase, &sr.from) {
            (SvcPhase::Updating | SvcPhase::Verifying | SvcPhase::Verified, _) => services.push(d.clone()),
            (SvcPhase::Pending, Some(rev)) => match restore(rev) {
                Some(x) => services.push(x),
                None => {
                    out.gates.insert(
                        d.name.clone(),
                        Hold::WaitingOn {
                            what: "secrets of the previous revision".into(),
                        },
                    );
                    services.push(d.clone());
                }
            },
            (SvcPhase::Pending, None) => {
                out.gates.insert(
                    d.name.clone(),
                    Hold::WaitingOn {
                        what: pending_what(r, &d.name),
                    },
                );
                services.push(d.clone());
            }
            (SvcPhase::RollingBack | SvcPhase::RolledBack, Some(rev)) => match restore(rev) {
                Some(x) => services.push(x),
                None => {
                    out.gates.insert(
                        d.name.clone(),
                        Hold::RevisionRejected {
                            cause: "previous revision's secrets are unavailable".into(),
                        },
                    );
                    services.push(d.clone());
                }
            },
            (SvcPhase::RollingBack | SvcPhase::RolledBack, None) => {
                // Created by the failed revision: it goes away, and is not created again.
                out.remove.insert(d.name.clone());
            }
        }
    }
    if r.phase == Phase::RolledBack {
        for s in &r.services {
            if s.from.is_some() {
                continue;
            }
            if let Some(d) = services.iter().position(|x| x.name == s.name) {
                services.remove(d);
            }
        }
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    out.services = services;
    out
}

/// Puts the rollout's view on a plan: Swarm's update failures on services the rollout is
/// handling are not separate errors, and a rejected revision says so.
pub fn annotate(plan: &mut crate::plan::Plan, r: &Rollout) {
    let in_rollout = |n: &str| r.service(n).is_some();
    plan.held
        .retain(|h| !(in_rollout(&h.name) && matches!(h.hold, Hold::UpdateFailed { .. })));
    let cause = r.cause.clone().unwrap_or_default();
    for s in &r.services {
        let hold = match r.phase {
            Phase::RolledBack => Hold::RevisionRejected { cause: cause.clone() },
            Phase::Paused => Hold::WaitingOn {
                what: format!("a decision (rollout paused: {cause})"),
            },
            _ => continue,
        };
        plan.held.push(crate::plan::Held {
            name: s.name.clone(),
            hold,
        });
    }
}

fn pending_what(r: &Rollout, name: &str) -> String {
    if r.phase == Phase::PreDeploy {
        let left: Vec<&str> = r.jobs.iter().filter(|j| !j.done).map(|j| j.job.as_str()).collect();
        format!("pre-deploy jobs ({})", left.join(", "))
    } else {
        format!("dependencies of {name}")
    }
}

fn obj(name: &str) -> String {
    format!("Service/{name}")
}

/// Grace for comparing Swarm's timestamps with ours (same host, different clocks' rounding).
const CLOCK_SKEW_MS: i64 = 1_000;

/// Advances the rollout by one pass.
pub fn step(r: &mut Rollout, desired: &Desired, obs: &Observations) -> StepOutput {
    let mut out = StepOutput::default();
    let now = obs.now_ms;
    let policy = |name: &str| {
        desired
            .services
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.rollout.clone())
            .unwrap_or_else(RolloutPolicy::none)
    };
    let target = |name: &str| desired.services.iter().find(|d| d.name == name);

    match r.phase {
        Phase::Complete | Phase::RolledBack | Phase::Paused => return out,
        Phase::PreDeploy => {
            let deadline = r
                .jobs
                .iter()
                .map(|j| policy(&j.service).progress_deadline_ms)
                .max()
                .unwrap_or(i64::MAX);
            if now - r.phase_started_ms > deadline {
                let running = r.jobs.iter().find(|j| !j.done).cloned();
                if let Some(j) = &running {
                    out.remove_jobs.push(j.swarm_name.clone());
                }
                let cause = format!(
                    "progress deadline {}s exceeded in pre-deploy{}",
                    deadline / 1000,
                    running
                        .map(|j| format!(" (job {}/{} not finished)", j.service, j.job))
                        .unwrap_or_default()
                );
                reject_before_any_write(r, cause, now, &mut out);
                return out;
            }
            step_jobs(r, desired, obs, &mut out);
            if r.phase == Phase::PreDeploy && r.jobs.iter().all(|j| j.done) {
                r.phase = Phase::Updating;
                r.phase_started_ms = now;
                out.events.push(RolloutEvent {
                    warning: false,
                    reason: "PreDeployComplete",
                    object: format!("Rollout/{}", r.generation),
                    message: format!(
                        "pre-deploy jobs done: {}",
                        r.jobs
                            .iter()
                            .map(|j| format!("{}/{}", j.service, j.job))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            if r.phase != Phase::Updating {
                return out;
            }
        }
        _ => {}
    }

    if r.phase == Phase::RollingBack {
        step_rolling_back(r, obs, &mut out);
        return out;
    }

    // Updating / Verifying.
    let mut failure: Option<(String, String)> = None;
    let verified: BTreeSet<String> = r
        .services
        .iter()
        .filter(|s| s.phase == SvcPhase::Verified)
        .map(|s| s.name.clone())
        .collect();
    let in_rollout: BTreeSet<String> = r.services.iter().map(|s| s.name.clone()).collect();
    for s in &mut r.services {
        let p = policy(&s.name);
        let deadline = p.progress_deadline_ms.max(1);
        match s.phase {
            SvcPhase::Pending => {
                let blocked = p
                    .depends_on
                    .iter()
                    .any(|d| in_rollout.contains(d) && !verified.contains(d));
                if !blocked {
                    s.phase = SvcPhase::Updating;
                    s.phase_started_ms = now;
                    out.events.push(RolloutEvent {
                        warning: false,
                        reason: "RolloutUpdating",
                        object: obj(&s.name),
                        message: format!("rolling out {} (revision {})", s.to_image, &s.to_hash),
                    });
                }
            }
            SvcPhase::Updating => {
                let o = obs.services.get(&s.name);
                let replicas = target(&s.name).map_or(0, |d| d.state.replicas);
                if let Some(u) = o.and_then(|o| o.update_status.as_ref()) {
                    let ours = u.started_at_ms.is_none_or(|t| t + CLOCK_SKEW_MS >= s.phase_started_ms);
                    let failed = matches!(
                        u.state,
                        UpdateState::Paused
                            | UpdateState::RollbackStarted
                            | UpdateState::RollbackPaused
                            | UpdateState::RollbackCompleted
                    );
                    if ours
                        && failed
                        && o.is_some_and(|o| {
                            o.spec_hash.as_deref() != Some(s.to_hash.as_str()) || u.state == UpdateState::Paused
                        })
                    {
                        failure = Some((s.name.clone(), format!("Swarm update {:?}: {}", u.state, u.message)));
                        break;
                    }
                }
                let written = o.is_some_and(|o| o.spec_hash.as_deref() == Some(s.to_hash.as_str()));
                // Swarm clears the update status on every write and counts old tasks as running
                // until it replaces them: when tasks are to be replaced, only an update Swarm
                // started after this phase began and completed counts as done.
                let needs_update = !s.scale_only && s.from.is_some();
                let phase_start = s.phase_started_ms;
                let settled = o.is_some_and(|o| {
                    let status_ok = match &o.update_status {
                        None => !needs_update,
                        // No task to replace: Swarm starts no update, and whatever status the
                        // last one left (even a rollback) says nothing about this change.
                        Some(u) if !needs_update => {
                            !matches!(u.state, UpdateState::Updating | UpdateState::RollbackStarted)
                        }
                        Some(u) => {
                            u.state == UpdateState::Completed
                                && u.started_at_ms.is_none_or(|t| t + CLOCK_SKEW_MS >= phase_start)
                        }
                    };
                    o.running_tasks == Some(replicas) && status_ok
                });
                if written && settled {
                    let verify = !s.scale_only && (p.health.is_some() || p.analysis.is_some());
                    s.phase = if verify {
                        SvcPhase::Verifying
                    } else {
                        SvcPhase::Verified
                    };
                    s.phase_started_ms = now;
                    out.events.push(RolloutEvent {
                        warning: false,
                        reason: if verify { "RolloutVerifying" } else { "RolloutVerified" },
                        object: obj(&s.name),
                        message: if verify {
                            format!(
                                "{replicas}/{replicas} tasks on {}; verifying for {}s",
                                s.to_image,
                                p.verify_window_ms / 1000
                            )
                        } else {
                            format!("{replicas}/{replicas} tasks on {}", s.to_image)
                        },
                    });
                } else if now - s.phase_started_ms > deadline {
                    let running = o.and_then(|o| o.running_tasks).unwrap_or(0);
                    failure = Some((
                        s.name.clone(),
                        format!(
                            "progress deadline {}s exceeded while updating: {running}/{replicas} tasks running",
                            deadline / 1000
                        ),
                    ));
                    break;
                }
            }
            SvcPhase::Verifying => {
                if let Some(why) = verify_service(s, &p, obs) {
                    match why {
                        Verdict::Fail(cause) => {
                            failure = Some((s.name.clone(), cause));
                            break;
                        }
                        Verdict::Inconclusive(cause) => {
                            r.phase = Phase::Paused;
                            r.phase_started_ms = now;
                            r.cause = Some(format!("{}: {cause}", s.name));
                            out.events.push(RolloutEvent {
                                warning: true,
                                reason: "AnalysisInconclusive",
                                object: obj(&s.name),
                                message: format!(
                                    "rollout paused for a decision (steward rollback, or a new commit): {cause}"
                                ),
                            });
                            return out;
                        }
                        Verdict::Pass => {
                            s.phase = SvcPhase::Verified;
                            s.phase_started_ms = now;
                            out.events.push(RolloutEvent {
                                warning: false,
                                reason: "RolloutVerified",
                                object: obj(&s.name),
                                message: format!(
                                    "{} verified: {} health probes, {} analysis measurements",
                                    s.to_image, s.health.probes, s.analysis.measurements
                                ),
                            });
                        }
                    }
                } else if now - s.phase_started_ms > deadline {
                    failure = Some((
                        s.name.clone(),
                        format!("progress deadline {}s exceeded while verifying", deadline / 1000),
                    ));
                    break;
                }
            }
            _ => {}
        }
    }

    if let Some((name, cause)) = failure {
        start_rollback(r, &name, &cause, now, &mut out);
        step_rolling_back(r, obs, &mut out);
        return out;
    }
    if r.services.iter().all(|s| s.phase == SvcPhase::Verified) {
        r.phase = Phase::Complete;
        r.phase_started_ms = now;
        for s in &r.services {
            out.finished
                .push((s.name.clone(), s.to_hash.clone(), Outcome::Complete));
        }
        out.events.push(RolloutEvent {
            warning: false,
            reason: "RolloutComplete",
            object: format!("Rollout/{}", r.generation),
            message: format!(
                "generation {} rolled out: {}",
                r.generation,
                r.services
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.to_image))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    } else if r
        .services
        .iter()
        .all(|s| matches!(s.phase, SvcPhase::Verifying | SvcPhase::Verified))
    {
        if r.phase != Phase::Verifying {
            r.phase = Phase::Verifying;
            r.phase_started_ms = now;
        }
    } else {
        r.phase = Phase::Updating;
    }
    out
}

enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
}

/// Folds this pass's probe and measurement into the tallies; `Some` once decided.
fn verify_service(s: &mut ServiceRollout, p: &RolloutPolicy, obs: &Observations) -> Option<Verdict> {
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

fn step_jobs(r: &mut Rollout, desired: &Desired, obs: &Observations, out: &mut StepOutput) {
    let now = obs.now_ms;
    // Sequential: one job at a time, in manifest order.
    let Some(idx) = r.jobs.iter().position(|j| !j.done) else {
        return;
    };
    let j = r.jobs[idx].clone();
    let d = desired.services.iter().find(|d| d.name == j.service);
    let def = d.and_then(|d| d.rollout.pre_deploy.iter().find(|x| x.name.as_str() == j.job));
    let timeout_ms = def.map_or(300_000, |x| x.timeout.get().as_millis() as i64);
    let fail = |r: &mut Rollout, out: &mut StepOutput, cause: String, logs: &str| {
        out.remove_jobs.push(j.swarm_name.clone());
        out.events.push(RolloutEvent {
            warning: true,
            reason: "PreDeployFailed",
            object: obj(&j.service),
            message: format!("job {} failed: {cause}{}", j.job, logs_suffix(logs)),
        });
        reject_before_any_write(
            r,
            format!("pre-deploy job {}/{} failed: {cause}", j.service, j.job),
            now,
            out,
        );
    };
    match obs.jobs.get(&j.swarm_name).cloned().unwrap_or(JobObs::Missing) {
        JobObs::Missing if j.started_ms.is_none() => {
            let Some(d) = d else { return };
            let def = def.cloned();
            out.start_jobs.push(JobStart {
                swarm_name: j.swarm_name.clone(),
                service: j.service.clone(),
                job: j.job.clone(),
                image: d.state.image.clone(),
                command: def.as_ref().and_then(|x| x.command.clone()).unwrap_or_default(),
                args: def.as_ref().and_then(|x| x.args.clone()).unwrap_or_default(),
                env: d.state.env.clone(),
            });
            r.jobs[idx].started_ms = Some(now);
            out.events.push(RolloutEvent {
                warning: false,
                reason: "PreDeployStarted",
                object: obj(&j.service),
                message: format!("job {} started with {}", j.job, d.state.image),
            });
        }
        JobObs::Missing => {
            // Started but not visible yet (or removed by someone): never start it twice.
            if now - j.started_ms.unwrap_or(now) > timeout_ms {
                fail(r, out, "job service disappeared".into(), "");
            }
        }
        JobObs::Running => {
            if now - j.started_ms.unwrap_or(now) > timeout_ms {
                fail(r, out, format!("timed out after {}s", timeout_ms / 1000), "");
            }
        }
        JobObs::Succeeded { logs } => {
            r.jobs[idx].done = true;
            out.remove_jobs.push(j.swarm_name.clone());
            out.events.push(RolloutEvent {
                warning: false,
                reason: "PreDeploySucceeded",
                object: obj(&j.service),
                message: format!("job {} succeeded{}", j.job, logs_suffix(&logs)),
            });
        }
        JobObs::Failed { reason, logs } => fail(r, out, reason, &logs),
    }
}

/// A job's captured output, appended to its event message.
fn logs_suffix(logs: &str) -> String {
    if logs.is_empty() {
        String::new()
    } else {
        format!("\n--- logs ---\n{logs}")
    }
}

/// Rejects the revision while nothing has been replaced: no service is written at all.
fn reject_before_any_write(r: &mut Rollout, cause: String, now: i64, out: &mut StepOutput) {
    r.cause = Some(cause.clone());
    for s in &mut r.services {
        s.phase = SvcPhase::RolledBack;
        out.finished
            .push((s.name.clone(), s.to_hash.clone(), Outcome::RolledBack));
    }
    r.phase = Phase::RolledBack;
    r.phase_started_ms = now;
    out.events.push(RolloutEvent {
        warning: true,
        reason: "RolledBack",
        object: format!("Rollout/{}", r.generation),
        message: format!("generation {} rejected, no service was changed: {cause}", r.generation),
    });
}

/// Every service the revision changed returns to its previous good spec.
pub fn start_rollback(r: &mut Rollout, name: &str, cause: &str, now_ms: i64, out: &mut StepOutput) {
    r.cause = Some(format!("{name}: {cause}"));
    r.phase = Phase::RollingBack;
    r.phase_started_ms = now_ms;
    for s in &mut r.services {
        s.phase = match s.phase {
            // Untouched: nothing to undo.
            SvcPhase::Pending if s.from.is_some() => SvcPhase::RolledBack,
            _ => SvcPhase::RollingBack,
        };
        s.phase_started_ms = now_ms;
    }
    out.events.push(RolloutEvent {
        warning: true,
        reason: "RollingBack",
        object: obj(name),
        message: format!(
            "rolling back generation {} ({}): {cause}",
            r.generation,
            r.services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
}

fn step_rolling_back(r: &mut Rollout, obs: &Observations, out: &mut StepOutput) {
    for s in &mut r.services {
        if s.phase != SvcPhase::RollingBack {
            continue;
        }
        let o = obs.services.get(&s.name);
        let done = match &s.from {
            None => o.is_none(),
            Some(rev) => o.is_some_and(|o| {
                // The restored spec carries the secrets that run now: its hash differs from the
                // revision's own when a secret was rotated in between.
                let restored = rev
                    .restore(Some(&o.state), None, RolloutPolicy::none())
                    .map(|x| x.spec_hash);
                let back = o.spec_hash.as_deref() == Some(rev.spec_hash.as_str())
                    || (o.spec_hash.is_some() && o.spec_hash == restored);
                back && o.running_tasks == Some(rev.state.replicas)
                    && o.update_status
                        .as_ref()
                        .is_none_or(|u| u.state != UpdateState::Updating && u.state != UpdateState::RollbackStarted)
            }),
        };
        if done {
            s.phase = SvcPhase::RolledBack;
            s.phase_started_ms = obs.now_ms;
        }
    }
    if r.services.iter().all(|s| s.phase == SvcPhase::RolledBack) {
        r.phase = Phase::RolledBack;
        r.phase_started_ms = obs.now_ms;
        for s in &r.services {
            out.finished
                .push((s.name.clone(), s.to_hash.clone(), Outcome::RolledBack));
        }
        let cause = r.cause.clone().unwrap_or_default();
        out.events.push(RolloutEvent {
            warning: true,
            reason: "RolledBack",
            object: format!("Rollout/{}", r.generation),
            message: format!(
                "generation {} rolled back, previous versions restored ({}); it is not applied again until the desired state changes. Cause: {cause}",
                r.generation,
                r.services
                    .iter()
                    .map(|s| match &s.from {
                        Some(f) => format!("{} {}", s.name, f.image),
                        None => format!("{} removed", s.name),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
}

/// A manual rollback of one service to `to`: a rollout that only rolls back, pinned until the
/// desired state changes.
pub fn manual_rollback(desired: &Desired, desired_hash: &str, service: &str, to: Revision, now_ms: i64) -> Rollout {
    let d = desired.services.iter().find(|d| d.name == service);
    Rollout {
        generation: desired.generation,
        desired_hash: desired_hash.to_string(),
        phase: Phase::RollingBack,
        phase_started_ms: now_ms,
        started_ms: now_ms,
        services: vec![ServiceRollout {
            name: service.to_string(),
            to_hash: d.map_or_else(String::new, |d| d.spec_hash.clone()),
            to_image: d.map_or_else(String::new, |d| d.state.image.clone()),
            phase: SvcPhase::RollingBack,
            phase_started_ms: now_ms,
            scale_only: false,
            health: HealthTally::default(),
            analysis: AnalysisTally::default(),
            from: Some(to),
        }],
        jobs: vec![],
        cause: Some(format!("{service}: manual rollback by an operator")),
        manual: true,
    }
}
