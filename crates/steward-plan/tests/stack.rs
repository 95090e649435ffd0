//! The Stack pass's decisions (`steward_plan::stack`): baselines, starting and superseding
//! rollouts, which holds are events and which block, the events of writes, the backend's
//! up/down transitions, convergence and requeue, and `steward rollback`'s target.

mod fixtures;

use std::collections::BTreeMap;
use std::time::Duration;

use fixtures::*;
use steward_core::{ObjectRef, Reason};
use steward_plan::rollout::{self, begin, Outcome, Phase, Revision, Rollout, SvcPhase};
use steward_plan::stack::*;
use steward_plan::{plan, Action, Desired, DesiredService, FieldChange, Held, Hold, Owner, Plan, UpdateReason};
use steward_plan::{Observed, UpdateState};

const T0: i64 = 1_700_000_000_000;
const HASH: &str = "desired-gen-2";

fn v1() -> DesiredService {
    desired("web").image("app:v1").build()
}

fn v2() -> DesiredService {
    desired("web").image("app:v2").build()
}

fn revision(d: &DesiredService, number: u64, outcome: Outcome) -> Revision {
    let mut r = Revision::of(d, 1, T0, outcome);
    r.number = number;
    r
}

fn good(ds: &[&DesiredService]) -> BTreeMap<String, Revision> {
    ds.iter()
        .map(|d| (d.name.clone(), revision(d, 1, Outcome::Complete)))
        .collect()
}

/// The rollout of `web` from v1 to v2 at generation 2, in `phase`.
fn web_rollout(phase: Phase) -> (Desired, Rollout) {
    let d = stack_with(STACK, false, 2, vec![v2()]);
    let mut r = begin(&d, HASH, &good(&[&v1()]), T0).expect("a change");
    r.phase = phase;
    (d, r)
}

fn held(name: &str, hold: Hold) -> Held {
    Held {
        name: name.into(),
        hold,
    }
}

// ---------------------------------------------------------------------------------------------
// Baselines and rollouts
// ---------------------------------------------------------------------------------------------

#[test]
fn only_owned_services_matching_the_desired_state_without_history_become_baselines() {
    let web = v1();
    let api = desired("api").image("api:v1").build();
    let db = desired("db").image("postgres:16").build();
    let cache = desired("cache").image("redis:7").build();
    let d = stack_with(
        STACK,
        false,
        3,
        vec![web.clone(), api.clone(), db.clone(), cache.clone()],
    );
    let observed = vec![
        observed_from(&web).build(),
        // Owned, but runs something else: not known-good.
        observed_from(&api).image("api:v0").hash(Some("other")).build(),
        // Matching but not steward's.
        observed_from(&db).owner(Owner::Nobody).build(),
        // Already has history.
        observed_from(&cache).build(),
    ];
    let revs = baselines(&d, &observed, &good(&[&cache]), None, T0);
    assert_eq!(revs.len(), 1);
    let r = &revs[0];
    assert_eq!(
        (
            r.service.as_str(),
            r.spec_hash.as_str(),
            r.outcome,
            r.generation,
            r.created_ms
        ),
        ("web", web.spec_hash.as_str(), Outcome::Baseline, 3, T0)
    );
}

#[test]
fn a_service_the_rollout_in_force_handles_is_no_baseline() {
    let (d, r) = web_rollout(Phase::Updating);
    let observed = vec![observed_from(&v2()).build()];
    assert!(baselines(&d, &observed, &BTreeMap::new(), Some(&r), T0).is_empty());
    assert_eq!(baselines(&d, &observed, &BTreeMap::new(), None, T0).len(), 1);
}

#[test]
fn the_rollout_in_force_for_this_desired_state_is_kept() {
    let (d, r) = web_rollout(Phase::Updating);
    assert_eq!(change_rollout(&d, HASH, Some(&r), &good(&[&v1()]), T0), None);
}

