//! The task-level fields of a Service (what a stack file says beyond image and replicas), on the
//! real Swarm: applied as written, read back equal (the next pass writes nothing), drift
//! corrected, and rolled back with their revision.

use std::time::Duration;

use steward_e2e::*;

/// Every field at once, with values different from Swarm's defaults.
fn full_spec(net: &str, volume: &str, grace: &str, nofile_hard: u32) -> String {
    format!(
        r#"  ports: []
  networks:
    - name: {net}
      aliases: [full-alias]
  mounts:
    - {{type: volume, source: {volume}, target: /data}}
    - {{type: tmpfs, target: /scratch, size: 16Mi}}
    - {{type: bind, source: /tmp, target: /host-tmp, readOnly: true}}
  placement:
    constraints: ["node.role==manager"]
    maxReplicasPerNode: 2
  stopGracePeriod: {grace}
  stopSignal: SIGINT
  restartPolicy: {{condition: on-failure, delay: 2s, maxAttempts: 3, window: 30s}}
  healthcheck:
    test: ["CMD", "/demo-app", "--healthcheck"]
    interval: 2s
    timeout: 1s
    retries: 3
    startPeriod: 1s
  configs:
    - {{name: app-conf, value: "greeting=hi", target: /etc/app.conf}}
  user: "0"
  workingDir: /
  hostname: tc-full
  init: true
  labels: {{team: tax}}
  logging: {{driver: json-file, options: {{max-size: 1m}}}}
  ulimits:
    nofile: {{soft: 1024, hard: {nofile_hard}}}
  capAdd: [NET_ADMIN]
  capDrop: [MKNOD]
"#
    )
}

fn plan_in_sync(w: &World) -> String {
    let o = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "plan after apply must be in sync:\n{out}\n{}",
        stderr(&o)
    );
    out
}

