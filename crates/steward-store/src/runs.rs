//! Runs of schedules, written once for both backends through [`crate::sql`].
//!
//! A run's identity is `(schedule, scheduled_at)`. Its row is written before its job is
//! created and the table refuses a second row for the same pair, so an instant never starts
//! twice. Every write to the table is an [`Access::Write`] transaction holding the runs lock,
//! which makes the check-then-insert of [`Store::claim_run`] atomic across processes on both
//! backends; reads are single statements, so each sees one consistent state.

use std::path::Path;

use steward_schedule::run::{Outcome, Run, Trigger, LOG_TAIL_BYTES};
use time::OffsetDateTime;

use crate::sql::{Access, Cells, Db, DbError, Dialect, Param, Params, Retry, Table};
use crate::{to_nanos, Store, StoreError};

/// What [`Store::claim_run`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The run was inserted under this id.
    Inserted(i64),
    /// Nothing was written: this row already holds the run's (schedule, scheduled_at).
    Exists(Run),
    /// Nothing was written: this run of the schedule is active (its newest active one), and
    /// the claim forbade that.
    Busy(Run),
}

/// The outcomes [`Outcome::is_active`] accepts, as SQL literals. Fixed text rather than
/// derived: the partial index of the runs table was created with it, and a query can use that
/// index only if its condition repeats the index's. A unit test checks it against `Outcome`.
const ACTIVE: &str = "'Pending', 'Running'";

/// The columns in the order [`decode`] reads them. `trigger` is a keyword in both dialects.
const COLUMNS: &str = "id, schedule, scheduled_at, \"trigger\", outcome, attempt, job, \
                       started_at, finished_at, retry_at, exit_code, message, logs";

/// Every column but the generated id, in the order [`values`] gives them.
const WRITTEN: [&str; 12] = [
    "schedule",
    "scheduled_at",
    "\"trigger\"",
    "outcome",
    "attempt",
    "job",
    "started_at",
    "finished_at",
    "retry_at",
    "exit_code",
    "message",
    "logs",
];

/// The runs table: SQLite schema version 3, PostgreSQL schema version 2. A migration step:
/// never change it; a later change is a new step.
///
/// Times are integer unix nanoseconds (UTC), as for events: they order and compare as plain
/// integers. Indexes:
/// - `_instant`: the identity (which `ON CONFLICT` names); it also lists one schedule's runs
///   newest first.
/// - `_active`: partial, holding only active rows, so a schedule's active run (a claim that
///   forbids one) and every active run (each controller pass) are found without reading
///   history.
/// - `_newest`: all schedules' runs newest first (`steward runs`).
pub(crate) fn schema(d: Dialect) -> String {
    let t = Table::Runs.name(d);
    let int = d.integer();
    let id = d.generated_id();
    format!(
        "CREATE TABLE {t} (
            id           {id},
            schedule     TEXT  NOT NULL,
            scheduled_at {int} NOT NULL,
            \"trigger\"    TEXT  NOT NULL,
            outcome      TEXT  NOT NULL,
            attempt      {int} NOT NULL,
            job          TEXT,
            started_at   {int},
            finished_at  {int},
            retry_at     {int},
            exit_code    {int},
            message      TEXT  NOT NULL,
            logs         TEXT  NOT NULL
        );
        CREATE UNIQUE INDEX {t}_instant ON {t} (schedule, scheduled_at);
        CREATE INDEX {t}_active ON {t} (schedule, scheduled_at) WHERE outcome IN ({ACTIVE});
        CREATE INDEX {t}_newest ON {t} (scheduled_at, id);"
    )
}

fn write(retry: Retry) -> Access {
    Access::Write {
        lock: Table::Runs,
        retry,
    }
}

