//! The rollout's IO within a pass: reading and persisting it, recording revisions, gathering
//! what its state machine observes, and starting and removing its jobs. What to do is decided
//! by `steward_plan::stack` and `steward_plan::rollout`.

use steward_backends::swarm::error_chain;
use steward_core::{ObjectRef, Reason};
use steward_plan::rollout::{self, Revision, Rollout};
use steward_plan::stack;
use steward_plan::{Desired, ObservedService, Owner};
use steward_store::StoreError;
use time::OffsetDateTime;

use super::{Controller, RollbackError, META_ROLLOUT};
use crate::prepare::desired_hash;
use crate::rollouts::start_job;

/// The rollout in force after this pass's step, and the store writes that failed on the way.
pub(super) struct Advanced {
    pub rollout: Option<Rollout>,
    /// `Service/name: what failed: cause`, for `PassOutcome.failed`.
    pub failed: Vec<String>,
}

impl Controller {
    /// The persisted rollout, if any. A corrupt record is dropped with a warning rather than
    /// wedging the loop.
    pub fn load_rollout(&self) -> Option<Rollout> {
        let text = self.store.get_meta(META_ROLLOUT).ok().flatten()?;
        // `null` is what `save_rollout(None)` writes: no rollout, nothing unreadable.
        match serde_json::from_str::<Option<Rollout>>(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "dropping unreadable rollout record");
                None
            }
        }
    }

    /// Pins `service` to revision `to` (default: the newest known-good revision other than the
    /// desired one): the desired revision is rejected until the desired state changes.
    pub fn start_manual_rollback(&mut self, service: &str, to: Option<u64>) -> Result<Revision, RollbackError> {
        let desired = self.load_desired()?;
        let current = stack::rollback_service(&desired, service)?;
        let history = self.store.revisions(service).map_err(|source| RollbackError::History {
            service: service.to_string(),
            source: Box::new(source),
        })?;
        let target = stack::rollback_target(current, &history, to)?;
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let r = rollout::manual_rollback(&desired, &desired_hash(&desired), service, target.clone(), now_ms);
        // Propagated: a rollback that is not persisted is not carried out by the next pass.
        self.save_rollout(Some(&r)).map_err(|source| RollbackError::Persist {
            service: service.to_string(),
            source: Box::new(source),
        })?;
        self.emit_event(&stack::manual_rollback_event(&desired, service, &target));
        Ok(target)
    }

    /// Persists the rollout in force (`None`: there is none).
    pub fn save_rollout(&self, r: Option<&Rollout>) -> Result<(), StoreError> {
        let text = r.map_or_else(
            || "null".to_string(),
            |r| serde_json::to_string(r).expect("rollout serializes"),
        );
        self.store.set_meta(META_ROLLOUT, &text)
    }

    /// Begins a rollout for a new desired state, or advances the one in force.
    ///
    /// Store writes here decide later passes (the known-good revision a rollback restores, the
    /// record that survives a restart), so a failed one is reported in `PassOutcome.failed`,
    /// besides being logged. The pass goes on: Swarm is written exactly as it would be, and the
    /// rollout's step is not repeated for a write that failed (its outcomes are one-shot), so
    /// looking again sooner would not retry it.
    pub(super) async fn advance_rollout(
        &mut self,
        desired: &Desired,
        services: &[ObservedService],
        mut active: Option<Rollout>,
        now_ms: i64,
        gated: bool,
    ) -> Advanced {
        let hash = desired_hash(desired);
        let mut failed = Vec::new();
        let mut last_good = self.store.last_good().unwrap_or_default();

        for rev in stack::baselines(desired, services, &last_good, active.as_ref(), now_ms) {
            // Not stored, not a baseline: a rollout begun now treats the service as new.
            match self.store.add_revision(&rev) {
                Ok(_) => {
                    last_good.insert(rev.service.clone(), rev);
                }
                Err(e) => store_failed(
                    &mut failed,
                    &ObjectRef::service(&rev.service),
                    "cannot record the baseline revision",
                    &e,
                ),
            }
        }

        // A deploy gate that holds keeps a new rollout from beginning; one in force goes on.
        let change = if gated {
            None
        } else {
            stack::change_rollout(desired, &hash, active.as_ref(), &last_good, now_ms)
        };
        if let Some(change) = change {
            if let Some(ev) = &change.superseded {
                self.emit_event(ev);
            }
            for rev in &change.progressing {
                if let Err(e) = self.store.add_revision(rev) {
                    store_failed(
                        &mut failed,
                        &ObjectRef::service(&rev.service),
                        "cannot record the revision being rolled out",
                        &e,
                    );
                }
            }
            if let Some(ev) = &change.started {
                self.emit_event(ev);
            }
            active = change.rollout;
            if let Err(e) = self.save_rollout(active.as_ref()) {
                store_failed(
                    &mut failed,
                    &ObjectRef::stack(&desired.stack),
                    "cannot persist the rollout",
                    &e,
                );
            }
        }

        let Some(mut r) = active else {
            return Advanced { rollout: None, failed };
        };
        if r.phase.is_terminal() {
            return Advanced {
                rollout: Some(r),
                failed,
            };
        }
        let mut gathered = self.gatherer.gather(&self.swarm, &r, desired, now_ms).await;
        for j in r.jobs.iter().filter(|j| !j.done && j.started_ms.is_some()) {
            if let Some(db) = &j.backup_of {
                let obs = self.predeploy_backup_state(db, &j.swarm_name).await;
                gathered.jobs.insert(j.swarm_name.clone(), obs);
            }
        }
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
        if let Err(e) = self.save_rollout(Some(&r)) {
            store_failed(
                &mut failed,
                &ObjectRef::rollout(r.generation),
                "cannot persist the rollout",
                &e,
            );
        }
        for j in &out.start_jobs {
            if !self.may_write() {
                break;
            }
            if let Err(e) = start_job(&self.swarm, &desired.stack, j).await {
                // The event is about the job's service; its message is Swarm's own account.
                self.emit(
                    Reason::PreDeployStartFailed,
                    &ObjectRef::service(&j.service),
                    error_chain(&e.source),
                );
            }
        }
        for (db, key) in &out.start_backups {
            if !self.may_write() {
                break;
            }
            if !self.start_predeploy_backup(db, key) {
                self.emit(
                    Reason::PreDeployStartFailed,
                    &ObjectRef::database(db),
                    format!("cannot start the backupBefore backup of Database/{db}"),
                );
            }
        }
        for name in out.remove_jobs.iter().filter(|n| !rollout::is_backup_key(n)) {
            if !self.may_write() {
                break;
            }
            if let Err(e) = self.swarm.remove_job(name).await {
                tracing::warn!(job = %name, error = %error_chain(&e), "cannot remove finished job");
            }
        }
        for ev in &out.events {
            self.emit_event(ev);
        }
        for (svc, hash, outcome) in &out.finished {
            if let Err(e) = self.store.set_revision_outcome(svc, hash, *outcome) {
                store_failed(
                    &mut failed,
                    &ObjectRef::service(svc),
                    "cannot record the revision's outcome",
                    &e,
                );
            }
            // A manual rollback makes the restored revision the known-good one.
            if let Some(restored) = stack::finished_revision(&r, svc, *outcome, now_ms) {
                if let Err(e) = self.store.add_revision(&restored) {
                    store_failed(
                        &mut failed,
                        &ObjectRef::service(svc),
                        "cannot record the restored revision",
                        &e,
                    );
                }
            }
        }
        Advanced {
            rollout: Some(r),
            failed,
        }
    }
}

/// Logs a failed store write once, with its chain, and reports it for `PassOutcome.failed`.
fn store_failed(failed: &mut Vec<String>, object: &ObjectRef, what: &str, e: &StoreError) {
    let chain = error_chain(e);
    tracing::error!(object = %object, error = %chain, "{what}");
    failed.push(format!("{object}: {what}: {chain}"));
}
