//! The Network planner: `plan(&Input) -> Plan`. Pure: what Swarm reports is an input, and every
//! network gets exactly one [`Decision`]. The executor carries out [`Plan::actions`] in order
//! (removals, recreations, creations), before the Stack's services are written: services refer
//! to their networks by name.
//!
//! Rules, in the order they are applied:
//! - Swarm could not be read: nothing is created or removed ([`Hold::BackendUnavailable`]).
//! - A desired network that is missing is created.
//! - One of the same name that steward does not own is a conflict, left untouched, unless the
//!   document says `adopt: true`; another stack's is always a conflict.
//! - One that differs from its document cannot be changed in place (Docker networks are
//!   immutable): it is recreated when no service is attached to it, else held
//!   ([`Hold::RecreateRequired`]). An adopted one is never recreated.
//! - An owned network no longer desired is removed only with `prune` and when no service at all
//!   (not only this stack's) is attached to it; else it is reported [`Hold::Orphaned`].
//! - Whenever attachments decide and could not be read, nothing is removed
//!   ([`Hold::AttachmentsUnknown`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use steward_core::status::ConditionStatus;
use steward_core::{Kind, ObjectRef, Observation};

use crate::model::{diff, DesiredNetwork, FieldDiff, NetOwner, ObservedNetwork};

/// Everything the planner looks at.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub stack: &'a str,
    pub prune: bool,
    /// Sorted by name.
    pub desired: &'a [DesiredNetwork],
    /// Every network of Swarm whose name is desired or that this stack owns.
    pub observed: &'a Observation<Vec<ObservedNetwork>>,
    /// Network name → names of the services (any service in Swarm) attached to it. Only
    /// consulted for a network that would be removed or recreated; the controller reads it
    /// only when [`Plan::needs_attachments`] says so.
    pub attached: &'a Observation<BTreeMap<String, Vec<String>>>,
}

/// What becomes of one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Exists as desired (an owned network).
    InSync {
        id: String,
    },
    /// An existing network steward did not create, taken as this stack's (`adopt: true`):
    /// read and reported, never removed or recreated.
    Adopted {
        id: String,
    },
    Create {
        network: DesiredNetwork,
    },
    /// Differs from its document and no service is attached: removed, then created.
    Recreate {
        id: String,
        network: DesiredNetwork,
        diffs: Vec<FieldDiff>,
    },
    /// Owned, no longer desired, `prune` on, nothing attached.
    Remove {
        id: String,
    },
    Held(Hold),
}

/// Why nothing is done about a network now. Each is reported in status and as an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Swarm could not be read.
    BackendUnavailable { reason: String },
    /// The network differs from its document; Docker cannot change it in place and it is in use
    /// (or adopted, so never recreated by steward).
    RecreateRequired {
        diffs: Vec<FieldDiff>,
        attached: Vec<String>,
        adopted: bool,
    },
    /// A network of that name exists that steward does not own.
    ConflictUnowned,
    /// A network of that name belongs to another stack.
    ConflictOtherStack { stack: String },
    /// Just created: Swarm has not allocated it yet, so its driver and options are not known.
    /// Looked at again on the next pass.
    Allocating,
    /// Owned by this stack, no longer desired, and kept: `prune` is off, or services use it.
    Orphaned { attached: Vec<String> },
    /// Removal or recreation depends on which services use the network, and that could not be
    /// read.
    AttachmentsUnknown { reason: String },
}

