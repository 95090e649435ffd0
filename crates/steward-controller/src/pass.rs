//! One reconcile pass: gather the inputs, call the Stack's pure decisions
//! (`steward_plan::stack`, `steward_plan::stack_status`, `steward_plan::rollout`), and carry out
//! what they return: Swarm writes, store writes, events.

mod rollout_step;
mod status;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_backends::swarm::{error_chain, Swarm, SwarmError};
use steward_core::{ObjectRef, Reason};
use steward_plan::objects::ObjectAction;
use steward_plan::rollout::{Rollout, SvcPhase};
use steward_plan::stack::{self, PassEnd, RollbackRefused};
use steward_plan::stack_status::StatusInput;
use steward_plan::status::{EventType, NewEvent};
use steward_plan::{pipeline, Action, Desired, Event, Observed, Owner, Plan, Planned};
use steward_spec::SpecErrors;
use steward_store::{Store, StoreError};
use time::OffsetDateTime;

use crate::backoff::Backoff;
use crate::prepare::{generation_hash, prepare_all, PrepareError, Prepared};
use crate::rollouts::Gatherer;

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
/// While a deploy gate holds: how soon it is judged again.
const GATE_RECHECK: Duration = Duration::from_secs(2);

/// What a pass found and did.
#[derive(Debug, Clone)]
pub struct PassOutcome {
    pub plan: Option<Plan>,
    /// Actions carried out successfully.
    pub executed: usize,
    /// Actions that failed (reasons were recorded as events), and store writes that later passes
    /// depend on (revision history, the persisted rollout; logged).
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
    pub(crate) backoff: Backoff,
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
    /// Schedules of the last valid desired state, sorted by name.
    pub(crate) schedules: Vec<steward_schedule::ScheduleState>,
    /// Images the stack's services run, from the last pass that could read Swarm (`imageFrom`).
    pub(crate) images: Option<std::collections::BTreeMap<String, String>>,
    /// When this controller began: instants missed before it are caught up as `CatchUp`.
    pub(crate) started: OffsetDateTime,
    /// Generation of the last valid desired state.
    pub(crate) generation: u64,
    /// Networks of the last valid desired state, sorted by name.
    pub(crate) networks: Vec<steward_network::DesiredNetwork>,
    /// Databases of the last valid desired state, sorted by name.
    pub(crate) databases: Vec<steward_database::DatabaseState>,
    /// What the Database reconciler keeps between reconciles, by name.
    pub(crate) db_runtime: BTreeMap<String, crate::database::Runtime>,
    /// Services a deploy gate holds, with why (an event when it starts and when it ends).
    pub(crate) gate_held: BTreeMap<String, String>,
    /// `backupBefore` backups running, by their rollout key.
    pub(crate) predeploy_backups: BTreeMap<String, crate::database::InFlight>,
}

/// Why there is no desired state to load.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LoadError {
    /// Only with a git source that has not been fetched yet (reported as SourceUnavailable).
    #[error("no desired state yet: the source has not been fetched")]
    NotFetched,
    /// Refused whole: the last valid desired state stays in force.
    #[error("{errors}")]
    Invalid { errors: SpecErrors },
}

/// Why `steward rollback` did not start.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Refused(#[from] RollbackRefused),
    // Boxed: a store error is large and this one is rare.
    #[error("cannot read the revision history of {service}")]
    History {
        service: String,
        #[source]
        source: Box<StoreError>,
    },
    /// A rollback that is not persisted would not be carried out by the next pass.
    #[error("cannot persist the rollback of {service}")]
    Persist {
        service: String,
        #[source]
        source: Box<StoreError>,
    },
}

