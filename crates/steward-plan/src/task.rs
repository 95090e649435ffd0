//! The task-level part of a service as the planner compares it: networks, mounts, placement,
//! stop/restart behaviour, the container healthcheck, secrets and configs, user, ulimits and
//! capabilities, normalized the same way from a manifest and from Swarm's spec (sorted where
//! Swarm's order carries no meaning, Swarm's zero values as "not set").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use steward_spec::{
    ContainerHealthcheck, Mount, MountType, NetworkAttachment, ResolvedEnv, ResolvedFile, RestartCondition, ServiceSpec,
};

/// `replicated` or `global`. Swarm cannot change a service's mode in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Replicated,
    Global,
}

impl Mode {
    pub fn is_replicated(&self) -> bool {
        *self == Mode::Replicated
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replicated => "replicated",
            Mode::Global => "global",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkState {
    /// The network's name (Swarm reports ids; the observer maps them back).
    pub name: String,
    /// Sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DriverState {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MountState {
    /// Sort key: mounts are compared by target.
    pub target: String,
    /// `volume`, `bind` or `tmpfs`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
    /// Volume driver and options (from a `Volume` document), written with each task so Swarm
    /// creates the volume on the node that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DriverState>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartState {
    /// `none`, `on-failure` or `any`.
    pub condition: String,
    pub delay_ns: i64,
    pub max_attempts: u64,
    pub window_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ns: Option<i64>,
}

/// A secret or config mounted as a file: the Swarm object's name and the file it becomes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileState {
    /// Sort key.
    pub target: String,
    /// The Swarm secret's or config's name (versioned when steward owns it).
    pub name: String,
    pub uid: String,
    pub gid: String,
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UlimitState {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Every task-level field steward manages. Empty and unset fields are left out of the
/// serialization, so the hash of a service that uses none of them is what it was before they
/// existed (no rollout on upgrade).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskState {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkState>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountState>,
    /// Sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Spread descriptors, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas_per_node: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthState>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileState>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub container_labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<DriverState>,
    /// Sorted by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<UlimitState>,
    /// `CAP_`-prefixed, upper case, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
}

impl TaskState {
    pub fn is_default(&self) -> bool {
        *self == TaskState::default()
    }

    /// What a one-off job of the service takes from it: networks, mounts, secrets, configs,
    /// user, directory, placement constraints, limits. Not the healthcheck, restart policy or
    /// spreading, which concern long-running tasks.
    pub fn for_job(&self) -> TaskState {
        TaskState {
            healthcheck: None,
            restart_policy: None,
            preferences: Vec::new(),
            max_replicas_per_node: None,
            hostname: None,
            ..self.clone()
        }
    }

    /// Names of every Swarm secret and config the task refers to.
    pub fn object_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().chain(&self.configs).map(|f| f.name.as_str())
    }
}

/// Docker's spelling: `CAP_NET_ADMIN`, or `ALL`.
pub fn normalize_capability(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Whether a Swarm object is a secret or a config (they share everything else here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Secret,
    Config,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        }
    }
}

/// Content of a Swarm object steward must create. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectData {
    pub kind: ObjectKind,
    /// The service it was made for (a label on the object).
    pub service: String,
    pub data: String,
}

impl std::fmt::Debug for ObjectData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectData")
            .field("kind", &self.kind)
            .field("service", &self.service)
            .field("data", &"<redacted>")
            .finish()
    }
}

/// Swarm's limit on secret and config names.
const MAX_OBJECT_NAME: usize = 64;

/// `<owner>-<key>-<hash8>`: the versioned name of a steward-owned secret or config. The hash is
/// of the content with the owner and key, so a new content is a new name. The prefix is cut to
/// fit Swarm's 64 characters; the hash keeps names distinct. (The 32-bit hash of a guessable
/// value can be confirmed by trying candidates: use secrets with entropy, as always.)
pub fn versioned_name(kind: ObjectKind, owner: &str, key: &str, content: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind.as_str(), owner, key, content] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hash = hex::encode(&h.finalize()[..4]);
    let mut prefix = format!("{owner}-{key}");
    prefix.truncate(MAX_OBJECT_NAME - 9);
    let prefix = prefix.trim_end_matches(['-', '_', '.']);
    format!("{prefix}-{hash}")
}

