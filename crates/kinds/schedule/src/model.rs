//! The planner's view of a schedule: the validated spec with its cron expression parsed and its
//! time zone resolved, and the job's template with secrets resolved by the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use steward_spec::ResolvedEnv;

use crate::cron::CronSchedule;
use crate::spec::{ConcurrencyPolicy, History, Mount, ScheduleEntry};

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
    pub env: BTreeMap<String, String>,
    /// Names of env variables whose values came from `valueFrom`.
    pub secret_env: BTreeSet<String>,
    /// Of `secret_env`, those with `expose: env` (the rest become Swarm secrets).
    pub exposed_env: BTreeSet<String>,
    pub mounts: Vec<Mount>,
    /// Networks the job joins, with their aliases.
    pub networks: Vec<(String, Vec<String>)>,
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

impl ScheduleState {
    /// The planner's view of a validated entry, with its environment resolved by the controller.
    pub fn from_entry(entry: &ScheduleEntry, env: Vec<ResolvedEnv>) -> ScheduleState {
        let s = &entry.spec;
        let cron = CronSchedule::parse(&s.schedule, &s.time_zone)
            .expect("validation guarantees spec.schedule and spec.timeZone parse");
        let secret_env = env.iter().filter(|e| e.secret).map(|e| e.name.clone()).collect();
        let exposed_env = env
            .iter()
            .filter(|e| e.secret && e.expose)
            .map(|e| e.name.clone())
            .collect();
        let job = JobState {
            image: s.job.image.as_ref().map(|i| i.as_str().to_string()),
            image_from: s.job.image_from.as_ref().map(|f| f.service.as_str().to_string()),
            command: s.job.command.clone().unwrap_or_default(),
            args: s.job.args.clone().unwrap_or_default(),
            env: env.into_iter().map(|e| (e.name, e.value)).collect(),
            secret_env,
            exposed_env,
            mounts: s.job.mounts.clone(),
            networks: s
                .job
                .networks
                .iter()
                .map(|n| (n.name().to_string(), n.aliases().to_vec()))
                .collect(),
        };
        let mut state = ScheduleState::new(entry.name(), cron, job);
        state.policy = s.concurrency_policy;
        state.starting_deadline = s.starting_deadline.map(|d| d.get());
        state.suspend = s.suspend;
        state.timeout = s.timeout.get();
        state.retries = s.retries;
        state.history = s.history;
        state.spec_hash = spec_hash(&state);
        state
    }

    /// A schedule with the spec's defaults: `Forbid`, no starting deadline, not suspended, a 1 h
    /// timeout, no retries, history 10 succeeded / 5 failed. Whoever changes a field afterwards
    /// recomputes [`ScheduleState::spec_hash`] with [`spec_hash`].
    pub fn new(name: &str, cron: CronSchedule, job: JobState) -> ScheduleState {
        let mut state = ScheduleState {
            name: name.to_string(),
            cron,
            policy: ConcurrencyPolicy::default(),
            starting_deadline: None,
            suspend: false,
            timeout: Duration::from_secs(3600),
            retries: 0,
            history: History::default(),
            job,
            spec_hash: String::new(),
        };
        state.spec_hash = spec_hash(&state);
        state
    }
}

impl JobState {
    /// A job running `image` with its own entrypoint, no env and no mounts.
    pub fn image(image: &str) -> JobState {
        JobState {
            image: Some(image.to_string()),
            image_from: None,
            command: Vec::new(),
            args: Vec::new(),
            env: BTreeMap::new(),
            secret_env: BTreeSet::new(),
            exposed_env: BTreeSet::new(),
            mounts: Vec::new(),
            networks: Vec::new(),
        }
    }
}

/// Content hash of a schedule's spec (its name and `spec_hash` field aside): the first 16 hex
/// digits of SHA-256 over a JSON serialization with sorted keys. Env values enter only as their
/// own SHA-256, so the serialization never holds a secret, while a rotated secret still changes
/// the hash (as `steward-plan`'s `state_hash` does for services).
pub fn spec_hash(s: &ScheduleState) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        schedule: &'a str,
        time_zone: &'a str,
        policy: ConcurrencyPolicy,
        starting_deadline_ms: Option<u128>,
        suspend: bool,
        timeout_ms: u128,
        retries: u32,
        history: History,
        image: &'a Option<String>,
        image_from: &'a Option<String>,
        command: &'a [String],
        args: &'a [String],
        env: BTreeMap<&'a str, String>,
        secret_env: &'a BTreeSet<String>,
        mounts: &'a [Mount],
        // Left out when empty: the hashes of schedules that use neither stay what they were.
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        exposed_env: &'a BTreeSet<String>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        networks: &'a [(String, Vec<String>)],
    }
    let j = &s.job;
    let canonical = Canonical {
        schedule: s.cron.expr(),
        time_zone: s.cron.time_zone(),
        policy: s.policy,
        starting_deadline_ms: s.starting_deadline.map(|d| d.as_millis()),
        suspend: s.suspend,
        timeout_ms: s.timeout.as_millis(),
        retries: s.retries,
        history: s.history,
        image: &j.image,
        image_from: &j.image_from,
        command: &j.command,
        args: &j.args,
        env: j
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), hex::encode(Sha256::digest(v.as_bytes()))))
            .collect(),
        secret_env: &j.secret_env,
        mounts: &j.mounts,
        exposed_env: &j.exposed_env,
        networks: &j.networks,
    };
    let json = serde_json::to_vec(&canonical).expect("a schedule's spec serializes");
    hex::encode(&Sha256::digest(&json)[..8])
}
