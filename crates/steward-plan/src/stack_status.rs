//! The statuses a pass reports: each service's ([`service_statuses`]) and the Stack's as a
//! whole ([`stack_status`]). Pure: the controller only writes what these return.

use std::collections::{BTreeMap, BTreeSet};

use steward_core::{ObjectRef, Reason};
use time::OffsetDateTime;

use crate::assess::assess;
use crate::event::Event;
use crate::model::{Desired, Observed};
use crate::plan::Plan;
use crate::rollout::{Phase, Rollout, SvcPhase};
use crate::status::{Condition, ConditionStatus, ConditionType, ResourceStatus};

/// Everything a pass's statuses are computed from.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// The effective desired state (what the plan was made for).
    pub desired: &'a Desired,
    pub observed: &'a Observed,
    pub plan: &'a Plan,
    pub now: OffsetDateTime,
    /// Why the newest desired state was refused, when it was (the last valid one is in force).
    pub invalid: Option<&'a str>,
    pub active: Option<&'a Rollout>,
    /// Tasks on the new version per service, (updated, total), while Swarm replaces them.
    pub progress: &'a BTreeMap<String, (u64, u64)>,
    /// Source revision of the desired state in force, and the newest one tried.
    pub applied: Option<&'a str>,
    pub attempted: Option<&'a str>,
}

/// Each service's status: the plan's assessment, the rollout's phase on top, and the source
/// revisions.
pub fn service_statuses(input: &StatusInput<'_>) -> Vec<ResourceStatus> {
    let mut statuses = assess(input.desired, input.observed, input.plan, input.now);
    if let Some(r) = input.active {
        overlay_rollout(&mut statuses, r, input.progress);
    }
    for st in statuses.iter_mut() {
        st.applied_revision = input.applied.map(str::to_string);
        st.attempted_revision = input.attempted.map(str::to_string);
    }
    statuses
}

/// Rollout phase, progress and cause on each service's conditions.
pub fn overlay_rollout(statuses: &mut [ResourceStatus], r: &Rollout, progress: &BTreeMap<String, (u64, u64)>) {
    for st in statuses.iter_mut() {
        let Some(sr) = r.service(&st.name) else { continue };
        let set =
            |st: &mut ResourceStatus, t: ConditionType, status: ConditionStatus, reason: &str, message: String| {
                if let Some(c) = st.conditions.iter_mut().find(|c| c.type_ == t) {
                    c.status = status;
                    c.reason = reason.to_string();
                    c.message = message;
                }
            };
        match r.phase {
            Phase::RolledBack => set(
                st,
                ConditionType::Degraded,
                ConditionStatus::True,
                "RolledBack",
                format!(
                    "generation {} rolled back: {}",
                    r.generation,
                    r.cause.clone().unwrap_or_default()
                ),
            ),
            Phase::Paused => set(
                st,
                ConditionType::Degraded,
                ConditionStatus::True,
                "AnalysisInconclusive",
                r.cause.clone().unwrap_or_default(),
            ),
            Phase::Complete => {}
            phase => {
                let detail = match sr.phase {
                    SvcPhase::Verifying => format!(
                        "verifying {}: {} health probes ({} ok in a row), {} analysis measurements",
                        sr.to_image, sr.health.probes, sr.health.ok_streak, sr.analysis.measurements
                    ),
                    SvcPhase::Updating => match progress.get(&sr.name) {
                        Some((updated, total)) => {
                            format!("updating to {}: {updated}/{total} tasks updated", sr.to_image)
                        }
                        None => format!("updating to {}", sr.to_image),
                    },
                    other => format!("{other:?} {}", sr.to_image),
                };
                let (done, total) = r.progress();
                set(
                    st,
                    ConditionType::Progressing,
                    ConditionStatus::True,
                    phase.as_str(),
                    format!("generation {}: {detail} ({done}/{total} services done)", r.generation),
                );
            }
        }
    }
}

fn is_true(s: &ResourceStatus, t: ConditionType) -> bool {
    s.condition(t).is_some_and(|c| c.status == ConditionStatus::True)
}

/// The `Converged` event of a service that became Ready since its stored status.
pub fn became_ready(before: Option<&ResourceStatus>, now: &ResourceStatus) -> Option<Event> {
    let was_ready = before.is_some_and(|b| is_true(b, ConditionType::Ready));
    if was_ready || !is_true(now, ConditionType::Ready) {
        return None;
    }
    let message = now
        .condition(ConditionType::Ready)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    // Only service statuses are assessed per object; the Stack's own status raises no event.
    Some(Event::new(Reason::Converged, ObjectRef::service(&now.name), message))
}

