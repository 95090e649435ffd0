//! Regressions: bugs these tests found in the planner, now fixed.

use super::*;

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
