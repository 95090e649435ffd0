//! Backups of databases: every test below runs once on SQLite (`sqlite::<test>`, a temporary
//! file) and once on PostgreSQL (`postgres::<test>`, a temporary database on the server from
//! scripts/ensure-postgres.sh; skipped with a message when none answers, unless
//! STEWARD_REQUIRE_SERVICES=1).

mod support;

use std::path::PathBuf;
use std::sync::Barrier;
use std::thread;

use steward_database::backup::{Backup, BackupTrigger, CheckResult, RestoreResult};
use steward_schedule::run::{Outcome, Run, Trigger};
use steward_store::{Claim, Store, StoreError, POSTGRES_SCHEMA_VERSION, SCHEMA_VERSION};
use time::macros::{date, datetime};
use time::{Duration, OffsetDateTime};

use support::TestDb;

/// Declares `sqlite::<test>` and `postgres::<test>` for each shared test function.
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    super::$test(&super::Fixture::sqlite());
                }
            )+
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    if let Some(fx) = super::Fixture::postgres(stringify!($test)) {
                        super::$test(&fx);
                    }
                }
            )+
        }
    };
}

on_both_backends!(
    add_two_and_read_them_back,
    listing_order_and_filter_by_database,
    restore_archive_and_deletion_round_trip,
    duplicate_database_and_file_is_refused,
    updating_an_unknown_backup_is_an_error,
    corrupt_row_names_the_backup,
    concurrent_updates_of_one_backup_both_land,
    migrates_from_the_schema_before_backups,
);

const T0: OffsetDateTime = datetime!(2025-03-01 02:00 UTC);

/// Where one backend's store lives; `open` gives another handle on it, as another process
/// would have.
struct Fixture {
    location: Location,
}

