//! `kind: Database` — the document (issue 9's contract) and its defaults.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use steward_spec::{Duration, EnvSource, Metadata};

/// `kind: Database` — a PostgreSQL primary and its streaming replicas, observed every pass;
/// deploy gates, maintenance in a window, backups with a verified restore test.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Database")]
pub struct DatabaseDocument {
    /// Always `steward.io/v1alpha1`.
    pub api_version: String,
    /// Always `Database`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: DatabaseSpec,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// `postgres://user@host:port/db`. A password inside the URL is refused: use `passwordFrom`.
    pub primary: String,
    /// Streaming replicas, same form. Default: none.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Where the password is read (an environment variable of steward, or a file below the
    /// secrets directory). Default: none (trust, peer or a `.pgpass` of steward's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from: Option<EnvSource>,
    #[serde(default)]
    pub thresholds: Thresholds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    /// How often the slower statistics are read (top statements, largest tables, dead tuples).
    /// Default: `5m`.
    #[serde(default = "five_minutes")]
    pub stats_interval: Duration,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Thresholds {
    /// Replication lag over which a replica is Lagging. Default: `30s`.
    #[serde(default = "thirty_seconds")]
    pub replication_lag: Duration,
    /// Total client connections over which the database is Degraded. Default: 150.
    #[serde(default = "one_hundred_fifty")]
    pub connections: u32,
    /// A transaction open longer than this is reported. Default: `5m`.
    #[serde(default = "five_minutes")]
    pub long_transaction: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            replication_lag: thirty_seconds(),
            connections: one_hundred_fifty(),
            long_transaction: five_minutes(),
        }
    }
}

/// A cron expression in an IANA time zone, as for `Schedule` documents.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Calendar {
    pub schedule: String,
    /// Default: `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Window {
    pub schedule: String,
    /// Default: `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// How long the window stays open after each start.
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Maintenance {
    pub window: Window,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacuum: Option<Vacuum>,
    /// `REINDEX ... CONCURRENTLY` on its own calendar. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reindex: Option<Calendar>,
    /// `lock_timeout` of each maintenance statement: a table locked by the application is
    /// skipped rather than waited for. Default: `5s`.
    #[serde(default = "five_seconds")]
    pub lock_timeout: Duration,
    /// `statement_timeout` of each maintenance statement. Default: `1h`.
    #[serde(default = "one_hour")]
    pub statement_timeout: Duration,
}

/// `VACUUM (ANALYZE)` of each table over both thresholds.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Vacuum {
    /// Dead tuples / (live + dead), 0 to 1. Default: 0.1.
    #[serde(default = "a_tenth")]
    pub dead_tuple_ratio: f64,
    /// Default: 1000.
    #[serde(default = "one_thousand")]
    pub min_dead_tuples: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backup {
    pub schedule: String,
    /// Default: `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Absolute directory the backups are written to.
    pub directory: String,
    /// How pg_dump writes each backup: `custom` (`pg_dump -Fc`, one `<name>.dump` file) or
    /// `directory` (`pg_dump -Fd -j <jobs>`, one `<name>.dir` directory, dumped and restored by
    /// `jobs` parallel workers: faster when the database has several large tables and the
    /// primary has cores to spare, no faster when one table dominates). Default: `custom`.
    #[serde(default)]
    pub format: BackupFormat,
    /// Parallel pg_dump and pg_restore workers of the `directory` format, 1 to 16; each takes
    /// one more connection (and core) of the primary while the backup runs. Refused with
    /// `custom` (one worker). Default: 2 with `directory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub jobs: Option<u32>,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archive>,
}

/// How pg_dump writes a backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupFormat {
    /// `pg_dump -Fc`: one file.
    #[default]
    Custom,
    /// `pg_dump -Fd -j <jobs>`: one directory, dumped and restored in parallel.
    Directory,
}

/// The most parallel workers `spec.backup.jobs` may ask for.
pub const MAX_BACKUP_JOBS: u32 = 16;

impl Backup {
    /// The parallel pg_dump/pg_restore workers: `jobs` (default 2) with `directory`, 1 with
    /// `custom`.
    pub fn effective_jobs(&self) -> u32 {
        match self.format {
            BackupFormat::Custom => 1,
            BackupFormat::Directory => self.jobs.unwrap_or(2),
        }
    }
}

/// How many of steward's own backups are kept; files steward did not make are never deleted.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retention {
    /// Default: 7.
    #[serde(default = "seven")]
    pub daily: u32,
    /// Default: 4.
    #[serde(default = "four")]
    pub weekly: u32,
    /// Default: 12.
    #[serde(default = "twelve")]
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            daily: 7,
            weekly: 4,
            monthly: 12,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestoreTest {
    pub schedule: String,
    /// Default: `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// A server to restore onto (a scratch database is created and dropped there). Default: a
    /// throwaway local server steward starts for the test, so production is never loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Queries whose single value must meet `expect`. Default: none (the restore itself is the test).
    #[serde(default)]
    pub checks: Vec<Check>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Check {
    pub query: String,
    /// A comparison with a number: `> 0`, `>= 10`, `= 1`, `!= 0`, `< 5`, `<= 5`.
    pub expect: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Archive {
    pub schedule: String,
    /// Default: `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Absolute directory the month's newest verified backup is copied to.
    pub directory: String,
}

/// A parsed `expect`: the comparison and its number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    Eq(f64),
    Ne(f64),
}

impl Expect {
    pub fn parse(s: &str) -> Option<Expect> {
        let s = s.trim();
        let (op, rest) = ["<=", ">=", "!=", "==", "<", ">", "="]
            .iter()
            .find_map(|op| s.strip_prefix(op).map(|r| (*op, r)))?;
        let n: f64 = rest.trim().parse().ok()?;
        Some(match op {
            ">" => Expect::Gt(n),
            ">=" => Expect::Ge(n),
            "<" => Expect::Lt(n),
            "<=" => Expect::Le(n),
            "!=" => Expect::Ne(n),
            _ => Expect::Eq(n),
        })
    }

    pub fn holds(self, v: f64) -> bool {
        match self {
            Expect::Gt(n) => v > n,
            Expect::Ge(n) => v >= n,
            Expect::Lt(n) => v < n,
            Expect::Le(n) => v <= n,
            Expect::Eq(n) => v == n,
            Expect::Ne(n) => v != n,
        }
    }
}

fn utc() -> String {
    "UTC".into()
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn one_hour() -> Duration {
    Duration::from_secs(3600)
}
fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn one_hundred_fifty() -> u32 {
    150
}
fn a_tenth() -> f64 {
    0.1
}
fn one_thousand() -> u64 {
    1000
}
fn seven() -> u32 {
    7
}
fn four() -> u32 {
    4
}
fn twelve() -> u32 {
    12
}

/// A validated Database document and where it came from.
#[derive(Clone, Debug)]
pub struct DatabaseEntry {
    pub metadata: Metadata,
    pub spec: DatabaseSpec,
    pub source: steward_spec::Source,
}

impl DatabaseEntry {
    pub fn name(&self) -> &str {
        self.metadata.name.value.as_str()
    }
}