/// Event reasons of the Network kind (PascalCase, as Kubernetes').
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Created,
    Recreated,
    Pruned,
    CreateFailed,
    RemoveFailed,
    BackendUnavailable,
    RecreateRequired,
    ConflictUnowned,
    ConflictOtherStack,
    Orphaned,
    AttachmentsUnknown,
    Allocating,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Created => "Created",
            Reason::Recreated => "Recreated",
            Reason::Pruned => "Pruned",
            Reason::CreateFailed => "CreateFailed",
            Reason::RemoveFailed => "RemoveFailed",
            Reason::BackendUnavailable => "BackendUnavailable",
            Reason::RecreateRequired => "RecreateRequired",
            Reason::ConflictUnowned => "ConflictUnowned",
            Reason::ConflictOtherStack => "ConflictOtherStack",
            Reason::Orphaned => "Orphaned",
            Reason::AttachmentsUnknown => "AttachmentsUnknown",
            Reason::Allocating => "Allocating",
        }
    }

    /// Warning events are the ones a person should look at.
    pub fn is_warning(self) -> bool {
        !matches!(
            self,
            Reason::Created | Reason::Recreated | Reason::Pruned | Reason::Orphaned | Reason::Allocating
        )
    }
}

impl Hold {
    pub fn reason(&self) -> Reason {
        match self {
            Hold::BackendUnavailable { .. } => Reason::BackendUnavailable,
            Hold::RecreateRequired { .. } => Reason::RecreateRequired,
            Hold::ConflictUnowned => Reason::ConflictUnowned,
            Hold::ConflictOtherStack { .. } => Reason::ConflictOtherStack,
            Hold::Orphaned { .. } => Reason::Orphaned,
            Hold::AttachmentsUnknown { .. } => Reason::AttachmentsUnknown,
            Hold::Allocating => Reason::Allocating,
        }
    }

    /// Will not clear by waiting (or, for an unreadable Swarm, means nothing could be
    /// planned): printed last, with `!`; a person has to act.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Hold::BackendUnavailable { .. }
                | Hold::RecreateRequired { .. }
                | Hold::ConflictUnowned
                | Hold::ConflictOtherStack { .. }
        )
    }

    /// One line for events and status, naming the network.
    pub fn message(&self, name: &str) -> String {
        match self {
            Hold::BackendUnavailable { reason } => {
                format!("Swarm could not be read: {reason}; network {name} left as it is")
            }
            Hold::RecreateRequired {
                diffs,
                attached,
                adopted,
            } => {
                let fields: Vec<&str> = diffs.iter().map(|d| d.field.as_str()).collect();
                let why = if *adopted {
                    "it is adopted, so steward never recreates it".to_string()
                } else {
                    format!("services use it ({})", attached.join(", "))
                };
                format!(
                    "network {name} differs from its document ({}) and Docker cannot change a network in place; \
                     left as it is because {why}: remove it by hand (docker network rm {name}) once nothing uses it",
                    fields.join(", ")
                )
            }
            Hold::ConflictUnowned => format!(
                "network {name} exists and is not owned by steward; left untouched (set spec.adopt: true to use it as this stack's)"
            ),
            Hold::ConflictOtherStack { stack } => {
                format!("network {name} belongs to stack {stack}; left untouched")
            }
            Hold::Orphaned { attached } if attached.is_empty() => format!(
                "network {name} is owned by this stack but no longer desired; left in place (prune is off)"
            ),
            Hold::Orphaned { attached } => format!(
                "network {name} is owned by this stack but no longer desired; left in place: services use it ({})",
                attached.join(", ")
            ),
            Hold::Allocating => format!("network {name} was just created and Swarm has not allocated it yet"),
            Hold::AttachmentsUnknown { reason } => format!(
                "which services use network {name} could not be read ({reason}); nothing removed"
            ),
        }
    }
}

/// One network and its decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// False for an owned network that is no longer desired.
    pub desired: bool,
    pub decision: Decision,
}

impl Entry {
    pub fn object(&self) -> ObjectRef {
        ObjectRef::new(Kind::Network, &self.name)
    }

