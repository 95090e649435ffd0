//! Rollouts: every change of the desired state is rolled out as one persisted state machine,
//! PreDeploy → Updating → Verifying → Complete, or RollingBack → RolledBack. Pure: observations
//! (Swarm, job states, probe results, measurements) come in, the next state and what the
//! planner may do come out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::plan::Hold;

mod step;
mod verify;

pub use step::{start_rollback, step};
pub use verify::{due_analysis, due_probes, next_due_ms};

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
    /// A `backupBefore` backup of this Database instead of a Swarm job: the controller takes
    /// it (its `swarm_name` is then a key, `backup:<database>:<hash>`, never a Swarm name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_of: Option<String>,
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

    /// True while `service` is being returned to its previous revision.
    pub fn rolling_back(&self, service: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.name == service && s.phase == SvcPhase::RollingBack)
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
pub use crate::event::Event as RolloutEvent;

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
    /// The service's networks, mounts, secrets and configs (`TaskState::for_job`): the job runs
    /// as the new version would (the migration joins the service's network).
    pub task: TaskState,
    /// Secrets and configs of the new version, created before the job starts (the service
    /// itself is written later).
    pub objects: BTreeMap<String, ObjectData>,
}

#[derive(Debug, Default)]
pub struct StepOutput {
    pub events: Vec<RolloutEvent>,
    pub start_jobs: Vec<JobStart>,
    /// `backupBefore` backups to take now: (database, key).
    pub start_backups: Vec<(String, String)>,
    pub remove_jobs: Vec<String>,
    /// Revisions whose outcome became known at this step.
    pub finished: Vec<(String, String, Outcome)>,
}

/// Key of a rollout's `backupBefore` backup (not a Swarm name: Swarm names have no `:`).
pub fn backup_key(database: &str, hash: &str) -> String {
    format!("backup:{database}:{}", &hash[..hash.len().min(8)])
}

/// True for a [`backup_key`].
pub fn is_backup_key(name: &str) -> bool {
    name.starts_with("backup:")
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
    let mut jobs: Vec<JobRecord> = Vec::new();
    for d in &desired.services {
        let from = last_good.get(&d.name);
        if from.is_some_and(|r| r.spec_hash == d.spec_hash) {
            continue;
        }
        let scale_only = from.is_some_and(|r| !r.task_hash.is_empty() && r.task_hash == task_hash(&d.state));
        if !scale_only {
            // The guide's order: the backup (step 3) before the migrations; one per Database.
            if let Some(db) = &d.rollout.backup_before {
                if !jobs.iter().any(|j| j.backup_of.as_deref() == Some(db.as_str())) {
                    let pos = jobs.iter().take_while(|j| j.backup_of.is_some()).count();
                    jobs.insert(
                        pos,
                        JobRecord {
                            service: d.name.clone(),
                            job: format!("backup-{db}"),
                            swarm_name: backup_key(db, &d.spec_hash),
                            started_ms: None,
                            done: false,
                            backup_of: Some(db.clone()),
                        },
                    );
                }
            }
            for j in &d.rollout.pre_deploy {
                jobs.push(JobRecord {
                    service: d.name.clone(),
                    job: j.name.to_string(),
                    swarm_name: job_swarm_name(&d.name, j.name.as_str(), &d.spec_hash),
                    started_ms: None,
                    done: false,
                    backup_of: None,
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
