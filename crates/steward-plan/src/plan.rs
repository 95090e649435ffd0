//! `plan(&Desired, &Observed) -> Plan`: pure, synchronous, no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use steward_core::{ObjectRef, Reason};

use crate::model::*;

/// Why a service is being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UpdateReason {
    /// The desired state changed since steward last wrote the service.
    SpecChanged,
    /// Someone changed the service outside steward; steward restores the desired state.
    DriftCorrected,
    /// An unowned service is taken over (`spec.adopt: true`).
    Adopted,
}

impl UpdateReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpecChanged => "SpecChanged",
            Self::DriftCorrected => "DriftCorrected",
            Self::Adopted => "Adopted",
        }
    }
}

/// One field that differs: old and new values already rendered (secrets redacted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: String,
    pub new: String,
}

/// What the plan does. Each action carries its exact target so the executor makes no choices.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Create {
        service: DesiredService,
    },
    Update {
        id: String,
        /// Swarm version index the plan was made against; a stale one is a conflict.
        version: u64,
        service: DesiredService,
        changes: Vec<FieldChange>,
        reason: UpdateReason,
    },
    Remove {
        id: String,
        name: String,
        version: u64,
    },
}

impl Action {
    /// The service this action writes.
    pub fn name(&self) -> &str {
        match self {
            Action::Create { service } | Action::Update { service, .. } => &service.name,
            Action::Remove { name, .. } => name,
        }
    }

    pub fn object(&self) -> ObjectRef {
        ObjectRef::service(self.name())
    }

    /// The event recorded when Swarm refuses this action.
    pub fn failure_reason(&self) -> Reason {
        match self {
            Action::Create { .. } => Reason::CreateFailed,
            Action::Update { .. } => Reason::UpdateFailed,
            Action::Remove { .. } => Reason::RemoveFailed,
        }
    }
}

/// Why something is not done now. Ends up in status and events.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason")]
pub enum Hold {
    /// A service of that name exists and steward does not own it.
    ConflictUnowned,
    /// A service of that name belongs to another steward stack.
    ConflictOtherStack { stack: String },
    /// A service of that name exists but is not a replicated service.
    ConflictNotReplicated,
    /// Owned by this stack, no longer desired, and prune is off.
    Orphaned,
    /// Swarm is still replacing tasks toward the desired spec.
    AwaitingConvergence { running: Option<u64>, desired: u64 },
    /// Swarm paused or rolled back the last update.
    UpdateFailed { state: UpdateState, message: String },
    /// The backend could not be read; nothing is decided.
    BackendUnknown { message: String },
    /// A rollout step must finish first (pre-deploy jobs, a dependency).
    WaitingOn { what: String },
    /// This revision was rolled back; it is not applied again until the desired state changes.
    RevisionRejected { cause: String },
    /// The desired mode (replicated/global) differs from the service's: Swarm cannot change
    /// it in place, and steward does not remove a running service to recreate it.
    ModeChangeRefused { from: Mode, to: Mode },
}

