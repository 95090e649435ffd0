//! Rollouts on the real Swarm: health gates, Swarm's own failure detection, pre-deploy jobs,
//! Prometheus analysis, multi-service revisions, crash recovery and manual rollback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_e2e::*;

/// A single-replica web service with a host-mode published port and, optionally, a health gate.
fn web(w: &World, short: &str, image: &str, port: u16, extra: &str) -> String {
    format!(
        "---
apiVersion: steward.io/v1alpha1
kind: Service
metadata:
  name: {name}
spec:
  image: {image}
  replicas: 1
  ports:
    - target: 8080
      published: {port}
      mode: host
  update:
    parallelism: 1
    monitor: 3s
    failureAction: rollback
    order: stop-first
  rollback:
    monitor: 1s
  verifyWindow: 2s
  progressDeadline: 90s
{extra}",
        name = w.svc(short)
    )
}

fn health(port: u16) -> String {
    format!(
        "  health:
    url: http://127.0.0.1:{port}/api/v1/health/
    interval: 300ms
    timeout: 1s
    successThreshold: 2
    failureThreshold: 3
"
    )
}

fn events_with(w: &World, reason: &str) -> Vec<serde_json::Value> {
    w.events_json().into_iter().filter(|e| e["reason"] == reason).collect()
}

fn serving(port: u16, version: &str) -> bool {
    served_version(port).as_deref() == Some(version)
}

#[test]
fn v1_to_v2_completes_and_reports_healthy() {
    if !require_swarm("v1_to_v2_completes_and_reports_healthy") {
        return;
    }
    let w = World::new("ro-ok");
    let port = free_port();
    let name = w.svc("web");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:v1", port, &health(port))
        ),
    );
    ok(&w.apply());
    assert!(serving(port, "v1"));

    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:v2", port, &health(port))
        ),
    );
    let o = w.apply();
    ok(&o);
    assert!(serving(port, "v2"));
    assert_eq!(
        w.condition("Service", &name, "Ready"),
        Some(("True".into(), "Converged".into()))
    );
    assert_eq!(
        w.condition("Service", &name, "Degraded").map(|c| c.0),
        Some("False".into())
    );
    let verified = events_with(&w, "RolloutVerified");
    assert!(
        verified
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("taxcollector-demo:v2 verified")),
        "{verified:?}"
    );
    assert_eq!(
        events_with(&w, "RolloutComplete").len(),
        2,
        "creation and the update are both rollouts"
    );

    let h = w.steward(&["history", &name, "-o", "json"]);
    ok(&h);
    let h: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    let revs = h["revisions"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(
        (revs[0]["image"].as_str(), revs[0]["outcome"].as_str()),
        (Some("taxcollector-demo:v2"), Some("Complete"))
    );
    assert_eq!(
        (revs[1]["image"].as_str(), revs[1]["outcome"].as_str()),
        (Some("taxcollector-demo:v1"), Some("Complete"))
    );
}

#[test]
fn broken_image_is_rolled_back_and_not_retried() {
    if !require_swarm("broken_image_is_rolled_back_and_not_retried") {
        return;
    }
    let w = World::new("ro-broken");
    let port = free_port();
    let name = w.svc("web");
    // No health gate: this is Swarm's own detection (the task exits at start).
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:v2", port, "")
        ),
    );
    ok(&w.apply());

    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:broken", port, "")
        ),
    );
    let o = w.apply();
    assert_eq!(
        o.status.code(),
        Some(1),
        "a rolled-back deploy is not a success:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stderr(&o).contains("rolled back"), "{}", stderr(&o));
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v2"));
    wait_for("v2 serving again", Duration::from_secs(30), || {
        serving(port, "v2").then_some(())
    });
    assert_eq!(
        w.condition("Service", &name, "Degraded"),
        Some(("True".into(), "RolledBack".into()))
    );
    let rb = events_with(&w, "RolledBack");
    assert_eq!(rb.len(), 1, "{rb:?}");
    assert_eq!(rb[0]["type"], "Warning");

    // The rejected revision is not applied again: no rollback / roll-forward loop.
    let version = version_index(&name);
    for _ in 0..3 {
        let o = w.apply();
        assert_eq!(o.status.code(), Some(1));
    }
    let plan = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert!(!stdout(&plan).contains("taxcollector-demo:broken"), "{}", stdout(&plan));
    assert_eq!(version_index(&name), version, "three more reconciles wrote nothing");
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v2"));
}

