//! Docker Swarm through the Engine API (bollard).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bollard::models::*;
use bollard::query_parameters::{EventsOptions, ListServicesOptions, UpdateServiceOptions};
use bollard::{ClientVersion, Docker};
use futures_util::{Stream, StreamExt};
use steward_plan::model::labels;
use steward_plan::{
    round_ratio, Amounts, DesiredService, Observed, ObservedService, Owner, PolicyState, PortState, ServiceState,
    UpdateState, UpdateStatus,
};

/// The engines on these machines speak API 1.41 (Docker 20.10); bollard's default is newer and
/// would be refused with "client version is too new".
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Seconds before an Engine API request is abandoned; a hung engine must not hang the loop.
const REQUEST_TIMEOUT_SECS: u64 = 30;

pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("invalid docker host {host:?}")]
    InvalidHost {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine could not be reached or answered with a transport error.
    #[error("Docker engine unreachable during {op}")]
    Unreachable {
        op: &'static str,
        #[source]
        source: bollard::errors::Error,
    },
    /// The service changed since it was observed ("update out of sequence"): re-observe and re-plan.
    #[error("service {name} changed since it was observed (version {version} is stale)")]
    Conflict { name: String, version: u64 },
    #[error("Docker engine refused {op} of {name}: {message}")]
    Refused {
        op: &'static str,
        name: String,
        message: String,
    },
}

impl SwarmError {
    fn from_api(op: &'static str, name: &str, version: u64, e: bollard::errors::Error) -> Self {
        match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                if message.contains("out of sequence") {
                    SwarmError::Conflict {
                        name: name.to_string(),
                        version,
                    }
                } else {
                    SwarmError::Refused {
                        op,
                        name: name.to_string(),
                        message,
                    }
                }
            }
            other => SwarmError::Unreachable { op, source: other },
        }
    }
}

/// Engine API calls made, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct CallCounters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

