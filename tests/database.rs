//! The Database kind end to end, against the project's real PostgreSQL primary and streaming
//! replica (scripts/ensure-postgres-replica.sh, 127.0.0.1:15433 and 15434) and the real Swarm:
//! lag created for real holds a rollout and releases it; an unreachable replica is not "0 s
//! behind"; backup then restore test passes with a measured RTO; a corrupted backup fails its
//! restore test; a stopped primary is Unknown and nothing acts; a bloated table is vacuumed in
//! the window.

use std::process::Command;
use std::time::Duration;

use steward_e2e::*;

const PRIMARY_PORT: u16 = 15433;
const REPLICA_PORT: u16 = 15434;
/// The shared replica: tests that pause or stop it hold it exclusively; the others (which need
/// it streaming, or a vacuum that a lagging replica would hold) share it, with every other test
/// binary's (a file lock: see `replica_shared`).
fn shared() -> ReplicaHold {
    replica_shared()
}

fn exclusive() -> ReplicaHold {
    replica_exclusive()
}

fn psql(port: u16, db: &str, sql: &str) -> Result<String, String> {
    let o = Command::new("psql")
        .args([
            "-X",
            "-qAt",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-d", db, "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
    }
}

/// A database of our own on the primary (replicated to the replica), dropped after.
struct TestDb {
    name: String,
}

impl TestDb {
    fn create(test: &str) -> Option<TestDb> {
        let ok =
            psql(PRIMARY_PORT, "postgres", "SELECT 1").is_ok() && psql(REPLICA_PORT, "postgres", "SELECT 1").is_ok();
        if !ok {
            assert!(
                std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{test}: needs the primary and replica of scripts/ensure-postgres-replica.sh"
            );
            eprintln!("SKIPPED {test}: run scripts/ensure-postgres-replica.sh");
            return None;
        }
        let name = format!(
            "steward_dbe2e_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                % 1_000_000
        );
        psql(PRIMARY_PORT, "postgres", &format!("CREATE DATABASE {name}")).unwrap();
        psql(
            PRIMARY_PORT,
            &name,
            "CREATE TABLE vehicles_vehicule (id bigserial PRIMARY KEY, plate text NOT NULL); \
             INSERT INTO vehicles_vehicule (plate) SELECT 'TAA-' || g FROM generate_series(1, 2000) g",
        )
        .unwrap();
        Some(TestDb { name })
    }

    fn url(&self, port: u16) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{}", self.name)
    }

    /// A Database document `name` on this database's primary and replica, backing up into `dir`.
    fn doc(&self, name: &str, dir: &std::path::Path, extra: &str) -> String {
        database_doc(
            name,
            &self.url(PRIMARY_PORT),
            &self.url(REPLICA_PORT),
            dir.to_str().unwrap(),
            extra,
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = psql(
            PRIMARY_PORT,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Resumes replay on the replica whatever the test did.
struct ResumeReplay;
impl Drop for ResumeReplay {
    fn drop(&mut self) {
        let _ = psql(REPLICA_PORT, "postgres", "SELECT pg_wal_replay_resume()");
    }
}

fn database_doc(name: &str, primary: &str, replica: &str, backup_dir: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: steward.io/v1alpha1\nkind: Database\nmetadata:\n  name: {name}\nspec:\n  primary: {primary}\n  replicas:\n    - {replica}\n  thresholds:\n    replicationLag: 30s\n  backup:\n    schedule: \"0 2 * * *\"\n    directory: {backup_dir}\n    restoreTest:\n      schedule: \"0 1 * * 0\"\n      checks:\n        - {{query: \"SELECT count(*) FROM vehicles_vehicule\", expect: \"> 0\"}}\n{extra}"
    )
}

/// The file names in `dir`.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

fn details(w: &World, name: &str) -> Option<serde_json::Value> {
    let s = w.status_json();
    s["items"]
        .as_array()?
        .iter()
        .find(|i| i["kind"] == "Database" && i["name"] == name)
        .map(|i| i["details"].clone())
}

fn backups_json(w: &World, db: &str) -> Vec<serde_json::Value> {
    let o = w.steward(&["backups", db, "-o", "json", "--path", w.manifests().to_str().unwrap()]);
    ok(&o);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn backup_then_restore_test_passes_with_a_measured_rto_and_a_corrupted_file_fails() {
    let _replica = shared();
    let Some(db) = TestDb::create("backup_then_restore_test") else {
        return;
    };
    let mut w = World::new("dbbackup");
    // The password (ignored by the test servers' trust authentication) must never be written
    // anywhere: not in output, logs, events, status or the store.
    let password = format!("pw-{}-never-printed", std::process::id());
    w.env.push(("STEWARD_E2E_DB_PASSWORD".into(), password.clone()));
    let dir = w.dir.path().join("backups");
    w.write(
        "db.yaml",
        &db.doc("db", &dir, "  passwordFrom: {env: STEWARD_E2E_DB_PASSWORD}\n"),
    );
    let mut outputs = String::new();
    let m = w.manifests();
    let m = m.to_str().unwrap();
    let o = w.steward(&["backup", "db", "--path", m]);
    ok(&o);
    outputs.push_str(&format!("{}{}", stdout(&o), stderr(&o)));
    let list = backups_json(&w, "db");
    assert_eq!(list.len(), 1, "{list:?}");
    let file = list[0]["file"].as_str().unwrap().to_string();
    assert!(file.starts_with(dir.to_str().unwrap()), "{file}");
    let sum = Command::new("sha256sum").arg(&file).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        list[0]["sha256"].as_str(),
        Some(sum.as_str()),
        "recorded checksum is the file's"
    );
    assert!(list[0]["sizeBytes"].as_u64().unwrap() > 0);
    assert_eq!(list[0]["verified"], false);
    // Nothing but the completed file in the directory: no partial left behind.
    let names = names_in(&dir);
    assert_eq!(names.len(), 1, "{names:?}");

    let o = w.steward(&["restore-test", "db", "--path", m]);
    ok(&o);
    outputs.push_str(&format!("{}{}", stdout(&o), stderr(&o)));
    let list = backups_json(&w, "db");
    assert_eq!(list[0]["verified"], true, "{list:?}");
    let rt = &list[0]["restoreTest"];
    assert!(rt["restoreSeconds"].as_f64().unwrap() > 0.0, "{rt}");
    assert_eq!(rt["checks"][0]["value"], "2000", "{rt}");
    assert_eq!(rt["target"], "throwaway local server", "{rt}");
    // The runs are the scheduler's: listed by `steward runs`.
    let runs = w.steward(&["runs", "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let names: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["schedule"].as_str())
        .collect();
    assert!(
        names.contains(&"db/backup") && names.contains(&"db/restore-test"),
        "{names:?}"
    );

    // Corrupt the file: the next restore test fails and says why; BackupHealthy turns False.
    let mut bytes = std::fs::read(&file).unwrap();
    let (mid, len) = (bytes.len() / 2, bytes.len());
    for b in &mut bytes[mid..(mid + 64).min(len)] {
        *b ^= 0xff;
    }
    std::fs::write(&file, &bytes).unwrap();
    let o = w.steward(&["restore-test", "db", "--path", m]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("checksum"), "{}", stdout(&o));
    let list = backups_json(&w, "db");
    assert_eq!(list[0]["verified"], false, "{list:?}");
    w.write("stack.yaml", &w.stack_doc(false));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    w.spawn_run(&["--listen", &listen]);
    let c = wait_for("BackupHealthy False", Duration::from_secs(60), || {
        w.condition("Database", "db", "BackupHealthy")
            .filter(|c| c.0 == "False")
    });
    assert_eq!(c.1, "RestoreTestFailed");
    // The metrics a scraper reads: the servers up, the replica's lag, the last backup and the
    // restore time the last test measured.
    let body = wait_for("database metrics", Duration::from_secs(30), || {
        http_get(port, "/metrics")
            .map(|(_, b)| b)
            .filter(|b| b.contains("steward_database_up{"))
    });
    for line in [
        "steward_database_up{database=\"db\",server=\"127.0.0.1:15433\"} 1",
        "steward_database_up{database=\"db\",server=\"127.0.0.1:15434\"} 1",
        "steward_database_replication_lag_seconds{database=\"db\",replica=\"127.0.0.1:15434\"}",
        "steward_database_replication_lag_bytes{database=\"db\",replica=\"127.0.0.1:15434\"}",
        "steward_database_size_bytes{database=\"db\"}",
        "steward_backup_last_success_timestamp_seconds{database=\"db\"}",
        "steward_backup_last_restore_test_success_timestamp_seconds{database=\"db\"}",
        "steward_database_connections{database=\"db\",state=\"idle\"}",
    ] {
        assert!(body.contains(line), "missing {line} in\n{body}");
    }
    let warned = w
        .events_json()
        .iter()
        .any(|e| e["reason"] == "RestoreTestFailed" && e["type"] == "Warning");
    assert!(warned, "a Warning event says the restore test failed");
    for args in [
        &["status", "-o", "json"][..],
        &["events", "-o", "json"],
        &["describe", "Database/db", "-o", "json"],
    ] {
        let o = w.steward(args);
        outputs.push_str(&format!("{}{}", stdout(&o), stderr(&o)));
    }
    outputs.push_str(&w.run_log(0));
    assert!(!outputs.contains(&password), "the password was printed");
    // The store with its write-ahead log.
    for f in std::fs::read_dir(w.state.parent().unwrap()).unwrap().flatten() {
        let bytes = std::fs::read(f.path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&password),
            "the password is in {}",
            f.path().display()
        );
    }
}

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
fn an_unreachable_replica_and_a_stopped_primary_are_unknown_and_nothing_acts() {
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
    // A stopped primary, with a backup due every minute: nothing may start.
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
fn a_bloated_table_is_vacuumed_in_the_window_and_its_dead_tuples_drop() {
    let _replica = shared();
    let Some(db) = TestDb::create("vacuum") else { return };
    psql(
        PRIMARY_PORT,
        &db.name,
        "CREATE TABLE bloat (id int, pad text) WITH (autovacuum_enabled = false); \
         INSERT INTO bloat SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g; \
         DELETE FROM bloat WHERE id % 10 <> 0",
    )
    .unwrap();
    let dead = || {
        psql(
            PRIMARY_PORT,
            &db.name,
            "SELECT pg_stat_force_next_flush(); SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'bloat'",
        )
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse::<u64>().ok()))
    };
    wait_for("dead tuples counted", Duration::from_secs(30), || {
        dead().filter(|d| *d >= 10_000)
    });
    let mut w = World::new("dbvacuum");
    let dir = w.dir.path().join("backups");
    let maint = "  maintenance:\n    window: {schedule: \"* * * * *\", duration: 1h}\n    vacuum: {deadTupleRatio: 0.2, minDeadTuples: 1000}\n";
    w.write(
        "db.yaml",
        &format!("{}{}", w.stack_doc(false), db.doc("vac", &dir, maint)),
    );
    w.spawn_run(&[]);
    let run = wait_for("a vacuum run succeeded", Duration::from_secs(90), || {
        let o = w.steward(&["runs", "vac/vacuum", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        v.as_array()?.iter().find(|r| r["outcome"] == "Succeeded").cloned()
    });
    assert!(run["message"].as_str().unwrap().contains("vacuumed"), "{run}");
    let after = dead().unwrap();
    assert!(after < 1000, "dead tuples after the vacuum: {after}");
    let ev = w
        .events_json()
        .into_iter()
        .find(|e| e["reason"] == "Vacuumed")
        .expect("a Vacuumed event");
    assert!(ev["message"].as_str().unwrap().contains("bloat"), "{ev}");
}

/// Kills every process whose command line names `needle` (the orphaned pg_dump of a killed
/// `steward backup`).
fn kill_matching(needle: &str) {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("pg_dump") && cmd.contains(needle) {
            if let Some(pid) = e.file_name().to_str() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
    }
}

#[test]
fn a_backup_killed_mid_way_leaves_no_counted_file_and_the_next_one_succeeds() {
    let _replica = shared();
    let Some(db) = TestDb::create("killed_backup") else {
        return;
    };
    // pg_dump waits for its lock behind a session holding the table exclusively: the backup is
    // caught mid-way for as long as the test needs, without writing a large table.
    let mut locker = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &PRIMARY_PORT.to_string(),
            "-d",
            &db.name,
        ])
        .args([
            "-c",
            "BEGIN; LOCK TABLE vehicles_vehicule IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120)",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let release = || {
        let _ = psql(
            PRIMARY_PORT,
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep(120)%'",
                db.name
            ),
        );
    };
    wait_for("the exclusive lock", Duration::from_secs(30), || {
        psql(
            PRIMARY_PORT,
            &db.name,
            "SELECT 1 FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted AND relation = 'vehicles_vehicule'::regclass",
        )
        .ok()
        .filter(|v| v == "1")
    });
    let w = World::new("dbkill");
    let dir = w.dir.path().join("backups");
    w.write("db.yaml", &db.doc("kdb", &dir, ""));
    let m = w.manifests();
    let m = m.to_str().unwrap();
    let mut child = w.cmd().args(["backup", "kdb", "--path", m]).spawn().unwrap();
    let partial = wait_for("the backup's partial file", Duration::from_secs(30), || {
        std::fs::read_dir(&dir).ok()?.flatten().find_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.contains(".partial-").then_some(n)
        })
    });
    // pg_dump is waiting for the table.
    wait_for("pg_dump waiting for its lock", Duration::from_secs(30), || {
        psql(
            PRIMARY_PORT,
            "postgres",
            &format!(
                "SELECT 1 FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'pg_dump' AND wait_event_type = 'Lock'",
                db.name
            ),
        )
        .ok()
        .filter(|v| v.starts_with('1'))
    });
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    kill_matching(&db.name);
    release();
    let _ = locker.wait();
    let finals: Vec<String> = names_in(&dir)
        .into_iter()
        .filter(|n| !n.contains(".partial-"))
        .collect();
    assert!(
        finals.is_empty(),
        "no completed file under its final name: {finals:?} (partial {partial})"
    );
    assert!(backups_json(&w, "kdb").is_empty(), "nothing recorded as a backup");

    // The next backup reaps the abandoned run, removes the stale partial, and succeeds.
    let o = w.steward(&["backup", "kdb", "--path", m]);
    ok(&o);
    let list = backups_json(&w, "kdb");
    assert_eq!(list.len(), 1, "{list:?}");
    let names = names_in(&dir);
    assert_eq!(names.len(), 1, "only the completed backup is left: {names:?}");
    let runs = w.steward(&["runs", "kdb/backup", "-o", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let outcomes: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes.len(), 2, "{runs}");
    assert!(
        outcomes.contains(&"Succeeded") && outcomes.contains(&"Failed"),
        "{outcomes:?}"
    );
    let abandoned = w.events_json().iter().any(|e| e["reason"] == "RunAbandoned");
    assert!(abandoned, "the abandoned run is an event");
}

/// Starts the shared replica again (the project's script starts whatever is not answering),
/// whatever the test did.
struct RestartReplica;
impl Drop for RestartReplica {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/ensure-postgres-replica.sh"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `pg_ctl stop` of the shared replica (as the server's OS user).
fn pg_ctl_replica(action: &str) -> std::process::Output {
    let dir = std::env::var("STEWARD_PG_REPL_DIR").unwrap_or_else(|_| "/tmp/steward-pg-repl".into());
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin/pg_ctl"))
        .find(|p| p.exists())
        .expect("pg_ctl");
    let data = format!("{dir}/replica");
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.args(["-D", &data, "-m", "fast", "-w", "-t", "60", action])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
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