/// Where an env variable's secret is mounted in the container.
pub const SECRETS_PATH: &str = "/run/secrets";

/// An env variable's `valueFrom` value as a file, for services and schedules' jobs alike: the
/// versioned Swarm secret `<owner>-<VAR>-<hash8>` (added to `objects`), mounted at
/// `/run/secrets/<VAR>` (added to `files`), and `<VAR>_FILE` pointing at it (added to `env`).
pub fn mount_env_secret(
    owner: &str,
    var: &str,
    value: String,
    env: &mut BTreeMap<String, String>,
    files: &mut Vec<FileState>,
    objects: &mut BTreeMap<String, ObjectData>,
) {
    let name = versioned_name(ObjectKind::Secret, owner, var, &value);
    env.insert(format!("{var}_FILE"), format!("{SECRETS_PATH}/{var}"));
    files.push(FileState {
        target: var.to_string(),
        name: name.clone(),
        uid: "0".into(),
        gid: "0".into(),
        mode: 0o444,
    });
    objects.insert(
        name,
        ObjectData {
            kind: ObjectKind::Secret,
            service: owner.into(),
            data: value,
        },
    );
}

/// What `TaskState::from_spec` made besides the state: the objects to create and the
/// environment left once secrets moved to files.
pub struct TaskParts {
    pub task: TaskState,
    pub env: BTreeMap<String, String>,
    /// Names of env variables whose (exposed) values are secret.
    pub secret_env: std::collections::BTreeSet<String>,
    pub objects: BTreeMap<String, ObjectData>,
}

/// Named volumes' driver settings, from `Volume` documents.
pub type Volumes = BTreeMap<String, (DriverState, BTreeMap<String, String>)>;

