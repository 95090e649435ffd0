//! The Schedule reconciler's own logic (gather, plan, execute in order) against a real SQLite
//! store and a fake engine behind the `Jobs` seam, with the clock as an input.

use std::collections::BTreeMap;
use std::sync::Mutex;

use steward_backends::jobs::JobSpec;
use steward_core::Requeue;
use steward_schedule::plan::JobObs;
use steward_schedule::{CronSchedule, JobState, Outcome, Run, ScheduleState, Trigger};
use steward_store::Store;
use time::OffsetDateTime;

use super::schedule::{reconcile, Context, Jobs, Scope};

/// The engine as the reconciler sees it: job states by name, and what it was asked to do.
#[derive(Default)]
struct FakeJobs {
    jobs: Mutex<BTreeMap<String, JobObs>>,
    started: Mutex<Vec<String>>,
    removed: Mutex<Vec<String>>,
    /// Every call fails, as an unreachable engine.
    down: Mutex<bool>,
    /// `start` fails (the engine refuses the create) while set.
    refuse_start: Mutex<bool>,
    /// `prune_secrets` calls: (schedule, versions kept).
    pruned: Mutex<Vec<(String, Vec<String>)>>,
}

impl FakeJobs {
    fn set(&self, job: &str, obs: JobObs) {
        self.jobs.lock().unwrap().insert(job.to_string(), obs);
    }
    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }
}