impl Store {
    /// Inserts `run` (its id is ignored) unless a row for its (schedule, scheduled_at) exists;
    /// with `forbid_active`, also refuses while the schedule has an active (Pending or
    /// Running) run. The check and the insert are one transaction under the runs lock, so
    /// they are atomic across processes: a manual `steward trigger` and the controller never
    /// overlap under `concurrencyPolicy: Forbid`, and an instant is never claimed twice.
    ///
    /// NUL characters in `message` and `logs` are stored as U+FFFD (PostgreSQL text cannot
    /// hold them), and `logs` is cut to its last [`LOG_TAIL_BYTES`].
    pub fn claim_run(&self, run: &Run, forbid_active: bool) -> Result<Claim, StoreError> {
        const OP: &str = "claiming a run";
        let values = values(run, OP)?;
        let schedule = run.schedule.clone();
        let at = to_nanos(run.scheduled_at, OP)?;
        let path = self.path.clone();
        // At most once: a claim repeated after its commit was lost would report `Exists` for
        // its own row, and the caller would never start it.
        self.transact(OP, write(Retry::AtMostOnce), move |db| {
            let d = db.dialect();
            if let Some(existing) = select(db, &path, OP, |d| at_instant(d, &schedule, at))?.pop() {
                return Ok(Claim::Exists(existing));
            }
            if forbid_active {
                if let Some(active) = select(db, &path, OP, |d| newest_active(d, &schedule))?.pop() {
                    return Ok(Claim::Busy(active));
                }
            }
            let (sql, params) = insert(d, &values);
            match db.query_opt(&sql, &params)? {
                Some(row) => {
                    let id = row
                        .int(0)
                        .map_err(|e| corrupt(&path, OP, format!("the new run's id: {e}")))?;
                    Ok(Claim::Inserted(id))
                }
                // Unreachable while every writer takes the runs lock (checked above); should
                // one not, the unique index still refuses the duplicate, and this says whose.
                None => match select(db, &path, OP, |d| at_instant(d, &schedule, at))?.pop() {
                    Some(existing) => Ok(Claim::Exists(existing)),
                    None => Err(corrupt(&path, OP, "the insert neither inserted nor conflicted".into()).into()),
                },
            }
        })
    }

    /// Compare-and-set: writes every field of `run` to the row `run.id`, only if the stored
    /// outcome is `expected`. Returns whether it did. Of two writers finishing the same run
    /// (two controllers, or a controller and the CLI), exactly one wins. Text is stored as by
    /// [`Store::claim_run`].
    pub fn update_run(&self, expected: Outcome, run: &Run) -> Result<bool, StoreError> {
        const OP: &str = "updating a run";
        let values = values(run, OP)?;
        let id = run.id;
        // At most once: a CAS repeated after its commit was lost would find its own write and
        // report that it lost.
        self.transact(OP, write(Retry::AtMostOnce), move |db| {
            let (sql, params) = update(db.dialect(), &values, id, expected);
            Ok(db.execute(&sql, &params)? == 1)
        })
    }

    /// The run with this id, if any.
    pub fn run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        const OP: &str = "reading a run";
        let path = self.path.clone();
        self.transact(OP, Access::Read, move |db| {
            Ok(select(db, &path, OP, |d| by_id(d, id))?.pop())
        })
    }

    /// The schedule's active runs and its newest `finished_limit` finished runs, newest
    /// `scheduled_at` first. One statement, so a run finishing meanwhile is seen exactly once.
    pub fn schedule_runs(&self, schedule: &str, finished_limit: usize) -> Result<Vec<Run>, StoreError> {
        const OP: &str = "reading a schedule's runs";
        let schedule = schedule.to_string();
        let limit = i64::try_from(finished_limit).unwrap_or(i64::MAX);
        let path = self.path.clone();
        self.transact(OP, Access::Read, move |db| {
            select(db, &path, OP, |d| of_schedule(d, &schedule, limit))
        })
    }

    /// Runs of `schedule` (of every schedule when None), newest `scheduled_at` first, at most
    /// `limit` of them (all when None): `steward runs [SCHEDULE]`.
    pub fn runs(&self, schedule: Option<&str>, limit: Option<usize>) -> Result<Vec<Run>, StoreError> {
        const OP: &str = "reading runs";
        let schedule = schedule.map(str::to_string);
        let limit = limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let path = self.path.clone();
        self.transact(OP, Access::Read, move |db| {
            select(db, &path, OP, |d| listing(d, schedule.as_deref(), limit))
        })
    }

    /// Every active run of every schedule, by schedule, then oldest first.
    pub fn active_runs(&self) -> Result<Vec<Run>, StoreError> {
        const OP: &str = "reading active runs";
        let path = self.path.clone();
        self.transact(OP, Access::Read, move |db| select(db, &path, OP, all_active))
    }

    /// Deletes the runs with these ids (history limits); returns how many there were.
    pub fn prune_runs(&self, ids: &[i64]) -> Result<usize, StoreError> {
        const OP: &str = "pruning runs";
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        // At most once, so that the count is true: repeated after a lost commit, it would
        // find nothing left to delete.
        self.transact(OP, write(Retry::AtMostOnce), move |db| {
            // One statement per id rather than `IN (...)`: a single cached statement whatever
            // the count, and prunes are a handful of rows.
            let mut deleted = 0;
            for &id in &ids {
                let (sql, params) = delete(db.dialect(), id);
                deleted += db.execute(&sql, &params)?;
            }
            Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
        })
    }
}