#[test]
fn unhealthy_version_is_caught_by_the_health_gate_and_rolled_back() {
    if !require_swarm("unhealthy_version_is_caught_by_the_health_gate_and_rolled_back") {
        return;
    }
    let w = World::new("ro-unhealthy");
    let port = free_port();
    let name = w.svc("web");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:v2", port, &health(port))
        ),
    );
    ok(&w.apply());

    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:unhealthy", port, &health(port))
        ),
    );
    let o = w.apply();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("health check") && err.contains("HTTP 500"), "{err}");
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v2"));
    wait_for("v2 serving again", Duration::from_secs(30), || {
        serving(port, "v2").then_some(())
    });
    let issued = events_with(&w, "RollbackIssued");
    assert!(!issued.is_empty(), "steward, not Swarm, rolled this back");
    let status = w.status_json();
    let item = status["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name.as_str())
        .unwrap()
        .clone();
    let degraded = item["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()
        .clone();
    assert_eq!(degraded["reason"], "RolledBack");
    assert!(degraded["message"].as_str().unwrap().contains("HTTP 500"), "{degraded}");
}

#[test]
fn failing_pre_deploy_job_leaves_the_service_untouched() {
    if !require_swarm("failing_pre_deploy_job_leaves_the_service_untouched") {
        return;
    }
    let w = World::new("ro-job");
    let port = free_port();
    let name = w.svc("web");
    let job = |args: &str| format!("  preDeploy:\n    - name: migrate\n      args: [{args}]\n      timeout: 60s\n");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:v1", port, &job("migrate"))
        ),
    );
    ok(&w.apply());
    let ran = events_with(&w, "PreDeploySucceeded");
    assert_eq!(ran.len(), 1);
    assert!(
        ran[0]["message"]
            .as_str()
            .unwrap()
            .contains("0042_split_payments... OK"),
        "job logs are captured: {}",
        ran[0]
    );
    let version = version_index(&name);

    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:v2", port, &job("migrate, --fail"))
        ),
    );
    let o = w.apply();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pre-deploy job"), "{}", stderr(&o));
    assert_eq!(version_index(&name), version, "the service was never touched");
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v1"));
    assert!(serving(port, "v1"));
    let failed = events_with(&w, "PreDeployFailed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["message"].as_str().unwrap().contains("contains null values"),
        "{}",
        failed[0]
    );
    let leftovers = docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("label=steward.io/job-of={name}"),
        "--format",
        "{{.Name}}",
    ]);
    assert!(leftovers.is_empty(), "job services are removed when done: {leftovers}");
}

#[test]
fn second_service_failing_reverts_both() {
    if !require_swarm("second_service_failing_reverts_both") {
        return;
    }
    let w = World::new("ro-two");
    let (p1, p2) = (free_port(), free_port());
    let (api, worker) = (w.svc("api"), w.svc("worker"));
    let doc = |api_image: &str, worker_image: &str| {
        format!(
            "{}{}{}",
            w.stack_doc(false),
            web(&w, "api", api_image, p1, &health(p1)),
            web(
                &w,
                "worker",
                worker_image,
                p2,
                &format!("{}  dependsOn: [{api}]\n", health(p2))
            )
        )
    };
    w.write("app.yaml", &doc("taxcollector-demo:v1", "taxcollector-demo:v1"));
    ok(&w.apply());

    w.write("app.yaml", &doc("taxcollector-demo:v2", "taxcollector-demo:unhealthy"));
    let o = w.apply();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        image(&api).as_deref(),
        Some("taxcollector-demo:v1"),
        "the healthy service of the revision is reverted too"
    );
    assert_eq!(image(&worker).as_deref(), Some("taxcollector-demo:v1"));
    wait_for("both serve v1", Duration::from_secs(30), || {
        (serving(p1, "v1") && serving(p2, "v1")).then_some(())
    });
    // The order held: worker started only after api was verified.
    let events = w.events_json();
    let pos = |reason: &str, obj: &str| {
        events
            .iter()
            .position(|e| e["reason"] == reason && e["object"] == format!("Service/{obj}"))
    };
    let api_verified = events
        .iter()
        .rposition(|e| e["reason"] == "RolloutVerified" && e["object"] == format!("Service/{api}"));
    let worker_updating = events
        .iter()
        .rposition(|e| e["reason"] == "RolloutUpdating" && e["object"] == format!("Service/{worker}"));
    assert!(api_verified < worker_updating, "dependsOn order: {events:#?}");
    assert!(pos("RollingBack", &worker).is_some());
}

