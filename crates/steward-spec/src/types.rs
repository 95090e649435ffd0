//! The desired-state document types. Every field's default is stated in its doc comment, which
//! becomes the description in the generated JSON Schema.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::condition::Condition;
use crate::task::*;
use crate::values::{ByteSize, Cpus, Duration, ImageRef, Replicas, ResourceName};

pub const API_VERSION: &str = "steward.io/v1alpha1";

/// Header read first from every document to pick the concrete type.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Header {
    pub api_version: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
}

/// Object metadata, as in Kubernetes.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the object. For a `Service`, the Swarm service name: 1 to 63 characters, letters,
    /// digits, `-`, `_` and `.`, starting with a letter or digit.
    #[schemars(with = "ResourceName")]
    pub name: Spanned<ResourceName>,
    /// Labels. On a `Service` they become Swarm service labels. Keys under `steward.io/` are
    /// reserved for steward's own ownership labels. Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `kind: Service` — a Swarm replicated service.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Service")]
pub struct ServiceDocument {
    /// Always `steward.io/v1alpha1`.
    pub api_version: String,
    /// Always `Service`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ServiceSpec,
}

/// `kind: Stack` — settings for the whole desired state (at most one per desired state).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Stack")]
pub struct StackDocument {
    /// Always `steward.io/v1alpha1`.
    pub api_version: String,
    /// Always `Stack`.
    pub kind: String,
    /// `metadata.name` is the owner identity written to the `steward.io/stack` label of every
    /// service steward creates. Without a Stack document the stack is named `default`.
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: StackSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StackSpec {
    /// Remove services owned by this stack that are no longer in the desired state.
    /// Default: `false` — such services are left running and reported as `Orphaned`.
    #[serde(default)]
    pub prune: bool,
}

/// The desired state of one Swarm replicated service.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Image reference, e.g. `taxcollector:v2.1.0` or `registry.example/team/app@sha256:…`.
    pub image: ImageRef,
    /// Number of tasks. 0 to 1000. Default: 1.
    #[serde(default)]
    pub replicas: Replicas,
    /// Replaces the image's ENTRYPOINT. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's CMD. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Environment variables. Secrets are never written inline: use `valueFrom`.
    #[serde(default)]
    #[schemars(with = "Vec<EnvVar>")]
    pub env: Vec<Spanned<EnvVar>>,
    /// Published ports. Default: none.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// CPU and memory limits and reservations. Default: none.
    #[serde(default)]
    pub resources: Resources,
    /// How Swarm replaces tasks when the spec changes (Swarm's `UpdateConfig`).
    #[serde(default)]
    pub update: UpdatePolicy,
    /// How Swarm rolls back (Swarm's `RollbackConfig`).
    #[serde(default)]
    pub rollback: RollbackPolicy,
    /// Take ownership of an existing service of the same name that steward does not own.
    /// Default: `false` — such a service is reported as a conflict and left untouched.
    #[serde(default)]
    pub adopt: bool,
    /// Health gate checked after Swarm has replaced the tasks; failing it rolls the revision
    /// back. Default: none (Swarm's own monitor is the only check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Prometheus analysis run while the new version is verified (Argo Rollouts' semantics).
    /// Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// How long health and analysis watch the new version before the rollout is Complete.
    /// Default: `30s` when `health` or `analysis` is set.
    #[serde(default = "thirty_seconds")]
    pub verify_window: Duration,
    /// Longest time any rollout phase (pre-deploy, updating, verifying) may take before the
    /// revision is rolled back. Default: `600s` (Argo Rollouts' and Kubernetes' default).
    #[serde(default = "six_hundred_seconds")]
    pub progress_deadline: Duration,
    /// Jobs run to completion with the *new* image before any task is replaced (for example
    /// `python manage.py migrate`). A failing job rolls back before anything was replaced.
    #[serde(default)]
    pub pre_deploy: Vec<PreDeployJob>,
    /// Services of the same desired state that must finish rolling out before this one starts
    /// (e.g. celery after web). Default: none.
    #[serde(default)]
    #[schemars(with = "Vec<ResourceName>")]
    pub depends_on: Vec<Spanned<ResourceName>>,
    /// `replicated` (default) or `global`. A global service ignores `replicas`.
    #[serde(default)]
    pub mode: ServiceMode,
    /// Networks the tasks join: `Network` documents of this desired state, networks steward
    /// does not manage, or `host`. Default: none (Swarm attaches the ingress network only when
    /// ports are published in ingress mode).
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
    /// Volumes, bind mounts and tmpfs. Default: none.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Placement constraints and preferences. Default: any node.
    #[serde(default)]
    pub placement: Placement,
    /// Time between the stop signal and SIGKILL. Default: `10s` (Swarm's). Celery's warm
    /// shutdown needs minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    /// Signal that stops the container, e.g. `SIGTERM`, `SIGQUIT`. Default: the image's
    /// (`SIGTERM` unless its STOPSIGNAL says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// What Swarm does when a container exits. Default: restart always, 5 s apart (Swarm's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// The container's own healthcheck. Default: the image's HEALTHCHECK, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<ContainerHealthcheck>,
    /// Swarm configs mounted as files. Default: none.
    #[serde(default)]
    pub configs: Vec<FileRef>,
    /// Swarm secrets mounted as files (besides those made from `env[].valueFrom`). Default: none.
    #[serde(default)]
    pub secrets: Vec<FileRef>,
    /// User (name or uid, optionally `:group`) the container runs as. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Container hostname. Default: the container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Run an init process (tini) as PID 1 that reaps zombies and forwards signals.
    /// Default: the engine's (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Labels of the containers (service labels are `metadata.labels`). Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Logging driver and options. Default: the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Resource limits, e.g. `nofile: {soft: 20000, hard: 40000}` or `nproc: 65535`.
    /// Default: the engine's.
    #[serde(default)]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Kernel capabilities added, e.g. `NET_ADMIN` (Engine API 1.41). Default: none.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Kernel capabilities dropped, e.g. `ALL`. Default: none.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Databases that must be healthy before a rollout of this service starts: primary
    /// reachable and writable, every replica streaming within `maxReplicationLag`. A rollout
    /// already running is not aborted. Default: none.
    #[serde(default)]
    pub gates: Vec<DatabaseGate>,
    /// A `Database` of this desired state backed up in the rollout's PreDeploy phase, before
    /// the pre-deploy jobs; the rollout waits for it, and a failed backup stops the rollout
    /// before anything is touched. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ResourceName>")]
    pub backup_before: Option<Spanned<ResourceName>>,
}

