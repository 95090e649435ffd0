//! The embedded SQLite backend.
//!
//! One database file is shared by `steward run` (the writer) and short-lived readers such as
//! `steward status` and `steward events`, possibly in other processes. The file is opened in
//! WAL mode with a busy timeout, so readers never block the writer and vice versa, and every
//! write happens in a single IMMEDIATE transaction.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::ValueRef;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use steward_plan::rollout::Revision;
use steward_plan::status::{NewEvent, ResourceStatus};

use crate::events::{event_columns, events_query};
use crate::sql::{Access, Cell, Cells, Db, DbError, Dialect, Param};
use crate::{encode_revision, merge_status, schema, EventFilter, RawEvent, StoreError, BUSY_TIMEOUT, REVISIONS_KEPT};

pub(crate) const NEXT_SEQ_SQL: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM events";

/// The most recent identical event still inside the fold window: one probe of `events_fold`.
pub(crate) const FOLD_CANDIDATE_SQL: &str = "SELECT id FROM events
     WHERE object = ?1 AND type = ?2 AND reason = ?3 AND message = ?4 AND last_seen >= ?5
     ORDER BY last_seen DESC
     LIMIT 1";

pub(crate) const CHANGED_SINCE_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE seq > ?1 ORDER BY seq ASC"
);

const EVENT_BY_ID_SQL: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE id = ?1");

/// Column order: [`crate::events::EVENT_COLUMNS`].
fn raw_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        id: row.get(0)?,
        type_: row.get(1)?,
        reason: row.get(2)?,
        message: row.get(3)?,
        object: row.get(4)?,
        count: row.get(5)?,
        first_seen: row.get(6)?,
        last_seen: row.get(7)?,
        seq: row.get(8)?,
    })
}

