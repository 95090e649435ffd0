//! `Plan::display`: what a pass will do, as a person reads it (`steward plan`).

use std::fmt::Write as _;

use steward_core::{rfc3339, Requeue};

use crate::plan::{Plan, StopReason};
use crate::planner::fmt_duration;
use crate::run::{Outcome, Run};

impl Plan {
    /// One line per action, like a diff: jobs stopped (`-`), started (`+`), rows recorded (`+`),
    /// updated (`~`), job services removed and rows pruned (`-`); then the cursor, the events
    /// (warnings last, so they are seen) and when to look again.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for s in &self.stop {
            let why = match s.why {
                StopReason::TimedOut => "timed out",
                StopReason::Replaced => "replaced",
            };
            let _ = writeln!(out, "- stop    {} ({why})", s.job);
        }
        for s in &self.start {
            let _ = writeln!(
                out,
                "+ start   {} with {} (run of {}, attempt {})",
                s.job,
                s.image,
                rfc3339(s.scheduled_at),
                s.attempt
            );
        }
        for r in &self.record {
            let _ = writeln!(out, "+ record  {}", row(r, None));
        }
        for (expected, r) in &self.update {
            let _ = writeln!(out, "~ update  #{} {}", r.id, row(r, Some(*expected)));
        }
        for job in &self.remove {
            let _ = writeln!(out, "- remove  {job} (finished)");
        }
        if !self.prune.is_empty() {
            let ids: Vec<String> = self.prune.iter().map(|i| format!("#{i}")).collect();
            let _ = writeln!(out, "- prune   {} (beyond history)", ids.join(", "));
        }
        if let Some(c) = self.cursor {
            let _ = writeln!(out, "  cursor  {}", rfc3339(c));
        }
        if out.is_empty() {
            out.push_str("  no changes\n");
        }
        let (warnings, normal): (Vec<_>, Vec<_>) = self.events.iter().partition(|e| e.reason.is_warning());
        for e in normal {
            let _ = writeln!(out, "  event   Normal  {}: {}", e.reason.as_str(), e.message);
        }
        let requeue = match self.requeue {
            Requeue::Never => "never (until a trigger)".to_string(),
            Requeue::After(d) => format!("after {}", fmt_duration(d)),
            Requeue::At(t) => format!("at {}", rfc3339(t)),
        };
        let _ = writeln!(out, "  requeue {requeue}");
        for e in warnings {
            let _ = writeln!(out, "! event   Warning {}: {}", e.reason.as_str(), e.message);
        }
        out
    }
}

/// A row in one line: instant, outcome (`from -> to` for an update), trigger, attempt, job and
/// message.
fn row(r: &Run, from: Option<Outcome>) -> String {
    let outcome = match from {
        Some(f) => format!("{} -> {}", f.as_str(), r.outcome.as_str()),
        None => r.outcome.as_str().to_string(),
    };
    let mut s = format!("{} {outcome} ({}", rfc3339(r.scheduled_at), r.trigger.as_str());
    if r.attempt > 1 {
        let _ = write!(s, ", attempt {}", r.attempt);
    }
    s.push(')');
    if let Some(job) = &r.job {
        let _ = write!(s, " job {job}");
    }
    if let Some(code) = r.exit_code {
        let _ = write!(s, " exit code {code}");
    }
    if !r.message.is_empty() {
        let _ = write!(s, ": {}", r.message);
    }
    s
}
