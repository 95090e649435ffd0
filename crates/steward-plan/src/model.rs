//! What the planner compares: a normalized view of a service that both the desired state and
//! Swarm's observed spec are converted into, so equal means "nothing to do".

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use steward_spec::{FailureAction, PublishMode, RollbackFailureAction, ServiceEntry, UpdateOrder};

pub use crate::task::*;

/// Ownership label keys written on every service steward creates.
pub mod labels {
    /// Always `steward`.
    pub const MANAGED_BY: &str = "steward.io/managed-by";
    /// The stack (owner) name; listing filters on it.
    pub const STACK: &str = "steward.io/stack";
    /// Hash of the desired state last written; tells drift (hash equal, fields differ) from a
    /// changed desired state.
    pub const SPEC_HASH: &str = "steward.io/spec-hash";
    /// Comma-separated names of env variables whose values are secret (never displayed).
    pub const SECRET_ENV: &str = "steward.io/secret-env";
    /// On a secret or config: the service it was made for.
    pub const SERVICE: &str = "steward.io/service";
    pub const MANAGED_BY_VALUE: &str = "steward";
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortState {
    pub target: u32,
    pub published: Option<u32>,
    pub protocol: String,
    pub mode: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
}

/// Swarm's UpdateConfig / RollbackConfig in Swarm's own units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    pub parallelism: u64,
    pub delay_ns: i64,
    /// `pause`, `continue` or `rollback`.
    pub failure_action: String,
    pub monitor_ns: i64,
    /// Rounded to 4 decimals: Swarm stores a float32 and the YAML holds a decimal.
    pub max_failure_ratio: f64,
    /// `stop-first` or `start-first`.
    pub order: String,
}

/// Every field steward manages on a Swarm service, normalized. `Debug` prints env names only:
/// values may be secrets and must never reach a log.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub image: String,
    pub replicas: u64,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// User labels only (steward's own `steward.io/` labels are not part of the comparison).
    pub labels: BTreeMap<String, String>,
    /// Sorted.
    pub ports: Vec<PortState>,
    pub limits: Amounts,
    pub reservations: Amounts,
    pub update: PolicyState,
    pub rollback: PolicyState,
    /// Left out of the serialization when replicated, like every default below: the hash of a
    /// service that uses none of the newer fields does not change.
    #[serde(default, skip_serializing_if = "Mode::is_replicated")]
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "TaskState::is_default")]
    pub task: TaskState,
}

impl std::fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceState")
            .field("image", &self.image)
            .field("replicas", &self.replicas)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env (values redacted)", &self.env.keys().collect::<Vec<_>>())
            .field("labels", &self.labels)
            .field("ports", &self.ports)
            .field("limits", &self.limits)
            .field("reservations", &self.reservations)
            .field("update", &self.update)
            .field("rollback", &self.rollback)
            .field("mode", &self.mode)
            .field("task", &self.task)
            .finish()
    }
}

fn nonzero_or(v: i64, default: i64) -> i64 {
    if v == 0 {
        default
    } else {
        v
    }
}

pub fn round_ratio(r: f64) -> f64 {
    (r * 10_000.0).round() / 10_000.0
}

/// A service as steward wants it, with secrets resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredService {
    pub name: String,
    pub state: ServiceState,
    /// Names of env variables whose values are secret.
    pub secret_env: BTreeSet<String>,
    pub adopt: bool,
    /// Hash of `state`; written as a label.
    pub spec_hash: String,
    /// How a change to this service is rolled out (not part of the hash: changing a health
    /// check alone does not rewrite the Swarm service).
    pub rollout: RolloutPolicy,
    /// Content of the steward-owned secrets and configs `state.task` refers to, by their
    /// versioned names: created before the service is written. Never displayed.
    pub objects: BTreeMap<String, ObjectData>,
}

/// Rollout settings of one service, from its manifest.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RolloutPolicy {
    pub health: Option<steward_spec::HealthCheck>,
    pub analysis: Option<steward_spec::Analysis>,
    pub verify_window_ms: i64,
    pub progress_deadline_ms: i64,
    pub pre_deploy: Vec<steward_spec::PreDeployJob>,
    pub depends_on: Vec<String>,
    /// `(database, max lag in ms)`: the lag is the gate's or, when it has none, the Database's
    /// threshold (`None` here).
    pub gates: Vec<(String, Option<i64>)>,
    /// Database backed up in the PreDeploy phase.
    pub backup_before: Option<String>,
}

impl RolloutPolicy {
    pub fn from_spec(spec: &steward_spec::ServiceSpec) -> Self {
        Self {
            health: spec.health.clone(),
            analysis: spec.analysis.clone(),
            verify_window_ms: spec.verify_window.get().as_millis() as i64,
            progress_deadline_ms: spec.progress_deadline.get().as_millis() as i64,
            pre_deploy: spec.pre_deploy.clone(),
            depends_on: spec.depends_on.iter().map(|d| d.value.to_string()).collect(),
            gates: spec
                .gates
                .iter()
                .map(|g| {
                    (
                        g.database.value.to_string(),
                        g.max_replication_lag.map(|d| d.get().as_millis() as i64),
                    )
                })
                .collect(),
            backup_before: spec.backup_before.as_ref().map(|b| b.value.to_string()),
        }
    }

