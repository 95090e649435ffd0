//! `steward apply` / `plan` against the real single-node Swarm.

use steward_e2e::*;

#[test]
fn create_scale_update_image_then_noop_writes_nothing() {
    if !require_swarm("create_scale_update_image_then_noop_writes_nothing") {
        return;
    }
    let w = World::new("lifecycle");
    let (web, worker) = (w.svc("web"), w.svc("worker"));
    let write = |web_image: &str, web_replicas: u32| {
        w.write(
            "app.yaml",
            &format!(
                "{}{}{}",
                w.stack_doc(false),
                w.service_doc(
                    "web",
                    web_image,
                    web_replicas,
                    "  env:\n    - name: DEMO_GREETING\n      value: hi\n"
                ),
                w.service_doc("worker", "taxcollector-demo:v1", 1, "")
            ),
        );
    };

    // Create.
    write("taxcollector-demo:v1", 2);
    let o = w.apply();
    ok(&o);
    assert!(stdout(&o).contains(&format!("+ Service/{web}")), "{}", stdout(&o));
    assert_eq!(running(&web), Some((2, 2)));
    assert_eq!(running(&worker), Some((1, 1)));
    assert_eq!(label(&web, "steward.io/stack").as_deref(), Some(w.stack.as_str()));
    assert_eq!(label(&web, "steward.io/managed-by").as_deref(), Some("steward"));
    assert_eq!(
        w.condition("Service", &web, "Ready"),
        Some(("True".into(), "Converged".into()))
    );

    // Scale.
    write("taxcollector-demo:v1", 3);
    let o = w.apply();
    ok(&o);
    assert!(stdout(&o).contains("replicas: 2 → 3"), "{}", stdout(&o));
    assert_eq!(running(&web), Some((3, 3)));

    // Image change.
    let worker_version = version_index(&worker);
    write("taxcollector-demo:v2", 3);
    let o = w.apply();
    ok(&o);
    assert!(
        stdout(&o).contains("image: taxcollector-demo:v1 → taxcollector-demo:v2"),
        "{}",
        stdout(&o)
    );
    assert_eq!(image(&web).as_deref(), Some("taxcollector-demo:v2"));
    assert_eq!(running(&web), Some((3, 3)));
    assert_eq!(
        version_index(&worker),
        worker_version,
        "an unchanged service is not written"
    );
    let s = w.status_json();
    let item = s["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == web.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["image"], "taxcollector-demo:v2");
    assert_eq!(item["runningReplicas"], 3);

    // No-op: a converged stack is not written again.
    let before = (version_index(&web), version_index(&worker));
    for _ in 0..3 {
        let o = w.apply();
        ok(&o);
        assert!(stdout(&o).contains("In sync"), "{}", stdout(&o));
    }
    let plan = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert_eq!(plan.status.code(), Some(0), "plan in sync exits 0: {}", stdout(&plan));
    assert_eq!(
        (version_index(&web), version_index(&worker)),
        before,
        "no-op apply changed a version index"
    );

    let events = w.events_json();
    let reasons: Vec<&str> = events.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(
        reasons.contains(&"Created") && reasons.contains(&"Updated"),
        "{reasons:?}"
    );
}

#[test]
fn plan_reports_changes_with_exit_2_and_json() {
    if !require_swarm("plan_reports_changes_with_exit_2_and_json") {
        return;
    }
    let w = World::new("plan");
    let web = w.svc("web");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 1, "")
        ),
    );
    let p = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert_eq!(p.status.code(), Some(2), "{}", stdout(&p));
    assert!(stdout(&p).contains(&format!("+ Service/{web}")));
    assert_eq!(replicas(&web), None, "plan writes nothing");
    ok(&w.apply());
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 2, "")
        ),
    );
    let p = w.steward(&["plan", w.manifests().to_str().unwrap(), "-o", "json"]);
    assert_eq!(p.status.code(), Some(2));
    let j: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    assert_eq!(j["inSync"], false);
    assert_eq!(j["actions"][0]["action"], "Update");
    assert_eq!(j["actions"][0]["reason"], "SpecChanged");
    assert_eq!(j["actions"][0]["changes"][0]["field"], "replicas");
    assert_eq!(j["actions"][0]["changes"][0]["old"], "1");
    assert_eq!(j["actions"][0]["changes"][0]["new"], "2");
}

