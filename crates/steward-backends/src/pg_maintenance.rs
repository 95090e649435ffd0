//! Maintenance statements of the Database kind (the guide's section 4.2 scripts): table
//! statistics, `VACUUM (ANALYZE)` of one table with `lock_timeout` and `statement_timeout`, and
//! `REINDEX ... CONCURRENTLY`. Blocking; identifiers are always quoted.

use std::fmt;
use std::time::{Duration, Instant};

use postgres::Client;
use steward_database::maintenance::TableStats;

/// Live and dead tuples of every user table (`pg_stat_user_tables`), `schema.table` names.
pub fn table_stats(c: &mut Client) -> Result<Vec<TableStats>, postgres::Error> {
    let rows = c.query(
        "SELECT schemaname || '.' || relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables ORDER BY 1",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| TableStats {
            name: r.get(0),
            live: r.get::<_, i64>(1).max(0) as u64,
            dead: r.get::<_, i64>(2).max(0) as u64,
        })
        .collect())
}

/// `"schema"."table"` from `schema.table` (a name without a schema is left unqualified).
pub fn quote_table(name: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", q(schema), q(table)),
        None => q(name),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct VacuumResult {
    pub table: String,
    pub dead_before: u64,
    pub dead_after: u64,
    pub duration_seconds: f64,
}

fn dead_of(c: &mut Client, table: &str) -> Result<u64, postgres::Error> {
    let (schema, rel) = table.split_once('.').unwrap_or(("public", table));
    let row = c.query_opt(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2",
        &[&schema, &rel],
    )?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
}

fn set_timeouts(c: &mut Client, lock: Duration, statement: Duration) -> Result<(), postgres::Error> {
    c.batch_execute(&format!(
        "SET lock_timeout = {}; SET statement_timeout = {}",
        lock.as_millis().max(1),
        statement.as_millis().max(1)
    ))
}

/// `VACUUM (ANALYZE)` of `table`; a lock not obtained within `lock_timeout` fails it (the
/// application keeps its table), a statement over `statement_timeout` is cancelled. The
/// session's timeouts are reset afterwards. Dead tuples are read before and after.
pub fn vacuum_table(
    c: &mut Client,
    table: &str,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<VacuumResult, postgres::Error> {
    let dead_before = dead_of(c, table)?;
    set_timeouts(c, lock_timeout, statement_timeout)?;
    let started = Instant::now();
    let r = c.batch_execute(&format!("VACUUM (ANALYZE) {}", quote_table(table)));
    let duration_seconds = started.elapsed().as_secs_f64();
    let reset = c.batch_execute("RESET lock_timeout; RESET statement_timeout");
    r?;
    reset?;
    // The vacuum reports its own counts to the statistics system at its end; this session's
    // snapshot of them is refreshed by a new transaction.
    c.batch_execute("SELECT pg_stat_clear_snapshot()")?;
    let dead_after = dead_of(c, table)?;
    Ok(VacuumResult {
        table: table.to_string(),
        dead_before,
        dead_after,
        duration_seconds,
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReindexResult {
    pub database: String,
    pub duration_seconds: f64,
}

impl fmt::Display for ReindexResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database {} reindexed in {:.1}s", self.database, self.duration_seconds)
    }
}

/// `REINDEX DATABASE CONCURRENTLY` of the connected database (PostgreSQL 12+): indexes are
/// rebuilt without blocking writes. Bounded by `statement_timeout`.
pub fn reindex_concurrently(c: &mut Client, statement_timeout: Duration) -> Result<ReindexResult, postgres::Error> {
    let db: String = c.query_one("SELECT current_database()", &[])?.get(0);
    c.batch_execute(&format!("SET statement_timeout = {}", statement_timeout.as_millis().max(1)))?;
    let started = Instant::now();
    let r = c.batch_execute(&format!(
        "REINDEX DATABASE CONCURRENTLY \"{}\"",
        db.replace('"', "\"\"")
    ));
    let duration_seconds = started.elapsed().as_secs_f64();
    let reset = c.batch_execute("RESET statement_timeout");
    r?;
    reset?;
    Ok(ReindexResult {
        database: db,
        duration_seconds,
    })
}