#[test]
fn controller_killed_while_verifying_resumes_without_rerunning_jobs() {
    if !require_swarm("controller_killed_while_verifying_resumes_without_rerunning_jobs") {
        return;
    }
    let mut w = World::new("ro-kill");
    let port = free_port();
    let name = w.svc("web");
    let extra = |window: &str| {
        format!(
            "{}  preDeploy:\n    - name: migrate\n      args: [migrate]\n",
            health(port)
        )
        .replace("verifyWindow: 2s", window)
    };
    let doc = |w: &World, image: &str| {
        format!(
            "{}{}",
            w.stack_doc(false),
            web(w, "web", image, port, &extra("")).replace("verifyWindow: 2s", "verifyWindow: 6s")
        )
    };
    w.write("app.yaml", &doc(&w, "taxcollector-demo:v1"));
    ok(&w.apply());

    w.write("app.yaml", &doc(&w, "taxcollector-demo:v2"));
    let first = w.spawn_run(&[]);
    wait_for("rollout Verifying", Duration::from_secs(60), || {
        (w.condition("Service", &name, "Progressing").map(|c| c.1).as_deref() == Some("Verifying")).then_some(())
    });
    // SIGKILL: no chance to clean up.
    w.child(first).kill().unwrap();
    w.child(first).wait().unwrap();

    let second = w.spawn_run(&[]);
    let t0 = Instant::now();
    wait_for("rollout completes after restart", Duration::from_secs(60), || {
        (events_with(&w, "RolloutComplete").len() == 2).then_some(())
    });
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(serving(port, "v2"));
    let started: Vec<_> = events_with(&w, "PreDeployStarted")
        .into_iter()
        .filter(|e| e["message"].as_str().unwrap().contains("taxcollector-demo:v2"))
        .collect();
    assert_eq!(started.len(), 1, "the v2 pre-deploy job ran once: {started:?}");
    assert_eq!(started[0]["count"], 1);
    assert!(w.stop(second).success());
}

