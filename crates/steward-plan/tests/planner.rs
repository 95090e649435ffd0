//! Behaviour of `plan()` and `assess()` as a user of `steward plan` / `steward status` sees it.

mod fixtures;

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

fn assert_no_secret(p: &Plan, secrets: &[&str]) {
    let shown = p.display();
    let json = serde_json::to_string(&p.to_json()).unwrap();
    for s in secrets {
        assert!(!shown.contains(s), "secret {s:?} in display():\n{shown}");
        assert!(!json.contains(s), "secret {s:?} in to_json():\n{json}");
    }
}

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

// ---------------------------------------------------------------------------------------------
// Ownership
// ---------------------------------------------------------------------------------------------

#[test]
fn unowned_service_of_the_same_name_is_a_conflict_and_left_untouched() {
    let w = web().build();
    let d = stack(vec![w.clone()]);
    let o = known(vec![observed_from(&web().image("nginx:1").build())
        .owner(Owner::Nobody)
        .build()]);
    let p = plan(&d, &o);

    assert!(p.actions.is_empty(), "{:#?}", p.actions);
    assert_eq!(p.held.len(), 1);
    assert_eq!(p.held[0].name, "web");
    assert_eq!(p.held[0].hold, Hold::ConflictUnowned);
    assert!(p.held[0].hold.is_error());
    assert_eq!(p.errors().count(), 1);
    let shown = p.display();
    assert!(shown.contains("0 waiting, 1 error\n"), "{shown}");
    assert!(
        shown.contains("! Service/web ConflictUnowned: service web exists and is not owned by steward; left untouched (set spec.adopt: true to take it over)\n"),
        "{shown}"
    );
    assert_eq!(p.to_json()["held"][0]["error"], true);

    let s = &assess(&d, &o, &p, NOW)[0];
    assert_eq!(rpd(s), (F, F, T));
    assert_eq!(s.condition(ConditionType::Degraded).unwrap().reason, "ConflictUnowned");
    // Not ours: its tasks and image are not reported as ours.
    assert_eq!(s.image, None);
}

#[test]
fn adopt_takes_over_an_unowned_service() {
    let w = web().adopt().build();
    let o = observed_from(&web().image("app:v0").build())
        .owner(Owner::Nobody)
        .version(7)
        .build();
    let p = plan(&stack(vec![w.clone()]), &known(vec![o]));

    let (id, version, name, changes, reason) = sole_update(&p);
    assert_eq!((id, version, name), ("id-web", 7, "web"));
    assert_eq!(reason, UpdateReason::Adopted);
    assert_eq!(changes, [change("image", "app:v0", "app:v1")]);
    assert!(p.held.is_empty());
    assert!(p.display().contains("~ Service/web (Adopted)\n"));

    // Identical fields: still adopted, to write the ownership labels.
    let o = observed_from(&w).owner(Owner::Nobody).build();
    let p = plan(&stack(vec![w.clone()]), &known(vec![o]));
    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::Adopted);
    assert!(changes.is_empty());

    // Once adopted it is ours, and the next pass is quiet.
    assert!(plan(&stack(vec![w.clone()]), &applied(&stack(vec![w])))
        .actions
        .is_empty());
}

#[test]
fn service_of_another_stack_is_a_conflict_even_with_adopt() {
    for w in [web().build(), web().adopt().build()] {
        let d = stack(vec![w.clone()]);
        let o = known(vec![observed_from(&w)
            .owner(Owner::OtherStack("billing".into()))
            .build()]);
        let p = plan(&d, &o);
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert_eq!(p.held.len(), 1);
        assert_eq!(
            p.held[0].hold,
            Hold::ConflictOtherStack {
                stack: "billing".into()
            }
        );
        assert!(p.held[0].hold.is_error());
        assert!(
            p.display().contains(
                "! Service/web ConflictOtherStack: service web is owned by steward stack \"billing\"; left untouched\n"
            ),
            "{}",
            p.display()
        );
        assert_eq!(rpd(&assess(&d, &o, &p, NOW)[0]), (F, F, T));
    }
}

#[test]
fn non_replicated_service_of_the_same_name_is_a_conflict() {
    let w = web().build();
    let p = plan(
        &stack(vec![w.clone()]),
        &known(vec![observed_from(&w).not_replicated().build()]),
    );
    assert!(p.actions.is_empty());
    assert_eq!(holds(&p), [("web", "ConflictNotReplicated")]);
    assert!(p.held[0].hold.is_error());
}

