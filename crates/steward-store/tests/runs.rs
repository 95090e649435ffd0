//! Runs of schedules: every test below runs once on SQLite (`sqlite::<test>`, a temporary file)
//! and once on PostgreSQL (`postgres::<test>`, a temporary database on the server from
//! scripts/ensure-postgres.sh; skipped with a message when none answers, unless
//! STEWARD_REQUIRE_SERVICES=1).

mod support;

use std::path::PathBuf;
use std::sync::Barrier;
use std::thread;

use steward_schedule::run::{Outcome, Run, Trigger, LOG_TAIL_BYTES};
use steward_store::{Claim, Store, StoreError, POSTGRES_SCHEMA_VERSION, SCHEMA_VERSION};
use time::macros::datetime;
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
    claim_inserts_once_per_instant,
    forbid_active_refuses_while_a_run_is_active,
    update_run_is_compare_and_set,
    every_field_round_trips,
    stored_text_is_bounded_and_the_same_on_both,
    schedule_runs_lists_active_and_newest_finished,
    runs_filter_order_and_limit,
    active_runs_of_every_schedule,
    prune_deletes_by_id_and_ids_are_not_reused,
    corrupt_row_names_the_run,
    concurrent_claims_of_one_instant_insert_once,
    concurrent_forbidding_claims_start_one_run,
    migrates_from_the_previous_schema,
);