#[test]
fn a_new_desired_state_starts_a_rollout_and_records_its_revisions() {
    let d = stack_with(STACK, false, 2, vec![v2()]);
    let change = change_rollout(&d, HASH, None, &good(&[&v1()]), T0).expect("no rollout in force");
    assert_eq!(change.superseded, None);
    let r = change.rollout.expect("web changed");
    assert_eq!((r.generation, r.desired_hash.as_str()), (2, HASH));
    assert_eq!(change.progressing.len(), 1);
    let p = &change.progressing[0];
    assert_eq!(
        (p.service.as_str(), p.spec_hash.as_str(), p.outcome, p.generation),
        ("web", v2().spec_hash.as_str(), Outcome::Progressing, 2)
    );
    let started = change.started.expect("started");
    assert_eq!(started.reason, Reason::RolloutStarted);
    assert_eq!(started.object, ObjectRef::rollout(2));
    assert!(!started.warning());
    assert_eq!(started.message, "rolling out generation 2: web app:v1 → app:v2");
}

#[test]
fn a_created_service_and_pre_deploy_jobs_show_in_the_started_event() {
    let mut api = desired("api").image("api:v1").build();
    api.rollout.pre_deploy = vec![steward_spec::PreDeployJob {
        name: steward_spec::ResourceName::try_from("migrate".to_string()).unwrap(),
        command: None,
        args: None,
        timeout: steward_spec::Duration::from_secs(60),
    }];
    let d = stack_with(STACK, false, 2, vec![api]);
    let change = change_rollout(&d, HASH, None, &BTreeMap::new(), T0).unwrap();
    assert_eq!(
        change.started.unwrap().message,
        "rolling out generation 2: api (new) → api:v1; 1 pre-deploy jobs first"
    );
}

#[test]
fn a_running_rollout_is_superseded_a_finished_one_is_not() {
    let (_, old) = web_rollout(Phase::Verifying);
    let d3 = stack_with(STACK, false, 3, vec![desired("web").image("app:v3").build()]);
    let change = change_rollout(&d3, "desired-gen-3", Some(&old), &good(&[&v1()]), T0).unwrap();
    let ev = change.superseded.expect("superseded");
    assert_eq!(
        (ev.reason, ev.object.to_string()),
        (Reason::RolloutSuperseded, "Rollout/2".into())
    );
    assert_eq!(ev.message, "generation 2 superseded by generation 3 while Verifying");
    assert!(change.rollout.is_some() && change.started.is_some());

    let (_, done) = web_rollout(Phase::Complete);
    let change = change_rollout(&d3, "desired-gen-3", Some(&done), &good(&[&v2()]), T0).unwrap();
    assert_eq!(change.superseded, None);
}

#[test]
fn a_desired_state_that_changes_nothing_yields_no_rollout() {
    let d = stack_with(STACK, false, 2, vec![v2()]);
    let change = change_rollout(&d, HASH, None, &good(&[&v2()]), T0).expect("asked again every pass");
    assert_eq!(
        change,
        RolloutChange {
            superseded: None,
            rollout: None,
            progressing: vec![],
            started: None,
        }
    );
}

#[test]
fn only_the_service_being_returned_is_rolling_back() {
    let (_, mut r) = web_rollout(Phase::RollingBack);
    assert!(!rolling_back(Some(&r), "web"), "pending is not rolling back");
    r.services[0].phase = SvcPhase::RollingBack;
    assert!(rolling_back(Some(&r), "web"));
    assert!(!rolling_back(Some(&r), "api"));
    assert!(!rolling_back(None, "web"));
}

#[test]
fn a_manual_rollback_records_the_restored_revision_as_known_good() {
    let d = stack_with(STACK, false, 4, vec![v2()]);
    let target = revision(&v1(), 1, Outcome::Complete);
    let r = rollout::manual_rollback(&d, HASH, "web", target.clone(), T0);
    let restored = finished_revision(&r, "web", Outcome::RolledBack, T0 + 5).expect("restored");
    assert_eq!(
        (
            restored.spec_hash.as_str(),
            restored.outcome,
            restored.generation,
            restored.created_ms
        ),
        (target.spec_hash.as_str(), Outcome::Complete, 4, T0 + 5)
    );
    assert_eq!(finished_revision(&r, "web", Outcome::Complete, T0), None);
    let (_, automatic) = web_rollout(Phase::RolledBack);
    assert_eq!(finished_revision(&automatic, "web", Outcome::RolledBack, T0), None);
}

// ---------------------------------------------------------------------------------------------
// Events and holds
// ---------------------------------------------------------------------------------------------