    /// Ready, Progressing, Degraded: (status, reason, message) each.
    pub fn conditions(&self) -> [(ConditionStatus, &'static str, String); 3] {
        use ConditionStatus::{False, True, Unknown};
        let n = &self.name;
        let ok = |reason, msg: String| {
            [
                (True, reason, msg),
                (False, reason, String::new()),
                (False, reason, String::new()),
            ]
        };
        match &self.decision {
            Decision::InSync { .. } => ok("InSync", format!("network {n} exists as desired")),
            Decision::Adopted { .. } => ok(
                "Adopted",
                format!("network {n} exists (adopted: not created by steward)"),
            ),
            Decision::Create { .. } => [
                (False, "Creating", format!("network {n} is to be created")),
                (True, "Creating", format!("network {n} is to be created")),
                (False, "Creating", String::new()),
            ],
            Decision::Recreate { .. } => [
                (False, "Recreating", format!("network {n} is to be recreated")),
                (True, "Recreating", format!("network {n} is to be recreated")),
                (False, "Recreating", String::new()),
            ],
            Decision::Remove { .. } => [
                (False, "Pruning", format!("network {n} is to be removed")),
                (True, "Pruning", format!("network {n} is to be removed")),
                (False, "Pruning", String::new()),
            ],
            Decision::Held(h) => {
                let r = h.reason().as_str();
                let m = h.message(n);
                match h {
                    Hold::BackendUnavailable { .. } | Hold::AttachmentsUnknown { .. } => {
                        [(Unknown, r, m.clone()), (Unknown, r, m.clone()), (Unknown, r, m)]
                    }
                    // It exists and works; it is just not what the document says.
                    Hold::RecreateRequired { .. } => [(True, r, m.clone()), (False, r, String::new()), (True, r, m)],
                    Hold::Orphaned { .. } => [(False, r, m.clone()), (False, r, String::new()), (False, r, m)],
                    Hold::Allocating => [(False, r, m.clone()), (True, r, m), (False, r, String::new())],
                    Hold::ConflictUnowned | Hold::ConflictOtherStack { .. } => {
                        [(False, r, m.clone()), (False, r, String::new()), (True, r, m)]
                    }
                }
            }
        }
    }
}

/// A write to Swarm, fully specified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Create {
        network: DesiredNetwork,
    },
    /// Remove `id`, then create `network` under the same name.
    Recreate {
        id: String,
        network: DesiredNetwork,
    },
    Remove {
        id: String,
        name: String,
    },
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Create { network } | Action::Recreate { network, .. } => &network.name,
            Action::Remove { name, .. } => name,
        }
    }
    pub fn object(&self) -> ObjectRef {
        ObjectRef::new(Kind::Network, self.name())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub stack: String,
    /// Why Swarm could not be read, when it could not: nothing is planned then, and owned
    /// networks no longer desired are not known.
    pub unknown: Option<String>,
    /// Desired networks and owned ones no longer desired, sorted by name.
    pub entries: Vec<Entry>,
}

impl Plan {
    /// The writes, in the order they are to be carried out: removals, recreations, creations.
    pub fn actions(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for e in &self.entries {
            if let Decision::Remove { id } = &e.decision {
                out.push(Action::Remove {
                    id: id.clone(),
                    name: e.name.clone(),
                });
            }
        }
        for e in &self.entries {
            if let Decision::Recreate { id, network, .. } = &e.decision {
                out.push(Action::Recreate {
                    id: id.clone(),
                    network: network.clone(),
                });
            }
        }
        for e in &self.entries {
            if let Decision::Create { network } = &e.decision {
                out.push(Action::Create {
                    network: network.clone(),
                });
            }
        }
        out
    }

    pub fn holds(&self) -> impl Iterator<Item = (&str, &Hold)> {
        self.entries.iter().filter_map(|e| match &e.decision {
            Decision::Held(h) => Some((e.name.as_str(), h)),
            _ => None,
        })
    }

