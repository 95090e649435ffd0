//! The Schedule reconciler: gathers one schedule's inputs (its runs from the store, its active
//! jobs from Swarm, the image it runs), asks the pure planner (`steward_schedule::plan`), and
//! carries the plan out verbatim. Deciding is the planner's; this file only reads and writes.
//!
//! Exactly once per instant: a run's row is claimed in the store (unique per schedule and
//! instant) before its job is created, job names are deterministic, and every row change is a
//! compare-and-set on the outcome planned against. A claim or update that finds the row moved
//! (another controller, a restart, a manual trigger) stops this reconcile and re-plans.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use steward_backends::jobs::{JobMount, JobSpec, JobState, LogTail, MountKind, JOB_LABEL};
use steward_backends::swarm::{error_chain, Swarm};
use steward_core::status::{Condition, ConditionStatus, ConditionType, EventType, ResourceStatus};
use steward_core::{ObjectRef, Observation, Requeue};
use steward_plan::model::labels;
use steward_schedule::plan::{JobObs, Plan, StartJob};
use steward_schedule::spec::MountType;
use steward_schedule::{Input, Outcome, Run, ScheduleState};
use steward_store::{Claim, Store, StoreError};
use time::OffsetDateTime;

/// Marks a job service as a run of this schedule (besides [`JOB_LABEL`]).
pub const SCHEDULE_LABEL: &str = "steward.io/schedule";
/// The stack a schedule's job belongs to. Not `steward.io/stack`: jobs are not the stack's
/// services and must never be planned, adopted or pruned as such.
pub const JOB_STACK_LABEL: &str = "steward.io/job-stack";

/// Where a schedule's cursor (newest instant considered) is kept in the store's metadata.
pub fn cursor_key(schedule: &str) -> String {
    format!("schedule.cursor/{schedule}")
}

/// What the reconciler needs from the engine: a seam, so its logic is tested with fakes.
pub trait Jobs: Sync {
    fn status(&self, job: &str) -> impl Future<Output = Result<JobObs, String>> + Send;
    fn start(&self, spec: &JobSpec) -> impl Future<Output = Result<(), String>> + Send;
    fn remove(&self, job: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Removes the schedule's secret versions that are not in `keep`; one still mounted by a
    /// job kept in history is refused by Swarm and left for a later try. Returns how many went.
    fn prune_secrets(
        &self,
        stack: &str,
        schedule: &str,
        keep: &std::collections::BTreeSet<String>,
    ) -> impl Future<Output = Result<usize, String>> + Send;
}

impl Jobs for Swarm {
    async fn status(&self, job: &str) -> Result<JobObs, String> {
        let st = self
            .job_status_tail(job, LogTail::RUN)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(match st.state {
            JobState::Running => JobObs::Running,
            JobState::Missing => JobObs::Missing,
            JobState::Succeeded => JobObs::Succeeded {
                logs: st.logs.unwrap_or_default(),
            },
            JobState::Failed { reason } => JobObs::Failed {
                exit_code: st.exit_code,
                reason,
                logs: st.logs.unwrap_or_default(),
            },
        })
    }
    async fn start(&self, spec: &JobSpec) -> Result<(), String> {
        self.start_job(spec).await.map(drop).map_err(|e| error_chain(&e))
    }
    async fn remove(&self, job: &str) -> Result<(), String> {
        self.remove_job(job).await.map_err(|e| error_chain(&e))
    }
    async fn prune_secrets(
        &self,
        stack: &str,
        schedule: &str,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<usize, String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{JOB_STACK_LABEL}={stack}"),
                format!("{SCHEDULE_LABEL}={schedule}"),
            ],
        )]);
        let found = self
            .list_objects(steward_plan::ObjectKind::Secret, filters)
            .await
            .map_err(|e| error_chain(&e))?;
        let mut removed = 0;
        for o in found.iter().filter(|o| !keep.contains(&o.name)) {
            match self.remove_object(o.kind, &o.id, &o.name).await {
                Ok(()) => removed += 1,
                // In use by a job still kept in history: it goes once that job is removed.
                Err(e) => tracing::debug!(secret = %o.name, error = %error_chain(&e), "secret version kept"),
            }
        }
        Ok(removed)
    }
}

/// Names of the secret versions the schedule's job mounts now.
pub fn current_secrets(s: &ScheduleState) -> std::collections::BTreeSet<String> {
    secret_parts(s).2.into_keys().collect()
}

