//! `annotate()`, manual rollback, and revisions with their secrets blanked and restored.

use super::*;

// ---------------------------------------------------------------------------------------------
// annotate
// ---------------------------------------------------------------------------------------------

#[test]
fn annotate_drops_update_failed_of_rollout_services_and_adds_revision_rejected() {
    let (web1, web2) = (v1(), v2());
    let db = desired("db").image("postgres:16").build();
    let d = gen2(vec![web2.clone(), db.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &db]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&web1), converged(&db)]));

    // Swarm rolled web back by itself; db, outside the rollout, has its own paused update.
    let web_obs = with_status(converged(&web1), UpdateState::RollbackStarted, T0 + SEC);
    let db_obs = with_status(converged(&db), UpdateState::Paused, T0 - 3_600 * SEC);
    let out = step(&mut r, &d, &at(T0 + 10 * SEC, vec![web_obs.clone(), db_obs.clone()]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    let mut p = plan_for(&d, &r, &[web_obs.clone(), db_obs.clone()]);
    // Swarm is restoring the spec the rollout wants back: to the planner that is a wait.
    assert_eq!(
        hold_reasons(&p),
        [("db", "UpdatePaused"), ("web", "AwaitingConvergence")],
        "planner's view before annotate"
    );
    annotate(&mut p, &r);
    assert_eq!(
        hold_reasons(&p),
        [("db", "UpdatePaused"), ("web", "AwaitingConvergence")],
        "annotate adds nothing while rolling back"
    );

    let web_done = with_status(converged(&web1), UpdateState::RollbackCompleted, T0 + SEC);
    let out = step(&mut r, &d, &at(T0 + 20 * SEC, vec![web_done.clone(), db_obs.clone()]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    let mut p = plan_for(&d, &r, &[web_done, db_obs]);
    annotate(&mut p, &r);
    assert_eq!(hold_reasons(&p), [("db", "UpdatePaused"), ("web", "RevisionRejected")]);
    let cause = r.cause.clone().unwrap();
    assert_eq!(p.held[1].hold, Hold::RevisionRejected { cause: cause.clone() });
    assert!(p.held[1].hold.is_error());
    assert!(p.held[1].hold.message("web").contains("not applied again"));
}

#[test]
fn annotate_adds_nothing_while_progressing() {
    let (old, new) = (v1(), v2());
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    let mut p = plan_for(&d, &r, &[rolling(&new, T0 + SEC)]);
    let before = p.held.clone();
    annotate(&mut p, &r);
    assert_eq!(p.held, before);
    assert_eq!(hold_reasons(&p), [("web", "AwaitingConvergence")]);
}

// ---------------------------------------------------------------------------------------------
// Manual rollback
// ---------------------------------------------------------------------------------------------

#[test]
fn manual_rollback_pins_the_chosen_revision() {
    let web1 = v1();
    let web3 = desired("web").image("app:v3").build();
    let db = desired("db").image("postgres:16").build();
    let d = stack_with(STACK, false, 3, vec![web3.clone(), db.clone()]);
    let mut target = Revision::of(&web1, 1, T0 - 7_200 * SEC, Outcome::Complete);
    target.number = 4;
    let mut r = manual_rollback(&d, "desired-gen-3", "web", target.clone(), T0);
    assert!(r.manual);
    assert_eq!(
        (r.phase, r.generation, r.desired_hash.as_str()),
        (Phase::RollingBack, 3, "desired-gen-3")
    );
    let s = r.service("web").unwrap();
    assert_eq!(
        (s.phase, s.to_hash.as_str(), s.to_image.as_str()),
        (SvcPhase::RollingBack, web3.spec_hash.as_str(), "app:v3")
    );
    assert_eq!(s.from.as_ref(), Some(&target));
    assert_eq!(r.cause.as_deref(), Some("web: manual rollback by an operator"));

    let running = [converged(&web3), converged(&db)];
    let eff = effective(&d, Some(&r), &swarm(running.to_vec()));
    assert_eq!(target_hash(&eff, "web"), Some(web1.spec_hash.clone()));
    assert_eq!(
        target_hash(&eff, "db"),
        Some(db.spec_hash.clone()),
        "other services untouched"
    );
    let p = plan(&eff, &known(running.to_vec()));
    assert!(
        matches!(&p.actions[..], [Action::Update { service, .. }] if service.state.image == "app:v1"),
        "{:#?}",
        p.actions
    );

    assert!(step(&mut r, &d, &at(T0 + SEC, running.to_vec())).events.is_empty());
    let out = step(&mut r, &d, &at(T0 + 10 * SEC, vec![converged(&web1), converged(&db)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    assert_eq!(out.finished, [finished("web", &web3.spec_hash, Outcome::RolledBack)]);
    assert_eq!(r.phase, Phase::RolledBack);

    // Pinned: the desired v3 is not applied again.
    for k in 1..=3 {
        assert!(step(
            &mut r,
            &d,
            &at(T0 + k * 60 * SEC, vec![converged(&web1), converged(&db)])
        )
        .events
        .is_empty());
        assert_eq!(
            effective_hash(&d, &r, &[converged(&web1), converged(&db)], "web"),
            web1.spec_hash
        );
    }
    let mut p = plan_for(&d, &r, &[converged(&web1), converged(&db)]);
    assert!(p.actions.is_empty());
    annotate(&mut p, &r);
    assert_eq!(
        p.held,
        [steward_plan::Held {
            name: "web".into(),
            hold: Hold::RevisionRejected {
                cause: "web: manual rollback by an operator".into()
            }
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// Revisions and secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn revision_of_blanks_secrets_and_restore_refills_them() {
    let d = desired("web")
        .image("app:v1")
        .env("MODE", "a")
        .secret_env("DB_PASSWORD", "hunter2")
        .build();
    let rev = Revision::of(&d, 7, T0, Outcome::Baseline);
    assert_eq!(
        (
            rev.service.as_str(),
            rev.number,
            rev.generation,
            rev.created_ms,
            rev.outcome
        ),
        ("web", 0, 7, T0, Outcome::Baseline)
    );
    assert_eq!(
        (rev.spec_hash.as_str(), rev.image.as_str()),
        (d.spec_hash.as_str(), "app:v1")
    );
    assert_eq!(rev.state.env.get("DB_PASSWORD").map(String::as_str), Some(""));
    assert_eq!(rev.state.env.get("MODE").map(String::as_str), Some("a"));
    assert_eq!(rev.secret_env, BTreeSet::from(["DB_PASSWORD".to_string()]));
    let json = serde_json::to_string(&rev).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    assert_eq!(serde_json::from_str::<Revision>(&json).unwrap(), rev);

    let policy = RolloutPolicy {
        verify_window_ms: 5_000,
        ..RolloutPolicy::none()
    };
    // From what runs now.
    let running = observed_from(&d).build();
    let x = rev
        .restore(Some(&running.state), None, policy.clone())
        .expect("secret found");
    assert_eq!(x.state.env.get("DB_PASSWORD").map(String::as_str), Some("hunter2"));
    assert_eq!(
        x.spec_hash, d.spec_hash,
        "unchanged secrets: the restored service reads as in sync"
    );
    assert_eq!(
        (x.name.as_str(), x.adopt, &x.secret_env, &x.rollout),
        ("web", false, &d.secret_env, &policy)
    );
    assert_eq!(x.state, d.state);
    // From the desired state when the service is not running.
    let y = rev.restore(None, Some(&d), policy.clone()).expect("secret found");
    assert_eq!(y.spec_hash, d.spec_hash);
    // What runs wins over a rotated desired value.
    let rotated = desired("web")
        .image("app:v2")
        .secret_env("DB_PASSWORD", "rotated")
        .build();
    let z = rev
        .restore(Some(&running.state), Some(&rotated), policy.clone())
        .unwrap();
    assert_eq!(z.state.env.get("DB_PASSWORD").map(String::as_str), Some("hunter2"));
    assert_eq!(z.spec_hash, d.spec_hash);
    // A rotated secret gives another hash.
    let w = rev.restore(None, Some(&rotated), policy.clone()).unwrap();
    assert_eq!(w.state.env.get("DB_PASSWORD").map(String::as_str), Some("rotated"));
    assert_ne!(w.spec_hash, d.spec_hash);
    // Nowhere: no restore.
    assert!(rev.restore(None, None, policy.clone()).is_none());
    let without = desired("web").image("app:v2").build();
    assert!(rev
        .restore(Some(&observed_from(&without).build().state), Some(&without), policy)
        .is_none());
    // Without secrets, restore is exact.
    let plain = v1();
    assert_eq!(
        Revision::of(&plain, 1, T0, Outcome::Complete)
            .restore(None, None, RolloutPolicy::none())
            .unwrap(),
        plain
    );
}

#[test]
fn effective_gates_a_service_whose_previous_secrets_are_unavailable() {
    let old = desired("web")
        .image("app:v1")
        .secret_env("DB_PASSWORD", "hunter2")
        .build();
    let new = with_policy(desired("web").image("app:v2").build(), |p| {
        p.depends_on = vec!["api".into()]
    });
    let api1 = desired("api").image("api:v1").build();
    let api2 = with_policy(desired("api").image("api:v2").build(), |p| {
        p.progress_deadline_ms = 10_000
    });
    let d = gen2(vec![new.clone(), api2.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old, &api1]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&api1)]));
    assert_eq!(phase_of(&r, "web"), SvcPhase::Pending);
    // web is not visible in Swarm and the new desired state dropped the secret.
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&api1)]));
    assert_eq!(
        eff.gates.get("web"),
        Some(&Hold::WaitingOn {
            what: "secrets of the previous revision".into()
        })
    );
    // With it running, the old spec (with its secret) is kept.
    assert_eq!(
        effective_hash(&d, &r, &[converged(&old), converged(&api1)], "web"),
        old.spec_hash
    );
    assert!(effective(&d, Some(&r), &swarm(vec![converged(&old), converged(&api1)]))
        .gates
        .is_empty());

    // After a rollback, an unrestorable revision is rejected rather than applied.
    let out = step(&mut r, &d, &at(T0 + 11 * SEC, vec![rolling(&api2, T0 + SEC)]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(phase_of(&r, "web"), SvcPhase::RolledBack);
    let eff = effective(&d, Some(&r), &swarm(vec![rolling(&api2, T0 + SEC)]));
    assert!(
        matches!(eff.gates.get("web"), Some(Hold::RevisionRejected { .. })),
        "{:?}",
        eff.gates
    );
}
