//! Converting between the planner's normalized service and Swarm's `ServiceSpec`, both ways:
//! what is written reads back equal, so a converged service plans no change.

use std::collections::BTreeSet;

use bollard::models::*;
use steward_plan::model::labels;
use steward_plan::{
    round_ratio, Amounts, DesiredService, Mode, ObservedService, Owner, PolicyState, PortState, ServiceState,
    UpdateState, UpdateStatus,
};

use crate::swarm::parse_rfc3339_ms;
use crate::task_spec::{read_task, write_task};
pub use crate::task_spec::{NetworkNames, Refs};

fn policy_update(p: &PolicyState) -> ServiceSpecUpdateConfig {
    ServiceSpecUpdateConfig {
        parallelism: Some(p.parallelism as i64),
        delay: Some(p.delay_ns),
        failure_action: Some(match p.failure_action.as_str() {
            "continue" => ServiceSpecUpdateConfigFailureActionEnum::CONTINUE,
            "rollback" => ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK,
            _ => ServiceSpecUpdateConfigFailureActionEnum::PAUSE,
        }),
        monitor: Some(p.monitor_ns),
        max_failure_ratio: Some(p.max_failure_ratio),
        order: Some(if p.order == "start-first" {
            ServiceSpecUpdateConfigOrderEnum::START_FIRST
        } else {
            ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
        }),
    }
}

fn policy_rollback(p: &PolicyState) -> ServiceSpecRollbackConfig {
    ServiceSpecRollbackConfig {
        parallelism: Some(p.parallelism as i64),
        delay: Some(p.delay_ns),
        failure_action: Some(if p.failure_action == "continue" {
            ServiceSpecRollbackConfigFailureActionEnum::CONTINUE
        } else {
            ServiceSpecRollbackConfigFailureActionEnum::PAUSE
        }),
        monitor: Some(p.monitor_ns),
        max_failure_ratio: Some(p.max_failure_ratio),
        order: Some(if p.order == "start-first" {
            ServiceSpecRollbackConfigOrderEnum::START_FIRST
        } else {
            ServiceSpecRollbackConfigOrderEnum::STOP_FIRST
        }),
    }
}

fn amounts_nonempty(a: &Amounts) -> bool {
    a.nano_cpus.is_some() || a.memory_bytes.is_some()
}

/// The full Swarm spec for a desired service, ownership labels included.
pub fn to_swarm(stack: &str, d: &DesiredService, refs: &Refs) -> ServiceSpec {
    let s = &d.state;
    let resources = (amounts_nonempty(&s.limits) || amounts_nonempty(&s.reservations)).then(|| TaskSpecResources {
        limits: amounts_nonempty(&s.limits).then_some(Limit {
            nano_cpus: s.limits.nano_cpus,
            memory_bytes: s.limits.memory_bytes,
            pids: None,
        }),
        reservations: amounts_nonempty(&s.reservations).then_some(ResourceObject {
            nano_cpus: s.reservations.nano_cpus,
            memory_bytes: s.reservations.memory_bytes,
            generic_resources: None,
        }),
        ..Default::default()
    });
    let ports: Vec<EndpointPortConfig> = s
        .ports
        .iter()
        .map(|p| EndpointPortConfig {
            name: None,
            protocol: Some(match p.protocol.as_str() {
                "udp" => EndpointPortConfigProtocolEnum::UDP,
                "sctp" => EndpointPortConfigProtocolEnum::SCTP,
                _ => EndpointPortConfigProtocolEnum::TCP,
            }),
            target_port: Some(i64::from(p.target)),
            published_port: p.published.map(i64::from),
            publish_mode: Some(if p.mode == "host" {
                EndpointPortConfigPublishModeEnum::HOST
            } else {
                EndpointPortConfigPublishModeEnum::INGRESS
            }),
        })
        .collect();
    let mut spec = ServiceSpec {
        name: Some(d.name.clone()),
        labels: Some(d.swarm_labels(stack).into_iter().collect()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(s.image.clone()),
                command: (!s.command.is_empty()).then(|| s.command.clone()),
                args: (!s.args.is_empty()).then(|| s.args.clone()),
                env: (!s.env.is_empty()).then(|| s.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                ..Default::default()
            }),
            resources,
            ..Default::default()
        }),
        mode: Some(match s.mode {
            Mode::Replicated => ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(s.replicas as i64),
                }),
                ..Default::default()
            },
            Mode::Global => ServiceSpecMode {
                global: Some(Default::default()),
                ..Default::default()
            },
        }),
        update_config: Some(policy_update(&s.update)),
        rollback_config: Some(policy_rollback(&s.rollback)),
        endpoint_spec: (!ports.is_empty()).then_some(EndpointSpec {
            mode: None,
            ports: Some(ports),
        }),
        networks: None,
    };
    if let Some(task) = spec.task_template.as_mut() {
        write_task(&s.task, refs, task);
    }
    spec
}