/// A statement and its parameters, for one dialect.
pub(crate) type Statement = (String, Vec<Param>);

fn statement(sql: String, params: Params) -> Statement {
    (sql, params.into_values())
}

/// The run at one instant of a schedule: a probe of `_instant`.
pub(crate) fn at_instant(d: Dialect, schedule: &str, at: i64) -> Statement {
    let mut p = Params::new(d);
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE schedule = {} AND scheduled_at = {}",
        Table::Runs.name(d),
        p.bind(schedule),
        p.bind(at)
    );
    statement(sql, p)
}

/// The schedule's newest active run, from `_active`.
pub(crate) fn newest_active(d: Dialect, schedule: &str) -> Statement {
    let mut p = Params::new(d);
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE schedule = {} AND outcome IN ({ACTIVE})
         ORDER BY scheduled_at DESC LIMIT 1",
        Table::Runs.name(d),
        p.bind(schedule)
    );
    statement(sql, p)
}

fn insert(d: Dialect, values: &[Param]) -> Statement {
    let mut p = Params::new(d);
    let placeholders: Vec<String> = values.iter().map(|v| p.bind(v.clone())).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})
         ON CONFLICT (schedule, scheduled_at) DO NOTHING
         RETURNING id",
        Table::Runs.name(d),
        WRITTEN.join(", "),
        placeholders.join(", ")
    );
    statement(sql, p)
}

fn update(d: Dialect, values: &[Param], id: i64, expected: Outcome) -> Statement {
    let mut p = Params::new(d);
    let sets: Vec<String> = WRITTEN
        .iter()
        .zip(values)
        .map(|(column, v)| format!("{column} = {}", p.bind(v.clone())))
        .collect();
    let id = p.bind(id);
    let expected = p.bind(expected.as_str());
    let sql = format!(
        "UPDATE {} SET {} WHERE id = {id} AND outcome = {expected}",
        Table::Runs.name(d),
        sets.join(", ")
    );
    statement(sql, p)
}

fn by_id(d: Dialect, id: i64) -> Statement {
    let mut p = Params::new(d);
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE id = {}",
        Table::Runs.name(d),
        p.bind(id)
    );
    statement(sql, p)
}

fn delete(d: Dialect, id: i64) -> Statement {
    let mut p = Params::new(d);
    let sql = format!("DELETE FROM {} WHERE id = {}", Table::Runs.name(d), p.bind(id));
    statement(sql, p)
}

/// [`Store::schedule_runs`]: the active rows from `_active`, the newest finished ones walking
/// `_instant` backwards from the newest, merged.
pub(crate) fn of_schedule(d: Dialect, schedule: &str, finished_limit: i64) -> Statement {
    let t = Table::Runs.name(d);
    let mut p = Params::new(d);
    let active = p.bind(schedule);
    let finished = p.bind(schedule);
    let limit = p.bind(finished_limit);
    let sql = format!(
        "SELECT {COLUMNS} FROM {t} WHERE schedule = {active} AND outcome IN ({ACTIVE})
         UNION ALL
         SELECT {COLUMNS} FROM (
             SELECT {COLUMNS} FROM {t}
             WHERE schedule = {finished} AND outcome NOT IN ({ACTIVE})
             ORDER BY scheduled_at DESC LIMIT {limit}
         ) AS finished
         ORDER BY scheduled_at DESC"
    );
    statement(sql, p)
}

/// [`Store::runs`]: `_instant` for one schedule, `_newest` for all.
pub(crate) fn listing(d: Dialect, schedule: Option<&str>, limit: Option<i64>) -> Statement {
    let mut p = Params::new(d);
    let mut sql = format!("SELECT {COLUMNS} FROM {}", Table::Runs.name(d));
    match schedule {
        // Unique within a schedule, so the instant alone orders them (and `_instant` yields
        // that order on PostgreSQL too, whose indexes do not end with the row id).
        Some(s) => sql.push_str(&format!(" WHERE schedule = {} ORDER BY scheduled_at DESC", p.bind(s))),
        None => sql.push_str(" ORDER BY scheduled_at DESC, id DESC"),
    }
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {}", p.bind(limit)));
    }
    statement(sql, p)
}

/// [`Store::active_runs`]: all of `_active`, in its order.
pub(crate) fn all_active(d: Dialect) -> Statement {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE outcome IN ({ACTIVE}) ORDER BY schedule, scheduled_at",
        Table::Runs.name(d)
    );
    (sql, Vec::new())
}