    /// Errors that will not clear by waiting.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &Hold)> {
        self.holds().filter(|(_, h)| h.is_error())
    }

    /// Machine-readable (`steward plan -o json`): the actions with their objects, then holds.
    pub fn to_json(&self) -> serde_json::Value {
        let actions: Vec<serde_json::Value> = self
            .actions()
            .iter()
            .map(|a| {
                let action = match a {
                    Action::Create { .. } => "Create",
                    Action::Recreate { .. } => "Recreate",
                    Action::Remove { .. } => "Remove",
                };
                serde_json::json!({ "action": action, "object": a.object() })
            })
            .collect();
        let held: Vec<serde_json::Value> = self
            .holds()
            .map(|(name, h)| {
                serde_json::json!({
                    "object": ObjectRef::new(Kind::Network, name),
                    "reason": h.reason().as_str(),
                    "message": h.message(name),
                    "error": h.is_error(),
                })
            })
            .collect();
        serde_json::json!({ "actions": actions, "held": held })
    }

    /// Some decision waits on which services use a network: read them and plan again.
    pub fn needs_attachments(&self) -> bool {
        self.holds().any(|(_, h)| matches!(h, Hold::AttachmentsUnknown { .. }))
    }

    /// The plan for humans: removed, recreated, added, then what is held, errors last. Empty
    /// when the stack has no networks at all.
    pub fn display(&self) -> String {
        let mut out = String::new();
        if self.entries.is_empty() {
            return out;
        }
        let count = |f: fn(&Decision) -> bool| self.entries.iter().filter(|e| f(&e.decision)).count();
        let removes = count(|d| matches!(d, Decision::Remove { .. }));
        let recreates = count(|d| matches!(d, Decision::Recreate { .. }));
        let creates = count(|d| matches!(d, Decision::Create { .. }));
        let waits: Vec<(&str, &Hold)> = self.holds().filter(|(_, h)| !h.is_error()).collect();
        let errors: Vec<(&str, &Hold)> = self.errors().collect();
        let _ = writeln!(
            out,
            "Networks of stack {}: {removes} to remove, {recreates} to recreate, {creates} to add, {} waiting, {} error{}",
            self.stack,
            waits.len(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        for e in &self.entries {
            if let Decision::Remove { .. } = e.decision {
                let _ = writeln!(
                    out,
                    "- {} (pruned: owned, no longer desired, no service attached)",
                    e.object()
                );
            }
        }
        for e in &self.entries {
            if let Decision::Recreate { diffs, .. } = &e.decision {
                let _ = writeln!(out, "~ {} (recreated: no service attached)", e.object());
                write_diffs(&mut out, diffs);
            }
        }
        for e in &self.entries {
            if let Decision::Create { network } = &e.decision {
                let _ = writeln!(out, "+ {}", e.object());
                let _ = writeln!(out, "    driver: {}", network.driver);
                if network.attachable {
                    let _ = writeln!(out, "    attachable: true");
                }
                if network.internal {
                    let _ = writeln!(out, "    internal: true");
                }
                for (k, v) in &network.options {
                    let _ = writeln!(out, "    driverOpts.{k}: {v:?}");
                }
                for (k, v) in &network.labels {
                    let _ = writeln!(out, "    labels.{k}: {v:?}");
                }
            }
        }
        for (sign, holds) in [("…", &waits), ("!", &errors)] {
            for (name, h) in holds {
                let _ = writeln!(
                    out,
                    "{sign} {} {}: {}",
                    ObjectRef::new(Kind::Network, *name),
                    h.reason().as_str(),
                    h.message(name)
                );
                if let Hold::RecreateRequired { diffs, .. } = h {
                    write_diffs(&mut out, diffs);
                }
            }
        }
        if removes + recreates + creates == 0 && waits.is_empty() && errors.is_empty() {
            let _ = writeln!(out, "In sync: nothing to do.");
        }
        out
    }
}

fn write_diffs(out: &mut String, diffs: &[FieldDiff]) {
    for d in diffs {
        let _ = writeln!(out, "    {}: {} → {}", d.field, d.observed, d.desired);
    }
}

/// Plans every network of the stack.
pub fn plan(input: &Input) -> Plan {
    let stack = input.stack.to_string();
    let observed = match input.observed {
        Observation::Known(o) => o,
        Observation::Unknown { reason } => {
            return Plan {
                stack,
                unknown: Some(reason.clone()),
                entries: input
                    .desired
                    .iter()
                    .map(|d| Entry {
                        name: d.name.clone(),
                        desired: true,
                        decision: Decision::Held(Hold::BackendUnavailable { reason: reason.clone() }),
                    })
                    .collect(),
            }
        }
    };
    // Names are unique among swarm-scoped networks; a node-local one may share a name, and
    // only the swarm-scoped one (or, lacking it, the first) is considered.
    let mut by_name: BTreeMap<&str, &ObservedNetwork> = BTreeMap::new();
    for o in observed {
        let keep = match by_name.get(o.name.as_str()) {
            None => true,
            Some(prev) => prev.scope != crate::model::SWARM_SCOPE && o.scope == crate::model::SWARM_SCOPE,
        };
        if keep {
            by_name.insert(&o.name, o);
        }
    }
    let attached = |name: &str| -> Result<Vec<String>, Hold> {
        match input.attached {
            Observation::Known(m) => Ok(m.get(name).cloned().unwrap_or_default()),
            Observation::Unknown { reason } => Err(Hold::AttachmentsUnknown { reason: reason.clone() }),
        }
    };
    let mut entries = Vec::new();
    for d in input.desired {
        let decision = match by_name.get(d.name.as_str()) {
            None => Decision::Create { network: d.clone() },
            Some(o) => match o.owner(input.stack) {
                NetOwner::OtherStack(s) => Decision::Held(Hold::ConflictOtherStack { stack: s }),
                NetOwner::Unmanaged if !d.adopt => Decision::Held(Hold::ConflictUnowned),
                NetOwner::Unmanaged => {
                    let diffs = diff(d, o, false);
                    if diffs.is_empty() && o.allocating() {
                        Decision::Held(Hold::Allocating)
                    } else if diffs.is_empty() {
                        Decision::Adopted { id: o.id.clone() }
                    } else {
                        Decision::Held(Hold::RecreateRequired {
                            diffs,
                            attached: Vec::new(),
                            adopted: true,
                        })
                    }
                }
                NetOwner::Us => {
                    let diffs = diff(d, o, true);
                    if diffs.is_empty() && o.allocating() {
                        Decision::Held(Hold::Allocating)
                    } else if diffs.is_empty() {
                        Decision::InSync { id: o.id.clone() }
                    } else {
                        match attached(&d.name) {
                            Err(h) => Decision::Held(h),
                            Ok(a) if a.is_empty() => Decision::Recreate {
                                id: o.id.clone(),
                                network: d.clone(),
                                diffs,
                            },
                            Ok(a) => Decision::Held(Hold::RecreateRequired {
                                diffs,
                                attached: a,
                                adopted: false,
                            }),
                        }
                    }
                }
            },
        };
        entries.push(Entry {
            name: d.name.clone(),
            desired: true,
            decision,
        });
    }
    for o in by_name.values() {
        if o.owner(input.stack) != NetOwner::Us || input.desired.iter().any(|d| d.name == o.name) {
            continue;
        }
        let decision = if !input.prune {
            Decision::Held(Hold::Orphaned { attached: Vec::new() })
        } else {
            match attached(&o.name) {
                Err(h) => Decision::Held(h),
                Ok(a) if a.is_empty() => Decision::Remove { id: o.id.clone() },
                Ok(a) => Decision::Held(Hold::Orphaned { attached: a }),
            }
        };
        entries.push(Entry {
            name: o.name.clone(),
            desired: false,
            decision,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Plan {
        stack,
        unknown: None,
        entries,
    }
}
