//! The replication observers against a real PostgreSQL primary and streaming replica
//! (scripts/ensure-postgres-replica.sh): lag created for real by pausing replay and writing on
//! the primary, and a replica cut from its primary that must not read as 0 s behind.

mod support;

use std::time::{Duration, Instant};

use steward_backends::database::{connect, observe_primary, observe_replica, observe_stats};
use steward_database::replication::{assess, Lag, Verdict};

const PRIMARY: &str = "postgres://postgres@127.0.0.1:15433/postgres";
const REPLICA: &str = "postgres://postgres@127.0.0.1:15434/postgres";
const CONNINFO: &str = "host=127.0.0.1 port=15433 user=postgres application_name=replica1";

fn available(test: &str) -> bool {
    let ok = connect(PRIMARY, None).is_ok() && connect(REPLICA, None).is_ok();
    if !ok {
        assert!(
            std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{test}: needs the primary and replica of scripts/ensure-postgres-replica.sh (STEWARD_REQUIRE_SERVICES=1)"
        );
        eprintln!("SKIPPED {test}: run scripts/ensure-postgres-replica.sh");
    }
    ok
}

fn lag_now() -> Lag {
    let (mut p, ps) = connect(PRIMARY, None).unwrap();
    let (mut r, rs) = connect(REPLICA, None).unwrap();
    let primary = observe_primary(&mut p, &ps).unwrap();
    let replica = observe_replica(&mut r, &rs, "replica1").unwrap();
    assess(&primary, "replica1", Some(&replica), 30.0)
}

fn wait(what: &str, cond: impl Fn(&Lag) -> bool) -> Lag {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = lag_now();
        if cond(&l) {
            return l;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {l:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each statement on its own (ALTER SYSTEM refuses to run inside the implicit transaction of a
/// multi-statement string).
fn sql(url: &str, q: &str) {
    let (mut c, _) = connect(url, None).unwrap();
    for stmt in q.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        c.batch_execute(stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
}

/// Puts the replica back the way the script made it, whatever the test did.
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        if let Ok((mut c, _)) = connect(REPLICA, None) {
            for stmt in [
                "SELECT pg_wal_replay_resume()".to_string(),
                format!("ALTER SYSTEM SET primary_conninfo = '{CONNINFO}'"),
                "SELECT pg_reload_conf()".to_string(),
            ] {
                let _ = c.batch_execute(&stmt);
            }
        }
    }
}

#[test]
fn paused_replay_lags_for_real_and_a_cut_replica_is_disconnected_not_zero_seconds_behind() {
    if !available("paused_replay_lags_for_real_and_a_cut_replica_is_disconnected_not_zero_seconds_behind") {
        return;
    }
    // Paused and cut: no other test binary may need the replica meanwhile.
    let _alone = support::replica_exclusive();
    let _restore = Restore;
    let table = format!("stw_lag_{}", std::process::id());
    // Streaming, and an idle primary is not lagging.
    let l = wait("the replica to stream, caught up", |l| {
        l.verdict == Verdict::Healthy && l.bytes == Some(0)
    });
    assert_eq!(l.seconds, Some(0.0));

    // Replay paused on the replica, writes on the primary: bytes behind, gate held.
    sql(REPLICA, "SELECT pg_wal_replay_pause()");
    sql(
        PRIMARY,
        &format!(
            "CREATE TABLE {table} (id int); INSERT INTO {table} SELECT generate_series(1, 50000); DROP TABLE {table};"
        ),
    );
    let l = wait("replay paused with WAL pending", |l| l.verdict == Verdict::ReplayPaused);
    assert!(l.bytes.unwrap() > 0, "{l:?}");
    assert!(!l.is_healthy());
    // Resumed: caught up again.
    sql(REPLICA, "SELECT pg_wal_replay_resume()");
    wait("the replica to catch up", |l| {
        l.verdict == Verdict::Healthy && l.bytes == Some(0)
    });

    // Cut from its primary (no WAL receiver): the replica still answers, its receive and replay
    // positions agree, and it must read as Disconnected with the bytes the primary moved on.
    sql(
        REPLICA,
        "ALTER SYSTEM SET primary_conninfo = ''; SELECT pg_reload_conf();",
    );
    wait("the primary to stop listing the replica", |l| {
        l.verdict == Verdict::Disconnected
    });
    sql(
        PRIMARY,
        &format!(
            "CREATE TABLE {table} (id int); INSERT INTO {table} SELECT generate_series(1, 50000); DROP TABLE {table};"
        ),
    );
    let l = wait("bytes behind while cut", |l| l.bytes.is_some_and(|b| b > 0));
    assert_eq!(l.verdict, Verdict::Disconnected, "{l:?}");
    assert_eq!(l.seconds, None, "a disconnected replica has no honest lag in seconds");

    // Reconnected: streaming and caught up.
    sql(
        REPLICA,
        &format!("ALTER SYSTEM SET primary_conninfo = '{CONNINFO}'; SELECT pg_reload_conf();"),
    );
    wait("the replica to reconnect and catch up", |l| {
        l.verdict == Verdict::Healthy && l.bytes == Some(0)
    });
}

#[test]
fn an_unreachable_server_is_an_error_not_an_empty_answer() {
    let Err(e) = connect("postgres://postgres@127.0.0.1:9/postgres", None) else {
        panic!("nothing listens on port 9")
    };
    assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
}

#[test]
fn a_table_the_application_holds_locked_neither_stalls_nor_fails_the_statistics() {
    if !support::primary_available("a_table_the_application_holds_locked_neither_stalls_nor_fails_the_statistics") {
        return;
    }
    let db = support::ScratchDb::create("locked");
    db.sql("CREATE TABLE held (id int); INSERT INTO held SELECT generate_series(1, 20000); ANALYZE held");
    // The application's long lock (LOCK TABLE, an ALTER TABLE rewriting it), held meanwhile.
    let mut app = db.client();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE").unwrap();
    let (mut c, server) = connect(&db.url(), None).unwrap();
    // Waiting for the lock would end in lock_timeout's error: the statistics are read instead,
    // the locked table sized from the catalog.
    let stats = observe_stats(&mut c, &server, time::OffsetDateTime::now_utc()).unwrap();
    let held = stats
        .tables
        .iter()
        .find(|t| t.name == "public.held")
        .expect("the locked table is listed");
    assert!(held.total_bytes >= 8192, "{held:?}");
    assert_eq!(held.live, 20000, "{held:?}");
    tx.rollback().unwrap();
    // Unlocked, the exact size (table, indexes, TOAST) is read again.
    let stats = observe_stats(&mut c, &server, time::OffsetDateTime::now_utc()).unwrap();
    let held = stats.tables.iter().find(|t| t.name == "public.held").unwrap();
    assert!(held.total_bytes >= 8192, "{held:?}");
}

#[test]
fn every_session_steward_opens_is_bounded() {
    if !available("every_session_steward_opens_is_bounded") {
        return;
    }
    for url in [PRIMARY, REPLICA] {
        let (mut c, _) = connect(url, None).unwrap();
        let got: (String, String) = c
            .query_one(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')",
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(got, ("30s".to_string(), "5s".to_string()), "{url}");
    }
}
