//! The task-level fields of a `Service` (what a Compose file's service keys and `deploy` say):
//! networks, mounts, mode, placement, stop and restart behaviour, the container's own
//! healthcheck, secrets and configs, user, ulimits and capabilities. Defaults are Swarm's own and
//! are stated in each doc comment (they become the schema's descriptions).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::EnvSource;
use crate::values::{ByteSize, Duration};

/// `replicated` (a fixed number of tasks) or `global` (one task on every node that matches the
/// placement constraints, e.g. one load balancer per edge node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// Default.
    #[default]
    Replicated,
    Global,
}

/// A network the service's tasks join: the name of a `Network` document (or an existing network
/// steward does not manage), or Swarm's predefined `host`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NetworkAttachment {
    /// Just the network's name.
    Name(String),
    Detailed(NetworkAttachmentSpec),
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkAttachmentSpec {
    pub name: String,
    /// Extra DNS names of the service on this network. Default: none.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl NetworkAttachment {
    pub fn name(&self) -> &str {
        match self {
            Self::Name(n) => n,
            Self::Detailed(d) => &d.name,
        }
    }
    pub fn aliases(&self) -> &[String] {
        match self {
            Self::Name(_) => &[],
            Self::Detailed(d) => &d.aliases,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A named volume (declare it as a `Volume` document to give it a driver and options).
    Volume,
    /// A path of the node, absolute.
    Bind,
    /// Memory-backed.
    Tmpfs,
}

/// A filesystem mounted into the service's containers.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Volume name (`volume`) or absolute node path (`bind`); not set for `tmpfs`. An anonymous
    /// volume is refused: its data would be lost on every task replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path inside the container.
    pub target: String,
    /// Default: `false`.
    #[serde(default)]
    pub read_only: bool,
    /// `volume` only: do not copy the image's files at `target` into an empty volume.
    /// Default: `false` (Docker copies them).
    #[serde(default)]
    pub no_copy: bool,
    /// `tmpfs` only: size limit. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
}

/// Where Swarm may run the tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    /// Constraints such as `node.role == manager` or `node.labels.edge == true`. Default: none.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Spread preferences, in order, e.g. `spread: node.labels.zone`. Default: none.
    #[serde(default)]
    pub preferences: Vec<PlacementPreference>,
    /// At most this many tasks on one node (replicated mode). Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlacementPreference {
    /// A node label descriptor, e.g. `node.labels.zone`.
    pub spread: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never restart.
    None,
    /// Restart when the container exits non-zero.
    OnFailure,
    /// Always restart. Swarm's default.
    #[default]
    Any,
}

/// What Swarm does when a task's container exits (Swarm's `RestartPolicy`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any` (Swarm's default).
    #[serde(default)]
    pub condition: RestartCondition,
    /// Wait between restarts. Default: `5s` (Swarm's).
    #[serde(default = "five_seconds")]
    pub delay: Duration,
    /// Restarts tried before giving up; 0 means no limit. Default: 0.
    #[serde(default)]
    pub max_attempts: u64,
    /// Window over which `maxAttempts` is counted; `0s` means unbounded. Default: `0s`.
    #[serde(default)]
    pub window: Duration,
}

/// The container's own healthcheck, run by the engine inside the container; Swarm replaces a task
/// that turns unhealthy and counts a task as running only once it is healthy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerHealthcheck {
    /// `["CMD", "curl", "-f", "http://localhost/"]`, `["CMD-SHELL", "pg_isready"]`, a string
    /// (run with the shell, as `CMD-SHELL`), or `["NONE"]` to disable the image's check.
    pub test: HealthcheckTest,
    /// Time between checks. Default: `30s` (Docker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Time a check may take. Default: `30s` (Docker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Consecutive failures before unhealthy. Default: 3 (Docker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// Start-up time during which failures do not count. Default: `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum HealthcheckTest {
    Shell(String),
    Exec(Vec<String>),
}

impl HealthcheckTest {
    /// Docker's form: a list starting with `CMD`, `CMD-SHELL` or `NONE`.
    pub fn to_docker(&self) -> Vec<String> {
        match self {
            Self::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            Self::Exec(v) => v.clone(),
        }
    }
}

/// A Swarm secret or config mounted as a file. Exactly one of `valueFrom`, `value` (configs
/// only) or `external`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileRef {
    /// Name of the entry, unique within the service; the default file name.
    pub name: String,
    /// Where steward reads the content. steward stores it as a Swarm object it owns, with a
    /// versioned name `<service>-<name>-<hash8>`: a new content is a new version and a rolling
    /// update; rolling back returns to the previous version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource>,
    /// Inline content (configs only: a secret is never written inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Name of an existing Swarm secret or config that steward does not manage (as Compose's
    /// `external: true`); steward never changes or removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
    /// File path in the container. Default: `/run/secrets/<name>` for a secret, `/<name>` for
    /// a config (Swarm's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Owner of the file. Default: `"0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Group of the file. Default: `"0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// Permission bits, e.g. `0o440` or `288`. Default: `0o444`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// The logging driver of the containers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Logging {
    /// e.g. `json-file`, `local`, `journald`. Default: the engine's (`json-file`).
    pub driver: String,
    /// Driver options, e.g. `max-size: 10m`. Default: none.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A resource limit: one number (soft = hard) or both.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Ulimit {
    Single(i64),
    Pair { soft: i64, hard: i64 },
}

impl Ulimit {
    pub fn soft_hard(&self) -> (i64, i64) {
        match self {
            Self::Single(n) => (*n, *n),
            Self::Pair { soft, hard } => (*soft, *hard),
        }
    }
}

/// When an env variable's value (from `valueFrom`) is also put into the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Expose {
    /// Put the value itself into the container's environment (readable by anyone with access
    /// to the Engine API through `docker service inspect`). `validate` and `plan` warn.
    Env,
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
