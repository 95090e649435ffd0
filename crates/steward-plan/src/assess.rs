//! The status a plan implies: Ready / Progressing / Degraded per resource. Pure.

use time::OffsetDateTime;

use crate::model::{Desired, Observed, ObservedService, Owner};
use crate::plan::{convergence_hold, Action, Hold, Plan};
use crate::status::{Condition, ConditionStatus as S, ConditionType as T, ResourceStatus};

struct Verdict {
    ready: (S, String, String),
    progressing: (S, String, String),
    degraded: (S, String, String),
}

fn v(ready: S, progressing: S, degraded: S, reason: &str, message: String) -> Verdict {
    let ok = |s: S, yes: &str| {
        if s == S::False {
            yes.to_string()
        } else {
            reason.to_string()
        }
    };
    Verdict {
        ready: (
            ready,
            if ready == S::True {
                "Converged".into()
            } else {
                reason.into()
            },
            message.clone(),
        ),
        progressing: (progressing, ok(progressing, "Converged"), message.clone()),
        degraded: (degraded, ok(degraded, "AsExpected"), message),
    }
}

fn hold_verdict(hold: &Hold, name: &str) -> Verdict {
    let msg = hold.message(name);
    match hold {
        Hold::BackendUnknown { .. } => v(S::Unknown, S::Unknown, S::Unknown, hold.reason(), msg),
        Hold::AwaitingConvergence { .. } => v(S::False, S::True, S::False, hold.reason(), msg),
        Hold::Orphaned => v(S::False, S::False, S::True, hold.reason(), msg),
        _ => v(S::False, S::False, S::True, hold.reason(), msg),
    }
}

pub fn assess(desired: &Desired, observed: &Observed, plan: &Plan, now: OffsetDateTime) -> Vec<ResourceStatus> {
    let services: &[ObservedService] = match observed {
        Observed::Known { services, .. } => services,
        Observed::Unknown { .. } => &[],
    };
    let find = |name: &str| services.iter().find(|s| s.name == name);
    let mut out = Vec::new();
    let mut names: Vec<&str> = desired.services.iter().map(|d| d.name.as_str()).collect();
    for h in &plan.held {
        if matches!(h.hold, Hold::Orphaned) {
            names.push(&h.name);
        }
    }
    for name in names {
        let d = desired.services.iter().find(|d| d.name == name);
        let o = find(name);
        let action = plan.actions.iter().find(|a| a.name() == name);
        let held = plan.held.iter().find(|h| h.name == name);
        let verdict = match (action, held) {
            (Some(Action::Create { .. }), _) => v(
                S::False,
                S::True,
                S::False,
                "Creating",
                format!("creating service {name}"),
            ),
            (Some(Action::Update { reason, changes, .. }), _) => {
                let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
                let what = if fields.is_empty() {
                    "ownership labels".to_string()
                } else {
                    fields.join(", ")
                };
                v(S::False, S::True, S::False, reason.as_str(), format!("updating {what}"))
            }
            (Some(Action::Remove { .. }), _) => v(
                S::False,
                S::True,
                S::False,
                "Pruning",
                format!("removing service {name}"),
            ),
            // The last good version runs: it can be Ready while the revision is Degraded.
            (None, Some(h)) if matches!(h.hold, Hold::RevisionRejected { .. }) => {
                let converged =
                    o.is_some_and(|o| convergence_hold(o).is_none_or(|c| matches!(c, Hold::UpdateFailed { .. })));
                let msg = h.hold.message(name);
                let mut verdict = v(S::False, S::False, S::True, h.hold.reason(), msg.clone());
                if converged {
                    verdict.ready = (S::True, "Converged".into(), msg);
                }
                verdict
            }
            (None, Some(h)) => hold_verdict(&h.hold, name),
            (None, None) => {
                let msg = match o {
                    Some(o) => format!(
                        "{}/{} tasks running {}",
                        o.running_tasks.unwrap_or(0),
                        o.desired_task_count(),
                        o.state.image
                    ),
                    None => String::new(),
                };
                match o.and_then(convergence_hold) {
                    Some(h) => hold_verdict(&h, name),
                    None => v(S::True, S::False, S::False, "Converged", msg),
                }
            }
        };
        let known = matches!(observed, Observed::Known { .. });
        let owned_obs = o.filter(|o| o.owner == Owner::Us || d.is_some_and(|d| d.adopt));
        let cond = |t: T, (status, reason, message): (S, String, String)| Condition {
            type_: t,
            status,
            reason,
            message,
            last_transition_time: now,
            observed_generation: desired.generation,
        };
        out.push(ResourceStatus {
            kind: "Service".into(),
            name: name.to_string(),
            conditions: vec![
                cond(T::Ready, verdict.ready),
                cond(T::Progressing, verdict.progressing),
                cond(T::Degraded, verdict.degraded),
            ],
            desired_replicas: d.map(|d| d.state.replicas).or(o.map(|o| o.state.replicas)),
            running_replicas: if known {
                Some(owned_obs.and_then(|o| o.running_tasks).unwrap_or(0))
            } else {
                None
            },
            image: owned_obs.map(|o| o.state.image.clone()),
            observed_generation: desired.generation,
            last_reconcile: now,
            applied_revision: None,
            attempted_revision: None,
            details: None,
        });
    }
    out
}
