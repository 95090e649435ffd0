//! The maintenance window: a bloated table vacuumed in it.

use std::time::Duration;

use super::*;

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
