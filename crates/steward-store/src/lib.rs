//! Embedded SQLite store for resource status, events and controller metadata.
//!
//! One database file is shared by `steward run` (the writer) and short-lived readers such as
//! `steward status` and `steward events`, possibly in other processes. The file is opened in
//! WAL mode with a busy timeout, so readers never block the writer and vice versa, and every
//! write happens in a single IMMEDIATE transaction.
//!
//! The API is synchronous; every call is a handful of indexed statements.

mod error;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;

use steward_plan::rollout::{Outcome, Revision};
use steward_plan::status::{EventRecord, EventType, NewEvent, ResourceStatus};
use time::OffsetDateTime;

pub use error::StoreError;
pub use schema::SCHEMA_VERSION;

/// Identical events (same object, type, reason and message) whose previous occurrence was
/// seen at most this long ago are folded into that record instead of inserting a new one.
///
/// This mirrors the Kubernetes event correlator: a controller that retries every few seconds
/// would otherwise flood the table (and `steward events`) with copies of the same line. One
/// record with a growing `count` and a moving `last_seen` says the same thing. The window is
/// bounded so that a problem that recurs after a long quiet period shows up as a new record
/// with its own `first_seen`, rather than silently bumping a record from hours ago.
pub const FOLD_WINDOW: time::Duration = time::Duration::minutes(10);

/// How long a statement waits for another connection's lock before failing with
/// "database is locked". Writes are short, so this is only ever reached if something is wrong.
/// Revisions kept per service: the issue asks for at least 10; twice that costs little.
pub const REVISIONS_KEPT: u64 = 20;

pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Optional filters for [`Store::events`]; all unset returns every event.
#[derive(Default, Clone, Debug)]
pub struct EventFilter {
    /// Only events with `last_seen >= since`.
    pub since: Option<OffsetDateTime>,
    /// Only events whose `object` equals this exactly (e.g. `Service/web`).
    pub object: Option<String>,
    /// Only the newest N matching events (by `last_seen`, then `id`); still returned oldest
    /// first.
    pub limit: Option<usize>,
}

/// Handle to the store database. Cheap calls, safe to share between threads (`Sync`); the
/// connection is serialised behind a mutex.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The `events` columns in the order [`RawEvent::from_row`] reads them.
macro_rules! event_columns {
    () => {
        "id, type, reason, message, object, count, first_seen, last_seen, seq"
    };
}
const EVENT_COLUMNS: &str = event_columns!();

const NEXT_SEQ_SQL: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM events";

/// The most recent identical event still inside the fold window: one probe of `events_fold`.
const FOLD_CANDIDATE_SQL: &str = "SELECT id FROM events
     WHERE object = ?1 AND type = ?2 AND reason = ?3 AND message = ?4 AND last_seen >= ?5
     ORDER BY last_seen DESC
     LIMIT 1";

const CHANGED_SINCE_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE seq > ?1 ORDER BY seq ASC"
);

const EVENT_BY_ID_SQL: &str = concat!("SELECT ", event_columns!(), " FROM events WHERE id = ?1");

/// An `events` row as SQLite returns it, before validation.
struct RawEvent {
    id: i64,
    type_: String,
    reason: String,
    message: String,
    object: String,
    count: i64,
    first_seen: i64,
    last_seen: i64,
    seq: i64,
}

impl RawEvent {
    /// Column order: [`EVENT_COLUMNS`].
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
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
}

