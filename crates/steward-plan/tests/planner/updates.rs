//! Creating and converging services, planning updates, and keeping secrets out of the plan.

use super::*;

// ---------------------------------------------------------------------------------------------
// Create / converge
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_swarm_creates_every_desired_service_once() {
    let d = stack(vec![web().build(), desired("api").build(), desired("worker").build()]);
    let p = plan(&d, &known(vec![]));

    let created: Vec<&str> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::Create { service } => service.name.as_str(),
            other => panic!("expected only creates, got {other:#?}"),
        })
        .collect();
    assert_eq!(created, ["api", "web", "worker"]);
    assert!(p.held.is_empty());
    assert_eq!(p.stack, STACK);
    // The created service is the desired one verbatim (the executor makes no choices).
    assert!(p.actions.contains(&Action::Create {
        service: d.services[1].clone()
    }));

    let shown = p.display();
    assert!(
        shown.starts_with("Stack shop: 0 to remove, 0 to change, 3 to add, 0 waiting, 0 errors\n"),
        "{shown}"
    );
    assert!(
        shown.contains("+ Service/web\n    image: app:v1\n    replicas: 3\n    env.MODE: a\n"),
        "{shown}"
    );

    let statuses = assess(&d, &known(vec![]), &p, NOW);
    assert_eq!(statuses.len(), 3);
    for s in &statuses {
        assert_eq!(rpd(s), (F, T, F), "{}", s.name);
        assert_eq!(s.condition(ConditionType::Progressing).unwrap().reason, "Creating");
        assert_eq!(s.running_replicas, Some(0));
    }
}

#[test]
fn converged_stack_plans_nothing_and_a_second_pass_writes_nothing() {
    let d = stack(vec![web().build(), desired("api").replicas(2).build()]);
    let observed = applied(&d);

    let first = plan(&d, &observed);
    assert!(first.actions.is_empty(), "{:#?}", first.actions);
    assert!(first.held.is_empty(), "{:#?}", first.held);
    assert!(first.is_empty());
    assert_eq!(first.errors().count(), 0);
    assert_eq!(
        first.display(),
        "Stack shop: 0 to remove, 0 to change, 0 to add, 0 waiting, 0 errors\nIn sync: nothing to do.\n"
    );
    assert_eq!(first.to_json()["inSync"], true);

    // Planning is a pure function: same inputs, same (empty) plan.
    assert_eq!(plan(&d, &observed), first);
}

#[test]
fn no_update_status_and_all_tasks_running_is_converged() {
    // A service that was created and never updated has no UpdateStatus in Swarm.
    let w = web().build();
    let d = stack(vec![w.clone()]);
    let p = plan(&d, &known(vec![observed_from(&w).no_update_status().build()]));
    assert!(p.actions.is_empty() && p.held.is_empty(), "{p:#?}");
}

// ---------------------------------------------------------------------------------------------
// Updates
// ---------------------------------------------------------------------------------------------

#[test]
fn desired_replicas_change_is_a_spec_change_carrying_the_observed_version() {
    let before = web().build();
    let after = web().replicas(5).build();
    assert_ne!(before.spec_hash, after.spec_hash);

    let d = stack(vec![after.clone()]);
    let p = plan(&d, &known(vec![observed_from(&before).version(42).build()]));

    let (id, version, name, changes, reason) = sole_update(&p);
    assert_eq!((id, version, name), ("id-web", 42, "web"));
    assert_eq!(reason, UpdateReason::SpecChanged);
    assert_eq!(changes, [change("replicas", "3", "5")]);
    assert!(p.held.is_empty());
    // The update writes the whole new desired service (and with it the new hash label).
    match &p.actions[0] {
        Action::Update { service, .. } => assert_eq!(service, &after),
        _ => unreachable!(),
    }
    assert!(
        p.display()
            .contains("~ Service/web (SpecChanged)\n    replicas: 3 → 5\n"),
        "{}",
        p.display()
    );

    let json = p.to_json();
    assert_eq!(json["actions"][0]["action"], "Update");
    assert_eq!(json["actions"][0]["object"], "Service/web");
    assert_eq!(json["actions"][0]["reason"], "SpecChanged");
    assert_eq!(json["actions"][0]["version"], 42);
    assert_eq!(json["actions"][0]["changes"][0]["field"], "replicas");
    assert_eq!(json["inSync"], false);
}

