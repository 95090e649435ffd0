//! `assess()`: awaiting convergence, failed updates, Swarm rollbacks and the conditions shown.

use super::*;

// ---------------------------------------------------------------------------------------------
// Convergence and failed updates
// ---------------------------------------------------------------------------------------------

#[test]
fn fewer_tasks_running_than_desired_is_awaiting_convergence() {
    let w = web().build();
    let d = stack(vec![w.clone()]);
    let o = known(vec![observed_from(&w).running(1).build()]);
    let p = plan(&d, &o);

    assert!(p.actions.is_empty(), "waiting must not write: {:#?}", p.actions);
    assert_eq!(
        p.held[0].hold,
        Hold::AwaitingConvergence {
            running: Some(1),
            desired: 3
        }
    );
    assert!(!p.held[0].hold.is_error());
    assert!(
        p.display()
            .contains("1 waiting, 0 errors\n… Service/web AwaitingConvergence: 1/3 tasks running\n"),
        "{}",
        p.display()
    );

    let s = &assess(&d, &o, &p, NOW)[0];
    assert_eq!(rpd(s), (F, T, F));
    assert_eq!(s.condition(ConditionType::Ready).unwrap().reason, "AwaitingConvergence");
    assert_eq!(s.condition(ConditionType::Degraded).unwrap().reason, "AsExpected");
    assert_eq!(s.running_replicas, Some(1));
    assert_eq!(s.desired_replicas, Some(3));
}

#[test]
fn rollout_in_progress_is_awaiting_convergence_even_with_all_tasks_counted() {
    let w = web().build();
    let o = observed_from(&w)
        .update_state(UpdateState::Updating, "update in progress")
        .build();
    let p = plan(&stack(vec![w]), &known(vec![o]));
    assert!(p.actions.is_empty());
    assert_eq!(holds(&p), [("web", "AwaitingConvergence")]);
}

#[test]
fn paused_update_is_an_error_and_degraded() {
    let w = web().build();
    let d = stack(vec![w.clone()]);
    let o = known(vec![observed_from(&w)
        .running(2)
        .update_state(
            UpdateState::Paused,
            "update paused due to failure or early termination of task x",
        )
        .build()]);
    let p = plan(&d, &o);

    assert!(p.actions.is_empty(), "{:#?}", p.actions);
    assert_eq!(
        p.held[0].hold,
        Hold::UpdateFailed {
            state: UpdateState::Paused,
            message: "update paused due to failure or early termination of task x".into()
        }
    );
    assert!(p.held[0].hold.is_error());
    assert_eq!(p.held[0].hold.reason(), "UpdatePaused");

    let s = &assess(&d, &o, &p, NOW)[0];
    assert_eq!(rpd(s), (F, F, T));
    let degraded = s.condition(ConditionType::Degraded).unwrap();
    assert_eq!(degraded.reason, "UpdatePaused");
    assert!(degraded.message.contains("early termination"), "{}", degraded.message);
}

/// With the spec already equal to the desired one, a Swarm rollback is Swarm restoring *our*
/// spec after someone else's update failed: in progress it is a wait, done it is converged; only
/// a failed rollback is an error. (Rollbacks of steward's own updates are the rollout's business.)
#[test]
fn rollback_states_toward_the_desired_spec() {
    let w = web().build();
    for (state, hold) in [
        (UpdateState::RollbackStarted, Some(("AwaitingConvergence", false))),
        (UpdateState::RollbackCompleted, None),
        (UpdateState::RollbackPaused, Some(("RollbackPaused", true))),
    ] {
        let p = plan(
            &stack(vec![w.clone()]),
            &known(vec![observed_from(&w).update_state(state, "rollback").build()]),
        );
        assert!(p.actions.is_empty());
        match hold {
            Some((reason, error)) => {
                assert_eq!(holds(&p), [("web", reason)], "{state:?}");
                assert_eq!(p.held[0].hold.is_error(), error, "{state:?}");
            }
            None => assert!(p.held.is_empty(), "{state:?}: {:?}", p.held),
        }
    }
}

#[test]
fn converged_assessment_is_ready_and_tracks_the_generation() {
    let w = web().build();
    let d = stack_with(STACK, false, 17, vec![w.clone()]);
    let o = applied(&d);
    let p = plan(&d, &o);
    let statuses = assess(&d, &o, &p, NOW);

    assert_eq!(statuses.len(), 1);
    let s = &statuses[0];
    assert_eq!((s.kind.as_str(), s.name.as_str()), ("Service", "web"));
    assert_eq!(rpd(s), (T, F, F));
    let types: Vec<ConditionType> = s.conditions.iter().map(|c| c.type_).collect();
    assert_eq!(types, ConditionType::ALL);
    for c in &s.conditions {
        assert_eq!(c.observed_generation, 17);
        assert_eq!(c.last_transition_time, NOW);
    }
    assert_eq!(s.condition(ConditionType::Ready).unwrap().reason, "Converged");
    assert_eq!(
        s.condition(ConditionType::Ready).unwrap().message,
        "3/3 tasks running app:v1"
    );
    assert_eq!(s.condition(ConditionType::Degraded).unwrap().reason, "AsExpected");
    assert_eq!(s.observed_generation, 17);
    assert_eq!(s.last_reconcile, NOW);
    assert_eq!((s.desired_replicas, s.running_replicas), (Some(3), Some(3)));
    assert_eq!(s.image.as_deref(), Some("app:v1"));
}
