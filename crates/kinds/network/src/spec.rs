//! `kind: Network` — the document and its defaults.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use steward_spec::Metadata;

/// `kind: Network` — a Swarm-scoped network the stack owns; services join it by name
/// (`spec.networks`). Docker networks are immutable: a change of driver, options, `attachable`
/// or `internal` needs the network removed and created again, which steward does only while no
/// service is attached to it (otherwise it reports `RecreateRequired` and leaves it).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Network")]
pub struct NetworkDocument {
    /// Always `steward.io/v1alpha1`.
    pub api_version: String,
    /// Always `Network`.
    pub kind: String,
    pub metadata: Metadata,
    /// Default: an overlay network with Docker's defaults.
    #[serde(default)]
    pub spec: NetworkSpec,
}

/// How the network is created.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Network driver. Default: `overlay` (spans every node of the swarm). The node-local
    /// drivers `bridge`, `host` and `null` cannot make a swarm-scoped network.
    #[serde(default = "overlay")]
    pub driver: String,
    /// Let standalone containers (`docker run --network`, one-off jobs) join it, not only
    /// services. Default: `false`.
    #[serde(default)]
    pub attachable: bool,
    /// No route to the outside: tasks on it reach only each other. Default: `false`.
    #[serde(default)]
    pub internal: bool,
    /// Driver options, e.g. `{encrypted: ""}` for an overlay whose traffic is IPsec-encrypted.
    /// Default: none.
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    /// Treat an existing network of this name that steward did not create as this stack's:
    /// steward reads and reports it but never removes or recreates it (Docker cannot relabel a
    /// network, so it never carries steward's ownership labels). Without `adopt`, such a
    /// network is a conflict, left untouched and reported. Default: `false`.
    #[serde(default)]
    pub adopt: bool,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            driver: overlay(),
            attachable: false,
            internal: false,
            driver_opts: BTreeMap::new(),
            adopt: false,
        }
    }
}

fn overlay() -> String {
    "overlay".to_string()
}

/// A validated Network document and where it came from.
#[derive(Clone, Debug)]
pub struct NetworkEntry {
    pub metadata: Metadata,
    pub spec: NetworkSpec,
    pub source: steward_spec::Source,
}

impl NetworkEntry {
    pub fn name(&self) -> &str {
        self.metadata.name.value.as_str()
    }
}