#[test]
fn hand_scaled_service_is_drift_corrected_back_to_the_desired_replicas() {
    let w = web().build();
    let d = stack(vec![w.clone()]);
    // `docker service scale web=5`: the hash label still matches, the field does not.
    let p = plan(&d, &known(vec![observed_from(&w).replicas(5).build()]));

    let (id, version, _, changes, reason) = sole_update(&p);
    assert_eq!((id, version), ("id-web", 10));
    assert_eq!(reason, UpdateReason::DriftCorrected);
    assert_eq!(changes, [change("replicas", "5", "3")]);
    assert!(
        p.display()
            .contains("~ Service/web (DriftCorrected)\n    replicas: 5 → 3\n"),
        "{}",
        p.display()
    );

    let statuses = assess(&d, &known(vec![observed_from(&w).replicas(5).build()]), &p, NOW);
    let s = status_of(&statuses, "web");
    assert_eq!(rpd(s), (F, T, F));
    assert_eq!(
        s.condition(ConditionType::Progressing).unwrap().reason,
        "DriftCorrected"
    );
    assert_eq!(
        s.condition(ConditionType::Progressing).unwrap().message,
        "updating replicas"
    );
}

#[test]
fn hand_changed_image_and_env_are_drift_corrected() {
    let w = web().build();
    let d = stack(vec![w.clone()]);
    let o = observed_from(&w)
        .image("app:hotfix")
        .env("MODE", "debug")
        .env("EXTRA", "1")
        .build();
    let p = plan(&d, &known(vec![o]));
    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::DriftCorrected);
    assert_eq!(
        changes,
        [
            change("image", "app:hotfix", "app:v1"),
            change("env.EXTRA", "1", "(none)"),
            change("env.MODE", "debug", "a"),
        ]
    );
}

#[test]
fn image_change_is_shown_old_to_new() {
    let before = web().build();
    let after = web().image("app:v2").build();
    let p = plan(&stack(vec![after]), &known(vec![observed_from(&before).build()]));
    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::SpecChanged);
    assert_eq!(changes, [change("image", "app:v1", "app:v2")]);
    assert!(p.display().contains("    image: app:v1 → app:v2\n"));
}

#[test]
fn env_changes_show_changed_added_and_removed_variables() {
    let before = web().env("OLD", "x").build();
    let after = web().env("MODE", "b").env("NEW", "y").build();
    let p = plan(&stack(vec![after]), &known(vec![observed_from(&before).build()]));
    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::SpecChanged);
    assert_eq!(
        changes,
        [
            change("env.MODE", "a", "b"),
            change("env.NEW", "(none)", "y"),
            change("env.OLD", "x", "(none)"),
        ]
    );
}

#[test]
fn several_fields_change_at_once_in_a_stable_order() {
    let before = web().build();
    let after = web()
        .image("app:v2")
        .replicas(4)
        .command(&["/bin/app"])
        .label("team", "payments")
        .port(8080, 80)
        .cpu_limit(0.5)
        .memory_limit(256 * 1024 * 1024)
        .update_parallelism(2)
        .update_delay_ns(10_000_000_000)
        .update_order("start-first")
        .build();
    let p = plan(&stack(vec![after]), &known(vec![observed_from(&before).build()]));
    let (_, _, _, changes, _) = sole_update(&p);
    assert_eq!(
        changes,
        [
            change("image", "app:v1", "app:v2"),
            change("replicas", "3", "4"),
            change("command", "[]", r#"["/bin/app"]"#),
            change("labels.team", "(none)", "payments"),
            change("ports", "[]", "[8080:80/tcp (ingress)]"),
            change("resources.limits.cpus", "(none)", "0.5"),
            change("resources.limits.memory", "(none)", "256Mi"),
            change("update.parallelism", "1", "2"),
            change("update.delay", "0s", "10s"),
            change("update.order", "stop-first", "start-first"),
        ]
    );
}

#[test]
fn stale_hash_label_alone_is_rewritten_as_a_spec_change() {
    // Same fields, different hash label (e.g. written by an older steward): only the labels
    // need rewriting, and the plan says so.
    let w = web().build();
    let p = plan(
        &stack(vec![w.clone()]),
        &known(vec![observed_from(&w).hash(Some("0000000000000000")).build()]),
    );
    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::SpecChanged);
    assert!(changes.is_empty());
    assert!(
        p.display()
            .contains("~ Service/web (SpecChanged)\n    (ownership labels only)\n"),
        "{}",
        p.display()
    );
}