impl Store {
    /// Opens or creates the database file (creating parent directories), sets WAL journal mode
    /// and a busy timeout, and creates or migrates the schema to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::JournalMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        // In WAL mode NORMAL never corrupts the database; a power cut can only lose the last
        // few commits, which for status and events is recomputed or harmless. FULL would add an
        // fsync to every recorded event.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // The variants of the `events` query (filters x limit) plus the fixed statements.
        conn.set_prepared_statement_cache_capacity(32);
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records an event seen at `now`, folding it into an identical event last seen within
    /// [`FOLD_WINDOW`] (its `count` grows, `last_seen` becomes `now`); otherwise inserts a new
    /// record. Either way the record's change `seq` is bumped. Returns the stored record
    /// (timestamps in UTC).
    pub fn record_event(
        &self,
        ev: &NewEvent,
        now: OffsetDateTime,
    ) -> Result<EventRecord, StoreError> {
        const OP: &str = "recording an event";
        let now_ns = to_nanos(now, OP)?;
        let window_start = now_ns.saturating_sub(fold_window_nanos());
        let sql = self.sql_err(OP);

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
                    params![
                        ev.object,
                        ev.type_.as_str(),
                        ev.reason,
                        ev.message,
                        window_start
                    ],
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
            .and_then(|mut s| s.query_row([id], RawEvent::from_row))
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        drop(conn);
        self.event_record(raw, OP)
    }

