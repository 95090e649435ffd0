//! `steward run`: the controller loop against the real Swarm.

use std::time::{Duration, Instant};

use steward_e2e::proxy::DockerProxy;
use steward_e2e::*;

const SOCKET: &str = "/var/run/docker.sock";

fn converged(w: &World, name: &str) -> bool {
    w.condition("Service", name, "Ready") == Some(("True".into(), "Converged".into()))
}

#[test]
fn manual_scale_and_image_change_are_reverted_with_a_drift_event() {
    if !require_swarm("manual_scale_and_image_change_are_reverted_with_a_drift_event") {
        return;
    }
    let mut w = World::new("drift");
    let web = w.svc("web");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 2, "")
        ),
    );
    w.spawn_run(&[]);
    wait_for("web created and converged", Duration::from_secs(60), || {
        converged(&w, &web).then_some(())
    });

    // A hand-made scale is reverted within a couple of seconds.
    docker_ok(&["service", "scale", "-d", &format!("{web}=5")]);
    let t0 = Instant::now();
    wait_for("replicas restored to 2", Duration::from_secs(5), || {
        (replicas(&web) == Some(2)).then_some(())
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "drift corrected in {took:?}");
    let ev = wait_for("DriftCorrected event", Duration::from_secs(5), || {
        w.events_json().into_iter().find(|e| e["reason"] == "DriftCorrected")
    });
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["object"], format!("Service/{web}"));
    assert!(ev["message"].as_str().unwrap().contains("replicas: 5 → 2"), "{ev}");

    // A hand-made image change too.
    docker_ok(&[
        "service",
        "update",
        "-d",
        "--no-resolve-image",
        "--image",
        "taxcollector-demo:v2",
        &web,
    ]);
    wait_for("image restored to v1", Duration::from_secs(5), || {
        (image(&web).as_deref() == Some("taxcollector-demo:v1")).then_some(())
    });
    wait_for("image drift event", Duration::from_secs(5), || {
        w.events_json().into_iter().find(|e| {
            e["reason"] == "DriftCorrected"
                && e["message"]
                    .as_str()
                    .unwrap()
                    .contains("image: taxcollector-demo:v2 → taxcollector-demo:v1")
        })
    });
    wait_for("converged again", Duration::from_secs(30), || {
        converged(&w, &web).then_some(())
    });
    let exit = w.stop(0);
    assert!(exit.success(), "SIGTERM is a clean stop: {exit:?}");
}

#[test]
fn manifest_edit_is_applied_and_invalid_edit_keeps_last_good_state() {
    if !require_swarm("manifest_edit_is_applied_and_invalid_edit_keeps_last_good_state") {
        return;
    }
    let mut w = World::new("watch");
    let web = w.svc("web");
    let doc = |w: &World, replicas: u32| {
        format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", replicas, "")
        )
    };
    w.write("app.yaml", &doc(&w, 1));
    w.spawn_run(&[]);
    wait_for("web converged", Duration::from_secs(60), || {
        converged(&w, &web).then_some(())
    });

    // An edit is picked up from the file watcher (resync is 60 s, so this is the watcher).
    w.write("app.yaml", &doc(&w, 2));
    wait_for("replicas 2 after edit", Duration::from_secs(10), || {
        (running(&web) == Some((2, 2))).then_some(())
    });
    let gen2 = w.status_json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == web.as_str())
        .unwrap()["observedGeneration"]
        .clone();
    assert_eq!(gen2, 2, "generation bumps when the desired state changes");

    // An invalid edit is refused whole: the last valid state stays in force, a Warning says why.
    let version = version_index(&web);
    w.write(
        "app.yaml",
        &doc(&w, 3).replace("  replicas: 3", "  replicas: 3\n  replcas: 4"),
    );
    let ev = wait_for("InvalidDesiredState event", Duration::from_secs(10), || {
        w.events_json()
            .into_iter()
            .find(|e| e["reason"] == "InvalidDesiredState")
    });
    assert_eq!(ev["type"], "Warning");
    assert!(
        ev["message"].as_str().unwrap().contains("app.yaml:") && ev["message"].as_str().unwrap().contains("replcas")
    );
    wait_for("stack Degraded InvalidDesiredState", Duration::from_secs(10), || {
        (w.condition("Stack", &w.stack, "Degraded") == Some(("True".into(), "InvalidDesiredState".into())))
            .then_some(())
    });
    // The running service still follows the last good state, including against drift.
    docker_ok(&["service", "scale", "-d", &format!("{web}=4")]);
    wait_for("drift reverted to last good (2)", Duration::from_secs(5), || {
        (replicas(&web) == Some(2)).then_some(())
    });
    assert!(version_index(&web) > version, "the drift correction wrote");
}

