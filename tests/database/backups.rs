//! Backups and their restore tests: a verified restore with a measured RTO, a corrupted file
//! failing its test, a backup killed mid-way.

use std::process::Command;
use std::time::Duration;

use super::*;

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
fn a_backup_killed_mid_way_leaves_no_counted_file_and_the_next_one_succeeds() {
    let _replica = shared();
    let Some(db) = TestDb::create("killed_backup") else {
        return;
    };
    // pg_dump waits for its lock behind a session holding the table exclusively: the backup is
    // caught mid-way for as long as the test needs, without writing a large table.
    let lock = TableLock::take(&db);
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
    pg_dump_waiting(&db);
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    // Its pg_dump dies with it (the kernel's parent-death signal), lock or no lock.
    no_pg_dump_left(&db.name);
    kill_matching(&db.name);
    drop(lock);
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

#[test]
fn a_directory_format_backup_is_listed_with_its_checksum_and_size_and_its_restore_test_passes() {
    let _replica = shared();
    let Some(db) = TestDb::create("directory_backup") else {
        return;
    };
    let w = World::new("dbdirbackup");
    let dir = w.dir.path().join("backups");
    let doc = db
        .doc("ddb", &dir, "")
        .replace("    directory: ", "    format: directory\n    jobs: 2\n    directory: ");
    assert!(doc.contains("format: directory"), "{doc}");
    w.write("db.yaml", &doc);
    let m = w.manifests();
    let m = m.to_str().unwrap();
    let o = w.steward(&["backup", "ddb", "--path", m]);
    ok(&o);
    let list = backups_json(&w, "ddb");
    assert_eq!(list.len(), 1, "{list:?}");
    let file = list[0]["file"].as_str().unwrap().to_string();
    assert!(
        file.starts_with(dir.to_str().unwrap()) && file.ends_with(".dir"),
        "{file}"
    );
    let path = std::path::Path::new(&file);
    assert!(path.is_dir(), "{file} is a directory");
    // Its one checksum is the documented digest (docs/DATABASE.md): over its files sorted by
    // name, each as its name, a NUL byte, its length (8 bytes big-endian) and its bytes; its
    // size is their total.
    use sha2::Digest;
    let mut files: Vec<String> = names_in(path);
    files.sort();
    let (mut h, mut size) = (sha2::Sha256::new(), 0u64);
    for f in &files {
        let bytes = std::fs::read(path.join(f)).unwrap();
        h.update(f.as_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
        size += bytes.len() as u64;
    }
    let sha = hex::encode(h.finalize());
    assert!(files.contains(&"toc.dat".to_string()), "{files:?}");
    assert_eq!(list[0]["sha256"].as_str(), Some(sha.as_str()), "{list:?}");
    assert_eq!(list[0]["sizeBytes"].as_u64(), Some(size), "{list:?}");
    assert!(size > 0);
    assert_eq!(names_in(&dir).len(), 1, "no partial left: {:?}", names_in(&dir));

    let o = w.steward(&["restore-test", "ddb", "--path", m]);
    ok(&o);
    let list = backups_json(&w, "ddb");
    assert_eq!(list[0]["verified"], true, "{list:?}");
    let rt = &list[0]["restoreTest"];
    assert_eq!(rt["checks"][0]["value"], "2000", "{rt}");

    // A byte changed in one of its files: the next restore test fails on the checksum.
    let toc = path.join("toc.dat");
    let mut bytes = std::fs::read(&toc).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&toc, &bytes).unwrap();
    let o = w.steward(&["restore-test", "ddb", "--path", m]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("checksum"), "{}", stdout(&o));
}

#[test]
fn a_directory_format_backup_killed_mid_way_takes_its_pg_dump_workers_with_it() {
    let _replica = shared();
    let Some(db) = TestDb::create("killed_dir_backup") else {
        return;
    };
    let lock = TableLock::take(&db);
    let w = World::new("dbkilldir");
    let dir = w.dir.path().join("backups");
    let doc = db
        .doc("kddb", &dir, "")
        .replace("    directory: ", "    format: directory\n    jobs: 2\n    directory: ");
    w.write("db.yaml", &doc);
    let m = w.manifests();
    let m = m.to_str().unwrap();
    let mut child = w.cmd().args(["backup", "kddb", "--path", m]).spawn().unwrap();
    pg_dump_waiting(&db);
    assert!(!pg_dumps_of(&db.name).is_empty(), "pg_dump is running");
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    child.wait().unwrap();
    no_pg_dump_left(&db.name);
    kill_matching(&db.name);
    drop(lock);
    let finals: Vec<String> = names_in(&dir)
        .into_iter()
        .filter(|n| !n.contains(".partial-"))
        .collect();
    assert!(finals.is_empty(), "no backup under its final name: {finals:?}");
    // The next one removes the stale partial directory and succeeds.
    ok(&w.steward(&["backup", "kddb", "--path", m]));
    let names = names_in(&dir);
    assert_eq!(names.len(), 1, "only the completed backup is left: {names:?}");
    assert!(names[0].ends_with(".dir"), "{names:?}");
}

/// The pids of the pg_dump processes (leader and workers) whose command line names `needle`.
fn pg_dumps_of(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let pg_dump = cmd.split(' ').any(|a| a.ends_with("/pg_dump") || a == "pg_dump");
            (pg_dump && cmd.contains(needle)).then(|| e.file_name().to_string_lossy().to_string())
        })
        .collect()
}

/// Waits (bounded) until no pg_dump of `needle` is left.
fn no_pg_dump_left(needle: &str) {
    let mut left = vec![];
    let gone = try_wait_for(Duration::from_secs(20), || {
        left = pg_dumps_of(needle);
        left.is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "pg_dump outlived the steward that started it: pids {left:?}"
    );
}