/// A deploy gate on a `Database` of this desired state.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DatabaseGate {
    #[schemars(with = "ResourceName")]
    pub database: Spanned<ResourceName>,
    /// Replication lag over which the gate holds. Default: the Database's
    /// `thresholds.replicationLag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replication_lag: Option<Duration>,
}

/// An HTTP health check of the new version.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// URL to GET, through a published port, e.g. `http://127.0.0.1:8000/api/v1/health/`.
    pub url: String,
    /// Expected HTTP status. Default: 200.
    #[serde(default = "http_ok")]
    pub expect_status: u16,
    /// Time between probes. Default: `2s`.
    #[serde(default = "two_seconds")]
    pub interval: Duration,
    /// Per-probe timeout. Default: `1s`.
    #[serde(default = "one_second")]
    pub timeout: Duration,
    /// Consecutive successes needed to pass. Default: 1 (Kubernetes' default).
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Consecutive failures that fail the rollout. Default: 3 (Kubernetes' default).
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

/// Prometheus analysis, with Argo Rollouts' semantics and defaults.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Analysis {
    /// Prometheus base URL, e.g. `http://127.0.0.1:9090`.
    pub prometheus: String,
    /// Time between measurements. Default: `5s`.
    #[serde(default = "five_seconds")]
    pub interval: Duration,
    /// Measurements to take. Default: 3.
    #[serde(default = "three")]
    pub count: u32,
    /// Failed measurements tolerated; one more fails the analysis. Default: 0.
    #[serde(default)]
    pub failure_limit: u32,
    /// Inconclusive measurements (empty or NaN results) tolerated; one more makes the analysis
    /// Inconclusive, which pauses the rollout for a human decision. Default: 0.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// Consecutive query errors (e.g. Prometheus unreachable) tolerated; one more fails the
    /// analysis. Default: 4.
    #[serde(default = "four")]
    pub consecutive_error_limit: u32,
    /// Queries and their conditions; every one must pass.
    pub metrics: Vec<AnalysisMetric>,
}

/// One PromQL query. Conditions compare `result` with a number: `result < 0.05`,
/// `result >= 1`; `&&` and `||` combine comparisons.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisMetric {
    pub name: String,
    /// Instant query; must return a scalar or a single-sample vector.
    pub query: String,
    /// Measurement is Successful when true. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<Condition>,
    /// Measurement is Failed when true (checked first). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<Condition>,
}

/// A job run once per revision before the service's tasks are replaced.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreDeployJob {
    /// Job name, unique within the service.
    pub name: ResourceName,
    /// Replaces the image's ENTRYPOINT. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's CMD. Default: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Longest run before the job counts as failed. Default: `300s`.
    #[serde(default = "three_hundred_seconds")]
    pub timeout: Duration,
}

