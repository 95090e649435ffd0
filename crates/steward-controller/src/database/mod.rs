//! The Database reconciler: each reconcile observes every server (cheap queries on kept
//! connections), the slower statistics on their interval, writes the conditions and the one-view
//! report as status, records events when a condition changes, and starts the Database's
//! calendared tasks (backup, restore test, archive, vacuum, reindex) as runs of the scheduler.
//! The deciding is `steward_database`'s; the Stack pass asks [`Controller::database_gates`]
//! before it begins a rollout.

mod gate;
pub mod tasks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steward_backends::database::Observer;
use steward_backends::swarm::error_chain;
use steward_core::status::{Condition, ConditionStatus, ConditionType, ResourceStatus};
use steward_core::{ObjectRef, Requeue};
use steward_database::backup::{Backup, BackupTrigger};
use steward_database::observe::Observation;
use steward_database::plan;
use steward_database::status::{self, Input};
use steward_database::{DatabaseState, Reason, Task};
use steward_plan::status::EventType;
use steward_schedule::run::{Outcome, Run, Trigger};
use steward_store::{Claim, Store};
use time::OffsetDateTime;

use crate::pass::Controller;
pub use tasks::{execute, TaskContext, TaskOutcome};

const KIND: &str = "Database";
/// How often a Database is observed when nothing else asks: the cheap queries only.
pub const OBSERVE_INTERVAL: Duration = Duration::from_secs(10);
/// While a task runs: how soon its end is looked for.
const TASK_POLL: Duration = Duration::from_secs(1);

/// A task running on a blocking thread.
pub(crate) struct InFlight {
    run: Run,
    handle: tokio::task::JoinHandle<TaskOutcome>,
}

impl InFlight {
    /// Runs `task` of `db` for `run` on a blocking thread.
    fn launch(db: &DatabaseState, task: Task, run: Run, store: Arc<Store>, ctx: TaskContext) -> InFlight {
        tracing::info!(database = %db.name, task = task.as_str(), run = run.id, "starting");
        let d = db.clone();
        let handle = tokio::task::spawn_blocking(move || execute(task, &d, &store, &ctx));
        InFlight { run, handle }
    }

    /// Its run and what the task did (a thread that panicked is a failed task).
    async fn join(self, task: Task) -> (Run, TaskOutcome) {
        let out = self.handle.await.unwrap_or_else(|e| TaskOutcome {
            ok: false,
            message: format!("{} stopped: {e}", task.as_str()),
            ..Default::default()
        });
        (self.run, out)
    }
}

/// What the controller keeps of one Database between reconciles.
#[derive(Default)]
pub(crate) struct Runtime {
    /// Connections kept across reconciles; `None` while an observation holds them.
    observer: Option<Observer>,
    pub(crate) last: Option<Observation>,
    in_flight: BTreeMap<Task, InFlight>,
    /// Set while vacuum and reindex must stop between tables.
    hold: Arc<AtomicBool>,
    /// The due tasks the last reconcile did not start, and why: a hold is reported once, when
    /// it begins or its reason changes.
    held: BTreeMap<Task, plan::NotNow>,
    /// The newest calendar instant claimed per task (read from the store once, then kept as
    /// claims succeed), so a done instant is not claimed again on every pass nor reported held.
    claimed: Option<BTreeMap<Task, OffsetDateTime>>,
}

/// What one reconcile of a Database did.
#[derive(Debug)]
pub struct DbReconciled {
    pub requeue: Requeue,
    pub status: Option<ResourceStatus>,
    /// Runs that ended in this reconcile, with the task's measured restore time if any.
    pub finished: Vec<(Task, Run, Option<f64>)>,
    pub error: Option<String>,
}

/// The run of `task` as its schedule instant claims it.
pub fn new_run(db: &str, task: Task, at: OffsetDateTime, trigger: Trigger, now: OffsetDateTime) -> Run {
    Run {
        id: 0,
        schedule: task.run_name(db),
        scheduled_at: at,
        trigger,
        outcome: Outcome::Running,
        attempt: 1,
        // Who runs it: a run whose process is gone is failed by the next reconcile.
        job: Some(format!("pid:{}", std::process::id())),
        started_at: Some(now),
        finished_at: None,
        retry_at: None,
        exit_code: None,
        message: format!("{} running", task.as_str()),
        logs: String::new(),
    }
}

