//! Two controllers on one PostgreSQL store: exactly one leads; when it is killed the other takes
//! over within 15 s, and nothing is executed twice.

use std::time::{Duration, Instant};

use steward_e2e::*;

fn events(w: &World, reason: &str) -> Vec<serde_json::Value> {
    w.events_json().into_iter().filter(|e| e["reason"] == reason).collect()
}

#[test]
fn one_leader_fails_over_within_15s_and_nothing_runs_twice() {
    if !require_swarm("one_leader_fails_over_within_15s_and_nothing_runs_twice") {
        return;
    }
    let Some(db) = PgDb::create("one_leader_fails_over_within_15s_and_nothing_runs_twice") else {
        return;
    };
    let mut w = World::new("ha");
    w.env.push(("STEWARD_STORE".into(), db.url.clone()));
    let web = w.svc("web");
    let port = free_port();
    let doc = |w: &World, image: &str| {
        format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc(
                "web",
                image,
                1,
                &format!(
                    "  ports:\n    - target: 8080\n      published: {port}\n      mode: host\n  preDeploy:\n    - name: migrate\n      args: [migrate]\n  health:\n    url: http://127.0.0.1:{port}/api/v1/health/\n    interval: 300ms\n    successThreshold: 2\n  verifyWindow: 8s\n"
                )
            )
        )
    };
    w.write("app.yaml", &doc(&w, "taxcollector-demo:v1"));
    let a = w.spawn_run(&[]);
    wait_for("a leader", Duration::from_secs(30), || {
        (!events(&w, "LeadershipAcquired").is_empty()).then_some(())
    });
    let b = w.spawn_run(&[]);
    wait_for("v1 rolled out", Duration::from_secs(90), || {
        (events(&w, "RolloutComplete").len() == 1).then_some(())
    });
    let leaders = events(&w, "LeadershipAcquired");
    assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
    let pid_a = w.child(a).id();
    assert!(
        leaders[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!(":{pid_a} leads")),
        "{leaders:?}"
    );

    // v2 with a pre-deploy job; kill the leader while v2 is being verified.
    w.write("app.yaml", &doc(&w, "taxcollector-demo:v2"));
    wait_for("v2 verifying", Duration::from_secs(60), || {
        (w.condition("Service", &web, "Progressing").map(|c| c.1).as_deref() == Some("Verifying")).then_some(())
    });
    w.child(a).kill().unwrap();
    let killed = Instant::now();
    w.child(a).wait().unwrap();
    let pid_b = w.child(b).id();
    wait_for("the standby takes over", Duration::from_secs(15), || {
        events(&w, "LeadershipAcquired")
            .into_iter()
            .find(|e| e["message"].as_str().unwrap().contains(&format!(":{pid_b} leads")))
    });
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    eprintln!("failover after SIGKILL: {took:?}");

    wait_for("v2 rolled out by the new leader", Duration::from_secs(60), || {
        (events(&w, "RolloutComplete").len() == 2).then_some(())
    });
    assert_eq!(served_version(port).as_deref(), Some("v2"));
    let v2_jobs: Vec<_> = events(&w, "PreDeployStarted")
        .into_iter()
        .filter(|e| e["message"].as_str().unwrap().contains("taxcollector-demo:v2"))
        .collect();
    assert_eq!(v2_jobs.len(), 1, "the v2 job started once: {v2_jobs:?}");
    assert_eq!(v2_jobs[0]["count"], 1);
    let v2_writes: Vec<_> = events(&w, "Updated")
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("taxcollector-demo:v1 → taxcollector-demo:v2")
        })
        .collect();
    assert_eq!(v2_writes.len(), 1, "the v2 update was written once: {v2_writes:?}");
    assert_eq!(v2_writes[0]["count"], 1);
    assert!(w.stop(b).success());
}
