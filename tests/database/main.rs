//! The Database kind end to end, against the project's real PostgreSQL primary and streaming
//! replica (scripts/ensure-postgres-replica.sh, 127.0.0.1:15433 and 15434) and the real Swarm:
//! lag created for real holds a rollout and releases it; an unreachable replica is not "0 s
//! behind"; backup then restore test passes with a measured RTO; a corrupted backup fails its
//! restore test; a stopped primary is Unknown and nothing acts; a bloated table is vacuumed in
//! the window; a controller killed during a backupBefore backup takes it again; the dashboard
//! shows each Database's conditions, runs and held tasks.

use std::process::Command;
use std::time::Duration;

use steward_e2e::*;

mod backups;
mod dashboard;
mod deploys;
mod maintenance;
mod replication;

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
    pg_ctl(std::path::Path::new(&format!("{dir}/replica")), action, &[])
}

/// `pg_ctl -D data -m fast -w action [extra]`, as the server's OS user.
fn pg_ctl(data: &std::path::Path, action: &str, extra: &[&str]) -> std::process::Output {
    server_command("pg_ctl")
        .arg("-D")
        .arg(data)
        .args(["-m", "fast", "-w", "-t", "60", action])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A server binary of the installed PostgreSQL, run as `postgres` when the tests run as root
/// (the server refuses root).
fn server_command(program: &str) -> Command {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin").join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{program} of the PostgreSQL server packages"));
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary directory, a free port on
/// 127.0.0.1), so a primary can be stopped for real without taking the shared one away from the
/// other tests. Stopped and removed on drop.
struct OwnServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnServer {
    /// `None` (the test skipped) when the server binaries are not installed and services are
    /// not required.
    fn try_start(test: &str) -> Option<OwnServer> {
        let installed = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("bin/initdb").exists());
        if !installed {
            assert!(
                std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{test}: needs the PostgreSQL server binaries (scripts/ensure-postgres.sh)"
            );
            eprintln!("SKIPPED {test}: run scripts/ensure-postgres.sh");
            return None;
        }
        Some(OwnServer::start())
    }

    fn start() -> OwnServer {
        let dir = tempfile::Builder::new().prefix("steward-e2e-pg-").tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown").arg("postgres:").arg(dir.path()).status().unwrap();
            assert!(ok.success(), "chown {}", dir.path().display());
        }
        let o = server_command("initdb")
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "initdb: {}", String::from_utf8_lossy(&o.stderr));
        let s = OwnServer { dir, port: free_port() };
        s.start_again();
        s
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn start_again(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories=''",
            self.port
        );
        let log = self.dir.path().join("server.log");
        let o = pg_ctl(&self.data(), "start", &["-o", &opts, "-l", log.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop(&self) {
        let o = pg_ctl(&self.data(), "stop", &[]);
        assert!(
            o.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = pg_ctl(&self.data(), "stop", &["-m", "immediate"]);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A session holding `vehicles_vehicule` exclusively (what a long migration does): pg_dump waits
/// for it, so a backup is caught mid-way for as long as a test needs, without a large table.
/// Released on drop.
struct TableLock {
    session: std::process::Child,
    db: String,
}

impl TableLock {
    fn take(db: &TestDb) -> TableLock {
        let session = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &PRIMARY_PORT.to_string(),
            ])
            .args(["-d", &db.name, "-c"])
            .arg("BEGIN; LOCK TABLE vehicles_vehicule IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120)")
            .stdout(std::process::Stdio::null())
            // Its end is a terminated connection, which it reports: not the test's output.
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the exclusive lock", Duration::from_secs(30), || {
            psql(
                PRIMARY_PORT,
                &db.name,
                "SELECT 1 FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted AND relation = 'vehicles_vehicule'::regclass",
            )
            .ok()
            .filter(|v| v == "1")
        });
        TableLock {
            session,
            db: db.name.clone(),
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = psql(
            PRIMARY_PORT,
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep(120)%'",
                self.db
            ),
        );
        let _ = self.session.wait();
    }
}

/// Waits until a pg_dump of `db` is waiting for a lock.
fn pg_dump_waiting(db: &TestDb) {
    wait_for("pg_dump waiting for its lock", Duration::from_secs(60), || {
        psql(
            PRIMARY_PORT,
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'pg_dump' AND wait_event_type = 'Lock'",
                db.name
            ),
        )
        .ok()
        .filter(|v| v != "0")
    });
}
