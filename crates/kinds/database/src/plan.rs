//! Which of a Database's calendared tasks start now, and why the others do not: the latest
//! instant of each calendar within the starting deadline, unless a hold applies. The store's
//! claim then makes each instant run exactly once.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use steward_schedule::run::Trigger;
use time::OffsetDateTime;

use crate::maintenance::{needs_vacuum, window_closes};
use crate::model::{DatabaseState, Task};
use crate::observe::Observation;
use crate::status::gate_hold;

/// An instant missed (the controller was down, the primary unreachable) still starts up to this
/// long after it; older ones are not caught up.
pub const STARTING_DEADLINE: time::Duration = time::Duration::hours(1);

/// A task to start now.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub task: Task,
    /// The calendar instant it runs for (the run's identity).
    pub at: OffsetDateTime,
    pub trigger: Trigger,
    /// Vacuum: no table is started after this.
    pub window_closes: Option<OffsetDateTime>,
}

/// Why a task whose instant is due does not start now (typed, for status).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "hold")]
pub enum NotNow {
    /// Nothing acts on a primary that could not be read.
    PrimaryUnknown,
    AlreadyRunning,
    WindowClosed,
    NothingOverThresholds,
    RolloutInProgress,
    ReplicationLagging {
        why: String,
    },
    /// A restore test waits for a backup to restore, an archive for a verified one: the
    /// instant stays due (within the starting deadline) until there is one.
    NothingToRestore,
    NothingToArchive,
}

impl NotNow {
    /// Why, in words, for events and `steward describe`.
    pub fn describe(&self) -> String {
        match self {
            NotNow::PrimaryUnknown => "the primary could not be read".into(),
            NotNow::AlreadyRunning => "one is already running".into(),
            NotNow::WindowClosed => "the maintenance window is closed".into(),
            NotNow::NothingOverThresholds => "no table is over the vacuum thresholds".into(),
            NotNow::RolloutInProgress => "a rollout is in progress".into(),
            NotNow::ReplicationLagging { why } => format!("replication is lagging: {why}"),
            NotNow::NothingToRestore => "there is no backup to restore yet".into(),
            NotNow::NothingToArchive => "there is no verified backup to archive yet".into(),
        }
    }

    /// The holds worth an event when they begin: not a run that is simply still going.
    pub fn is_news(&self) -> bool {
        !matches!(self, NotNow::AlreadyRunning)
    }
}

pub struct Input<'a> {
    pub db: &'a DatabaseState,
    pub obs: &'a Observation,
    pub now: OffsetDateTime,
    /// When this controller began: an instant before it is a catch-up.
    pub started: OffsetDateTime,
    pub rollout_active: bool,
    pub running: &'a BTreeSet<Task>,
    /// A live backup exists (what a restore test restores).
    pub has_backup: bool,
    /// A live verified backup exists (what the archive copies).
    pub has_verified: bool,
    /// The newest calendar instant already claimed, per task: it is neither started again nor
    /// reported held.
    pub claimed: &'a BTreeMap<Task, OffsetDateTime>,
}

/// The tasks to start now, and the held ones with why.
pub fn due(i: &Input<'_>) -> (Vec<Due>, Vec<(Task, NotNow)>) {
    let mut start = Vec::new();
    let mut held = Vec::new();
    let lag = gate_hold(&i.db.name, Some(i.obs), i.db.lag_limit());
    for task in Task::ALL {
        let Some(cal) = i.db.calendar(task) else { continue };
        let (instants, _) = cal.between(i.now - STARTING_DEADLINE, i.now, 1);
        let Some(at) = instants.last().copied() else { continue };
        if i.claimed.get(&task).is_some_and(|c| *c >= at) {
            continue;
        }
        if i.obs.primary.is_err() {
            held.push((task, NotNow::PrimaryUnknown));
            continue;
        }
        if i.running.contains(&task) {
            held.push((task, NotNow::AlreadyRunning));
            continue;
        }
        if task == Task::RestoreTest && !i.has_backup {
            held.push((task, NotNow::NothingToRestore));
            continue;
        }
        if task == Task::Archive && !i.has_verified {
            held.push((task, NotNow::NothingToArchive));
            continue;
        }
        let mut closes = None;
        if matches!(task, Task::Vacuum | Task::Reindex) {
            // Maintenance writes WAL the replicas must replay, and competes with a deploy.
            if i.rollout_active {
                held.push((task, NotNow::RolloutInProgress));
                continue;
            }
            if let Some(why) = &lag {
                held.push((task, NotNow::ReplicationLagging { why: why.clone() }));
                continue;
            }
        }
        if task == Task::Vacuum {
            let Some(m) = &i.db.spec.maintenance else { continue };
            let Some(v) = &m.vacuum else { continue };
            let Some(end) = window_closes(cal, m.window.duration.get(), i.now) else {
                held.push((task, NotNow::WindowClosed));
                continue;
            };
            let over = i
                .obs
                .stats
                .as_ref()
                .is_some_and(|s| s.tables.iter().any(|t| needs_vacuum(&t.stats(), v)));
            if !over {
                held.push((task, NotNow::NothingOverThresholds));
                continue;
            }
            closes = Some(end);
        }
        start.push(Due {
            task,
            at,
            trigger: if at < i.started {
                Trigger::CatchUp
            } else {
                Trigger::Schedule
            },
            window_closes: closes,
        });
    }
    (start, held)
}
