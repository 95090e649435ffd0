//! The decisions of one reconcile pass over the Stack, apart from its IO. The controller gathers
//! the inputs (manifests, Swarm, the store), calls these, and carries out what they return:
//!
//! 1. [`pipeline`]: what the rollout in force lets the planner do, the plan, and its annotation.
//! 2. [`baselines`] and [`change_rollout`]: which revisions to record and whether a new desired
//!    state supersedes or starts a rollout.
//! 3. [`report_holds`], [`action_event`], [`backend_transition`]: which events to record and
//!    which holds block convergence.
//! 4. [`settle`]: whether the pass converged and when to look again.
//! 5. [`rollback_service`], [`rollback_target`], [`manual_rollback_event`]: `steward rollback`.

use std::collections::BTreeMap;
use std::time::Duration;

use steward_core::{ObjectRef, Reason};

use crate::event::Event;
use crate::model::{Desired, DesiredService, Observed, ObservedService, Owner};
use crate::plan::{plan, Action, Held, Hold, Plan, UpdateReason};
use crate::rollout::{self, Outcome, Phase, Revision, Rollout};

/// How soon to look again while Swarm is replacing tasks: Swarm sends no task events, so
/// progress is polled (one list call per look).
pub const CONVERGING_POLL: Duration = Duration::from_millis(500);
/// Retry delay while the engine is unreachable, doubling to the cap.
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);
pub const UNREACHABLE_RETRY_CAP: Duration = Duration::from_secs(30);

/// The desired state as the rollout in force lets the planner see it, and the plan for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// What the planner works toward: previous revisions restored, gates set, creations of a
    /// rolled-back revision removed. Statuses are assessed against it.
    pub effective: Desired,
    /// The plan, with the rollout's view put on it ([`rollout::annotate`]).
    pub plan: Plan,
}

/// observe → effective → plan → annotate, shared by the controller's pass and `steward plan` so
/// that both say the same thing about the same picture.
pub fn pipeline(desired: &Desired, active: Option<&Rollout>, observed: &Observed) -> Planned {
    let by_name: BTreeMap<String, ObservedService> = match observed {
        Observed::Known { services, .. } => services.iter().map(|s| (s.name.clone(), s.clone())).collect(),
        Observed::Unknown { .. } => BTreeMap::new(),
    };
    let effective = rollout::effective(desired, active, &by_name);
    let mut p = plan(&effective, observed);
    if let Some(r) = active {
        rollout::annotate(&mut p, r);
    }
    Planned { effective, plan: p }
}

/// Services steward has no history for but finds already matching the desired state (first
/// start on a running stack, adoption) become known-good baselines, so that a later change has
/// something to roll back to. A service the rollout in force handles is left to it.
pub fn baselines(
    desired: &Desired,
    services: &[ObservedService],
    last_good: &BTreeMap<String, Revision>,
    active: Option<&Rollout>,
    now_ms: i64,
) -> Vec<Revision> {
    desired
        .services
        .iter()
        .filter(|d| !last_good.contains_key(&d.name))
        .filter(|d| {
            services.iter().any(|o| {
                o.name == d.name && o.owner == Owner::Us && o.spec_hash.as_deref() == Some(d.spec_hash.as_str())
            })
        })
        .filter(|d| active.is_none_or(|r| r.service(&d.name).is_none()))
        .map(|d| Revision::of(d, desired.generation, now_ms, Outcome::Baseline))
        .collect()
}

/// What a new desired state does to the rollout in force.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutChange {
    /// The rollout in force was still running when it was superseded.
    pub superseded: Option<Event>,
    /// The rollout now in force; `None` when no service differs from its known-good revision.
    pub rollout: Option<Rollout>,
    /// A `Progressing` revision for every service the new rollout changes, to record before it
    /// acts (their outcome is set when the rollout finishes).
    pub progressing: Vec<Revision>,
    pub started: Option<Event>,
}

/// `None` while the rollout in force is for this desired state (`desired_hash`); otherwise the
/// rollout that replaces it. With no rollout in force, every pass asks again: a desired state
/// that changes nothing yields `Some` with no rollout.
pub fn change_rollout(
    desired: &Desired,
    desired_hash: &str,
    active: Option<&Rollout>,
    last_good: &BTreeMap<String, Revision>,
    now_ms: i64,
) -> Option<RolloutChange> {
    if active.is_some_and(|r| r.desired_hash == desired_hash) {
        return None;
    }
    let superseded = active.filter(|r| !r.phase.is_terminal()).map(|old| {
        Event::new(
            Reason::RolloutSuperseded,
            ObjectRef::rollout(old.generation),
            format!(
                "generation {} superseded by generation {} while {}",
                old.generation,
                desired.generation,
                old.phase.as_str()
            ),
        )
    });
    let new = rollout::begin(desired, desired_hash, last_good, now_ms);
    let progressing = new
        .iter()
        .flat_map(|r| &r.services)
        .filter_map(|sr| desired.services.iter().find(|d| d.name == sr.name))
        .map(|d| Revision::of(d, desired.generation, now_ms, Outcome::Progressing))
        .collect();
    let started = new.as_ref().map(started_event);
    Some(RolloutChange {
        superseded,
        rollout: new,
        progressing,
        started,
    })
}

