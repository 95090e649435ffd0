//! Swarm networks against the real engine: what is created reads back equal (no diff), is owned
//! by its stack, and is removed; attachments name the services using a network.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use steward_backends::swarm::{Swarm, DEFAULT_DOCKER_HOST};
use steward_network::model::{diff, DesiredNetwork, NetOwner};

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

/// A name no other test run uses: `stw-nt-<pid>-<n>`.
fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "stw-nt-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes what a test made, whatever happened to the test.
struct Cleanup {
    services: Vec<String>,
    networks: Vec<String>,
}
impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in &self.services {
            let _ = Command::new("docker").args(["service", "rm", s]).output();
        }
        for n in &self.networks {
            // A service's tasks may still hold the network for a moment after `service rm`.
            for _ in 0..20 {
                let out = Command::new("docker").args(["network", "rm", n]).output();
                if out.is_ok_and(|o| o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not found")) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }
}

#[tokio::test]
async fn a_created_network_reads_back_equal_owned_and_is_removed() {
    if !swarm_available("a_created_network_reads_back_equal_owned_and_is_removed") {
        return;
    }
    let stack = unique("stack");
    let name = unique("net");
    let _c = Cleanup {
        services: vec![],
        networks: vec![name.clone()],
    };
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    let mut d = DesiredNetwork::overlay(&name);
    d.attachable = true;
    d.options.insert("encrypted".into(), String::new());
    d.labels.insert("team".into(), "tax".into());

    let writes = swarm.calls.writes();
    let id = swarm.create_network(&stack, &d).await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(swarm.calls.writes() - writes, 1);

    // Until Swarm's allocator has run, the engine reports the network without driver or options.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let seen = loop {
        let reads = swarm.calls.reads();
        let seen = swarm.observe_networks(&stack, &[name.as_str()]).await.unwrap();
        assert_eq!(swarm.calls.reads() - reads, 1, "observing is one list call");
        if seen.iter().all(|n| !n.allocating()) {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "network {name} still not allocated after 10 s: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let [o] = seen.as_slice() else {
        panic!("one network: {seen:?}")
    };
    assert_eq!(
        (o.id.as_str(), o.name.as_str(), o.scope.as_str()),
        (id.as_str(), name.as_str(), "swarm")
    );
    assert_eq!(o.owner(&stack), NetOwner::Us);
    assert_eq!(diff(&d, o, true), vec![], "written and read back the same");
    // Only the stack's own and the named ones are reported.
    let other = swarm.observe_networks(&unique("other"), &[]).await.unwrap();
    assert!(other.iter().all(|n| n.name != name), "{other:?}");

    // A second network of the same name is refused, not duplicated.
    assert!(swarm.create_network(&stack, &d).await.is_err());

    assert!(
        swarm.remove_network(&o.id, &name).await.unwrap(),
        "removed by this call"
    );
    let after = swarm.observe_networks(&stack, &[name.as_str()]).await.unwrap();
    assert_eq!(after, vec![]);
    // Removing what is gone is done, and says so.
    assert!(!swarm.remove_network(&o.id, &name).await.unwrap());
}

#[tokio::test]
async fn attachments_name_every_service_using_a_network_by_name() {
    if !swarm_available("attachments_name_every_service_using_a_network_by_name") {
        return;
    }
    let stack = unique("stack");
    let net = unique("net");
    let svc = unique("svc");
    let _c = Cleanup {
        services: vec![svc.clone()],
        networks: vec![net.clone()],
    };
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    swarm
        .create_network(&stack, &DesiredNetwork::overlay(&net))
        .await
        .unwrap();
    // A service steward did not create (another stack's, or a person's) still counts.
    let out = Command::new("docker")
        .args([
            "service",
            "create",
            "--detach",
            "--quiet",
            "--name",
            &svc,
            "--replicas",
            "0",
            "--network",
            &net,
            "taxcollector-demo:v1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let attached = swarm.network_attachments().await.unwrap();
    assert_eq!(attached.get(&net), Some(&vec![svc.clone()]), "{attached:?}");

    // In use: the engine refuses the removal, and it is reported, not ignored.
    let [o] = swarm.observe_networks(&stack, &[]).await.unwrap().try_into().unwrap();
    assert!(swarm.remove_network(&o.id, &net).await.is_err());
}
