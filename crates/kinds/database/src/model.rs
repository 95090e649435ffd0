//! A Database as the reconciler works on it: the validated spec, its calendars parsed and its
//! password resolved (never printed).

use std::fmt;
use std::time::Duration;

use steward_schedule::cron::CronSchedule;

use crate::spec::{DatabaseEntry, DatabaseSpec};

/// One of the Database's own calendared tasks; each is a run of the scheduler named
/// `<database>/<task>` (`taxcollector-db/backup`), so it appears in `steward runs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    Backup,
    RestoreTest,
    Archive,
    Vacuum,
    Reindex,
}

impl Task {
    pub const ALL: [Task; 5] = [
        Task::Backup,
        Task::RestoreTest,
        Task::Archive,
        Task::Vacuum,
        Task::Reindex,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Backup => "backup",
            Task::RestoreTest => "restore-test",
            Task::Archive => "archive",
            Task::Vacuum => "vacuum",
            Task::Reindex => "reindex",
        }
    }

    /// The run's schedule name.
    pub fn run_name(self, database: &str) -> String {
        format!("{database}/{}", self.as_str())
    }

    /// The task and database of a run's schedule name, if it is one of a Database's.
    pub fn of_run(schedule: &str) -> Option<(&str, Task)> {
        let (db, t) = schedule.rsplit_once('/')?;
        Task::ALL.into_iter().find(|x| x.as_str() == t).map(|x| (db, x))
    }
}

#[derive(Clone)]
pub struct DatabaseState {
    pub name: String,
    pub spec: DatabaseSpec,
    /// From `passwordFrom`; never in Debug output, logs or status.
    pub password: Option<String>,
    pub backup: Option<CronSchedule>,
    pub restore_test: Option<CronSchedule>,
    pub archive: Option<CronSchedule>,
    pub window: Option<CronSchedule>,
    pub reindex: Option<CronSchedule>,
}

impl fmt::Debug for DatabaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseState")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl PartialEq for DatabaseState {
    fn eq(&self, other: &Self) -> bool {
        // Calendars are parsed from the spec: equal specs give equal calendars.
        self.name == other.name
            && format!("{:?}", self.spec) == format!("{:?}", other.spec)
            && self.password == other.password
    }
}

impl DatabaseState {
    /// From a validated entry (its calendars parse: validation checked them).
    pub fn from_entry(entry: &DatabaseEntry, password: Option<String>) -> Self {
        let s = &entry.spec;
        let cal = |e: &str, tz: &str| CronSchedule::parse(e, tz).ok();
        DatabaseState {
            name: entry.name().to_string(),
            spec: s.clone(),
            password,
            backup: s.backup.as_ref().and_then(|b| cal(&b.schedule, &b.time_zone)),
            restore_test: s
                .backup
                .as_ref()
                .and_then(|b| b.restore_test.as_ref())
                .and_then(|r| cal(&r.schedule, &r.time_zone)),
            archive: s
                .backup
                .as_ref()
                .and_then(|b| b.archive.as_ref())
                .and_then(|a| cal(&a.schedule, &a.time_zone)),
            window: s
                .maintenance
                .as_ref()
                .and_then(|m| cal(&m.window.schedule, &m.window.time_zone)),
            reindex: s
                .maintenance
                .as_ref()
                .and_then(|m| m.reindex.as_ref())
                .and_then(|r| cal(&r.schedule, &r.time_zone)),
        }
    }

    pub fn calendar(&self, t: Task) -> Option<&CronSchedule> {
        match t {
            Task::Backup => self.backup.as_ref(),
            Task::RestoreTest => self.restore_test.as_ref(),
            Task::Archive => self.archive.as_ref(),
            Task::Vacuum => self.window.as_ref(),
            Task::Reindex => self.reindex.as_ref(),
        }
    }

    pub fn lag_limit(&self) -> Duration {
        self.spec.thresholds.replication_lag.get()
    }

    /// `host:port` of a URL, for status and messages (URLs carry no password: validation
    /// refuses one).
    pub fn server_of(url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.contains(':') && !host.ends_with(']') {
            host.to_string()
        } else {
            format!("{host}:5432")
        }
    }
}