// ---------------------------------------------------------------------------------------------
// Orphans and pruning
// ---------------------------------------------------------------------------------------------

/// `web` is desired and running; `old-cron` is ours but no longer desired; `billing-api`
/// belongs to another stack and `hand-made` to nobody.
fn leftover_world() -> (Vec<steward_plan::DesiredService>, Observed) {
    let kept = web().build();
    let observed = known(vec![
        observed_from(&kept).build(),
        observed_from(&desired("old-cron").build()).version(3).build(),
        observed_from(&desired("billing-api").build())
            .owner(Owner::OtherStack("billing".into()))
            .build(),
        observed_from(&desired("hand-made").build())
            .owner(Owner::Nobody)
            .build(),
    ]);
    (vec![kept], observed)
}

#[test]
fn owned_service_no_longer_desired_is_held_as_orphan_when_prune_is_off() {
    let (services, observed) = leftover_world();
    let d = stack_with(STACK, false, 1, services);
    let p = plan(&d, &observed);

    assert!(p.actions.is_empty(), "{:#?}", p.actions);
    assert_eq!(holds(&p), [("old-cron", "Orphaned")]);
    assert!(!p.held[0].hold.is_error(), "an orphan is a wait, not an error");
    assert!(
        p.display().contains(
            "… Service/old-cron Orphaned: service old-cron is owned by this stack but no longer desired; left running (prune is off)\n"
        ),
        "{}",
        p.display()
    );

    // The orphan gets a status of its own, flagged Degraded.
    let statuses = assess(&d, &observed, &p, NOW);
    assert_eq!(rpd(status_of(&statuses, "old-cron")), (F, F, T));
    assert_eq!(rpd(status_of(&statuses, "web")), (T, F, F));
    assert!(statuses
        .iter()
        .all(|s| s.name != "billing-api" && s.name != "hand-made"));
}

#[test]
fn owned_service_no_longer_desired_is_removed_when_prune_is_on_and_nothing_else_is() {
    let (services, observed) = leftover_world();
    let d = stack_with(STACK, true, 1, services);
    let p = plan(&d, &observed);

    assert_eq!(
        p.actions,
        [Action::Remove {
            id: "id-old-cron".into(),
            name: "old-cron".into(),
            version: 3,
        }]
    );
    assert!(p.held.is_empty(), "{:#?}", p.held);
    assert!(p
        .display()
        .contains("- Service/old-cron (pruned: no longer in the desired state)\n"));
    assert_eq!(p.to_json()["actions"][0]["reason"], "Pruned");
}

#[test]
fn prune_never_removes_other_stacks_or_unowned_services_even_with_nothing_desired() {
    let observed = known(vec![
        observed_from(&desired("billing-api").build())
            .owner(Owner::OtherStack("billing".into()))
            .build(),
        observed_from(&desired("hand-made").build())
            .owner(Owner::Nobody)
            .build(),
    ]);
    let p = plan(&stack_with(STACK, true, 1, vec![]), &observed);
    assert!(p.actions.is_empty(), "{:#?}", p.actions);
    assert!(p.held.is_empty(), "{:#?}", p.held);
}

// ---------------------------------------------------------------------------------------------
// Swarm could not be read
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_backend_plans_nothing_and_holds_every_service() {
    for prune in [false, true] {
        let d = stack_with(STACK, prune, 4, vec![web().build(), desired("api").build()]);
        let observed = Observed::Unknown {
            reason: "connection refused".into(),
        };
        let p = plan(&d, &observed);

        // Never create, remove or scale because a read failed.
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert_eq!(
            holds(&p),
            [("api", "BackendUnavailable"), ("web", "BackendUnavailable")]
        );
        for h in &p.held {
            assert_eq!(
                h.hold,
                Hold::BackendUnknown {
                    message: "connection refused".into()
                }
            );
            assert!(h.hold.is_error());
        }
        assert!(
            p.display()
                .contains("! Service/web BackendUnavailable: Swarm could not be read: connection refused\n"),
            "{}",
            p.display()
        );
        assert!(!p.display().contains("In sync"));

        let statuses = assess(&d, &observed, &p, NOW);
        assert_eq!(statuses.len(), 2);
        for s in &statuses {
            for c in &s.conditions {
                assert_eq!(c.status, U, "{} {:?}", s.name, c.type_);
                assert_eq!(c.reason, "BackendUnavailable");
                assert_eq!(c.observed_generation, 4);
            }
            assert_eq!(s.running_replicas, None, "running tasks are unknown, not zero");
            assert_eq!(s.image, None);
        }
    }
}

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

