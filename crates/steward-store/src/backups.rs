//! Backups of databases, written once for both backends through [`crate::sql`].
//!
//! A backup's identity is its file: the table refuses a second row for the same
//! `(database, file)`. The row's `record` is the whole [`Backup`] as JSON, its id included;
//! `database`, `file`, `taken_at` and `deleted_at` repeat fields of it for the indexes and
//! filters to key on. Rows are never deleted: retention marks a deleted file's row with
//! `deleted_at`, and the row stays for history.
//!
//! Every write is an [`Access::Write`] transaction holding the backups lock, so an update (a
//! read-modify-write of the JSON) is atomic across processes on both backends; reads are
//! single statements.

use std::path::Path;

use steward_database::backup::{Backup, RestoreResult};
use time::OffsetDateTime;

use crate::runs::Statement;
use crate::sql::{Access, Cells, Db, DbError, Dialect, Params, Retry, Table};
use crate::{to_nanos, Store, StoreError};

/// The columns in the order [`decode`] reads them.
const COLUMNS: &str = "id, deleted_at, record";

/// The backups table: SQLite schema version 4, PostgreSQL schema version 3. A migration step:
/// never change it; a later change is a new step.
///
/// Times are integer unix nanoseconds (UTC), as for events and runs. `database` is quoted:
/// it is a keyword in both dialects. Indexes:
/// - `_file`: the identity, (database, file).
/// - `_taken`: one database's backups newest first (`steward backups DATABASE`, retention).
pub(crate) fn schema(d: Dialect) -> String {
    let t = Table::Backups.name(d);
    let int = d.integer();
    let id = d.generated_id();
    format!(
        "CREATE TABLE {t} (
            id         {id},
            \"database\" TEXT  NOT NULL,
            file       TEXT  NOT NULL,
            taken_at   {int} NOT NULL,
            deleted_at {int},
            record     TEXT  NOT NULL
        );
        CREATE UNIQUE INDEX {t}_file ON {t} (\"database\", file);
        CREATE INDEX {t}_taken ON {t} (\"database\", taken_at);"
    )
}

fn write(retry: Retry) -> Access {
    Access::Write {
        lock: Table::Backups,
        retry,
    }
}

impl Store {
    /// Inserts `backup` (its id is ignored) and returns the id the store gave it; the stored
    /// record carries that id. A second backup of the same `(database, file)` is refused: the
    /// error is the backend's constraint violation, under the operation "adding a backup".
    pub fn add_backup(&self, backup: &Backup) -> Result<i64, StoreError> {
        const OP: &str = "adding a backup";
        let mut record = backup.clone();
        let taken_at = to_nanos(record.taken_at, OP)?;
        let deleted_at = nanos(record.deleted_at, OP)?;
        let path = self.path.clone();
        // At most once: an insert repeated after its commit was lost would conflict with its
        // own row.
        self.transact(OP, write(Retry::AtMostOnce), move |db| {
            let d = db.dialect();
            // The id is known only once the row exists: insert, then write the record with it,
            // in the same transaction.
            record.id = 0;
            let (sql, params) = insert(d, &record, taken_at, deleted_at, encode(&record, &path, OP)?);
            let row = db
                .query_opt(&sql, &params)?
                .ok_or_else(|| corrupt(&path, OP, "the insert returned no id".into()))?;
            let id = row
                .int(0)
                .map_err(|e| corrupt(&path, OP, format!("the new backup's id: {e}")))?;
            record.id = id;
            let (sql, params) = update(d, id, deleted_at, encode(&record, &path, OP)?);
            match db.execute(&sql, &params)? {
                1 => Ok(id),
                n => Err(corrupt(&path, OP, format!("writing backup {id}'s record changed {n} rows")).into()),
            }
        })
    }

    /// Every backup of `database` (of every database when None), deleted ones included (they
    /// have `deleted_at`), newest `taken_at` first, then highest id first.
    pub fn backups(&self, database: Option<&str>) -> Result<Vec<Backup>, StoreError> {
        const OP: &str = "reading backups";
        let database = database.map(str::to_string);
        let path = self.path.clone();
        self.transact(OP, Access::Read, move |db| {
            select(db, &path, OP, |d| listing(d, database.as_deref()))
        })
    }

    /// The backup with this id, if any.
    pub fn backup(&self, id: i64) -> Result<Option<Backup>, StoreError> {
        const OP: &str = "reading a backup";
        let path = self.path.clone();
        self.transact(OP, Access::Read, move |db| {
            Ok(select(db, &path, OP, |d| by_id(d, id))?.pop())
        })
    }

    /// Records `result` as the backup's last restore test (replacing any earlier one). An
    /// unknown id is an error.
    pub fn set_backup_restore(&self, id: i64, result: &RestoreResult) -> Result<(), StoreError> {
        let result = result.clone();
        self.modify_backup("recording a backup's restore test", id, move |b| {
            b.restore = Some(result.clone());
        })
    }

    /// Records where the archive put the backup's verified copy. An unknown id is an error.
    pub fn set_backup_archived(&self, id: i64, path: &str) -> Result<(), StoreError> {
        let path = path.to_string();
        self.modify_backup("recording a backup's archived copy", id, move |b| {
            b.archived_to = Some(path.clone());
        })
    }

    /// Marks the backup's file as deleted at `at` (by retention); the row stays. An unknown id
    /// is an error.
    pub fn mark_backup_deleted(&self, id: i64, at: OffsetDateTime) -> Result<(), StoreError> {
        const OP: &str = "marking a backup deleted";
        // Checked before the transaction, so that the error is the caller's and not the row's.
        to_nanos(at, OP)?;
        self.modify_backup(OP, id, move |b| {
            b.deleted_at = Some(at);
        })
    }

    /// Reads backup `id`, applies `change` and writes it back, in one transaction under the
    /// backups lock, so that two writers changing different fields of one backup both land.
    fn modify_backup(
        &self,
        op: &'static str,
        id: i64,
        mut change: impl FnMut(&mut Backup) + Send + 'static,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        // Idempotent: each change sets fields to given values, so running it twice leaves
        // what running it once does.
        self.transact(op, write(Retry::Idempotent), move |db| {
            let d = db.dialect();
            let mut backup = select(db, &path, op, |d| by_id(d, id))?
                .pop()
                .ok_or_else(|| corrupt(&path, op, format!("there is no backup {id}")))?;
            change(&mut backup);
            let deleted_at = nanos(backup.deleted_at, op)?;
            let (sql, params) = update(d, id, deleted_at, encode(&backup, &path, op)?);
            db.execute(&sql, &params)?;
            Ok(())
        })
    }
}

fn statement(sql: String, params: Params) -> Statement {
    (sql, params.into_values())
}

fn insert(d: Dialect, backup: &Backup, taken_at: i64, deleted_at: Option<i64>, record: String) -> Statement {
    let mut p = Params::new(d);
    let sql = format!(
        "INSERT INTO {} (\"database\", file, taken_at, deleted_at, record)
         VALUES ({}, {}, {}, {}, {})
         RETURNING id",
        Table::Backups.name(d),
        p.bind(backup.database.as_str()),
        p.bind(backup.file.as_str()),
        p.bind(taken_at),
        p.bind(deleted_at),
        p.bind(record)
    );
    statement(sql, p)
}

/// Writes the record and the column derived from the fields that change after insertion
/// (`database`, `file` and `taken_at` never do).
fn update(d: Dialect, id: i64, deleted_at: Option<i64>, record: String) -> Statement {
    let mut p = Params::new(d);
    let sql = format!(
        "UPDATE {} SET deleted_at = {}, record = {} WHERE id = {}",
        Table::Backups.name(d),
        p.bind(deleted_at),
        p.bind(record),
        p.bind(id)
    );
    statement(sql, p)
}

fn by_id(d: Dialect, id: i64) -> Statement {
    let mut p = Params::new(d);
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE id = {}",
        Table::Backups.name(d),
        p.bind(id)
    );
    statement(sql, p)
}