fn started_event(r: &Rollout) -> Event {
    let services = r
        .services
        .iter()
        .map(|s| {
            format!(
                "{} {} → {}",
                s.name,
                s.from.as_ref().map_or("(new)", |f| f.image.as_str()),
                s.to_image
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let jobs = if r.jobs.is_empty() {
        String::new()
    } else {
        format!("; {} pre-deploy jobs first", r.jobs.len())
    };
    Event::new(
        Reason::RolloutStarted,
        ObjectRef::rollout(r.generation),
        format!("rolling out generation {}: {services}{jobs}", r.generation),
    )
}

/// A revision the rollout finished with: its outcome, and for a manual rollback the restored
/// revision, recorded anew as the known-good one.
pub fn finished_revision(r: &Rollout, service: &str, outcome: Outcome, now_ms: i64) -> Option<Revision> {
    if !(r.manual && outcome == Outcome::RolledBack) {
        return None;
    }
    let mut restored = r.service(service)?.from.clone()?;
    restored.outcome = Outcome::Complete;
    restored.created_ms = now_ms;
    restored.generation = r.generation;
    Some(restored)
}

/// True when `service` is being returned to its previous revision: its write is a rollback,
/// reported as `RollbackIssued`.
pub fn rolling_back(active: Option<&Rollout>, service: &str) -> bool {
    active.is_some_and(|r| r.rolling_back(service))
}

/// Which holds a pass reports, and which of them keep it from converging.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HoldReport {
    pub events: Vec<Event>,
    /// `Service/name: message`, one per hold that will not clear by waiting.
    pub blocking: Vec<String>,
}

/// Conflicts, Swarm's failed updates and an unreadable backend are events and block; an orphan
/// is an event only (it runs on, harmlessly); waits and rejected revisions are neither (the
/// rollout reports those itself: RolledBack, AnalysisInconclusive).
pub fn report_holds(held: &[Held]) -> HoldReport {
    let mut out = HoldReport::default();
    for h in held {
        let Some(reason) = h.hold.event_reason() else { continue };
        let object = ObjectRef::service(&h.name);
        let message = h.hold.message(&h.name);
        if !matches!(h.hold, Hold::Orphaned) {
            out.blocking.push(format!("{object}: {message}"));
        }
        out.events.push(Event::new(reason, object, message));
    }
    out
}

/// The event recorded once `action` was carried out. A write that restores the previous
/// revision is a `RollbackIssued` warning whatever the planner's reason.
pub fn action_event(action: &Action, rolling_back: bool) -> Event {
    let object = action.object();
    match action {
        Action::Create { service } => Event::new(
            Reason::Created,
            object,
            format!(
                "created service {} ({}, {} replicas)",
                service.name, service.state.image, service.state.replicas
            ),
        ),
        Action::Update { changes, reason, .. } => {
            let fields: Vec<String> = changes
                .iter()
                .map(|c| format!("{}: {} → {}", c.field, c.old, c.new))
                .collect();
            let fields = if fields.is_empty() {
                "ownership labels".to_string()
            } else {
                fields.join(", ")
            };
            let (reason, message) = match reason {
                _ if rolling_back => (
                    Reason::RollbackIssued,
                    format!("restoring the previous revision: {fields}"),
                ),
                UpdateReason::DriftCorrected => (
                    Reason::DriftCorrected,
                    format!("changed outside steward, restored: {fields}"),
                ),
                UpdateReason::SpecChanged => (Reason::Updated, format!("updated: {fields}")),
                UpdateReason::Adopted => (Reason::Adopted, format!("adopted existing service: {fields}")),
            };
            Event::new(reason, object, message)
        }
        Action::Remove { name, .. } => Event::new(
            Reason::Pruned,
            object,
            format!("removed service {name}: no longer in the desired state (prune is on)"),
        ),
    }
}

/// Whether Swarm is down after this pass, and the event when that changed: one
/// `BackendUnavailable` per outage and one `BackendRecovered` at its end, not one per pass.
pub fn backend_transition(was_down: bool, observed: &Observed, stack: &str) -> (bool, Option<Event>) {
    match observed {
        Observed::Unknown { reason } => (
            true,
            (!was_down).then(|| {
                Event::new(
                    Reason::BackendUnavailable,
                    ObjectRef::stack(stack),
                    format!("Swarm could not be read; nothing will be changed until it can: {reason}"),
                )
            }),
        ),
        Observed::Known { .. } => (
            false,
            was_down.then(|| {
                Event::new(
                    Reason::BackendRecovered,
                    ObjectRef::stack(stack),
                    "Swarm is reachable again",
                )
            }),
        ),
    }
}

/// How long to wait after `failures` passes in a row found Swarm unreachable: 1 s doubling to
/// 30 s.
pub fn unreachable_requeue(failures: u32) -> Duration {
    let exp = UNREACHABLE_RETRY * 2u32.saturating_pow(failures.saturating_sub(1).min(5));
    exp.min(UNREACHABLE_RETRY_CAP)
}

/// The end of a pass that could read Swarm, as the executor left it.
#[derive(Clone, Copy, Debug)]
pub struct PassEnd<'a> {
    /// The desired state (not the effective one: the rollout's deadlines are the manifest's).
    pub desired: &'a Desired,
    pub plan: &'a Plan,
    pub active: Option<&'a Rollout>,
    /// Actions carried out.
    pub executed: usize,
    /// Something already blocks (an invalid manifest, a conflict, lost leadership).
    pub blocked: bool,
    /// A write met a stale version: re-observe and re-plan at once.
    pub conflict: bool,
    pub now_ms: i64,
    /// When the earliest object in backoff may be tried again, from now.
    pub backoff: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    /// A rolled-back or paused rollout blocks until the desired state changes or a person
    /// decides.
    pub blocking: Option<String>,
    pub converged: bool,
    pub requeue_after: Option<Duration>,
}

/// Converged means nothing to write, nothing to wait for, no rollout running and nothing
/// blocking. The next look: at once after a conflict; while rolling out, at the next probe,
/// measurement or deadline but within [`CONVERGING_POLL`]; after writes or while waiting, at
/// [`CONVERGING_POLL`]; otherwise when a backoff ends (or only on a trigger).
pub fn settle(end: PassEnd<'_>) -> Settled {
    let waiting = end
        .plan
        .held
        .iter()
        .any(|h| matches!(h.hold, Hold::AwaitingConvergence { .. } | Hold::WaitingOn { .. }));
    let rolling = end.active.is_some_and(|r| !r.phase.is_terminal());
    let blocking = end
        .active
        .filter(|r| matches!(r.phase, Phase::RolledBack | Phase::Paused))
        .map(|r| {
            format!(
                "generation {} {}: {}",
                r.generation,
                if r.phase == Phase::Paused {
                    "paused"
                } else {
                    "rolled back"
                },
                r.cause.clone().unwrap_or_default()
            )
        });
    let converged = end.plan.is_empty() && !waiting && !rolling && !end.blocked && blocking.is_none();
    let requeue_after = if end.conflict {
        Some(Duration::ZERO)
    } else if rolling {
        let due = end
            .active
            .and_then(|r| rollout::next_due_ms(r, end.desired))
            .map(|t| Duration::from_millis(t.saturating_sub(end.now_ms).max(0) as u64));
        Some(due.map_or(CONVERGING_POLL, |d| d.min(CONVERGING_POLL)))
    } else if end.executed > 0 || waiting {
        Some(CONVERGING_POLL)
    } else {
        end.backoff
    };
    Settled {
        blocking,
        converged,
        requeue_after,
    }
}

/// Why `steward rollback` refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefused {
    #[error("no Service named {service:?} in the desired state")]
    NotDesired { service: String },
    #[error("{service} has no revision {number} (see `steward history {service}`)")]
    NoSuchRevision { service: String, number: u64 },
    #[error("{service} has no earlier known-good revision to roll back to")]
    NoKnownGood { service: String },
}