    /// Events matching `filter`, ordered by `last_seen` ascending, then `id`.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>, StoreError> {
        const OP: &str = "reading events";
        let (sql, values) = events_query(filter, OP)?;
        let conn = self.lock();
        let raws = conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_map(params_from_iter(values), RawEvent::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_err(OP))?;
        drop(conn);
        let mut records = raws
            .into_iter()
            .map(|raw| self.event_record(raw, OP))
            .collect::<Result<Vec<_>, _>>()?;
        if filter.limit.is_some() {
            records.reverse();
        }
        Ok(records)
    }

    /// Every event inserted or folded after change number `seq`, in change order, plus the
    /// highest change number returned (`seq` itself when nothing changed). Pass the returned
    /// number to the next call to follow the event stream; a folded event shows up again with
    /// its new count.
    ///
    /// Start from [`Store::latest_event_seq`] to follow only new changes, or from 0 to replay
    /// everything.
    pub fn events_changed_since(&self, seq: i64) -> Result<(Vec<EventRecord>, i64), StoreError> {
        const OP: &str = "reading changed events";
        let conn = self.lock();
        let raws = conn
            .prepare_cached(CHANGED_SINCE_SQL)
            .and_then(|mut s| {
                s.query_map([seq], RawEvent::from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_err(OP))?;
        drop(conn);
        let max_seq = raws.last().map_or(seq, |r| r.seq.max(seq));
        let records = raws
            .into_iter()
            .map(|raw| self.event_record(raw, OP))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, max_seq))
    }

    /// The change number of the most recent insert or fold (0 for an empty table).
    pub fn latest_event_seq(&self) -> Result<i64, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(self.sql_err("reading the latest event change number"))
    }

    /// Inserts or replaces the status of (`status.kind`, `status.name`).
    ///
    /// For every condition whose type was already stored with the same `status`, the stored
    /// `last_transition_time` is kept (Kubernetes semantics: it moves only when the status
    /// changes); all other fields are taken from `status`.
    pub fn put_status(&self, status: &ResourceStatus) -> Result<(), StoreError> {
        const OP: &str = "writing a status";
        let sql = self.sql_err(OP);
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let previous: Option<String> = tx
            .prepare_cached("SELECT status FROM statuses WHERE kind = ?1 AND name = ?2")
            .and_then(|mut s| {
                s.query_row(params![status.kind, status.name], |r| r.get(0))
                    .optional()
            })
            .map_err(sql)?;
        // An unreadable previous row only costs its transition times; overwriting it heals the
        // row instead of failing every reconcile of this resource from now on.
        let previous: Option<ResourceStatus> =
            previous.and_then(|json| serde_json::from_str(&json).ok());

        let mut merged = status.clone();
        if let Some(previous) = &previous {
            for condition in &mut merged.conditions {
                if let Some(old) = previous.condition(condition.type_) {
                    if old.status == condition.status {
                        condition.last_transition_time = old.last_transition_time;
                    }
                }
            }
        }
        let json = serde_json::to_string(&merged).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            operation: OP,
            source,
        })?;
        tx.prepare_cached(
            "INSERT INTO statuses (kind, name, status) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, name) DO UPDATE SET status = excluded.status",
        )
        .and_then(|mut s| s.execute(params![status.kind, status.name, json]))
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// All stored statuses, ordered by kind, then name.
    pub fn statuses(&self) -> Result<Vec<ResourceStatus>, StoreError> {
        const OP: &str = "reading statuses";
        let conn = self.lock();
        let rows = conn
            .prepare_cached("SELECT status FROM statuses ORDER BY kind, name")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.sql_err(OP))?;
        drop(conn);
        rows.iter()
            .map(|json| self.decode_status(json, OP))
            .collect()
    }

    /// The stored status of (`kind`, `name`), if any.
    pub fn status(&self, kind: &str, name: &str) -> Result<Option<ResourceStatus>, StoreError> {
        const OP: &str = "reading a status";
        let conn = self.lock();
        let row: Option<String> = conn
            .prepare_cached("SELECT status FROM statuses WHERE kind = ?1 AND name = ?2")
            .and_then(|mut s| s.query_row(params![kind, name], |r| r.get(0)).optional())
            .map_err(self.sql_err(OP))?;
        drop(conn);
        row.map(|json| self.decode_status(&json, OP)).transpose()
    }

    /// Forgets the status of (`kind`, `name`); no error if there was none.
    pub fn remove_status(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached("DELETE FROM statuses WHERE kind = ?1 AND name = ?2")
            .and_then(|mut s| s.execute(params![kind, name]))
            .map(drop)
            .map_err(self.sql_err("removing a status"))
    }

    /// Controller metadata, e.g. the last desired-state generation and its hash.
    pub fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(self.sql_err("reading metadata"))
    }

    /// Sets (inserts or replaces) a metadata value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut s| s.execute([key, value]))
        .map(drop)
        .map_err(self.sql_err("writing metadata"))
    }

    /// Appends a revision to its service's history, numbering it; keeps the newest
    /// [`REVISIONS_KEPT`]. Returns the number given.
    pub fn add_revision(&self, rev: &Revision) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.sql_err("starting a revision write"))?;
        let number: u64 = tx
            .query_row(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE service = ?1",
                [&rev.service],
                |r| r.get::<_, i64>(0),
            )
            .map_err(self.sql_err("numbering a revision"))? as u64;
        let mut stored = rev.clone();
        stored.number = number;
        let json = serde_json::to_string(&stored).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            operation: "encoding a revision",
            source,
        })?;
        tx.execute(
            "INSERT INTO revisions (service, number, spec_hash, outcome, created, revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![rev.service, number as i64, rev.spec_hash, format!("{:?}", rev.outcome), rev.created_ms, json],
        )
        .map_err(self.sql_err("writing a revision"))?;
        tx.execute(
            "DELETE FROM revisions WHERE service = ?1 AND number <= ?2",
            rusqlite::params![rev.service, number as i64 - REVISIONS_KEPT as i64],
        )
        .map_err(self.sql_err("trimming revision history"))?;
        tx.commit().map_err(self.sql_err("committing a revision"))?;
        Ok(number)
    }

    /// Sets the outcome of the newest revision of `service` with `spec_hash`.
    pub fn set_revision_outcome(&self, service: &str, spec_hash: &str, outcome: Outcome) -> Result<(), StoreError> {
        let Some(mut rev) = self
            .revisions(service)?
            .into_iter()
            .find(|r| r.spec_hash == spec_hash)
        else {
            return Ok(());
        };
        rev.outcome = outcome;
        let json = serde_json::to_string(&rev).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            operation: "encoding a revision",
            source,
        })?;
        let conn = self.lock();
        conn.execute(
            "UPDATE revisions SET outcome = ?1, revision = ?2 WHERE service = ?3 AND number = ?4",
            rusqlite::params![format!("{outcome:?}"), json, service, rev.number as i64],
        )
        .map(drop)
        .map_err(self.sql_err("updating a revision outcome"))
    }

    /// History of one service, newest first.
    pub fn revisions(&self, service: &str) -> Result<Vec<Revision>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT revision FROM revisions WHERE service = ?1 ORDER BY number DESC")
            .map_err(self.sql_err("reading revisions"))?;
        let rows = stmt
            .query_map([service], |r| r.get::<_, String>(0))
            .map_err(self.sql_err("reading revisions"))?;
        let mut out = Vec::new();
        for row in rows {
            let text = row.map_err(self.sql_err("reading revisions"))?;
            out.push(serde_json::from_str(&text).map_err(|source| StoreError::Json {
                path: self.path.clone(),
                operation: "decoding a revision",
                source,
            })?);
        }
        Ok(out)
    }

    /// The newest known-good (Complete or Baseline) revision of every service.
    pub fn last_good(&self) -> Result<BTreeMap<String, Revision>, StoreError> {
        let services: Vec<String> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached("SELECT DISTINCT service FROM revisions")
                .map_err(self.sql_err("listing revisions"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(self.sql_err("listing revisions"))?;
            rows.collect::<Result<_, _>>().map_err(self.sql_err("listing revisions"))?
        };
        let mut out = BTreeMap::new();
        for s in services {
            if let Some(r) = self
                .revisions(&s)?
                .into_iter()
                .find(|r| matches!(r.outcome, Outcome::Complete | Outcome::Baseline))
            {
                out.insert(s, r);
            }
        }
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done work behind: an open transaction
        // rolls back when it is dropped during unwinding. So the connection is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sql_err(
        &self,
        operation: &'static str,
    ) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            operation,
            source,
        }
    }

    fn corrupt(&self, operation: &'static str, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            operation,
            detail,
        }
    }

    fn decode_status(
        &self,
        json: &str,
        operation: &'static str,
    ) -> Result<ResourceStatus, StoreError> {
        serde_json::from_str(json).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            operation,
            source,
        })
    }

    fn event_record(
        &self,
        raw: RawEvent,
        operation: &'static str,
    ) -> Result<EventRecord, StoreError> {
        let type_ = match raw.type_.as_str() {
            "Normal" => EventType::Normal,
            "Warning" => EventType::Warning,
            other => {
                return Err(self.corrupt(
                    operation,
                    format!("event {} has unknown type {other:?}", raw.id),
                ))
            }
        };
        let count = u64::try_from(raw.count).map_err(|_| {
            self.corrupt(
                operation,
                format!("event {} has count {}", raw.id, raw.count),
            )
        })?;
        let time = |ns: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).map_err(|_| {
                self.corrupt(operation, format!("event {} has timestamp {ns}", raw.id))
            })
        };
        Ok(EventRecord {
            id: raw.id,
            type_,
            count,
            first_seen: time(raw.first_seen)?,
            last_seen: time(raw.last_seen)?,
            reason: raw.reason,
            message: raw.message,
            object: raw.object,
        })
    }
}