/// The connection is serialised behind a mutex: every call is a handful of indexed statements.
pub(crate) struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// Switches the file to WAL and gives the mode it is in. Two processes opening a fresh file at
/// once (a controller and `steward status` started right after it) may both hold a shared lock
/// and ask for the exclusive one: SQLite answers one of them BUSY at once, without its busy
/// handler (which would deadlock), so the switch is retried here within the busy timeout.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl SqliteStore {
    pub(crate) fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // Set the busy timeout first: switching to WAL on a fresh file needs a lock that
        // another process opening the same file may briefly hold.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode = wal_mode(&conn).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::JournalMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        // In WAL mode NORMAL never corrupts the database; a power cut can only lose the last
        // few commits, which for status and events is recomputed or harmless. FULL would add an
        // fsync to every recorded event.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        // The variants of the `events` query (filters x limit: 8), the fixed event, status,
        // meta and revision statements (about 15) and the runs statements (about 10).
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&mut conn, path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn record_event(
        &self,
        ev: &NewEvent,
        now_ns: i64,
        window_start: i64,
        op: &'static str,
    ) -> Result<RawEvent, StoreError> {
        let sql = self.sql_err(op);
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        // Inside the IMMEDIATE transaction no other writer can interleave, so this is a
        // strictly increasing global counter. O(log n) via the unique index on seq.
        let seq: i64 = tx
            .prepare_cached(NEXT_SEQ_SQL)
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(sql)?;
        // `last_seen >= window_start` also matches a record stamped slightly after `now`
        // (clock skew between callers); folding into it is still right.
        let existing: Option<i64> = tx
            .prepare_cached(FOLD_CANDIDATE_SQL)
            .and_then(|mut s| {
                s.query_row(
                    params![ev.object, ev.type_.as_str(), ev.reason, ev.message, window_start],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(sql)?;
        let id = match existing {
            Some(id) => {
                tx.prepare_cached(
                    "UPDATE events
                     SET count = count + 1,
                         first_seen = MIN(first_seen, ?2),
                         last_seen = MAX(last_seen, ?2),
                         seq = ?3
                     WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![id, now_ns, seq]))
                .map_err(sql)?;
                id
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO events
                        (seq, type, reason, message, object, count, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        seq,
                        ev.type_.as_str(),
                        ev.reason,
                        ev.message,
                        ev.object,
                        now_ns
                    ])
                })
                .map_err(sql)?;
                tx.last_insert_rowid()
            }
        };
        let raw = tx
            .prepare_cached(EVENT_BY_ID_SQL)
            .and_then(|mut s| s.query_row([id], raw_event))
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(raw)
    }

    pub(crate) fn events(&self, filter: &EventFilter, op: &'static str) -> Result<Vec<RawEvent>, StoreError> {
        let (sql, values) = events_query(Dialect::Sqlite, filter, op)?;
        let conn = self.lock();
        conn.prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params_from_iter(values), raw_event)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_err(op))
    }

    pub(crate) fn events_changed_since(&self, seq: i64, op: &'static str) -> Result<Vec<RawEvent>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached(CHANGED_SINCE_SQL)
            .and_then(|mut s| s.query_map([seq], raw_event)?.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.sql_err(op))
    }

    pub(crate) fn latest_event_seq(&self, op: &'static str) -> Result<i64, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(self.sql_err(op))
    }

    pub(crate) fn put_status(&self, status: &ResourceStatus, op: &'static str) -> Result<(), StoreError> {
        let sql = self.sql_err(op);
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let previous: Option<String> = tx
            .prepare_cached("SELECT status FROM statuses WHERE kind = ?1 AND name = ?2")
            .and_then(|mut s| s.query_row(params![status.kind, status.name], |r| r.get(0)).optional())
            .map_err(sql)?;
        let json = merge_status(&self.path, previous.as_deref(), status, op)?;
        tx.prepare_cached(
            "INSERT INTO statuses (kind, name, status) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, name) DO UPDATE SET status = excluded.status",
        )
        .and_then(|mut s| s.execute(params![status.kind, status.name, json]))
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    pub(crate) fn statuses(&self, op: &'static str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT status FROM statuses ORDER BY kind, name")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_err(op))
    }

    pub(crate) fn status(&self, kind: &str, name: &str, op: &'static str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT status FROM statuses WHERE kind = ?1 AND name = ?2")
            .and_then(|mut s| s.query_row(params![kind, name], |r| r.get(0)).optional())
            .map_err(self.sql_err(op))
    }

    pub(crate) fn remove_status(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached("DELETE FROM statuses WHERE kind = ?1 AND name = ?2")
            .and_then(|mut s| s.execute(params![kind, name]))
            .map(drop)
            .map_err(self.sql_err("removing a status"))
    }

    pub(crate) fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(self.sql_err("reading metadata"))
    }

    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut s| s.execute([key, value]))
        .map(drop)
        .map_err(self.sql_err("writing metadata"))
    }

    pub(crate) fn add_revision(&self, rev: &Revision) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql_err("starting a revision write"))?;
        let number: u64 = tx
            .query_row(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE service = ?1",
                [&rev.service],
                |r| r.get::<_, i64>(0),
            )
            .map_err(self.sql_err("numbering a revision"))? as u64;
        let json = encode_revision(&self.path, rev, number)?;
        tx.execute(
            "INSERT INTO revisions (service, number, spec_hash, outcome, created, revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![rev.service, number as i64, rev.spec_hash, format!("{:?}", rev.outcome), rev.created_ms, json],
        )
        .map_err(self.sql_err("writing a revision"))?;
        tx.execute(
            "DELETE FROM revisions WHERE service = ?1 AND number <= ?2",
            params![rev.service, number as i64 - REVISIONS_KEPT as i64],
        )
        .map_err(self.sql_err("trimming revision history"))?;
        tx.commit().map_err(self.sql_err("committing a revision"))?;
        Ok(number)
    }

    pub(crate) fn update_revision(
        &self,
        service: &str,
        number: u64,
        outcome: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "UPDATE revisions SET outcome = ?1, revision = ?2 WHERE service = ?3 AND number = ?4",
            params![outcome, json, service, number as i64],
        )
        .map(drop)
        .map_err(self.sql_err("updating a revision outcome"))
    }

    pub(crate) fn revisions(&self, service: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT revision FROM revisions WHERE service = ?1 ORDER BY number DESC")
            .and_then(|mut s| {
                s.query_map([service], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_err("reading revisions"))
    }

    pub(crate) fn revision_services(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT DISTINCT service FROM revisions")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_err("listing revisions"))
    }

    /// See [`crate::Store::transact`]. A write is one IMMEDIATE transaction: SQLite's single
    /// writer lock excludes every other writer of the file, whatever the table.
    pub(crate) fn transact<T>(
        &self,
        op: &'static str,
        access: Access,
        body: impl FnOnce(&mut dyn Db) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let result = match access {
            Access::Read => body(&mut SqliteDb { conn: &conn }),
            Access::Write { .. } => in_immediate_transaction(&mut conn, body),
        };
        result.map_err(|e| e.into_store(&self.path, op))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done work behind: an open transaction
        // rolls back when it is dropped during unwinding. So the connection is still usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sql_err(&self, operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            operation,
            source,
        }
    }
}

fn in_immediate_transaction<T>(
    conn: &mut Connection,
    body: impl FnOnce(&mut dyn Db) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = body(&mut SqliteDb { conn: &tx })?;
    tx.commit()?;
    Ok(value)
}

/// [`Db`] on a connection, or on a transaction (which derefs to one).
struct SqliteDb<'c> {
    conn: &'c Connection,
}

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let changed = self.conn.prepare_cached(sql)?.execute(params_from_iter(params))?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Cells>, DbError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let rows = stmt
            .query_map(params_from_iter(params), |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => Cell::Null,
                            ValueRef::Integer(v) => Cell::Int(v),
                            // Text, and REAL or BLOB, which `get` refuses with a typed error.
                            _ => Cell::Text(row.get(i)?),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map(Cells::new)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}