/// A `valueFrom` value is a Swarm secret `<schedule>-<VAR>-<hash8>` mounted at
/// /run/secrets/<VAR> with <VAR>_FILE, as for services; `expose: env` keeps it in the env.
/// Returns the environment, the secret mounts and the objects to create.
fn secret_parts(
    s: &ScheduleState,
) -> (
    BTreeMap<String, String>,
    Vec<steward_plan::FileState>,
    BTreeMap<String, steward_plan::ObjectData>,
) {
    let mut env = BTreeMap::new();
    let mut files = Vec::new();
    let mut objects = BTreeMap::new();
    for (k, v) in &s.job.env {
        if s.job.secret_env.contains(k) && !s.job.exposed_env.contains(k) {
            steward_plan::mount_env_secret(&s.name, k, v.clone(), &mut env, &mut files, &mut objects);
        } else {
            env.insert(k.clone(), v.clone());
        }
    }
    files.sort();
    (env, files, objects)
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("cannot start job {job}: {message}")]
    Start { job: String, message: String },
}

/// Which runs one reconcile looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything: due instants, every active run, history, status.
    Full,
    /// One run only (`steward trigger` drives its manual run to the end this way): no instant
    /// is considered, nothing is pruned, no status is written.
    Run(i64),
}

/// One event to record, as the planner worded it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub object: ObjectRef,
    pub message: String,
}

/// What one reconcile did.
#[derive(Debug)]
pub struct Reconciled {
    pub requeue: Requeue,
    pub events: Vec<ScheduleEvent>,
    /// Runs that reached a final outcome in this reconcile (for metrics).
    pub finished: Vec<Run>,
    /// The status written (Full scope).
    pub status: Option<ResourceStatus>,
    /// A claim or compare-and-set found the store moved: re-planned at once.
    pub conflict: bool,
    /// The reconcile failed (the object backs off).
    pub error: Option<String>,
}

impl Reconciled {
    fn nothing(requeue: Requeue) -> Reconciled {
        Reconciled {
            requeue,
            events: vec![],
            finished: vec![],
            status: None,
            conflict: false,
            error: None,
        }
    }
}

/// The inputs to the planner that do not come from the store or the engine.
pub struct Context<'a> {
    pub stack: &'a str,
    pub now: OffsetDateTime,
    /// When this controller began reconciling (instants before it are caught up as CatchUp).
    pub controller_started: OffsetDateTime,
    /// Images services run now, from the latest observation of Swarm (`imageFrom`); `None` when
    /// Swarm could not be read.
    pub images: Option<&'a BTreeMap<String, String>>,
    pub generation: u64,
}

/// Reconciles one schedule once.
pub async fn reconcile<J: Jobs>(
    store: &Store,
    jobs: &J,
    s: &ScheduleState,
    ctx: &Context<'_>,
    scope: Scope,
) -> Result<Reconciled, ScheduleError> {
    let keep = (s.history.succeeded + s.history.failed) as usize + 1;
    let (runs, cursor) = match scope {
        Scope::Full => {
            let cursor = store
                .get_meta(&cursor_key(&s.name))?
                .and_then(|v| v.parse::<i128>().ok())
                .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok());
            (store.schedule_runs(&s.name, keep)?, cursor)
        }
        // No instant is due between `now` and `now`.
        Scope::Run(id) => (store.run(id)?.into_iter().collect(), Some(ctx.now)),
    };
    let mut observed: BTreeMap<String, Observation<JobObs>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.outcome.is_active()) {
        if let Some(job) = &r.job {
            let obs = match jobs.status(job).await {
                Ok(o) => Observation::Known(o),
                Err(e) => {
                    // Nothing is decided about the run meanwhile; say why.
                    tracing::warn!(schedule = %s.name, job = %job, error = %e, "cannot read the job's state");
                    Observation::unknown(e)
                }
            };
            observed.insert(job.to_string(), obs);
        }
    }
    let image = match (&s.job.image, &s.job.image_from) {
        (Some(i), _) => Observation::Known(i.clone()),
        (None, Some(svc)) => match ctx.images {
            Some(images) => match images.get(svc) {
                Some(i) => Observation::Known(i.clone()),
                None => Observation::unknown(format!("Service {svc} is not running")),
            },
            None => Observation::unknown("Swarm could not be read"),
        },
        (None, None) => Observation::unknown("no image"),
    };
    let plan = steward_schedule::plan(&Input {
        now: ctx.now,
        schedule: s,
        cursor,
        controller_started: ctx.controller_started,
        runs: &runs,
        jobs: &observed,
        image,
    });
    execute(store, jobs, s, ctx, scope, plan).await
}