enum Location {
    Sqlite { path: PathBuf, _dir: tempfile::TempDir },
    Postgres(TestDb),
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            location: Location::Sqlite {
                path: dir.path().join("steward.db"),
                _dir: dir,
            },
        }
    }

    /// None (after printing SKIPPED, or failing under STEWARD_REQUIRE_SERVICES=1) without a
    /// PostgreSQL.
    fn postgres(test: &str) -> Option<Fixture> {
        TestDb::create(test).map(|db| Fixture {
            location: Location::Postgres(db),
        })
    }

    fn open(&self) -> Store {
        let store = match &self.location {
            Location::Sqlite { path, .. } => Store::open_url(&path.display().to_string()),
            Location::Postgres(db) => Store::open_url(&db.url),
        }
        .unwrap_or_else(|e| panic!("open {}: {e}", self.backend()));
        assert_eq!(store.is_postgres(), self.backend() == "postgres");
        store
    }

    fn backend(&self) -> &'static str {
        match self.location {
            Location::Sqlite { .. } => "sqlite",
            Location::Postgres(_) => "postgres",
        }
    }

    /// Runs `sql` on a connection of its own, with `{backups}` standing for the backups table.
    fn execute(&self, sql: &str) {
        match &self.location {
            Location::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(&sql.replace("{backups}", "backups"))
                .unwrap(),
            Location::Postgres(db) => db
                .client()
                .batch_execute(&sql.replace("{backups}", "steward_backups"))
                .unwrap(),
        }
    }

    /// The row's `record` and `deleted_at` columns as stored.
    fn raw_row(&self, id: i64) -> (String, Option<i64>) {
        match &self.location {
            Location::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row("SELECT record, deleted_at FROM backups WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap(),
            Location::Postgres(db) => {
                let row = db
                    .client()
                    .query_one("SELECT record, deleted_at FROM steward_backups WHERE id = $1", &[&id])
                    .unwrap();
                (row.get(0), row.get(1))
            }
        }
    }

    fn has_backups_table(&self) -> bool {
        match &self.location {
            Location::Sqlite { path, .. } => {
                rusqlite::Connection::open(path)
                    .unwrap()
                    .query_row(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'backups'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap()
                    == 1
            }
            Location::Postgres(db) => {
                db.client()
                    .query_one(
                        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'steward_backups'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
                    == 1
            }
        }
    }

    /// Undoes the backups migration step, which only added the backups table: what is left is
    /// a database exactly as the previous steward left it (SQLite schema 3, PostgreSQL 2).
    fn revert_to_the_schema_before_backups(&self) {
        match &self.location {
            Location::Sqlite { .. } => self.execute("DROP TABLE {backups}; PRAGMA user_version = 3;"),
            Location::Postgres(_) => {
                self.execute("DROP TABLE {backups}; DELETE FROM steward_schema WHERE version = 3;")
            }
        }
    }

    /// The schema version recorded in the database, and the one this steward writes.
    fn schema_versions(&self) -> (i64, i64) {
        match &self.location {
            Location::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let found = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
                (found, SCHEMA_VERSION)
            }
            Location::Postgres(db) => {
                let found = db
                    .client()
                    .query_one("SELECT max(version) FROM steward_schema", &[])
                    .unwrap()
                    .get(0);
                (found, POSTGRES_SCHEMA_VERSION)
            }
        }
    }
}

fn at(minutes: i64) -> OffsetDateTime {
    T0 + Duration::minutes(minutes)
}

fn backup(database: &str, file: &str, minutes: i64) -> Backup {
    Backup {
        id: 0,
        database: database.into(),
        file: format!("/var/backups/{database}/{file}"),
        taken_at: at(minutes),
        local_date: date!(2025 - 03 - 01),
        size_bytes: 123_456_789_012,
        sha256: "ab".repeat(32),
        duration_seconds: 12.5,
        trigger: BackupTrigger::Schedule,
        restore: None,
        archived_to: None,
        deleted_at: None,
    }
}

/// Adds `b` and returns it as stored (with its id).
#[track_caller]
fn add(store: &Store, b: &Backup) -> Backup {
    let id = store.add_backup(b).unwrap();
    Backup { id, ..b.clone() }
}

fn ids(backups: &[Backup]) -> Vec<i64> {
    backups.iter().map(|b| b.id).collect()
}

fn restore_result(passed: bool) -> RestoreResult {
    RestoreResult {
        at: at(90) + Duration::nanoseconds(987_654_321),
        passed,
        restore_seconds: 3.25,
        checks: vec![
            CheckResult {
                query: "SELECT count(*) FROM users".into(),
                expect: ">= 1".into(),
                value: Some("42".into()),
                passed: true,
                message: String::new(),
            },
            CheckResult {
                query: "SELECT max(created) > now() - interval '1 day' FROM orders".into(),
                expect: "t".into(),
                value: None,
                passed,
                message: if passed {
                    String::new()
                } else {
                    "relation \"orders\" does not exist".into()
                },
            },
        ],
        target: "throwaway local server".into(),
        message: if passed {
            "passed".into()
        } else {
            "check 2 failed".into()
        },
    }
}

fn add_two_and_read_them_back(fx: &Fixture) {
    let store = fx.open();
    assert!(store.backups(None).unwrap().is_empty());
    // The id given is ignored.
    let mut first = backup("app", "app-20250301T020000Z.dump", 0);
    first.id = 999;
    first.taken_at += Duration::nanoseconds(123_456_789);
    let first_id = store.add_backup(&first).unwrap();
    let first = Backup { id: first_id, ..first };
    let mut second = backup("app", "app-20250301T030000Z.dump", 60);
    second.trigger = BackupTrigger::PreDeploy;
    second.local_date = date!(2025 - 02 - 28);
    let second = add(&store, &second);
    assert!(first.id > 0 && second.id > 0 && first.id != second.id);

    assert_eq!(store.backup(first.id).unwrap(), Some(first.clone()));
    assert_eq!(store.backup(second.id).unwrap(), Some(second.clone()));
    assert_eq!(store.backup(i64::MAX).unwrap(), None);
    let read = store.backup(first.id).unwrap().unwrap();
    assert_eq!(read.taken_at.nanosecond(), 123_456_789);

    // The stored JSON is the whole record, its id included.
    let (json, deleted_at) = fx.raw_row(first.id);
    let stored: Backup = serde_json::from_str(&json).unwrap();
    assert_eq!(stored, first);
    assert_eq!(deleted_at, None);
    // Another handle (another process) sees the same.
    assert_eq!(fx.open().backups(None).unwrap(), vec![second, first]);
}

fn listing_order_and_filter_by_database(fx: &Fixture) {
    let store = fx.open();
    let a1 = add(&store, &backup("a", "1.dump", 1));
    let b3 = add(&store, &backup("b", "3.dump", 3));
    let a2 = add(&store, &backup("a", "2.dump", 2));
    // Two backups at one instant: the higher id first.
    let c3 = add(&store, &backup("c", "3.dump", 3));
    let a0 = add(&store, &backup("a", "0.dump", 0));
    let a2_again = add(&store, &backup("a", "2-manual.dump", 2));
    // Deleted ones are listed too.
    store.mark_backup_deleted(a1.id, at(100)).unwrap();

    assert_eq!(
        ids(&store.backups(None).unwrap()),
        [c3.id, b3.id, a2_again.id, a2.id, a1.id, a0.id]
    );
    let of_a = store.backups(Some("a")).unwrap();
    assert_eq!(ids(&of_a), [a2_again.id, a2.id, a1.id, a0.id]);
    assert!(of_a.iter().all(|b| b.database == "a"));
    assert_eq!(of_a[2].deleted_at, Some(at(100)));
    assert_eq!(ids(&store.backups(Some("b")).unwrap()), [b3.id]);
    assert!(store.backups(Some("nothing")).unwrap().is_empty());
    // An exact match, not a pattern.
    assert!(store.backups(Some("%")).unwrap().is_empty());
}

fn restore_archive_and_deletion_round_trip(fx: &Fixture) {
    let store = fx.open();
    let b = add(&store, &backup("app", "app.dump", 0));
    let other = add(&store, &backup("app", "other.dump", 1));

    let failed = restore_result(false);
    store.set_backup_restore(b.id, &failed).unwrap();
    let mut expect = Backup {
        restore: Some(failed),
        ..b.clone()
    };
    assert_eq!(store.backup(b.id).unwrap(), Some(expect.clone()));
    assert!(!store.backup(b.id).unwrap().unwrap().verified());

    // A later test replaces the earlier one.
    let passed = restore_result(true);
    store.set_backup_restore(b.id, &passed).unwrap();
    expect.restore = Some(passed);
    assert_eq!(store.backup(b.id).unwrap(), Some(expect.clone()));
    assert!(store.backup(b.id).unwrap().unwrap().verified());

    store.set_backup_archived(b.id, "s3://archive/app/app.dump").unwrap();
    expect.archived_to = Some("s3://archive/app/app.dump".into());
    assert_eq!(store.backup(b.id).unwrap(), Some(expect.clone()));

    let deleted = at(60 * 24 * 30) + Duration::nanoseconds(5);
    store.mark_backup_deleted(b.id, deleted).unwrap();
    expect.deleted_at = Some(deleted);
    let read = store.backup(b.id).unwrap().unwrap();
    assert_eq!(read, expect);
    // Every earlier change is kept.
    assert!(read.verified() && read.archived_to.is_some());
    let (json, deleted_at) = fx.raw_row(b.id);
    assert_eq!(deleted_at, Some(i64::try_from(deleted.unix_timestamp_nanos()).unwrap()));
    assert_eq!(serde_json::from_str::<Backup>(&json).unwrap(), expect);

    // The other row is untouched; both are still listed.
    assert_eq!(store.backup(other.id).unwrap(), Some(other.clone()));
    assert_eq!(store.backups(Some("app")).unwrap(), vec![other, expect]);
}

fn duplicate_database_and_file_is_refused(fx: &Fixture) {
    let store = fx.open();
    let first = add(&store, &backup("app", "app.dump", 0));
    // Same database and file, whatever the rest says.
    let mut again = backup("app", "app.dump", 5);
    again.trigger = BackupTrigger::Manual;
    match store.add_backup(&again) {
        Err(StoreError::Sqlite { operation, source, .. }) => {
            assert_eq!(operation, "adding a backup");
            assert_eq!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::ConstraintViolation),
                "{source}"
            );
        }
        Err(StoreError::Postgres { operation, source, .. }) => {
            assert_eq!(operation, "adding a backup");
            assert_eq!(
                source.code(),
                Some(&::postgres::error::SqlState::UNIQUE_VIOLATION),
                "{source}"
            );
        }
        other => panic!("expected a constraint violation, got {other:?}"),
    }
    // Nothing was written, and the store is still usable.
    assert_eq!(store.backups(None).unwrap(), vec![first.clone()]);
    // The same file name of another database is another backup.
    let elsewhere = add(&store, &backup("billing", "app.dump", 0));
    let mut same_path = backup("billing", "x", 1);
    same_path.file = first.file.clone();
    let same_path = add(&store, &same_path);
    assert_eq!(
        ids(&store.backups(None).unwrap()),
        [same_path.id, elsewhere.id, first.id]
    );
}

