//! A run: one execution (or non-execution) of a schedule at one instant, as the store keeps it.
//!
//! Identity is `(schedule, scheduled_at)`: the store refuses a second row for the same pair,
//! and the row is written before the job is created, so an instant never runs twice.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Logs kept per run: the end of the job's output.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

/// Why a run exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trigger {
    /// Started at (or right after) its scheduled instant.
    Schedule,
    /// The latest instant missed while no controller was running, started late but within the
    /// starting deadline.
    CatchUp,
    /// `steward trigger SCHEDULE`.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "Schedule",
            Trigger::CatchUp => "CatchUp",
            Trigger::Manual => "Manual",
        }
    }
    pub fn parse(s: &str) -> Option<Trigger> {
        [Trigger::Schedule, Trigger::CatchUp, Trigger::Manual]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// Where a run stands. `Pending` and `Running` are active; everything else is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Recorded; its job is not created yet (or its creation was interrupted).
    Pending,
    Running,
    Succeeded,
    /// The job failed on its last attempt (see `exit_code`).
    Failed,
    /// Stopped after `timeout`.
    TimedOut,
    /// Not started: another run was active under `concurrencyPolicy: Forbid`.
    Skipped,
    /// Not started: its instant passed (downtime, suspend) beyond the starting deadline, or an
    /// older instant than the one caught up.
    Missed,
    /// Stopped because a newer run started under `concurrencyPolicy: Replace`.
    Replaced,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Pending,
        Outcome::Running,
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Skipped,
        Outcome::Missed,
        Outcome::Replaced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "Pending",
            Outcome::Running => "Running",
            Outcome::Succeeded => "Succeeded",
            Outcome::Failed => "Failed",
            Outcome::TimedOut => "TimedOut",
            Outcome::Skipped => "Skipped",
            Outcome::Missed => "Missed",
            Outcome::Replaced => "Replaced",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    pub fn is_active(self) -> bool {
        matches!(self, Outcome::Pending | Outcome::Running)
    }

    /// Counted against `history.succeeded` (true) or `history.failed` (false); `None` while active.
    pub fn history_bucket(self) -> Option<bool> {
        match self {
            Outcome::Pending | Outcome::Running => None,
            Outcome::Succeeded => Some(true),
            _ => Some(false),
        }
    }
}

/// One run as stored. Times are UTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// Assigned by the store; 0 before insertion.
    pub id: i64,
    pub schedule: String,
    /// The cron instant (for a manual run: when it was requested).
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled_at: OffsetDateTime,
    pub trigger: Trigger,
    pub outcome: Outcome,
    /// 1 for the first attempt; grows with each retry.
    pub attempt: u32,
    /// The Swarm job service of the current attempt (deterministic from schedule, instant and
    /// attempt), once the run is to start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
    /// Earliest start of the next attempt after a failure (retry backoff).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it ended the way it did, in a line (`exit code 3`, `timed out after 2h`, ...).
    #[serde(default)]
    pub message: String,
    /// The end of the job's output, at most [`LOG_TAIL_BYTES`].
    #[serde(default)]
    pub logs: String,
}

impl Run {
    pub fn new(schedule: &str, scheduled_at: OffsetDateTime, trigger: Trigger, outcome: Outcome) -> Run {
        Run {
            id: 0,
            schedule: schedule.to_string(),
            scheduled_at,
            trigger,
            outcome,
            attempt: 1,
            job: None,
            started_at: None,
            finished_at: None,
            retry_at: None,
            exit_code: None,
            message: String::new(),
            logs: String::new(),
        }
    }

    /// The run as listings show it (`steward runs -o json`, `GET /api/v1/runs`): every field but
    /// its logs (64 KiB each; `steward describe` shows them), plus `durationSeconds`.
    pub fn listing_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a run serializes");
        if let Some(o) = v.as_object_mut() {
            o.remove("logs");
            o.insert(
                "durationSeconds".into(),
                self.duration()
                    .map_or(serde_json::Value::Null, |d| d.as_secs_f64().into()),
            );
        }
        v
    }

    /// Seconds from start to finish, when both are known.
    pub fn duration(&self) -> Option<std::time::Duration> {
        let (s, f) = (self.started_at?, self.finished_at?);
        std::time::Duration::try_from(f - s).ok()
    }
}

/// The Swarm service name of a run's attempt: `<schedule>-<unix seconds>[-<attempt>]`, cut to
/// Swarm's 63 characters with a hash suffix when the schedule name is long. Deterministic, so
/// starting it twice (after a crash) finds the job already there.
pub fn job_name(schedule: &str, scheduled_at: OffsetDateTime, attempt: u32, manual: bool) -> String {
    use sha2::{Digest, Sha256};
    let ts = scheduled_at.unix_timestamp();
    let mut suffix = if manual {
        // Manual runs are identified to the millisecond they were requested.
        format!("m{}", scheduled_at.unix_timestamp_nanos() / 1_000_000)
    } else {
        ts.to_string()
    };
    if attempt > 1 {
        suffix.push_str(&format!("-{attempt}"));
    }
    let full = format!("{schedule}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(schedule.as_bytes())[..4]);
    let keep = 63 - suffix.len() - hash.len() - 2;
    format!("{}-{hash}-{suffix}", &schedule[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_deterministic_and_fit_swarm() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(job_name("db-backup", t, 1, false), "db-backup-1700000000");
        assert_eq!(job_name("db-backup", t, 2, false), "db-backup-1700000000-2");
        let long = "x".repeat(63);
        let n = job_name(&long, t, 3, false);
        assert!(n.len() <= 63, "{n}");
        assert_eq!(n, job_name(&long, t, 3, false));
        assert!(n.ends_with("-1700000000-3"));
        assert!(job_name("db-backup", t, 1, true).starts_with("db-backup-m1700000000000"));
    }

    #[test]
    fn outcomes_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert!(Outcome::Running.is_active() && !Outcome::Missed.is_active());
    }
}