/// Ends `run` with `out` (compare-and-set from Running) and hands each of its events to `emit`
/// (the controller's [`Controller::event`], which also notifies; [`store_events`] elsewhere).
pub fn finish_run(store: &Store, db: &str, mut run: Run, out: &TaskOutcome, emit: &mut dyn FnMut(Reason, &str)) -> Run {
    run.outcome = if out.ok { Outcome::Succeeded } else { Outcome::Failed };
    run.finished_at = Some(OffsetDateTime::now_utc());
    run.message = out.message.clone();
    run.logs = out.logs.clone();
    if let Err(e) = store.update_run(Outcome::Running, &run) {
        tracing::error!(database = db, run = run.id, error = %error_chain(&e), "cannot record a run's end");
    }
    for (reason, message) in &out.events {
        emit(*reason, message);
    }
    run
}

fn event_type(r: Reason) -> EventType {
    if r.is_warning() {
        EventType::Warning
    } else {
        EventType::Normal
    }
}

/// Records the events of `db` straight into `store` (and the log): for a process that is not a
/// controller (`steward backup`), which has no notifiers.
pub fn store_events<'a>(store: &'a Store, db: &str) -> impl FnMut(Reason, &str) + 'a {
    let object = ObjectRef::database(db).to_string();
    move |reason, message| {
        let type_ = event_type(reason);
        match type_ {
            EventType::Normal => tracing::info!(reason = reason.as_str(), object, "{message}"),
            EventType::Warning => tracing::warn!(reason = reason.as_str(), object, "{message}"),
        }
        let ev = steward_core::status::NewEvent {
            type_,
            reason: reason.as_str().to_string(),
            message: message.to_string(),
            object: object.clone(),
        };
        if let Err(e) = store.record_event(&ev, OffsetDateTime::now_utc()) {
            tracing::error!(error = %error_chain(&e), "cannot record an event");
        }
    }
}

/// Fails `db`'s active runs whose process is gone (a controller or `steward backup` killed
/// mid-way): they can never end by themselves, and an active run blocks the next claim.
/// Returns how many were failed. A store that cannot be read fails nothing.
pub fn reap_abandoned(
    store: &Store,
    db: &str,
    keep: &std::collections::BTreeSet<i64>,
    emit: &mut dyn FnMut(Reason, &str),
) -> usize {
    let Ok(active) = store.active_runs() else { return 0 };
    let mut n = 0;
    for run in active {
        let ours = Task::of_run(&run.schedule).is_some_and(|(d, _)| d == db);
        if !ours || keep.contains(&run.id) || !orphaned(&run) {
            continue;
        }
        let out = TaskOutcome {
            ok: false,
            message: "the process running it ended before it finished".into(),
            events: vec![(
                Reason::RunAbandoned,
                format!(
                    "run #{} of {} failed: the process running it ended before it finished",
                    run.id, run.schedule
                ),
            )],
            ..Default::default()
        };
        finish_run(store, db, run, &out, emit);
        n += 1;
    }
    n
}