/// The SQL and parameters for [`Store::events`]. Without a limit the rows come oldest first;
/// with one, the index is walked from the newest end and stops after N rows (the caller
/// reverses them).
fn events_query(
    filter: &EventFilter,
    operation: &'static str,
) -> Result<(String, Vec<Value>), StoreError> {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(since) = filter.since {
        values.push(Value::Integer(to_nanos(since, operation)?));
        conditions.push(format!("last_seen >= ?{}", values.len()));
    }
    if let Some(object) = &filter.object {
        values.push(Value::Text(object.clone()));
        conditions.push(format!("object = ?{}", values.len()));
    }
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    match filter.limit {
        Some(limit) => {
            values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            sql.push_str(&format!(
                " ORDER BY last_seen DESC, id DESC LIMIT ?{}",
                values.len()
            ));
        }
        None => sql.push_str(" ORDER BY last_seen ASC, id ASC"),
    }
    Ok((sql, values))
}

fn to_nanos(t: OffsetDateTime, operation: &'static str) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| StoreError::TimestampOutOfRange {
        operation,
        timestamp: t,
    })
}

fn fold_window_nanos() -> i64 {
    i64::try_from(FOLD_WINDOW.whole_nanoseconds()).expect("FOLD_WINDOW fits in i64 nanoseconds")
}

#[cfg(test)]
mod internal_tests;