impl Jobs for FakeJobs {
    async fn status(&self, job: &str) -> Result<JobObs, String> {
        if *self.down.lock().unwrap() {
            return Err("engine unreachable".into());
        }
        Ok(self.jobs.lock().unwrap().get(job).cloned().unwrap_or(JobObs::Missing))
    }
    async fn start(&self, spec: &JobSpec) -> Result<(), String> {
        if *self.down.lock().unwrap() || *self.refuse_start.lock().unwrap() {
            return Err("engine refused".into());
        }
        self.started.lock().unwrap().push(spec.name.clone());
        self.jobs
            .lock()
            .unwrap()
            .entry(spec.name.clone())
            .or_insert(JobObs::Running);
        Ok(())
    }
    async fn remove(&self, job: &str) -> Result<(), String> {
        self.removed.lock().unwrap().push(job.to_string());
        self.jobs.lock().unwrap().remove(job);
        Ok(())
    }
    async fn prune_secrets(
        &self,
        _stack: &str,
        schedule: &str,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<usize, String> {
        self.pruned
            .lock()
            .unwrap()
            .push((schedule.to_string(), keep.iter().cloned().collect()));
        Ok(0)
    }
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

/// A multiple of 5 s: an instant of `*/5 * * * * *`.
const T0: i64 = 1_700_000_000;

fn every_five_seconds() -> ScheduleState {
    ScheduleState::new(
        "tick",
        CronSchedule::parse("*/5 * * * * *", "UTC").unwrap(),
        JobState::image("taxcollector-demo:v1"),
    )
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    (dir, store)
}

/// The stored run of `schedule` for the instant `secs`.
fn run_of(store: &Store, schedule: &str, secs: i64) -> Run {
    store
        .runs(Some(schedule), None)
        .unwrap()
        .into_iter()
        .find(|r| r.scheduled_at == at(secs))
        .unwrap_or_else(|| panic!("a run of {schedule} for {}", at(secs)))
}

async fn pass(store: &Store, jobs: &FakeJobs, s: &ScheduleState, now: i64) -> super::schedule::Reconciled {
    let ctx = Context {
        stack: "demo",
        now: at(now),
        controller_started: at(T0 - 60),
        images: None,
        generation: 1,
    };
    reconcile(store, jobs, s, &ctx, Scope::Full).await.unwrap()
}

#[tokio::test]
async fn a_due_instant_is_recorded_then_started_then_finished_once() {
    let (_d, store) = store();
    let jobs = FakeJobs::default();
    let s = every_five_seconds();
    // First sight: nothing before now is caught up; the next instant is the wake-up.
    let first = pass(&store, &jobs, &s, T0 + 1).await;
    assert_eq!(first.requeue, Requeue::At(at(T0 + 5)));
    assert!(jobs.started().is_empty());

    let due = pass(&store, &jobs, &s, T0 + 5).await;
    assert_eq!(jobs.started(), vec![format!("tick-{}", T0 + 5)]);
    let runs = store.runs(Some("tick"), None).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, Outcome::Running);
    assert_eq!(runs[0].trigger, Trigger::Schedule);
    assert_eq!(runs[0].started_at, Some(at(T0 + 5)));
    assert!(due.events.iter().any(|e| e.reason == "RunStarted"), "{:?}", due.events);

    // The same instant, looked at again while running: no second start.
    pass(&store, &jobs, &s, T0 + 6).await;
    assert_eq!(jobs.started().len(), 1);

    jobs.set(
        &format!("tick-{}", T0 + 5),
        JobObs::Succeeded {
            logs: "tick: done\n".into(),
        },
    );
    let done = pass(&store, &jobs, &s, T0 + 7).await;
    let run = &store.runs(Some("tick"), None).unwrap()[0];
    assert_eq!(run.outcome, Outcome::Succeeded);
    assert_eq!(run.logs, "tick: done\n");
    assert_eq!(done.finished.len(), 1);
    assert_eq!(*jobs.removed.lock().unwrap(), vec![format!("tick-{}", T0 + 5)]);
    let status = store.status("Schedule", "tick").unwrap().expect("status written");
    let details = status.details.unwrap();
    assert_eq!(details["lastOutcome"], "Succeeded");
    assert_eq!(details["nextScheduleTime"], "2023-11-14T22:13:30Z");
}

#[tokio::test]
async fn an_instant_claimed_elsewhere_is_not_started_here() {
    let (_d, store) = store();
    let jobs = FakeJobs::default();
    let s = every_five_seconds();
    pass(&store, &jobs, &s, T0 + 1).await;
    // Another controller recorded the instant between our read and our claim.
    let mut theirs = Run::new("tick", at(T0 + 5), Trigger::Schedule, Outcome::Pending);
    theirs.job = Some(format!("tick-{}", T0 + 5));
    store.claim_run(&theirs, true).unwrap();
    // This reconcile finds their Pending row for the instant: it records nothing new and starts
    // the job under the row's deterministic name, so there is still one job for the instant.
    pass(&store, &jobs, &s, T0 + 5).await;
    pass(&store, &jobs, &s, T0 + 6).await;
    assert_eq!(jobs.started(), vec![format!("tick-{}", T0 + 5)]);
    assert_eq!(store.runs(Some("tick"), None).unwrap().len(), 1, "one row per instant");
}

#[tokio::test]
async fn a_refused_start_stays_pending_and_is_retried_under_the_same_name() {
    let (_d, store) = store();
    let jobs = FakeJobs::default();
    let s = every_five_seconds();
    pass(&store, &jobs, &s, T0 + 1).await;
    *jobs.refuse_start.lock().unwrap() = true;
    let refused = pass(&store, &jobs, &s, T0 + 5).await;
    assert!(refused.events.iter().any(|e| e.reason == "RunStartFailed"));
    assert_eq!(store.runs(Some("tick"), None).unwrap()[0].outcome, Outcome::Pending);
    *jobs.refuse_start.lock().unwrap() = false;
    pass(&store, &jobs, &s, T0 + 6).await;
    assert_eq!(jobs.started(), vec![format!("tick-{}", T0 + 5)]);
    assert_eq!(store.runs(Some("tick"), None).unwrap()[0].outcome, Outcome::Running);
}

#[tokio::test]
async fn an_unreadable_engine_decides_nothing_about_a_running_run() {
    let (_d, store) = store();
    let jobs = FakeJobs::default();
    let mut s = every_five_seconds();
    s.timeout = std::time::Duration::from_secs(2);
    pass(&store, &jobs, &s, T0 + 1).await;
    pass(&store, &jobs, &s, T0 + 5).await;
    *jobs.down.lock().unwrap() = true;
    // Past its timeout, but Swarm cannot be read: not stopped, not failed, not TimedOut.
    pass(&store, &jobs, &s, T0 + 9).await;
    let run = run_of(&store, "tick", T0 + 5);
    assert_eq!(run.outcome, Outcome::Running);
    assert!(jobs.removed.lock().unwrap().is_empty());
    *jobs.down.lock().unwrap() = false;
    pass(&store, &jobs, &s, T0 + 9).await;
    let run = run_of(&store, "tick", T0 + 5);
    assert_eq!(run.outcome, Outcome::TimedOut);
}

#[tokio::test]
async fn a_run_scope_drives_one_manual_run_and_nothing_else() {
    let (_d, store) = store();
    let jobs = FakeJobs::default();
    let s = every_five_seconds();
    let mut manual = Run::new("tick", at(T0 + 2), Trigger::Manual, Outcome::Pending);
    manual.job = Some(steward_schedule::run::job_name("tick", at(T0 + 2), 1, true));
    let steward_store::Claim::Inserted(id) = store.claim_run(&manual, true).unwrap() else {
        panic!("inserted")
    };
    let ctx = Context {
        stack: "demo",
        now: at(T0 + 10),
        controller_started: at(T0 + 2),
        images: None,
        generation: 0,
    };
    reconcile(&store, &jobs, &s, &ctx, Scope::Run(id)).await.unwrap();
    // The manual run started; the instants at T0+5 and T0+10 are not this command's business.
    assert_eq!(jobs.started(), vec![manual.job.clone().unwrap()]);
    assert_eq!(store.runs(Some("tick"), None).unwrap().len(), 1);
    assert!(
        store.status("Schedule", "tick").unwrap().is_none(),
        "no status from a one-run scope"
    );
}

#[tokio::test]
async fn an_idle_resync_reads_the_status_instead_of_rewriting_it() {
    let (_d, store) = store();
    let jobs = FakeJobs::default();
    // Never due in the window: 1 January only.
    let s = ScheduleState::new(
        "yearly",
        CronSchedule::parse("0 0 1 1 *", "UTC").unwrap(),
        JobState::image("taxcollector-demo:v1"),
    );
    pass(&store, &jobs, &s, T0).await;
    let written = store.status("Schedule", "yearly").unwrap().unwrap().last_reconcile;
    pass(&store, &jobs, &s, T0 + 30).await;
    assert_eq!(
        store.status("Schedule", "yearly").unwrap().unwrap().last_reconcile,
        written,
        "nothing changed: not rewritten"
    );
    pass(&store, &jobs, &s, T0 + 301).await;
    assert_eq!(
        store.status("Schedule", "yearly").unwrap().unwrap().last_reconcile,
        at(T0 + 301),
        "rewritten once it is five minutes old"
    );
}

#[tokio::test]
async fn a_finished_job_lets_old_secret_versions_go_and_keeps_the_current_one() {
    let (_d, store) = store();
    let jobs = FakeJobs::default();
    let mut s = every_five_seconds();
    s.job.env.insert("DB_PASSWORD".into(), "rotated-value".into());
    s.job.secret_env.insert("DB_PASSWORD".into());
    pass(&store, &jobs, &s, T0 + 1).await;
    pass(&store, &jobs, &s, T0 + 5).await;
    assert!(
        jobs.pruned.lock().unwrap().is_empty(),
        "nothing is cleaned up while the job runs"
    );
    jobs.set(&format!("tick-{}", T0 + 5), JobObs::Succeeded { logs: String::new() });
    pass(&store, &jobs, &s, T0 + 7).await;
    let current =
        steward_plan::versioned_name(steward_plan::ObjectKind::Secret, "tick", "DB_PASSWORD", "rotated-value");
    assert_eq!(*jobs.pruned.lock().unwrap(), vec![("tick".to_string(), vec![current])]);
}