impl Hold {
    pub fn reason(&self) -> &'static str {
        match self {
            Hold::ConflictUnowned => "ConflictUnowned",
            Hold::ConflictOtherStack { .. } => "ConflictOtherStack",
            Hold::ConflictNotReplicated => "ConflictNotReplicated",
            Hold::Orphaned => "Orphaned",
            Hold::AwaitingConvergence { .. } => "AwaitingConvergence",
            Hold::UpdateFailed { state, .. } => match state {
                UpdateState::RollbackStarted | UpdateState::RollbackCompleted => "RolledBack",
                UpdateState::RollbackPaused => "RollbackPaused",
                _ => "UpdatePaused",
            },
            Hold::BackendUnknown { .. } => "BackendUnavailable",
            Hold::WaitingOn { .. } => "WaitingOn",
            Hold::RevisionRejected { .. } => "RevisionRejected",
            Hold::ModeChangeRefused { .. } => "ModeChangeRefused",
        }
    }

    /// The event a pass records for this hold; `None` for the waits a rollout reports itself
    /// (its own RolledBack and AnalysisInconclusive events) and for convergence in progress.
    pub fn event_reason(&self) -> Option<Reason> {
        Some(match self {
            Hold::ConflictUnowned => Reason::ConflictUnowned,
            Hold::ConflictOtherStack { .. } => Reason::ConflictOtherStack,
            Hold::ConflictNotReplicated => Reason::ConflictNotReplicated,
            Hold::ModeChangeRefused { .. } => Reason::ModeChangeRefused,
            Hold::Orphaned => Reason::Orphaned,
            Hold::UpdateFailed { state, .. } => match state {
                UpdateState::RollbackStarted | UpdateState::RollbackCompleted => Reason::RolledBack,
                UpdateState::RollbackPaused => Reason::RollbackPaused,
                _ => Reason::UpdatePaused,
            },
            Hold::BackendUnknown { .. } => Reason::BackendUnavailable,
            Hold::AwaitingConvergence { .. } | Hold::WaitingOn { .. } | Hold::RevisionRejected { .. } => return None,
        })
    }

    /// Errors block convergence; the rest are expected waits.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Hold::ConflictUnowned
                | Hold::ConflictOtherStack { .. }
                | Hold::ConflictNotReplicated
                | Hold::UpdateFailed { .. }
                | Hold::BackendUnknown { .. }
                | Hold::RevisionRejected { .. }
                | Hold::ModeChangeRefused { .. }
        )
    }

    pub fn message(&self, name: &str) -> String {
        match self {
            Hold::ConflictUnowned => format!(
                "service {name} exists and is not owned by steward; left untouched (set spec.adopt: true to take it over)"
            ),
            Hold::ConflictOtherStack { stack } => {
                format!("service {name} is owned by steward stack {stack:?}; left untouched")
            }
            Hold::ConflictNotReplicated => {
                format!("service {name} exists but is a job, not a replicated or global service; left untouched")
            }
            Hold::ModeChangeRefused { from, to } => format!(
                "service {name} is {} and the desired state says {}: Swarm cannot change a service's mode in place; remove the service (docker service rm {name}) and steward recreates it",
                from.as_str(),
                to.as_str()
            ),
            Hold::Orphaned => format!(
                "service {name} is owned by this stack but no longer desired; left running (prune is off)"
            ),
            Hold::AwaitingConvergence { running, desired } => match running {
                Some(r) => format!("{r}/{desired} tasks running"),
                None => format!("waiting for {desired} tasks"),
            },
            Hold::UpdateFailed { state, message } => format!("Swarm update {state:?}: {message}"),
            Hold::BackendUnknown { message } => format!("Swarm could not be read: {message}"),
            Hold::WaitingOn { what } => format!("waiting for {what}"),
            Hold::RevisionRejected { cause } => {
                format!("revision rolled back ({cause}); not applied again until the desired state changes")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub name: String,
    pub hold: Hold,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    pub stack: String,
    pub actions: Vec<Action>,
    /// Secrets and configs to create (before `actions`) and to remove (after).
    pub objects: Vec<crate::objects::ObjectAction>,
    pub held: Vec<Held>,
}

impl Plan {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.objects.is_empty()
    }

    pub fn errors(&self) -> impl Iterator<Item = &Held> {
        self.held.iter().filter(|h| h.hold.is_error())
    }
}

pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let mut plan = Plan {
        stack: desired.stack.clone(),
        ..Plan::default()
    };
    let (services, objects) = match observed {
        Observed::Unknown { reason } => {
            for d in &desired.services {
                plan.held.push(Held {
                    name: d.name.clone(),
                    hold: Hold::BackendUnknown {
                        message: reason.clone(),
                    },
                });
            }
            return plan;
        }
        Observed::Known { services, objects } => (services, objects),
    };
    let by_name: BTreeMap<&str, &ObservedService> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    let desired_names: BTreeSet<&str> = desired.services.iter().map(|d| d.name.as_str()).collect();

    for d in &desired.services {
        if let Some(h) = desired.gates.get(&d.name) {
            plan.hold(&d.name, h.clone());
            continue;
        }
        let Some(o) = by_name.get(d.name.as_str()) else {
            plan.actions.push(Action::Create { service: d.clone() });
            continue;
        };
        let adopting = match &o.owner {
            Owner::Us => false,
            Owner::Nobody if d.adopt => true,
            Owner::Nobody => {
                plan.hold(&d.name, Hold::ConflictUnowned);
                continue;
            }
            Owner::OtherStack(stack) => {
                plan.hold(&d.name, Hold::ConflictOtherStack { stack: stack.clone() });
                continue;
            }
        };
        if !o.replicated {
            plan.hold(&d.name, Hold::ConflictNotReplicated);
            continue;
        }
        if o.state.mode != d.state.mode {
            plan.hold(
                &d.name,
                Hold::ModeChangeRefused {
                    from: o.state.mode,
                    to: d.state.mode,
                },
            );
            continue;
        }
        let changes = diff(&o.state, &d.state, &d.secret_env, &o.secret_env);
        let labels_stale = o.spec_hash.as_deref() != Some(d.spec_hash.as_str());
        if changes.is_empty() && !labels_stale && !adopting {
            if let Some(h) = convergence_hold(o) {
                plan.hold(&d.name, h);
            }
            continue;
        }
        let reason = if adopting {
            UpdateReason::Adopted
        } else if !labels_stale {
            UpdateReason::DriftCorrected
        } else {
            UpdateReason::SpecChanged
        };
        plan.actions.push(Action::Update {
            id: o.id.clone(),
            version: o.version,
            service: d.clone(),
            changes,
            reason,
        });
    }

    for o in services {
        if o.owner != Owner::Us || desired_names.contains(o.name.as_str()) {
            continue;
        }
        if desired.prune || desired.remove.contains(&o.name) {
            plan.actions.push(Action::Remove {
                id: o.id.clone(),
                name: o.name.clone(),
                version: o.version,
            });
        } else {
            plan.hold(&o.name, Hold::Orphaned);
        }
    }
    plan.objects = crate::objects::plan_objects(desired, services, objects, &plan.actions);
    plan
}

