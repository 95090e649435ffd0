//! Maintenance statements of the Database kind (the guide's section 4.2 scripts): table
//! statistics, `VACUUM (ANALYZE)` of one table under `lock_timeout` and `statement_timeout`, and
//! `REINDEX TABLE ... CONCURRENTLY`. Blocking (the controller runs them on `spawn_blocking`), on a
//! client of [`crate::database::connect`]. Identifiers are always resolved from the catalog and
//! quoted, never interpolated as given; the session's settings are put back afterwards.

use std::fmt;
use std::time::{Duration, Instant};

use postgres::Client;
use steward_database::maintenance::TableStats;

/// How long `vacuum_table` waits for the statistics to show its vacuum (PostgreSQL ≤ 14 sends
/// them to the collector asynchronously; from 15 on they are in shared memory at once).
const STATS_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("{what} failed")]
    Query {
        what: String,
        #[source]
        source: postgres::Error,
    },
    #[error("no user table {table:?} in pg_stat_user_tables")]
    NoSuchTable { table: String },
    #[error("{table:?} names more than one table (a schema or table name with a dot): rename one")]
    Ambiguous { table: String },
    #[error("REINDEX CONCURRENTLY needs PostgreSQL 12 or later; the server is {version}")]
    Unsupported { version: String },
}

fn q(what: impl Into<String>) -> impl FnOnce(postgres::Error) -> MaintenanceError {
    let what = what.into();
    move |source| MaintenanceError::Query { what, source }
}

/// `"name"`, with any `"` doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

/// Live and dead tuples of every user table (`pg_stat_user_tables`), named `schema.table`.
pub fn table_stats(c: &mut Client) -> Result<Vec<TableStats>, MaintenanceError> {
    let rows = c
        .query(
            "SELECT schemaname || '.' || relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables ORDER BY 1",
            &[],
        )
        .map_err(q("reading pg_stat_user_tables"))?;
    Ok(rows
        .iter()
        .map(|r| TableStats {
            name: r.get(0),
            live: count(r.get(1)),
            dead: count(r.get(2)),
        })
        .collect())
}

/// One table of `pg_stat_user_tables` as the statistics show it now.
struct TableRow {
    schema: String,
    rel: String,
    dead: u64,
    /// `vacuum_count + autovacuum_count`: moves once a vacuum's report reached the statistics.
    vacuums: i64,
}

impl TableRow {
    fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.rel))
    }
}

/// Resolves a `schema.table` name (as `table_stats` gives it) to exactly one table.
fn table_row(c: &mut Client, table: &str) -> Result<TableRow, MaintenanceError> {
    let rows = c
        .query(
            "SELECT schemaname::text, relname::text, n_dead_tup, vacuum_count + autovacuum_count \
             FROM pg_stat_user_tables WHERE schemaname || '.' || relname = $1",
            &[&table],
        )
        .map_err(q(format!("reading the statistics of {table}")))?;
    match rows.as_slice() {
        [r] => Ok(TableRow {
            schema: r.get(0),
            rel: r.get(1),
            dead: count(r.get(2)),
            vacuums: r.get(3),
        }),
        [] => Err(MaintenanceError::NoSuchTable { table: table.into() }),
        _ => Err(MaintenanceError::Ambiguous { table: table.into() }),
    }
}

/// Sets session settings for the duration of `f`, then puts their previous values back (even
/// when `f` failed; the first error wins).
fn with_settings<T>(
    c: &mut Client,
    settings: &[(&str, Duration)],
    f: impl FnOnce(&mut Client) -> Result<T, MaintenanceError>,
) -> Result<T, MaintenanceError> {
    let mut previous = Vec::new();
    for (name, value) in settings {
        let old: String = c
            .query_one("SELECT current_setting($1)", &[name])
            .map_err(q(format!("reading {name}")))?
            .get(0);
        // 0 would mean no limit at all: at least 1 ms.
        let ms = format!("{}ms", value.as_millis().max(1));
        c.execute("SELECT set_config($1, $2, false)", &[name, &ms])
            .map_err(q(format!("setting {name}")))?;
        previous.push((*name, old));
    }
    let r = f(c);
    let mut reset = Ok(());
    for (name, old) in previous {
        if let Err(e) = c.execute("SELECT set_config($1, $2, false)", &[&name, &old]) {
            reset = reset.and(Err(q(format!("resetting {name}"))(e)));
        }
    }
    let v = r?;
    reset.map(|()| v)
}