/// Swarm's default monitor period (swarmkit's `defaultMonitor`).
const SWARM_MONITOR_NS: i64 = 5_000_000_000;

/// Swarm's defaults for a service created without an update/rollback config.
fn default_policy() -> PolicyState {
    PolicyState {
        parallelism: 1,
        delay_ns: 0,
        failure_action: "pause".into(),
        monitor_ns: 5_000_000_000,
        max_failure_ratio: 0.0,
        order: "stop-first".into(),
    }
}

fn nonzero(v: Option<i64>) -> Option<i64> {
    v.filter(|n| *n != 0)
}

/// Normalizes a Swarm service into the planner's view. `None` for a service without a spec.
pub fn from_swarm(s: &Service, stack: &str, networks: &NetworkNames) -> Option<ObservedService> {
    let spec = s.spec.as_ref()?;
    let all_labels = spec.labels.clone().unwrap_or_default();
    let owner = match all_labels.get(labels::STACK) {
        Some(st) if st == stack => Owner::Us,
        Some(st) => Owner::OtherStack(st.clone()),
        None => Owner::Nobody,
    };
    let task = spec.task_template.clone().unwrap_or_default();
    let task_state = read_task(&task, networks);
    let c = task.container_spec.unwrap_or_default();
    let res = task.resources.unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let reservations = res.reservations.unwrap_or_default();
    let mode = spec.mode.clone().unwrap_or_default();
    let mut ports: Vec<PortState> = spec
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default()
        .iter()
        .map(|p| PortState {
            target: p.target_port.unwrap_or(0) as u32,
            published: p.published_port.filter(|n| *n != 0).map(|n| n as u32),
            protocol: p.protocol.map_or("tcp".into(), |x| x.to_string().to_lowercase()),
            mode: p
                .publish_mode
                .map_or("ingress".into(), |x| x.to_string().to_lowercase()),
        })
        .collect();
    ports.sort();
    let update = spec
        .update_config
        .as_ref()
        .map_or_else(default_policy, |u| PolicyState {
            parallelism: u.parallelism.unwrap_or(0) as u64,
            delay_ns: u.delay.unwrap_or(0),
            failure_action: u.failure_action.map_or("pause".into(), |x| x.to_string()),
            // Swarm applies its 5 s default to an unset or zero monitor.
            monitor_ns: u.monitor.filter(|m| *m != 0).unwrap_or(SWARM_MONITOR_NS),
            max_failure_ratio: round_ratio(u.max_failure_ratio.unwrap_or(0.0)),
            order: u.order.map_or("stop-first".into(), |x| x.to_string()),
        });
    let rollback = spec
        .rollback_config
        .as_ref()
        .map_or_else(default_policy, |u| PolicyState {
            parallelism: u.parallelism.unwrap_or(0) as u64,
            delay_ns: u.delay.unwrap_or(0),
            failure_action: u.failure_action.map_or("pause".into(), |x| x.to_string()),
            // Swarm applies its 5 s default to an unset or zero monitor.
            monitor_ns: u.monitor.filter(|m| *m != 0).unwrap_or(SWARM_MONITOR_NS),
            max_failure_ratio: round_ratio(u.max_failure_ratio.unwrap_or(0.0)),
            order: u.order.map_or("stop-first".into(), |x| x.to_string()),
        });
    let state = ServiceState {
        image: c.image.unwrap_or_default(),
        replicas: mode.replicated.as_ref().and_then(|r| r.replicas).unwrap_or(0).max(0) as u64,
        command: c.command.unwrap_or_default(),
        args: c.args.unwrap_or_default(),
        env: c
            .env
            .unwrap_or_default()
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect(),
        labels: all_labels
            .iter()
            .filter(|(k, _)| !k.starts_with("steward.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ports,
        limits: Amounts {
            nano_cpus: nonzero(limits.nano_cpus),
            memory_bytes: nonzero(limits.memory_bytes),
        },
        reservations: Amounts {
            nano_cpus: nonzero(reservations.nano_cpus),
            memory_bytes: nonzero(reservations.memory_bytes),
        },
        update,
        rollback,
        mode: if mode.global.is_some() {
            Mode::Global
        } else {
            Mode::Replicated
        },
        task: task_state,
    };
    let secret_env: BTreeSet<String> = all_labels
        .get(labels::SECRET_ENV)
        .map(|v| v.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    let update_status = s.update_status.as_ref().and_then(|u| {
        let state = match u.state? {
            ServiceUpdateStatusStateEnum::UPDATING => UpdateState::Updating,
            ServiceUpdateStatusStateEnum::PAUSED => UpdateState::Paused,
            ServiceUpdateStatusStateEnum::COMPLETED => UpdateState::Completed,
            ServiceUpdateStatusStateEnum::ROLLBACK_STARTED => UpdateState::RollbackStarted,
            ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED => UpdateState::RollbackPaused,
            ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED => UpdateState::RollbackCompleted,
            _ => return None,
        };
        Some(UpdateStatus {
            state,
            message: u.message.clone().unwrap_or_default(),
            started_at_ms: u.started_at.as_deref().and_then(parse_rfc3339_ms),
        })
    });
    Some(ObservedService {
        id: s.id.clone().unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        version: s.version.as_ref().and_then(|v| v.index).unwrap_or(0),
        owner,
        spec_hash: all_labels.get(labels::SPEC_HASH).cloned(),
        secret_env,
        // Jobs (replicated-job, global-job) run to completion: steward does not update them.
        replicated: mode.replicated.is_some() || mode.global.is_some(),
        state,
        running_tasks: s.service_status.as_ref().and_then(|st| st.running_tasks),
        desired_tasks: s.service_status.as_ref().and_then(|st| st.desired_tasks),
        update_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DesiredService {
        let state = ServiceState {
            image: "taxcollector-demo:v1".into(),
            replicas: 3,
            command: vec![],
            args: vec!["--port".into(), "8080".into()],
            env: [
                ("MODE".to_string(), "a".to_string()),
                ("DB_PASSWORD".to_string(), "s".to_string()),
            ]
            .into(),
            labels: [("team".to_string(), "tax".to_string())].into(),
            ports: vec![PortState {
                target: 8080,
                published: Some(18080),
                protocol: "tcp".into(),
                mode: "ingress".into(),
            }],
            limits: Amounts {
                nano_cpus: Some(500_000_000),
                memory_bytes: Some(256 << 20),
            },
            reservations: Amounts::default(),
            update: PolicyState {
                parallelism: 2,
                delay_ns: 30_000_000_000,
                failure_action: "rollback".into(),
                monitor_ns: 5_000_000_000,
                max_failure_ratio: 0.1,
                order: "start-first".into(),
            },
            rollback: default_policy(),
            mode: Mode::Replicated,
            task: Default::default(),
        };
        DesiredService::new("web".into(), state, ["DB_PASSWORD".to_string()].into(), false)
    }

    /// What steward writes reads back as the same state: the planner sees no difference.
    #[test]
    fn round_trip_is_identity() {
        let d = sample();
        let svc = Service {
            id: Some("abc".into()),
            version: Some(ObjectVersion { index: Some(42) }),
            spec: Some(to_swarm("tc", &d, &Refs::default())),
            ..Default::default()
        };
        let o = from_swarm(&svc, "tc", &Default::default()).unwrap();
        assert_eq!(o.state, d.state);
        assert_eq!(o.owner, Owner::Us);
        assert_eq!(o.version, 42);
        assert_eq!(o.spec_hash.as_deref(), Some(d.spec_hash.as_str()));
        assert_eq!(o.secret_env, d.secret_env);
        assert_eq!(
            from_swarm(&svc, "other", &Default::default()).unwrap().owner,
            Owner::OtherStack("tc".into())
        );
    }
}