    /// Defaults for services built without a manifest (tests, history restores).
    pub fn none() -> Self {
        Self {
            progress_deadline_ms: 600_000,
            ..Self::default()
        }
    }
}

impl DesiredService {
    /// Builds the desired service from a validated entry and its resolved environment.
    pub fn from_entry(entry: &ServiceEntry, resolved: steward_spec::Resolved, volumes: &Volumes) -> Self {
        let spec = &entry.spec;
        let parts = task_from_spec(
            entry.name(),
            spec,
            resolved.env,
            &resolved.secrets,
            &resolved.configs,
            volumes,
        );
        let mut ports: Vec<PortState> = spec
            .ports
            .iter()
            .map(|p| PortState {
                target: u32::from(p.target),
                published: p.published.map(u32::from),
                protocol: format!("{:?}", p.protocol).to_lowercase(),
                mode: match p.mode {
                    PublishMode::Ingress => "ingress".into(),
                    PublishMode::Host => "host".into(),
                },
            })
            .collect();
        ports.sort();
        let amounts = |a: &steward_spec::ResourceAmounts| Amounts {
            nano_cpus: a.cpus.map(|c| c.nano_cpus()),
            memory_bytes: a.memory.map(|m| i64::try_from(m.bytes()).unwrap_or(i64::MAX)),
        };
        let order = |o: UpdateOrder| match o {
            UpdateOrder::StopFirst => "stop-first".to_string(),
            UpdateOrder::StartFirst => "start-first".to_string(),
        };
        let u = &spec.update;
        let r = &spec.rollback;
        let global = spec.mode == steward_spec::ServiceMode::Global;
        let state = ServiceState {
            image: spec.image.to_string(),
            replicas: if global { 0 } else { u64::from(spec.replicas.get()) },
            command: spec.command.clone().unwrap_or_default(),
            args: spec.args.clone().unwrap_or_default(),
            env: parts.env,
            labels: entry.metadata.labels.clone(),
            ports,
            limits: amounts(&spec.resources.limits),
            reservations: amounts(&spec.resources.reservations),
            update: PolicyState {
                parallelism: u64::from(u.parallelism),
                delay_ns: u.delay.as_nanos_i64(),
                failure_action: match u.failure_action {
                    FailureAction::Pause => "pause",
                    FailureAction::Continue => "continue",
                    FailureAction::Rollback => "rollback",
                }
                .into(),
                // 0 means Swarm's 5 s default, as the observer reads it.
                monitor_ns: nonzero_or(u.monitor.as_nanos_i64(), 5_000_000_000),
                max_failure_ratio: round_ratio(f64::from(u.max_failure_ratio)),
                order: order(u.order),
            },
            rollback: PolicyState {
                parallelism: u64::from(r.parallelism),
                delay_ns: r.delay.as_nanos_i64(),
                failure_action: match r.failure_action {
                    RollbackFailureAction::Pause => "pause",
                    RollbackFailureAction::Continue => "continue",
                }
                .into(),
                monitor_ns: nonzero_or(r.monitor.as_nanos_i64(), 5_000_000_000),
                max_failure_ratio: round_ratio(f64::from(r.max_failure_ratio)),
                order: order(r.order),
            },
            mode: if global { Mode::Global } else { Mode::Replicated },
            task: parts.task,
        };
        let mut d = Self::new(entry.name().to_string(), state, parts.secret_env, spec.adopt);
        d.rollout = RolloutPolicy::from_spec(spec);
        d.objects = parts.objects;
        d
    }

    pub fn new(name: String, state: ServiceState, secret_env: BTreeSet<String>, adopt: bool) -> Self {
        let spec_hash = state_hash(&state, &secret_env);
        Self {
            name,
            state,
            secret_env,
            adopt,
            spec_hash,
            rollout: RolloutPolicy::none(),
            objects: BTreeMap::new(),
        }
    }

    /// The full label set written to Swarm: user labels plus ownership labels.
    pub fn swarm_labels(&self, stack: &str) -> BTreeMap<String, String> {
        let mut l = self.state.labels.clone();
        l.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        l.insert(labels::STACK.into(), stack.into());
        l.insert(labels::SPEC_HASH.into(), self.spec_hash.clone());
        if !self.secret_env.is_empty() {
            let names: Vec<&str> = self.secret_env.iter().map(String::as_str).collect();
            l.insert(labels::SECRET_ENV.into(), names.join(","));
        }
        l
    }
}

