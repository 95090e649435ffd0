//! The planner's view of a schedule: the validated spec with its cron expression parsed and its
//! time zone resolved, and the job's template with secrets resolved by the controller.

use std::time::Duration;

use crate::cron::CronSchedule;
use crate::spec::{ConcurrencyPolicy, History, Mount};

#[derive(Clone, Debug)]
pub struct ScheduleState {
    pub name: String,
    pub cron: CronSchedule,
    pub policy: ConcurrencyPolicy,
    pub starting_deadline: Option<Duration>,
    pub suspend: bool,
    pub timeout: Duration,
    pub retries: u32,
    pub history: History,
    pub job: JobState,
    /// Content hash of the spec: the object's spec changed exactly when it changes.
    pub spec_hash: String,
}

/// What a run's job is made of. `Debug` prints env names only: values may be secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct JobState {
    /// `Some` for `job.image`; `None` with `image_from`.
    pub image: Option<String>,
    /// The Service whose current image runs (`job.imageFrom.service`).
    pub image_from: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    /// Names of env variables whose values came from `valueFrom`.
    pub secret_env: std::collections::BTreeSet<String>,
    pub mounts: Vec<Mount>,
}

impl std::fmt::Debug for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobState")
            .field("image", &self.image)
            .field("image_from", &self.image_from)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env (values redacted)", &self.env.keys().collect::<Vec<_>>())
            .field("mounts", &self.mounts)
            .finish()
    }
}