#[test]
fn unowned_service_is_a_conflict_until_adopted() {
    if !require_swarm("unowned_service_is_a_conflict_until_adopted") {
        return;
    }
    let mut w = World::new("adopt");
    let name = w.svc("legacy");
    docker_ok(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        &name,
        "--replicas",
        "1",
        "taxcollector-demo:v1",
    ]);
    w.track(&name);
    let before = version_index(&name);

    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("legacy", "taxcollector-demo:v2", 2, "")
        ),
    );
    let o = w.apply();
    assert_eq!(
        o.status.code(),
        Some(1),
        "a conflict is not convergence: {}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("not owned by steward"), "{}", stderr(&o));
    assert_eq!(version_index(&name), before, "an unowned service is left untouched");
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v1"));
    let events = w.events_json();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "ConflictUnowned" && e["type"] == "Warning"),
        "{events:?}"
    );
    assert_eq!(
        w.condition("Service", &name, "Degraded").map(|c| c.0),
        Some("True".into())
    );

    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("legacy", "taxcollector-demo:v2", 2, "  adopt: true\n")
        ),
    );
    ok(&w.apply());
    assert_eq!(
        label(&name, "steward.io/stack").as_deref(),
        Some(w.stack.as_str()),
        "adopted service carries ownership"
    );
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v2"));
    assert_eq!(running(&name), Some((2, 2)));
    assert!(w.events_json().iter().any(|e| e["reason"] == "Adopted"));
}

#[test]
fn orphans_are_reported_and_only_pruned_when_asked() {
    if !require_swarm("orphans_are_reported_and_only_pruned_when_asked") {
        return;
    }
    let mut w = World::new("prune");
    let (a, b) = (w.svc("a"), w.svc("b"));
    // An unowned bystander with a name like ours must never be pruned.
    let bystander = w.svc("bystander");
    docker_ok(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        &bystander,
        "--replicas",
        "0",
        "taxcollector-demo:v1",
    ]);
    w.track(&bystander);

    let two = format!(
        "{}{}{}",
        w.stack_doc(false),
        w.service_doc("a", "taxcollector-demo:v1", 1, ""),
        w.service_doc("b", "taxcollector-demo:v1", 1, "")
    );
    w.write("app.yaml", &two);
    ok(&w.apply());
    assert_eq!(w.owned_services(), vec![a.clone(), b.clone()]);

    // b leaves the desired state; prune is off: it stays and is reported.
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("a", "taxcollector-demo:v1", 1, "")
        ),
    );
    ok(&w.apply());
    assert_eq!(
        w.owned_services(),
        vec![a.clone(), b.clone()],
        "prune is off: nothing removed"
    );
    assert!(w
        .events_json()
        .iter()
        .any(|e| e["reason"] == "Orphaned" && e["object"] == format!("Service/{b}")));
    assert_eq!(
        w.condition("Service", &b, "Degraded"),
        Some(("True".into(), "Orphaned".into()))
    );

    // Prune on: b is removed, the bystander is not.
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(true),
            w.service_doc("a", "taxcollector-demo:v1", 1, "")
        ),
    );
    ok(&w.apply());
    assert_eq!(w.owned_services(), vec![a.clone()]);
    assert!(replicas(&bystander).is_some(), "unowned service survived prune");
    assert!(w.events_json().iter().any(|e| e["reason"] == "Pruned"));
    assert_eq!(
        w.condition("Service", &b, "Ready"),
        None,
        "status of a pruned service is gone"
    );
}

#[test]
fn invalid_manifest_is_refused_whole_and_touches_nothing() {
    if !require_swarm("invalid_manifest_is_refused_whole_and_touches_nothing") {
        return;
    }
    let w = World::new("invalid");
    let (a, b) = (w.svc("a"), w.svc("b"));
    let good = format!(
        "{}{}{}",
        w.stack_doc(false),
        w.service_doc("a", "taxcollector-demo:v1", 1, ""),
        w.service_doc("b", "taxcollector-demo:v1", 1, "")
    );
    w.write("app.yaml", &good);
    ok(&w.apply());
    let before = (version_index(&a), version_index(&b));

    // One valid change (a: 1 → 2 replicas) next to two invalid documents: nothing is applied.
    let bad = format!(
        "{}{}{}",
        w.stack_doc(false),
        w.service_doc("a", "taxcollector-demo:v1", 2, ""),
        w.service_doc("b", "taxcollector-demo:v1", 1, "")
            .replace("  replicas: 1", "  replcas: 1")
    );
    w.write("app.yaml", &bad);
    w.write(
        "more.yaml",
        &w.service_doc("c", "taxcollector-demo:v1", 1, "")
            .replace("replicas: 1", "replicas: -3"),
    );
    let o = w.apply();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("app.yaml:") && out.contains("replcas"), "{out}");
    assert!(
        out.contains("more.yaml:8:13:") && out.contains("spec.replicas"),
        "{out}"
    );
    assert_eq!(
        (version_index(&a), version_index(&b)),
        before,
        "invalid desired state changed the cluster"
    );
    assert_eq!(replicas(&a), Some(1));
    assert_eq!(replicas(&w.svc("c")), None);
}
