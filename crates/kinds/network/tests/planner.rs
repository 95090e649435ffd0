//! The Network planner: one test per rule, and `Plan::display()` snapshot-tested.

use std::collections::BTreeMap;

use steward_core::Observation;
use steward_network::model::{DesiredNetwork, ObservedNetwork};
use steward_network::plan::{plan, Action, Decision, Hold, Input, Plan};

const STACK: &str = "tax";

fn owned(name: &str) -> ObservedNetwork {
    ObservedNetwork {
        id: format!("id-{name}"),
        name: name.into(),
        driver: "overlay".into(),
        scope: "swarm".into(),
        attachable: false,
        internal: false,
        options: BTreeMap::from([(
            "com.docker.network.driver.overlay.vxlanid_list".to_string(),
            "4097".to_string(),
        )]),
        labels: BTreeMap::from([
            ("steward.io/managed-by".to_string(), "steward".to_string()),
            ("steward.io/stack".to_string(), STACK.to_string()),
        ]),
    }
}

fn unowned(name: &str) -> ObservedNetwork {
    ObservedNetwork {
        labels: BTreeMap::new(),
        ..owned(name)
    }
}

/// The world the planner sees: desired networks, Swarm's, and who is attached.
struct World {
    prune: bool,
    desired: Vec<DesiredNetwork>,
    observed: Observation<Vec<ObservedNetwork>>,
    attached: Observation<BTreeMap<String, Vec<String>>>,
}

impl World {
    fn new() -> Self {
        World {
            prune: false,
            desired: vec![],
            observed: Observation::Known(vec![]),
            attached: Observation::Known(BTreeMap::new()),
        }
    }
    fn prune(mut self) -> Self {
        self.prune = true;
        self
    }
    fn want(mut self, d: DesiredNetwork) -> Self {
        self.desired.push(d);
        self.desired.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }
    fn has(mut self, o: ObservedNetwork) -> Self {
        if let Observation::Known(v) = &mut self.observed {
            v.push(o);
        }
        self
    }
    fn unknown(mut self) -> Self {
        self.observed = Observation::unknown("error during connect: context deadline exceeded");
        self
    }
    fn attachments_unknown(mut self) -> Self {
        self.attached = Observation::unknown("not read");
        self
    }
    fn attached(mut self, network: &str, service: &str) -> Self {
        if let Observation::Known(m) = &mut self.attached {
            m.entry(network.to_string()).or_default().push(service.to_string());
        }
        self
    }
    fn plan(&self) -> Plan {
        plan(&Input {
            stack: STACK,
            prune: self.prune,
            desired: &self.desired,
            observed: &self.observed,
            attached: &self.attached,
        })
    }
}

fn decision(p: &Plan, name: &str) -> Decision {
    p.entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no entry for {name}: {p:?}"))
        .decision
        .clone()
}

fn attachable(name: &str) -> DesiredNetwork {
    DesiredNetwork {
        attachable: true,
        ..DesiredNetwork::overlay(name)
    }
}

#[test]
fn a_missing_network_is_created_with_its_exact_spec() {
    let d = attachable("tax-net");
    let p = World::new().want(d.clone()).plan();
    assert_eq!(p.actions(), vec![Action::Create { network: d }]);
}

#[test]
fn an_owned_network_as_desired_needs_nothing_whatever_options_the_engine_added() {
    let p = World::new()
        .want(DesiredNetwork::overlay("tax-net"))
        .has(owned("tax-net"))
        .plan();
    assert_eq!(p.actions(), vec![]);
    assert_eq!(
        decision(&p, "tax-net"),
        Decision::InSync {
            id: "id-tax-net".into()
        }
    );
    assert!(!p.needs_attachments());
}

