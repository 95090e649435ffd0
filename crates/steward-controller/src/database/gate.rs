//! Deploy gates and `backupBefore`: what the Stack pass asks of the Databases.
//!
//! A gate is checked only where a rollout would begin with none in progress: a rollout already
//! running is never held or aborted by one. A rollout is stack-wide, so a gate that holds keeps every changed service of
//! that generation waiting, each with the measured reason.

use std::collections::BTreeMap;
use std::time::Duration;

use steward_core::ObjectRef;
use steward_database::backup::BackupTrigger;
use steward_database::status::gate_hold;
use steward_database::{Reason, Task};
use steward_plan::plan::Hold;
use steward_plan::rollout::{JobObs, Rollout};
use steward_plan::status::EventType;
use steward_plan::Desired;
use steward_schedule::run::Trigger;
use steward_store::Claim;
use time::OffsetDateTime;

use super::{event_type, finish_run, new_run, InFlight, TaskContext};
use crate::pass::Controller;

/// An observation older than this is read again before a gate is judged on it.
const GATE_FRESHNESS: time::Duration = time::Duration::seconds(2);

impl Controller {
    /// Holds for the services a new rollout would carry, when a gate of one of them is closed;
    /// empty when the rollout may begin (or none would).
    pub(crate) async fn database_gates(
        &mut self,
        desired: &Desired,
        desired_hash: &str,
        active: Option<&Rollout>,
    ) -> BTreeMap<String, Hold> {
        // A rollout in progress is never held or aborted by a gate (a newer generation
        // supersedes it as usual); nor is the rollout of this very desired state.
        if active.is_some_and(|r| r.desired_hash == desired_hash || !r.phase.is_terminal()) {
            return BTreeMap::new();
        }
        // Every pass asks: a stack without gates (and nothing held) costs no store read.
        if self.gate_held.is_empty() && desired.services.iter().all(|d| d.rollout.gates.is_empty()) {
            return BTreeMap::new();
        }
        let last_good = self.store.last_good().unwrap_or_default();
        let changed: Vec<&steward_plan::DesiredService> = desired
            .services
            .iter()
            .filter(|d| last_good.get(&d.name).is_none_or(|r| r.spec_hash != d.spec_hash))
            .collect();
        let mut reasons: Vec<(String, String)> = Vec::new();
        for d in &changed {
            for (db_name, max_ms) in &d.rollout.gates {
                let Some(db) = self.databases.iter().find(|x| &x.name == db_name).cloned() else {
                    reasons.push((d.name.clone(), format!("Database/{db_name}: not in the desired state")));
                    continue;
                };
                let fresh = self
                    .db_runtime
                    .get(db_name)
                    .and_then(|rt| rt.last.as_ref())
                    .filter(|o| OffsetDateTime::now_utc() - o.at < GATE_FRESHNESS)
                    .cloned();
                let obs = match fresh {
                    Some(o) => o,
                    None => self.observe_database(&db, false).await,
                };
                let limit = max_ms.map_or(db.lag_limit(), |ms| Duration::from_millis(ms.max(0) as u64));
                if let Some(why) = gate_hold(db_name, Some(&obs), limit) {
                    reasons.push((d.name.clone(), why));
                }
            }
        }
        let mut holds = BTreeMap::new();
        if reasons.is_empty() {
            for (svc, why) in std::mem::take(&mut self.gate_held) {
                self.event(
                    EventType::Normal,
                    Reason::GateOpened.as_str(),
                    &ObjectRef::service(&svc).to_string(),
                    format!("deploy gate open (it held: {why})"),
                );
            }
            return holds;
        }
        let summary = reasons
            .iter()
            .map(|(svc, why)| format!("{svc}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        for d in &changed {
            let what = match reasons.iter().find(|(s, _)| s == &d.name) {
                Some((_, why)) => why.clone(),
                None => format!("the rollout's deploy gates ({summary})"),
            };
            if !self.gate_held.contains_key(&d.name) {
                self.event(
                    EventType::Warning,
                    Reason::WaitingOn.as_str(),
                    &ObjectRef::service(&d.name).to_string(),
                    format!(
                        "rollout of generation {} held by a deploy gate: {what}",
                        desired.generation
                    ),
                );
                self.gate_held.insert(d.name.clone(), what.clone());
            }
            holds.insert(d.name.clone(), Hold::WaitingOn { what });
        }
        holds
    }

    /// Starts the PreDeploy backup `key` of `database` (a rollout's job record); false when it
    /// could not be started.
    pub(crate) fn start_predeploy_backup(&mut self, database: &str, key: &str) -> bool {
        let Some(db) = self.databases.iter().find(|d| d.name == database).cloned() else {
            return false;
        };
        // The run a stopped controller left active would refuse the claim: failed first.
        self.reap_abandoned_runs(database);
        let now = OffsetDateTime::now_utc();
        let run = new_run(&db.name, Task::Backup, now, Trigger::Manual, now);
        let run = match self.store.claim_run(&run, false) {
            Ok(Claim::Inserted(id)) => steward_schedule::run::Run { id, ..run },
            _ => return false,
        };
        let rt = self.db_runtime.entry(db.name.clone()).or_default();
        let ctx = TaskContext {
            trigger: BackupTrigger::PreDeploy,
            now,
            hold: rt.hold.clone(),
            window_closes: None,
        };
        let flight = InFlight::launch(&db, Task::Backup, run, self.store.clone(), ctx);
        self.predeploy_backups.insert(key.to_string(), flight);
        true
    }

    /// The state of a rollout's PreDeploy backup, as the state machine reads a job's.
    pub(crate) async fn predeploy_backup_state(&mut self, database: &str, key: &str) -> JobObs {
        let Some(f) = self.predeploy_backups.get(key) else {
            // Nobody takes it (a restarted controller, or its start failed): the rollout's
            // planner starts it again.
            return JobObs::Missing;
        };
        if !f.handle.is_finished() {
            return JobObs::Running;
        }
        let f = self.predeploy_backups.remove(key).expect("present");
        let (run, out) = f.join(Task::Backup).await;
        let object = ObjectRef::database(database).to_string();
        finish_run(&self.store, database, run, &out, &mut |r, m| {
            self.event(event_type(r), r.as_str(), &object, m.to_string())
        });
        if out.ok {
            JobObs::Succeeded { logs: out.message }
        } else {
            JobObs::Failed {
                reason: out.message,
                logs: out.logs,
            }
        }
    }
}
