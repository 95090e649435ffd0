//! Which services a rollout takes in and when: dependsOn, services of a failed revision, scales.

use super::*;

// ---------------------------------------------------------------------------------------------
// dependsOn
// ---------------------------------------------------------------------------------------------

fn worker(image: &str) -> DesiredService {
    desired("worker").image(image).build()
}

fn after_web(d: DesiredService) -> DesiredService {
    with_policy(d, |p| p.depends_on = vec!["web".into()])
}

#[test]
fn depends_on_waits_for_the_dependency_to_be_verified() {
    let (web1, web2) = (v1(), v2());
    let (wk1, wk2) = (worker("app:v1"), after_web(worker("app:v2")));
    let d = gen2(vec![web2.clone(), wk2.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &wk1]), T0).unwrap();

    let out = step(&mut r, &d, &at(T0, vec![converged(&web1), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    assert_eq!(out.events[0].object, "Service/web");
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::Updating, SvcPhase::Pending)
    );
    let obs = [converged(&web1), converged(&wk1)];
    assert_eq!(effective_hash(&d, &r, &obs, "web"), web2.spec_hash);
    assert_eq!(
        effective_hash(&d, &r, &obs, "worker"),
        wk1.spec_hash,
        "worker keeps its old spec while waiting"
    );
    assert!(effective(&d, Some(&r), &swarm(obs.to_vec())).gates.is_empty());

    // web written but not converged: worker still waits.
    let out = step(
        &mut r,
        &d,
        &at(T0 + SEC, vec![rolling(&web2, T0 + SEC), converged(&wk1)]),
    );
    assert!(out.events.is_empty());
    assert_eq!(phase_of(&r, "worker"), SvcPhase::Pending);

    // web verified; worker starts on the next pass.
    let out = step(&mut r, &d, &at(T0 + 5 * SEC, vec![converged(&web2), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolloutVerified"]);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker"), r.phase),
        (SvcPhase::Verified, SvcPhase::Pending, Phase::Updating)
    );
    assert_eq!(r.progress(), (1, 2));
    let out = step(&mut r, &d, &at(T0 + 6 * SEC, vec![converged(&web2), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    assert_eq!(out.events[0].object, "Service/worker");
    assert_eq!(
        effective_hash(&d, &r, &[converged(&web2), converged(&wk1)], "worker"),
        wk2.spec_hash
    );

    let out = step(&mut r, &d, &at(T0 + 9 * SEC, vec![converged(&web2), converged(&wk2)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    let mut fin = out.finished.clone();
    fin.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fin,
        [
            finished("web", &web2.spec_hash, Outcome::Complete),
            finished("worker", &wk2.spec_hash, Outcome::Complete)
        ]
    );
}

#[test]
fn a_failing_dependency_rolls_back_the_dependent_that_never_started() {
    let (web1, wk1) = (v1(), worker("app:v1"));
    let web2 = with_policy(v2(), |p| {
        p.health = Some(health(1, 1, 2));
        p.verify_window_ms = 10_000;
    });
    let wk2 = after_web(worker("app:v2"));
    let d = gen2(vec![web2.clone(), wk2.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &wk1]), T0).unwrap();
    let mut all_events = Vec::new();

    all_events.extend(step(&mut r, &d, &at(T0, vec![converged(&web1), converged(&wk1)])).events);
    all_events.extend(step(&mut r, &d, &at(T0 + 5 * SEC, vec![converged(&web2), converged(&wk1)])).events);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::Verifying, SvcPhase::Pending)
    );

    let out = step(
        &mut r,
        &d,
        &at(T0 + 6 * SEC, vec![converged(&web2), converged(&wk1)]).probe("web", false, "HTTP 500"),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert!(
        event(&out, "RollingBack").message.contains("web, worker"),
        "{}",
        event(&out, "RollingBack").message
    );
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::RollingBack, SvcPhase::RolledBack)
    );
    assert!(
        out.finished.is_empty(),
        "the revision is finished once every service is back"
    );
    all_events.extend(out.events);
    let obs = [converged(&web2), converged(&wk1)];
    assert_eq!(effective_hash(&d, &r, &obs, "web"), web1.spec_hash);
    assert_eq!(effective_hash(&d, &r, &obs, "worker"), wk1.spec_hash);

    let out = step(&mut r, &d, &at(T0 + 20 * SEC, vec![converged(&web1), converged(&wk1)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    let mut fin = out.finished.clone();
    fin.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fin,
        [
            finished("web", &web2.spec_hash, Outcome::RolledBack),
            finished("worker", &wk2.spec_hash, Outcome::RolledBack)
        ]
    );
    all_events.extend(out.events);
    assert!(
        !all_events
            .iter()
            .any(|e| e.object == "Service/worker" && e.reason == "RolloutUpdating"),
        "worker never started: {all_events:#?}"
    );
}

#[test]
fn a_new_dependent_waits_gated_and_is_removed_when_the_dependency_fails() {
    let web1 = v1();
    let web2 = with_policy(v2(), |p| p.progress_deadline_ms = 30_000);
    let wk = after_web(worker("app:v2"));
    let d = gen2(vec![web2.clone(), wk.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&web1)]));
    assert_eq!(phase_of(&r, "worker"), SvcPhase::Pending);
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&web1)]));
    assert_eq!(
        eff.gates.get("worker"),
        Some(&Hold::WaitingOn {
            what: "dependencies of worker".into()
        })
    );
    let p = plan(&eff, &known(vec![converged(&web1)]));
    assert!(
        !p.actions.iter().any(|a| a.object() == "Service/worker"),
        "not created while waiting: {:#?}",
        p.actions
    );
    assert_eq!(hold_reasons(&p), [("worker", "WaitingOn")]);

    let out = step(&mut r, &d, &at(T0 + 31 * SEC, vec![rolling(&web2, T0 + SEC)]));
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "worker")),
        (SvcPhase::RollingBack, SvcPhase::RolledBack),
        "never created: nothing to wait for"
    );
    let eff = effective(&d, Some(&r), &swarm(vec![rolling(&web2, T0 + SEC)]));
    assert!(target_hash(&eff, "worker").is_none());
    assert!(eff.remove.contains("worker"));
}