/// A revision of the desired state's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRevision {
    pub id: String,
    /// `1a2b3c4 'scale web to 12' (Jane)`
    pub describe: String,
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
            schedules: Vec::new(),
            images: None,
            started: OffsetDateTime::now_utc(),
            generation: 0,
            networks: Vec::new(),
            databases: Vec::new(),
            db_runtime: Default::default(),
            gate_held: Default::default(),
            predeploy_backups: Default::default(),
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
    pub(crate) fn may_write(&self) -> bool {
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

    /// Records an event of the Stack, a Service or a Rollout: the event type follows from the
    /// reason.
    pub fn emit(&self, reason: Reason, object: &ObjectRef, message: String) {
        self.event(reason.event_type(), reason.as_str(), &object.to_string(), message);
    }

    pub fn emit_event(&self, ev: &Event) {
        self.emit(ev.reason, &ev.object, ev.message.clone());
    }

    /// Records an event as text: for kinds with reasons of their own (the Schedule's).
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
    pub fn load_desired(&mut self) -> Result<Desired, LoadError> {
        if self.paths.is_empty() {
            return Err(LoadError::NotFetched);
        }
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        self.record_meta(META_PATHS, &serde_json::to_string(&paths).expect("paths serialize"));
        match prepare_all(&self.paths) {
            Ok(prepared) => {
                let hash = generation_hash(&prepared);
                let Prepared {
                    desired: mut d,
                    schedules,
                    networks,
                    databases,
                } = prepared;
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
                    // A generation that is not stored would be handed out again after a restart.
                    if let Err(e) = self
                        .store
                        .set_meta(META_HASH, &hash)
                        .and_then(|()| self.store.set_meta(META_GENERATION, &generation.to_string()))
                    {
                        tracing::error!(error = %error_chain(&e), "cannot record the desired state's generation");
                    }
                    if stored_hash.is_some() {
                        self.emit(
                            Reason::DesiredStateChanged,
                            &ObjectRef::stack(&d.stack),
                            format!(
                                "desired state changed: generation {generation} ({} services, {} schedules)",
                                d.services.len(),
                                schedules.len()
                            ),
                        );
                    }
                }
                d.generation = generation;
                self.generation = generation;
                self.schedules = schedules;
                self.networks = networks;
                self.databases = databases;
                self.last_invalid = None;
                self.last_good = Some(d.clone());
                self.record_source_attempted();
                if self.source_attempted.is_some() && self.source_applied != self.source_attempted {
                    self.source_applied = self.source_attempted.clone();
                    let rev = self.source_applied.clone().expect("set above");
                    // Logged, not propagated: the revision is in force in this process either
                    // way. A lost write only means a restart begins from the previous applied
                    // commit, which is validated again and then superseded by the newest.
                    self.record_meta(META_SOURCE_APPLIED, &rev.id);
                    self.record_meta(META_SOURCE_APPLIED_DESCRIBE, &rev.describe);
                    self.emit(
                        Reason::Applied,
                        &ObjectRef::stack(&d.stack),
                        format!("Applied {} as generation {generation}", rev.describe),
                    );
                }
                Ok(d)
            }
            Err(PrepareError::Invalid(errors)) => {
                let text = errors.to_string();
                let key = format!("{}{text}", self.source_attempted.as_ref().map_or("", |r| r.id.as_str()));
                if self.last_invalid.as_deref() != Some(key.as_str()) {
                    let (reason, what) = match &self.source_attempted {
                        Some(rev) => (Reason::InvalidRevision, format!("revision {} refused", rev.describe)),
                        None => (Reason::InvalidDesiredState, "desired state refused".to_string()),
                    };
                    let kept = match (&self.last_good, &self.source_applied) {
                        (Some(_), Some(rev)) => format!("; {} stays in force", rev.describe),
                        (Some(_), None) => "; last valid state stays in force".to_string(),
                        _ => String::new(),
                    };
                    self.emit(
                        reason,
                        &ObjectRef::stack(self.stack_name()),
                        format!("{what}, nothing applied{kept}: {}", text.replace('\n', "; ")),
                    );
                    self.record_source_attempted();
                    self.last_invalid = Some(key.clone());
                }
                Err(LoadError::Invalid { errors })
            }
        }
    }

    /// One full pass. Re-reads manifests and Swarm; writes only when something differs.
    pub async fn pass(&mut self) -> PassOutcome {
        let loaded = self.load_desired();
        let invalid = loaded.as_ref().err().map(ToString::to_string);
        let desired = match loaded {
            Ok(d) => d,
            Err(e) => match &self.last_good {
                Some(d) => d.clone(),
                None => {
                    return PassOutcome {
                        plan: None,
                        executed: 0,
                        failed: vec![],
                        converged: false,
                        blocking: vec![e.to_string()],
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
        let mut store_failed = Vec::new();
        let db_gates = match &observed {
            Observed::Known { .. } => {
                self.database_gates(&desired, &crate::prepare::desired_hash(&desired), active.as_ref())
                    .await
            }
            Observed::Unknown { .. } => BTreeMap::new(),
        };
        if let Observed::Known { services, .. } = &observed {
            let advanced = self
                .advance_rollout(&desired, services, active, now_ms, !db_gates.is_empty())
                .await;
            active = advanced.rollout;
            store_failed = advanced.failed;
        }
        match &observed {
            Observed::Known { services, .. } => {
                self.images = Some(
                    services
                        .iter()
                        .filter(|s| s.owner == Owner::Us)
                        .map(|s| (s.name.clone(), s.state.image.clone()))
                        .collect(),
                )
            }
            Observed::Unknown { .. } => self.images = None,
        }
        if let Observed::Known { services, .. } = &observed {
            self.known = desired
                .services
                .iter()
                .map(|d| d.name.clone())
                .chain(services.iter().map(|s| s.name.clone()))
                .collect();
        }
        let mut desired = desired;
        desired.retained_objects = retained_objects(&self.store, &desired, &observed);
        let gated = !db_gates.is_empty();
        desired.gates.extend(db_gates);
        let Planned {
            effective,
            plan: the_plan,
        } = pipeline(&desired, active.as_ref(), &observed);
        let mut progress = BTreeMap::new();
        if let Some(r) = &active {
            // Tasks on the new version, for status: only while Swarm is replacing them.
            for sr in r.services.iter().filter(|s| s.phase == SvcPhase::Updating) {
                if let Ok(p) = self.swarm.task_progress(&sr.name, &sr.to_image).await {
                    progress.insert(sr.name.clone(), p);
                }
            }
        }
        let applied = self.source_applied.as_ref().map(|r| r.describe.as_str());
        let attempted = self.source_attempted.as_ref().map(|r| r.describe.as_str());
        self.record_status(&StatusInput {
            desired: &effective,
            observed: &observed,
            plan: &the_plan,
            now,
            invalid: invalid.as_deref(),
            active: active.as_ref(),
            progress: &progress,
            applied,
            attempted,
        });

        let mut outcome = PassOutcome {
            plan: Some(the_plan.clone()),
            executed: 0,
            failed: store_failed,
            converged: false,
            blocking: invalid.into_iter().collect(),
            unknown: false,
            requeue_after: None,
            rollout: active.clone(),
        };

        let unknown = matches!(observed, Observed::Unknown { .. });
        if unknown {
            self.unreachable_failures += 1;
        }
        let (down, change) = stack::backend_transition(self.backend_down, &observed, &desired.stack);
        self.backend_down = down;
        if let Some(ev) = change {
            self.emit_event(&ev);
        }
        if unknown {
            outcome.unknown = true;
            outcome.requeue_after = Some(stack::unreachable_requeue(self.unreachable_failures));
            return outcome;
        }
        self.unreachable_failures = 0;

        let holds = stack::report_holds(&the_plan.held);
        for ev in &holds.events {
            self.emit_event(ev);
        }
        outcome.blocking.extend(holds.blocking);

        // Networks first: the services written next join them by name.
        self.reconcile_networks(&desired.stack, desired.prune, &mut outcome)
            .await;
        let conflict = self
            .execute_all(&desired.stack, &the_plan, active.as_ref(), &mut outcome)
            .await;

        let now_i = Instant::now();
        let settled = stack::settle(PassEnd {
            desired: &desired,
            plan: &the_plan,
            active: active.as_ref(),
            executed: outcome.executed,
            blocked: !outcome.blocking.is_empty(),
            conflict,
            now_ms,
            backoff: self
                .backoff
                .next_ready(now_i)
                .map(|t| t.saturating_duration_since(now_i)),
        });
        outcome.blocking.extend(settled.blocking);
        outcome.converged = settled.converged && !gated;
        outcome.requeue_after = settled.requeue_after;
        if gated {
            // A held gate opens by itself (replay resumes): look again soon.
            outcome.requeue_after = Some(outcome.requeue_after.map_or(GATE_RECHECK, |r| r.min(GATE_RECHECK)));
        }
        outcome
    }

    /// Carries out the plan's actions in order; true when one met a stale Swarm version.
    async fn execute_all(
        &mut self,
        stack: &str,
        the_plan: &Plan,
        active: Option<&Rollout>,
        outcome: &mut PassOutcome,
    ) -> bool {
        let mut conflict = false;
        let started = Instant::now();
        // Secrets and configs first: the services written next mount them.
        self.execute_objects(stack, the_plan, true, outcome).await;
        for action in &the_plan.actions {
            let object = action.object();
            let key = object.to_string();
            if let Some(until) = self.backoff.blocked_until(&key, started) {
                tracing::debug!(object = %object, "in backoff for {:?}", until - started);
                continue;
            }
            if !self.may_write() {
                outcome
                    .blocking
                    .push("this controller no longer leads: writes stopped".into());
                break;
            }
            match self.execute(stack, action).await {
                Ok(()) => {
                    self.emit_event(&stack::action_event(action, stack::rolling_back(active, action.name())));
                    self.backoff.succeeded(&key);
                    outcome.executed += 1;
                }
                Err(SwarmError::Conflict { .. }) => {
                    // Stale version: somebody wrote in between. Re-observe and re-plan at once.
                    conflict = true;
                    tracing::info!(object = %object, "version conflict; re-planning");
                }
                Err(e) => {
                    self.backoff.failed(&key, Instant::now());
                    self.emit(action.failure_reason(), &object, error_chain(&e));
                    outcome.failed.push(format!("{object}: {}", error_chain(&e)));
                }
            }
        }
        // Unused versions last, once no service written above refers to them.
        self.execute_objects(stack, the_plan, false, outcome).await;
        conflict
    }

    /// Creates (`creates`) or removes the plan's secrets and configs. The content never reaches
    /// an event: messages name the object only.
    async fn execute_objects(&mut self, stack: &str, the_plan: &Plan, creates: bool, outcome: &mut PassOutcome) {
        for a in &the_plan.objects {
            if matches!(a, ObjectAction::Create { .. }) != creates {
                continue;
            }
            if !self.may_write() {
                break;
            }
            let object = a.object();
            let (result, ok_reason, fail_reason, done) = match a {
                ObjectAction::Create { name, data } if creates => (
                    self.swarm.create_object(stack, name, data).await.map(|_| ()),
                    Reason::Created,
                    Reason::CreateFailed,
                    format!("created {object} for {}", ObjectRef::service(&data.service)),
                ),
                ObjectAction::Remove { kind, id, name } if !creates => (
                    self.swarm.remove_object(*kind, id, name).await,
                    Reason::Pruned,
                    Reason::RemoveFailed,
                    format!("removed {object}: no service or revision in history uses it"),
                ),
                _ => continue,
            };
            match result {
                Ok(()) => {
                    self.emit(ok_reason, &object, done);
                    outcome.executed += 1;
                }
                Err(e) => {
                    self.emit(fail_reason, &object, error_chain(&e));
                    outcome.failed.push(format!("{object}: {}", error_chain(&e)));
                }
            }
        }
    }

    /// One Swarm write, exactly as planned.
    async fn execute(&self, stack: &str, action: &Action) -> Result<(), SwarmError> {
        match action {
            Action::Create { service } => {
                self.swarm.create(stack, service).await?;
            }
            Action::Update {
                id, version, service, ..
            } => {
                self.swarm.update(stack, id, *version, service).await?;
            }
            Action::Remove { id, name, .. } => {
                self.swarm.remove(id, name).await?;
                // Logged, not propagated: the service is gone, and the next pass's status
                // cleanup removes a status that outlived it.
                if let Err(e) = self.store.remove_status("Service", name) {
                    tracing::error!(service = %name, error = %error_chain(&e), "cannot forget a removed service's status");
                }
            }
        }
        Ok(())
    }
}

/// Secrets and configs that no service uses but that a revision in history still refers to
/// (a rollback returns to them). Reads history only for the services such objects were made
/// for; a history that cannot be read retains every candidate: nothing is removed because a
/// read failed.
pub fn retained_objects(store: &Store, desired: &Desired, observed: &Observed) -> std::collections::BTreeSet<String> {
    let Observed::Known { services, objects } = observed else {
        return Default::default();
    };
    let used: std::collections::BTreeSet<&str> = desired
        .services
        .iter()
        .map(|d| &d.state)
        .chain(services.iter().map(|s| &s.state))
        .flat_map(|s| s.task.object_names())
        .collect();
    let candidates: Vec<_> = objects.iter().filter(|o| !used.contains(o.name.as_str())).collect();
    let mut retained = std::collections::BTreeSet::new();
    let mut histories: BTreeMap<&str, Option<std::collections::BTreeSet<String>>> = BTreeMap::new();
    for o in candidates {
        let Some(svc) = o.service.as_deref() else {
            // Not made for a service: not ours to judge.
            retained.insert(o.name.clone());
            continue;
        };
        let names = histories.entry(svc).or_insert_with(|| match store.revisions(svc) {
            Ok(revs) => Some(
                revs.iter()
                    .flat_map(|r| r.state.task.object_names().map(String::from).collect::<Vec<_>>())
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(service = svc, error = %error_chain(&e), "cannot read revision history; keeping its secrets");
                None
            }
        });
        if names.as_ref().is_none_or(|n| n.contains(&o.name)) {
            retained.insert(o.name.clone());
        }
    }
    retained
}
