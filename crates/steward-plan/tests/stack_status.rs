//! The statuses a pass reports (`steward_plan::stack_status`): each service's, with the
//! rollout's phase on top, and the Stack's conditions; the `Converged` event; stale statuses.

mod fixtures;

use std::collections::BTreeMap;

use fixtures::*;
use steward_core::{ObjectRef, Reason};
use steward_plan::rollout::{begin, Outcome, Phase, Revision};
use steward_plan::stack_status::*;
use steward_plan::status::{ConditionStatus as S, ConditionType as T, ResourceStatus};
use steward_plan::{pipeline, Desired, Observed, Plan};
use time::OffsetDateTime;

const T0: i64 = 1_700_000_000_000;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(T0 / 1000).unwrap()
}

fn input<'a>(
    desired: &'a Desired,
    observed: &'a Observed,
    plan: &'a Plan,
    progress: &'a BTreeMap<String, (u64, u64)>,
) -> StatusInput<'a> {
    StatusInput {
        desired,
        observed,
        plan,
        now: now(),
        invalid: None,
        active: None,
        progress,
        applied: Some("1a2b3c4 'ship' (Jane)"),
        attempted: Some("5d6e7f8 'typo' (Jane)"),
    }
}

/// (status, reason, message) of condition `t`.
fn cond(s: &ResourceStatus, t: T) -> (S, String, String) {
    let c = s.condition(t).unwrap_or_else(|| panic!("no {t:?} in {s:#?}"));
    (c.status, c.reason.clone(), c.message.clone())
}

fn web_and_api() -> Desired {
    stack(vec![
        desired("web").image("app:v1").replicas(2).build(),
        desired("api").image("api:v1").build(),
    ])
}

#[test]
fn a_converged_stack_is_ready_not_progressing_not_degraded() {
    let d = web_and_api();
    let observed = applied(&d);
    let p = pipeline(&d, None, &observed).plan;
    let progress = BTreeMap::new();
    let i = input(&d, &observed, &p, &progress);
    let services = service_statuses(&i);
    assert_eq!(services.len(), 2);
    assert!(services
        .iter()
        .all(|s| s.applied_revision.as_deref() == Some("1a2b3c4 'ship' (Jane)")
            && s.attempted_revision.as_deref() == Some("5d6e7f8 'typo' (Jane)")));
    let st = stack_status(&i, &services);
    assert_eq!((st.kind.as_str(), st.name.as_str()), ("Stack", "shop"));
    assert_eq!(
        cond(&st, T::Ready),
        (S::True, "Converged".into(), "2/2 services ready".into())
    );
    assert_eq!(
        cond(&st, T::Progressing),
        (
            S::False,
            "Converged".into(),
            "2/2 services ready, 0 changes planned".into()
        )
    );
    assert_eq!(cond(&st, T::Degraded), (S::False, "AsExpected".into(), String::new()));
    assert_eq!((st.desired_replicas, st.running_replicas), (Some(3), Some(3)));
    assert_eq!(st.applied_revision.as_deref(), Some("1a2b3c4 'ship' (Jane)"));
    assert_eq!(st.observed_generation, 1);
}

#[test]
fn an_unreadable_swarm_makes_every_stack_condition_unknown() {
    let d = web_and_api();
    let observed = Observed::Unknown { reason: "down".into() };
    let p = pipeline(&d, None, &observed).plan;
    let progress = BTreeMap::new();
    let i = input(&d, &observed, &p, &progress);
    let st = stack_status(&i, &service_statuses(&i));
    for t in [T::Ready, T::Progressing, T::Degraded] {
        assert_eq!(cond(&st, t).0, S::Unknown, "{t:?}");
    }
    assert_eq!(cond(&st, T::Ready).1, "BackendUnavailable");
    assert_eq!(st.running_replicas, None);
}

#[test]
fn a_refused_desired_state_degrades_the_stack_on_one_line() {
    let d = web_and_api();
    let observed = applied(&d);
    let p = pipeline(&d, None, &observed).plan;
    let progress = BTreeMap::new();
    let i = StatusInput {
        invalid: Some("a.yaml:3:1: unknown key replcas\nb.yaml:1:1: bad"),
        ..input(&d, &observed, &p, &progress)
    };
    let st = stack_status(&i, &service_statuses(&i));
    assert_eq!(
        cond(&st, T::Degraded),
        (
            S::True,
            "InvalidDesiredState".into(),
            "a.yaml:3:1: unknown key replcas; b.yaml:1:1: bad".into()
        )
    );
    assert_eq!(cond(&st, T::Ready).0, S::True, "the last valid state runs");
}