fn updating_an_unknown_backup_is_an_error(fx: &Fixture) {
    let store = fx.open();
    let ghost = i64::MAX;
    let check = |result: Result<(), StoreError>, op: &str| match result {
        Err(err @ StoreError::Corrupt { operation, .. }) => {
            assert_eq!(operation, op);
            assert!(err.to_string().contains(&format!("no backup {ghost}")), "{err}");
        }
        other => panic!("expected an error, got {other:?}"),
    };
    check(
        store.set_backup_restore(ghost, &restore_result(true)),
        "recording a backup's restore test",
    );
    check(
        store.set_backup_archived(ghost, "/archive/x"),
        "recording a backup's archived copy",
    );
    check(store.mark_backup_deleted(ghost, at(0)), "marking a backup deleted");
    assert!(store.backups(None).unwrap().is_empty());
}

fn corrupt_row_names_the_backup(fx: &Fixture) {
    let store = fx.open();
    let good = add(&store, &backup("app", "good.dump", 0));
    let bad = add(&store, &backup("app", "bad.dump", 1));
    let moved = add(&store, &backup("app", "moved.dump", 2));
    fx.execute(&format!(
        "UPDATE {{backups}} SET record = '{{\"id\": 1' WHERE id = {}",
        bad.id
    ));
    match store.backup(bad.id) {
        Err(err @ StoreError::Corrupt { operation, .. }) => {
            assert_eq!(operation, "reading a backup");
            assert!(err.to_string().contains(&format!("backup {}", bad.id)), "{err}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(store.backups(None), Err(StoreError::Corrupt { .. })));
    // A record holding another row's id is refused too.
    fx.execute(&format!(
        "UPDATE {{backups}} SET record = '{}' WHERE id = {}",
        serde_json::to_string(&good).unwrap(),
        moved.id
    ));
    match store.backup(moved.id) {
        Err(err @ StoreError::Corrupt { .. }) => {
            assert!(err.to_string().contains(&format!("holds id {}", good.id)), "{err}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // An update of a corrupt row fails and writes nothing.
    assert!(matches!(
        store.set_backup_archived(bad.id, "/archive/bad"),
        Err(StoreError::Corrupt { .. })
    ));
    // The other rows stay readable one by one.
    assert_eq!(store.backup(good.id).unwrap(), Some(good));
}

const ROUNDS: usize = 10;

/// Two handles (two processes' view) change different fields of one backup at once, round
/// after round: the read-modify-writes are serialised, so neither change is lost.
fn concurrent_updates_of_one_backup_both_land(fx: &Fixture) {
    let stores = [fx.open(), fx.open()];
    for round in 0..ROUNDS {
        let b = add(&stores[0], &backup("race", &format!("{round}.dump"), round as i64));
        let barrier = Barrier::new(stores.len());
        let archive = format!("/archive/{round}.dump");
        thread::scope(|s| {
            let barrier = &barrier;
            let (first, second) = (&stores[0], &stores[1]);
            let archive = &archive;
            s.spawn(move || {
                barrier.wait();
                first.set_backup_restore(b.id, &restore_result(true)).unwrap();
            });
            s.spawn(move || {
                barrier.wait();
                second.set_backup_archived(b.id, archive).unwrap();
            });
        });
        let read = stores[1].backup(b.id).unwrap().unwrap();
        assert!(read.verified(), "round {round}: restore lost: {read:?}");
        assert_eq!(read.archived_to.as_deref(), Some(archive.as_str()), "round {round}");
    }
    assert_eq!(stores[0].backups(Some("race")).unwrap().len(), ROUNDS);
}

/// A database written by the previous steward (SQLite schema 3, PostgreSQL schema 2) gains
/// the backups table on open and keeps everything else, its runs included.
fn migrates_from_the_schema_before_backups(fx: &Fixture) {
    let store = fx.open();
    store.set_meta("kept", "yes").unwrap();
    let run = Run::new("nightly", at(0), Trigger::Schedule, Outcome::Succeeded);
    let run_id = match store.claim_run(&run, false).unwrap() {
        Claim::Inserted(id) => id,
        other => panic!("expected Inserted, got {other:?}"),
    };
    drop(store);
    fx.revert_to_the_schema_before_backups();
    assert!(!fx.has_backups_table());
    let (found, current) = fx.schema_versions();
    assert_eq!(found, current - 1);

    let store = fx.open();
    assert!(fx.has_backups_table());
    let (found, current) = fx.schema_versions();
    assert_eq!(found, current);
    assert_eq!(store.get_meta("kept").unwrap().as_deref(), Some("yes"));
    assert_eq!(store.run(run_id).unwrap(), Some(Run { id: run_id, ..run }));
    let b = add(&store, &backup("app", "app.dump", 0));
    drop(store);

    // Opening again migrates nothing and keeps both.
    let store = fx.open();
    assert_eq!(fx.schema_versions().0, current);
    assert_eq!(store.backup(b.id).unwrap(), Some(b));
    assert_eq!(store.runs(None, None).unwrap().len(), 1);
}
