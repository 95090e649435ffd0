//! Schema creation and migration, tracked with `PRAGMA user_version`.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::sql::Dialect;
use crate::{backups, runs, StoreError};

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = 4;

/// Version 1.
///
/// Timestamps are stored as integer unix nanoseconds (UTC): compact, and they compare and sort
/// correctly as plain integers, which the `since` filter and the fold window rely on.
///
/// `seq` is a global change counter: every insert or fold gives the touched row
/// `MAX(seq) + 1`, so a follower can ask for "everything changed after the seq I last saw".
///
/// Indexes (every SQLite index implicitly ends with the rowid, i.e. `id`):
/// - `events_fold`: the equality lookup for folding, with `last_seen` last so the window
///   check and "most recent first" are answered from the index.
/// - `events_last_seen`: `since` and the newest-N `limit` query, in (last_seen, id) order.
/// - `events_object_last_seen`: the same for a single object.
/// - `events_seq`: `MAX(seq)` and `seq > ?` for followers.
const V1: &str = "
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    object     TEXT    NOT NULL,
    count      INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX events_fold ON events (object, type, reason, message, last_seen);
CREATE INDEX events_last_seen ON events (last_seen);
CREATE INDEX events_object_last_seen ON events (object, last_seen);
CREATE UNIQUE INDEX events_seq ON events (seq);

CREATE TABLE statuses (
    kind   TEXT NOT NULL,
    name   TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 2: revision history per service (steward's own: Swarm keeps one previous spec and
/// every update overwrites it). The row's JSON holds the revision with secret values blanked.
const V2: &str = "
CREATE TABLE revisions (
    service    TEXT    NOT NULL,
    number     INTEGER NOT NULL,
    spec_hash  TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    created    INTEGER NOT NULL,
    revision   TEXT    NOT NULL,
    PRIMARY KEY (service, number)
) WITHOUT ROWID;
";

/// Brings the schema up to [`SCHEMA_VERSION`]. Runs in an IMMEDIATE transaction so two
/// processes opening a fresh file at the same time cannot both try to create the tables.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |operation: &'static str| {
        move |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            operation,
            source,
        }
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting the schema migration"))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql("reading the schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        tx.execute_batch(V1).map_err(sql("creating the schema (version 1)"))?;
    }
    if version < 2 {
        tx.execute_batch(V2)
            .map_err(sql("adding revision history (version 2)"))?;
    }
    if version < 3 {
        // Version 3: runs of schedules; the table is defined once for both backends.
        tx.execute_batch(&runs::schema(Dialect::Sqlite))
            .map_err(sql("adding runs (version 3)"))?;
    }
    if version < 4 {
        // Version 4: database backups; defined once for both backends, like runs.
        tx.execute_batch(&backups::schema(Dialect::Sqlite))
            .map_err(sql("adding backups (version 4)"))?;
    }
    // Future migrations: `if version < 5 { ... }`, each step in this same transaction.
    if version != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql("recording the schema version"))?;
    }
    tx.commit().map_err(sql("committing the schema migration"))
}