#[test]
fn conflicts_and_failed_updates_are_events_and_block_orphans_only_warn_waits_are_silent() {
    let report = report_holds(&[
        held("a", Hold::ConflictUnowned),
        held("b", Hold::Orphaned),
        held(
            "c",
            Hold::AwaitingConvergence {
                running: Some(1),
                desired: 2,
            },
        ),
        held(
            "d",
            Hold::WaitingOn {
                what: "dependencies of d".into(),
            },
        ),
        held("e", Hold::RevisionRejected { cause: "boom".into() }),
        held(
            "f",
            Hold::UpdateFailed {
                state: UpdateState::RollbackCompleted,
                message: "task failed".into(),
            },
        ),
        held("g", Hold::BackendUnknown { message: "down".into() }),
    ]);
    let events: Vec<(Reason, String, bool)> = report
        .events
        .iter()
        .map(|e| (e.reason, e.object.to_string(), e.warning()))
        .collect();
    assert_eq!(
        events,
        [
            (Reason::ConflictUnowned, "Service/a".into(), true),
            (Reason::Orphaned, "Service/b".into(), true),
            (Reason::RolledBack, "Service/f".into(), true),
            (Reason::BackendUnavailable, "Service/g".into(), true),
        ]
    );
    assert_eq!(report.events[1].message, Hold::Orphaned.message("b"));
    assert_eq!(
        report.blocking,
        [
            format!("Service/a: {}", Hold::ConflictUnowned.message("a")),
            "Service/f: Swarm update RollbackCompleted: task failed".to_string(),
            "Service/g: Swarm could not be read: down".to_string(),
        ]
    );
}

#[test]
fn every_write_has_its_event() {
    let web = v2();
    let create = Action::Create { service: web.clone() };
    let ev = action_event(&create, false);
    assert_eq!(
        (ev.reason, ev.object.to_string()),
        (Reason::Created, "Service/web".into())
    );
    assert_eq!(ev.message, "created service web (app:v2, 1 replicas)");

    let update = |reason, changes: Vec<FieldChange>| Action::Update {
        id: "id-web".into(),
        version: 10,
        service: web.clone(),
        changes,
        reason,
    };
    let image = || {
        vec![FieldChange {
            field: "image".into(),
            old: "app:v1".into(),
            new: "app:v2".into(),
        }]
    };
    let ev = action_event(&update(UpdateReason::SpecChanged, image()), false);
    assert_eq!(
        (ev.reason, ev.message.as_str()),
        (Reason::Updated, "updated: image: app:v1 → app:v2")
    );
    assert!(!ev.warning());
    let ev = action_event(&update(UpdateReason::DriftCorrected, image()), false);
    assert_eq!(
        (ev.reason, ev.message.as_str()),
        (
            Reason::DriftCorrected,
            "changed outside steward, restored: image: app:v1 → app:v2"
        )
    );
    assert!(ev.warning());
    let ev = action_event(&update(UpdateReason::Adopted, vec![]), false);
    assert_eq!(
        (ev.reason, ev.message.as_str()),
        (Reason::Adopted, "adopted existing service: ownership labels")
    );
    // A rollback's write says so whatever the planner's reason.
    let ev = action_event(&update(UpdateReason::SpecChanged, image()), true);
    assert_eq!(
        (ev.reason, ev.message.as_str()),
        (
            Reason::RollbackIssued,
            "restoring the previous revision: image: app:v1 → app:v2"
        )
    );
    assert!(ev.warning());

    let remove = Action::Remove {
        id: "id-old".into(),
        name: "old".into(),
        version: 3,
    };
    let ev = action_event(&remove, false);
    assert_eq!(
        (ev.reason, ev.object.to_string()),
        (Reason::Pruned, "Service/old".into())
    );
    assert_eq!(remove.failure_reason(), Reason::RemoveFailed);
    assert_eq!(create.failure_reason(), Reason::CreateFailed);
}