#[test]
fn a_drifted_network_in_use_is_held_recreate_required() {
    let p = World::new()
        .want(attachable("tax-net"))
        .has(owned("tax-net"))
        .attached("tax-net", "tax-web")
        .plan();
    assert_eq!(p.actions(), vec![]);
    let Decision::Held(Hold::RecreateRequired {
        diffs,
        attached,
        adopted,
    }) = decision(&p, "tax-net")
    else {
        panic!("{p:?}")
    };
    assert_eq!(diffs.len(), 1);
    assert_eq!(
        (
            diffs[0].field.as_str(),
            diffs[0].observed.as_str(),
            diffs[0].desired.as_str()
        ),
        ("attachable", "false", "true")
    );
    assert_eq!((attached, adopted), (vec!["tax-web".to_string()], false));
    assert_eq!(p.errors().count(), 1);
}

#[test]
fn a_drifted_network_nobody_uses_is_recreated() {
    let d = attachable("tax-net");
    let p = World::new().want(d.clone()).has(owned("tax-net")).plan();
    assert_eq!(
        p.actions(),
        vec![Action::Recreate {
            id: "id-tax-net".into(),
            network: d
        }]
    );
}

#[test]
fn drift_with_attachments_unread_asks_for_them_and_does_nothing() {
    let p = World::new()
        .want(attachable("tax-net"))
        .has(owned("tax-net"))
        .attachments_unknown()
        .plan();
    assert!(p.needs_attachments());
    assert_eq!(p.actions(), vec![]);
}

#[test]
fn an_unowned_network_of_the_same_name_is_a_conflict() {
    let p = World::new()
        .want(DesiredNetwork::overlay("tax-net"))
        .has(unowned("tax-net"))
        .plan();
    assert_eq!(p.actions(), vec![]);
    assert_eq!(decision(&p, "tax-net"), Decision::Held(Hold::ConflictUnowned));
}

#[test]
fn another_stacks_network_is_a_conflict_even_with_adopt() {
    let mut theirs = owned("tax-net");
    theirs.labels.insert("steward.io/stack".into(), "shop".into());
    let d = DesiredNetwork {
        adopt: true,
        ..DesiredNetwork::overlay("tax-net")
    };
    let p = World::new().want(d).has(theirs).plan();
    assert_eq!(
        decision(&p, "tax-net"),
        Decision::Held(Hold::ConflictOtherStack { stack: "shop".into() })
    );
}

#[test]
fn adopt_takes_an_unowned_network_as_ours_and_never_recreates_or_removes_it() {
    let adopt = |d: DesiredNetwork| DesiredNetwork { adopt: true, ..d };
    let p = World::new()
        .want(adopt(DesiredNetwork::overlay("tax-net")))
        .has(unowned("tax-net"))
        .plan();
    assert_eq!(
        decision(&p, "tax-net"),
        Decision::Adopted {
            id: "id-tax-net".into()
        }
    );
    assert_eq!(p.actions(), vec![]);

    // Differs: reported, not recreated, even with nothing attached.
    let p = World::new()
        .want(adopt(attachable("tax-net")))
        .has(unowned("tax-net"))
        .plan();
    assert!(matches!(
        decision(&p, "tax-net"),
        Decision::Held(Hold::RecreateRequired { adopted: true, .. })
    ));
    assert_eq!(p.actions(), vec![]);

    // No longer desired: not ours to prune.
    let p = World::new().prune().has(unowned("tax-net")).plan();
    assert_eq!(p.entries, vec![]);
}

#[test]
fn an_orphan_is_kept_while_prune_is_off() {
    let p = World::new().has(owned("old-net")).plan();
    assert_eq!(p.actions(), vec![]);
    assert_eq!(
        decision(&p, "old-net"),
        Decision::Held(Hold::Orphaned { attached: vec![] })
    );
    assert!(!p.needs_attachments(), "prune off: attachments do not decide anything");
}

#[test]
fn an_orphan_in_use_is_kept_even_with_prune() {
    let p = World::new()
        .prune()
        .has(owned("old-net"))
        .attached("old-net", "someone-elses")
        .plan();
    assert_eq!(p.actions(), vec![]);
    assert_eq!(
        decision(&p, "old-net"),
        Decision::Held(Hold::Orphaned {
            attached: vec!["someone-elses".into()]
        })
    );
}