/// One environment variable: exactly one of `value` or `valueFrom`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name: letters, digits and `_`, not starting with a digit.
    pub name: String,
    /// A plain, non-secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read the value when steward reconciles. Values read this way are treated as
    /// secrets: they never appear in plans, logs, events or status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource>,
    /// With `valueFrom`: by default the value becomes a Swarm secret mounted at
    /// `/run/secrets/<name>` and the variable `<name>_FILE` holds that path (the convention
    /// Django settings and official images read). `env` puts the value itself into the
    /// environment instead, where `docker service inspect` shows it; steward warns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
}

/// Exactly one of `env` or `file`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvSource {
    /// Name of an environment variable of the steward process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file whose contents (trailing newline removed) are the value, relative to the
    /// controller's secrets directory (`--secrets-dir`, `STEWARD_SECRETS_DIR`). Without one,
    /// file references are refused; absolute paths, `..` and symlinks leading out of it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Default.
    #[default]
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Swarm's routing mesh. Default.
    #[default]
    Ingress,
    /// Bound on the node running the task.
    Host,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    /// Port inside the container (1-65535).
    pub target: u16,
    /// Port published on the node (1-65535). Default: none (Swarm assigns one from 30000-32767).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    /// `tcp` (default), `udp` or `sctp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// `ingress` (default) or `host`.
    #[serde(default)]
    pub mode: PublishMode,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Hard limits. Default: none.
    #[serde(default)]
    pub limits: ResourceAmounts,
    /// Reserved for scheduling. Default: none.
    #[serde(default)]
    pub reservations: ResourceAmounts,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// CPUs, e.g. `0.5` or `2`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    /// Memory, e.g. `512Mi`, `1Gi`, `256M` or a number of bytes. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

/// What Swarm does when an updated task fails within `monitor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Stop updating. Swarm's default.
    #[default]
    Pause,
    /// Keep going.
    Continue,
    /// Roll back to the previous spec.
    Rollback,
}

/// Whether a new task starts before or after the old one stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old task first. Swarm's default.
    #[default]
    StopFirst,
    /// Start the new task first (briefly runs both).
    StartFirst,
}

/// Swarm's `UpdateConfig`. Defaults are Swarm's own.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdatePolicy {
    /// Tasks updated at once; 0 means all at once. Default: 1.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Wait between batches, e.g. `30s`. Default: `0s`.
    #[serde(default)]
    pub delay: Duration,
    /// `pause` (default), `continue` or `rollback`.
    #[serde(default)]
    pub failure_action: FailureAction,
    /// How long each updated task is watched for failure. Default: `5s`.
    #[serde(default = "five_seconds")]
    pub monitor: Duration,
    /// Fraction of tasks (0 to 1) that may fail before `failureAction` applies. Default: 0.
    #[serde(default)]
    pub max_failure_ratio: f32,
    /// `stop-first` (default) or `start-first`.
    #[serde(default)]
    pub order: UpdateOrder,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: five_seconds(),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// What Swarm does when a rolled-back task fails (no `rollback` here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RollbackFailureAction {
    /// Stop rolling back. Swarm's default.
    #[default]
    Pause,
    /// Keep going.
    Continue,
}

/// Swarm's `RollbackConfig`. Defaults are Swarm's own.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Tasks rolled back at once; 0 means all at once. Default: 1.
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Wait between batches. Default: `0s`.
    #[serde(default)]
    pub delay: Duration,
    /// `pause` (default) or `continue`.
    #[serde(default)]
    pub failure_action: RollbackFailureAction,
    /// How long each rolled-back task is watched for failure. Default: `5s`.
    #[serde(default = "five_seconds")]
    pub monitor: Duration,
    /// Fraction of tasks (0 to 1) that may fail. Default: 0.
    #[serde(default)]
    pub max_failure_ratio: f32,
    /// `stop-first` (default) or `start-first`.
    #[serde(default)]
    pub order: UpdateOrder,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay: Duration::ZERO,
            failure_action: RollbackFailureAction::Pause,
            monitor: five_seconds(),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

fn one() -> u32 {
    1
}

fn three() -> u32 {
    3
}

fn four() -> u32 {
    4
}

fn http_ok() -> u16 {
    200
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn two_seconds() -> Duration {
    Duration::from_secs(2)
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

/// Argo Rollouts' and Kubernetes Deployments' default progress deadline.
fn six_hundred_seconds() -> Duration {
    Duration::from_secs(600)
}

fn three_hundred_seconds() -> Duration {
    Duration::from_secs(300)
}

/// Swarm's default monitor window is 5 s.
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
