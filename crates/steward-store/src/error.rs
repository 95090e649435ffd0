use std::path::PathBuf;

use time::OffsetDateTime;

/// Everything that can go wrong in the store. Each variant names the database (the SQLite file,
/// or the PostgreSQL URL with any password replaced by `***`) and, where it applies, the
/// operation that failed; the underlying cause is exposed through [`std::error::Error::source`]
/// rather than repeated in the message.
///
/// For a PostgreSQL store the `path` of the shared variants (`Json`, `Corrupt`,
/// `UnsupportedSchema`) holds that redacted URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating directory {} for the store database", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("opening store database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error(
        "store database {} uses journal mode {mode:?}; WAL is required so that readers and the writer do not block each other",
        path.display()
    )]
    JournalMode { path: PathBuf, mode: String },

    #[error(
        "store database {} has schema version {found}, but this steward supports at most version {supported}",
        path.display()
    )]
    UnsupportedSchema { path: PathBuf, found: i64, supported: i64 },

    #[error("store database {}: {operation}", path.display())]
    Sqlite {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("store database {}: {operation}: JSON encoding or decoding failed", path.display())]
    Json {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("store database {}: {operation}: unexpected stored value: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        operation: &'static str,
        detail: String,
    },

    #[error("{operation}: timestamp {timestamp} is outside the range the store can represent")]
    TimestampOutOfRange {
        operation: &'static str,
        timestamp: OffsetDateTime,
    },

    #[error("store URL {url}: not a valid PostgreSQL connection URL")]
    InvalidUrl {
        /// Redacted: never holds the password.
        url: String,
        #[source]
        source: postgres::Error,
    },

    #[error("connecting to PostgreSQL store {url} failed after {attempts} attempt(s)")]
    PostgresConnect {
        url: String,
        attempts: u32,
        #[source]
        source: postgres::Error,
    },

    #[error("PostgreSQL store {url}: {operation}")]
    Postgres {
        url: String,
        operation: &'static str,
        #[source]
        source: postgres::Error,
    },

    #[error("PostgreSQL store {url}: {operation}: the store's connection thread has stopped")]
    WorkerGone { url: String, operation: &'static str },

    #[error("starting the {thread} thread for store {url}")]
    Spawn {
        url: String,
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
}
