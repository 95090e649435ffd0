//! Parts (c) and (e) of the plan: which finished runs history keeps, and the status and
//! conditions a schedule's runs imply. Works on every run as it stands once the plan is carried
//! out, newest instant first.

use steward_core::rfc3339;
use time::OffsetDateTime;

use crate::model::ScheduleState;
use crate::plan::{Conditions, ScheduleStatus};
use crate::planner::run_of;
use crate::run::{Outcome, Run, Trigger};

/// Ids of finished runs beyond the history limits, oldest last in `view` (newest first).
pub(crate) fn prune(view: &[&Run], s: &ScheduleState) -> Vec<i64> {
    let (mut succeeded, mut failed) = (0u32, 0u32);
    let mut out = Vec::new();
    for r in view {
        let Some(bucket) = r.outcome.history_bucket() else {
            continue;
        };
        let (kept, limit) = if bucket {
            (&mut succeeded, s.history.succeeded)
        } else {
            (&mut failed, s.history.failed)
        };
        if *kept < limit {
            *kept += 1;
        } else if r.id > 0 {
            out.push(r.id);
        }
    }
    out.sort_unstable();
    out
}

/// The newest finished run that really ran (what Ready and Degraded report).
fn last_finished<'r>(view: &[&'r Run]) -> Option<&'r Run> {
    view.iter()
        .filter(|r| {
            matches!(
                r.outcome,
                Outcome::Succeeded | Outcome::Failed | Outcome::TimedOut | Outcome::Replaced
            )
        })
        .max_by_key(|r| (r.finished_at.unwrap_or(r.scheduled_at), r.scheduled_at, r.id))
        .copied()
}

pub(crate) fn status(view: &[&Run], s: &ScheduleState, next: Option<OffsetDateTime>) -> ScheduleStatus {
    let mut active: Vec<&Run> = view
        .iter()
        .filter(|r| r.outcome.is_active() && r.id > 0)
        .copied()
        .collect();
    active.sort_by_key(|r| (r.scheduled_at, r.id));
    ScheduleStatus {
        schedule: s.cron.expr().to_string(),
        time_zone: s.cron.time_zone().to_string(),
        suspended: s.suspend,
        last_schedule_time: view
            .iter()
            .filter(|r| r.trigger != Trigger::Manual)
            .map(|r| r.scheduled_at)
            .max(),
        last_successful_time: view
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .filter_map(|r| r.finished_at)
            .max(),
        next_schedule_time: next,
        active: active.iter().map(|r| r.id).collect(),
        last_outcome: last_finished(view).map(|r| r.outcome.as_str().to_string()),
    }
}

pub(crate) fn conditions(view: &[&Run], s: &ScheduleState, next: Option<OffsetDateTime>) -> Conditions {
    let next_run = match next {
        Some(t) => format!("next run at {}", rfc3339(t)),
        None if s.suspend => "suspended: no new runs".to_string(),
        None => "the schedule has no further instant".to_string(),
    };
    let last = last_finished(view);
    let ended = |r: &Run| match (r.outcome, r.exit_code) {
        (Outcome::Failed, Some(c)) => format!("{} failed: exit code {c}: {}", run_of(r), r.message),
        _ => format!("{}: {}", run_of(r), r.message),
    };
    let ready = match last {
        None => (true, "NoRunYet", next_run.clone()),
        Some(r) => match r.outcome {
            Outcome::Succeeded => (
                true,
                "LastRunSucceeded",
                format!(
                    "{} succeeded at {}",
                    run_of(r),
                    rfc3339(r.finished_at.unwrap_or(r.scheduled_at))
                ),
            ),
            Outcome::Failed => (false, "LastRunFailed", ended(r)),
            Outcome::TimedOut => (false, "LastRunTimedOut", ended(r)),
            _ => (false, "LastRunReplaced", ended(r)),
        },
    };
    let mut active: Vec<&Run> = view.iter().filter(|r| r.outcome.is_active()).copied().collect();
    active.sort_by_key(|r| (r.scheduled_at, r.id));
    let progressing = match active.last() {
        Some(r) => {
            let mut msg = match (r.outcome, r.started_at) {
                (Outcome::Running, Some(at)) => {
                    format!("{} running since {} (attempt {})", run_of(r), rfc3339(at), r.attempt)
                }
                _ if r.message.is_empty() => format!("{} pending (attempt {})", run_of(r), r.attempt),
                _ => format!("{} pending (attempt {}): {}", run_of(r), r.attempt, r.message),
            };
            if active.len() > 1 {
                msg.push_str(&format!("; {} more active", active.len() - 1));
            }
            (true, "RunActive", msg)
        }
        None if s.suspend => (false, "Suspended", "suspended: no new runs".to_string()),
        None => (false, "Idle", next_run),
    };
    let newest_instant = view.iter().find(|r| r.trigger != Trigger::Manual);
    let degraded = match last {
        Some(r) if r.outcome == Outcome::Failed => (true, "RunFailed", ended(r)),
        Some(r) if r.outcome == Outcome::TimedOut => (true, "RunTimedOut", ended(r)),
        _ => match newest_instant {
            Some(r) if r.outcome == Outcome::Missed => (true, "RunMissed", ended(r)),
            _ => (false, "AsExpected", String::new()),
        },
    };
    Conditions {
        ready,
        progressing,
        degraded,
    }
}