/// Builds the task settings of `service` from its spec and what was resolved.
pub fn task_from_spec(
    service: &str,
    spec: &ServiceSpec,
    env: Vec<ResolvedEnv>,
    secrets: &[ResolvedFile],
    configs: &[ResolvedFile],
    volumes: &Volumes,
) -> TaskParts {
    let mut objects = BTreeMap::new();
    let mut out_env = BTreeMap::new();
    let mut secret_env = std::collections::BTreeSet::new();
    let mut secret_files = Vec::new();
    for e in env {
        if e.secret && !e.expose {
            mount_env_secret(service, &e.name, e.value, &mut out_env, &mut secret_files, &mut objects);
        } else {
            if e.secret {
                secret_env.insert(e.name.clone());
            }
            out_env.insert(e.name, e.value);
        }
    }
    let mut files = |refs: &[ResolvedFile], kind: ObjectKind, out: &mut Vec<FileState>| {
        for r in refs {
            let name = match (&r.external, &r.content) {
                (Some(x), _) => x.clone(),
                (None, Some(content)) => {
                    let n = versioned_name(kind, service, &r.name, content);
                    objects.insert(
                        n.clone(),
                        ObjectData {
                            kind,
                            service: service.into(),
                            data: content.clone(),
                        },
                    );
                    n
                }
                (None, None) => continue,
            };
            let default_target = match kind {
                ObjectKind::Secret => r.name.clone(),
                ObjectKind::Config => format!("/{}", r.name),
            };
            // Swarm keeps a secret's target relative to /run/secrets; an absolute one under it
            // is the same file.
            let target = r.target.clone().unwrap_or(default_target);
            let target = match (kind, target.strip_prefix(&format!("{SECRETS_PATH}/"))) {
                (ObjectKind::Secret, Some(rel)) => rel.to_string(),
                (ObjectKind::Config, _) if !target.starts_with('/') => format!("/{target}"),
                _ => target,
            };
            out.push(FileState {
                target,
                name,
                uid: r.uid.clone().unwrap_or_else(|| "0".into()),
                gid: r.gid.clone().unwrap_or_else(|| "0".into()),
                mode: r.mode.unwrap_or(0o444),
            });
        }
    };
    files(secrets, ObjectKind::Secret, &mut secret_files);
    let mut config_files = Vec::new();
    files(configs, ObjectKind::Config, &mut config_files);
    secret_files.sort();
    config_files.sort();

    let mut networks: Vec<NetworkState> = spec.networks.iter().map(network_state).collect();
    networks.sort();
    let mut mounts: Vec<MountState> = spec.mounts.iter().map(|m| mount_state(m, volumes)).collect();
    mounts.sort();
    let mut constraints = spec
        .placement
        .constraints
        .iter()
        .map(|c| normalize_constraint(c))
        .collect::<Vec<_>>();
    constraints.sort();
    let mut ulimits: Vec<UlimitState> = spec
        .ulimits
        .iter()
        .map(|(name, u)| {
            let (soft, hard) = u.soft_hard();
            UlimitState {
                name: name.clone(),
                soft,
                hard,
            }
        })
        .collect();
    ulimits.sort();
    let caps = |v: &[String]| {
        let mut c: Vec<String> = v.iter().map(|c| normalize_capability(c)).collect();
        c.sort();
        c.dedup();
        c
    };
    let task = TaskState {
        networks,
        mounts,
        constraints,
        preferences: spec.placement.preferences.iter().map(|p| p.spread.clone()).collect(),
        max_replicas_per_node: spec.placement.max_replicas_per_node.filter(|n| *n > 0),
        stop_grace_period_ns: spec.stop_grace_period.map(|d| d.as_nanos_i64()),
        stop_signal: spec.stop_signal.clone(),
        restart_policy: spec.restart_policy.as_ref().map(|r| RestartState {
            condition: match r.condition {
                RestartCondition::None => "none",
                RestartCondition::OnFailure => "on-failure",
                RestartCondition::Any => "any",
            }
            .into(),
            delay_ns: r.delay.as_nanos_i64(),
            max_attempts: r.max_attempts,
            window_ns: r.window.as_nanos_i64(),
        }),
        healthcheck: spec.healthcheck.as_ref().map(health_state),
        secrets: secret_files,
        configs: config_files,
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        hostname: spec.hostname.clone(),
        // `init: false` is the engine's default: the same as unset, as Swarm reads back.
        init: spec.init.filter(|i| *i),
        container_labels: spec.labels.clone(),
        logging: spec.logging.as_ref().map(|l| DriverState {
            name: l.driver.clone(),
            options: l.options.clone(),
        }),
        ulimits,
        cap_add: caps(&spec.cap_add),
        cap_drop: caps(&spec.cap_drop),
    };
    TaskParts {
        task,
        env: out_env,
        secret_env,
        objects,
    }
}

/// Swarm keeps constraints as written; `a==b` and `a == b` are the same constraint.
pub fn normalize_constraint(c: &str) -> String {
    for op in ["==", "!="] {
        if let Some((l, r)) = c.split_once(op) {
            return format!("{} {op} {}", l.trim(), r.trim());
        }
    }
    c.trim().to_string()
}

fn network_state(n: &NetworkAttachment) -> NetworkState {
    let mut aliases = n.aliases().to_vec();
    aliases.sort();
    aliases.dedup();
    NetworkState {
        name: n.name().to_string(),
        aliases,
    }
}