#[test]
fn planned_changes_and_degraded_services_show_on_the_stack() {
    let d = web_and_api();
    let web = &d.services[1];
    // api is missing (to create); web's update was paused by Swarm.
    let observed = known(vec![observed_from(web)
        .running(1)
        .update_state(steward_plan::UpdateState::Paused, "task failed")
        .build()]);
    let p = pipeline(&d, None, &observed).plan;
    let progress = BTreeMap::new();
    let i = input(&d, &observed, &p, &progress);
    let st = stack_status(&i, &service_statuses(&i));
    assert_eq!(
        cond(&st, T::Ready),
        (S::False, "NotReady".into(), "0/2 services ready".into())
    );
    assert_eq!(
        cond(&st, T::Progressing),
        (
            S::True,
            "Reconciling".into(),
            "0/2 services ready, 1 changes planned".into()
        )
    );
    assert_eq!(
        cond(&st, T::Degraded),
        (S::True, "ServicesDegraded".into(), "degraded: web".into())
    );
}

#[test]
fn a_rollout_shows_its_phase_on_the_stack_and_its_services() {
    let v1 = desired("web").image("app:v1").build();
    let d = stack_with(STACK, false, 2, vec![desired("web").image("app:v2").build()]);
    let last_good = BTreeMap::from([("web".to_string(), Revision::of(&v1, 1, T0, Outcome::Complete))]);
    let mut r = begin(&d, "h2", &last_good, T0).unwrap();
    r.phase = Phase::Updating;
    r.services[0].phase = steward_plan::rollout::SvcPhase::Updating;
    let observed = known(vec![observed_from(&d.services[0]).running(1).build()]);
    let planned = pipeline(&d, Some(&r), &observed);
    let progress = BTreeMap::from([("web".to_string(), (1, 3))]);
    let i = StatusInput {
        active: Some(&r),
        ..input(&planned.effective, &observed, &planned.plan, &progress)
    };
    let services = service_statuses(&i);
    assert_eq!(
        cond(&services[0], T::Progressing),
        (
            S::True,
            "Updating".into(),
            "generation 2: updating to app:v2: 1/3 tasks updated (0/1 services done)".into()
        )
    );
    let st = stack_status(&i, &services);
    assert_eq!(
        cond(&st, T::Progressing),
        (
            S::True,
            "Updating".into(),
            "1/1 services ready; rollout of generation 2: Updating (0/1 services done)".into()
        )
    );

    let mut rolled_back = r.clone();
    rolled_back.phase = Phase::RolledBack;
    rolled_back.cause = Some("web: boom".into());
    let i = StatusInput {
        active: Some(&rolled_back),
        ..i
    };
    let services = service_statuses(&i);
    assert_eq!(
        cond(&services[0], T::Degraded),
        (
            S::True,
            "RolledBack".into(),
            "generation 2 rolled back: web: boom".into()
        )
    );
}

#[test]
fn becoming_ready_is_one_converged_event() {
    let d = stack(vec![desired("web").image("app:v1").build()]);
    let observed = applied(&d);
    let p = pipeline(&d, None, &observed).plan;
    let progress = BTreeMap::new();
    let ready = service_statuses(&input(&d, &observed, &p, &progress)).remove(0);
    let ev = became_ready(None, &ready).expect("new and ready");
    assert_eq!(
        (ev.reason, ev.object.clone()),
        (Reason::Converged, ObjectRef::service("web"))
    );
    assert!(!ev.warning());
    assert_eq!(ev.message, cond(&ready, T::Ready).2);
    assert_eq!(became_ready(Some(&ready), &ready), None, "was ready already");

    let behind = known(vec![observed_from(&d.services[0]).running(0).build()]);
    let p = pipeline(&d, None, &behind).plan;
    let not_ready = service_statuses(&input(&d, &behind, &p, &progress)).remove(0);
    assert_eq!(became_ready(Some(&not_ready), &not_ready), None);
    assert!(became_ready(Some(&not_ready), &ready).is_some());
}

#[test]
fn statuses_no_longer_reported_are_forgotten_the_stack_is_kept() {
    let d = stack(vec![desired("web").image("app:v1").build()]);
    let observed = applied(&d);
    let p = pipeline(&d, None, &observed).plan;
    let progress = BTreeMap::new();
    let i = input(&d, &observed, &p, &progress);
    let services = service_statuses(&i);
    let mut gone = services[0].clone();
    gone.name = "old".into();
    let mut renamed = stack_status(&i, &services);
    renamed.name = "shop-old".into();
    let mut schedule = services[0].clone();
    schedule.kind = "Schedule".into();
    schedule.name = "db-backup".into();
    let stored = vec![
        stack_status(&i, &services),
        services[0].clone(),
        gone,
        renamed,
        schedule,
    ];
    assert_eq!(
        forgotten(&stored, &services, "shop"),
        [
            ("Service".to_string(), "old".to_string()),
            ("Stack".to_string(), "shop-old".to_string())
        ]
    );
}
