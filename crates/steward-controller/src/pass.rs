//! One reconcile pass: observe, plan, record status, execute, record events.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_backends::swarm::{error_chain, Swarm, SwarmError};
use steward_plan::assess::assess;
use steward_plan::rollout::{self, Outcome, Phase, Revision, Rollout, SvcPhase};
use steward_plan::status::{Condition, ConditionStatus, ConditionType, EventType, NewEvent, ResourceStatus};
use steward_plan::{plan, Action, Desired, Hold, Observed, ObservedService, Owner, Plan, UpdateReason};
use steward_store::Store;
use time::OffsetDateTime;

use crate::backoff::Backoff;
use crate::prepare::{desired_hash, prepare, PrepareError};
use crate::rollouts::{start_job, Gatherer};

/// How soon to look again while Swarm is replacing tasks: Swarm sends no task events, so
/// progress is polled (one list call per look).
const CONVERGING_POLL: Duration = Duration::from_millis(500);
/// Retry delay while the engine is unreachable, doubling to the cap.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);
const UNREACHABLE_RETRY_CAP: Duration = Duration::from_secs(30);

const META_HASH: &str = "desired.hash";
/// Source revision (git commit) of the desired state in force, and the newest one tried.
pub const META_SOURCE_APPLIED: &str = "source.applied";
pub const META_SOURCE_APPLIED_DESCRIBE: &str = "source.applied.describe";
pub const META_SOURCE_ATTEMPTED: &str = "source.attempted";
pub const META_SOURCE_ATTEMPTED_DESCRIBE: &str = "source.attempted.describe";
/// Manifest paths of the last reconcile, so `steward rollback` finds the desired state.
pub const META_PATHS: &str = "desired.paths";
/// The active (or last) rollout, as JSON: it survives a controller restart at any point.
pub const META_ROLLOUT: &str = "rollout";
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
    /// The rollout in force after this pass.
    pub rollout: Option<Rollout>,
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
    gatherer: Gatherer,
    /// The source revision (git commit) the manifests came from, newest seen, as
    /// `1a2b3c4 'subject' (author)`; `None` for plain directories.
    source_attempted: Option<SourceRevision>,
    /// The source revision of the desired state in force.
    source_applied: Option<SourceRevision>,
    /// Names of services this controller desires or owns, as of the last pass.
    known: std::collections::BTreeSet<String>,
    notifier: Option<(steward_backends::notify::Notifier, bool)>,
    /// With a shared store: every Swarm write first confirms this controller still leads.
    fence: Option<std::sync::Arc<steward_store::leader::Leadership>>,
    /// Metadata values this controller last wrote, so an unchanged value is not rewritten on
    /// every pass.
    written_meta: std::collections::HashMap<&'static str, String>,
}