/// [`Store::backups`]: `_taken` for one database; all of them are few enough to sort.
pub(crate) fn listing(d: Dialect, database: Option<&str>) -> Statement {
    let mut p = Params::new(d);
    let mut sql = format!("SELECT {COLUMNS} FROM {}", Table::Backups.name(d));
    if let Some(database) = database {
        sql.push_str(&format!(" WHERE \"database\" = {}", p.bind(database)));
    }
    sql.push_str(" ORDER BY taken_at DESC, id DESC");
    statement(sql, p)
}

/// Runs the statement `build` makes for the database's dialect and decodes the backups.
fn select(
    db: &mut dyn Db,
    path: &Path,
    op: &'static str,
    build: impl FnOnce(Dialect) -> Statement,
) -> Result<Vec<Backup>, DbError> {
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

fn nanos(t: Option<OffsetDateTime>, op: &'static str) -> Result<Option<i64>, StoreError> {
    t.map(|t| to_nanos(t, op)).transpose()
}

fn encode(backup: &Backup, path: &Path, operation: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(backup).map_err(|source| StoreError::Json {
        path: path.to_path_buf(),
        operation,
        source,
    })
}

/// A row of [`COLUMNS`] as a backup; anything unexpected is [`StoreError::Corrupt`] naming the
/// backup. The record is the truth; its id must be the row's.
fn decode(mut row: Cells, path: &Path, op: &'static str) -> Result<Backup, StoreError> {
    let id = row
        .int(0)
        .map_err(|d| corrupt(path, op, format!("a backup without a valid id: {d}")))?;
    let bad = |detail: String| corrupt(path, op, format!("backup {id}: {detail}"));
    let deleted_at = row.opt_int(1).map_err(bad)?;
    let record = row.take_text(2).map_err(bad)?;
    let backup: Backup = serde_json::from_str(&record).map_err(|e| bad(format!("the record is not a backup ({e})")))?;
    if backup.id != id {
        return Err(bad(format!("the record holds id {}", backup.id)));
    }
    let recorded = nanos(backup.deleted_at, op).map_err(|e| bad(e.to_string()))?;
    if recorded != deleted_at {
        return Err(bad(format!(
            "deleted_at {deleted_at:?} disagrees with the record's {recorded:?}"
        )));
    }
    Ok(backup)
}
