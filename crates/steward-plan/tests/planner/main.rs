//! Behaviour of `plan()` and `assess()` as a user of `steward plan` / `steward status` sees it.
//!
//! Shared helpers live here; the tests are in one module per topic beside this file.

#[path = "../fixtures/mod.rs"]
mod fixtures;

mod convergence;
mod ownership;
mod properties;
mod regressions;
mod updates;

use fixtures::*;
use steward_plan::assess::assess;
use steward_plan::status::{ConditionStatus, ConditionType, ResourceStatus};
use steward_plan::{plan, Action, Desired, FieldChange, Hold, Observed, Owner, Plan, UpdateReason, UpdateState};
use time::macros::datetime;
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2025-03-01 12:00:00 UTC);

fn change(field: &str, old: &str, new: &str) -> FieldChange {
    FieldChange {
        field: field.into(),
        old: old.into(),
        new: new.into(),
    }
}

/// The single Update of a plan that must contain exactly one action.
fn sole_update(p: &Plan) -> (&str, u64, &str, &[FieldChange], UpdateReason) {
    assert_eq!(p.actions.len(), 1, "expected exactly one action, got {:#?}", p.actions);
    match &p.actions[0] {
        Action::Update {
            id,
            version,
            service,
            changes,
            reason,
        } => (id, *version, &service.name, changes, *reason),
        other => panic!("expected an Update, got {other:#?}"),
    }
}

/// `(name, reason)` of every hold, in plan order.
fn holds(p: &Plan) -> Vec<(&str, &'static str)> {
    p.held.iter().map(|h| (h.name.as_str(), h.hold.reason())).collect()
}

fn status_of<'a>(statuses: &'a [ResourceStatus], name: &str) -> &'a ResourceStatus {
    statuses
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}: {statuses:#?}"))
}

/// `(Ready, Progressing, Degraded)` statuses.
fn rpd(s: &ResourceStatus) -> (ConditionStatus, ConditionStatus, ConditionStatus) {
    let get = |t| {
        s.condition(t)
            .unwrap_or_else(|| panic!("{} has no {t:?} condition", s.name))
            .status
    };
    (
        get(ConditionType::Ready),
        get(ConditionType::Progressing),
        get(ConditionType::Degraded),
    )
}

use ConditionStatus::{False as F, True as T, Unknown as U};

fn web() -> fixtures::DesiredBuilder {
    desired("web").image("app:v1").replicas(3).env("MODE", "a")
}

fn assert_no_secret(p: &Plan, secrets: &[&str]) {
    let shown = p.display();
    let json = serde_json::to_string(&p.to_json()).unwrap();
    for s in secrets {
        assert!(!shown.contains(s), "secret {s:?} in display():\n{shown}");
        assert!(!json.contains(s), "secret {s:?} in to_json():\n{json}");
    }
}
