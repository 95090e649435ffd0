//! Swarm secrets and configs steward owns: created (by versioned name) before the service that
//! mounts them is written, removed once nothing refers to them — no desired service, no service
//! in Swarm, no revision still in history (a rollback returns to those).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use steward_core::{Kind, ObjectRef};

use crate::model::*;
use crate::plan::Action;

/// One write of a secret or config. `Debug` never prints the content.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectAction {
    Create { name: String, data: ObjectData },
    Remove { kind: ObjectKind, id: String, name: String },
}

impl ObjectAction {
    pub fn object(&self) -> ObjectRef {
        let (kind, name) = match self {
            ObjectAction::Create { name, data } => (data.kind, name),
            ObjectAction::Remove { kind, name, .. } => (*kind, name),
        };
        ObjectRef::new(object_kind(kind), name.clone())
    }
}

pub fn object_kind(k: ObjectKind) -> Kind {
    match k {
        ObjectKind::Secret => Kind::Secret,
        ObjectKind::Config => Kind::Config,
    }
}

/// Creations for the services `actions` write, then removals of what nothing refers to.
pub fn plan_objects(
    desired: &Desired,
    services: &[ObservedService],
    observed: &[ObservedObject],
    actions: &[Action],
) -> Vec<ObjectAction> {
    let existing: BTreeSet<&str> = observed.iter().map(|o| o.name.as_str()).collect();
    let mut out = Vec::new();
    let mut queued = BTreeSet::new();
    for a in actions {
        let (Action::Create { service } | Action::Update { service, .. }) = a else {
            continue;
        };
        for name in service.state.task.object_names() {
            if existing.contains(name) || !queued.insert(name.to_string()) {
                continue;
            }
            // External objects are not in `objects`: Swarm resolves them by name.
            if let Some(data) = service.objects.get(name) {
                out.push(ObjectAction::Create {
                    name: name.to_string(),
                    data: data.clone(),
                });
            }
        }
    }
    let referenced: BTreeSet<&str> = desired
        .services
        .iter()
        .flat_map(|d| d.state.task.object_names())
        .chain(services.iter().flat_map(|s| s.state.task.object_names()))
        .chain(desired.retained_objects.iter().map(String::as_str))
        .collect();
    for o in observed {
        if !referenced.contains(o.name.as_str()) {
            out.push(ObjectAction::Remove {
                kind: o.kind,
                id: o.id.clone(),
                name: o.name.clone(),
            });
        }
    }
    out
}

/// Lines for `steward plan`: `+ Secret/web-DB_PASSWORD-1a2b3c4d (for Service/web)`.
pub fn display_objects(out: &mut String, actions: &[ObjectAction]) {
    for a in actions {
        match a {
            ObjectAction::Remove { .. } => {
                let _ = writeln!(out, "- {} (no service or revision in history uses it)", a.object());
            }
            ObjectAction::Create { data, .. } => {
                let _ = writeln!(out, "+ {} (for {})", a.object(), ObjectRef::service(&data.service));
            }
        }
    }
}

pub fn objects_json(actions: &[ObjectAction]) -> Vec<serde_json::Value> {
    actions
        .iter()
        .map(|a| match a {
            ObjectAction::Create { data, .. } => serde_json::json!({
                "action": "Create", "object": a.object(), "for": ObjectRef::service(&data.service),
            }),
            ObjectAction::Remove { .. } => serde_json::json!({
                "action": "Remove", "object": a.object(), "reason": "Unused",
            }),
        })
        .collect()
}