impl Plan {
    fn hold(&mut self, name: &str, hold: Hold) {
        self.held.push(Held {
            name: name.to_string(),
            hold,
        });
    }
}

/// Tasks Swarm should run: the replica count, or for a global service one per eligible node
/// (Swarm's own count).
fn desired_tasks(o: &ObservedService) -> u64 {
    o.desired_task_count()
}

/// When the spec already matches: is Swarm done, still working, or stuck?
pub fn convergence_hold(o: &ObservedService) -> Option<Hold> {
    if let Some(u) = &o.update_status {
        match u.state {
            // The update *to* this spec failed (paused), or a rollback of it failed.
            UpdateState::Paused | UpdateState::RollbackPaused => {
                return Some(Hold::UpdateFailed {
                    state: u.state,
                    message: u.message.clone(),
                })
            }
            // Swarm swaps the previous spec back in: a spec that matches the desired state while
            // rolling back means someone else's update failed and Swarm is restoring ours.
            UpdateState::Updating | UpdateState::RollbackStarted => {
                return Some(Hold::AwaitingConvergence {
                    running: o.running_tasks,
                    desired: desired_tasks(o),
                })
            }
            UpdateState::Completed | UpdateState::RollbackCompleted => {}
        }
    }
    if o.running_tasks != Some(desired_tasks(o)) {
        return Some(Hold::AwaitingConvergence {
            running: o.running_tasks,
            desired: desired_tasks(o),
        });
    }
    None
}

const REDACTED: &str = "<redacted>";
const NONE: &str = "(none)";

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializes")
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| NONE.to_string(), ToString::to_string)
}