/// Stored statuses (kind, name) that this pass no longer reports: services that left the
/// desired state and Swarm, and Stacks of another name. The Stack's own status is kept, and so
/// is every other kind's (a Schedule's status is its own reconciler's to write and forget).
pub fn forgotten(stored: &[ResourceStatus], reported: &[ResourceStatus], stack: &str) -> Vec<(String, String)> {
    let keep: BTreeSet<(&str, &str)> = reported
        .iter()
        .map(|s| (s.kind.as_str(), s.name.as_str()))
        .chain(std::iter::once(("Stack", stack)))
        .collect();
    stored
        .iter()
        .filter(|s| matches!(s.kind.as_str(), "Service" | "Stack"))
        .filter(|s| !keep.contains(&(s.kind.as_str(), s.name.as_str())))
        .map(|s| (s.kind.clone(), s.name.clone()))
        .collect()
}

/// The Stack as a whole: Ready when every service is, Progressing while anything is planned,
/// not ready or rolling out, Degraded when a service is or the newest desired state was refused;
/// Unknown for all three when Swarm could not be read.
pub fn stack_status(input: &StatusInput<'_>, services: &[ResourceStatus]) -> ResourceStatus {
    let StatusInput {
        desired,
        observed,
        plan,
        now,
        invalid,
        active,
        ..
    } = *input;
    let unknown = matches!(observed, Observed::Unknown { .. });
    let total = services.len();
    let ready = services.iter().filter(|s| is_true(s, ConditionType::Ready)).count();
    let degraded: Vec<&str> = services
        .iter()
        .filter(|s| is_true(s, ConditionType::Degraded))
        .map(|s| s.name.as_str())
        .collect();
    let cond = |t, status, reason: &str, message: String| Condition {
        type_: t,
        status,
        reason: reason.into(),
        message,
        last_transition_time: now,
        observed_generation: desired.generation,
    };
    let (ready_c, deg_c) = if unknown {
        (
            cond(
                ConditionType::Ready,
                ConditionStatus::Unknown,
                "BackendUnavailable",
                "Swarm could not be read".into(),
            ),
            cond(
                ConditionType::Degraded,
                ConditionStatus::Unknown,
                "BackendUnavailable",
                "Swarm could not be read".into(),
            ),
        )
    } else if let Some(text) = invalid {
        (
            cond(
                ConditionType::Ready,
                ConditionStatus::from_bool(ready == total),
                "InvalidDesiredState",
                format!("{ready}/{total} services ready"),
            ),
            cond(
                ConditionType::Degraded,
                ConditionStatus::True,
                "InvalidDesiredState",
                text.replace('\n', "; "),
            ),
        )
    } else {
        (
            cond(
                ConditionType::Ready,
                ConditionStatus::from_bool(ready == total),
                if ready == total { "Converged" } else { "NotReady" },
                format!("{ready}/{total} services ready"),
            ),
            cond(
                ConditionType::Degraded,
                ConditionStatus::from_bool(!degraded.is_empty()),
                if degraded.is_empty() {
                    "AsExpected"
                } else {
                    "ServicesDegraded"
                },
                if degraded.is_empty() {
                    String::new()
                } else {
                    format!("degraded: {}", degraded.join(", "))
                },
            ),
        )
    };
    let rolling = active.is_some_and(|r| !r.phase.is_terminal());
    let progressing = !plan.actions.is_empty() || ready < total || rolling;
    let progressing_c = cond(
        ConditionType::Progressing,
        if unknown {
            ConditionStatus::Unknown
        } else {
            ConditionStatus::from_bool(progressing)
        },
        match active.filter(|r| !r.phase.is_terminal()) {
            Some(r) => r.phase.as_str(),
            None if progressing => "Reconciling",
            None => "Converged",
        },
        match active {
            Some(r) => format!(
                "{ready}/{total} services ready; rollout of generation {}: {} ({}/{} services done)",
                r.generation,
                r.phase.as_str(),
                r.progress().0,
                r.progress().1
            ),
            None => format!("{ready}/{total} services ready, {} changes planned", plan.actions.len()),
        },
    );
    ResourceStatus {
        kind: "Stack".into(),
        name: desired.stack.clone(),
        conditions: vec![ready_c, progressing_c, deg_c],
        desired_replicas: Some(desired.services.iter().map(|s| s.state.replicas).sum()),
        running_replicas: if unknown {
            None
        } else {
            Some(services.iter().filter_map(|s| s.running_replicas).sum())
        },
        image: None,
        observed_generation: desired.generation,
        last_reconcile: now,
        applied_revision: input.applied.map(str::to_string),
        attempted_revision: input.attempted.map(str::to_string),
        details: None,
    }
}
