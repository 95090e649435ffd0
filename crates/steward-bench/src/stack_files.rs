//! The manifests and compose files the Swarm benchmark deploys.

use std::fmt::Write as _;
use std::path::Path;

use crate::IMAGE;

/// Every task-level field a service can set without outside objects (no network or volume
/// to create), with values Swarm accepts on one node; the config is a steward-owned object.
const EVERY_FIELD: &str = r#"  mounts:
    - {type: tmpfs, target: /scratch, size: 8Mi}
    - {type: bind, source: /tmp, target: /host-tmp, readOnly: true}
  placement: {constraints: ["node.role == manager"], maxReplicasPerNode: 1}
  stopGracePeriod: 20s
  stopSignal: SIGTERM
  restartPolicy: {condition: on-failure, delay: 2s, maxAttempts: 3, window: 30s}
  healthcheck: {test: ["CMD", "/demo-app", "--healthcheck"], interval: 5s, timeout: 2s, retries: 3, startPeriod: 2s}
  configs:
    - {name: app-conf, value: "greeting=hi", target: /etc/app.conf}
  user: "0"
  workingDir: /
  hostname: bench
  init: true
  labels: {team: tax}
  logging: {driver: json-file, options: {max-size: 1m}}
  ulimits: {nofile: {soft: 1024, hard: 2048}}
  capAdd: [NET_ADMIN]
  capDrop: [MKNOD]
"#;

/// One steward stack of `n` single-replica services, written as one manifest file.
pub fn write_stack(dir: &Path, stack: &str, names: &[String], every_field: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut y = format!("apiVersion: steward.io/v1alpha1\nkind: Stack\nmetadata: {{name: {stack}}}\n");
    for n in names {
        write!(
            y,
            "---\napiVersion: steward.io/v1alpha1\nkind: Service\nmetadata: {{name: {n}}}\nspec:\n  image: {IMAGE}\n  replicas: 1\n"
        )?;
        if every_field {
            y.push_str(EVERY_FIELD);
        }
    }
    std::fs::write(dir.join("stack.yaml"), y)?;
    Ok(())
}

/// The equivalent compose file for `docker stack deploy`.
pub fn write_compose(path: &Path, services: &[String]) -> anyhow::Result<()> {
    let mut y = String::from("version: \"3.8\"\nservices:\n");
    for s in services {
        write!(y, "  {s}:\n    image: {IMAGE}\n    deploy:\n      replicas: 1\n")?;
    }
    std::fs::write(path, y)?;
    Ok(())
}