impl CallCounters {
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// A service event from Swarm: something changed; the controller re-reads everything.
#[derive(Clone, Debug)]
pub struct ServiceEvent {
    pub action: String,
    pub name: String,
    pub attributes: HashMap<String, String>,
}

#[derive(Clone)]
pub struct Swarm {
    docker: Docker,
    pub calls: Arc<CallCounters>,
}

impl Swarm {
    /// Connects lazily: no request is made until the first call, so an absent engine is
    /// reported by `observe` as Unknown rather than failing start-up.
    pub fn connect(host: &str) -> Result<Self, SwarmError> {
        let invalid = |source| SwarmError::InvalidHost {
            host: host.to_string(),
            source,
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, &API_VERSION).map_err(invalid)?
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, &API_VERSION).map_err(invalid)?
        } else {
            Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, &API_VERSION).map_err(invalid)?
        };
        Ok(Self {
            docker,
            calls: Arc::new(CallCounters::default()),
        })
    }

    fn read(&self) {
        self.calls.reads.fetch_add(1, Ordering::Relaxed);
    }
    fn write(&self) {
        self.calls.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// For sibling modules that extend `Swarm` (jobs); they count their calls in `calls` themselves.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Reads the services owned by `stack` and any service named in `desired_names`.
    /// One list call when every desired service is already owned (the steady state), two otherwise.
    pub async fn observe(&self, stack: &str, desired_names: &[&str]) -> Observed {
        match self.try_observe(stack, desired_names).await {
            Ok(services) => Observed::Known { services },
            Err(e) => Observed::Unknown {
                reason: error_chain(&e),
            },
        }
    }

    async fn try_observe(&self, stack: &str, desired_names: &[&str]) -> Result<Vec<ObservedService>, SwarmError> {
        let owned = self
            .list(HashMap::from([(
                "label".to_string(),
                vec![format!("{}={stack}", labels::STACK)],
            )]))
            .await?;
        let mut out: Vec<ObservedService> = owned.iter().filter_map(|s| from_swarm(s, stack)).collect();
        let missing: Vec<String> = desired_names
            .iter()
            .filter(|n| !out.iter().any(|o| o.name == **n))
            .map(|n| n.to_string())
            .collect();
        if !missing.is_empty() {
            // The name filter matches prefixes: keep exact matches only.
            let named = self
                .list(HashMap::from([("name".to_string(), missing.clone())]))
                .await?;
            out.extend(
                named
                    .iter()
                    .filter_map(|s| from_swarm(s, stack))
                    .filter(|o| missing.contains(&o.name)),
            );
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn list(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<Service>, SwarmError> {
        self.read();
        self.docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters),
                status: Some(true),
            }))
            .await
            .map_err(|e| SwarmError::from_api("list services", "", 0, e))
    }

    pub async fn create(&self, stack: &str, d: &DesiredService) -> Result<String, SwarmError> {
        self.write();
        let r = self
            .docker
            .create_service(to_swarm(stack, d), None)
            .await
            .map_err(|e| SwarmError::from_api("create", &d.name, 0, e))?;
        Ok(r.id.unwrap_or_default())
    }

    /// Replaces the service spec, carrying the version index it was planned against.
    pub async fn update(&self, stack: &str, id: &str, version: u64, d: &DesiredService) -> Result<(), SwarmError> {
        self.write();
        let version_i32 = i32::try_from(version).map_err(|_| SwarmError::Conflict {
            name: d.name.clone(),
            version,
        })?;
        self.docker
            .update_service(
                id,
                to_swarm(stack, d),
                UpdateServiceOptions {
                    version: version_i32,
                    ..Default::default()
                },
                None,
            )
            .await
            .map_err(|e| SwarmError::from_api("update", &d.name, version, e))?;
        Ok(())
    }

    pub async fn remove(&self, id: &str, name: &str) -> Result<(), SwarmError> {
        self.write();
        self.docker
            .delete_service(id)
            .await
            .map_err(|e| SwarmError::from_api("remove", name, 0, e))
    }

    /// Rollout progress of a service: (tasks running `image`, tasks meant to run). One call.
    pub async fn task_progress(&self, service: &str, image: &str) -> Result<(u64, u64), SwarmError> {
        self.read();
        let tasks = self
            .docker
            .list_tasks(Some(bollard::query_parameters::ListTasksOptions {
                filters: Some(HashMap::from([
                    ("service".to_string(), vec![service.to_string()]),
                    ("desired-state".to_string(), vec!["running".to_string()]),
                ])),
            }))
            .await
            .map_err(|e| SwarmError::from_api("list tasks", service, 0, e))?;
        let total = tasks.len() as u64;
        let updated = tasks
            .iter()
            .filter(|t| {
                let running = t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING);
                let img = t
                    .spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.image.as_deref());
                running && img == Some(image)
            })
            .count() as u64;
        Ok((updated, total))
    }

    /// Swarm service events (create, update, remove), from `since` (unix seconds) when given.
    pub fn events(&self, since: Option<i64>) -> impl Stream<Item = Result<ServiceEvent, SwarmError>> + use<> {
        self.read();
        let filters = HashMap::from([
            ("type".to_string(), vec!["service".to_string()]),
            ("scope".to_string(), vec!["swarm".to_string()]),
        ]);
        self.docker
            .events(Some(EventsOptions {
                since: since.map(|s| s.to_string()),
                until: None,
                filters: Some(filters),
            }))
            .map(|r| match r {
                Ok(m) => {
                    let attributes = m.actor.and_then(|a| a.attributes).unwrap_or_default();
                    Ok(ServiceEvent {
                        action: m.action.unwrap_or_default(),
                        name: attributes.get("name").cloned().unwrap_or_default(),
                        attributes,
                    })
                }
                Err(e) => Err(SwarmError::Unreachable {
                    op: "event stream",
                    source: e,
                }),
            })
    }
}

/// Swarm timestamps (`2026-11-24T00:05:21.27510Z`) as unix milliseconds.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The whole error chain on one line, for status messages and logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

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
pub fn to_swarm(stack: &str, d: &DesiredService) -> ServiceSpec {
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
    ServiceSpec {
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
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(s.replicas as i64),
            }),
            ..Default::default()
        }),
        update_config: Some(policy_update(&s.update)),
        rollback_config: Some(policy_rollback(&s.rollback)),
        endpoint_spec: (!ports.is_empty()).then_some(EndpointSpec {
            mode: None,
            ports: Some(ports),
        }),
        networks: None,
    }
}

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
pub fn from_swarm(s: &Service, stack: &str) -> Option<ObservedService> {
    let spec = s.spec.as_ref()?;
    let all_labels = spec.labels.clone().unwrap_or_default();
    let owner = match all_labels.get(labels::STACK) {
        Some(st) if st == stack => Owner::Us,
        Some(st) => Owner::OtherStack(st.clone()),
        None => Owner::Nobody,
    };
    let task = spec.task_template.clone().unwrap_or_default();
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
            monitor_ns: u.monitor.unwrap_or(0),
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
            monitor_ns: u.monitor.unwrap_or(0),
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
        replicated: mode.replicated.is_some(),
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
            spec: Some(to_swarm("tc", &d)),
            ..Default::default()
        };
        let o = from_swarm(&svc, "tc").unwrap();
        assert_eq!(o.state, d.state);
        assert_eq!(o.owner, Owner::Us);
        assert_eq!(o.version, 42);
        assert_eq!(o.spec_hash.as_deref(), Some(d.spec_hash.as_str()));
        assert_eq!(o.secret_env, d.secret_env);
        assert_eq!(from_swarm(&svc, "other").unwrap().owner, Owner::OtherStack("tc".into()));
    }
}