/// A revision of the desired state's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRevision {
    pub id: String,
    /// `1a2b3c4 'scale web to 12' (Jane)`
    pub describe: String,
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
            gatherer: Gatherer::default(),
            source_attempted: None,
            source_applied: None,
            known: Default::default(),
            notifier: None,
            fence: None,
            written_meta: Default::default(),
        }
    }

    /// Points the controller at another revision of its source (a new git commit). The next
    /// pass validates it; an invalid one is refused whole and the last valid one stays.
    pub fn set_source(&mut self, paths: Vec<PathBuf>, revision: Option<SourceRevision>) {
        self.paths = paths;
        self.source_attempted = revision;
    }

    /// Fences every Swarm write on `leadership` (a shared store with several controllers).
    pub fn set_fence(&mut self, leadership: std::sync::Arc<steward_store::leader::Leadership>) {
        self.fence = Some(leadership);
    }

    /// False when another controller has taken over: nothing may be written.
    fn may_write(&self) -> bool {
        self.fence.as_ref().is_none_or(|l| l.confirm())
    }

    /// Posts Warning events (all events with `all`) to webhooks.
    pub fn set_notifier(&mut self, notifier: steward_backends::notify::Notifier, all: bool) {
        self.notifier = Some((notifier, all));
    }

    /// Whether a Swarm event about `service` may concern this controller (unknown names do
    /// until the first pass has run).
    pub fn cares_about(&self, service: &str) -> bool {
        self.known.is_empty() || self.known.contains(service)
    }

    pub fn stack_name(&self) -> String {
        self.last_good
            .as_ref()
            .map_or_else(|| "default".to_string(), |d| d.stack.clone())
    }

    pub fn source_applied(&self) -> Option<&SourceRevision> {
        self.source_applied.as_ref()
    }

    pub fn source_attempted(&self) -> Option<&SourceRevision> {
        self.source_attempted.as_ref()
    }

    pub fn event(&self, type_: EventType, reason: &str, object: &str, message: String) {
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
        match self.store.record_event(&ev, OffsetDateTime::now_utc()) {
            Ok(rec) => {
                if let Some((n, all)) = &self.notifier {
                    if *all || type_ == EventType::Warning {
                        let ts = |t: OffsetDateTime| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .unwrap_or_default()
                        };
                        n.send(steward_backends::notify::Notification {
                            stack: self.stack_name(),
                            warning: type_ == EventType::Warning,
                            reason: rec.reason,
                            object: rec.object,
                            message: rec.message,
                            count: rec.count,
                            first_seen: ts(rec.first_seen),
                            last_seen: ts(rec.last_seen),
                        });
                    }
                }
            }
            Err(e) => tracing::error!(error = %error_chain(&e), "cannot record event"),
        }
    }

    /// Writes a metadata value unless this controller already wrote that same value.
    fn record_meta(&mut self, key: &'static str, value: &str) {
        if self.written_meta.get(key).map(String::as_str) == Some(value) {
            return;
        }
        match self.store.set_meta(key, value) {
            Ok(()) => {
                self.written_meta.insert(key, value.to_string());
            }
            Err(e) => tracing::error!(key, error = %error_chain(&e), "cannot record metadata"),
        }
    }

    fn record_source_attempted(&mut self) {
        if let Some(rev) = self.source_attempted.clone() {
            self.record_meta(META_SOURCE_ATTEMPTED, &rev.id);
            self.record_meta(META_SOURCE_ATTEMPTED_DESCRIBE, &rev.describe);
        }
    }

    /// Loads the desired state. An invalid one is refused whole: the last good one stays in force.
    pub fn load_desired(&mut self) -> Result<Desired, String> {
        if self.paths.is_empty() {
            // Only with a git source that has not been fetched yet (reported as SourceUnavailable).
            return Err("no desired state yet: the source has not been fetched".into());
        }
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        self.record_meta(META_PATHS, &serde_json::to_string(&paths).expect("paths serialize"));
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
                            format!(
                                "desired state changed: generation {generation} ({} services)",
                                d.services.len()
                            ),
                        );
                    }
                }
                d.generation = generation;
                self.last_invalid = None;
                self.last_good = Some(d.clone());
                self.record_source_attempted();
                if self.source_attempted.is_some() && self.source_applied != self.source_attempted {
                    self.source_applied = self.source_attempted.clone();
                    let rev = self.source_applied.clone().expect("set above");
                    let _ = self.store.set_meta(META_SOURCE_APPLIED, &rev.id);
                    let _ = self.store.set_meta(META_SOURCE_APPLIED_DESCRIBE, &rev.describe);
                    self.event(
                        EventType::Normal,
                        "Applied",
                        &format!("Stack/{}", d.stack),
                        format!("Applied {} as generation {generation}", rev.describe),
                    );
                }
                Ok(d)
            }
            Err(PrepareError::Invalid(errs)) => {
                let text = errs.to_string();
                let key = format!("{}{text}", self.source_attempted.as_ref().map_or("", |r| r.id.as_str()));
                if self.last_invalid.as_deref() != Some(key.as_str()) {
                    let stack = self
                        .last_good
                        .as_ref()
                        .map_or("default".to_string(), |d| d.stack.clone());
                    let (reason, what) = match &self.source_attempted {
                        Some(rev) => ("InvalidRevision", format!("revision {} refused", rev.describe)),
                        None => ("InvalidDesiredState", "desired state refused".to_string()),
                    };
                    let kept = match (&self.last_good, &self.source_applied) {
                        (Some(_), Some(rev)) => format!("; {} stays in force", rev.describe),
                        (Some(_), None) => "; last valid state stays in force".to_string(),
                        _ => String::new(),
                    };
                    self.event(
                        EventType::Warning,
                        reason,
                        &format!("Stack/{stack}"),
                        format!("{what}, nothing applied{kept}: {}", text.replace('\n', "; ")),
                    );
                    self.record_source_attempted();
                    self.last_invalid = Some(key.clone());
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
                        rollout: None,
                    }
                }
            },
        };
        let names: Vec<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
        let observed = self.swarm.observe(&desired.stack, &names).await;
        let now = OffsetDateTime::now_utc();
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;

        // Rollouts only advance on a known picture of Swarm.
        let mut active = self.load_rollout();
        if let Observed::Known { services } = &observed {
            active = self.advance_rollout(&desired, services, active, now_ms).await;
        }
        if let Observed::Known { services } = &observed {
            self.known = desired
                .services
                .iter()
                .map(|d| d.name.clone())
                .chain(services.iter().map(|s| s.name.clone()))
                .collect();
        }
        let observed_map: std::collections::BTreeMap<String, ObservedService> = match &observed {
            Observed::Known { services } => services.iter().map(|s| (s.name.clone(), s.clone())).collect(),
            Observed::Unknown { .. } => Default::default(),
        };
        let effective = rollout::effective(&desired, active.as_ref(), &observed_map);
        let mut the_plan = plan(&effective, &observed);
        let mut progress = std::collections::BTreeMap::new();
        if let Some(r) = &active {
            rollout::annotate(&mut the_plan, r);
            // Tasks on the new version, for status: only while Swarm is replacing them.
            for sr in r.services.iter().filter(|s| s.phase == SvcPhase::Updating) {
                if let Ok(p) = self.swarm.task_progress(&sr.name, &sr.to_image).await {
                    progress.insert(sr.name.clone(), p);
                }
            }
        }
        self.record_status(
            &effective,
            &observed,
            &the_plan,
            now,
            invalid.as_deref(),
            active.as_ref(),
            &progress,
        );

        let mut outcome = PassOutcome {
            plan: Some(the_plan.clone()),
            executed: 0,
            failed: vec![],
            converged: false,
            blocking: invalid.into_iter().collect(),
            unknown: false,
            requeue_after: None,
            rollout: active.clone(),
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
                // The rollout reports these itself (RolledBack, AnalysisInconclusive).
                Hold::AwaitingConvergence { .. } | Hold::WaitingOn { .. } | Hold::RevisionRejected { .. } => {}
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
            if !self.may_write() {
                outcome
                    .blocking
                    .push("this controller no longer leads: writes stopped".into());
                break;
            }
            let rolling_back = active.as_ref().is_some_and(|r| {
                r.services
                    .iter()
                    .any(|sr| format!("Service/{}", sr.name) == object && sr.phase == SvcPhase::RollingBack)
            });
            match self.execute(&desired.stack, action, rolling_back).await {
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
            .any(|h| matches!(h.hold, Hold::AwaitingConvergence { .. } | Hold::WaitingOn { .. }));
        let rolling = active.as_ref().is_some_and(|r| !r.phase.is_terminal());
        if let Some(r) = active
            .as_ref()
            .filter(|r| matches!(r.phase, Phase::RolledBack | Phase::Paused))
        {
            outcome.blocking.push(format!(
                "generation {} {}: {}",
                r.generation,
                if r.phase == Phase::Paused {
                    "paused"
                } else {
                    "rolled back"
                },
                r.cause.clone().unwrap_or_default()
            ));
        }
        outcome.converged = the_plan.actions.is_empty() && !waiting && !rolling && outcome.blocking.is_empty();
        outcome.requeue_after = if conflict {
            Some(Duration::ZERO)
        } else if rolling {
            let due = active
                .as_ref()
                .and_then(|r| rollout::next_due_ms(r, &desired))
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms).max(0) as u64));
            Some(due.map_or(CONVERGING_POLL, |d| d.min(CONVERGING_POLL)))
        } else if outcome.executed > 0 || waiting {
            Some(CONVERGING_POLL)
        } else {
            self.backoff.next_ready(Instant::now()).map(|t| t - Instant::now())
        };
        outcome
    }

    async fn execute(&self, stack: &str, action: &Action, rolling_back: bool) -> Result<(), SwarmError> {
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
                let fields: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{}: {} → {}", c.field, c.old, c.new))
                    .collect();
                let fields = if fields.is_empty() {
                    "ownership labels".to_string()
                } else {
                    fields.join(", ")
                };
                let (type_, message) = match reason {
                    UpdateReason::DriftCorrected => (
                        EventType::Warning,
                        format!("changed outside steward, restored: {fields}"),
                    ),
                    UpdateReason::SpecChanged => (EventType::Normal, format!("updated: {fields}")),
                    UpdateReason::Adopted => (EventType::Normal, format!("adopted existing service: {fields}")),
                };
                let event_reason = match reason {
                    _ if rolling_back => "RollbackIssued",
                    UpdateReason::SpecChanged => "Updated",
                    other => other.as_str(),
                };
                let (type_, message) = if rolling_back {
                    (EventType::Warning, format!("restoring the previous revision: {fields}"))
                } else {
                    (type_, message)
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

    #[allow(clippy::too_many_arguments)] // the pass's whole picture, gathered once
    fn record_status(
        &self,
        desired: &Desired,
        observed: &Observed,
        the_plan: &Plan,
        now: OffsetDateTime,
        invalid: Option<&str>,
        active: Option<&Rollout>,
        progress: &std::collections::BTreeMap<String, (u64, u64)>,
    ) {
        let mut statuses = assess(desired, observed, the_plan, now);
        if let Some(r) = active {
            overlay_rollout(&mut statuses, r, progress);
        }
        let applied = self.source_applied.as_ref().map(|r| r.describe.clone());
        let attempted = self.source_attempted.as_ref().map(|r| r.describe.clone());
        for st in statuses.iter_mut() {
            st.applied_revision = applied.clone();
            st.attempted_revision = attempted.clone();
        }
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
            let ready = s
                .condition(ConditionType::Ready)
                .is_some_and(|c| c.status == ConditionStatus::True);
            if ready && !was_ready {
                let msg = s
                    .condition(ConditionType::Ready)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
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
            .filter(|s| {
                s.condition(ConditionType::Ready)
                    .is_some_and(|c| c.status == ConditionStatus::True)
            })
            .count();
        let degraded: Vec<&str> = statuses
            .iter()
            .filter(|s| {
                s.condition(ConditionType::Degraded)
                    .is_some_and(|c| c.status == ConditionStatus::True)
            })
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
        let progressing = !the_plan.actions.is_empty() || ready < total || rolling;
        let stack_status = ResourceStatus {
            kind: "Stack".into(),
            name: desired.stack.clone(),
            conditions: vec![
                ready_c,
                cond(
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
                        None => format!(
                            "{ready}/{total} services ready, {} changes planned",
                            the_plan.actions.len()
                        ),
                    },
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
            applied_revision: applied,
            attempted_revision: attempted,
            details: None,
        };
        let _ = self.store.put_status(&stack_status);
    }
}

/// Rollout phase, progress and cause on each service's conditions.
fn overlay_rollout(
    statuses: &mut [ResourceStatus],
    r: &Rollout,
    progress: &std::collections::BTreeMap<String, (u64, u64)>,
) {
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

impl Controller {
    /// The persisted rollout, if any. A corrupt record is dropped with a warning rather than
    /// wedging the loop.
    pub fn load_rollout(&self) -> Option<Rollout> {
        let text = self.store.get_meta(META_ROLLOUT).ok().flatten()?;
        match serde_json::from_str(&text) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "dropping unreadable rollout record");
                None
            }
        }
    }

    /// Pins `service` to revision `to` (default: the newest known-good revision other than the
    /// desired one): the desired revision is rejected until the desired state changes.
    pub fn start_manual_rollback(&mut self, service: &str, to: Option<u64>) -> Result<Revision, String> {
        let desired = self.load_desired()?;
        if !desired.services.iter().any(|d| d.name == service) {
            return Err(format!("no Service named {service:?} in the desired state"));
        }
        let history = self.store.revisions(service).map_err(|e| error_chain(&e))?;
        let current = desired
            .services
            .iter()
            .find(|d| d.name == service)
            .map(|d| d.spec_hash.clone())
            .unwrap_or_default();
        let target = match to {
            Some(n) => history
                .iter()
                .find(|r| r.number == n)
                .cloned()
                .ok_or_else(|| format!("{service} has no revision {n} (see `steward history {service}`)"))?,
            None => history
                .iter()
                .find(|r| r.spec_hash != current && matches!(r.outcome, Outcome::Complete | Outcome::Baseline))
                .cloned()
                .ok_or_else(|| format!("{service} has no earlier known-good revision to roll back to"))?,
        };
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let r = rollout::manual_rollback(&desired, &desired_hash(&desired), service, target.clone(), now_ms);
        self.save_rollout(Some(&r));
        self.event(
            EventType::Warning,
            "ManualRollback",
            &format!("Service/{service}"),
            format!(
                "rolling back to revision {} ({}); generation {} is pinned out until the desired state changes",
                target.number, target.image, desired.generation
            ),
        );
        Ok(target)
    }

    pub fn save_rollout(&self, r: Option<&Rollout>) {
        let text = r.map_or_else(
            || "null".to_string(),
            |r| serde_json::to_string(r).expect("rollout serializes"),
        );
        if let Err(e) = self.store.set_meta(META_ROLLOUT, &text) {
            tracing::error!(error = %error_chain(&e), "cannot persist the rollout");
        }
    }

    /// Begins a rollout for a new desired state, or advances the one in force.
    async fn advance_rollout(
        &mut self,
        desired: &Desired,
        services: &[ObservedService],
        mut active: Option<Rollout>,
        now_ms: i64,
    ) -> Option<Rollout> {
        let hash = desired_hash(desired);
        let mut last_good = self.store.last_good().unwrap_or_default();

        // A service steward has no history for but finds already matching the desired state
        // (first start on a running stack, adoption) is taken as the known-good baseline.
        for d in &desired.services {
            if last_good.contains_key(&d.name) {
                continue;
            }
            let matching = services.iter().any(|o| {
                o.name == d.name && o.owner == Owner::Us && o.spec_hash.as_deref() == Some(d.spec_hash.as_str())
            });
            if matching && active.as_ref().is_none_or(|r| r.service(&d.name).is_none()) {
                let rev = Revision::of(d, desired.generation, now_ms, Outcome::Baseline);
                if self.store.add_revision(&rev).is_ok() {
                    last_good.insert(d.name.clone(), rev);
                }
            }
        }

        if active.as_ref().map(|r| r.desired_hash.as_str()) != Some(hash.as_str()) {
            if let Some(old) = active.as_ref().filter(|r| !r.phase.is_terminal()) {
                self.event(
                    EventType::Normal,
                    "RolloutSuperseded",
                    &format!("Rollout/{}", old.generation),
                    format!(
                        "generation {} superseded by generation {} while {}",
                        old.generation,
                        desired.generation,
                        old.phase.as_str()
                    ),
                );
            }
            active = rollout::begin(desired, &hash, &last_good, now_ms);
            if let Some(r) = &active {
                for sr in &r.services {
                    if let Some(d) = desired.services.iter().find(|d| d.name == sr.name) {
                        let _ =
                            self.store
                                .add_revision(&Revision::of(d, desired.generation, now_ms, Outcome::Progressing));
                    }
                }
                self.event(
                    EventType::Normal,
                    "RolloutStarted",
                    &format!("Rollout/{}", r.generation),
                    format!(
                        "rolling out generation {}: {}{}",
                        r.generation,
                        r.services
                            .iter()
                            .map(|s| format!(
                                "{} {} → {}",
                                s.name,
                                s.from.as_ref().map_or("(new)", |f| f.image.as_str()),
                                s.to_image
                            ))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if r.jobs.is_empty() {
                            String::new()
                        } else {
                            format!("; {} pre-deploy jobs first", r.jobs.len())
                        }
                    ),
                );
            }
            self.save_rollout(active.as_ref());
        }

        let mut r = active?;
        if r.phase.is_terminal() {
            return Some(r);
        }
        let gathered = self.gatherer.gather(&self.swarm, &r, desired, now_ms).await;
        let obs = rollout::Observations {
            now_ms,
            services: services
                .iter()
                .filter(|s| s.owner == Owner::Us)
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            jobs: gathered.jobs,
            probes: gathered.probes,
            measurements: gathered.measurements,
        };
        let out = rollout::step(&mut r, desired, &obs);
        // Persist before acting: a job recorded as started is never started again after a crash.
        self.save_rollout(Some(&r));
        for j in &out.start_jobs {
            if !self.may_write() {
                break;
            }
            if let Err(e) = start_job(&self.swarm, &desired.stack, j).await {
                self.event(
                    EventType::Warning,
                    "PreDeployStartFailed",
                    &format!("Service/{}", j.service),
                    e,
                );
            }
        }
        for name in &out.remove_jobs {
            if !self.may_write() {
                break;
            }
            if let Err(e) = self.swarm.remove_job(name).await {
                tracing::warn!(job = %name, error = %error_chain(&e), "cannot remove finished job");
            }
        }
        for ev in &out.events {
            let t = if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            self.event(t, ev.reason, &ev.object, ev.message.clone());
        }
        for (svc, hash, outcome) in &out.finished {
            let _ = self.store.set_revision_outcome(svc, hash, *outcome);
            // A manual rollback makes the restored revision the known-good one.
            if r.manual && *outcome == Outcome::RolledBack {
                if let Some(from) = r.service(svc).and_then(|s| s.from.clone()) {
                    let mut restored = from;
                    restored.outcome = Outcome::Complete;
                    restored.created_ms = now_ms;
                    restored.generation = r.generation;
                    let _ = self.store.add_revision(&restored);
                }
            }
        }
        Some(r)
    }
}