// ---------------------------------------------------------------------------------------------
// Properties over pseudo-random desired states
// ---------------------------------------------------------------------------------------------

/// Knuth's MMIX linear congruential generator: deterministic, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn random_service(rng: &mut Lcg, name: String) -> steward_plan::DesiredService {
    let mut b = desired(&name)
        .image(&format!(
            "{}:{}",
            rng.pick(&["app", "nginx", "registry.example/team/api"]),
            rng.below(50)
        ))
        .replicas(rng.below(21));
    if rng.chance(30) {
        b = b.command(&["/bin/sh", "-c"]);
    }
    if rng.chance(30) {
        b = b.args(&[rng.pick(&["serve", "migrate", "--verbose"])]);
    }
    for i in 0..rng.below(5) {
        b = if rng.chance(30) {
            b.secret_env(&format!("SECRET_{i}"), &format!("hunter{}-secret", rng.below(1000)))
        } else {
            b.env(&format!("VAR_{i}"), &format!("v{}", rng.below(1000)))
        };
    }
    for i in 0..rng.below(3) {
        b = b.label(&format!("example.com/l{i}"), rng.pick(&["a", "b", ""]));
    }
    for i in 0..rng.below(3) {
        b = b.port(8000 + i as u32 * 10 + rng.below(10) as u32, 80 + i as u32);
    }
    if rng.chance(40) {
        b = b.cpu_limit(rng.below(4000) as f64 / 1000.0 + 0.001);
    }
    if rng.chance(40) {
        b = b.memory_limit(rng.below(4096) as i64 * 1024 * 1024 + 1);
    }
    b = b
        .update_parallelism(rng.below(4))
        .update_delay_ns(rng.below(120_000) as i64 * 1_000_000)
        .update_failure_action(rng.pick(&["pause", "continue", "rollback"]))
        .update_order(rng.pick(&["stop-first", "start-first"]));
    let ratio = steward_plan::round_ratio(rng.below(10_001) as f64 / 10_000.0);
    let monitor = rng.below(60) as i64 * 1_000_000_000;
    b = b.with_state(|s| {
        s.update.max_failure_ratio = ratio;
        s.rollback.monitor_ns = monitor;
    });
    if rng.chance(20) {
        b = b.adopt();
    }
    b.build()
}

fn random_desired(rng: &mut Lcg) -> Desired {
    let n = rng.below(13);
    let services = (0..n).map(|i| random_service(rng, format!("svc-{i:02}"))).collect();
    stack_with(STACK, rng.chance(50), rng.below(1000) + 1, services)
}

#[test]
fn planning_against_the_applied_state_is_idempotent_for_random_desired_states() {
    let mut rng = Lcg(0x5_eed0_f57e_3a2d);
    let mut total_services = 0;
    for case in 0..200 {
        let d = random_desired(&mut rng);
        total_services += d.services.len();

        // From nothing: one Create per service.
        let fresh = plan(&d, &known(vec![]));
        assert_eq!(fresh.actions.len(), d.services.len(), "case {case}");
        assert!(
            fresh.actions.iter().all(|a| matches!(a, Action::Create { .. })),
            "case {case}"
        );

        // As if applied: nothing to do, nothing held, every status Ready.
        let observed = applied(&d);
        let p = plan(&d, &observed);
        assert!(p.actions.is_empty(), "case {case}: {:#?}\n{d:#?}", p.actions);
        assert!(p.held.is_empty(), "case {case}: {:#?}", p.held);
        for s in assess(&d, &observed, &p, NOW) {
            assert_eq!(rpd(&s), (T, F, F), "case {case}: {}", s.name);
        }
    }
    assert!(total_services > 800, "generator too sparse: {total_services} services");
}

