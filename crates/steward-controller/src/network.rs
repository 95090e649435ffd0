//! The Network step of a Stack pass: observe the stack's networks, ask the pure planner
//! (`steward_network::plan`), carry out its actions verbatim, and record status and events.
//! It runs before the Stack's services are written: they refer to their networks by name.

use steward_backends::swarm::{error_chain, Swarm};
use steward_core::status::{Condition, ConditionType, EventType, ResourceStatus};
use steward_core::{Kind, ObjectRef, Observation};
use steward_network::plan::{plan, Action, Input, Plan, Reason};
use steward_network::DesiredNetwork;
use time::OffsetDateTime;

use crate::pass::{Controller, PassOutcome};

const KIND: &str = "Network";

/// Reads what the planner needs and plans: one list call, and the attachments (two more) only
/// when a removal or recreation depends on them. Shared by the pass and `steward plan`.
pub async fn plan_networks(swarm: &Swarm, stack: &str, prune: bool, desired: &[DesiredNetwork]) -> Plan {
    let names: Vec<&str> = desired.iter().map(|d| d.name.as_str()).collect();
    let observed = match swarm.observe_networks(stack, &names).await {
        Ok(n) => Observation::Known(n),
        Err(e) => Observation::unknown(error_chain(&e)),
    };
    let not_read = Observation::unknown("not read");
    let input = Input {
        stack,
        prune,
        desired,
        observed: &observed,
        attached: &not_read,
    };
    let first = plan(&input);
    if !first.needs_attachments() {
        return first;
    }
    let attached = match swarm.network_attachments().await {
        Ok(a) => Observation::Known(a),
        Err(e) => Observation::unknown(error_chain(&e)),
    };
    plan(&Input {
        attached: &attached,
        ..input
    })
}

impl Controller {
    /// Plans and carries out the stack's networks; executed writes, failures and errors that
    /// will not clear by waiting go to `outcome`.
    pub(crate) async fn reconcile_networks(&mut self, stack: &str, prune: bool, outcome: &mut PassOutcome) {
        let desired = self.networks.clone();
        let the_plan = plan_networks(&self.swarm, stack, prune, &desired).await;
        for (name, hold) in the_plan.holds() {
            self.network_event(hold.reason(), name, hold.message(name));
            if hold.is_error() {
                outcome.blocking.push(format!(
                    "{}: {}",
                    ObjectRef::new(Kind::Network, name),
                    hold.message(name)
                ));
            }
        }
        for action in the_plan.actions() {
            if !self.may_write() {
                outcome
                    .blocking
                    .push("this controller no longer leads: writes stopped".into());
                break;
            }
            let object = action.object();
            let result = match &action {
                Action::Create { network } => self
                    .swarm
                    .create_network(stack, network)
                    .await
                    .map(|_| Some((Reason::Created, format!("created {object} ({})", network.driver)))),
                Action::Recreate { id, network } => match self.swarm.remove_network(id, &network.name).await {
                    Ok(_) => self.swarm.create_network(stack, network).await.map(|_| {
                        Some((
                            Reason::Recreated,
                            format!("recreated {object}: it differed from its document and no service used it"),
                        ))
                    }),
                    Err(e) => Err(e),
                },
                // Gone already: a removal of an earlier pass that the node still lists for a
                // moment. Nothing happened, so nothing is reported.
                Action::Remove { id, name } => self.swarm.remove_network(id, name).await.map(|removed| {
                    removed.then(|| {
                        (
                            Reason::Pruned,
                            format!("removed {object}: no longer desired and no service attached"),
                        )
                    })
                }),
            };
            match result {
                Ok(Some((reason, message))) => {
                    self.network_event(reason, action.name(), message);
                    outcome.executed += 1;
                }
                Ok(None) => tracing::debug!(object = %object, "already removed"),
                Err(e) => {
                    let reason = match action {
                        Action::Remove { .. } => Reason::RemoveFailed,
                        _ => Reason::CreateFailed,
                    };
                    self.network_event(reason, action.name(), error_chain(&e));
                    outcome.failed.push(format!("{object}: {}", error_chain(&e)));
                }
            }
        }
        self.record_network_status(&the_plan, &desired);
    }

    fn network_event(&self, reason: Reason, name: &str, message: String) {
        let type_ = if reason.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.event(
            type_,
            reason.as_str(),
            &ObjectRef::new(Kind::Network, name).to_string(),
            message,
        );
    }

    /// Status is a report rewritten by every pass (a lost write heals at the next): failures are
    /// logged. A condition keeps its transition time while its status stays the same.
    fn record_network_status(&self, the_plan: &Plan, desired: &[DesiredNetwork]) {
        let now = OffsetDateTime::now_utc();
        for e in &the_plan.entries {
            if matches!(e.decision, steward_network::Decision::Remove { .. }) {
                // Removed above (or the removal failed and is retried): nothing to report as its.
                continue;
            }
            let before = self.store.status(KIND, &e.name).ok().flatten();
            let conditions = ConditionType::ALL
                .into_iter()
                .zip(e.conditions())
                .map(|(type_, (status, reason, message))| {
                    let since = before
                        .as_ref()
                        .and_then(|b| b.condition(type_))
                        .filter(|c| c.status == status)
                        .map_or(now, |c| c.last_transition_time);
                    Condition {
                        type_,
                        status,
                        reason: reason.to_string(),
                        message,
                        last_transition_time: since,
                        observed_generation: self.generation,
                    }
                })
                .collect();
            let details = desired.iter().find(|d| d.name == e.name).map(|d| {
                serde_json::json!({
                    "driver": d.driver,
                    "attachable": d.attachable,
                    "internal": d.internal,
                    "adopt": d.adopt,
                    "desired": e.desired,
                })
            });
            let status = ResourceStatus::without_tasks(KIND, &e.name, conditions, self.generation, now, details);
            if let Err(err) = self.store.put_status(&status) {
                tracing::error!(network = %e.name, error = %error_chain(&err), "cannot record status");
            }
        }
        // Statuses of networks that are neither desired nor left over: only when Swarm was
        // read (an unreadable Swarm lists no leftovers, which is not their absence).
        if the_plan.unknown.is_some() {
            return;
        }
        if let Ok(stored) = self.store.statuses() {
            for s in stored.iter().filter(|s| s.kind == KIND) {
                let kept = the_plan
                    .entries
                    .iter()
                    .any(|e| e.name == s.name && !matches!(e.decision, steward_network::Decision::Remove { .. }));
                if !kept {
                    if let Err(err) = self.store.remove_status(KIND, &s.name) {
                        tracing::error!(network = %s.name, error = %error_chain(&err), "cannot forget a status");
                    }
                }
            }
        }
    }
}
