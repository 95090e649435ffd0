//! Which services a plan may touch: conflicts, adoption, orphans, pruning, an unreadable Swarm.

use super::*;

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