/// Field-by-field differences from `old` to `new`, secrets redacted. Whether a field differs
/// is decided on the raw values; rendering is for display only.
pub fn diff(
    old: &ServiceState,
    new: &ServiceState,
    secret_new: &BTreeSet<String>,
    secret_old: &BTreeSet<String>,
) -> Vec<FieldChange> {
    let mut out = Vec::new();
    if old == new {
        return out;
    }
    let mut push = |differs: bool, field: &str, render: &dyn Fn() -> (String, String)| {
        if differs {
            let (o, n) = render();
            out.push(FieldChange {
                field: field.to_string(),
                old: o,
                new: n,
            });
        }
    };
    push(old.image != new.image, "image", &|| {
        (old.image.clone(), new.image.clone())
    });
    push(old.replicas != new.replicas, "replicas", &|| {
        (old.replicas.to_string(), new.replicas.to_string())
    });
    push(old.command != new.command, "command", &|| {
        (json(&old.command), json(&new.command))
    });
    push(old.args != new.args, "args", &|| (json(&old.args), json(&new.args)));
    let keys: BTreeSet<&String> = old.env.keys().chain(new.env.keys()).collect();
    for k in keys {
        let (o, n) = (old.env.get(k), new.env.get(k));
        let secret = secret_new.contains(k) || secret_old.contains(k);
        let show = |v: Option<&String>| match v {
            None => NONE.to_string(),
            Some(_) if secret => REDACTED.to_string(),
            Some(v) => v.clone(),
        };
        push(o != n, &format!("env.{k}"), &|| {
            let (so, sn) = (show(o), show(n));
            // Two different secrets render the same; say that it changed.
            let sn = if so == sn { format!("{sn} (changed)") } else { sn };
            (so, sn)
        });
    }
    let keys: BTreeSet<&String> = old.labels.keys().chain(new.labels.keys()).collect();
    for k in keys {
        let (o, n) = (old.labels.get(k), new.labels.get(k));
        push(o != n, &format!("labels.{k}"), &|| (opt(&o), opt(&n)));
    }
    push(old.ports != new.ports, "ports", &|| {
        (render_ports(&old.ports), render_ports(&new.ports))
    });
    for (name, o, n) in [
        ("limits", &old.limits, &new.limits),
        ("reservations", &old.reservations, &new.reservations),
    ] {
        push(o.nano_cpus != n.nano_cpus, &format!("resources.{name}.cpus"), &|| {
            (opt(&o.nano_cpus.map(cpus)), opt(&n.nano_cpus.map(cpus)))
        });
        push(
            o.memory_bytes != n.memory_bytes,
            &format!("resources.{name}.memory"),
            &|| (opt(&o.memory_bytes.map(bytes)), opt(&n.memory_bytes.map(bytes))),
        );
    }
    for (name, o, n) in [
        ("update", &old.update, &new.update),
        ("rollback", &old.rollback, &new.rollback),
    ] {
        push(o.parallelism != n.parallelism, &format!("{name}.parallelism"), &|| {
            (o.parallelism.to_string(), n.parallelism.to_string())
        });
        push(o.delay_ns != n.delay_ns, &format!("{name}.delay"), &|| {
            (dur(o.delay_ns), dur(n.delay_ns))
        });
        push(
            o.failure_action != n.failure_action,
            &format!("{name}.failureAction"),
            &|| (o.failure_action.clone(), n.failure_action.clone()),
        );
        push(o.monitor_ns != n.monitor_ns, &format!("{name}.monitor"), &|| {
            (dur(o.monitor_ns), dur(n.monitor_ns))
        });
        push(
            o.max_failure_ratio != n.max_failure_ratio,
            &format!("{name}.maxFailureRatio"),
            &|| (o.max_failure_ratio.to_string(), n.max_failure_ratio.to_string()),
        );
        push(o.order != n.order, &format!("{name}.order"), &|| {
            (o.order.clone(), n.order.clone())
        });
    }
    push(old.mode != new.mode, "mode", &|| {
        (old.mode.as_str().to_string(), new.mode.as_str().to_string())
    });
    if old.task != new.task {
        for (field, o, n) in crate::task::diff_task(&old.task, &new.task) {
            out.push(FieldChange { field, old: o, new: n });
        }
    }
    out
}