async fn execute<J: Jobs>(
    store: &Store,
    jobs: &J,
    s: &ScheduleState,
    ctx: &Context<'_>,
    scope: Scope,
    plan: Plan,
) -> Result<Reconciled, ScheduleError> {
    let object = ObjectRef::schedule(&s.name);
    let mut out = Reconciled::nothing(plan.requeue);
    let conflict = |mut out: Reconciled| {
        out.conflict = true;
        out.requeue = Requeue::After(Duration::ZERO);
        out.events.clear();
        Ok(out)
    };

    // 1. New rows, before any job exists for them.
    let mut ids: HashMap<OffsetDateTime, i64> = HashMap::new();
    for run in &plan.record {
        let forbid = run.outcome == Outcome::Pending
            && s.policy == steward_schedule::spec::ConcurrencyPolicy::Forbid
            && run.trigger != steward_schedule::Trigger::Manual;
        match store.claim_run(run, forbid)? {
            Claim::Inserted(id) => {
                ids.insert(run.scheduled_at, id);
                if !run.outcome.is_active() {
                    out.finished.push(Run { id, ..run.clone() });
                }
            }
            Claim::Exists(_) | Claim::Busy(_) => return conflict(out),
        }
    }
    // 2. Changed rows, compare-and-set.
    for (expected, run) in &plan.update {
        if !store.update_run(*expected, run)? {
            return conflict(out);
        }
        if !run.outcome.is_active() {
            out.finished.push(run.clone());
        }
    }
    // 3. Swarm: stop, start, remove.
    for stop in &plan.stop {
        if let Err(e) = jobs.remove(&stop.job).await {
            tracing::warn!(job = %stop.job, error = %e, "cannot stop job");
        }
    }
    for start in &plan.start {
        let mut running = start.running.clone();
        if running.id == 0 {
            match ids.get(&start.scheduled_at) {
                Some(id) => running.id = *id,
                None => continue,
            }
        }
        let spec = job_spec(ctx.stack, s, start);
        if let Err(message) = jobs.start(&spec).await {
            // The row stays Pending: the next pass tries again under the same job name.
            out.events.push(ScheduleEvent {
                type_: EventType::Warning,
                reason: "RunStartFailed",
                object: object.clone(),
                message: format!("cannot start job {}: {message}", start.job),
            });
            out.requeue = Requeue::After(Duration::from_secs(5)).min(out.requeue, ctx.now);
            continue;
        }
        if !store.update_run(Outcome::Pending, &running)? {
            return conflict(out);
        }
    }
    for job in &plan.remove {
        if let Err(e) = jobs.remove(job).await {
            tracing::warn!(job = %job, error = %e, "cannot remove finished job");
        }
    }
    // Jobs left history: secret versions only they mounted (from before a rotation) can go.
    if !plan.remove.is_empty() {
        match jobs.prune_secrets(ctx.stack, &s.name, &current_secrets(s)).await {
            Ok(n) if n > 0 => tracing::info!(schedule = %s.name, removed = n, "removed unused secret versions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(schedule = %s.name, error = %e, "cannot clean up secret versions"),
        }
    }
    if scope == Scope::Full {
        store.prune_runs(&plan.prune)?;
        if let Some(c) = plan.cursor {
            store.set_meta(&cursor_key(&s.name), &c.unix_timestamp_nanos().to_string())?;
        }
    }
    for ev in &plan.events {
        out.events.push(ScheduleEvent {
            type_: if ev.reason.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: ev.reason.as_str(),
            object: object.clone(),
            message: ev.message.clone(),
        });
    }
    if scope == Scope::Full {
        let status = status_of(s, &plan, ctx);
        // A resync of an idle schedule changes nothing but the time: a read, not a write (1,000
        // schedules resynced every 30 s would otherwise be 33 writes a second).
        let fresh = store.status("Schedule", &s.name)?.is_some_and(|old| {
            same_status(&old, &status) && status.last_reconcile - old.last_reconcile < STATUS_REFRESH
        });
        if !fresh {
            store.put_status(&status)?;
        }
        out.status = Some(status);
    }
    Ok(out)
}

/// How stale `lastReconcile` of an unchanged status may get before it is rewritten anyway, so
/// `steward status` still shows the schedule is looked after.
const STATUS_REFRESH: time::Duration = time::Duration::minutes(5);

/// Equal but for the reconcile and transition times.
fn same_status(a: &ResourceStatus, b: &ResourceStatus) -> bool {
    let conds = |s: &ResourceStatus| {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_,
                    c.status,
                    c.reason.clone(),
                    c.message.clone(),
                    c.observed_generation,
                )
            })
            .collect::<Vec<_>>()
    };
    conds(a) == conds(b)
        && a.details == b.details
        && a.image == b.image
        && a.observed_generation == b.observed_generation
}