#[test]
fn update_is_planned_even_while_tasks_are_not_all_running() {
    // A changed spec is written now; waiting is only for services that already match.
    let before = web().build();
    let after = web().image("app:v2").build();
    let p = plan(
        &stack(vec![after]),
        &known(vec![observed_from(&before).running(1).build()]),
    );
    assert_eq!(sole_update(&p).4, UpdateReason::SpecChanged);
    assert!(p.held.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

const OLD_SECRET: &str = "s3cret-old-value";
const NEW_SECRET: &str = "s3cret-new-value";

#[test]
fn changed_secret_env_is_redacted_but_reported_as_changed() {
    let before = web().secret_env("DB_PASSWORD", OLD_SECRET).build();
    let after = web().secret_env("DB_PASSWORD", NEW_SECRET).build();
    let p = plan(&stack(vec![after]), &known(vec![observed_from(&before).build()]));

    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::SpecChanged);
    assert_eq!(
        changes,
        [change("env.DB_PASSWORD", "<redacted>", "<redacted> (changed)")]
    );
    assert!(
        p.display()
            .contains("    env.DB_PASSWORD: <redacted> → <redacted> (changed)\n"),
        "{}",
        p.display()
    );
    assert_no_secret(&p, &[OLD_SECRET, NEW_SECRET]);
}

#[test]
fn secret_env_is_redacted_when_created_added_removed_or_drifted() {
    // Created.
    let with_secret = web().secret_env("DB_PASSWORD", NEW_SECRET).build();
    let p = plan(&stack(vec![with_secret.clone()]), &known(vec![]));
    assert!(
        p.display().contains("    env.DB_PASSWORD: <redacted>\n"),
        "{}",
        p.display()
    );
    assert_no_secret(&p, &[NEW_SECRET]);

    // Added to an existing service.
    let without = web().build();
    let p = plan(
        &stack(vec![with_secret.clone()]),
        &known(vec![observed_from(&without).build()]),
    );
    assert_eq!(sole_update(&p).3, [change("env.DB_PASSWORD", "(none)", "<redacted>")]);
    assert_no_secret(&p, &[NEW_SECRET]);

    // Removed from the desired state: the observed side still marks it secret.
    let p = plan(
        &stack(vec![without.clone()]),
        &known(vec![observed_from(&with_secret).build()]),
    );
    assert_eq!(sole_update(&p).3, [change("env.DB_PASSWORD", "<redacted>", "(none)")]);
    assert_no_secret(&p, &[NEW_SECRET]);

    // Changed by hand in Swarm.
    let drifted = observed_from(&with_secret).env("DB_PASSWORD", OLD_SECRET).build();
    let p = plan(&stack(vec![with_secret.clone()]), &known(vec![drifted.clone()]));
    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::DriftCorrected);
    assert_eq!(
        changes,
        [change("env.DB_PASSWORD", "<redacted>", "<redacted> (changed)")]
    );
    assert_no_secret(&p, &[NEW_SECRET, OLD_SECRET]);

    // Nor in the status derived from that plan.
    let d = stack(vec![with_secret]);
    let statuses = serde_json::to_string(&assess(&d, &known(vec![drifted]), &p, NOW)).unwrap();
    assert!(
        !statuses.contains(NEW_SECRET) && !statuses.contains(OLD_SECRET),
        "{statuses}"
    );
}
