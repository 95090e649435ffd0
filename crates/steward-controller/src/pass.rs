//! One reconcile pass: observe, plan, record status, execute, record events.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_backends::swarm::{error_chain, Swarm, SwarmError};
use steward_plan::assess::assess;
use steward_plan::status::{
    Condition, ConditionStatus, ConditionType, EventType, NewEvent, ResourceStatus,
};
use steward_plan::{plan, Action, Desired, Hold, Observed, Plan, UpdateReason};
use steward_store::Store;
use time::OffsetDateTime;

use crate::backoff::Backoff;
use crate::prepare::{desired_hash, prepare, PrepareError};

/// How soon to look again while Swarm is replacing tasks: Swarm sends no task events, so
/// progress is polled (one list call per look).
const CONVERGING_POLL: Duration = Duration::from_millis(500);
/// Retry delay while the engine is unreachable, doubling to the cap.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);
const UNREACHABLE_RETRY_CAP: Duration = Duration::from_secs(30);

const META_HASH: &str = "desired.hash";
const META_GENERATION: &str = "desired.generation";

/// What a pass found and did.
#[derive(Debug, Clone)]
pub struct PassOutcome {
    pub plan: Option<Plan>,
    /// Actions carried out successfully.
    pub executed: usize,
    /// Actions that failed (reasons were recorded as events).
    pub failed: Vec<String>,
    /// True when Swarm matches the desired state and every task is running.
    pub converged: bool,
    /// Errors that will not clear by waiting (conflicts, failed updates, invalid manifests).
    pub blocking: Vec<String>,
    /// The backend could not be read.
    pub unknown: bool,
    /// When the loop should look again at the latest.
    pub requeue_after: Option<Duration>,
}

pub struct Controller {
    pub swarm: Swarm,
    pub store: Arc<Store>,
    paths: Vec<PathBuf>,
    backoff: Backoff,
    /// Last valid desired state: an invalid edit never replaces it.
    last_good: Option<Desired>,
    unreachable_failures: u32,
    backend_down: bool,
    last_invalid: Option<String>,
}

fn object_of(name: &str) -> String {
    format!("Service/{name}")
}

impl Controller {
    pub fn new(swarm: Swarm, store: Arc<Store>, paths: Vec<PathBuf>) -> Self {
        Self {
            swarm,
            store,
            paths,
            backoff: Backoff::default(),
            last_good: None,
            unreachable_failures: 0,
            backend_down: false,
            last_invalid: None,
        }
    }

    fn event(&self, type_: EventType, reason: &str, object: &str, message: String) {
        match type_ {
            EventType::Normal => tracing::info!(reason, object, "{message}"),
            EventType::Warning => tracing::warn!(reason, object, "{message}"),
        }
        let ev = NewEvent {
            type_,
            reason: reason.to_string(),
            message,
            object: object.to_string(),
        };
        if let Err(e) = self.store.record_event(&ev, OffsetDateTime::now_utc()) {
            tracing::error!(error = %error_chain(&e), "cannot record event");
        }
    }