#[test]
fn every_task_field_is_applied_read_back_equal_drift_corrected_and_rolled_back() {
    if !require_swarm("every_task_field_is_applied_read_back_equal_drift_corrected_and_rolled_back") {
        return;
    }
    let mut w = World::new("fields");
    let svc = w.svc("full");
    let net = format!("{}-net", w.stack);
    let volume = format!("{}-data", w.stack);
    docker_ok(&["network", "create", "--driver", "overlay", "--attachable", &net]);
    w.extra_networks.push(net.clone());
    w.extra_volumes.push(volume.clone());
    let write = |grace: &str, hard: u32| {
        w.write(
            "app.yaml",
            &format!(
                "{}{}{}",
                w.stack_doc(false),
                w.service_doc("full", "taxcollector-demo:v1", 1, ""),
                full_spec(&net, &volume, grace, hard)
            ),
        );
    };
    write("45s", 2048);
    let o = w.apply();
    ok(&o);
    let out = stdout(&o);
    for line in [
        "stopGracePeriod: 45s",
        "stopSignal: SIGINT",
        "hostname: tc-full",
        "labels.team: tax",
    ] {
        assert!(out.contains(line), "the creation lists {line:?}:\n{out}");
    }

    // Applied: what Swarm holds, field by field.
    let f = |format: &str| inspect(&svc, format).unwrap_or_default();
    let c = ".Spec.TaskTemplate.ContainerSpec";
    assert_eq!(f(&format!("{{{{{c}.StopGracePeriod}}}}")), "45s");
    assert_eq!(f(&format!("{{{{{c}.StopSignal}}}}")), "SIGINT");
    assert_eq!(f(&format!("{{{{{c}.Hostname}}}}")), "tc-full");
    assert_eq!(f(&format!("{{{{{c}.User}}}}")), "0");
    assert_eq!(f(&format!("{{{{{c}.Dir}}}}")), "/");
    assert_eq!(f(&format!("{{{{{c}.Init}}}}")), "true");
    assert_eq!(f(&format!("{{{{index {c}.Labels \"team\"}}}}")), "tax");
    assert_eq!(
        f(&format!("{{{{json {c}.Healthcheck.Test}}}}")),
        r#"["CMD","/demo-app","--healthcheck"]"#
    );
    assert_eq!(f(&format!("{{{{{c}.Healthcheck.Retries}}}}")), "3");
    assert_eq!(f(&format!("{{{{json {c}.CapabilityAdd}}}}")), r#"["CAP_NET_ADMIN"]"#);
    assert_eq!(f(&format!("{{{{json {c}.CapabilityDrop}}}}")), r#"["CAP_MKNOD"]"#);
    assert_eq!(
        f(&format!("{{{{json {c}.Ulimits}}}}")),
        r#"[{"Name":"nofile","Hard":2048,"Soft":1024}]"#
    );
    let mounts = f(&format!("{{{{json {c}.Mounts}}}}"));
    for m in [
        format!(r#""Source":"{volume}""#),
        r#""Target":"/scratch""#.into(),
        r#""ReadOnly":true"#.into(),
    ] {
        assert!(mounts.contains(&m), "{m} in {mounts}");
    }
    assert_eq!(
        f("{{json .Spec.TaskTemplate.Placement.Constraints}}"),
        r#"["node.role == manager"]"#
    );
    assert_eq!(f("{{.Spec.TaskTemplate.Placement.MaxReplicas}}"), "2");
    assert_eq!(f("{{.Spec.TaskTemplate.RestartPolicy.Condition}}"), "on-failure");
    assert_eq!(f("{{.Spec.TaskTemplate.RestartPolicy.MaxAttempts}}"), "3");
    assert_eq!(f("{{.Spec.TaskTemplate.LogDriver.Name}}"), "json-file");
    assert!(f("{{json .Spec.TaskTemplate.Networks}}").contains("full-alias"));
    let config = f(&format!(
        "{{{{range {c}.Configs}}}}{{{{.ConfigName}}}} {{{{.File.Name}}}}{{{{end}}}}"
    ));
    assert!(
        config.starts_with(&format!("{svc}-app-conf-")) && config.ends_with(" /etc/app.conf"),
        "config: {config}"
    );
    // The task runs with them: healthy (Swarm counts it running only once healthy), on the
    // network, the config file in place.
    wait_for("the task to run", Duration::from_secs(60), || {
        (running(&svc) == Some((1, 1))).then_some(())
    });
    let container = wait_for("the task's container", Duration::from_secs(30), || {
        let id = docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={svc}"),
        ]);
        id.lines().next().map(str::to_string)
    });
    assert_eq!(
        docker_ok(&["exec", &container, "/demo-app", "cat", "/etc/app.conf"]),
        "greeting=hi"
    );

    // Read back equal: plan in sync, and another apply writes nothing.
    plan_in_sync(&w);
    let version = version_index(&svc);
    ok(&w.apply());
    assert_eq!(version_index(&svc), version, "a converged service is not written again");

    // Drift: someone changes fields by hand; plan names them, apply restores them.
    docker_ok(&[
        "service",
        "update",
        "--detach",
        "--stop-grace-period",
        "5s",
        "--container-label-add",
        "team=ops",
        "--cap-drop",
        "CAP_CHOWN",
        &svc,
    ]);
    let o = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "drift is a pending change:\n{out}");
    assert!(out.contains("DriftCorrected"), "{out}");
    assert!(out.contains("stopGracePeriod: 5s → 45s"), "{out}");
    assert!(out.contains("labels.team: ops → tax"), "{out}");
    assert!(out.contains("capDrop"), "{out}");
    ok(&w.apply());
    assert_eq!(f(&format!("{{{{{c}.StopGracePeriod}}}}")), "45s");
    assert_eq!(f(&format!("{{{{index {c}.Labels \"team\"}}}}")), "tax");
    plan_in_sync(&w);

    // A new revision, then a rollback to the previous one restores its fields.
    write("90s", 4096);
    let o = w.apply();
    ok(&o);
    assert!(stdout(&o).contains("stopGracePeriod: 45s → 90s"), "{}", stdout(&o));
    assert_eq!(f(&format!("{{{{{c}.StopGracePeriod}}}}")), "1m30s");
    let o = w.steward(&["rollback", &svc, "--timeout", "90s"]);
    ok(&o);
    assert_eq!(f(&format!("{{{{{c}.StopGracePeriod}}}}")), "45s");
    assert!(f(&format!("{{{{json {c}.Ulimits}}}}")).contains(r#""Hard":2048"#));
}

#[test]
fn a_global_service_runs_one_task_per_node_and_its_mode_is_never_flipped_in_place() {
    if !require_swarm("a_global_service_runs_one_task_per_node_and_its_mode_is_never_flipped_in_place") {
        return;
    }
    let w = World::new("global");
    let svc = w.svc("edge");
    let write = |mode: &str| {
        w.write(
            "app.yaml",
            &format!(
                "{}{}  mode: {mode}\n",
                w.stack_doc(false),
                w.service_doc("edge", "taxcollector-demo:v1", 1, "")
            ),
        );
    };
    write("global");
    ok(&w.apply());
    assert_eq!(
        inspect(&svc, "{{if .Spec.Mode.Global}}global{{end}}").as_deref(),
        Some("global")
    );
    let nodes: u64 = docker_ok(&["node", "ls", "-q"]).lines().count() as u64;
    assert_eq!(running(&svc), Some((nodes, nodes)));
    plan_in_sync(&w);

    // replicated <-> global cannot change in place: refused with a reason, nothing written.
    let version = version_index(&svc);
    write("replicated");
    let o = w.steward(&["plan", w.manifests().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("ModeChangeRefused"), "{}", stdout(&o));
    let o = w.steward(&["apply", w.manifests().to_str().unwrap(), "--timeout", "10s"]);
    assert!(!o.status.success());
    assert_eq!(version_index(&svc), version, "the service is left as it is");
}

#[test]
fn invalid_task_fields_are_refused_with_file_line_and_field_and_nothing_changes() {
    let w = World::new("badfields");
    let p = w.write(
        "bad.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc(
                "bad",
                "taxcollector-demo:v1",
                1,
                "  mounts:\n    - {type: bind, source: relative/path, target: /x}\n    - {type: volume, target: /anon}\n  secrets:\n    - name: db\n      valueFrom: {file: ../../etc/shadow}\n  ulimits:\n    nofile: {soft: 10, hard: 5}\n"
            )
        ),
    );
    let o = w.steward(&["validate", w.manifests().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let file = p.display().to_string();
    for (field, msg) in [
        ("spec.mounts[0].source", "absolute node path"),
        ("spec.mounts[1].source", "anonymous volume"),
        ("spec.secrets[0].valueFrom.file", "leads out of the secrets directory"),
        ("spec.ulimits.nofile", "soft <= hard"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{file}:")) && l.contains(field) && l.contains(msg)),
            "{field}: {msg} expected in:\n{out}"
        );
    }
}

#[test]
fn a_network_document_is_created_before_its_service_and_removed_only_once_unused() {
    if !require_swarm("a_network_document_is_created_before_its_service_and_removed_only_once_unused") {
        return;
    }
    let w = World::new("netdoc");
    let svc = w.svc("api");
    let net = format!("{}-backend", w.stack);
    let network_doc = format!(
        "---\napiVersion: steward.io/v1alpha1\nkind: Network\nmetadata:\n  name: {net}\nspec:\n  attachable: true\n"
    );
    w.write(
        "app.yaml",
        &format!(
            "{}{network_doc}{}  networks:\n    - {{name: {net}, aliases: [api]}}\n",
            w.stack_doc(true),
            w.service_doc("api", "taxcollector-demo:v1", 1, "")
        ),
    );
    ok(&w.apply());
    let label = docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{index .Labels \"steward.io/stack\"}} {{.Driver}} {{.Attachable}}",
        &net,
    ]);
    assert_eq!(label.trim(), format!("{} overlay true", w.stack));
    assert!(inspect(&svc, "{{json .Spec.TaskTemplate.Networks}}")
        .unwrap()
        .contains("\"api\""));
    plan_in_sync(&w);

    // The service leaves the desired state and the network with it: the network goes only once
    // no service uses it (prune is on).
    w.write("app.yaml", &w.stack_doc(true));
    wait_for("the network to be removed once unused", Duration::from_secs(90), || {
        let _ = w.steward(&["apply", w.manifests().to_str().unwrap(), "--timeout", "20s"]);
        (!docker(&["network", "inspect", &net]).status.success()).then_some(())
    });
    assert!(w.owned_services().is_empty());
    let events = w.events_json();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Pruned" && e["object"] == format!("Network/{net}")),
        "a Pruned event for the network"
    );
}