/// Runs the statement `build` makes for the database's dialect and decodes the runs.
fn select(
    db: &mut dyn Db,
    path: &Path,
    op: &'static str,
    build: impl FnOnce(Dialect) -> Statement,
) -> Result<Vec<Run>, DbError> {
    let (sql, params) = build(db.dialect());
    db.query(&sql, &params)?
        .into_iter()
        .map(|row| decode(row, path, op).map_err(DbError::from))
        .collect()
}

fn corrupt(path: &Path, operation: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        operation,
        detail,
    }
}

/// `run` as the [`WRITTEN`] columns' values.
fn values(run: &Run, op: &'static str) -> Result<Vec<Param>, StoreError> {
    let time = |t: Option<OffsetDateTime>| t.map(|t| to_nanos(t, op)).transpose();
    Ok(vec![
        run.schedule.as_str().into(),
        to_nanos(run.scheduled_at, op)?.into(),
        run.trigger.as_str().into(),
        run.outcome.as_str().into(),
        i64::from(run.attempt).into(),
        run.job.clone().into(),
        time(run.started_at)?.into(),
        time(run.finished_at)?.into(),
        time(run.retry_at)?.into(),
        run.exit_code.into(),
        storable(&run.message).into(),
        log_tail(&storable(&run.logs)).to_string().into(),
    ])
}

/// `text` without NUL characters, which PostgreSQL text cannot hold (SQLite can): both
/// backends then store the same. Job output is where they turn up.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// The last [`LOG_TAIL_BYTES`] of `logs` (fewer, to start on a character boundary): the end of
/// a job's output is where its failure is.
fn log_tail(logs: &str) -> &str {
    let mut start = logs.len().saturating_sub(LOG_TAIL_BYTES);
    while !logs.is_char_boundary(start) {
        start += 1;
    }
    &logs[start..]
}

/// A row of [`COLUMNS`] as a run; anything unexpected is [`StoreError::Corrupt`] naming the
/// run.
fn decode(mut row: Cells, path: &Path, op: &'static str) -> Result<Run, StoreError> {
    let id = row
        .int(0)
        .map_err(|d| corrupt(path, op, format!("a run without a valid id: {d}")))?;
    let bad = |detail: String| corrupt(path, op, format!("run {id}: {detail}"));
    let instant = |ns: i64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
            .map_err(|_| bad(format!("timestamp {ns} is out of range")))
    };
    let time = |ns: Option<i64>| ns.map(instant).transpose();
    let schedule = row.take_text(1).map_err(bad)?;
    let scheduled_at = instant(row.int(2).map_err(bad)?)?;
    let trigger = row.take_text(3).map_err(bad)?;
    let trigger = Trigger::parse(&trigger).ok_or_else(|| bad(format!("unknown trigger {trigger:?}")))?;
    let outcome = row.take_text(4).map_err(bad)?;
    let outcome = Outcome::parse(&outcome).ok_or_else(|| bad(format!("unknown outcome {outcome:?}")))?;
    let attempt = row.int(5).map_err(bad)?;
    let attempt = u32::try_from(attempt).map_err(|_| bad(format!("attempt {attempt} is out of range")))?;
    Ok(Run {
        id,
        schedule,
        scheduled_at,
        trigger,
        outcome,
        attempt,
        job: row.take_opt_text(6).map_err(bad)?,
        started_at: time(row.opt_int(7).map_err(bad)?)?,
        finished_at: time(row.opt_int(8).map_err(bad)?)?,
        retry_at: time(row.opt_int(9).map_err(bad)?)?,
        exit_code: row.opt_int(10).map_err(bad)?,
        message: row.take_text(11).map_err(bad)?,
        logs: row.take_text(12).map_err(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_literal_matches_the_outcomes() {
        let active: Vec<String> = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_active())
            .map(|o| format!("'{}'", o.as_str()))
            .collect();
        assert_eq!(ACTIVE, active.join(", "));
    }

    #[test]
    fn columns_read_and_written_agree() {
        let read: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(read[0], "id");
        assert_eq!(read[1..], WRITTEN);
    }

    #[test]
    fn log_tail_keeps_the_end_on_a_character_boundary() {
        let short = "ok\n";
        assert_eq!(log_tail(short), short);
        // 'é' is two bytes: a cut at LOG_TAIL_BYTES from the end falls inside one.
        let long = format!("{}{}", "é".repeat(LOG_TAIL_BYTES), "x");
        let tail = log_tail(&long);
        assert!(
            tail.len() <= LOG_TAIL_BYTES && tail.len() >= LOG_TAIL_BYTES - 1,
            "{}",
            tail.len()
        );
        assert!(tail.ends_with("éx"));
        assert_eq!(storable("a\0b"), "a\u{FFFD}b");
    }
}
