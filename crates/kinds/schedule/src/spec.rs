//! `kind: Schedule` — the document, its defaults and its validation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use steward_spec::{Duration, EnvVar, ImageRef, Metadata, ResourceName};

/// `kind: Schedule` — a job run as a Swarm replicated job at each instant of a cron schedule.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Schedule")]
pub struct ScheduleDocument {
    /// Always `steward.io/v1alpha1`.
    pub api_version: String,
    /// Always `Schedule`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ScheduleSpec,
}

/// When and how a job runs.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Cron expression: 5 fields (`minute hour day-of-month month day-of-week`), or 6 with a
    /// leading seconds field; `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly` also work.
    /// Evaluated in `timeZone`.
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. `Indian/Antananarivo`. Default: `UTC`.
    /// A local time skipped by a daylight-saving change runs at the first valid instant after
    /// it; a local time that occurs twice runs once, at its first occurrence.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// `Forbid` (default): an instant due while a run is active is Skipped. `Allow`: runs may
    /// overlap. `Replace`: the active run is stopped and the new one starts.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run that cannot start within this time after its instant is Missed. After downtime at
    /// most one catch-up run starts (the latest missed instant, when within this deadline); the
    /// other missed instants are recorded as Missed. Default: none (the latest missed instant
    /// always runs once, as Kubernetes CronJob does without `startingDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Duration>,
    /// Stop scheduling new runs (a run already active finishes). Instants passed while
    /// suspended are not caught up when resumed. Default: `false`.
    #[serde(default)]
    pub suspend: bool,
    /// A run still going after this is stopped and recorded TimedOut. Default: `1h`.
    #[serde(default = "one_hour")]
    pub timeout: Duration,
    /// Attempts after a failed one, with a backoff of 10 s doubling each attempt (capped at 5 min),
    /// all within `timeout` of the first start. Default: 0.
    #[serde(default)]
    pub retries: u32,
    /// Finished runs kept in the store. Default: 10 succeeded, 5 failed (Missed, Skipped and
    /// TimedOut count as failed).
    #[serde(default)]
    pub history: History,
    /// The job each run executes.
    pub job: JobTemplate,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    Allow,
    /// Default.
    #[default]
    Forbid,
    Replace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct History {
    /// Succeeded runs kept. Default: 10.
    #[serde(default = "ten")]
    pub succeeded: u32,
    /// Runs that did not succeed (Failed, TimedOut, Missed, Skipped, Replaced) kept. Default: 5.
    #[serde(default = "five")]
    pub failed: u32,
}

impl Default for History {
    fn default() -> Self {
        Self {
            succeeded: 10,
            failed: 5,
        }
    }
}

/// A Swarm job: the container a run starts.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobTemplate {
    /// Image to run. Exactly one of `image` or `imageFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Run the image a Service of this desired state runs now (as Swarm reports it), so a
    /// maintenance job always matches the deployed version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_from: Option<ImageFrom>,
    /// Replaces the image's ENTRYPOINT. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's CMD. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment variables, as for services: secrets by `valueFrom`, never inline.
    #[serde(default)]
    #[schemars(with = "Vec<EnvVar>")]
    pub env: Vec<Spanned<EnvVar>>,
    /// Volumes and bind mounts the job needs. Default: none.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Networks the job joins (to reach the database, say), as for services. Default: none.
    #[serde(default)]
    pub networks: Vec<steward_spec::NetworkAttachment>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageFrom {
    /// Name of a Service in this desired state.
    pub service: ResourceName,
    /// Where `service` is written, for the error of a reference checked across documents
    /// (`Spanned` is not used for `service` itself so the field keeps its plain type). `None`
    /// when built in code.
    #[serde(skip)]
    #[schemars(skip)]
    pub service_at: Option<Location>,
}

impl ImageFrom {
    pub fn new(service: ResourceName) -> ImageFrom {
        ImageFrom {
            service,
            service_at: None,
        }
    }
}

/// Equal when they name the same service, wherever it is written.
impl PartialEq for ImageFrom {
    fn eq(&self, other: &Self) -> bool {
        self.service == other.service
    }
}

impl Eq for ImageFrom {}

impl<'de> Deserialize<'de> for ImageFrom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            service: Spanned<ResourceName>,
        }
        let w = Written::deserialize(d)?;
        Ok(ImageFrom {
            service: w.service.value,
            service_at: Some(w.service.referenced),
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A named Docker volume (created by the engine when missing). Default.
    #[default]
    Volume,
    /// A host path (absolute).
    Bind,
    /// A memory-backed directory.
    Tmpfs,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// `volume` (default), `bind` or `tmpfs`.
    #[serde(default, rename = "type")]
    pub type_: MountType,
    /// Volume name, or absolute host path for `bind`; none for `tmpfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path inside the container.
    pub target: String,
    /// Mount read-only. Default: `false`.
    #[serde(default)]
    pub read_only: bool,
}

fn utc() -> String {
    "UTC".to_string()
}

fn one_hour() -> Duration {
    Duration::from_secs(3600)
}

/// Kubernetes CronJob keeps 3 succeeded and 1 failed; the ops calendar wants a longer view.
fn ten() -> u32 {
    10
}

fn five() -> u32 {
    5
}

/// A validated Schedule document and where it came from.
#[derive(Clone, Debug)]
pub struct ScheduleEntry {
    pub metadata: Metadata,
    pub spec: ScheduleSpec,
    pub source: steward_spec::Source,
}

impl ScheduleEntry {
    pub fn name(&self) -> &str {
        self.metadata.name.value.as_str()
    }
}
