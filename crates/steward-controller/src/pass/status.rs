//! Writing the statuses a pass computed (`steward_plan::stack_status`), and the `Converged`
//! events of services that became Ready.

use steward_backends::swarm::error_chain;
use steward_plan::stack_status::{became_ready, forgotten, service_statuses, stack_status, StatusInput};

use super::Controller;

impl Controller {
    /// Status is a report, recomputed and rewritten by every pass: a lost write heals at the next
    /// one, so failures are logged rather than failing the pass. (The only thing a stored status
    /// decides is whether a service's `Converged` event is new.)
    pub(super) fn record_status(&self, input: &StatusInput<'_>) {
        let services = service_statuses(input);
        for s in &services {
            let before = self.store.status(&s.kind, &s.name).ok().flatten();
            if let Some(ev) = became_ready(before.as_ref(), s) {
                self.emit_event(&ev);
            }
            if let Err(e) = self.store.put_status(s) {
                tracing::error!(error = %error_chain(&e), "cannot record status");
            }
        }
        if let Ok(stored) = self.store.statuses() {
            for (kind, name) in forgotten(&stored, &services, &input.desired.stack) {
                if let Err(e) = self.store.remove_status(&kind, &name) {
                    tracing::error!(kind, name, error = %error_chain(&e), "cannot forget a status");
                }
            }
        }
        if let Err(e) = self.store.put_status(&stack_status(input, &services)) {
            tracing::error!(stack = %input.desired.stack, error = %error_chain(&e), "cannot record the stack's status");
        }
    }
}