/// Bytes in the manifests' own spelling (`512Mi`) when exact.
fn bytes(b: i64) -> String {
    const UNITS: [(&str, i64); 4] = [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (u, m) in UNITS {
        if b >= m && b % m == 0 {
            return format!("{}{u}", b / m);
        }
    }
    b.to_string()
}

fn cpus(nano: i64) -> f64 {
    nano as f64 / 1e9
}

fn dur(ns: i64) -> String {
    let d = std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
    if d.is_zero() {
        "0s".into()
    } else {
        humantime_like(d)
    }
}

/// `30s`, `1m30s`, `250ms`: the same spelling the manifests use.
fn humantime_like(d: std::time::Duration) -> String {
    let mut s = String::new();
    let mut secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    for (unit, len) in [("h", 3600), ("m", 60)] {
        if secs >= len {
            let _ = write!(s, "{}{unit}", secs / len);
            secs %= len;
        }
    }
    if secs > 0 {
        let _ = write!(s, "{secs}s");
    }
    for (v, unit) in [(ms, "ms"), (us, "us"), (ns, "ns")] {
        if v > 0 {
            let _ = write!(s, "{v}{unit}");
        }
    }
    s
}

fn render_ports(ports: &[PortState]) -> String {
    if ports.is_empty() {
        return "[]".into();
    }
    let items: Vec<String> = ports
        .iter()
        .map(|p| match p.published {
            Some(pp) => format!("{pp}:{}/{} ({})", p.target, p.protocol, p.mode),
            None => format!("{}/{} ({})", p.target, p.protocol, p.mode),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// What a created service will look like, as field changes from nothing.
pub fn describe_new(d: &DesiredService) -> Vec<FieldChange> {
    let mut f = vec![
        FieldChange {
            field: "image".into(),
            old: NONE.into(),
            new: d.state.image.clone(),
        },
        FieldChange {
            field: "replicas".into(),
            old: NONE.into(),
            new: d.state.replicas.to_string(),
        },
    ];
    if !d.state.ports.is_empty() {
        f.push(FieldChange {
            field: "ports".into(),
            old: NONE.into(),
            new: render_ports(&d.state.ports),
        });
    }
    if d.state.mode != Mode::Replicated {
        f.push(FieldChange {
            field: "mode".into(),
            old: NONE.into(),
            new: d.state.mode.as_str().into(),
        });
    }
    for (field, _, new) in crate::task::diff_task(&TaskState::default(), &d.state.task) {
        f.push(FieldChange {
            field,
            old: NONE.into(),
            new,
        });
    }
    for k in d.state.env.keys() {
        let v = if d.secret_env.contains(k) {
            REDACTED.to_string()
        } else {
            d.state.env[k].clone()
        };
        f.push(FieldChange {
            field: format!("env.{k}"),
            old: NONE.into(),
            new: v,
        });
    }
    f
}

impl Plan {
    /// The plan for humans: removed, changed, added, then what is held, errors last.
    pub fn display(&self) -> String {
        let mut out = String::new();
        let (mut removes, mut updates, mut creates) = (Vec::new(), Vec::new(), Vec::new());
        for a in &self.actions {
            match a {
                Action::Remove { .. } => removes.push(a),
                Action::Update { .. } => updates.push(a),
                Action::Create { .. } => creates.push(a),
            }
        }
        let errors: Vec<&Held> = self.errors().collect();
        let waits: Vec<&Held> = self.held.iter().filter(|h| !h.hold.is_error()).collect();
        let _ = writeln!(
            out,
            "Stack {}: {} to remove, {} to change, {} to add, {} waiting, {} error{}",
            self.stack,
            removes.len(),
            updates.len(),
            creates.len(),
            waits.len(),
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        for a in removes {
            let _ = writeln!(out, "- {} (pruned: no longer in the desired state)", a.object());
        }
        crate::objects::display_objects(&mut out, &self.objects);
        for a in updates {
            if let Action::Update { changes, reason, .. } = a {
                let _ = writeln!(out, "~ {} ({})", a.object(), reason.as_str());
                for c in changes {
                    let _ = writeln!(out, "    {}: {} → {}", c.field, c.old, c.new);
                }
                if changes.is_empty() {
                    let _ = writeln!(out, "    (ownership labels only)");
                }
            }
        }
        for a in creates {
            if let Action::Create { service } = a {
                let _ = writeln!(out, "+ {}", a.object());
                for c in describe_new(service) {
                    let _ = writeln!(out, "    {}: {}", c.field, c.new);
                }
            }
        }
        for h in waits {
            let _ = writeln!(
                out,
                "… {} {}: {}",
                ObjectRef::service(&h.name),
                h.hold.reason(),
                h.hold.message(&h.name)
            );
        }
        for h in errors {
            let _ = writeln!(
                out,
                "! {} {}: {}",
                ObjectRef::service(&h.name),
                h.hold.reason(),
                h.hold.message(&h.name)
            );
        }
        if self.is_empty() && self.held.is_empty() {
            let _ = writeln!(out, "In sync: nothing to do.");
        }
        out
    }

    /// Machine-readable plan (`steward plan -o json`), secrets redacted.
    pub fn to_json(&self) -> serde_json::Value {
        let actions: Vec<serde_json::Value> = self
            .actions
            .iter()
            .map(|a| match a {
                Action::Create { service } => serde_json::json!({
                    "action": "Create", "object": a.object(), "changes": describe_new(service),
                }),
                Action::Update {
                    changes,
                    reason,
                    version,
                    ..
                } => serde_json::json!({
                    "action": "Update", "object": a.object(), "reason": reason.as_str(),
                    "version": version, "changes": changes,
                }),
                Action::Remove { version, .. } => serde_json::json!({
                    "action": "Remove", "object": a.object(), "reason": "Pruned", "version": version,
                }),
            })
            .collect();
        let held: Vec<serde_json::Value> = self
            .held
            .iter()
            .map(|h| {
                serde_json::json!({
                    "object": ObjectRef::service(&h.name), "reason": h.hold.reason(),
                    "message": h.hold.message(&h.name), "error": h.hold.is_error(),
                })
            })
            .collect();
        // In sync means nothing to write *and* nothing unknown or blocked.
        let in_sync = self.is_empty() && self.errors().next().is_none();
        serde_json::json!({
            "stack": self.stack, "inSync": in_sync, "actions": actions,
            "objects": crate::objects::objects_json(&self.objects), "held": held,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_reported_as_an_event_keeps_its_condition_reason() {
        let holds = [
            Hold::ConflictUnowned,
            Hold::ConflictOtherStack { stack: "other".into() },
            Hold::ConflictNotReplicated,
            Hold::Orphaned,
            Hold::AwaitingConvergence {
                running: None,
                desired: 1,
            },
            Hold::BackendUnknown { message: "down".into() },
            Hold::WaitingOn { what: "jobs".into() },
            Hold::RevisionRejected { cause: "boom".into() },
        ]
        .into_iter()
        .chain(
            [
                UpdateState::Updating,
                UpdateState::Paused,
                UpdateState::RollbackStarted,
                UpdateState::RollbackPaused,
                UpdateState::RollbackCompleted,
            ]
            .map(|state| Hold::UpdateFailed {
                state,
                message: String::new(),
            }),
        );
        for h in holds {
            match h.event_reason() {
                Some(r) => assert_eq!(r.as_str(), h.reason(), "{h:?}"),
                None => assert!(
                    matches!(
                        h,
                        Hold::AwaitingConvergence { .. } | Hold::WaitingOn { .. } | Hold::RevisionRejected { .. }
                    ),
                    "{h:?}"
                ),
            }
        }
    }
}
