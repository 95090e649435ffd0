//! `steward import --stack`: a stack that `docker stack deploy` made is imported, and the
//! manifests describe it exactly — `steward plan` finds nothing to change but the ownership
//! labels of the adoption, and after `apply` it is in sync.

use std::time::Duration;

use steward_e2e::*;

/// Removes the stack on drop (even when an assertion failed) and waits for its networks to go,
/// then removes its named volume (`docker stack rm` leaves volumes).
struct DeployedStack {
    name: String,
}

impl DeployedStack {
    fn networks(&self) -> Vec<String> {
        let out = docker(&[
            "network",
            "ls",
            "--filter",
            &format!("label=com.docker.stack.namespace={}", self.name),
            "--format",
            "{{.Name}}",
        ]);
        String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
    }
}

impl Drop for DeployedStack {
    fn drop(&mut self) {
        let _ = docker(&["stack", "rm", &self.name]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline && !self.networks().is_empty() {
            std::thread::sleep(Duration::from_millis(250));
        }
        // The volume is free once the stack's containers are gone.
        let volume = format!("{}_data", self.name);
        while std::time::Instant::now() < deadline {
            let o = docker(&["volume", "rm", &volume]);
            if o.status.success() || String::from_utf8_lossy(&o.stderr).contains("no such volume") {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

const COMPOSE: &str = r#"version: "3.8"
services:
  web:
    image: taxcollector-demo:v1
    environment:
      DEMO_GREETING: hello
      DB_PASSWORD: hunter2
    ports:
      # Host mode: the ingress routing mesh does not work on every machine (CI's).
      - target: 8080
        published: HOST_PORT
        mode: host
    deploy:
      replicas: 1
      labels: {team: tax}
      placement:
        constraints: [node.role == manager]
      update_config:
        parallelism: 1
        order: stop-first
      restart_policy:
        condition: on-failure
      resources:
        limits: {cpus: "0.25", memory: 64M}
    healthcheck:
      test: ["CMD", "/demo-app", "--healthcheck"]
      interval: 2s
      timeout: 2s
      retries: 3
    networks: [back]
    volumes:
      - data:/data
    secrets:
      - db_password
      - source: db_password
        target: db_password_ro
        mode: 0o400
    stop_grace_period: 20s
  worker:
    image: taxcollector-demo:v1
    environment:
      PORT: "9090"
    deploy:
      replicas: 2
networks:
  back:
    driver: overlay
    attachable: true
    labels: {tier: back}
volumes:
  data: {}
secrets:
  db_password:
    file: ./db_password.txt
"#;

#[test]
fn imported_stack_plans_no_change() {
    if !require_swarm("imported_stack_plans_no_change") {
        return;
    }
    let w = World::new("import");
    // Swarm stack names become name prefixes: keep it short and unique.
    let stack = w.stack.replace("e2e-import-", "imp");
    let src = w.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("db_password.txt"), "s3cret\n").unwrap();
    let compose = src.join("compose.yml");
    std::fs::write(&compose, COMPOSE.replace("HOST_PORT", &free_port().to_string())).unwrap();

    let _guard = DeployedStack { name: stack.clone() };
    let deploy = docker(&["stack", "deploy", "-c", compose.to_str().unwrap(), &stack]);
    assert!(deploy.status.success(), "docker stack deploy: {}", stderr(&deploy));
    let (web, worker) = (format!("{stack}_web"), format!("{stack}_worker"));
    wait_for(
        "both stack services to run their tasks",
        Duration::from_secs(90),
        || (running(&web) == Some((1, 1)) && running(&worker) == Some((2, 2))).then_some(()),
    );

    let out = w.dir.path().join("imported");
    let import = w.steward(&[
        "import",
        compose.to_str().unwrap(),
        "--stack",
        &stack,
        "-o",
        out.to_str().unwrap(),
    ]);
    let summary = stdout(&import);
    assert!(import.status.success(), "import failed: {}{summary}", stderr(&import));
    for f in ["web.yaml", "worker.yaml", "networks.yaml", "volumes.yaml", "stack.yaml"] {
        assert!(out.join(f).exists(), "{f} not written:\n{summary}");
    }
    assert!(
        summary.contains("env DB_PASSWORD"),
        "the secret-looking variable is listed:\n{summary}"
    );
    // A second import does not overwrite without --force.
    let again = w.steward(&[
        "import",
        compose.to_str().unwrap(),
        "--stack",
        &stack,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{}", stdout(&again));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    let validate = w.steward(&["validate", out.to_str().unwrap()]);
    assert!(
        validate.status.success(),
        "validate: {}{}",
        stdout(&validate),
        stderr(&validate)
    );

    // The service runs with DB_PASSWORD in its environment (as stack deploy put it there); the
    // imported manifest reads it from steward's environment with `expose: env`.
    let plan_cmd = || {
        w.cmd()
            .env("DB_PASSWORD", "hunter2")
            .args(["plan", out.to_str().unwrap()])
            .output()
            .expect("run steward plan")
    };
    let plan = plan_cmd();
    let text = stdout(&plan);
    assert_ne!(plan.status.code(), Some(1), "plan failed: {text}{}", stderr(&plan));
    for svc in [&web, &worker] {
        assert!(
            text.contains(&format!("~ Service/{svc} (Adopted)")),
            "{svc} not adopted:\n{text}"
        );
    }
    let changes: Vec<&str> = text.lines().filter(|l| l.contains('→')).collect();
    assert!(changes.is_empty(), "plan of the imported stack changes fields:\n{text}");

    // Adopting writes only steward's ownership labels; then it is in sync.
    let apply = w
        .cmd()
        .env("DB_PASSWORD", "hunter2")
        .args(["apply", out.to_str().unwrap(), "--timeout", "2m"])
        .output()
        .expect("run steward apply");
    assert!(apply.status.success(), "apply: {}{}", stdout(&apply), stderr(&apply));
    let plan = plan_cmd();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "not in sync after adoption:\n{}{}",
        stdout(&plan),
        stderr(&plan)
    );
}