#[test]
fn manual_rollback_pins_until_the_desired_state_changes() {
    if !require_swarm("manual_rollback_pins_until_the_desired_state_changes") {
        return;
    }
    let w = World::new("ro-manual");
    let port = free_port();
    let name = w.svc("web");
    let doc = |image: &str, env: &str| {
        format!(
            "{}{}",
            w.stack_doc(false),
            web(
                &w,
                "web",
                image,
                port,
                &format!("  env:\n    - name: DEMO_GREETING\n      value: {env}\n")
            )
        )
    };
    w.write("app.yaml", &doc("taxcollector-demo:v1", "a"));
    ok(&w.apply());
    w.write("app.yaml", &doc("taxcollector-demo:v2", "a"));
    ok(&w.apply());
    assert!(serving(port, "v2"));

    let o = w.steward(&["rollback", &name]);
    ok(&o);
    assert!(stdout(&o).contains("revision 1"), "{}", stdout(&o));
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v1"));
    wait_for("v1 serving", Duration::from_secs(30), || {
        serving(port, "v1").then_some(())
    });

    // The sync loop does not undo it.
    let version = version_index(&name);
    for _ in 0..3 {
        assert_eq!(
            w.apply().status.code(),
            Some(1),
            "the pinned-out revision is reported, not applied"
        );
    }
    assert_eq!(version_index(&name), version);
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v1"));

    // A new commit lifts the pin.
    w.write("app.yaml", &doc("taxcollector-demo:v2", "b"));
    ok(&w.apply());
    assert!(serving(port, "v2"));
    let h: serde_json::Value = serde_json::from_slice(&w.steward(&["history", &name, "-o", "json"]).stdout).unwrap();
    let outcomes: Vec<&str> = h["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes.contains(&"RolledBack"), "{outcomes:?}");
}

/// Bounded background traffic to the demo app: `stop` ends it, and it ends by itself after 90 s.
fn traffic(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(90);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let _ = http_get(port, "/");
            let _ = http_get(port, "/api/v1/health/");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

struct Target(std::path::PathBuf);
impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Registers the service's port with the project's Prometheus (scripts/ensure-prometheus.sh).
fn scrape(id: &str, port: u16) -> Option<Target> {
    let dir = std::env::var("STEWARD_PROMETHEUS_DIR").unwrap_or_else(|_| "/tmp/steward-prometheus".into());
    let ready = http_get(prometheus_port(), "/-/ready").is_some_and(|(s, _)| s == 200);
    if !ready {
        assert!(
            std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
            "Prometheus is not running: run scripts/ensure-prometheus.sh"
        );
        eprintln!("SKIPPED: no Prometheus on 127.0.0.1:{}", prometheus_port());
        return None;
    }
    let path = std::path::Path::new(&dir).join("targets").join(format!("{id}.json"));
    std::fs::write(
        &path,
        format!("[{{\"targets\":[\"127.0.0.1:{port}\"],\"labels\":{{\"instance_id\":\"{id}\"}}}}]"),
    )
    .unwrap();
    Some(Target(path))
}

fn prometheus_port() -> u16 {
    std::env::var("STEWARD_PROMETHEUS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(19090)
}

fn analysis(id: &str, query_kind: &str) -> String {
    let q = match query_kind {
        "error-rate" => format!(
            "sum(rate(demo_http_requests_total{{instance_id=\\\"{id}\\\",status=~\\\"5..\\\"}}[5s])) / sum(rate(demo_http_requests_total{{instance_id=\\\"{id}\\\"}}[5s]))"
        ),
        _ => format!("sum(rate(no_such_metric_total{{instance_id=\\\"{id}\\\"}}[5s]))"),
    };
    format!(
        "  analysis:
    prometheus: http://127.0.0.1:{}
    interval: 2s
    count: 3
    inconclusiveLimit: {}
    metrics:
      - name: error-rate
        query: \"{q}\"
        successCondition: result < 0.05
",
        prometheus_port(),
        if query_kind == "error-rate" { 4 } else { 0 }
    )
}

#[test]
fn analysis_error_rate_over_threshold_rolls_back_and_empty_result_pauses() {
    if !require_swarm("analysis_error_rate_over_threshold_rolls_back_and_empty_result_pauses") {
        return;
    }
    let w = World::new("ro-prom");
    let port = free_port();
    let name = w.svc("web");
    let id = w.stack.clone();
    let Some(_target) = scrape(&id, port) else { return };
    let stop = Arc::new(AtomicBool::new(false));
    let doc = |image: &str, kind: &str| {
        format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", image, port, &analysis(&id, kind)).replace("verifyWindow: 2s", "verifyWindow: 4s")
        )
    };
    // v1 with traffic: the error rate is 0 and the analysis passes.
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            web(&w, "web", "taxcollector-demo:v1", port, "")
        ),
    );
    ok(&w.apply());
    let load = traffic(port, stop.clone());
    w.write("app.yaml", &doc("taxcollector-demo:v2", "error-rate"));
    let o = w.apply();
    ok(&o);
    assert!(serving(port, "v2"));

    // :unhealthy answers 500 on half the requests: the error-rate query fails the analysis.
    w.write("app.yaml", &doc("taxcollector-demo:unhealthy", "error-rate"));
    let o = w.apply();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("analysis failed") && err.contains("successCondition"),
        "{err}"
    );
    assert_eq!(image(&name).as_deref(), Some("taxcollector-demo:v2"));

    // An empty result is Inconclusive: the rollout pauses for a decision, nothing is rolled back.
    w.write("app.yaml", &doc("taxcollector-demo:v1", "empty"));
    let o = w.apply();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("paused") && stderr(&o).contains("no data"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        image(&name).as_deref(),
        Some("taxcollector-demo:v1"),
        "inconclusive is not a rollback"
    );
    assert_eq!(
        w.condition("Service", &name, "Degraded"),
        Some(("True".into(), "AnalysisInconclusive".into()))
    );
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
}