#[test]
fn the_backend_is_reported_once_down_and_once_back() {
    let down = Observed::Unknown {
        reason: "no engine".into(),
    };
    let up = known(vec![]);
    let (is_down, ev) = backend_transition(false, &down, STACK);
    let ev = ev.expect("first failure");
    assert!(is_down);
    assert_eq!(
        (ev.reason, ev.object.to_string()),
        (Reason::BackendUnavailable, "Stack/shop".into())
    );
    assert_eq!(
        ev.message,
        "Swarm could not be read; nothing will be changed until it can: no engine"
    );
    assert_eq!(backend_transition(true, &down, STACK), (true, None));
    let (is_down, ev) = backend_transition(true, &up, STACK);
    assert!(!is_down);
    assert_eq!(
        ev.map(|e| (e.reason, e.message)),
        Some((Reason::BackendRecovered, "Swarm is reachable again".into()))
    );
    assert_eq!(backend_transition(false, &up, STACK), (false, None));
}

#[test]
fn an_unreachable_engine_is_retried_after_one_second_doubling_to_thirty() {
    let secs: Vec<u64> = [1, 2, 3, 4, 5, 6, 7, 100]
        .into_iter()
        .map(|n| unreachable_requeue(n).as_secs())
        .collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(unreachable_requeue(0), Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// Convergence and requeue
// ---------------------------------------------------------------------------------------------

fn end<'a>(desired: &'a Desired, plan: &'a Plan, active: Option<&'a Rollout>) -> PassEnd<'a> {
    PassEnd {
        desired,
        plan,
        active,
        executed: 0,
        blocked: false,
        conflict: false,
        now_ms: T0,
        backoff: None,
    }
}

#[test]
fn nothing_to_do_is_converged_and_looks_again_only_when_a_backoff_ends() {
    let d = stack(vec![v1()]);
    let p = plan(&d, &applied(&d));
    let s = settle(end(&d, &p, None));
    assert_eq!(
        s,
        Settled {
            blocking: None,
            converged: true,
            requeue_after: None
        }
    );
    let backoff = Some(Duration::from_millis(40));
    assert_eq!(
        settle(PassEnd {
            backoff,
            ..end(&d, &p, None)
        })
        .requeue_after,
        backoff
    );
    let blocked = settle(PassEnd {
        blocked: true,
        ..end(&d, &p, None)
    });
    assert!(!blocked.converged);
}

#[test]
fn writes_and_waits_poll_a_conflict_replans_at_once() {
    let d = stack(vec![v2()]);
    let p = plan(&d, &known(vec![observed_from(&v1()).build()]));
    assert_eq!(p.actions.len(), 1);
    let s = settle(PassEnd {
        executed: 1,
        ..end(&d, &p, None)
    });
    assert_eq!((s.converged, s.requeue_after), (false, Some(CONVERGING_POLL)));
    let s = settle(PassEnd {
        conflict: true,
        executed: 1,
        ..end(&d, &p, None)
    });
    assert_eq!(s.requeue_after, Some(Duration::ZERO));

    let waiting = Plan {
        held: vec![held(
            "web",
            Hold::AwaitingConvergence {
                running: Some(0),
                desired: 1,
            },
        )],
        ..Plan::default()
    };
    let s = settle(end(&d, &waiting, None));
    assert_eq!((s.converged, s.requeue_after), (false, Some(CONVERGING_POLL)));
}

#[test]
fn a_running_rollout_is_looked_at_when_its_next_probe_is_due() {
    let (mut d, mut r) = web_rollout(Phase::Verifying);
    d.services[0].rollout.health = Some(steward_spec::HealthCheck {
        url: "http://127.0.0.1/health".into(),
        expect_status: 200,
        interval: steward_spec::Duration::from_secs(10),
        timeout: steward_spec::Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: 1,
    });
    d.services[0].rollout.verify_window_ms = 60_000;
    r.services[0].phase = SvcPhase::Verifying;
    r.services[0].phase_started_ms = T0;
    r.services[0].health.last_ms = Some(T0);
    let p = Plan::default();
    // Due in 10 s: the convergence poll comes first.
    let s = settle(end(&d, &p, Some(&r)));
    assert_eq!((s.converged, s.requeue_after), (false, Some(CONVERGING_POLL)));
    // Due in 200 ms.
    let s = settle(PassEnd {
        now_ms: T0 + 9_800,
        ..end(&d, &p, Some(&r))
    });
    assert_eq!(s.requeue_after, Some(Duration::from_millis(200)));
    // Overdue: at once.
    let s = settle(PassEnd {
        now_ms: T0 + 20_000,
        ..end(&d, &p, Some(&r))
    });
    assert_eq!(s.requeue_after, Some(Duration::ZERO));
}

