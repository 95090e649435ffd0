//! Swarm networks: reading the stack's (and those whose names it wants), creating and removing
//! them exactly as the Network planner (`steward_network::plan`) decided, and which services are
//! attached to which network (the planner's prune and recreate decisions depend on it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;

use bollard::errors::Error as ApiError;
use bollard::models::{Network, NetworkCreateRequest};
use bollard::query_parameters::{ListNetworksOptions, ListServicesOptions};
use steward_network::model::{DesiredNetwork, ObservedNetwork, SWARM_SCOPE};
use steward_plan::model::labels;

use crate::swarm::{Swarm, SwarmError};

impl Swarm {
    fn count_network_read(&self) {
        self.calls.reads.fetch_add(1, Ordering::Relaxed);
    }
    fn count_network_write(&self) {
        self.calls.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// The networks `stack` owns and every network whose name is in `names` (whoever owns it),
    /// sorted by name. One list call: the engine's name filter matches substrings, so the list
    /// is filtered here.
    pub async fn observe_networks(&self, stack: &str, names: &[&str]) -> Result<Vec<ObservedNetwork>, SwarmError> {
        let mut out: Vec<ObservedNetwork> = self
            .list_networks()
            .await?
            .into_iter()
            .map(observed)
            .filter(|n| {
                n.labels.get(labels::STACK).map(String::as_str) == Some(stack) || names.contains(&n.name.as_str())
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Creates `d` as a swarm-scoped network labelled as `stack`'s; returns its id. Swarm refuses
    /// a second network of the same name, so a create that lost a race fails rather than
    /// duplicating it (the next pass observes what is there).
    pub async fn create_network(&self, stack: &str, d: &DesiredNetwork) -> Result<String, SwarmError> {
        self.count_network_write();
        let req = NetworkCreateRequest {
            name: d.name.clone(),
            driver: Some(d.driver.clone()),
            scope: Some(SWARM_SCOPE.into()),
            internal: Some(d.internal),
            attachable: Some(d.attachable),
            options: Some(d.options.clone().into_iter().collect()),
            labels: Some(d.all_labels(stack).into_iter().collect()),
            ..Default::default()
        };
        self.docker()
            .create_network(req)
            .await
            .map(|r| r.id)
            .map_err(|e| api_error("create", &d.name, e))
    }

    /// Removes the network `id` (named `name`, for errors): true when this call removed it,
    /// false when it was gone already. One still in use is refused by the engine and reported.
    ///
    /// For a few seconds after a removal, while a task that used it shuts down, the node still
    /// lists the network and the engine answers a second removal with 500 "network … not found"
    /// rather than 404: that is "gone" too.
    pub async fn remove_network(&self, id: &str, name: &str) -> Result<bool, SwarmError> {
        self.count_network_write();
        match self.docker().remove_network(id).await {
            Ok(()) => Ok(true),
            Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(ApiError::DockerResponseServerError { message, .. }) if message.contains("not found") => Ok(false),
            Err(e) => Err(api_error("remove", name, e)),
        }
    }

    /// Network name → names of the services attached to it, every service in Swarm (not only
    /// this stack's: a network another stack's service uses must not be removed). Two list
    /// calls: services name their networks by id.
    pub async fn network_attachments(&self) -> Result<BTreeMap<String, Vec<String>>, SwarmError> {
        self.count_network_read();
        let services = self
            .docker()
            .list_services(None::<ListServicesOptions>)
            .await
            .map_err(|e| api_error("list services", "", e))?;
        let names: HashMap<String, String> = self
            .list_networks()
            .await?
            .into_iter()
            .filter_map(|n| Some((n.id?, n.name?)))
            .collect();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in services {
            let Some(spec) = s.spec else { continue };
            let service = spec.name.unwrap_or_default();
            let targets = spec
                .task_template
                .and_then(|t| t.networks)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| a.target)
                // Older specs put the attachments at the service level.
                .chain(spec.networks.unwrap_or_default().into_iter().filter_map(|a| a.target));
            for t in targets {
                // A target is an id, or a name when the service was created with one.
                let network = names.get(&t).cloned().unwrap_or(t);
                out.entry(network).or_default().insert(service.clone());
            }
        }
        Ok(out.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect())
    }

    async fn list_networks(&self) -> Result<Vec<Network>, SwarmError> {
        self.count_network_read();
        self.docker()
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| api_error("list networks", "", e))
    }
}

/// A listed network in the planner's terms. Options are kept as the engine reports them; the
/// planner drops the ones the engine adds itself (`steward_network::model::normalize_options`).
fn observed(n: Network) -> ObservedNetwork {
    ObservedNetwork {
        id: n.id.unwrap_or_default(),
        name: n.name.unwrap_or_default(),
        driver: n.driver.unwrap_or_default(),
        scope: n.scope.unwrap_or_default(),
        attachable: n.attachable.unwrap_or(false),
        internal: n.internal.unwrap_or(false),
        options: n.options.unwrap_or_default().into_iter().collect(),
        labels: n.labels.unwrap_or_default().into_iter().collect(),
    }
}

fn api_error(op: &'static str, name: &str, e: ApiError) -> SwarmError {
    match e {
        ApiError::DockerResponseServerError { message, .. } => SwarmError::Refused {
            op,
            name: name.to_string(),
            message,
        },
        other => SwarmError::Unreachable { op, source: other },
    }
}
