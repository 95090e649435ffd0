//! Whether maintenance may run now, and what it does next: `VACUUM (ANALYZE)` of one table over
//! both thresholds at a time, inside the window only, never during a rollout, never while a
//! replica lags (vacuum writes WAL the replicas must replay), never on an unknown primary. A window
//! that closes mid-way leaves the rest for the next one: each step is decided anew.

use std::time::Duration;

use serde::Serialize;
use steward_schedule::cron::CronSchedule;
use time::OffsetDateTime;

use crate::replication::Lag;
use crate::spec::Vacuum;

/// Dead and live tuples of one table (`pg_stat_user_tables`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableStats {
    /// `schema.table`.
    pub name: String,
    pub live: u64,
    pub dead: u64,
}

impl TableStats {
    pub fn dead_ratio(&self) -> f64 {
        let total = self.live + self.dead;
        if total == 0 {
            0.0
        } else {
            self.dead as f64 / total as f64
        }
    }
}

/// Over both thresholds: at least `minDeadTuples` dead tuples and a dead ratio of at least
/// `deadTupleRatio`.
pub fn needs_vacuum(t: &TableStats, v: &Vacuum) -> bool {
    t.dead >= v.min_dead_tuples && t.dead_ratio() >= v.dead_tuple_ratio
}

/// The window is open when an instant of its calendar lies within `duration` before `now`;
/// returns when it closes.
pub fn window_closes(cal: &CronSchedule, duration: Duration, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let d = time::Duration::try_from(duration).ok()?;
    let (starts, _) = cal.between(now - d, now, 1);
    starts.last().map(|start| *start + d).filter(|end| *end > now)
}

/// Why maintenance does not run now (status and events say it).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "hold")]
pub enum Hold {
    WindowClosed { next: Option<OffsetDateTime> },
    RolloutInProgress,
    ReplicationLagging { replica: String, message: String },
    PrimaryUnknown { reason: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Vacuum this table now; the others wait for the next step.
    Vacuum {
        table: TableStats,
        window_closes: OffsetDateTime,
    },
    /// Nothing over the thresholds.
    Done,
    Held(Hold),
}

pub struct Input<'a> {
    pub now: OffsetDateTime,
    pub window: &'a CronSchedule,
    pub window_duration: Duration,
    pub vacuum: &'a Vacuum,
    /// `Err` when the primary could not be read.
    pub tables: Result<&'a [TableStats], String>,
    pub replicas: &'a [Lag],
    pub rollout_active: bool,
}

/// The next maintenance step. The worst table (most dead tuples) goes first.
pub fn next_step(i: &Input<'_>) -> Step {
    let tables = match &i.tables {
        Ok(t) => *t,
        Err(reason) => return Step::Held(Hold::PrimaryUnknown { reason: reason.clone() }),
    };
    let Some(closes) = window_closes(i.window, i.window_duration, i.now) else {
        return Step::Held(Hold::WindowClosed {
            next: i.window.next_after(i.now),
        });
    };
    if i.rollout_active {
        return Step::Held(Hold::RolloutInProgress);
    }
    if let Some(l) = i.replicas.iter().find(|l| !l.is_healthy()) {
        return Step::Held(Hold::ReplicationLagging {
            replica: l.replica.clone(),
            message: l.message.clone(),
        });
    }
    let mut over: Vec<&TableStats> = tables.iter().filter(|t| needs_vacuum(t, i.vacuum)).collect();
    over.sort_by(|a, b| b.dead.cmp(&a.dead).then(a.name.cmp(&b.name)));
    match over.first() {
        Some(t) => Step::Vacuum {
            table: (*t).clone(),
            window_closes: closes,
        },
        None => Step::Done,
    }
}
