//! The PostgreSQL primary of scripts/ensure-postgres-replica.sh for the backends' tests: whether
//! it is there (a skip is a failure under STEWARD_REQUIRE_SERVICES=1), scratch databases of
//! unique names dropped even when a test fails, and bounded waits.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use postgres::Client;
use steward_backends::database::connect;

pub fn primary_port() -> u16 {
    std::env::var("STEWARD_PG_PRIMARY_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(15433)
}

/// The primary's URL for database `db`.
pub fn primary_url(db: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{db}", primary_port())
}

/// Whether the primary answers; panics instead when STEWARD_REQUIRE_SERVICES=1, so that a broken
/// set-up cannot pass as skipped tests.
pub fn primary_available(test: &str) -> bool {
    if connect(&primary_url("postgres"), None).is_ok() {
        return true;
    }
    assert!(
        std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{test}: needs the primary of scripts/ensure-postgres-replica.sh (STEWARD_REQUIRE_SERVICES=1)"
    );
    eprintln!("SKIPPED {test}: run scripts/ensure-postgres-replica.sh");
    false
}

pub fn admin() -> Client {
    connect(&primary_url("postgres"), None).expect("the primary").0
}

pub fn database_exists(name: &str) -> bool {
    admin()
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

/// A database of its own on the primary for one test, dropped on drop (test failed or not).
pub struct ScratchDb {
    pub name: String,
}

impl ScratchDb {
    pub fn create(tag: &str) -> ScratchDb {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("stw_{tag}_{}_{nanos}", std::process::id());
        admin()
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        ScratchDb { name }
    }

    pub fn url(&self) -> String {
        primary_url(&self.name)
    }

    pub fn client(&self) -> Client {
        connect(&self.url(), None).unwrap().0
    }

    pub fn sql(&self, q: &str) {
        self.client().batch_execute(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if let Ok((mut c, _)) = connect(&primary_url("postgres"), None) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        }
    }
}

/// Polls `f` every 100 ms until it gives a value; panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A hold on the shared replica (127.0.0.1:15434) across every test binary, the same file lock
/// as the end-to-end tests' (tests/common): exclusive to pause or cut it, shared to need it
/// streaming. The kernel drops it when the holder ends.
pub struct ReplicaHold(#[allow(dead_code)] std::fs::File);

fn replica_lock_file() -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("steward-tests-pg-replica.lock"))
        .expect("the replica lock file")
}

pub fn replica_shared() -> ReplicaHold {
    let f = replica_lock_file();
    f.lock_shared().expect("shared lock on the replica");
    ReplicaHold(f)
}

pub fn replica_exclusive() -> ReplicaHold {
    let f = replica_lock_file();
    f.lock().expect("exclusive lock on the replica");
    ReplicaHold(f)
}
