//! The Schedule planner: `plan(&Input) -> Plan`. Pure: the clock, the store's runs and the jobs'
//! states are inputs; the executor carries out the plan verbatim, in this order:
//! 1. `record` (new rows; the store refuses a duplicate `(schedule, scheduledAt)`, and a start
//!    whose row was refused is not carried out),
//! 2. `update` (changed rows, compare-and-set on the stored outcome),
//! 3. `stop` / `start` / `remove` (Swarm),
//! 4. `prune`, `cursor`, events, status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use steward_core::{Observation, Requeue};
use time::OffsetDateTime;

use crate::model::ScheduleState;
use crate::run::Run;

/// What a job service was seen doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobObs {
    /// Created, not finished (including waiting to be scheduled).
    Running,
    Succeeded {
        logs: String,
    },
    Failed {
        exit_code: Option<i64>,
        /// E.g. `failed: task: non-zero exit (3)`.
        reason: String,
        logs: String,
    },
    /// No such service.
    Missing,
}

/// Everything the planner looks at for one schedule.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub now: OffsetDateTime,
    pub schedule: &'a ScheduleState,
    /// Every instant up to and including this one has been considered already (stored by the
    /// executor from [`Plan::cursor`]). `None` for a schedule seen for the first time: nothing
    /// before `now` is caught up.
    pub cursor: Option<OffsetDateTime>,
    /// When this controller began reconciling: instants before it were missed while no
    /// controller ran, and the one caught up is recorded with trigger `CatchUp`.
    pub controller_started: OffsetDateTime,
    /// The schedule's active runs and its newest finished runs (at least `history` of each bucket
    /// plus one, so pruning can be decided), newest first.
    pub runs: &'a [Run],
    /// The job service of every active run that has one, by job name. `Unknown` when Swarm could
    /// not be read: nothing is decided about that run.
    pub jobs: &'a BTreeMap<String, Observation<JobObs>>,
    /// The image runs start with now: `job.image`, or what `job.imageFrom.service` runs according
    /// to Swarm (`Unknown` when Swarm could not be read or the service is not running).
    pub image: Observation<String>,
}

/// A job to create for a run whose row is recorded (or already was, as `Pending`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartJob {
    pub schedule: String,
    pub scheduled_at: OffsetDateTime,
    /// Swarm service name ([`crate::run::job_name`]).
    pub job: String,
    pub image: String,
    pub attempt: u32,
    /// The row as it is to be stored once the job service exists (outcome `Running`, `startedAt`
    /// set); stored with compare-and-set from `Pending`. A failed start leaves the row `Pending`
    /// and the next pass tries again (the job name makes a second create find the first).
    pub running: Run,
}

/// A job to stop (its service removed) because the run timed out or was replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopJob {
    pub job: String,
    pub why: StopReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    TimedOut,
    Replaced,
}

/// Event reasons of the Schedule kind (PascalCase, as Kubernetes').
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    RunStarted,
    RunSucceeded,
    RunFailed,
    RunRetrying,
    RunTimedOut,
    RunSkipped,
    RunMissed,
    RunReplaced,
    /// `imageFrom` names a service whose image is not known: the run waits.
    ImageUnknown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RunStarted => "RunStarted",
            Reason::RunSucceeded => "RunSucceeded",
            Reason::RunFailed => "RunFailed",
            Reason::RunRetrying => "RunRetrying",
            Reason::RunTimedOut => "RunTimedOut",
            Reason::RunSkipped => "RunSkipped",
            Reason::RunMissed => "RunMissed",
            Reason::RunReplaced => "RunReplaced",
            Reason::ImageUnknown => "ImageUnknown",
        }
    }

    /// Warning events are the ones a person should look at (and are sent to notifiers).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::RunFailed | Reason::RunTimedOut | Reason::RunMissed | Reason::ImageUnknown
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub reason: Reason,
    pub message: String,
}

/// A schedule's status beside its conditions (`ResourceStatus.details`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    pub schedule: String,
    pub time_zone: String,
    pub suspended: bool,
    /// The newest instant a run was recorded for (started, skipped or missed).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_schedule_time: Option<OffsetDateTime>,
    /// When the newest succeeded run finished.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_successful_time: Option<OffsetDateTime>,
    /// The next instant; `None` while suspended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_schedule_time: Option<OffsetDateTime>,
    /// Ids of the active runs.
    pub active: Vec<i64>,
    /// Outcome of the newest finished run (`Succeeded`, `Failed`, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
}

/// Ready / Progressing / Degraded, as for every kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conditions {
    /// The last finished run succeeded (or none has finished yet).
    pub ready: (bool, &'static str, String),
    /// A run is active.
    pub progressing: (bool, &'static str, String),
    /// The last finished run failed or timed out, or the latest instant was missed.
    pub degraded: (bool, &'static str, String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// New rows, oldest instant first.
    pub record: Vec<Run>,
    /// Rows whose outcome, attempt, job or times change; `expected` is the stored outcome the
    /// change was planned against (compare-and-set: a row that moved meanwhile is left alone).
    pub update: Vec<(crate::run::Outcome, Run)>,
    pub stop: Vec<StopJob>,
    pub start: Vec<StartJob>,
    /// Job services of finished runs, removed once the outcome is recorded.
    pub remove: Vec<String>,
    /// Run ids beyond the history limits.
    pub prune: Vec<i64>,
    /// The new cursor to store (the newest instant considered), when it moved.
    pub cursor: Option<OffsetDateTime>,
    pub events: Vec<Event>,
    pub requeue: Requeue,
    pub status: ScheduleStatus,
    pub conditions: Conditions,
    /// What a due run waits on (the Service `imageFrom` names, while its image is unknown).
    pub waiting: Option<steward_core::WaitingOn>,
}

/// Plans one reconcile of one schedule.
pub fn plan(input: &Input) -> Plan {
    crate::planner::plan(input)
}