// ---------------------------------------------------------------------------------------------
// Services created by a failed revision
// ---------------------------------------------------------------------------------------------

#[test]
fn a_service_created_by_a_failed_revision_is_removed_and_not_recreated() {
    let web1 = v1();
    let web2 = with_policy(v2(), |p| p.progress_deadline_ms = 60_000);
    let cache = desired("cache").image("redis:7").build();
    let d = gen2(vec![web2.clone(), cache.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&web1]), T0).unwrap();

    let out = step(&mut r, &d, &at(T0, vec![converged(&web1)]));
    assert_eq!(reasons(&out), ["RolloutUpdating", "RolloutUpdating"]);
    let p = plan_for(&d, &r, &[converged(&web1)]);
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Create { service } if service.name == "cache")),
        "{:#?}",
        p.actions
    );

    // cache comes up (no checks: verified at once); web never converges.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 5 * SEC, vec![rolling(&web2, T0 + SEC), converged(&cache)]),
    );
    assert_eq!(reasons(&out), ["RolloutVerified"]);
    assert_eq!(phase_of(&r, "cache"), SvcPhase::Verified);
    let out = step(
        &mut r,
        &d,
        &at(T0 + 61 * SEC, vec![rolling(&web2, T0 + SEC), converged(&cache)]),
    );
    assert_eq!(reasons(&out), ["RollingBack"]);
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "cache")),
        (SvcPhase::RollingBack, SvcPhase::RollingBack)
    );

    // The planner restores web and removes cache even with prune off.
    assert!(!d.prune);
    let obs = [rolling(&web2, T0 + SEC), converged(&cache)];
    let eff = effective(&d, Some(&r), &swarm(obs.to_vec()));
    assert!(target_hash(&eff, "cache").is_none());
    assert_eq!(eff.remove, BTreeSet::from(["cache".to_string()]));
    let p = plan(&eff, &known(obs.to_vec()));
    let mut objects: Vec<(String, &str)> = p
        .actions
        .iter()
        .map(|a| {
            (
                a.object().to_string(),
                match a {
                    Action::Create { .. } => "create",
                    Action::Update { .. } => "update",
                    Action::Remove { .. } => "remove",
                },
            )
        })
        .collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            ("Service/cache".to_string(), "remove"),
            ("Service/web".to_string(), "update")
        ]
    );

    // web back, cache still there: not done.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 70 * SEC, vec![converged(&web1), converged(&cache)]),
    );
    assert!(out.events.is_empty());
    assert_eq!(
        (phase_of(&r, "web"), phase_of(&r, "cache"), r.phase),
        (SvcPhase::RolledBack, SvcPhase::RollingBack, Phase::RollingBack)
    );

    // cache gone: RolledBack.
    let out = step(&mut r, &d, &at(T0 + 75 * SEC, vec![converged(&web1)]));
    assert_eq!(reasons(&out), ["RolledBack"]);
    assert!(
        event(&out, "RolledBack").message.contains("cache removed"),
        "{}",
        event(&out, "RolledBack").message
    );
    assert_eq!(r.phase, Phase::RolledBack);

    // Not created again while the desired state is unchanged.
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&web1)]));
    assert!(target_hash(&eff, "cache").is_none());
    assert!(eff.remove.contains("cache"));
    let p = plan(&eff, &known(vec![converged(&web1)]));
    assert!(p.actions.is_empty(), "{:#?}", p.actions);
}

