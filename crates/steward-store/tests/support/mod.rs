//! Test databases on the PostgreSQL that `scripts/ensure-postgres.sh` runs.
//!
//! Each test creates its own database (a unique name) through the admin URL and drops it
//! afterwards, so tests run in parallel and leave nothing behind.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use steward_store::Store;

/// `STEWARD_TEST_POSTGRES_URL`, or what `scripts/ensure-postgres.sh` prints.
pub fn admin_url() -> String {
    std::env::var("STEWARD_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        let port = std::env::var("STEWARD_PG_PORT").unwrap_or_else(|_| "15432".into());
        format!("postgres://postgres@127.0.0.1:{port}/steward_test")
    })
}

/// Prints why and returns None, or panics when STEWARD_REQUIRE_SERVICES=1 says the services
/// must be there (CI), so that a broken set-up cannot pass as skipped tests.
pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    assert!(
        std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{test}: {why} (STEWARD_REQUIRE_SERVICES=1)"
    );
    eprintln!("SKIPPED {test}: {why}");
    None
}

pub fn admin() -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = admin_url().parse()?;
    config.connect_timeout(Duration::from_secs(3));
    config.connect(postgres::NoTls)
}

/// A database of its own for one test; dropped (with any sessions still on it) at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// None (after printing SKIPPED) when no PostgreSQL answers.
    pub fn create(test: &str) -> Option<TestDb> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let mut admin = match admin() {
            Ok(c) => c,
            Err(e) => {
                return skip(
                    test,
                    &format!("no PostgreSQL at {} ({e}; run scripts/ensure-postgres.sh)", admin_url()),
                )
            }
        };
        let mut name = format!(
            "steward_t_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            test.to_ascii_lowercase()
        );
        name.retain(|c| c.is_ascii_alphanumeric() || c == '_');
        name.truncate(63);
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create test database");
        let base = admin_url();
        let (prefix, _) = base.rsplit_once('/').expect("admin URL has a database");
        let url = format!("{prefix}/{name}");
        Some(TestDb { name, url })
    }

    pub fn open(&self) -> Store {
        Store::open_url(&self.url).expect("open PostgreSQL store")
    }

    /// A plain client on the test database, for checks and for cutting sessions.
    pub fn client(&self) -> postgres::Client {
        let mut config: postgres::Config = self.url.parse().unwrap();
        config.connect_timeout(Duration::from_secs(3));
        config.connect(postgres::NoTls).expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = admin() {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        }
    }
}
