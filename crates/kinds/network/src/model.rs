//! The planner's view of a network: as desired (from a validated document) and as Swarm
//! reports it (normalized by the backend).

use std::collections::BTreeMap;

use steward_plan::model::labels;

use crate::spec::NetworkEntry;

/// The scope of every network a stack owns: it spans the swarm's nodes.
pub const SWARM_SCOPE: &str = "swarm";

/// A network as it is to be created. Compared field by field with what Swarm reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredNetwork {
    pub name: String,
    pub driver: String,
    pub attachable: bool,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    /// The document's labels; the backend adds the ownership labels when it creates it.
    pub labels: BTreeMap<String, String>,
    pub adopt: bool,
}

impl DesiredNetwork {
    pub fn from_entry(e: &NetworkEntry) -> Self {
        Self {
            name: e.name().to_string(),
            driver: e.spec.driver.clone(),
            attachable: e.spec.attachable,
            internal: e.spec.internal,
            options: e.spec.driver_opts.clone(),
            labels: e.metadata.labels.clone(),
            adopt: e.spec.adopt,
        }
    }

    /// An overlay with Docker's defaults (tests and fixtures).
    pub fn overlay(name: &str) -> Self {
        Self {
            name: name.to_string(),
            driver: "overlay".into(),
            attachable: false,
            internal: false,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            adopt: false,
        }
    }

    /// Every label the network is created with: the document's and steward's ownership labels.
    pub fn all_labels(&self, stack: &str) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        l.insert(labels::STACK.into(), stack.into());
        l
    }
}

/// A network as Swarm reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedNetwork {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// `swarm` or `local`.
    pub scope: String,
    pub attachable: bool,
    pub internal: bool,
    /// Driver options, without the ones the engine adds itself (see [`normalize_options`]).
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl ObservedNetwork {
    /// Swarm's allocator has not processed the network yet (it was just created): until then the
    /// engine reports no driver and no options for it, so those cannot be compared.
    pub fn allocating(&self) -> bool {
        self.driver.is_empty()
    }
}

/// Who a network belongs to, from its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetOwner {
    /// Created by steward for this stack.
    Us,
    /// Created by steward for another stack.
    OtherStack(String),
    /// Not steward's.
    Unmanaged,
}

impl ObservedNetwork {
    pub fn owner(&self, stack: &str) -> NetOwner {
        if self.labels.get(labels::MANAGED_BY).map(String::as_str) != Some(labels::MANAGED_BY_VALUE) {
            return NetOwner::Unmanaged;
        }
        match self.labels.get(labels::STACK) {
            Some(s) if s == stack => NetOwner::Us,
            Some(s) => NetOwner::OtherStack(s.clone()),
            None => NetOwner::Unmanaged,
        }
    }
}

/// The engine adds options of its own to what a network was created with (an overlay gets
/// `com.docker.network.driver.overlay.vxlanid_list`); those under `com.docker.network.` that
/// the spec does not set are not the spec's and are dropped before comparing.
pub fn normalize_options(
    observed: BTreeMap<String, String>,
    desired: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    observed
        .into_iter()
        .filter(|(k, _)| !k.starts_with("com.docker.network.") || desired.is_some_and(|d| d.contains_key(k)))
        .collect()
}

/// One field that differs: `field: old → new`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub observed: String,
    pub desired: String,
}

/// Absent values print as this, as in the Service plan.
pub const NONE: &str = "(none)";

/// What differs between `d` and `o`. Driver and options are not compared while the network is
/// [allocating](ObservedNetwork::allocating). Ownership labels are not compared, and an adopted
/// network's labels not at all (it never carries steward's).
pub fn diff(d: &DesiredNetwork, o: &ObservedNetwork, compare_labels: bool) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let mut field = |f: &str, old: String, new: String| {
        if old != new {
            out.push(FieldDiff {
                field: f.to_string(),
                observed: old,
                desired: new,
            });
        }
    };
    field("scope", o.scope.clone(), SWARM_SCOPE.into());
    if !o.allocating() {
        field("driver", o.driver.clone(), d.driver.clone());
    }
    field("attachable", o.attachable.to_string(), d.attachable.to_string());
    field("internal", o.internal.to_string(), d.internal.to_string());
    if !o.allocating() {
        let options = normalize_options(o.options.clone(), Some(&d.options));
        map_diff("driverOpts", &options, &d.options, &mut out);
    }
    if compare_labels {
        let observed: BTreeMap<String, String> = o
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with(steward_spec::RESERVED_LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        map_diff("labels", &observed, &d.labels, &mut out);
    }
    out
}

fn map_diff(
    prefix: &str,
    observed: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
    out: &mut Vec<FieldDiff>,
) {
    let quoted = |v: Option<&String>| v.map_or_else(|| NONE.to_string(), |v| format!("{v:?}"));
    let keys: std::collections::BTreeSet<&String> = observed.keys().chain(desired.keys()).collect();
    for k in keys {
        let (o, d) = (observed.get(k), desired.get(k));
        if o != d {
            out.push(FieldDiff {
                field: format!("{prefix}.{k}"),
                observed: quoted(o),
                desired: quoted(d),
            });
        }
    }
}
