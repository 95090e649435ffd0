//! What steward records of each backup it made (a row of its store) and of each restore test:
//! the inputs of retention, `BackupHealthy`, `steward backups` and the archive.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

/// Why a backup was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupTrigger {
    /// Its `backup.schedule`.
    Schedule,
    /// `steward backup DATABASE`.
    Manual,
    /// A Service's `backupBefore`, in its rollout's PreDeploy phase.
    PreDeploy,
}

/// One check of a restore test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub query: String,
    pub expect: String,
    /// The single value the query returned, as text; None when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub passed: bool,
    /// Empty when it passed; otherwise what went wrong (the error, or the value against `expect`).
    #[serde(default)]
    pub message: String,
}

/// The result of restoring a backup into a scratch database and running the checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The restore completed and every check passed.
    pub passed: bool,
    /// Wall time of `pg_restore` (the recovery time objective measured), in seconds.
    pub restore_seconds: f64,
    pub checks: Vec<CheckResult>,
    /// Where it was restored: `throwaway local server` or the target's `host:port`.
    pub target: String,
    /// One line: why it failed (checksum mismatch, pg_restore's error, a check), or `passed`.
    pub message: String,
}

/// One backup file steward made. Files steward did not make never become a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// Assigned by the store; 0 before insertion.
    pub id: i64,
    pub database: String,
    /// Absolute path of the completed file (written under a temporary name, then renamed).
    pub file: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// The calendar day it was taken on, in the backup schedule's time zone (retention's buckets).
    pub local_date: Date,
    pub size_bytes: u64,
    pub sha256: String,
    pub duration_seconds: f64,
    pub trigger: BackupTrigger,
    /// The last restore test of this file, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreResult>,
    /// Where the archive put its verified copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_to: Option<String>,
    /// When retention deleted the file (the row stays, for history).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_at: Option<OffsetDateTime>,
}

/// The newest of `backups` (by time, then id: two taken in the same instant order by insertion).
pub fn newest<'a>(backups: impl IntoIterator<Item = &'a Backup>) -> Option<&'a Backup> {
    backups.into_iter().max_by_key(|b| (b.taken_at, b.id))
}

impl Backup {
    /// Its file is still there (retention has not deleted it).
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// Its last restore test passed.
    pub fn verified(&self) -> bool {
        self.restore.as_ref().is_some_and(|r| r.passed)
    }

    /// Retention's view of it.
    pub fn retention_record(&self) -> crate::retention::BackupRecord {
        crate::retention::BackupRecord {
            id: self.id as u64,
            file: self.file.clone(),
            taken_at: self.taken_at,
            local_date: self.local_date,
            verified: self.verified(),
            pre_deploy: self.trigger == BackupTrigger::PreDeploy,
        }
    }
}