fn mount_state(m: &Mount, volumes: &Volumes) -> MountState {
    let (driver, volume_labels) = match (m.kind, &m.source) {
        (MountType::Volume, Some(s)) => volumes
            .get(s)
            .map(|(d, l)| {
                // `local` without options is Docker's default volume: written as no driver.
                let default = (d.name.is_empty() || d.name == "local") && d.options.is_empty();
                ((!default).then(|| d.clone()), l.clone())
            })
            .unwrap_or_default(),
        _ => (None, BTreeMap::new()),
    };
    MountState {
        target: m.target.clone(),
        kind: match m.kind {
            MountType::Volume => "volume",
            MountType::Bind => "bind",
            MountType::Tmpfs => "tmpfs",
        }
        .into(),
        source: m.source.clone(),
        read_only: m.read_only,
        no_copy: m.no_copy,
        driver,
        volume_labels,
        tmpfs_size: m.size.map(|s| i64::try_from(s.bytes()).unwrap_or(i64::MAX)),
    }
}

fn health_state(h: &ContainerHealthcheck) -> HealthState {
    let nz = |d: Option<steward_spec::Duration>| d.map(|d| d.as_nanos_i64()).filter(|n| *n != 0);
    HealthState {
        test: h.test.to_docker(),
        interval_ns: nz(h.interval),
        timeout_ns: nz(h.timeout),
        retries: h.retries.filter(|n| *n != 0),
        start_period_ns: nz(h.start_period),
    }
}

/// Field-by-field differences of the task settings, as (field, old, new) rendered as compact
/// JSON; maps are compared key by key. Only called when the states differ.
pub fn diff_task(old: &TaskState, new: &TaskState) -> Vec<(String, String, String)> {
    let to_map = |t: &TaskState| match serde_json::to_value(t).expect("task serializes") {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a struct serializes to an object"),
    };
    let (o, n) = (to_map(old), to_map(new));
    let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    let none = serde_json::Value::Null;
    let mut out = Vec::new();
    for k in keys {
        let (ov, nv) = (o.get(k).unwrap_or(&none), n.get(k).unwrap_or(&none));
        if ov == nv {
            continue;
        }
        let field = camel(k);
        let empty = serde_json::Value::Object(Default::default());
        let (ovm, nvm) = if k == "container_labels" {
            (
                if ov.is_null() { &empty } else { ov },
                if nv.is_null() { &empty } else { nv },
            )
        } else {
            (ov, nv)
        };
        if let (serde_json::Value::Object(om), serde_json::Value::Object(nm)) = (ovm, nvm) {
            if k == "container_labels" {
                let inner: std::collections::BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
                for ik in inner {
                    let (a, b) = (om.get(ik).unwrap_or(&none), nm.get(ik).unwrap_or(&none));
                    if a != b {
                        out.push((format!("labels.{ik}"), render(a), render(b)));
                    }
                }
                continue;
            }
        }
        let field = if field == "containerLabels" {
            "labels".to_string()
        } else {
            field
        };
        if let Some(f) = field.strip_suffix("Ns") {
            out.push((f.to_string(), render_ns(ov), render_ns(nv)));
            continue;
        }
        out.push((field, render(ov), render(nv)));
    }
    out
}

fn render_ns(v: &serde_json::Value) -> String {
    match v.as_i64() {
        Some(ns) if ns % 1_000_000_000 == 0 => format!("{}s", ns / 1_000_000_000),
        Some(ns) => format!("{}ms", ns / 1_000_000),
        None => render(v),
    }
}

fn render(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(none)".into(),
        serde_json::Value::String(s) => s.clone(),
        other => humanize(other).to_string(),
    }
}

/// Nested values in the manifests' spelling: camelCase keys, `*_ns` numbers as durations.
fn humanize(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| match (k.strip_suffix("_ns"), v.as_i64()) {
                    (Some(base), Some(_)) => (camel(base), serde_json::Value::String(render_ns(v))),
                    _ => (camel(k), humanize(v)),
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(humanize).collect()),
        other => other.clone(),
    }
}

/// `stop_grace_period_ns` -> `stopGracePeriodNs`: the manifest's spelling of the field.
fn camel(k: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}
