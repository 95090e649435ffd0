//! SQL written once for both backends.
//!
//! For what the store needs, SQLite and PostgreSQL differ in four places only: placeholders
//! (`?1` against `$1`), table names (PostgreSQL's carry a `steward_` prefix so that a database
//! shared with other software stays readable), integer and key column types, and how a writer
//! keeps other writers out (an IMMEDIATE transaction against a self-conflicting table lock).
//! Everything else the store uses, `INSERT ... ON CONFLICT DO NOTHING`, `RETURNING`, partial
//! indexes, `LIMIT`, `UNION ALL`, is spelled the same. [`Dialect`] covers the first three;
//! [`Store::transact`] the fourth. Code written against [`Db`] runs unchanged on either
//! backend, so its tests can run unchanged against both.

use std::path::Path;

use crate::{Backend, Store, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// The tables whose SQL is shared between the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Events,
    Runs,
    Backups,
}

impl Table {
    /// The table's name; indexes are named after it, because PostgreSQL index names share one
    /// namespace per schema with the tables.
    pub(crate) fn name(self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            (Table::Events, Dialect::Sqlite) => "events",
            (Table::Events, Dialect::Postgres) => "steward_events",
            (Table::Runs, Dialect::Sqlite) => "runs",
            (Table::Runs, Dialect::Postgres) => "steward_runs",
            (Table::Backups, Dialect::Sqlite) => "backups",
            (Table::Backups, Dialect::Postgres) => "steward_backups",
        }
    }
}

impl Dialect {
    /// The placeholder of the `n`th (1-based) parameter.
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// A 64-bit integer column (SQLite's INTEGER is 64-bit; PostgreSQL's is 32).
    pub(crate) fn integer(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "BIGINT",
        }
    }

    /// A generated 64-bit key that is never reused, even after the newest row is deleted: run
    /// ids are shown to users and named on the command line.
    pub(crate) fn generated_id(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        }
    }
}

/// An owned statement parameter: a statement built on the caller's thread runs on
/// PostgreSQL's connection thread. A null keeps its type because PostgreSQL checks a
/// parameter's type even when it is null.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(Some(v.to_string()))
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(Some(v))
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Param::Text(v)
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Int(v) => v.to_sql(),
            Param::Text(v) => v.to_sql(),
        }
    }
}

impl Param {
    pub(crate) fn as_pg(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Param::Int(v) => v,
            Param::Text(v) => v,
        }
    }
}

/// The parameters of one statement, numbered in the dialect's style as they are bound, so a
/// statement with optional filters is built once for both backends.
pub(crate) struct Params {
    dialect: Dialect,
    values: Vec<Param>,
}

impl Params {
    pub(crate) fn new(dialect: Dialect) -> Params {
        Params {
            dialect,
            values: Vec::new(),
        }
    }

    /// Adds `value`; returns the placeholder to write where it goes.
    pub(crate) fn bind(&mut self, value: impl Into<Param>) -> String {
        self.values.push(value.into());
        self.dialect.placeholder(self.values.len())
    }

    pub(crate) fn into_values(self) -> Vec<Param> {
        self.values
    }
}

/// A column value as read, whichever the backend.
#[derive(Debug)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// One result row. The accessors' errors describe the unexpected value, for the caller to
/// wrap in [`StoreError::Corrupt`] with the row's identity.
#[derive(Debug)]
pub(crate) struct Cells(Vec<Cell>);

impl Cells {
    pub(crate) fn new(cells: Vec<Cell>) -> Cells {
        Cells(cells)
    }

    fn cell(&self, i: usize) -> Result<&Cell, String> {
        self.0.get(i).ok_or_else(|| format!("column {i} is missing"))
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            Cell::Text(t) => Err(format!("column {i} holds text {t:?}, not an integer")),
        }
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64, String> {
        self.opt_int(i)?.ok_or_else(|| format!("column {i} is null"))
    }

    /// Moves the text out (logs are up to 64 KiB; no copy).
    pub(crate) fn take_opt_text(&mut self, i: usize) -> Result<Option<String>, String> {
        match self.0.get_mut(i) {
            None => Err(format!("column {i} is missing")),
            Some(Cell::Null) => Ok(None),
            Some(Cell::Int(v)) => Err(format!("column {i} holds integer {v}, not text")),
            Some(Cell::Text(t)) => Ok(Some(std::mem::take(t))),
        }
    }

    pub(crate) fn take_text(&mut self, i: usize) -> Result<String, String> {
        self.take_opt_text(i)?.ok_or_else(|| format!("column {i} is null"))
    }
}

/// Why a statement run through [`Db`] failed. The backend's own error is kept as it is: the
/// PostgreSQL backend tells a lost connection (run again) from a failed statement by it.
#[derive(Debug)]
pub(crate) enum DbError {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError::Store(e)
    }
}

impl DbError {
    /// The store error for a failure of `operation` on the database at `path`.
    pub(crate) fn into_store(self, path: &Path, operation: &'static str) -> StoreError {
        match self {
            DbError::Store(e) => e,
            DbError::Sqlite(source) => StoreError::Sqlite {
                path: path.to_path_buf(),
                operation,
                source,
            },
            DbError::Postgres(source) => StoreError::Postgres {
                url: path.display().to_string(),
                operation,
                source,
            },
        }
    }
}

/// A connection, or a transaction on one, of either backend. Statements are prepared once per
/// connection and cached by their text.
pub(crate) trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Cells>, DbError>;

    fn query_opt(&mut self, sql: &str, params: &[Param]) -> Result<Option<Cells>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// Whether a call may run again on a new connection when the old one died at its COMMIT (or
/// at an autocommitted statement), when nobody knows whether it took effect. Any call is run
/// again when the connection died before that point: the server rolled it back. (PostgreSQL
/// only: SQLite has no connection to lose.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Same effect run once or twice (upserts, deletes, reads).
    Idempotent,
    /// An event recorded twice would count twice; a run claimed twice would report `Exists`
    /// for its own insert. Such a job does all its work in one explicit transaction.
    AtMostOnce,
}

/// How a [`Store::transact`] body touches the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only, outside an explicit transaction: use one statement per consistent view.
    Read,
    /// One transaction during which no other writer of `lock` (in any process) runs: SQLite's
    /// `BEGIN IMMEDIATE` (one writer per file), PostgreSQL's self-conflicting
    /// `LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE` (writers queue; readers are never blocked).
    /// A read-then-write inside is therefore atomic across processes.
    Write { lock: Table, retry: Retry },
}

impl Store {
    /// Runs `body` against this store's database, as `access` says. On PostgreSQL the body runs
    /// on the connection thread, hence `Send + 'static`; it may run a second time (see
    /// [`Retry`]), hence `FnMut`.
    pub(crate) fn transact<T, F>(&self, operation: &'static str, access: Access, body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Db) -> Result<T, DbError> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(db) => db.transact(operation, access, body),
            Backend::Postgres(db) => db.transact(operation, access, body),
        }
    }
}