/// True when the process a run names (`pid:N`) is gone: its run can never end by itself.
fn orphaned(run: &Run) -> bool {
    let Some(pid) = run.job.as_deref().and_then(|j| j.strip_prefix("pid:")) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Controller {
    /// Content of each Database of the desired state in force, by name: a new or changed one is
    /// reconciled at once.
    pub fn database_hashes(&self) -> BTreeMap<String, String> {
        self.databases
            .iter()
            .map(|d| (d.name.clone(), format!("{:?}", d.spec)))
            .collect()
    }

    /// Observes `db` now on its kept connections (a blocking thread), refreshing the slower
    /// statistics when `want_stats`.
    pub(crate) async fn observe_database(&mut self, db: &DatabaseState, want_stats: bool) -> Observation {
        let rt = self.db_runtime.entry(db.name.clone()).or_default();
        let observer = rt.observer.take().unwrap_or_default();
        let stats = rt.last.as_ref().and_then(|o| o.stats.clone());
        let d = db.clone();
        let now = OffsetDateTime::now_utc();
        let joined = tokio::task::spawn_blocking(move || {
            let mut observer = observer;
            let o = observer.observe(&d, stats, want_stats, now);
            (observer, o)
        })
        .await;
        let rt = self.db_runtime.entry(db.name.clone()).or_default();
        let obs = match joined {
            Ok((observer, o)) => {
                rt.observer = Some(observer);
                o
            }
            Err(e) => Observation {
                at: now,
                primary_server: DatabaseState::server_of(&db.spec.primary),
                primary: Err(format!("observer thread failed: {e}")),
                replicas: vec![],
                stats: None,
            },
        };
        rt.last = Some(obs.clone());
        obs
    }

    /// Fails the active runs of `name` whose process is gone (never this controller's own).
    pub(crate) fn reap_abandoned_runs(&mut self, name: &str) {
        let mine: std::collections::BTreeSet<i64> = self
            .db_runtime
            .get(name)
            .into_iter()
            .flat_map(|rt| rt.in_flight.values())
            .chain(self.predeploy_backups.values())
            .map(|f| f.run.id)
            .collect();
        let object = ObjectRef::database(name).to_string();
        reap_abandoned(&self.store, name, &mine, &mut |r, m| {
            self.event(event_type(r), r.as_str(), &object, m.to_string())
        });
    }

    /// Reconciles the Database `name`; `None` when it left the desired state (its status is
    /// forgotten; its backups and their records stay).
    pub async fn reconcile_database(&mut self, name: &str) -> Option<DbReconciled> {
        let Some(db) = self.databases.iter().find(|d| d.name == name).cloned() else {
            if let Err(e) = self.store.remove_status(KIND, name) {
                tracing::warn!(database = name, error = %error_chain(&e), "cannot forget a removed database's status");
            }
            self.db_runtime.remove(name);
            return None;
        };
        let mut finished = self.collect_finished(&db).await;
        self.reap_abandoned_runs(name);
        let now = OffsetDateTime::now_utc();
        let window_open = window_open(&db, now);
        let stats_due = self
            .db_runtime
            .get(name)
            .and_then(|rt| rt.last.as_ref())
            .and_then(|o| o.stats.as_ref())
            .is_none_or(|s| {
                now - s.at >= time::Duration::try_from(db.spec.stats_interval.get()).unwrap_or(time::Duration::MAX)
            });
        // Inside the maintenance window the dead tuples are what is acted on: read them fresh.
        let obs = self.observe_database(&db, stats_due || window_open).await;
        let backups = self.store.backups(Some(name)).map_err(|e| error_chain(&e));
        let input = Input {
            db: &db,
            obs: &obs,
            backups: backups.as_ref().map(|b| b.as_slice()).map_err(|e| e.clone()),
            now,
        };
        let decided = status::conditions(&input);
        let mut report = serde_json::to_value(status::report(&input)).unwrap_or_default();
        if let Some(obj) = report.as_object_mut() {
            if let Ok(b) = &backups {
                let newest = b.iter().map(|b| b.taken_at).max();
                obj.insert("lastBackupSuccess".into(), newest.map(steward_core::rfc3339).into());
                // A later failed test of the same file replaces its result on the backup; the
                // runs keep every outcome.
                let from_runs = self
                    .store
                    .runs(Some(&Task::RestoreTest.run_name(name)), Some(100))
                    .ok()
                    .and_then(|runs| {
                        runs.iter()
                            .filter(|r| r.outcome == Outcome::Succeeded)
                            .filter_map(|r| r.finished_at)
                            .max()
                    });
                let last = from_runs.into_iter().chain(last_restore_success(b)).max();
                obj.insert("lastRestoreTestSuccess".into(), last.map(steward_core::rfc3339).into());
            }
            let active: Vec<String> = self
                .db_runtime
                .get(name)
                .map(|rt| rt.in_flight.keys().map(|t| t.as_str().to_string()).collect())
                .unwrap_or_default();
            obj.insert("running".into(), active.into());
        }
        // A vacuum running stops between tables once a rollout begins or a replica lags.
        let rollout_active = self.load_rollout().is_some_and(|r| !r.phase.is_terminal());
        let lagging = status::gate_hold(name, Some(&obs), db.lag_limit()).is_some();
        if let Some(rt) = self.db_runtime.get(name) {
            rt.hold.store(rollout_active || lagging, Ordering::SeqCst);
        }
        let error = match &backups {
            // Without the list, a restore test or archive could not be judged: nothing starts.
            Err(e) => Some(e.clone()),
            Ok(b) if self.may_write() => match self.start_due(&db, &obs, now, rollout_active, b) {
                Ok(held) => {
                    if let Some(obj) = report.as_object_mut() {
                        obj.insert("held".into(), held_report(&held));
                    }
                    self.report_holds(&db.name, held);
                    None
                }
                Err(e) => Some(e),
            },
            Ok(_) => None,
        };
        let status = Some(self.record_database_status(&db, decided, report));
        // A run that ended right away (nothing to vacuum) is reported now.
        finished.extend(self.collect_finished(&db).await);
        let requeue = self.database_requeue(&db, now);
        Some(DbReconciled {
            requeue,
            status,
            finished,
            error,
        })
    }

    fn database_requeue(&self, db: &DatabaseState, now: OffsetDateTime) -> Requeue {
        if self.db_runtime.get(&db.name).is_some_and(|rt| !rt.in_flight.is_empty()) {
            return Requeue::After(TASK_POLL);
        }
        let mut r = Requeue::After(OBSERVE_INTERVAL);
        for t in Task::ALL {
            if let Some(next) = db.calendar(t).and_then(|c| c.next_after(now)) {
                r = r.min(Requeue::At(next), now);
            }
        }
        r
    }

    /// Runs that finished on their threads: recorded, their events emitted.
    async fn collect_finished(&mut self, db: &DatabaseState) -> Vec<(Task, Run, Option<f64>)> {
        let Some(rt) = self.db_runtime.get_mut(&db.name) else {
            return vec![];
        };
        let done: Vec<Task> = rt
            .in_flight
            .iter()
            .filter(|(_, f)| f.handle.is_finished())
            .map(|(t, _)| *t)
            .collect();
        let flights: Vec<(Task, InFlight)> = done
            .into_iter()
            .filter_map(|t| rt.in_flight.remove(&t).map(|f| (t, f)))
            .collect();
        let object = ObjectRef::database(&db.name).to_string();
        let mut out = Vec::new();
        for (t, f) in flights {
            let (run, outcome) = f.join(t).await;
            let run = finish_run(&self.store, &db.name, run, &outcome, &mut |r, m| {
                self.event(event_type(r), r.as_str(), &object, m.to_string())
            });
            out.push((t, run, outcome.restore_seconds));
        }
        out
    }

    /// Claims and starts each task `steward_database::plan::due` says is due now, judged on the
    /// backups this reconcile read; returns the due ones it holds, and why.
    fn start_due(
        &mut self,
        db: &DatabaseState,
        obs: &Observation,
        now: OffsetDateTime,
        rollout_active: bool,
        backups: &[Backup],
    ) -> Result<Vec<(Task, plan::NotNow)>, String> {
        let running: std::collections::BTreeSet<Task> = self
            .db_runtime
            .get(&db.name)
            .map(|rt| rt.in_flight.keys().copied().collect())
            .unwrap_or_default();
        let claimed = self.claimed_instants(db);
        let mut live = backups.iter().filter(|b| b.is_live());
        let (start, held) = plan::due(&plan::Input {
            db,
            obs,
            now,
            started: self.started,
            rollout_active,
            running: &running,
            has_backup: live.clone().next().is_some(),
            has_verified: live.any(Backup::verified),
            claimed: &claimed,
        });
        for d in start {
            let run = new_run(&db.name, d.task, d.at, d.trigger, now);
            let claim = self.store.claim_run(&run, true).map_err(|e| error_chain(&e))?;
            let rt = self.db_runtime.entry(db.name.clone()).or_default();
            if !matches!(claim, Claim::Busy(_)) {
                rt.claimed.get_or_insert_default().insert(d.task, d.at);
            }
            let run = match claim {
                Claim::Inserted(id) => Run { id, ..run },
                Claim::Exists(_) => continue,
                // Active elsewhere (a manual run); an abandoned one was reaped above.
                Claim::Busy(_) => continue,
            };
            let ctx = TaskContext {
                trigger: BackupTrigger::Schedule,
                now: OffsetDateTime::now_utc(),
                hold: rt.hold.clone(),
                window_closes: d.window_closes,
            };
            let flight = InFlight::launch(db, d.task, run, self.store.clone(), ctx);
            rt.in_flight.insert(d.task, flight);
        }
        Ok(held)
    }

    /// `claimed` of `db`'s runtime, read from the store's newest calendar runs the first time
    /// (a store that cannot be read yields none: the claims stay the judge).
    fn claimed_instants(&mut self, db: &DatabaseState) -> BTreeMap<Task, OffsetDateTime> {
        if let Some(c) = self.db_runtime.get(&db.name).and_then(|rt| rt.claimed.clone()) {
            return c;
        }
        let mut c = BTreeMap::new();
        let mut complete = true;
        for task in Task::ALL {
            match self.store.runs(Some(&task.run_name(&db.name)), Some(20)) {
                Ok(runs) => {
                    let newest = runs
                        .iter()
                        .filter(|r| r.trigger != Trigger::Manual)
                        .map(|r| r.scheduled_at)
                        .max();
                    if let Some(at) = newest {
                        c.insert(task, at);
                    }
                }
                Err(_) => complete = false,
            }
        }
        if complete {
            self.db_runtime.entry(db.name.clone()).or_default().claimed = Some(c.clone());
        }
        c
    }

    /// A `TaskHeld` event for each hold that began (or changed reason) since the last reconcile.
    fn report_holds(&mut self, name: &str, held: Vec<(Task, plan::NotNow)>) {
        let now: BTreeMap<Task, plan::NotNow> = held.into_iter().collect();
        let rt = self.db_runtime.entry(name.to_string()).or_default();
        let before = std::mem::replace(&mut rt.held, now.clone());
        let object = ObjectRef::database(name).to_string();
        for (task, why) in &now {
            if why.is_news() && before.get(task) != Some(why) {
                let message = format!("{} is due and held: {}", task.as_str(), why.describe());
                self.event(
                    event_type(Reason::TaskHeld),
                    Reason::TaskHeld.as_str(),
                    &object,
                    message,
                );
            }
        }
    }

    fn record_database_status(
        &self,
        db: &DatabaseState,
        decided: Vec<status::Decided>,
        report: serde_json::Value,
    ) -> ResourceStatus {
        let now = OffsetDateTime::now_utc();
        let before = self.store.status(KIND, &db.name).ok().flatten();
        let object = ObjectRef::database(&db.name).to_string();
        let mut conditions = Vec::new();
        for (type_, st, reason, message) in decided {
            let prev = before.as_ref().and_then(|b| b.condition(type_));
            let changed = prev.is_none_or(|p| p.status != st || p.reason != reason);
            let bad = match type_ {
                ConditionType::MaintenanceDue => false,
                _ => st != ConditionStatus::True,
            };
            if changed && (prev.is_some() || bad) {
                let type_ev = if bad { EventType::Warning } else { EventType::Normal };
                self.event(
                    type_ev,
                    reason,
                    &object,
                    format!("{} {}: {message}", type_.as_str(), st.as_str()),
                );
            }
            conditions.push(Condition {
                type_,
                status: st,
                reason: reason.to_string(),
                message,
                last_transition_time: prev.filter(|p| p.status == st).map_or(now, |p| p.last_transition_time),
                observed_generation: self.generation,
            });
        }
        let status = ResourceStatus::without_tasks(KIND, &db.name, conditions, self.generation, now, Some(report));
        if let Err(e) = self.store.put_status(&status) {
            tracing::error!(database = %db.name, error = %error_chain(&e), "cannot record status");
        }
        status
    }
}

/// `held` as the status reports it: `[{task, hold, message}]`.
fn held_report(held: &[(Task, plan::NotNow)]) -> serde_json::Value {
    held.iter()
        .map(|(task, why)| {
            let mut v = serde_json::to_value(why).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("task".into(), task.as_str().into());
                o.insert("message".into(), why.describe().into());
            }
            v
        })
        .collect()
}

fn window_open(db: &DatabaseState, now: OffsetDateTime) -> bool {
    match (&db.window, &db.spec.maintenance) {
        (Some(w), Some(m)) => steward_database::maintenance::window_closes(w, m.window.duration.get(), now).is_some(),
        _ => false,
    }
}

fn last_restore_success(backups: &[Backup]) -> Option<OffsetDateTime> {
    backups
        .iter()
        .filter_map(|b| b.restore.as_ref())
        .filter(|r| r.passed)
        .map(|r| r.at)
        .max()
}
