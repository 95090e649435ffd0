//! The Swarm backend against the real engine: observe cost, stale versions, unreachable engine.

use std::collections::BTreeSet;
use std::process::Command;

use steward_backends::swarm::{Swarm, SwarmError, DEFAULT_DOCKER_HOST};
use steward_plan::{Amounts, DesiredService, Observed, Owner, PolicyState, ServiceState};

fn swarm_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.ControlAvailable}}"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true");
    if !ok {
        assert!(
            std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{test}: needs a Docker swarm manager (STEWARD_REQUIRE_SERVICES=1)"
        );
        eprintln!("SKIPPED {test}: no Docker swarm manager");
    }
    ok
}

fn policy() -> PolicyState {
    PolicyState {
        parallelism: 1,
        delay_ns: 0,
        failure_action: "pause".into(),
        monitor_ns: 1_000_000_000,
        max_failure_ratio: 0.0,
        order: "stop-first".into(),
    }
}

fn desired(name: &str, replicas: u64) -> DesiredService {
    let state = ServiceState {
        image: "taxcollector-demo:v1".into(),
        replicas,
        command: vec![],
        args: vec![],
        env: [("MODE".to_string(), "x".to_string())].into(),
        labels: [("team".to_string(), "tax".to_string())].into(),
        ports: vec![],
        limits: Amounts {
            nano_cpus: Some(100_000_000),
            memory_bytes: Some(32 << 20),
        },
        reservations: Amounts::default(),
        update: policy(),
        rollback: policy(),
        mode: Default::default(),
        task: Default::default(),
    };
    DesiredService::new(name.into(), state, BTreeSet::new(), false)
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["service", "rm", &self.0]).output();
    }
}

#[tokio::test]
async fn written_spec_reads_back_equal_and_steady_observe_is_one_call() {
    if !swarm_available("written_spec_reads_back_equal_and_steady_observe_is_one_call") {
        return;
    }
    let stack = format!("be-rt-{}", std::process::id());
    let name = format!("{stack}-web");
    let _c = Cleanup(name.clone());
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    let d = desired(&name, 0);
    swarm.create(&stack, &d).await.unwrap();

    let reads = swarm.calls.reads();
    let Observed::Known { services, .. } = swarm.observe(&stack, &[name.as_str()]).await else {
        panic!("engine reachable")
    };
    // The service list, and the stack's secrets and configs (for the clean-up of unused
    // versions), read concurrently.
    assert_eq!(swarm.calls.reads() - reads, 3, "steady state: three list calls");
    assert_eq!(services.len(), 1);
    let o = &services[0];
    assert_eq!(o.owner, Owner::Us);
    assert_eq!(
        o.state, d.state,
        "what steward writes reads back identical (no perpetual diff)"
    );
    assert_eq!(o.spec_hash.as_deref(), Some(d.spec_hash.as_str()));
}

#[tokio::test]
async fn stale_version_is_a_conflict_not_an_overwrite() {
    if !swarm_available("stale_version_is_a_conflict_not_an_overwrite") {
        return;
    }
    let stack = format!("be-cf-{}", std::process::id());
    let name = format!("{stack}-web");
    let _c = Cleanup(name.clone());
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    swarm.create(&stack, &desired(&name, 0)).await.unwrap();
    let Observed::Known { services, .. } = swarm.observe(&stack, &[]).await else {
        panic!()
    };
    let (id, version) = (services[0].id.clone(), services[0].version);

    // Somebody else writes in between.
    let out = Command::new("docker")
        .args(["service", "scale", "-d", &format!("{name}=2")])
        .output()
        .unwrap();
    assert!(out.status.success());

    let err = swarm
        .update(&stack, &id, version, &desired(&name, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, SwarmError::Conflict { .. }), "{err:?}");
    let Observed::Known { services, .. } = swarm.observe(&stack, &[]).await else {
        panic!()
    };
    assert_eq!(services[0].state.replicas, 2, "the stale write did not land");
}

#[tokio::test]
async fn unreachable_engine_is_unknown_not_empty() {
    // Port 9 (discard) on loopback: nothing listens there.
    let swarm = Swarm::connect("tcp://127.0.0.1:9").unwrap();
    match swarm.observe("any", &["web"]).await {
        Observed::Unknown { reason } => assert!(reason.contains("unreachable"), "{reason}"),
        other => panic!("an unreachable engine must be Unknown, got {other:?}"),
    }
}
