//! `kind: Volume` — the document and its defaults.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use steward_spec::Metadata;

/// `kind: Volume` — the driver and options of a named volume. Every Service mount of type
/// `volume` whose `source` is this name creates the volume with them (on each node, when a task
/// first mounts it); the document's labels become the volume's labels. A mount whose source
/// names no Volume document gets Docker's default local volume.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Volume")]
pub struct VolumeDocument {
    /// Always `steward.io/v1alpha1`.
    pub api_version: String,
    /// Always `Volume`.
    pub kind: String,
    pub metadata: Metadata,
    /// Default: Docker's `local` driver without options.
    #[serde(default)]
    pub spec: VolumeSpec,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Volume driver. Default: `local`.
    #[serde(default = "local")]
    pub driver: String,
    /// Driver options. For `local`, the keys of `mount(8)`: `type` (e.g. `nfs`), `o` (mount
    /// options, e.g. `addr=10.0.0.1,rw`) and `device` (e.g. `:/media`). Default: none.
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            driver: local(),
            driver_opts: BTreeMap::new(),
        }
    }
}

fn local() -> String {
    "local".to_string()
}

/// A validated Volume document and where it came from.
#[derive(Clone, Debug)]
pub struct VolumeEntry {
    pub metadata: Metadata,
    pub spec: VolumeSpec,
    pub source: steward_spec::Source,
}

impl VolumeEntry {
    pub fn name(&self) -> &str {
        self.metadata.name.value.as_str()
    }
}
