//! Secrets as Swarm secrets on the real Swarm: created with a versioned name, mounted and
//! readable in the task, rotated, rolled back, garbage-collected; and the value never reaches
//! the Engine's service spec, the store, logs, events, status, plans or metrics.

use std::time::Duration;

use steward_e2e::*;

/// Secret names the stack owns, sorted.
fn owned_secrets(stack: &str) -> Vec<String> {
    let mut v: Vec<String> = docker_ok(&[
        "secret",
        "ls",
        "--filter",
        &format!("label=steward.io/stack={stack}"),
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .filter(|l| !l.is_empty())
    .map(String::from)
    .collect();
    v.sort();
    v
}

fn secret_in_task(svc: &str, path: &str, expect: &str) {
    wait_for(
        &format!("{path} to read {expect:?} in a task of {svc}"),
        Duration::from_secs(60),
        || {
            let ids = docker_ok(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={svc}"),
            ]);
            let id = ids.lines().next()?;
            let o = docker(&["exec", id, "/demo-app", "cat", path]);
            (String::from_utf8_lossy(&o.stdout) == expect).then_some(())
        },
    );
}

#[test]
fn secrets_are_versioned_swarm_secrets_mounted_rotated_rolled_back_collected_and_never_leak() {
    if !require_swarm("secrets_are_versioned_swarm_secrets_mounted_rotated_rolled_back_collected_and_never_leak") {
        return;
    }
    let mut w = World::new("secrets");
    let svc = w.svc("web");
    // Values unique to this run, so a grep can only find them where they leaked.
    let nonce = format!("{}{}", std::process::id(), w.stack.len());
    let v1 = format!("hunter2-v1-{nonce}-Zq8");
    let v2 = format!("hunter2-v2-{nonce}-Zq8");
    let api_key = format!("apikey-{nonce}-Xw3");
    let secrets_dir = w.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    std::fs::write(secrets_dir.join("api-key"), format!("{api_key}\n")).unwrap();
    w.env.push(("STEWARD_E2E_DB_PASSWORD".into(), v1.clone()));
    w.env
        .push(("STEWARD_SECRETS_DIR".into(), secrets_dir.display().to_string()));
    let doc = w.service_doc(
        "web",
        "taxcollector-demo:v1",
        1,
        "  env:\n    - name: DB_PASSWORD\n      valueFrom: {env: STEWARD_E2E_DB_PASSWORD}\n  secrets:\n    - name: api-key\n      valueFrom: {file: api-key}\n      target: /run/secrets/api.key\n      mode: 0o400\n",
    );
    w.write("app.yaml", &format!("{}{doc}", w.stack_doc(false)));

    // Created: one versioned secret per value, mounted, <VAR>_FILE set.
    let o = w.apply();
    ok(&o);
    let mut leaks = vec![("apply output".to_string(), format!("{}{}", stdout(&o), stderr(&o)))];
    let first = owned_secrets(&w.stack);
    assert_eq!(first.len(), 2, "{first:?}");
    let db_v1 = first
        .iter()
        .find(|n| n.starts_with(&format!("{svc}-DB_PASSWORD-")))
        .cloned()
        .expect("DB_PASSWORD secret");
    assert!(
        first.iter().any(|n| n.starts_with(&format!("{svc}-api-key-"))),
        "{first:?}"
    );
    let env = inspect(&svc, "{{json .Spec.TaskTemplate.ContainerSpec.Env}}").unwrap();
    assert!(env.contains("DB_PASSWORD_FILE=/run/secrets/DB_PASSWORD"), "{env}");
    assert!(
        !env.contains("DB_PASSWORD="),
        "the value is not in the environment: {env}"
    );
    secret_in_task(&svc, "/run/secrets/DB_PASSWORD", &v1);
    secret_in_task(&svc, "/run/secrets/api.key", &api_key);
    let plan = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));
    leaks.push(("plan".into(), stdout(&plan)));

    // Rotated: a new version and a rolling update; the previous version stays for rollback.
    w.env.retain(|(k, _)| k != "STEWARD_E2E_DB_PASSWORD");
    w.env.push(("STEWARD_E2E_DB_PASSWORD".into(), v2.clone()));
    let plan = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert_eq!(plan.status.code(), Some(2));
    let text = stdout(&plan);
    assert!(text.contains(&format!("+ Secret/{svc}-DB_PASSWORD-")), "{text}");
    leaks.push(("rotation plan".into(), text));
    let o = w.apply();
    ok(&o);
    leaks.push(("rotation apply".into(), format!("{}{}", stdout(&o), stderr(&o))));
    let second = owned_secrets(&w.stack);
    assert_eq!(second.len(), 3, "the old version is kept for a rollback: {second:?}");
    secret_in_task(&svc, "/run/secrets/DB_PASSWORD", &v2);
    let db_v2 = inspect(
        &svc,
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}",
    )
    .unwrap();
    assert!(!db_v2.contains(&db_v1), "the service moved to the new version: {db_v2}");

    // Rolled back: the previous secret version comes back with the revision.
    let o = w.steward(&["rollback", &svc, "--timeout", "90s"]);
    ok(&o);
    leaks.push(("rollback".into(), format!("{}{}", stdout(&o), stderr(&o))));
    let names = inspect(
        &svc,
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}",
    )
    .unwrap();
    assert!(names.contains(&db_v1), "rollback returns to {db_v1}: {names}");
    secret_in_task(&svc, "/run/secrets/DB_PASSWORD", &v1);

    // Garbage-collected: an owned secret no service and no revision uses is removed; the
    // versions history refers to are kept.
    let stray = format!("{svc}-STRAY-0000abcd");
    let stray_file = w.dir.path().join("stray");
    std::fs::write(&stray_file, "stray").unwrap();
    docker_ok(&[
        "secret",
        "create",
        "--label",
        "steward.io/managed-by=steward",
        "--label",
        &format!("steward.io/stack={}", w.stack),
        "--label",
        &format!("steward.io/service={svc}"),
        &stray,
        stray_file.to_str().unwrap(),
    ]);
    let plan = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert!(
        stdout(&plan).contains(&format!("- Secret/{stray}")),
        "{}",
        stdout(&plan)
    );
    // The service stays pinned to the rolled-back revision (until the desired state changes);
    // the pass collects the stray all the same.
    let o = w.apply();
    leaks.push(("final apply".into(), format!("{}{}", stdout(&o), stderr(&o))));
    let last = owned_secrets(&w.stack);
    assert!(!last.contains(&stray), "{last:?}");
    assert!(last.contains(&db_v1), "history still refers to {db_v1}: {last:?}");

    // A controller with its API serves status, events and metrics: none holds a value.
    w.env.push(("STEWARD_LOG".into(), "debug".into()));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let run = w.spawn_run(&["--listen", &listen]);
    wait_for("the controller's first pass", Duration::from_secs(60), || {
        w.run_log(run).contains("pass done").then_some(())
    });
    let (code, metrics) = http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    leaks.push(("metrics".into(), metrics));
    let (_, dashboard) = http_get(port, "/api/v1/status").expect("/api/v1/status answers");
    leaks.push(("API status".into(), dashboard));
    leaks.push(("run log".into(), w.run_log(run)));
    leaks.push(("status".into(), w.status_json().to_string()));
    leaks.push(("events".into(), format!("{:?}", w.events_json())));
    let describe = w.steward(&["describe", &format!("Service/{svc}"), "-o", "json"]);
    leaks.push(("describe".into(), stdout(&describe)));
    let history = w.steward(&["history", &svc]);
    leaks.push(("history".into(), stdout(&history)));
    leaks.push((
        "docker service inspect".into(),
        docker_ok(&["service", "inspect", &svc]),
    ));
    // The store's files, bytes and all.
    for entry in std::fs::read_dir(w.state.parent().unwrap()).unwrap() {
        let p = entry.unwrap().path();
        leaks.push((
            p.display().to_string(),
            String::from_utf8_lossy(&std::fs::read(&p).unwrap()).to_string(),
        ));
    }
    for (what, text) in &leaks {
        for value in [&v1, &v2, &api_key] {
            assert!(!text.contains(value.as_str()), "a secret value leaked into {what}");
        }
    }
}