#[test]
fn an_unused_orphan_is_removed_with_prune() {
    let p = World::new().prune().has(owned("old-net")).plan();
    assert_eq!(
        p.actions(),
        vec![Action::Remove {
            id: "id-old-net".into(),
            name: "old-net".into()
        }]
    );
}

#[test]
fn an_orphan_is_not_removed_when_attachments_could_not_be_read() {
    let p = World::new().prune().has(owned("old-net")).attachments_unknown().plan();
    assert_eq!(p.actions(), vec![]);
    assert!(p.needs_attachments());
}

#[test]
fn nothing_is_created_or_removed_when_swarm_could_not_be_read() {
    let p = World::new()
        .prune()
        .want(DesiredNetwork::overlay("tax-net"))
        .unknown()
        .plan();
    assert_eq!(p.actions(), vec![]);
    assert!(matches!(
        decision(&p, "tax-net"),
        Decision::Held(Hold::BackendUnavailable { .. })
    ));
}

#[test]
fn a_local_network_of_the_same_name_does_not_hide_the_swarm_one() {
    let mut local = unowned("tax-net");
    local.scope = "local".into();
    local.driver = "bridge".into();
    let p = World::new()
        .want(DesiredNetwork::overlay("tax-net"))
        .has(local)
        .has(owned("tax-net"))
        .plan();
    assert_eq!(
        decision(&p, "tax-net"),
        Decision::InSync {
            id: "id-tax-net".into()
        }
    );
}

#[test]
fn display_in_sync_and_empty() {
    let p = World::new()
        .want(DesiredNetwork::overlay("tax-net"))
        .has(owned("tax-net"))
        .plan();
    insta::assert_snapshot!(p.display(), @r"
    Networks of stack tax: 0 to remove, 0 to recreate, 0 to add, 0 waiting, 0 errors
    In sync: nothing to do.
    ");
    assert_eq!(
        World::new().plan().display(),
        "",
        "a stack without networks prints nothing"
    );
}

#[test]
fn display_mixed() {
    let mut opts = DesiredNetwork::overlay("secure-net");
    opts.options.insert("encrypted".into(), String::new());
    opts.labels.insert("team".into(), "tax".into());
    let p = World::new()
        .prune()
        .want(attachable("tax-net"))
        .want(opts)
        .want(attachable("busy-net"))
        .want(DesiredNetwork::overlay("theirs"))
        .has(owned("tax-net"))
        .has(owned("busy-net"))
        .has(unowned("theirs"))
        .has(owned("old-net"))
        .has(owned("kept-net"))
        .attached("busy-net", "tax-web")
        .attached("busy-net", "tax-celery")
        .attached("kept-net", "tax-web")
        .plan();
    insta::assert_snapshot!(p.display());
}

#[test]
fn display_unknown() {
    let p = World::new().want(DesiredNetwork::overlay("tax-net")).unknown().plan();
    insta::assert_snapshot!(p.display());
}

#[test]
fn a_network_swarm_has_not_allocated_yet_is_not_taken_for_drift() {
    // Right after a create the engine reports no driver and no options.
    let mut fresh = owned("tax-net");
    fresh.driver = String::new();
    fresh.options.clear();
    let mut d = attachable("tax-net");
    d.options.insert("encrypted".into(), String::new());
    fresh.attachable = true;
    let p = World::new().want(d).has(fresh.clone()).plan();
    assert_eq!(p.actions(), vec![]);
    assert_eq!(decision(&p, "tax-net"), Decision::Held(Hold::Allocating));
    assert_eq!(p.errors().count(), 0);

    // Fields Swarm does report are still compared.
    let p = World::new().want(DesiredNetwork::overlay("tax-net")).has(fresh).plan();
    assert!(matches!(decision(&p, "tax-net"), Decision::Recreate { .. }));
}