    /// Loads the desired state. An invalid one is refused whole: the last good one stays in force.
    pub fn load_desired(&mut self) -> Result<Desired, String> {
        match prepare(&self.paths) {
            Ok(mut d) => {
                let hash = desired_hash(&d);
                let stored_hash = self.store.get_meta(META_HASH).ok().flatten();
                let mut generation: u64 = self
                    .store
                    .get_meta(META_GENERATION)
                    .ok()
                    .flatten()
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0);
                if stored_hash.as_deref() != Some(hash.as_str()) {
                    generation += 1;
                    let _ = self.store.set_meta(META_HASH, &hash);
                    let _ = self.store.set_meta(META_GENERATION, &generation.to_string());
                    if stored_hash.is_some() {
                        self.event(
                            EventType::Normal,
                            "DesiredStateChanged",
                            &format!("Stack/{}", d.stack),
                            format!("desired state changed: generation {generation} ({} services)", d.services.len()),
                        );
                    }
                }
                d.generation = generation;
                self.last_invalid = None;
                self.last_good = Some(d.clone());
                Ok(d)
            }
            Err(PrepareError::Invalid(errs)) => {
                let text = errs.to_string();
                if self.last_invalid.as_deref() != Some(text.as_str()) {
                    let stack = self.last_good.as_ref().map_or("default".to_string(), |d| d.stack.clone());
                    self.event(
                        EventType::Warning,
                        "InvalidDesiredState",
                        &format!("Stack/{stack}"),
                        format!(
                            "desired state refused, nothing applied{}: {}",
                            if self.last_good.is_some() { "; last valid state stays in force" } else { "" },
                            text.replace('\n', "; ")
                        ),
                    );
                    self.last_invalid = Some(text.clone());
                }
                Err(text)
            }
        }
    }

    /// One full pass. Re-reads manifests and Swarm; writes only when something differs.
    pub async fn pass(&mut self) -> PassOutcome {
        let loaded = self.load_desired();
        let invalid = loaded.as_ref().err().cloned();
        let desired = match loaded {
            Ok(d) => d,
            Err(text) => match &self.last_good {
                Some(d) => d.clone(),
                None => {
                    return PassOutcome {
                        plan: None,
                        executed: 0,
                        failed: vec![],
                        converged: false,
                        blocking: vec![text],
                        unknown: false,
                        requeue_after: None,
                    }
                }
            },
        };
        let names: Vec<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
        let observed = self.swarm.observe(&desired.stack, &names).await;
        let now = OffsetDateTime::now_utc();
        let the_plan = plan(&desired, &observed);
        self.record_status(&desired, &observed, &the_plan, now, invalid.as_deref());

        let mut outcome = PassOutcome {
            plan: Some(the_plan.clone()),
            executed: 0,
            failed: vec![],
            converged: false,
            blocking: invalid.into_iter().collect(),
            unknown: false,
            requeue_after: None,
        };

        if let Observed::Unknown { reason } = &observed {
            self.unreachable_failures += 1;
            if !self.backend_down {
                self.backend_down = true;
                self.event(
                    EventType::Warning,
                    "BackendUnavailable",
                    &format!("Stack/{}", desired.stack),
                    format!("Swarm could not be read; nothing will be changed until it can: {reason}"),
                );
            }
            outcome.unknown = true;
            let exp = UNREACHABLE_RETRY * 2u32.saturating_pow(self.unreachable_failures.saturating_sub(1).min(5));
            outcome.requeue_after = Some(exp.min(UNREACHABLE_RETRY_CAP));
            return outcome;
        }
        if self.backend_down {
            self.backend_down = false;
            self.event(
                EventType::Normal,
                "BackendRecovered",
                &format!("Stack/{}", desired.stack),
                "Swarm is reachable again".into(),
            );
        }
        self.unreachable_failures = 0;

        for h in &the_plan.held {
            let object = object_of(&h.name);
            match &h.hold {
                Hold::AwaitingConvergence { .. } => {}
                Hold::Orphaned => self.event(EventType::Warning, h.hold.reason(), &object, h.hold.message(&h.name)),
                hold => {
                    self.event(EventType::Warning, hold.reason(), &object, hold.message(&h.name));
                    outcome.blocking.push(format!("{object}: {}", hold.message(&h.name)));
                }
            }
        }

        let mut conflict = false;
        let started = Instant::now();
        for action in &the_plan.actions {
            let object = action.object();
            if let Some(until) = self.backoff.blocked_until(&object, started) {
                tracing::debug!(object, "in backoff for {:?}", until - started);
                continue;
            }
            match self.execute(&desired.stack, action).await {
                Ok(()) => {
                    self.backoff.succeeded(&object);
                    outcome.executed += 1;
                }
                Err(SwarmError::Conflict { .. }) => {
                    // Stale version: somebody wrote in between. Re-observe and re-plan at once.
                    conflict = true;
                    tracing::info!(object, "version conflict; re-planning");
                }
                Err(e) => {
                    self.backoff.failed(&object, Instant::now());
                    let verb = match action {
                        Action::Create { .. } => "CreateFailed",
                        Action::Update { .. } => "UpdateFailed",
                        Action::Remove { .. } => "RemoveFailed",
                    };
                    self.event(EventType::Warning, verb, &object, error_chain(&e));
                    outcome.failed.push(format!("{object}: {}", error_chain(&e)));
                }
            }
        }

        let waiting = the_plan
            .held
            .iter()
            .any(|h| matches!(h.hold, Hold::AwaitingConvergence { .. }));
        outcome.converged = the_plan.actions.is_empty() && !waiting && outcome.blocking.is_empty();
        outcome.requeue_after = if conflict {
            Some(Duration::ZERO)
        } else if outcome.executed > 0 || waiting {
            Some(CONVERGING_POLL)
        } else {
            self.backoff.next_ready(Instant::now()).map(|t| t - Instant::now())
        };
        outcome
    }

    async fn execute(&self, stack: &str, action: &Action) -> Result<(), SwarmError> {
        let object = action.object();
        match action {
            Action::Create { service } => {
                self.swarm.create(stack, service).await?;
                self.event(
                    EventType::Normal,
                    "Created",
                    &object,
                    format!(
                        "created service {} ({}, {} replicas)",
                        service.name, service.state.image, service.state.replicas
                    ),
                );
            }
            Action::Update {
                id,
                version,
                service,
                changes,
                reason,
            } => {
                self.swarm.update(stack, id, *version, service).await?;
                let fields: Vec<String> = changes.iter().map(|c| format!("{}: {} → {}", c.field, c.old, c.new)).collect();
                let fields = if fields.is_empty() { "ownership labels".to_string() } else { fields.join(", ") };
                let (type_, message) = match reason {
                    UpdateReason::DriftCorrected => (
                        EventType::Warning,
                        format!("changed outside steward, restored: {fields}"),
                    ),
                    UpdateReason::SpecChanged => (EventType::Normal, format!("updated: {fields}")),
                    UpdateReason::Adopted => (EventType::Normal, format!("adopted existing service: {fields}")),
                };
                let event_reason = match reason {
                    UpdateReason::SpecChanged => "Updated",
                    other => other.as_str(),
                };
                self.event(type_, event_reason, &object, message);
            }
            Action::Remove { id, name, .. } => {
                self.swarm.remove(id, name).await?;
                let _ = self.store.remove_status("Service", name);
                self.event(
                    EventType::Normal,
                    "Pruned",
                    &object,
                    format!("removed service {name}: no longer in the desired state (prune is on)"),
                );
            }
        }
        Ok(())
    }

    fn record_status(&self, desired: &Desired, observed: &Observed, the_plan: &Plan, now: OffsetDateTime, invalid: Option<&str>) {
        let statuses = assess(desired, observed, the_plan, now);
        let keep: BTreeSet<(String, String)> = statuses
            .iter()
            .map(|s| (s.kind.clone(), s.name.clone()))
            .chain(std::iter::once(("Stack".to_string(), desired.stack.clone())))
            .collect();
        for s in &statuses {
            let before = self.store.status(&s.kind, &s.name).ok().flatten();
            let was_ready = before
                .as_ref()
                .and_then(|b| b.condition(ConditionType::Ready))
                .is_some_and(|c| c.status == ConditionStatus::True);
            let ready = s.condition(ConditionType::Ready).is_some_and(|c| c.status == ConditionStatus::True);
            if ready && !was_ready {
                let msg = s.condition(ConditionType::Ready).map(|c| c.message.clone()).unwrap_or_default();
                self.event(EventType::Normal, "Converged", &format!("{}/{}", s.kind, s.name), msg);
            }
            if let Err(e) = self.store.put_status(s) {
                tracing::error!(error = %error_chain(&e), "cannot record status");
            }
        }
        if let Ok(all) = self.store.statuses() {
            for s in all {
                if !keep.contains(&(s.kind.clone(), s.name.clone())) {
                    let _ = self.store.remove_status(&s.kind, &s.name);
                }
            }
        }
        // The stack as a whole.
        let unknown = matches!(observed, Observed::Unknown { .. });
        let total = statuses.len();
        let ready = statuses
            .iter()
            .filter(|s| s.condition(ConditionType::Ready).is_some_and(|c| c.status == ConditionStatus::True))
            .count();
        let degraded: Vec<&str> = statuses
            .iter()
            .filter(|s| s.condition(ConditionType::Degraded).is_some_and(|c| c.status == ConditionStatus::True))
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
                cond(ConditionType::Ready, ConditionStatus::Unknown, "BackendUnavailable", "Swarm could not be read".into()),
                cond(ConditionType::Degraded, ConditionStatus::Unknown, "BackendUnavailable", "Swarm could not be read".into()),
            )
        } else if let Some(text) = invalid {
            (
                cond(ConditionType::Ready, ConditionStatus::from_bool(ready == total), "InvalidDesiredState", format!("{ready}/{total} services ready")),
                cond(ConditionType::Degraded, ConditionStatus::True, "InvalidDesiredState", text.replace('\n', "; ")),
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
                    if degraded.is_empty() { "AsExpected" } else { "ServicesDegraded" },
                    if degraded.is_empty() { String::new() } else { format!("degraded: {}", degraded.join(", ")) },
                ),
            )
        };
        let progressing = !the_plan.actions.is_empty() || ready < total;
        let stack_status = ResourceStatus {
            kind: "Stack".into(),
            name: desired.stack.clone(),
            conditions: vec![
                ready_c,
                cond(
                    ConditionType::Progressing,
                    if unknown { ConditionStatus::Unknown } else { ConditionStatus::from_bool(progressing) },
                    if progressing { "Reconciling" } else { "Converged" },
                    format!("{ready}/{total} services ready, {} changes planned", the_plan.actions.len()),
                ),
                deg_c,
            ],
            desired_replicas: Some(desired.services.iter().map(|s| s.state.replicas).sum()),
            running_replicas: if unknown {
                None
            } else {
                Some(statuses.iter().filter_map(|s| s.running_replicas).sum())
            },
            image: None,
            observed_generation: desired.generation,
            last_reconcile: now,
        };
        let _ = self.store.put_status(&stack_status);
    }
}