/// Hash of the fields whose change makes Swarm replace tasks (image, command, args, env, ports,
/// resources). Service labels, replicas and update/rollback policies change without replacing
/// any task, so there is nothing new to verify. Secret values are included: the hash never
/// reveals them, and a rotated secret does replace tasks.
pub fn task_hash(state: &ServiceState) -> String {
    let base = (
        &state.image,
        &state.command,
        &state.args,
        &state.env,
        &state.ports,
        &state.limits,
        &state.reservations,
    );
    // The task settings join the hash only when set, so hashes recorded before they existed
    // still match.
    let json = if state.task.is_default() {
        serde_json::to_vec(&base)
    } else {
        serde_json::to_vec(&(base, &state.task))
    }
    .expect("state serializes");
    hex::encode(&Sha256::digest(&json)[..8])
}

/// Short content hash of what is written: the state and which env values are secret (the
/// `steward.io/secret-env` label). First 16 hex digits of SHA-256 over their JSON.
pub fn state_hash(state: &ServiceState, secret_env: &BTreeSet<String>) -> String {
    let json = serde_json::to_vec(&(state, secret_env)).expect("state serializes");
    hex::encode(&Sha256::digest(&json)[..8])
}

/// The whole desired state the planner works from.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Owner identity (`steward.io/stack` label value).
    pub stack: String,
    pub prune: bool,
    /// Monotonic generation of the desired state (bumped when its content changes).
    pub generation: u64,
    /// Sorted by name.
    pub services: Vec<DesiredService>,
    /// Services the planner must leave alone this pass, with the reason (rollout gating).
    pub gates: BTreeMap<String, crate::plan::Hold>,
    /// Owned services to remove even with prune off (creations of a rolled-back revision).
    pub remove: BTreeSet<String>,
    /// Secrets and configs that revisions still in history refer to: kept so a rollback can
    /// return to them.
    pub retained_objects: BTreeSet<String>,
}

/// Swarm's `UpdateStatus.State`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub message: String,
    /// When Swarm started this update (or rollback), unix milliseconds.
    pub started_at_ms: Option<i64>,
}

/// Who owns an observed service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Owner {
    /// Owned by the stack being reconciled.
    Us,
    /// Owned by another steward stack.
    OtherStack(String),
    /// Not steward's.
    Nobody,
}

/// A service as read from Swarm.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedService {
    pub id: String,
    pub name: String,
    /// Swarm's `Version.Index`; every write carries it.
    pub version: u64,
    pub owner: Owner,
    pub spec_hash: Option<String>,
    pub secret_env: BTreeSet<String>,
    /// `false` for global services and jobs, which steward cannot update in place.
    pub replicated: bool,
    pub state: ServiceState,
    pub running_tasks: Option<u64>,
    pub desired_tasks: Option<u64>,
    pub update_status: Option<UpdateStatus>,
}

impl ObservedService {
    /// Tasks Swarm should run: the replica count, or for a global service one per eligible node
    /// (Swarm's own count, `ServiceStatus.DesiredTasks`).
    pub fn desired_task_count(&self) -> u64 {
        match self.state.mode {
            Mode::Replicated => self.state.replicas,
            Mode::Global => self.desired_tasks.unwrap_or(0),
        }
    }
}

/// What the observers saw. A backend that could not be read is `Unknown`, never empty.
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    Unknown {
        reason: String,
    },
    /// Services owned by the stack, plus any service whose name the desired state uses.
    Known {
        services: Vec<ObservedService>,
        /// Secrets and configs owned by the stack (steward's labels).
        objects: Vec<ObservedObject>,
    },
}

/// A Swarm secret or config steward owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedObject {
    pub kind: ObjectKind,
    pub id: String,
    pub name: String,
    /// The service it was made for (`steward.io/service` label).
    pub service: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_env_values() {
        let state = ServiceState {
            image: "app:v1".into(),
            replicas: 1,
            command: vec![],
            args: vec![],
            env: [("DB_PASSWORD".to_string(), "hunter2".to_string())].into(),
            labels: BTreeMap::new(),
            ports: vec![],
            limits: Amounts::default(),
            reservations: Amounts::default(),
            update: PolicyState {
                parallelism: 1,
                delay_ns: 0,
                failure_action: "pause".into(),
                monitor_ns: 0,
                max_failure_ratio: 0.0,
                order: "stop-first".into(),
            },
            rollback: PolicyState {
                parallelism: 1,
                delay_ns: 0,
                failure_action: "pause".into(),
                monitor_ns: 0,
                max_failure_ratio: 0.0,
                order: "stop-first".into(),
            },
            mode: Mode::Replicated,
            task: TaskState::default(),
        };
        let d = DesiredService::new("web".into(), state, ["DB_PASSWORD".to_string()].into(), false);
        let text = format!("{d:?} {:?}", crate::Action::Create { service: d.clone() });
        assert!(text.contains("DB_PASSWORD") && !text.contains("hunter2"), "{text}");
    }
}