/// The desired service `steward rollback` is about.
pub fn rollback_service<'a>(desired: &'a Desired, service: &str) -> Result<&'a DesiredService, RollbackRefused> {
    desired
        .services
        .iter()
        .find(|d| d.name == service)
        .ok_or_else(|| RollbackRefused::NotDesired {
            service: service.to_string(),
        })
}

/// The revision to roll `current` back to: revision `to`, or by default the newest known-good
/// one (completed or baseline) other than the desired one. `history` is newest first.
pub fn rollback_target(
    current: &DesiredService,
    history: &[Revision],
    to: Option<u64>,
) -> Result<Revision, RollbackRefused> {
    let service = || current.name.clone();
    match to {
        Some(number) => {
            history
                .iter()
                .find(|r| r.number == number)
                .cloned()
                .ok_or_else(|| RollbackRefused::NoSuchRevision {
                    service: service(),
                    number,
                })
        }
        None => history
            .iter()
            .find(|r| r.spec_hash != current.spec_hash && matches!(r.outcome, Outcome::Complete | Outcome::Baseline))
            .cloned()
            .ok_or_else(|| RollbackRefused::NoKnownGood { service: service() }),
    }
}

pub fn manual_rollback_event(desired: &Desired, service: &str, target: &Revision) -> Event {
    Event::new(
        Reason::ManualRollback,
        ObjectRef::service(service),
        format!(
            "rolling back to revision {} ({}); generation {} is pinned out until the desired state changes",
            target.number, target.image, desired.generation
        ),
    )
}
