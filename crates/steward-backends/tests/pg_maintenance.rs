//! VACUUM and REINDEX against the real primary of scripts/ensure-postgres-replica.sh, each test
//! in a scratch database of its own.

mod support;

use std::time::{Duration, Instant};

use postgres::Client;
use steward_backends::database::connect;
use steward_backends::pg_maintenance::{reindex_concurrently, table_stats, vacuum_table, MaintenanceError};
use steward_backends::swarm::error_chain;
use support::{primary_available, wait_for, ScratchDb};

fn setting(c: &mut Client, name: &str) -> String {
    c.query_one("SELECT current_setting($1)", &[&name]).unwrap().get(0)
}

fn dead_of(c: &mut Client, table: &str) -> u64 {
    table_stats(c)
        .unwrap()
        .into_iter()
        .find(|t| t.name == table)
        .map_or(0, |t| t.dead)
}

#[test]
fn a_bloated_table_is_vacuumed_to_no_dead_tuples_and_the_session_keeps_its_settings() {
    if !primary_available("a_bloated_table_is_vacuumed_to_no_dead_tuples_and_the_session_keeps_its_settings") {
        return;
    }
    let db = ScratchDb::create("vac");
    // Autovacuum off for it: the vacuum under test must be the one that removes the dead tuples.
    db.sql(
        "CREATE TABLE bloat (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = false); \
         INSERT INTO bloat SELECT g, repeat('x', 50) FROM generate_series(1, 20000) g; \
         DELETE FROM bloat WHERE id % 10 <> 0",
    );
    let (mut c, _) = connect(&db.url(), None).unwrap();
    // The deleting session reports its counts when idle, at most once a second.
    wait_for(
        "the statistics to show the deleted rows",
        Duration::from_secs(15),
        || (dead_of(&mut c, "public.bloat") >= 18000).then_some(()),
    );
    let stats = table_stats(&mut c).unwrap();
    let t = stats.iter().find(|t| t.name == "public.bloat").unwrap();
    assert_eq!((t.live, t.dead), (2000, 18000), "{t:?}");

    c.batch_execute("SET lock_timeout = '7s'").unwrap();
    let statement_timeout = setting(&mut c, "statement_timeout");
    let r = vacuum_table(&mut c, "public.bloat", Duration::from_secs(5), Duration::from_secs(60)).unwrap();
    assert_eq!(r.table, "public.bloat");
    assert_eq!(r.dead_before, 18000);
    assert_eq!(r.dead_after, 0, "{r:?}");
    assert!(r.duration_seconds > 0.0);
    assert_eq!(dead_of(&mut c, "public.bloat"), 0);
    assert_eq!(setting(&mut c, "lock_timeout"), "7s");
    assert_eq!(setting(&mut c, "statement_timeout"), statement_timeout);
}

#[test]
fn names_are_resolved_and_quoted_never_interpolated() {
    if !primary_available("names_are_resolved_and_quoted_never_interpolated") {
        return;
    }
    let db = ScratchDb::create("names");
    db.sql(
        r#"CREATE SCHEMA "Odd ""Schema"""; CREATE TABLE "Odd ""Schema"""."t; DROP TABLE x" (id int);
           CREATE SCHEMA "a.b"; CREATE TABLE "a.b".c (id int); CREATE SCHEMA a; CREATE TABLE a."b.c" (id int);
           INSERT INTO "Odd ""Schema"""."t; DROP TABLE x" SELECT generate_series(1, 10)"#,
    );
    let (mut c, _) = connect(&db.url(), None).unwrap();
    let names: Vec<String> = table_stats(&mut c).unwrap().into_iter().map(|t| t.name).collect();
    assert!(
        names.contains(&r#"Odd "Schema".t; DROP TABLE x"#.to_string()),
        "{names:?}"
    );
    let r = vacuum_table(
        &mut c,
        r#"Odd "Schema".t; DROP TABLE x"#,
        Duration::from_secs(5),
        Duration::from_secs(30),
    );
    assert!(r.is_ok(), "{r:?}");

    let e = vacuum_table(&mut c, "a.b.c", Duration::from_secs(5), Duration::from_secs(30)).unwrap_err();
    assert!(matches!(e, MaintenanceError::Ambiguous { .. }), "{e:?}");
    let e = vacuum_table(&mut c, "public.nope", Duration::from_secs(5), Duration::from_secs(30)).unwrap_err();
    assert!(matches!(e, MaintenanceError::NoSuchTable { .. }), "{e:?}");
}

#[test]
fn a_vacuum_that_cannot_get_its_lock_gives_up_within_lock_timeout() {
    if !primary_available("a_vacuum_that_cannot_get_its_lock_gives_up_within_lock_timeout") {
        return;
    }
    let db = ScratchDb::create("lock");
    db.sql("CREATE TABLE busy (id int)");
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE").unwrap();
    let (mut c, _) = connect(&db.url(), None).unwrap();
    let session = setting(&mut c, "lock_timeout");
    let started = Instant::now();
    let e = vacuum_table(
        &mut c,
        "public.busy",
        Duration::from_millis(300),
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(error_chain(&e).contains("lock timeout"), "{}", error_chain(&e));
    assert_eq!(setting(&mut c, "lock_timeout"), session, "reset after a failure too");
    tx.rollback().unwrap();
}

#[test]
fn reindex_rebuilds_every_index_of_each_indexed_table_concurrently() {
    if !primary_available("reindex_rebuilds_every_index_of_each_indexed_table_concurrently") {
        return;
    }
    let db = ScratchDb::create("reidx");
    db.sql(
        "CREATE TABLE t1 (id int PRIMARY KEY); CREATE TABLE t2 (id int PRIMARY KEY, v int); \
         CREATE INDEX t2_v ON t2 (v); CREATE TABLE t3 (id int); \
         INSERT INTO t1 SELECT generate_series(1, 1000); INSERT INTO t2 SELECT g, g % 7 FROM generate_series(1, 1000) g",
    );
    let (mut c, _) = connect(&db.url(), None).unwrap();
    let files = |c: &mut Client| -> Vec<(String, u32)> {
        c.query(
            "SELECT relname::text, pg_relation_filenode(oid)::oid FROM pg_class WHERE relname IN ('t1_pkey', 't2_pkey', 't2_v') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let before = files(&mut c);
    let statement_timeout = setting(&mut c, "statement_timeout");
    let r = reindex_concurrently(&mut c, Duration::from_secs(60)).unwrap();
    assert_eq!(r.database, db.name);
    assert_eq!(r.tables, ["public.t1", "public.t2"]);
    assert_eq!(r.indexes, 3);
    assert!(r.to_string().contains("3 index(es) of 2 table(s)"), "{r}");
    let after = files(&mut c);
    assert_eq!(after.len(), 3);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0);
        assert_ne!(b.1, a.1, "{} rebuilt", a.0);
    }
    let invalid: i64 = c
        .query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0);
    assert_eq!(setting(&mut c, "statement_timeout"), statement_timeout);
}