/// What one `VACUUM (ANALYZE)` did.
#[derive(Clone, Debug, PartialEq)]
pub struct VacuumResult {
    /// `schema.table`, as given.
    pub table: String,
    pub dead_before: u64,
    pub dead_after: u64,
    pub duration_seconds: f64,
}

/// `VACUUM (ANALYZE)` of `table` (`schema.table`, as `table_stats` names it). A lock not obtained
/// within `lock_timeout` fails it (the application keeps its table), a statement over
/// `statement_timeout` is cancelled; the session's own values of both are put back afterwards.
/// Dead tuples are read before, and after once the statistics show this vacuum (at most
/// `STATS_WAIT`; PostgreSQL 15+ shows it at once).
pub fn vacuum_table(
    c: &mut Client,
    table: &str,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<VacuumResult, MaintenanceError> {
    let before = table_row(c, table)?;
    let sql = format!("VACUUM (ANALYZE) {}", before.quoted());
    let started = Instant::now();
    with_settings(
        c,
        &[("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout)],
        |c| c.batch_execute(&sql).map_err(q(sql.clone())),
    )?;
    let duration_seconds = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + STATS_WAIT;
    let after = loop {
        // Each statement is a transaction of its own: a fresh snapshot of the statistics.
        let now = table_row(c, table)?;
        if now.vacuums > before.vacuums || Instant::now() >= deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(VacuumResult {
        table: table.to_string(),
        dead_before: before.dead,
        dead_after: after.dead,
        duration_seconds,
    })
}

/// What `reindex_concurrently` rebuilt.
#[derive(Clone, Debug, PartialEq)]
pub struct ReindexResult {
    pub database: String,
    /// `schema.table` of each table reindexed, in order.
    pub tables: Vec<String>,
    /// How many indexes those tables had.
    pub indexes: u64,
    pub duration_seconds: f64,
}

impl fmt::Display for ReindexResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database {}: {} index(es) of {} table(s) reindexed in {:.1}s",
            self.database,
            self.indexes,
            self.tables.len(),
            self.duration_seconds
        )
    }
}

/// `REINDEX TABLE CONCURRENTLY` of each user table (and materialized view) with an index, one
/// after the other: indexes are rebuilt without blocking writes (PostgreSQL 12+), each statement
/// bounded by `statement_timeout`. Table by table rather than `REINDEX DATABASE`: it needs only
/// ownership of the tables, and says what it rebuilt. The first failure stops it (an
/// interrupted concurrent rebuild can leave an invalid `*_ccnew` index, which PostgreSQL reports).
pub fn reindex_concurrently(c: &mut Client, statement_timeout: Duration) -> Result<ReindexResult, MaintenanceError> {
    let row = c
        .query_one(
            "SELECT current_database()::text, current_setting('server_version_num')::int, \
             current_setting('server_version')",
            &[],
        )
        .map_err(q("reading the server version"))?;
    let (database, num, version): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
    if num < 120000 {
        return Err(MaintenanceError::Unsupported { version });
    }
    let rows = c
        .query(
            "SELECT n.nspname::text, t.relname::text, count(*) FROM pg_index i \
             JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE t.relkind IN ('r', 'm') AND n.nspname <> 'information_schema' \
             AND n.nspname NOT LIKE 'pg\\_%' GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .map_err(q("listing the indexed tables"))?;
    let started = Instant::now();
    let mut tables = Vec::new();
    let mut indexes = 0;
    with_settings(c, &[("statement_timeout", statement_timeout)], |c| {
        for r in &rows {
            let (schema, rel): (String, String) = (r.get(0), r.get(1));
            let sql = format!(
                "REINDEX TABLE CONCURRENTLY {}.{}",
                quote_ident(&schema),
                quote_ident(&rel)
            );
            c.batch_execute(&sql).map_err(q(sql.clone()))?;
            tables.push(format!("{schema}.{rel}"));
            indexes += count(r.get(2));
        }
        Ok(())
    })?;
    Ok(ReindexResult {
        database,
        tables,
        indexes,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}
