//! The task-level fields (networks, mounts, placement, restart, healthcheck, secrets, configs,
//! user, ulimits, capabilities) between `TaskState` and Swarm's `TaskSpec`.

use std::collections::{BTreeMap, HashMap};

use bollard::models::*;
use steward_plan::{
    DriverState, FileState, HealthState, MountState, NetworkState, RestartState, TaskState, UlimitState,
};

/// Ids of the Swarm objects a spec refers to by name: Swarm's references need both.
#[derive(Clone, Debug, Default)]
pub struct Refs {
    pub secrets: HashMap<String, String>,
    pub configs: HashMap<String, String>,
}

/// Network ids to names: Swarm stores an attachment's target as the network's id.
pub type NetworkNames = HashMap<String, String>;

fn some_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn some_map(m: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Writes the task settings into `task` (whose container spec already holds image, env, ...).
pub fn write_task(t: &TaskState, refs: &Refs, task: &mut TaskSpec) {
    let c = task.container_spec.get_or_insert_with(Default::default);
    c.mounts = some_vec(t.mounts.iter().map(mount_to_swarm).collect());
    c.stop_grace_period = t.stop_grace_period_ns;
    c.stop_signal = t.stop_signal.clone();
    c.health_check = t.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: h.interval_ns,
        timeout: h.timeout_ns,
        retries: h.retries.map(|r| r as i64),
        start_period: h.start_period_ns,
        start_interval: None,
    });
    c.secrets = some_vec(
        t.secrets
            .iter()
            .map(|f| TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(f.target.clone()),
                    uid: Some(f.uid.clone()),
                    gid: Some(f.gid.clone()),
                    mode: Some(f.mode),
                }),
                secret_id: refs.secrets.get(&f.name).cloned(),
                secret_name: Some(f.name.clone()),
            })
            .collect(),
    );
    c.configs = some_vec(
        t.configs
            .iter()
            .map(|f| TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: Some(f.target.clone()),
                    uid: Some(f.uid.clone()),
                    gid: Some(f.gid.clone()),
                    mode: Some(f.mode),
                }),
                runtime: None,
                config_id: refs.configs.get(&f.name).cloned(),
                config_name: Some(f.name.clone()),
            })
            .collect(),
    );
    c.user = t.user.clone();
    c.dir = t.working_dir.clone();
    c.hostname = t.hostname.clone();
    c.init = t.init;
    c.labels = some_map(&t.container_labels);
    c.ulimits = some_vec(
        t.ulimits
            .iter()
            .map(|u| ResourcesUlimits {
                name: Some(u.name.clone()),
                soft: Some(u.soft),
                hard: Some(u.hard),
            })
            .collect(),
    );
    c.capability_add = some_vec(t.cap_add.clone());
    c.capability_drop = some_vec(t.cap_drop.clone());
    task.networks = some_vec(
        t.networks
            .iter()
            .map(|n| NetworkAttachmentConfig {
                target: Some(n.name.clone()),
                aliases: some_vec(n.aliases.clone()),
                driver_opts: None,
            })
            .collect(),
    );
    let placement = TaskSpecPlacement {
        constraints: some_vec(t.constraints.clone()),
        preferences: some_vec(
            t.preferences
                .iter()
                .map(|p| TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some(p.clone()),
                    }),
                })
                .collect(),
        ),
        max_replicas: t.max_replicas_per_node.map(|n| n as i64),
        platforms: None,
    };
    task.placement = (placement != TaskSpecPlacement::default()).then_some(placement);
    task.restart_policy = t.restart_policy.as_ref().map(|r| TaskSpecRestartPolicy {
        condition: Some(match r.condition.as_str() {
            "none" => TaskSpecRestartPolicyConditionEnum::NONE,
            "on-failure" => TaskSpecRestartPolicyConditionEnum::ON_FAILURE,
            _ => TaskSpecRestartPolicyConditionEnum::ANY,
        }),
        delay: Some(r.delay_ns),
        max_attempts: Some(r.max_attempts as i64),
        window: Some(r.window_ns),
    });
    task.log_driver = t.logging.as_ref().map(|l| TaskSpecLogDriver {
        name: Some(l.name.clone()),
        options: some_map(&l.options),
    });
}

