//! Docker Swarm through the Engine API (bollard).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bollard::models::*;
use bollard::query_parameters::{
    EventsOptions, ListConfigsOptions, ListNetworksOptions, ListSecretsOptions, UpdateServiceOptions,
};
use bollard::{ClientVersion, Docker};
use futures_util::{Stream, StreamExt};
use steward_plan::model::labels;
use steward_plan::{DesiredService, ObjectData, ObjectKind, Observed, ObservedObject, ObservedService};

use crate::service_spec::{from_swarm, to_swarm, NetworkNames, Refs};

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
    /// A read outside bollard could not reach the engine.
    #[error("Docker engine unreachable during {op}: {message}")]
    UnreachableRaw { op: &'static str, message: String },
    /// A read outside bollard got an answer it could not decode.
    #[error("Docker engine answer unreadable during {op}: {message}")]
    Unreadable { op: &'static str, message: String },
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
    endpoint: crate::raw::Endpoint,
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
            endpoint: crate::raw::Endpoint::parse(host),
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

    /// Reads the services owned by `stack` and any service named in `desired_names`, and the
    /// secrets and configs the stack owns. The three lists run concurrently; one more call
    /// (networks, to name attachments Swarm reports by id) only when a service is attached to one.
    pub async fn observe(&self, stack: &str, desired_names: &[&str]) -> Observed {
        let owned_filter = || HashMap::from([("label".to_string(), vec![format!("{}={stack}", labels::STACK)])]);
        let (services, secrets, configs) = futures_util::join!(
            self.try_observe(stack, desired_names),
            self.list_objects(ObjectKind::Secret, owned_filter()),
            self.list_objects(ObjectKind::Config, owned_filter()),
        );
        match (services, secrets, configs) {
            (Ok(services), Ok(mut objects), Ok(configs)) => {
                objects.extend(configs);
                Observed::Known { services, objects }
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Observed::Unknown {
                reason: error_chain(&e),
            },
        }
    }

    /// Swarm secrets or configs matching `filters`.
    pub async fn list_objects(
        &self,
        kind: ObjectKind,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<Vec<ObservedObject>, SwarmError> {
        self.read();
        // (id, name, labels) of each object, secrets and configs alike.
        type Found = (Option<String>, Option<String>, Option<HashMap<String, String>>);
        let found: Vec<Found> = match kind {
            ObjectKind::Secret => self
                .docker
                .list_secrets(Some(ListSecretsOptions { filters: Some(filters) }))
                .await
                .map_err(|e| SwarmError::from_api("list secrets", "", 0, e))?
                .into_iter()
                .map(|s| {
                    let spec = s.spec.unwrap_or_default();
                    (s.id, spec.name, spec.labels)
                })
                .collect(),
            ObjectKind::Config => self
                .docker
                .list_configs(Some(ListConfigsOptions { filters: Some(filters) }))
                .await
                .map_err(|e| SwarmError::from_api("list configs", "", 0, e))?
                .into_iter()
                .map(|s| {
                    let spec = s.spec.unwrap_or_default();
                    (s.id, spec.name, spec.labels)
                })
                .collect(),
        };
        let mut out: Vec<ObservedObject> = found
            .into_iter()
            .map(|(id, name, labels)| ObservedObject {
                kind,
                id: id.unwrap_or_default(),
                name: name.unwrap_or_default(),
                service: labels.and_then(|l| l.get(labels::SERVICE).cloned()),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates a steward-owned secret or config. One that already exists under this versioned
    /// name has this very content (the name is its hash): that counts as done.
    pub async fn create_object(&self, stack: &str, name: &str, data: &ObjectData) -> Result<String, SwarmError> {
        let labels = std::collections::BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
            (labels::STACK.to_string(), stack.to_string()),
            (labels::SERVICE.to_string(), data.service.clone()),
        ]);
        self.create_object_labelled(name, data, &labels).await
    }

    /// [`Swarm::create_object`] with the caller's labels.
    pub async fn create_object_labelled(
        &self,
        name: &str,
        data: &ObjectData,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, SwarmError> {
        use base64::Engine as _;
        self.write();
        let labels: HashMap<String, String> = labels.clone().into_iter().collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(data.data.as_bytes());
        let r = match data.kind {
            ObjectKind::Secret => {
                self.docker
                    .create_secret(SecretSpec {
                        name: Some(name.to_string()),
                        labels: Some(labels),
                        data: Some(encoded),
                        ..Default::default()
                    })
                    .await
            }
            ObjectKind::Config => {
                self.docker
                    .create_config(ConfigSpec {
                        name: Some(name.to_string()),
                        labels: Some(labels),
                        data: Some(encoded),
                        ..Default::default()
                    })
                    .await
            }
        };
        match r {
            Ok(r) => Ok(r.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(String::new()),
            // Swarm's message never holds the data; it names the object.
            Err(e) => Err(SwarmError::from_api("create", name, 0, e)),
        }
    }

    pub async fn remove_object(&self, kind: ObjectKind, id: &str, name: &str) -> Result<(), SwarmError> {
        self.write();
        let r = match kind {
            ObjectKind::Secret => self.docker.delete_secret(id).await,
            ObjectKind::Config => self.docker.delete_config(id).await,
        };
        match r {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(SwarmError::from_api("remove", name, 0, e)),
        }
    }

    /// Names of every network, by id.
    async fn network_names(&self) -> Result<NetworkNames, SwarmError> {
        self.read();
        let nets = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| SwarmError::from_api("list networks", "", 0, e))?;
        Ok(nets.into_iter().filter_map(|n| Some((n.id?, n.name?))).collect())
    }

    /// Ids of the secrets and configs `d` mounts (Swarm's references need them): one list call
    /// per kind used, only when writing.
    async fn refs(&self, d: &DesiredService) -> Result<Refs, SwarmError> {
        self.object_refs(&d.state.task).await
    }

    pub(crate) async fn object_refs(&self, task: &steward_plan::TaskState) -> Result<Refs, SwarmError> {
        let mut refs = Refs::default();
        for (kind, files, map) in [
            (ObjectKind::Secret, &task.secrets, &mut refs.secrets),
            (ObjectKind::Config, &task.configs, &mut refs.configs),
        ] {
            if files.is_empty() {
                continue;
            }
            let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
            let found = self
                .list_objects(kind, HashMap::from([("name".to_string(), names.clone())]))
                .await?;
            // The name filter matches prefixes: exact names only.
            map.extend(
                found
                    .into_iter()
                    .filter(|o| names.contains(&o.name))
                    .map(|o| (o.name, o.id)),
            );
        }
        Ok(refs)
    }

    async fn try_observe(&self, stack: &str, desired_names: &[&str]) -> Result<Vec<ObservedService>, SwarmError> {
        let owned = self
            .list(HashMap::from([(
                "label".to_string(),
                vec![format!("{}={stack}", labels::STACK)],
            )]))
            .await?;
        let missing: Vec<String> = desired_names
            .iter()
            .filter(|n| !owned.iter().any(|o| service_name(o) == Some(**n)))
            .map(|n| n.to_string())
            .collect();
        let mut all = owned;
        if !missing.is_empty() {
            // The name filter matches prefixes: keep exact matches only.
            let named = self
                .list(HashMap::from([("name".to_string(), missing.clone())]))
                .await?;
            all.extend(
                named
                    .into_iter()
                    .filter(|s| service_name(s).is_some_and(|n| missing.iter().any(|m| m == n))),
            );
        }
        let attached = all.iter().any(|s| {
            s.spec
                .as_ref()
                .and_then(|sp| sp.task_template.as_ref())
                .and_then(|t| t.networks.as_ref())
                .is_some_and(|n| !n.is_empty())
        });
        let networks = if attached {
            self.network_names().await?
        } else {
            NetworkNames::new()
        };
        let mut out: Vec<ObservedService> = all.iter().filter_map(|s| from_swarm(s, stack, &networks)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn list(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<Service>, SwarmError> {
        self.read();
        crate::raw::list_services(
            &self.endpoint,
            &filters,
            std::time::Duration::from_secs(REQUEST_TIMEOUT_SECS),
        )
        .await
        .map_err(|e| match e {
            crate::raw::RawError::Unreachable(message) => SwarmError::UnreachableRaw {
                op: "list services",
                message,
            },
            crate::raw::RawError::Undecodable(message) => SwarmError::Unreadable {
                op: "list services",
                message,
            },
        })
    }

    pub async fn create(&self, stack: &str, d: &DesiredService) -> Result<String, SwarmError> {
        self.write();
        let r = self
            .docker
            .create_service(to_swarm(stack, d, &self.refs(d).await?), None)
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
        let refs = self.refs(d).await?;
        self.docker
            .update_service(
                id,
                to_swarm(stack, d, &refs),
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

fn service_name(s: &Service) -> Option<&str> {
    s.spec.as_ref()?.name.as_deref()
}

/// Swarm timestamps (`2026-11-24T00:05:21.27510Z`) as unix milliseconds.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
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