#[test]
fn a_single_hand_change_yields_one_drift_correction_which_then_converges() {
    let mut rng = Lcg(42);
    let mut checked = 0;
    for case in 0..200 {
        let d = random_desired(&mut rng);
        if d.services.is_empty() {
            continue;
        }
        let victim = rng.below(d.services.len() as u64) as usize;
        let kind = rng.below(4);
        let observed: Vec<_> = d
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let o = observed_from(s);
                if i != victim {
                    return o.build();
                }
                match kind {
                    0 => o.replicas(s.state.replicas + 1),
                    1 => o.image("evil:latest"),
                    2 => o.env("INJECTED", "1"),
                    _ => o.with_state(|st| st.update.parallelism += 1),
                }
                .build()
            })
            .collect();
        let p = plan(&d, &known(observed));
        let (_, _, name, changes, reason) = sole_update(&p);
        assert_eq!(name, d.services[victim].name, "case {case}");
        assert_eq!(reason, UpdateReason::DriftCorrected, "case {case}");
        assert_eq!(changes.len(), 1, "case {case}: {changes:#?}");
        assert!(p.held.is_empty(), "case {case}: {:#?}", p.held);
        let victim_env = &d.services[victim].state.env;
        let secrets: Vec<&str> = victim_env
            .iter()
            .filter(|(k, _)| k.starts_with("SECRET_"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_no_secret(&p, &secrets);

        // Once the executor wrote the desired service, the next pass is quiet.
        assert!(plan(&d, &applied(&d)).actions.is_empty());
        checked += 1;
    }
    assert!(checked > 150);
}

// ---------------------------------------------------------------------------------------------
// Regressions: bugs found by these tests and fixed in the planner.
// ---------------------------------------------------------------------------------------------

/// Manifests accept `us`/`ns` durations (`1500us`), but `diff` compares *rendered* values and
/// the renderer drops everything below a millisecond.
#[test]

fn sub_millisecond_duration_drift_is_corrected() {
    let w = web().update_delay_ns(1_500_000).build(); // `delay: 1500us`
    let o = observed_from(&w).with_state(|s| s.update.delay_ns = 1_000_000).build(); // set to 1ms by hand
    let p = plan(&stack(vec![w]), &known(vec![o]));
    let (_, _, _, changes, reason) = sole_update(&p);
    assert_eq!(reason, UpdateReason::DriftCorrected);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].field, "update.delay");
    assert_ne!(changes[0].old, changes[0].new);
}

#[test]

fn sub_millisecond_durations_are_rendered() {
    let before = web().update_delay_ns(1_000_000).build();
    for ns in [100_000, 1_500_000] {
        let after = web().update_delay_ns(ns).build();
        let p = plan(&stack(vec![after]), &known(vec![observed_from(&before).build()]));
        let (_, _, _, changes, _) = sole_update(&p);
        assert_eq!(changes.len(), 1, "{ns} ns: {}", p.display());
        assert_eq!(changes[0].field, "update.delay");
        assert!(
            !changes[0].new.is_empty() && changes[0].new != "1ms",
            "{ns} ns rendered as {:?}",
            changes[0].new
        );
    }
}

#[test]

fn label_removed_by_hand_is_drift_even_if_its_value_reads_none() {
    let w = web().label("note", "(none)").build();
    let o = observed_from(&w).with_state(|s| s.labels.clear()).build();
    let p = plan(&stack(vec![w]), &known(vec![o]));
    assert_eq!(sole_update(&p).4, UpdateReason::DriftCorrected);
}

#[test]

fn json_plan_is_not_in_sync_when_swarm_could_not_be_read() {
    let p = plan(
        &stack(vec![web().build()]),
        &Observed::Unknown {
            reason: "connection refused".into(),
        },
    );
    // display() does not claim "In sync"; the machine plan must not either.
    assert!(!p.display().contains("In sync"));
    assert_eq!(p.to_json()["inSync"], false);
}

#[test]

fn labels_only_update_has_a_readable_status_message() {
    let w = web().adopt().build();
    let o = known(vec![observed_from(&w).owner(Owner::Nobody).build()]);
    let d = stack(vec![w]);
    let p = plan(&d, &o);
    let statuses = assess(&d, &o, &p, NOW);
    let msg = &statuses[0].condition(ConditionType::Progressing).unwrap().message;
    assert!(!msg.trim().eq("updating") && !msg.ends_with(' '), "{msg:?}");
}