fn mount_to_swarm(m: &MountState) -> Mount {
    let typ = match m.kind.as_str() {
        "bind" => MountType::BIND,
        "tmpfs" => MountType::TMPFS,
        _ => MountType::VOLUME,
    };
    let volume =
        (typ == MountType::VOLUME && (m.no_copy || m.driver.is_some() || !m.volume_labels.is_empty())).then(|| {
            MountVolumeOptions {
                no_copy: m.no_copy.then_some(true),
                labels: some_map(&m.volume_labels),
                driver_config: m.driver.as_ref().map(|d| MountVolumeOptionsDriverConfig {
                    name: Some(d.name.clone()),
                    options: some_map(&d.options),
                }),
                subpath: None,
            }
        });
    Mount {
        target: Some(m.target.clone()),
        source: m.source.clone(),
        typ: Some(typ),
        read_only: m.read_only.then_some(true),
        volume_options: volume,
        tmpfs_options: m.tmpfs_size.map(|s| MountTmpfsOptions {
            size_bytes: Some(s),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sorted_map(m: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Reads the task settings back, normalized as `steward_plan::task_from_spec` builds them.
pub fn read_task(task: &TaskSpec, networks: &NetworkNames) -> TaskState {
    let c = task.container_spec.clone().unwrap_or_default();
    let mut mounts: Vec<MountState> = c
        .mounts
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let v = m.volume_options.clone().unwrap_or_default();
            MountState {
                target: m.target.clone().unwrap_or_default(),
                kind: m.typ.map_or("volume".into(), |t| t.to_string()),
                source: m.source.clone().filter(|s| !s.is_empty()),
                read_only: m.read_only.unwrap_or(false),
                no_copy: v.no_copy.unwrap_or(false),
                driver: v.driver_config.as_ref().and_then(|d| {
                    let name = d.name.clone().unwrap_or_default();
                    let options = sorted_map(d.options.as_ref());
                    // No driver, or `local` without options, is Docker's default volume.
                    let default = (name.is_empty() || name == "local") && options.is_empty();
                    (!default).then_some(DriverState { name, options })
                }),
                volume_labels: sorted_map(v.labels.as_ref()),
                tmpfs_size: m.tmpfs_options.as_ref().and_then(|t| t.size_bytes).filter(|s| *s != 0),
            }
        })
        .collect();
    mounts.sort();
    let file =
        |target: Option<String>, uid: Option<String>, gid: Option<String>, mode: Option<u32>, name: String| FileState {
            target: target.unwrap_or_default(),
            name,
            uid: uid.unwrap_or_else(|| "0".into()),
            gid: gid.unwrap_or_else(|| "0".into()),
            mode: mode.unwrap_or(0o444),
        };
    let mut secrets: Vec<FileState> = c
        .secrets
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let f = s.file.unwrap_or_default();
            // `/run/secrets/x` and `x` are the same file; steward keeps the relative form.
            let target = f
                .name
                .map(|n| n.strip_prefix("/run/secrets/").map(str::to_string).unwrap_or(n));
            file(target, f.uid, f.gid, f.mode, s.secret_name.unwrap_or_default())
        })
        .collect();
    secrets.sort();
    let mut configs: Vec<FileState> = c
        .configs
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| {
            let f = s.file?;
            // A relative config target is relative to `/` (Swarm's): the same file.
            let target = f.name.map(|n| if n.starts_with('/') { n } else { format!("/{n}") });
            Some(file(target, f.uid, f.gid, f.mode, s.config_name.unwrap_or_default()))
        })
        .collect();
    configs.sort();
    let mut ulimits: Vec<UlimitState> = c
        .ulimits
        .unwrap_or_default()
        .into_iter()
        .map(|u| UlimitState {
            name: u.name.unwrap_or_default(),
            soft: u.soft.unwrap_or(0),
            hard: u.hard.unwrap_or(0),
        })
        .collect();
    ulimits.sort();
    let caps = |v: Option<Vec<String>>| {
        let mut v: Vec<String> = v
            .unwrap_or_default()
            .iter()
            .map(|c| steward_plan::normalize_capability(c))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let mut nets: Vec<NetworkState> = task
        .networks
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            let target = n.target.unwrap_or_default();
            let mut aliases = n.aliases.unwrap_or_default();
            aliases.sort();
            aliases.dedup();
            NetworkState {
                name: networks.get(&target).cloned().unwrap_or(target),
                aliases,
            }
        })
        .collect();
    nets.sort();
    let placement = task.placement.clone().unwrap_or_default();
    let mut constraints: Vec<String> = placement
        .constraints
        .unwrap_or_default()
        .iter()
        .map(|c| steward_plan::normalize_constraint(c))
        .collect();
    constraints.sort();
    let nz = |v: Option<i64>| v.filter(|n| *n != 0);
    TaskState {
        networks: nets,
        mounts,
        constraints,
        preferences: placement
            .preferences
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.spread?.spread_descriptor)
            .collect(),
        max_replicas_per_node: nz(placement.max_replicas).map(|n| n as u64),
        stop_grace_period_ns: c.stop_grace_period,
        stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
        restart_policy: task.restart_policy.as_ref().map(|r| RestartState {
            condition: r
                .condition
                .filter(|c| *c != TaskSpecRestartPolicyConditionEnum::EMPTY)
                .map_or("any".into(), |c| c.to_string()),
            // Swarm's defaults for fields a restart policy leaves out.
            delay_ns: r.delay.unwrap_or(5_000_000_000),
            max_attempts: r.max_attempts.unwrap_or(0).max(0) as u64,
            window_ns: r.window.unwrap_or(0),
        }),
        healthcheck: c.health_check.as_ref().and_then(|h| {
            let test = h.test.clone().unwrap_or_default();
            (!test.is_empty()).then(|| HealthState {
                test,
                interval_ns: nz(h.interval),
                timeout_ns: nz(h.timeout),
                retries: h.retries.filter(|n| *n != 0).map(|n| n as u64),
                start_period_ns: nz(h.start_period),
            })
        }),
        secrets,
        configs,
        user: c.user.filter(|s| !s.is_empty()),
        working_dir: c.dir.filter(|s| !s.is_empty()),
        hostname: c.hostname.filter(|s| !s.is_empty()),
        // Docker's CLI writes `Init: false` when not asked: the same as unset.
        init: c.init.filter(|i| *i),
        container_labels: sorted_map(c.labels.as_ref()),
        logging: task.log_driver.as_ref().and_then(|l| {
            let name = l.name.clone().unwrap_or_default();
            (!name.is_empty()).then(|| DriverState {
                name,
                options: sorted_map(l.options.as_ref()),
            })
        }),
        ulimits,
        cap_add: caps(c.capability_add),
        cap_drop: caps(c.capability_drop),
    }
}