// ---------------------------------------------------------------------------------------------
// Scale-only changes
// ---------------------------------------------------------------------------------------------

#[test]
fn a_scale_only_change_has_no_jobs_and_no_verification() {
    let policy = |d: DesiredService| {
        with_policy(d, |p| {
            p.health = Some(health(1, 3, 2));
            p.verify_window_ms = 30_000;
            p.pre_deploy = vec![job("migrate", 300)];
        })
    };
    let old = policy(
        desired("web")
            .image("app:v1")
            .secret_env("DB_PASSWORD", "hunter2")
            .build(),
    );
    let new = policy(
        desired("web")
            .image("app:v1")
            .secret_env("DB_PASSWORD", "hunter2")
            .replicas(3)
            .build(),
    );
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert!(r.service("web").unwrap().scale_only);
    assert!(r.jobs.is_empty());
    assert_eq!(r.phase, Phase::Updating);

    let out = step(&mut r, &d, &at(T0, vec![converged(&old)]));
    assert_eq!(reasons(&out), ["RolloutUpdating"]);
    assert!(out.start_jobs.is_empty());
    let out = step(&mut r, &d, &at(T0 + SEC, vec![observed_from(&new).running(2).build()]));
    assert!(out.events.is_empty());
    assert!(due_probes(&r, &d, T0 + SEC).is_empty());
    let out = step(&mut r, &d, &at(T0 + 2 * SEC, vec![converged(&new)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    assert!(event(&out, "RolloutVerified").message.contains("3/3 tasks"));
    assert_eq!(r.phase, Phase::Complete);
}

/// Swarm starts no update for a scale: the status left by an old rollback must not hold the
/// rollout until its deadline (and then roll back a plain scale).
#[test]
fn a_scale_after_a_swarm_rollback_completes() {
    let (old, new) = (v1(), desired("web").image("app:v1").replicas(3).build());
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert!(r.service("web").unwrap().scale_only);
    step(&mut r, &d, &at(T0, vec![converged(&old)]));
    let stale = with_status(converged(&new), UpdateState::RollbackCompleted, T0 - 3_600 * SEC);
    let out = step(&mut r, &d, &at(T0 + SEC, vec![stale]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
}

#[test]
fn an_image_change_with_new_replicas_is_not_scale_only() {
    let old = v1();
    let new = with_jobs(
        desired("web").image("app:v2").replicas(3).build(),
        vec![job("migrate", 300)],
    );
    let d = gen2(vec![new.clone()]);
    let r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert!(!r.service("web").unwrap().scale_only);
    assert_eq!(r.jobs.len(), 1);
    assert_eq!(r.phase, Phase::PreDeploy);
}

#[test]
fn only_changed_services_join_the_rollout() {
    let (web1, db) = (v1(), desired("db").image("postgres:16").build());
    let d = gen2(vec![v2(), db.clone()]);
    let r = begin(&d, DESIRED_HASH, &last_good(&[&web1, &db]), T0).unwrap();
    assert_eq!(r.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["web"]);
    let eff = effective(&d, Some(&r), &swarm(vec![converged(&web1), converged(&db)]));
    assert_eq!(target_hash(&eff, "db"), Some(db.spec_hash.clone()));
}