#[test]
fn a_rolled_back_or_paused_rollout_blocks() {
    let (d, mut r) = web_rollout(Phase::RolledBack);
    r.cause = Some("web: health check failed".into());
    let p = Plan::default();
    let s = settle(end(&d, &p, Some(&r)));
    assert_eq!(
        s.blocking.as_deref(),
        Some("generation 2 rolled back: web: health check failed")
    );
    assert!(!s.converged);
    r.phase = Phase::Paused;
    r.cause = Some("web: no data".into());
    assert_eq!(
        settle(end(&d, &p, Some(&r))).blocking.as_deref(),
        Some("generation 2 paused: web: no data")
    );
    r.phase = Phase::Complete;
    assert_eq!(settle(end(&d, &p, Some(&r))).blocking, None);
}

// ---------------------------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------------------------

#[test]
fn the_pipeline_plans_what_the_rollout_lets_through_and_annotates_it() {
    let d = stack_with(STACK, false, 2, vec![v2()]);
    let observed = known(vec![observed_from(&v1()).build()]);
    let plain = pipeline(&d, None, &observed);
    assert_eq!(plain.effective, d);
    assert_eq!(plain.plan, plan(&d, &observed));

    let mut r = begin(&d, HASH, &good(&[&v1()]), T0).unwrap();
    // Pending: the previous revision stays.
    let pending = pipeline(&d, Some(&r), &observed);
    assert_eq!(pending.effective.services[0].spec_hash, v1().spec_hash);
    assert!(pending.plan.actions.is_empty());
    // Rolled back: the revision is rejected.
    r.phase = Phase::RolledBack;
    r.services[0].phase = SvcPhase::RolledBack;
    r.cause = Some("web: boom".into());
    let rejected = pipeline(&d, Some(&r), &observed);
    assert_eq!(
        rejected.plan.held,
        [held(
            "web",
            Hold::RevisionRejected {
                cause: "web: boom".into()
            }
        )]
    );
}

// ---------------------------------------------------------------------------------------------
// steward rollback
// ---------------------------------------------------------------------------------------------

#[test]
fn the_default_rollback_target_is_the_newest_known_good_other_revision() {
    let v0 = desired("web").image("app:v0").build();
    let v3 = desired("web").image("app:v3").build();
    // Newest first, as the store returns them.
    let history = vec![
        revision(&v3, 5, Outcome::RolledBack),
        revision(&v2(), 4, Outcome::Complete),
        revision(&v1(), 3, Outcome::Progressing),
        revision(&v1(), 2, Outcome::Complete),
        revision(&v0, 1, Outcome::Baseline),
    ];
    let target = rollback_target(&v2(), &history, None).unwrap();
    assert_eq!(target.number, 2, "v2 is desired; v1's newest known-good is revision 2");
    assert_eq!(rollback_target(&v3, &history, None).unwrap().number, 4);
    assert_eq!(rollback_target(&v2(), &history, Some(5)).unwrap().number, 5);
    assert_eq!(
        rollback_target(&v2(), &history, Some(9)).unwrap_err().to_string(),
        "web has no revision 9 (see `steward history web`)"
    );
    assert_eq!(
        rollback_target(&v0, &[revision(&v0, 1, Outcome::Baseline)], None)
            .unwrap_err()
            .to_string(),
        "web has no earlier known-good revision to roll back to"
    );
}

#[test]
fn a_rollback_is_only_for_a_desired_service_and_says_what_is_pinned() {
    let d = stack_with(STACK, false, 7, vec![v2()]);
    assert_eq!(rollback_service(&d, "web").unwrap().name, "web");
    assert_eq!(
        rollback_service(&d, "api").unwrap_err().to_string(),
        "no Service named \"api\" in the desired state"
    );
    let ev = manual_rollback_event(&d, "web", &revision(&v1(), 2, Outcome::Complete));
    assert_eq!(
        (ev.reason, ev.object.to_string(), ev.warning()),
        (Reason::ManualRollback, "Service/web".into(), true)
    );
    assert_eq!(
        ev.message,
        "rolling back to revision 2 (app:v1); generation 7 is pinned out until the desired state changes"
    );
}