const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

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

    /// Runs `sql` on a connection of its own, with `{runs}` standing for the runs table.
    fn execute(&self, sql: &str) {
        match &self.location {
            Location::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(&sql.replace("{runs}", "runs"))
                .unwrap(),
            Location::Postgres(db) => db
                .client()
                .batch_execute(&sql.replace("{runs}", "steward_runs"))
                .unwrap(),
        }
    }

    fn has_runs_table(&self) -> bool {
        match &self.location {
            Location::Sqlite { path, .. } => {
                rusqlite::Connection::open(path)
                    .unwrap()
                    .query_row(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap()
                    == 1
            }
            Location::Postgres(db) => {
                db.client()
                    .query_one(
                        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'steward_runs'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
                    == 1
            }
        }
    }

    /// Undoes the runs migration step and the steps after it (the backups table), each of
    /// which only added a table: what is left is a database exactly as the steward before runs
    /// left it. Returns that schema version (SQLite 2, PostgreSQL 1).
    fn revert_to_the_schema_before_runs(&self) -> i64 {
        match &self.location {
            Location::Sqlite { .. } => {
                self.execute("DROP TABLE backups; DROP TABLE {runs}; PRAGMA user_version = 2;");
                2
            }
            Location::Postgres(_) => {
                self.execute(
                    "DROP TABLE steward_backups; DROP TABLE {runs}; DELETE FROM steward_schema WHERE version >= 2;",
                );
                1
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

fn run(schedule: &str, minutes: i64, outcome: Outcome) -> Run {
    Run::new(schedule, at(minutes), Trigger::Schedule, outcome)
}

#[track_caller]
fn inserted(claim: Claim) -> i64 {
    match claim {
        Claim::Inserted(id) => id,
        other => panic!("expected Inserted, got {other:?}"),
    }
}

/// Claims `run` and returns it as stored (with its id).
#[track_caller]
fn insert(store: &Store, run: &Run) -> Run {
    let id = inserted(store.claim_run(run, false).unwrap());
    Run { id, ..run.clone() }
}

fn instants(runs: &[Run]) -> Vec<(String, i64)> {
    runs.iter()
        .map(|r| (r.schedule.clone(), (r.scheduled_at - T0).whole_minutes()))
        .collect()
}

fn claim_inserts_once_per_instant(fx: &Fixture) {
    let store = fx.open();
    let first = insert(&store, &run("backup", 0, Outcome::Pending));
    assert!(first.id > 0);
    assert_eq!(store.run(first.id).unwrap(), Some(first.clone()));

    // The same instant again, whatever the rest of the row says: nothing is written and the
    // stored row comes back. That also wins over `Busy`, being the more specific answer.
    let mut again = run("backup", 0, Outcome::Missed);
    again.trigger = Trigger::Manual;
    assert_eq!(store.claim_run(&again, false).unwrap(), Claim::Exists(first.clone()));
    assert_eq!(store.claim_run(&again, true).unwrap(), Claim::Exists(first.clone()));
    assert_eq!(store.runs(None, None).unwrap(), vec![first.clone()]);

    // The same instant of another schedule, or the next instant, is another run.
    let other = insert(&store, &run("report", 0, Outcome::Pending));
    let next = insert(&store, &run("backup", 1, Outcome::Missed));
    assert!(other.id != first.id && next.id != first.id && next.id != other.id);
    assert_eq!(store.run(i64::MAX).unwrap(), None);
}

fn forbid_active_refuses_while_a_run_is_active(fx: &Fixture) {
    let store = fx.open();
    let pending = insert(&store, &run("backup", 0, Outcome::Pending));
    let next = run("backup", 5, Outcome::Pending);
    assert_eq!(store.claim_run(&next, true).unwrap(), Claim::Busy(pending.clone()));

    let running = Run {
        outcome: Outcome::Running,
        job: Some("backup-1".into()),
        started_at: Some(at(0)),
        ..pending.clone()
    };
    assert!(store.update_run(Outcome::Pending, &running).unwrap());
    assert_eq!(store.claim_run(&next, true).unwrap(), Claim::Busy(running.clone()));
    // Another schedule's active run does not count.
    insert(&store, &run("report", 5, Outcome::Running));
    assert_eq!(store.runs(Some("backup"), None).unwrap(), vec![running.clone()]);

    let finished = Run {
        outcome: Outcome::Succeeded,
        finished_at: Some(at(1)),
        ..running.clone()
    };
    assert!(store.update_run(Outcome::Running, &finished).unwrap());
    let id = inserted(store.claim_run(&next, true).unwrap());

    // Without `forbid_active` an active run is no obstacle (Allow, or a manual trigger).
    let overlapping = insert(&store, &run("backup", 6, Outcome::Pending));
    // The newest active run is the one named.
    let third = run("backup", 7, Outcome::Pending);
    assert_eq!(store.claim_run(&third, true).unwrap(), Claim::Busy(overlapping));
    assert_eq!(store.run(id).unwrap().unwrap().outcome, Outcome::Pending);
}

fn update_run_is_compare_and_set(fx: &Fixture) {
    let store = fx.open();
    let pending = insert(&store, &run("backup", 0, Outcome::Pending));
    let succeeded = Run {
        outcome: Outcome::Succeeded,
        message: "done".into(),
        ..pending.clone()
    };
    // A stale expectation writes nothing at all.
    assert!(!store.update_run(Outcome::Running, &succeeded).unwrap());
    assert_eq!(store.run(pending.id).unwrap(), Some(pending.clone()));

    let running = Run {
        outcome: Outcome::Running,
        attempt: 2,
        job: Some("backup-2".into()),
        started_at: Some(at(0) + Duration::nanoseconds(7)),
        ..pending.clone()
    };
    assert!(store.update_run(Outcome::Pending, &running).unwrap());
    assert_eq!(store.run(pending.id).unwrap(), Some(running.clone()));
    // The second of two writers that both saw Pending loses.
    assert!(!store.update_run(Outcome::Pending, &succeeded).unwrap());
    assert_eq!(store.run(pending.id).unwrap(), Some(running.clone()));
    // No such row: nothing to win.
    let ghost = Run {
        id: pending.id + 1000,
        ..running.clone()
    };
    assert!(!store.update_run(Outcome::Running, &ghost).unwrap());
    assert_eq!(store.runs(None, None).unwrap(), vec![running]);
}

fn every_field_round_trips(fx: &Fixture) {
    let store = fx.open();
    // Every line distinct and some not ASCII, exactly the kept size.
    let mut logs = String::new();
    let mut line = 0;
    while logs.len() < LOG_TAIL_BYTES {
        logs.push_str(&format!("line {line}: füll\n"));
        line += 1;
    }
    while logs.len() > LOG_TAIL_BYTES {
        logs.pop();
    }
    while logs.len() < LOG_TAIL_BYTES {
        logs.push('.');
    }
    assert_eq!(logs.len(), LOG_TAIL_BYTES);
    let full = Run {
        id: 0,
        schedule: "db-backup".into(),
        scheduled_at: T0 + Duration::nanoseconds(123_456_789),
        trigger: Trigger::CatchUp,
        outcome: Outcome::Failed,
        attempt: 3,
        job: Some("db-backup-1740830400-3".into()),
        started_at: Some(T0 + Duration::seconds(1) + Duration::nanoseconds(1)),
        finished_at: Some(T0 + Duration::hours(2) + Duration::nanoseconds(999_999_999)),
        // Before the epoch: negative nanoseconds.
        retry_at: Some(datetime!(1969-12-31 23:59:59.000000001 UTC)),
        exit_code: Some(-9),
        message: "exit code -9 «killed»".into(),
        logs,
    };
    let full = insert(&store, &full);
    let bare = insert(
        &store,
        &Run::new("db-backup", at(-60), Trigger::Manual, Outcome::Skipped),
    );
    assert_eq!(bare.job, None);
    assert_eq!(store.run(full.id).unwrap().as_ref(), Some(&full));
    assert_eq!(store.run(bare.id).unwrap().as_ref(), Some(&bare));
    assert_eq!(store.runs(None, None).unwrap(), vec![full.clone(), bare.clone()]);
    assert_eq!(
        store.schedule_runs("db-backup", 10).unwrap(),
        vec![full.clone(), bare.clone()]
    );
    let read = store.run(full.id).unwrap().unwrap();
    assert_eq!(read.scheduled_at.offset(), time::UtcOffset::UTC);
    assert_eq!(read.scheduled_at.nanosecond(), 123_456_789);

    // An update writes every field, back to None as well.
    let cleared = Run {
        id: full.id,
        ..Run::new("db-backup", full.scheduled_at, Trigger::Schedule, Outcome::Pending)
    };
    assert!(store.update_run(Outcome::Failed, &cleared).unwrap());
    assert_eq!(store.run(full.id).unwrap(), Some(cleared));
    // And from None to every field set.
    let refilled = Run {
        id: bare.id,
        scheduled_at: bare.scheduled_at,
        ..full.clone()
    };
    assert!(store.update_run(Outcome::Skipped, &refilled).unwrap());
    assert_eq!(store.run(bare.id).unwrap(), Some(refilled));
}

/// Logs beyond the kept size keep their end; NUL (which PostgreSQL text cannot hold) reads
/// back as U+FFFD on both backends.
fn stored_text_is_bounded_and_the_same_on_both(fx: &Fixture) {
    let store = fx.open();
    let mut long = run("backup", 0, Outcome::Failed);
    long.logs = format!("{}THE END", "x".repeat(2 * LOG_TAIL_BYTES));
    long.message = "bad\0byte".into();
    let id = inserted(store.claim_run(&long, false).unwrap());
    let read = store.run(id).unwrap().unwrap();
    assert_eq!(read.logs.len(), LOG_TAIL_BYTES);
    assert!(read.logs.ends_with("xTHE END"));
    assert_eq!(read.message, "bad\u{FFFD}byte");

    let mut nul_logs = read.clone();
    nul_logs.logs = "\0".repeat(LOG_TAIL_BYTES);
    assert!(store.update_run(Outcome::Failed, &nul_logs).unwrap());
    let read = store.run(id).unwrap().unwrap();
    // Each NUL became three bytes; the tail is still bounded.
    assert!(read.logs.len() <= LOG_TAIL_BYTES && read.logs.chars().all(|c| c == '\u{FFFD}'));
}

fn schedule_runs_lists_active_and_newest_finished(fx: &Fixture) {
    let store = fx.open();
    for (minutes, outcome) in [
        (1, Outcome::Succeeded),
        (2, Outcome::Failed),
        (3, Outcome::Running),
        (4, Outcome::Missed),
        (5, Outcome::Succeeded),
        (6, Outcome::Pending),
        (7, Outcome::TimedOut),
    ] {
        insert(&store, &run("a", minutes, outcome));
    }
    insert(&store, &run("b", 8, Outcome::Succeeded));
    insert(&store, &run("b", 9, Outcome::Running));

    let listed = |limit| {
        let runs = store.schedule_runs("a", limit).unwrap();
        runs.iter()
            .map(|r| (r.scheduled_at - T0).whole_minutes())
            .collect::<Vec<_>>()
    };
    // Both active runs, whatever the limit, plus the newest finished ones.
    assert_eq!(listed(2), [7, 6, 5, 3]);
    assert_eq!(listed(0), [6, 3]);
    assert_eq!(listed(1), [7, 6, 3]);
    assert_eq!(listed(100), [7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(listed(usize::MAX), [7, 6, 5, 4, 3, 2, 1]);
    assert!(store.schedule_runs("nothing", 5).unwrap().is_empty());
}

fn runs_filter_order_and_limit(fx: &Fixture) {
    let store = fx.open();
    insert(&store, &run("a", 1, Outcome::Succeeded));
    insert(&store, &run("b", 3, Outcome::Failed));
    insert(&store, &run("a", 2, Outcome::Running));
    // Two schedules at one instant: the later row first.
    insert(&store, &run("c", 3, Outcome::Missed));
    insert(&store, &run("a", 0, Outcome::Missed));

    let all = store.runs(None, None).unwrap();
    let expect = |list: &[(&str, i64)]| list.iter().map(|(s, m)| (s.to_string(), *m)).collect::<Vec<_>>();
    assert_eq!(
        instants(&all),
        expect(&[("c", 3), ("b", 3), ("a", 2), ("a", 1), ("a", 0)])
    );
    assert_eq!(
        instants(&store.runs(None, Some(2)).unwrap()),
        expect(&[("c", 3), ("b", 3)])
    );
    assert_eq!(
        instants(&store.runs(Some("a"), None).unwrap()),
        expect(&[("a", 2), ("a", 1), ("a", 0)])
    );
    assert_eq!(
        instants(&store.runs(Some("a"), Some(2)).unwrap()),
        expect(&[("a", 2), ("a", 1)])
    );
    assert!(store.runs(Some("a"), Some(0)).unwrap().is_empty());
    assert!(store.runs(Some("nothing"), None).unwrap().is_empty());
}

fn active_runs_of_every_schedule(fx: &Fixture) {
    let store = fx.open();
    assert!(store.active_runs().unwrap().is_empty());
    insert(&store, &run("b", 2, Outcome::Pending));
    insert(&store, &run("a", 5, Outcome::Running));
    insert(&store, &run("a", 1, Outcome::Pending));
    insert(&store, &run("a", 3, Outcome::Succeeded));
    insert(&store, &run("c", 0, Outcome::Replaced));
    let active = store.active_runs().unwrap();
    assert_eq!(
        instants(&active),
        [("a".to_string(), 1), ("a".to_string(), 5), ("b".to_string(), 2)]
    );
    assert!(active.iter().all(|r| r.outcome.is_active()));
}

fn prune_deletes_by_id_and_ids_are_not_reused(fx: &Fixture) {
    let store = fx.open();
    let ids: Vec<i64> = (0..4)
        .map(|m| insert(&store, &run("a", m, Outcome::Succeeded)).id)
        .collect();
    assert_eq!(store.prune_runs(&[]).unwrap(), 0);
    // An unknown id, and one named twice, are no error and count once.
    assert_eq!(store.prune_runs(&[ids[0], ids[3], ids[3], i64::MAX]).unwrap(), 2);
    assert_eq!(store.run(ids[0]).unwrap(), None);
    assert_eq!(store.run(ids[3]).unwrap(), None);
    assert_eq!(
        store.runs(None, None).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    assert_eq!(store.prune_runs(&[ids[0]]).unwrap(), 0);
    // The newest id was deleted; a new run still gets a fresh one (ids are shown to users).
    let next = insert(&store, &run("a", 10, Outcome::Pending));
    assert!(next.id > ids[3], "{} reused after {}", next.id, ids[3]);
    // The pruned instant is free again.
    insert(&store, &run("a", 0, Outcome::Missed));
}

fn corrupt_row_names_the_run(fx: &Fixture) {
    let store = fx.open();
    let good = insert(&store, &run("a", 0, Outcome::Succeeded));
    let bad = insert(&store, &run("a", 1, Outcome::Succeeded));
    fx.execute(&format!(
        "UPDATE {{runs}} SET outcome = 'Exploded' WHERE id = {}",
        bad.id
    ));
    match store.run(bad.id) {
        Err(err @ StoreError::Corrupt { operation, .. }) => {
            assert_eq!(operation, "reading a run");
            let text = err.to_string();
            assert!(
                text.contains(&format!("run {}", bad.id)) && text.contains("Exploded"),
                "{text}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(store.runs(None, None), Err(StoreError::Corrupt { .. })));
    // The other rows stay readable one by one.
    assert_eq!(store.run(good.id).unwrap(), Some(good));
}

const ROUNDS: i64 = 20;

/// Two handles (two processes' view: two connections to one SQLite file, two PostgreSQL
/// sessions) claim the same instant at once, round after round: exactly one inserts and the
/// other sees its row.
fn concurrent_claims_of_one_instant_insert_once(fx: &Fixture) {
    let stores = [fx.open(), fx.open()];
    for round in 0..ROUNDS {
        let barrier = Barrier::new(stores.len());
        let claims: Vec<Claim> = thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let trigger = if i == 0 { Trigger::Schedule } else { Trigger::Manual };
                        let run = Run::new("race", at(round), trigger, Outcome::Pending);
                        barrier.wait();
                        store.claim_run(&run, false).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<i64> = claims
            .iter()
            .filter_map(|c| match c {
                Claim::Inserted(id) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {claims:?}");
        let loser = claims.iter().find(|c| !matches!(c, Claim::Inserted(_))).unwrap();
        match loser {
            Claim::Exists(row) => assert_eq!(row.id, winners[0], "round {round}"),
            other => panic!("round {round}: expected Exists, got {other:?}"),
        }
    }
    assert_eq!(stores[0].runs(Some("race"), None).unwrap().len(), ROUNDS as usize);
}

/// Under `concurrencyPolicy: Forbid`, two handles claiming different instants at once (the
/// controller's tick and a `steward trigger`): exactly one run starts, the other is told which.
fn concurrent_forbidding_claims_start_one_run(fx: &Fixture) {
    let stores = [fx.open(), fx.open()];
    for round in 0..ROUNDS {
        let barrier = Barrier::new(stores.len());
        let claims: Vec<Claim> = thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let run = Run::new(
                            "forbid",
                            at(round) + Duration::seconds(i as i64),
                            Trigger::Schedule,
                            Outcome::Pending,
                        );
                        barrier.wait();
                        store.claim_run(&run, true).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winner = match claims
            .iter()
            .filter(|c| matches!(c, Claim::Inserted(_)))
            .collect::<Vec<_>>()[..]
        {
            [Claim::Inserted(id)] => *id,
            _ => panic!("round {round}: expected one Inserted, got {claims:?}"),
        };
        match claims.iter().find(|c| !matches!(c, Claim::Inserted(_))).unwrap() {
            Claim::Busy(active) => assert_eq!(active.id, winner, "round {round}"),
            other => panic!("round {round}: expected Busy, got {other:?}"),
        }
        // Finish it, so the next round starts with nothing active.
        let mut done = stores[0].run(winner).unwrap().unwrap();
        done.outcome = Outcome::Succeeded;
        assert!(stores[1].update_run(Outcome::Pending, &done).unwrap());
    }
    let runs = stores[0].runs(Some("forbid"), None).unwrap();
    assert_eq!(runs.len(), ROUNDS as usize);
    assert!(stores[1].active_runs().unwrap().is_empty());
}

/// A database written by the steward before runs (SQLite schema 2, PostgreSQL schema 1) gains
/// the runs table (and the later steps' tables) on open and keeps everything else.
fn migrates_from_the_previous_schema(fx: &Fixture) {
    let store = fx.open();
    store.set_meta("kept", "yes").unwrap();
    drop(store);
    let before_runs = fx.revert_to_the_schema_before_runs();
    assert!(!fx.has_runs_table());
    let (found, current) = fx.schema_versions();
    assert_eq!(found, before_runs);
    assert!(found < current);

    let store = fx.open();
    assert!(fx.has_runs_table());
    let (found, current) = fx.schema_versions();
    assert_eq!(found, current);
    assert_eq!(store.get_meta("kept").unwrap().as_deref(), Some("yes"));
    let id = inserted(store.claim_run(&run("a", 0, Outcome::Pending), true).unwrap());
    drop(store);

    // Opening again migrates nothing and keeps the run.
    let store = fx.open();
    assert_eq!(store.run(id).unwrap().map(|r| r.schedule), Some("a".to_string()));
    assert_eq!(fx.schema_versions().0, current);
}
