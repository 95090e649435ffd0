//! `steward run`: reconcile at start, on Swarm service events, on manifest changes and every
//! resync interval, until asked to stop.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use steward_backends::git::{GitError, GitSource};
use steward_plan::status::EventType;

use crate::database::DbReconciled;
use crate::pass::{Controller, PassOutcome, SourceRevision};
use crate::schedule::Reconciled;
use crate::scheduler::Scheduler;
use crate::Wake;
use steward_core::{Kind, ObjectRef, Requeue};

/// Called after every pass with how long it took.
pub type AfterPass = Box<dyn FnMut(&Controller, &PassOutcome, Duration) + Send>;
/// Called after every reconcile of a schedule (metrics), with its name and how long it took.
pub type AfterSchedule = Box<dyn FnMut(&Controller, &str, &Reconciled, Duration) + Send>;
/// Called after every reconcile of a Database (metrics), with its name and how long it took.
pub type AfterDatabase = Box<dyn FnMut(&Controller, &str, &DbReconciled, Duration) + Send>;

pub struct RunOptions {
    pub paths: Vec<PathBuf>,
    pub resync: Duration,
    /// Desired state from git instead of (only) `paths`.
    pub git: Option<GitSource>,
    /// Poll interval of the git source.
    pub git_interval: Duration,
    /// Requests from the HTTP API and webhooks.
    pub wake: Option<mpsc::Receiver<Wake>>,
    /// With a shared store, only the leader reconciles; the others stand by.
    pub leadership: Option<std::sync::Arc<steward_store::leader::Leadership>>,
    /// Called after every pass (metrics, readiness).
    pub after_pass: Option<AfterPass>,
    /// Called after every reconcile of a schedule.
    pub after_schedule: Option<AfterSchedule>,
    /// Called after every reconcile of a Database.
    pub after_database: Option<AfterDatabase>,
}

/// Git's side of the loop: what was last reported, so a failing remote is one event, not one
/// per poll.
#[derive(Default)]
struct GitState {
    failing: Option<String>,
}

/// Fetches; true when the desired state's source moved (a pass is due).
fn fetch_git(ctl: &mut Controller, git: &mut GitSource, st: &mut GitState) -> bool {
    let object = format!("Stack/{}", ctl.stack_name());
    let result = tokio::task::block_in_place(|| git.fetch());
    match result {
        Ok(fetched) => {
            if st.failing.take().is_some() {
                ctl.event(
                    EventType::Normal,
                    "SourceRecovered",
                    &object,
                    format!("{} is reachable again", git.url),
                );
            }
            let Some(f) = fetched else { return false };
            if let Some(old) = &f.force_pushed_from {
                ctl.event(
                    EventType::Warning,
                    "ForcePushed",
                    &object,
                    format!(
                        "branch {} was rewritten: {} is not an ancestor of {}",
                        git.branch,
                        &old[..old.len().min(7)],
                        f.commit.short()
                    ),
                );
            }
            tracing::info!(commit = %f.commit.describe(), "new commit");
            ctl.set_source(
                vec![f.manifests],
                Some(SourceRevision {
                    id: f.commit.sha.clone(),
                    describe: f.commit.describe(),
                }),
            );
            true
        }
        Err(e) => {
            let text = steward_backends::swarm::error_chain(&e);
            if st.failing.as_deref() != Some(text.as_str()) {
                let (reason, what) = match &e {
                    GitError::PathMissing { .. } => ("PathMissing", "the manifest path is gone"),
                    _ => ("SourceUnavailable", "the git source cannot be fetched"),
                };
                let kept = ctl.source_applied().map_or_else(
                    || "nothing applied yet".to_string(),
                    |r| format!("{} stays in force", r.describe),
                );
                ctl.event(EventType::Warning, reason, &object, format!("{what}; {kept}: {text}"));
                st.failing = Some(text);
            }
            false
        }
    }
}

#[derive(Debug)]
#[allow(dead_code)] // the payload is read through Debug in trace logs
enum Trigger {
    Swarm(String),
    Files,
    Sync,
    Fetch,
}

/// Longest a schedule goes without being looked at: 1,000 idle schedules resynced every 30 s
/// cost 2,000 reconciles a minute for nothing.
const SCHEDULE_RESYNC: Duration = Duration::from_secs(300);

/// How often a standby looks at the election (its retry period is 2 s).
const LEADER_CHECK: Duration = Duration::from_millis(500);

/// Gathers a burst of triggers into one pass (a `docker stack`-sized change emits many events).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Event stream re-subscription delay after a drop, doubling to the cap.
const RESUBSCRIBE: Duration = Duration::from_millis(500);
const RESUBSCRIBE_CAP: Duration = Duration::from_secs(30);