#[test]
fn expose_env_puts_the_value_in_the_environment_and_says_so() {
    if !require_swarm("expose_env_puts_the_value_in_the_environment_and_says_so") {
        return;
    }
    let mut w = World::new("expose");
    let svc = w.svc("web");
    let value = format!("exposed-{}", std::process::id());
    w.env.push(("STEWARD_E2E_LEGACY".into(), value.clone()));
    let doc = w.service_doc(
        "web",
        "taxcollector-demo:v1",
        1,
        "  env:\n    - name: LEGACY_TOKEN\n      valueFrom: {env: STEWARD_E2E_LEGACY}\n      expose: env\n",
    );
    let file = w.write("app.yaml", &format!("{}{doc}", w.stack_doc(false)));
    let o = w.steward(&["validate", w.manifests().to_str().unwrap()]);
    assert!(o.status.success());
    let warn = stderr(&o);
    assert!(
        warn.contains(&format!("warning: {}:", file.display()))
            && warn.contains("LEGACY_TOKEN")
            && warn.contains("docker service inspect"),
        "{warn}"
    );
    let o = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert!(stderr(&o).contains("warning:"), "{}", stderr(&o));
    assert!(!stdout(&o).contains(&value), "plans redact it: {}", stdout(&o));
    ok(&w.apply());
    let env = inspect(&svc, "{{json .Spec.TaskTemplate.ContainerSpec.Env}}").unwrap();
    assert!(env.contains(&format!("LEGACY_TOKEN={value}")), "{env}");
    assert!(owned_secrets(&w.stack).is_empty());
}

#[test]
fn file_references_are_refused_without_a_secrets_dir_and_outside_it() {
    let mut w = World::new("secretsdir");
    let outside = w.dir.path().join("outside.txt");
    std::fs::write(&outside, "not yours").unwrap();
    let dir = w.dir.path().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
    let doc = w.service_doc(
        "web",
        "taxcollector-demo:v1",
        1,
        "  env:\n    - name: DB_PASSWORD\n      valueFrom: {file: link}\n",
    );
    w.write("app.yaml", &format!("{}{doc}", w.stack_doc(false)));
    let m = w.manifests();
    // No secrets directory: refused.
    let o = w.steward(&["validate", "--resolve", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("without a secrets directory"), "{}", stdout(&o));
    // A symlink leading out of it: refused, and nothing of the target is shown.
    w.env.push(("STEWARD_SECRETS_DIR".into(), dir.display().to_string()));
    let o = w.steward(&["validate", "--resolve", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("spec.env[0].valueFrom.file") && out.contains("leads out of the secrets directory"),
        "{out}"
    );
    assert!(!out.contains("not yours"));
}
