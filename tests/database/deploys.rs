//! What a deploy asks of a Database: a deploy gate holding a rollout while a replica lags, and
//! the backupBefore backup.

use std::time::Duration;

use super::*;

#[test]
fn lag_holds_a_rollout_and_replay_resuming_releases_it() {
    let _replica = exclusive();
    if !require_swarm("lag_holds_a_rollout") {
        return;
    }
    let Some(db) = TestDb::create("lag_holds_a_rollout") else {
        return;
    };
    let _resume = ResumeReplay;
    let mut w = World::new("dbgate");
    let svc = w.svc("web");
    let dir = w.dir.path().join("backups");
    let db_doc = db.doc("gatedb", &dir, "");
    let gates = "  gates:\n    - {database: gatedb, maxReplicationLag: 5s}\n  backupBefore: gatedb\n";
    let write = |w: &World, image: &str| {
        w.write(
            "m.yaml",
            &format!(
                "{}{}{db_doc}",
                w.stack_doc(false),
                w.service_doc("web", image, 1, gates)
            ),
        );
    };
    write(&w, "taxcollector-demo:v1");
    w.spawn_run(&[]);
    wait_for("v1 running", Duration::from_secs(90), || {
        image(&svc)
            .filter(|i| i.contains("v1"))
            .and(running(&svc))
            .filter(|(r, d)| r == d && *d == 1)
    });
    // The first deploy took its backupBefore backup.
    let list = backups_json(&w, "gatedb");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["trigger"], "PreDeploy");

    // Lag for real: replay paused on the replica while the primary writes.
    psql(REPLICA_PORT, "postgres", "SELECT pg_wal_replay_pause()").unwrap();
    psql(
        PRIMARY_PORT,
        &db.name,
        "INSERT INTO vehicles_vehicule (plate) SELECT 'LAG-' || g FROM generate_series(1, 5000) g",
    )
    .unwrap();
    wait_for("ReplicationHealthy False", Duration::from_secs(60), || {
        w.condition("Database", "gatedb", "ReplicationHealthy")
            .filter(|c| c.0 == "False")
    });
    write(&w, "taxcollector-demo:v2");
    let ev = wait_for("a WaitingOn event naming the Database", Duration::from_secs(60), || {
        w.events_json()
            .into_iter()
            .find(|e| e["reason"] == "WaitingOn" && e["object"] == format!("Service/{svc}"))
    });
    let msg = ev["message"].as_str().unwrap();
    assert!(
        msg.contains("Database/gatedb") && msg.contains("127.0.0.1:15434"),
        "{msg}"
    );
    // The service's status says what it waits on (written at the end of the pass that held it).
    let waiting = wait_for("a WaitingOn condition on the service", Duration::from_secs(30), || {
        let st = w.status_json();
        let item = st["items"]
            .as_array()?
            .iter()
            .find(|i| i["kind"] == "Service" && i["name"] == svc.as_str())?
            .clone();
        item["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "WaitingOn")
            .cloned()
    });
    assert!(
        waiting["message"].as_str().unwrap().contains("Database/gatedb"),
        "{waiting}"
    );
    // Held: over the next passes (the gate is judged again every 2 s) the image stays v1.
    let reconciled = |w: &World| {
        w.status_json()["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|i| i["kind"] == "Service" && i["name"] == svc.as_str())
                    .cloned()
            })
            .and_then(|i| i["lastReconcile"].as_str().map(String::from))
    };
    for _ in 0..2 {
        let before = reconciled(&w);
        wait_for("a later pass", Duration::from_secs(30), || {
            reconciled(&w).filter(|t| Some(t) != before.as_ref())
        });
        assert!(
            image(&svc).unwrap().contains("v1"),
            "the rollout must not start while the gate holds"
        );
    }
    psql(REPLICA_PORT, "postgres", "SELECT pg_wal_replay_resume()").unwrap();
    wait_for("v2 after replay resumed", Duration::from_secs(120), || {
        image(&svc).filter(|i| i.contains("v2"))
    });
    let opened = w.events_json().iter().any(|e| e["reason"] == "GateOpened");
    assert!(opened, "the gate's opening is an event");
}

#[test]
fn a_controller_killed_during_the_backup_before_a_deploy_takes_it_again_and_the_deploy_completes() {
    let _replica = shared();
    if !require_swarm("a_controller_killed_during_the_backup_before_a_deploy") {
        return;
    }
    let Some(db) = TestDb::create("killed_predeploy") else {
        return;
    };
    let mut w = World::new("dbpre");
    let svc = w.svc("web");
    let dir = w.dir.path().join("backups");
    // The backup waits behind the application's lock: the controller is killed while it runs.
    let lock = TableLock::take(&db);
    w.write(
        "m.yaml",
        &format!(
            "{}{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 1, "  backupBefore: predb\n"),
            db.doc("predb", &dir, "")
        ),
    );
    let first = w.spawn_run(&[]);
    pg_dump_waiting(&db);
    assert!(image(&svc).is_none(), "nothing is deployed before its backup");
    w.child(first).kill().unwrap(); // SIGKILL: no cleanup code runs
    w.child(first).wait().unwrap();
    // Its pg_dump dies with it in practice (its output pipe is gone once the lock is released);
    // here at once, so that the one waiting next is the new controller's.
    kill_matching(&db.name);

    w.spawn_run(&[]);
    let again = wait_for("the backup started again", Duration::from_secs(60), || {
        w.events_json().into_iter().find(|e| {
            e["reason"] == "PreDeployStarted" && e["message"].as_str().is_some_and(|m| m.contains("started again"))
        })
    });
    assert_eq!(again["object"], format!("Service/{svc}"), "{again}");
    pg_dump_waiting(&db);
    assert!(image(&svc).is_none(), "still nothing deployed before its backup");
    drop(lock);
    wait_for("v1 running after its backup", Duration::from_secs(120), || {
        image(&svc)
            .filter(|i| i.contains("v1"))
            .and(running(&svc))
            .filter(|(r, d)| r == d && *d == 1)
    });
    let list = backups_json(&w, "predb");
    assert_eq!(list.len(), 1, "one completed backup: {list:?}");
    assert_eq!(list[0]["trigger"], "PreDeploy");
    let runs = w.steward(&["runs", "predb/backup", "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let mut outcomes: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["Failed", "Succeeded"],
        "the killed one failed as abandoned: {runs}"
    );
    wait_for("the rollout complete", Duration::from_secs(60), || {
        w.events_json().into_iter().find(|e| e["reason"] == "RolloutComplete")
    });
    let failed: Vec<_> = w
        .events_json()
        .into_iter()
        .filter(|e| e["reason"] == "PreDeployFailed" || e["reason"] == "RolledBack")
        .collect();
    assert!(failed.is_empty(), "the restart failed nothing: {failed:?}");
}
