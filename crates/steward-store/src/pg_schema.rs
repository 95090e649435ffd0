//! PostgreSQL schema creation and migration, tracked in `steward_schema` (one row per step
//! applied).

use std::path::Path;

use postgres::Client;

use crate::pg::Failure;
use crate::sql::Dialect;
use crate::{backups, runs, StoreError};

/// The PostgreSQL schema version this code reads and writes (tracked in `steward_schema`,
/// separately from SQLite's [`crate::SCHEMA_VERSION`]).
pub const POSTGRES_SCHEMA_VERSION: i64 = 3;

/// Taken for the length of a migration; see [`crate::leader::LOCK_KEY`] for the choice of
/// number.
const MIGRATION_LOCK_KEY: i64 = 0x7374_7764_0000_0002;

/// Version 1: the SQLite schema's tables (events, statuses, meta, revisions), prefixed so
/// that a database shared with other software stays readable, plus the leader row.
///
/// Timestamps of events are integer unix nanoseconds as in SQLite, so both backends compare,
/// fold and order by exactly the same values. PostgreSQL indexes do not end with the row id
/// implicitly, so the ordering indexes name `id` to serve `ORDER BY last_seen, id` without a
/// sort. The fold index keys on md5(message): btree keys are limited to about 2.7 kB.
const PG_V1: &str = "
CREATE TABLE steward_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq        BIGINT NOT NULL,
    type       TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    message    TEXT   NOT NULL,
    object     TEXT   NOT NULL,
    count      BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
CREATE INDEX steward_events_fold ON steward_events (object, type, reason, md5(message), last_seen);
CREATE INDEX steward_events_last_seen ON steward_events (last_seen, id);
CREATE INDEX steward_events_object_last_seen ON steward_events (object, last_seen, id);
CREATE UNIQUE INDEX steward_events_seq ON steward_events (seq);

CREATE TABLE steward_statuses (
    kind   TEXT NOT NULL,
    name   TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE steward_meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE steward_revisions (
    service   TEXT   NOT NULL,
    number    BIGINT NOT NULL,
    spec_hash TEXT   NOT NULL,
    outcome   TEXT   NOT NULL,
    created   BIGINT NOT NULL,
    revision  TEXT   NOT NULL,
    PRIMARY KEY (service, number)
);

CREATE TABLE steward_leader (
    id          SMALLINT    PRIMARY KEY CHECK (id = 1),
    epoch       BIGINT      NOT NULL,
    holder      TEXT        NOT NULL,
    holder_pid  INTEGER     NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL
);
";

/// Brings the schema up to [`POSTGRES_SCHEMA_VERSION`] in one transaction. The transaction
/// advisory lock makes controllers that start together take turns: the first creates the
/// tables, the others then find the version already current. DDL is transactional in
/// PostgreSQL, so a failed step leaves nothing half-made.
pub(crate) fn migrate(client: &mut Client, path: &Path) -> Result<(), Failure> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS steward_schema (
             version    BIGINT      PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let version: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM steward_schema", &[])?
        .try_get(0)?;
    if version > POSTGRES_SCHEMA_VERSION {
        return Err(Failure::Store(StoreError::UnsupportedSchema {
            path: path.to_path_buf(),
            found: version,
            supported: POSTGRES_SCHEMA_VERSION,
        }));
    }
    if version < 1 {
        tx.batch_execute(PG_V1)?;
        tx.execute("INSERT INTO steward_schema (version) VALUES (1)", &[])?;
    }
    if version < 2 {
        tx.batch_execute(&runs::schema(Dialect::Postgres))?;
        tx.execute("INSERT INTO steward_schema (version) VALUES (2)", &[])?;
    }
    if version < 3 {
        tx.batch_execute(&backups::schema(Dialect::Postgres))?;
        tx.execute("INSERT INTO steward_schema (version) VALUES (3)", &[])?;
    }
    // Future migrations: `if version < 4 { ...; INSERT version 4 }`, in this transaction.
    tx.commit()?;
    Ok(())
}