fn status_of(s: &ScheduleState, plan: &Plan, ctx: &Context<'_>) -> ResourceStatus {
    let cond = |type_, (ok, reason, message): &(bool, &'static str, String)| Condition {
        type_,
        status: ConditionStatus::from_bool(*ok),
        reason: reason.to_string(),
        message: message.clone(),
        last_transition_time: ctx.now,
        observed_generation: ctx.generation,
    };
    ResourceStatus {
        kind: "Schedule".into(),
        name: s.name.clone(),
        conditions: vec![
            cond(ConditionType::Ready, &plan.conditions.ready),
            cond(ConditionType::Progressing, &plan.conditions.progressing),
            cond(ConditionType::Degraded, &plan.conditions.degraded),
        ],
        desired_replicas: None,
        running_replicas: None,
        image: s.job.image.clone(),
        observed_generation: ctx.generation,
        last_reconcile: ctx.now,
        applied_revision: None,
        attempted_revision: None,
        details: serde_json::to_value(&plan.status).ok(),
    }
}

/// The Swarm job of one attempt of a run. Labelled as the schedule's job, never as a service of
/// the stack.
pub fn job_spec(stack: &str, s: &ScheduleState, start: &StartJob) -> JobSpec {
    let (env, secrets, objects) = secret_parts(s);
    let mut task = steward_plan::TaskState {
        secrets,
        ..Default::default()
    };
    task.networks = s
        .job
        .networks
        .iter()
        .map(|(name, aliases)| steward_plan::NetworkState {
            name: name.clone(),
            aliases: aliases.clone(),
        })
        .collect();
    JobSpec {
        name: start.job.clone(),
        image: start.image.clone(),
        command: s.job.command.clone(),
        args: s.job.args.clone(),
        env,
        task,
        objects,
        // Not the stack's label: the Stack's clean-up of unused secrets never sees these.
        object_labels: BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
            (JOB_STACK_LABEL.to_string(), stack.to_string()),
            (SCHEDULE_LABEL.to_string(), s.name.clone()),
        ]),
        labels: BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
            (JOB_STACK_LABEL.to_string(), stack.to_string()),
            (SCHEDULE_LABEL.to_string(), s.name.clone()),
            (JOB_LABEL.to_string(), start.job.clone()),
        ]),
        mounts: s
            .job
            .mounts
            .iter()
            .map(|m| JobMount {
                kind: match m.type_ {
                    MountType::Volume => MountKind::Volume,
                    MountType::Bind => MountKind::Bind,
                    MountType::Tmpfs => MountKind::Tmpfs,
                },
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
            })
            .collect(),
    }
}

impl crate::Controller {
    /// Names and spec hashes of the schedules in force: a changed hash means a changed spec.
    pub fn schedule_hashes(&self) -> BTreeMap<String, String> {
        self.schedules
            .iter()
            .map(|s| (s.name.clone(), s.spec_hash.clone()))
            .collect()
    }

    /// Reconciles the schedule `name` of the desired state in force; `None` when there is no such
    /// schedule (it left the desired state: its status is forgotten). Store errors back the object
    /// off (5 ms doubling to 1000 s) rather than failing the loop.
    pub async fn reconcile_schedule(&mut self, name: &str) -> Option<Reconciled> {
        let object = ObjectRef::schedule(name);
        let key = object.to_string();
        let Some(s) = self.schedules.iter().find(|s| s.name == name).cloned() else {
            if let Err(e) = self.store.remove_status("Schedule", name) {
                tracing::warn!(schedule = name, error = %error_chain(&e), "cannot forget a removed schedule's status");
            }
            return None;
        };
        let now_i = std::time::Instant::now();
        if let Some(until) = self.backoff.blocked_until(&key, now_i) {
            return Some(Reconciled::nothing(Requeue::After(until - now_i)));
        }
        if !self.may_write() {
            return Some(Reconciled::nothing(Requeue::Never));
        }
        let stack = self.stack_name();
        let ctx = Context {
            stack: &stack,
            now: OffsetDateTime::now_utc(),
            controller_started: self.started,
            images: self.images.as_ref(),
            generation: self.generation,
        };
        let result = reconcile(&self.store, &self.swarm, &s, &ctx, Scope::Full).await;
        match result {
            Ok(done) => {
                self.backoff.succeeded(&key);
                for ev in &done.events {
                    self.event(ev.type_, ev.reason, &ev.object.to_string(), ev.message.clone());
                }
                Some(done)
            }
            Err(e) => {
                let until = self.backoff.failed(&key, std::time::Instant::now());
                let text = error_chain(&e);
                self.event(EventType::Warning, "ReconcileFailed", &key, text.clone());
                let mut out = Reconciled::nothing(Requeue::After(
                    until.saturating_duration_since(std::time::Instant::now()),
                ));
                out.error = Some(text);
                Some(out)
            }
        }
    }
}