pub async fn run(mut ctl: Controller, mut opts: RunOptions, shutdown: impl Future<Output = ()>) {
    let (tx, mut rx) = mpsc::channel::<Trigger>(1024);
    let mut git_state = GitState::default();
    if let Some(git) = opts.git.as_mut() {
        // After a restart, the last applied commit is the last good state until a newer one
        // proves valid.
        if let Some(sha) = ctl.store.get_meta(crate::META_SOURCE_APPLIED).ok().flatten() {
            if let Some(dir) = git.export_of(&sha) {
                let describe = ctl
                    .store
                    .get_meta(crate::META_SOURCE_APPLIED_DESCRIBE)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| sha.clone());
                ctl.set_source(vec![dir], Some(SourceRevision { id: sha, describe }));
                let _ = ctl.load_desired();
            }
        }
        let _ = fetch_git(&mut ctl, git, &mut git_state);
    }
    if let Some(mut wake) = opts.wake.take() {
        let wtx = tx.clone();
        tokio::spawn(async move {
            while let Some(w) = wake.recv().await {
                let t = match w {
                    Wake::Sync => Trigger::Sync,
                    Wake::Fetch => Trigger::Fetch,
                };
                if wtx.send(t).await.is_err() {
                    return;
                }
            }
        });
    }
    let mut next_fetch = tokio::time::Instant::now() + opts.git_interval;

    // Swarm events: any service change wakes the loop. Re-subscribes after a drop with `since`
    // so nothing in between is lost.
    let swarm = ctl.swarm.clone();
    let etx = tx.clone();
    let events_task = tokio::spawn(async move {
        let mut since: Option<i64> = None;
        let mut delay = RESUBSCRIBE;
        loop {
            let mut stream = Box::pin(swarm.events(since));
            let mut got_any = false;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        got_any = true;
                        delay = RESUBSCRIBE;
                        since = Some(time::OffsetDateTime::now_utc().unix_timestamp() - 1);
                        tracing::debug!(action = %ev.action, name = %ev.name, "swarm event");
                        if etx.send(Trigger::Swarm(ev.name)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %steward_backends::swarm::error_chain(&e), "event stream dropped");
                        break;
                    }
                }
            }
            if since.is_none() {
                since = Some(time::OffsetDateTime::now_utc().unix_timestamp() - 1);
            }
            if !got_any {
                delay = (delay * 2).min(RESUBSCRIBE_CAP);
            }
            tokio::time::sleep(delay).await;
            // A new subscription may have missed changes: wake the loop to re-read.
            if etx.send(Trigger::Swarm(String::new())).await.is_err() {
                return;
            }
        }
    });

    // Manifest changes.
    let ftx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !ev.kind.is_access() {
                let _ = ftx.try_send(Trigger::Files);
            }
        }
    })
    .ok();
    if let Some(w) = watcher.as_mut() {
        for p in &opts.paths {
            if let Err(e) = w.watch(p, RecursiveMode::Recursive) {
                tracing::warn!(path = %p.display(), error = %e, "cannot watch manifests; relying on resync");
            }
        }
    }

    tokio::pin!(shutdown);
    // The work queue: the Stack (the pass over services and their rollout) and each Schedule,
    // each due at the earliest time anything asked for.
    let mut queue = Scheduler::default();
    queue.schedule(ObjectRef::stack(ctl.stack_name()), tokio::time::Instant::now());
    // Spec hashes of the schedules last queued: a new or changed schedule is reconciled at once.
    let mut schedule_hashes: std::collections::BTreeMap<String, String> = Default::default();
    let mut database_hashes: std::collections::BTreeMap<String, String> = Default::default();
    let mut was_leader = false;
    loop {
        let mut fetch = false;
        let mut relevant = false;
        let idle = tokio::time::Instant::now() + opts.resync;
        let due = queue.next().unwrap_or(idle);
        let wake_at = if opts.git.is_some() { due.min(next_fetch) } else { due };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(wake_at) => {}
            t = rx.recv() => {
                tracing::debug!(trigger = ?t, "woken");
                let mut burst: Vec<Trigger> = t.into_iter().collect();
                // Drain the burst (a webhook must not wait for it: it asked for speed).
                if !matches!(burst.first(), Some(Trigger::Fetch)) {
                    tokio::time::sleep(DEBOUNCE).await;
                }
                while let Ok(t) = rx.try_recv() {
                    burst.push(t);
                }
                for t in &burst {
                    match t {
                        Trigger::Fetch => fetch = true,
                        // Other stacks' services change too on a shared Swarm: their events
                        // need no pass of ours.
                        Trigger::Swarm(name) if !name.is_empty() && !ctl.cares_about(name) => {}
                        _ => relevant = true,
                    }
                }
            }
        }
        let now = tokio::time::Instant::now();
        if let Some(git) = opts.git.as_mut() {
            if fetch || now >= next_fetch {
                relevant |= fetch_git(&mut ctl, git, &mut git_state);
                next_fetch = tokio::time::Instant::now() + opts.git_interval;
            }
        }
        if let Some(l) = &opts.leadership {
            let leading = l.is_leader();
            if leading != was_leader {
                was_leader = leading;
                let object = format!("Stack/{}", ctl.stack_name());
                if leading {
                    ctl.event(
                        EventType::Normal,
                        "LeadershipAcquired",
                        &object,
                        format!("{} leads (epoch {}) and reconciles", l.holder(), l.epoch()),
                    );
                    // A new leader re-reads everything at once.
                    relevant = true;
                    schedule_hashes.clear();
                    database_hashes.clear();
                } else {
                    ctl.event(
                        EventType::Warning,
                        "LeadershipLost",
                        &object,
                        format!("{} stands by", l.holder()),
                    );
                }
            }
            if !leading {
                // Standing by: look at the election again within its retry period.
                queue.schedule(
                    ObjectRef::stack(ctl.stack_name()),
                    tokio::time::Instant::now() + LEADER_CHECK,
                );
                continue;
            }
        }
        let mut due = queue.pop_due(now);
        let stack_due = relevant || fetch || due.iter().any(|o| o.kind == Kind::Stack);
        if stack_due {
            let started = std::time::Instant::now();
            let outcome = ctl.pass().await;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                executed = outcome.executed,
                converged = outcome.converged,
                "pass done"
            );
            if let Some(f) = opts.after_pass.as_mut() {
                f(&ctl, &outcome, started.elapsed());
            }
            let after = outcome.requeue_after.unwrap_or(opts.resync).min(opts.resync);
            queue.schedule(ObjectRef::stack(ctl.stack_name()), tokio::time::Instant::now() + after);
            // New and changed schedules are looked at now; removed ones one last time (their
            // status is forgotten).
            let hashes = ctl.schedule_hashes();
            for (name, hash) in &hashes {
                if schedule_hashes.get(name) != Some(hash) {
                    due.push(ObjectRef::schedule(name));
                }
            }
            for name in schedule_hashes.keys().filter(|n| !hashes.contains_key(*n)) {
                queue.forget(&ObjectRef::schedule(name));
                due.push(ObjectRef::schedule(name));
            }
            schedule_hashes = hashes;
            let hashes = ctl.database_hashes();
            for (name, hash) in &hashes {
                if database_hashes.get(name) != Some(hash) {
                    due.push(ObjectRef::database(name));
                }
            }
            for name in database_hashes.keys().filter(|n| !hashes.contains_key(*n)) {
                queue.forget(&ObjectRef::database(name));
                due.push(ObjectRef::database(name));
            }
            database_hashes = hashes;
        }
        due.sort();
        due.dedup();
        let databases_due: Vec<ObjectRef> = due.iter().filter(|o| o.kind == Kind::Database).cloned().collect();
        for object in due.into_iter().filter(|o| o.kind == Kind::Schedule) {
            let started = std::time::Instant::now();
            let Some(done) = ctl.reconcile_schedule(&object.name).await else {
                continue;
            };
            if let Some(f) = opts.after_schedule.as_mut() {
                f(&ctl, &object.name, &done, started.elapsed());
            }
            // A schedule asks for its own next look (its next instant, a poll while a run is
            // active); the safety net for anything it could not see coming (a run a manual
            // trigger left behind) is a slower resync than the Stack's: spec changes are queued
            // at once anyway.
            let requeue = done.requeue.min(
                Requeue::After(opts.resync.max(SCHEDULE_RESYNC)),
                time::OffsetDateTime::now_utc(),
            );
            tracing::debug!(
                object = %object,
                elapsed_ms = started.elapsed().as_millis() as u64,
                requeue = ?requeue,
                conflict = done.conflict,
                "schedule reconciled"
            );
            queue.requeue(
                object,
                requeue,
                tokio::time::Instant::now(),
                time::OffsetDateTime::now_utc(),
            );
        }
        for object in databases_due {
            let started = std::time::Instant::now();
            let Some(done) = ctl.reconcile_database(&object.name).await else {
                continue;
            };
            if let Some(f) = opts.after_database.as_mut() {
                f(&ctl, &object.name, &done, started.elapsed());
            }
            tracing::debug!(
                object = %object,
                elapsed_ms = started.elapsed().as_millis() as u64,
                requeue = ?done.requeue,
                "database reconciled"
            );
            queue.requeue(
                object,
                done.requeue,
                tokio::time::Instant::now(),
                time::OffsetDateTime::now_utc(),
            );
        }
    }
    events_task.abort();
    drop(watcher);
    tracing::info!("stopped");
}