#[test]
fn restart_keeps_status_and_events_and_writes_nothing() {
    if !require_swarm("restart_keeps_status_and_events_and_writes_nothing") {
        return;
    }
    let mut w = World::new("restart");
    let web = w.svc("web");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 1, "")
        ),
    );
    w.spawn_run(&[]);
    wait_for("web converged", Duration::from_secs(60), || {
        converged(&w, &web).then_some(())
    });
    let events_before = w.events_json();
    assert!(events_before.iter().any(|e| e["reason"] == "Created"));
    assert!(w.stop(0).success());

    // Readable while stopped, and still there after a restart.
    assert!(converged(&w, &web));
    let version = version_index(&web);
    let reconciled = |w: &World| {
        let s = w.status_json();
        s["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == web.as_str())
            .unwrap()["lastReconcile"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = reconciled(&w);
    w.spawn_run(&[]);
    // The restarted controller's first pass refreshes lastReconcile (RFC 3339 UTC sorts as text).
    wait_for("a pass after restart", Duration::from_secs(20), || {
        (reconciled(&w) > before).then_some(())
    });
    let events_after = w.events_json();
    for e in &events_before {
        assert!(
            events_after
                .iter()
                .any(|a| a["id"] == e["id"] && a["reason"] == e["reason"]),
            "event lost: {e}"
        );
    }
    assert_eq!(
        version_index(&web),
        version,
        "a restart on a converged stack writes nothing"
    );
    assert!(converged(&w, &web));
}

#[test]
fn unreachable_engine_is_unknown_never_absent_and_recovers() {
    if !require_swarm("unreachable_engine_is_unknown_never_absent_and_recovers") {
        return;
    }
    let mut w = World::new("unreach");
    let (a, b) = (w.svc("a"), w.svc("b"));
    let proxy = DockerProxy::start(SOCKET);
    w.write(
        "app.yaml",
        &format!(
            "{}{}{}",
            w.stack_doc(true),
            w.service_doc("a", "taxcollector-demo:v1", 1, ""),
            w.service_doc("b", "taxcollector-demo:v1", 1, "")
        ),
    );
    let url = proxy.url();
    w.spawn_run(&["--docker-host", &url]);
    wait_for("both converged", Duration::from_secs(60), || {
        (converged(&w, &a) && converged(&w, &b)).then_some(())
    });

    // The engine disappears for this controller.
    proxy.cut();
    wait_for("Ready Unknown", Duration::from_secs(20), || {
        (w.condition("Service", &a, "Ready") == Some(("Unknown".into(), "BackendUnavailable".into()))).then_some(())
    });
    assert!(w
        .events_json()
        .iter()
        .any(|e| e["reason"] == "BackendUnavailable" && e["type"] == "Warning"));
    // Nothing was removed or scaled because a read failed (prune is on!).
    assert_eq!(w.owned_services(), vec![a.clone(), b.clone()]);
    assert_eq!(replicas(&a), Some(1));

    // While it is away the world changes; when it is back steward catches up without a restart.
    docker_ok(&["service", "scale", "-d", &format!("{a}=3")]);
    proxy.restore();
    wait_for("drift corrected after recovery", Duration::from_secs(40), || {
        (replicas(&a) == Some(1)).then_some(())
    });
    wait_for("Ready again", Duration::from_secs(30), || {
        converged(&w, &a).then_some(())
    });
    assert!(w.events_json().iter().any(|e| e["reason"] == "BackendRecovered"));
    assert_eq!(w.owned_services(), vec![a, b]);
}
