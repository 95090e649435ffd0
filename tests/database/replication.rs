//! Replication read honestly: an unreachable replica or primary, and a primary stopped for real,
//! are Unknown and nothing acts; a stopped replica is never "0 s behind".

use std::process::Command;
use std::time::Duration;

use super::*;

#[test]
fn an_unreachable_replica_and_an_unreachable_primary_are_unknown_and_nothing_acts() {
    let _replica = shared();
    let Some(db) = TestDb::create("unreachable") else {
        return;
    };
    let mut w = World::new("dbdown");
    let dead = free_port();
    let dir = w.dir.path().join("backups");
    // The replica URL answers nothing (a stopped replica): never "0 s behind".
    w.write(
        "db.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            database_doc(
                "half",
                &db.url(PRIMARY_PORT),
                &format!("postgres://postgres@127.0.0.1:{dead}/x"),
                dir.to_str().unwrap(),
                ""
            )
        ),
    );
    // A primary that never answered, with a backup due every minute: nothing may start.
    let dir2 = w.dir.path().join("backups2");
    w.write(
        "down.yaml",
        &database_doc(
            "down",
            &format!("postgres://postgres@127.0.0.1:{dead}/x"),
            &db.url(REPLICA_PORT),
            dir2.to_str().unwrap(),
            "",
        )
        .replace("\"0 2 * * *\"", "\"* * * * *\""),
    );
    w.spawn_run(&[]);
    let c = wait_for("half: ReplicationHealthy", Duration::from_secs(60), || {
        w.condition("Database", "half", "ReplicationHealthy")
    });
    assert_eq!(c.0, "Unknown", "{c:?}");
    let d = details(&w, "half").unwrap();
    let lag = &d["replication"][0];
    assert_eq!(lag["verdict"], "Unknown", "{lag}");
    assert!(
        lag["seconds"].is_null(),
        "an unreachable replica has no lag figure: {lag}"
    );
    assert_eq!(w.condition("Database", "half", "Ready").unwrap().0, "True");

    let c = wait_for("down: Ready", Duration::from_secs(60), || {
        w.condition("Database", "down", "Ready")
    });
    assert_eq!(c, ("Unknown".to_string(), "PrimaryUnreachable".to_string()));
    // The reconcile that wrote Unknown had the backup instant due, and started nothing.
    let runs = w.steward(&["runs", "down/backup", "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
    assert!(!dir2.exists() || std::fs::read_dir(&dir2).unwrap().next().is_none());
}

#[test]
fn a_stopped_replica_is_never_reported_zero_seconds_behind() {
    let _replica = exclusive();
    let Some(db) = TestDb::create("stopped_replica") else {
        return;
    };
    let _restart = RestartReplica;
    let mut w = World::new("dbstop");
    let dir = w.dir.path().join("backups");
    w.write("db.yaml", &format!("{}{}", w.stack_doc(false), db.doc("sdb", &dir, "")));
    w.spawn_run(&[]);
    // The replica first replays what the tests before wrote (on a loaded machine, a while).
    let mut last = None;
    let healthy = try_wait_for(Duration::from_secs(180), || {
        last = w.condition("Database", "sdb", "ReplicationHealthy");
        last.clone().filter(|c| c.0 == "True")
    });
    assert!(
        healthy.is_some(),
        "never healthy: last {last:?}, details {:?}",
        details(&w, "sdb")
    );
    let o = pg_ctl_replica("stop");
    assert!(
        o.status.success(),
        "pg_ctl stop: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The primary keeps writing; the replica receives nothing.
    psql(
        PRIMARY_PORT,
        &db.name,
        "INSERT INTO vehicles_vehicule (plate) SELECT 'S-' || g FROM generate_series(1, 1000) g",
    )
    .unwrap();
    let c = wait_for("ReplicationHealthy no longer True", Duration::from_secs(60), || {
        w.condition("Database", "sdb", "ReplicationHealthy")
            .filter(|c| c.0 != "True")
    });
    assert_eq!(c.0, "Unknown", "{c:?}");
    let d = details(&w, "sdb").unwrap();
    let lag = &d["replication"][0];
    assert!(
        lag["seconds"].is_null(),
        "a stopped replica is given no lag figure: {lag}"
    );
    assert_ne!(lag["verdict"], "Healthy", "{lag}");
    let failover = w.condition("Database", "sdb", "FailoverReady").unwrap();
    assert_eq!(failover.0, "False", "{failover:?}");
    // Started the way the project starts it (its log in a file: a server started with our pipes
    // as its output would hold them open).
    let started = Command::new(repo_root().join("scripts/ensure-postgres-replica.sh"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(started.success(), "the replica did not start again");
    wait_for("replication healthy again", Duration::from_secs(180), || {
        w.condition("Database", "sdb", "ReplicationHealthy")
            .filter(|c| c.0 == "True")
    });
}

#[test]
fn a_primary_stopped_for_real_is_unknown_holds_its_due_backup_and_takes_it_once_back() {
    let Some(srv) = OwnServer::try_start("stopped_primary") else {
        return;
    };
    psql(
        srv.port,
        "postgres",
        "CREATE TABLE vehicles_vehicule (id int); INSERT INTO vehicles_vehicule VALUES (1)",
    )
    .unwrap();
    let mut w = World::new("dbreal");
    let dir = w.dir.path().join("backups");
    // A backup every minute, so one is due soon after the primary stops.
    w.write(
        "db.yaml",
        &format!(
            "---\napiVersion: steward.io/v1alpha1\nkind: Database\nmetadata:\n  name: real\nspec:\n  primary: {}\n  backup:\n    schedule: \"* * * * *\"\n    directory: {}\n",
            srv.url("postgres"),
            dir.display()
        ),
    );
    w.spawn_run(&[]);
    wait_for("real: Ready True", Duration::from_secs(60), || {
        w.condition("Database", "real", "Ready").filter(|c| c.0 == "True")
    });
    srv.stop();
    let c = wait_for("real: Ready no longer True", Duration::from_secs(60), || {
        w.condition("Database", "real", "Ready").filter(|c| c.0 != "True")
    });
    assert_eq!(c, ("Unknown".to_string(), "PrimaryUnreachable".to_string()));
    let runs_at_stop = backup_runs(&w);
    let files_at_stop = complete_files(&dir);
    // The next minute's backup falls due while the primary is down: held, said so, not started.
    let held = wait_for("the backup held: PrimaryUnknown", Duration::from_secs(90), || {
        let d = details(&w, "real")?;
        let held = d["held"].as_array()?.clone();
        held.into_iter()
            .find(|h| h["task"] == "backup" && h["hold"] == "PrimaryUnknown")
    });
    assert_eq!(held["message"], "the primary could not be read", "{held}");
    let said = w
        .events_json()
        .into_iter()
        .find(|e| e["reason"] == "TaskHeld" && e["object"] == "Database/real");
    let said = said.expect("a TaskHeld event on Database/real");
    assert!(
        said["message"].as_str().unwrap().contains("primary could not be read"),
        "{said}"
    );
    assert_eq!(
        backup_runs(&w),
        runs_at_stop,
        "a run started while the primary was down"
    );
    assert_eq!(
        complete_files(&dir),
        files_at_stop,
        "a backup file appeared while the primary was down"
    );
    let describe = w.steward(&["describe", "Database/real", "--path", w.manifests().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&describe.stdout);
    assert!(text.contains("Due, not started:"), "{text}");

    // Back: Ready again, and the held instant (within its starting deadline) is taken.
    srv.start_again();
    wait_for("real: Ready True again", Duration::from_secs(60), || {
        w.condition("Database", "real", "Ready").filter(|c| c.0 == "True")
    });
    let taken = wait_for(
        "a backup taken once the primary is back",
        Duration::from_secs(90),
        || {
            let new: Vec<String> = complete_files(&dir)
                .into_iter()
                .filter(|f| !files_at_stop.contains(f))
                .collect();
            (!new.is_empty()).then_some(new)
        },
    );
    assert!(backup_runs(&w) > runs_at_stop, "{taken:?}");
}

/// How many backup runs `real` has.
fn backup_runs(w: &World) -> usize {
    let o = w.steward(&["runs", "real/backup", "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    runs.as_array().map_or(0, Vec::len)
}

/// The backup files in `dir` (none while it does not exist), without files still being written.
fn complete_files(dir: &std::path::Path) -> Vec<String> {
    if !dir.exists() {
        return vec![];
    }
    names_in(dir).into_iter().filter(|n| !n.starts_with('.')).collect()
}
