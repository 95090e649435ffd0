//! The Database's conditions and its one-view report (`steward describe Database/NAME`: the
//! guide's six `psql` queries at a glance), and the deploy gate. Pure: from an observation, the
//! backups steward recorded, and the time.

use std::time::Duration;

use serde::Serialize;
use steward_core::rfc3339;
use steward_core::status::{ConditionStatus, ConditionType};
use time::OffsetDateTime;

use crate::backup::{newest, Backup};
use crate::maintenance::{needs_vacuum, window_closes};
use crate::model::DatabaseState;
use crate::observe::{Observation, ServerObs, SlotRow, SlowStats};
use crate::replication::{assess, Lag, Verdict};

/// A condition as the kind decides it; the controller keeps its transition time.
pub type Decided = (ConditionType, ConditionStatus, &'static str, String);

/// The lag of every declared replica, measured against `limit`.
pub fn lags(obs: &Observation, limit: Duration) -> Vec<Lag> {
    let Ok(p) = &obs.primary else { return vec![] };
    obs.replicas
        .iter()
        .map(|r| match &r.obs {
            Ok(f) => {
                let mut l = assess(&p.replication, &f.replay.name, Some(&f.replay), limit.as_secs_f64());
                l.replica = r.server.clone();
                l
            }
            Err(e) => Lag {
                replica: r.server.clone(),
                verdict: Verdict::Unknown,
                bytes: None,
                seconds: None,
                message: format!("replica unreachable: {e}"),
            },
        })
        .collect()
}

/// Why a deploy gated on this Database must wait; `None` when the gate is open. An unknown
/// primary, a primary in recovery, or any replica not streaming within `max_lag` holds it.
pub fn gate_hold(name: &str, obs: Option<&Observation>, max_lag: Duration) -> Option<String> {
    let Some(obs) = obs else {
        return Some(format!("Database/{name}: not observed yet"));
    };
    match &obs.primary {
        Err(e) => return Some(format!("Database/{name}: primary {} unknown: {e}", obs.primary_server)),
        Ok(p) if p.server.in_recovery => {
            return Some(format!(
                "Database/{name}: primary {} is in recovery (not writable)",
                obs.primary_server
            ))
        }
        Ok(_) => {}
    }
    let held: Vec<String> = lags(obs, max_lag)
        .into_iter()
        .filter(|l| !l.is_healthy())
        .map(|l| format!("replica {} {}", l.replica, l.message))
        .collect();
    (!held.is_empty()).then(|| {
        format!(
            "Database/{name}: replication lag over {}s: {}",
            max_lag.as_secs(),
            held.join("; ")
        )
    })
}

/// One server in the report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerReport {
    pub server: String,
    /// `primary` or `replica`, as declared.
    pub role: &'static str,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub facts: Option<ServerObs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_connections: Option<u64>,
}

/// A table over the vacuum thresholds.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadTuples {
    pub table: String,
    pub dead: u64,
    pub ratio: f64,
    pub over_thresholds: bool,
}

/// The newest backup and restore test, for the report.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<Backup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restore_test: Option<crate::backup::RestoreResult>,
    pub count: usize,
}

/// `status.details` of a Database.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    pub servers: Vec<ServerReport>,
    pub replication: Vec<Lag>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<SlotRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<SlowStats>,
    /// The tables with the most dead tuples (at most 10).
    pub dead_tuples: Vec<DeadTuples>,
    pub backups: BackupSummary,
    /// Next instants of the Database's calendars, by task (`backup`, `restore-test`, ...).
    pub next_runs: std::collections::BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_open_until: Option<String>,
}

pub struct Input<'a> {
    pub db: &'a DatabaseState,
    pub obs: &'a Observation,
    /// `Err` when the store could not be read: BackupHealthy is then Unknown.
    pub backups: Result<&'a [Backup], String>,
    pub now: OffsetDateTime,
}

pub fn report(i: &Input<'_>) -> Report {
    let obs = i.obs;
    let mut servers = vec![match &obs.primary {
        Ok(p) => ServerReport {
            server: obs.primary_server.clone(),
            role: "primary",
            reachable: true,
            error: None,
            total_connections: Some(p.server.total_connections()),
            facts: Some(p.server.clone()),
        },
        Err(e) => ServerReport {
            server: obs.primary_server.clone(),
            role: "primary",
            reachable: false,
            error: Some(e.clone()),
            facts: None,
            total_connections: None,
        },
    }];
    for r in &obs.replicas {
        servers.push(match &r.obs {
            Ok(f) => ServerReport {
                server: r.server.clone(),
                role: "replica",
                reachable: true,
                error: None,
                total_connections: Some(f.server.total_connections()),
                facts: Some(f.server.clone()),
            },
            Err(e) => ServerReport {
                server: r.server.clone(),
                role: "replica",
                reachable: false,
                error: Some(e.clone()),
                facts: None,
                total_connections: None,
            },
        });
    }
    let vacuum = i.db.spec.maintenance.as_ref().and_then(|m| m.vacuum.clone());
    let mut dead_tuples: Vec<DeadTuples> = obs
        .stats
        .iter()
        .flat_map(|s| s.tables.iter())
        .filter(|t| t.dead > 0)
        .map(|t| DeadTuples {
            table: t.name.clone(),
            dead: t.dead,
            ratio: t.dead_ratio(),
            over_thresholds: vacuum.as_ref().is_some_and(|v| needs_vacuum(&t.stats(), v)),
        })
        .collect();
    dead_tuples.sort_by(|a, b| b.dead.cmp(&a.dead).then(a.table.cmp(&b.table)));
    dead_tuples.truncate(10);
    let live: Vec<&Backup> = i
        .backups
        .as_ref()
        .map(|b| b.iter().filter(|b| b.is_live()).collect())
        .unwrap_or_default();
    let backups = BackupSummary {
        newest: newest(live.iter().copied()).cloned(),
        last_restore_test: live
            .iter()
            .filter_map(|b| b.restore.as_ref())
            .max_by_key(|r| r.at)
            .cloned(),
        count: live.len(),
    };
    let mut next_runs = std::collections::BTreeMap::new();
    for t in crate::model::Task::ALL {
        if let Some(next) = i.db.calendar(t).and_then(|c| c.next_after(i.now)) {
            next_runs.insert(t.as_str(), rfc3339(next));
        }
    }
    let window_open_until = i.db.window.as_ref().and_then(|w| {
        let d = i.db.spec.maintenance.as_ref()?.window.duration.get();
        window_closes(w, d, i.now).map(rfc3339)
    });
    Report {
        observed_at: obs.at,
        servers,
        replication: lags(obs, i.db.lag_limit()),
        slots: obs.primary.as_ref().map(|p| p.slots.clone()).unwrap_or_default(),
        stats: obs.stats.clone(),
        dead_tuples,
        backups,
        next_runs,
        window_open_until,
    }
}

/// The period of a calendar around `now`: the gap between its last instant and the next one.
fn period(cal: &steward_schedule::cron::CronSchedule, now: OffsetDateTime) -> Option<time::Duration> {
    let next = cal.next_after(now)?;
    let after = cal.next_after(next)?;
    Some(after - next)
}

/// How much later than its period the newest backup may be before BackupHealthy turns False:
/// a quarter of the period, at least five minutes (a daily backup: 6 h).
fn margin(p: time::Duration) -> time::Duration {
    std::cmp::max(p / 4, time::Duration::minutes(5))
}

pub fn conditions(i: &Input<'_>) -> Vec<Decided> {
    use ConditionStatus::{False, True, Unknown};
    use ConditionType::*;
    let db = i.db;
    let obs = i.obs;
    let limit = db.lag_limit();
    let mut out: Vec<Decided> = Vec::new();
    let primary = match &obs.primary {
        Ok(p) if p.server.in_recovery => {
            out.push((
                Ready,
                False,
                "PrimaryInRecovery",
                format!("primary {} is in recovery: not writable", obs.primary_server),
            ));
            None
        }
        Ok(p) => {
            let total = p.server.total_connections();
            let over = total > u64::from(db.spec.thresholds.connections);
            let long = p
                .server
                .longest_transaction_seconds
                .filter(|s| *s > db.spec.thresholds.long_transaction.get().as_secs_f64());
            let mut msg = format!(
                "primary {} reachable and writable, PostgreSQL {}; {total} connections",
                obs.primary_server, p.server.version
            );
            if over {
                msg.push_str(&format!(" (over the limit of {})", db.spec.thresholds.connections));
            }
            if let Some(s) = long {
                msg.push_str(&format!(
                    "; a transaction open for {s:.0}s ({})",
                    p.server.longest_transaction.as_deref().unwrap_or("?")
                ));
            }
            if let Some(Err(why)) = obs.stats.as_ref().map(|s| &s.statements) {
                // Not an error of the database: the statement statistics are simply not there.
                msg.push_str(&format!("; top statements unknown: {why}"));
            }
            let reason = match (over, long.is_some()) {
                (true, _) => "TooManyConnections",
                (false, true) => "LongTransaction",
                _ => "PrimaryWritable",
            };
            out.push((Ready, True, reason, msg));
            Some(p)
        }
        Err(e) => {
            out.push((
                Ready,
                Unknown,
                "PrimaryUnreachable",
                format!("primary {}: {e}", obs.primary_server),
            ));
            None
        }
    };
    let lags = lags(obs, limit);
    let replication = match &obs.primary {
        Err(e) => (
            Unknown,
            "PrimaryUnreachable",
            format!("the primary could not be read: {e}"),
        ),
        Ok(_) if lags.is_empty() => (True, "NoReplicas", "no replicas declared".to_string()),
        Ok(_) => match lags.iter().find(|l| !l.is_healthy()) {
            Some(l) if l.verdict == Verdict::Unknown => {
                (Unknown, "ReplicaUnknown", format!("{}: {}", l.replica, l.message))
            }
            Some(l) => (
                False,
                verdict_reason(l.verdict),
                format!("{}: {}", l.replica, l.message),
            ),
            None => (
                True,
                "Streaming",
                format!(
                    "{} replica(s) streaming within {}s: {}",
                    lags.len(),
                    limit.as_secs(),
                    lags.iter()
                        .map(|l| format!("{} {}s", l.replica, l.seconds.map_or("?".into(), |s| format!("{s:.1}"))))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        },
    };
    out.push((ReplicationHealthy, replication.0, replication.1, replication.2));
    out.push(backup_condition(i));
    out.push(maintenance_condition(i));
    // FailoverReady: the guide's monthly failover test, as a standing check.
    let failover = match primary {
        None => (Unknown, "PrimaryUnknown", "the primary could not be judged".to_string()),
        Some(_) if lags.is_empty() => (False, "NoReplicas", "no replica to promote".to_string()),
        Some(p) => {
            let mut problems = Vec::new();
            for (l, r) in lags.iter().zip(&obs.replicas) {
                if !l.is_healthy() {
                    problems.push(format!("{}: {}", l.replica, l.message));
                    continue;
                }
                if let Ok(f) = &r.obs {
                    if let Some(slot) = &f.slot {
                        match p.slots.iter().find(|s| &s.name == slot) {
                            None => problems.push(format!("{}: slot {slot:?} missing on the primary", l.replica)),
                            Some(s) if !s.active => problems.push(format!("{}: slot {slot:?} inactive", l.replica)),
                            Some(s) if matches!(s.wal_status.as_str(), "lost" | "unreserved") => {
                                problems.push(format!("{}: slot {slot:?} wal_status {}", l.replica, s.wal_status))
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
            if problems.is_empty() {
                (
                    True,
                    "ReplicasCaughtUp",
                    format!(
                        "every replica in recovery, streaming and within {}s; promotion stays a human decision",
                        limit.as_secs()
                    ),
                )
            } else {
                (False, "ReplicaNotReady", problems.join("; "))
            }
        }
    };
    out.push((FailoverReady, failover.0, failover.1, failover.2));
    out
}

fn verdict_reason(v: Verdict) -> &'static str {
    match v {
        Verdict::Healthy => "Streaming",
        Verdict::Lagging => "Lagging",
        Verdict::ReplayPaused => "ReplayPaused",
        Verdict::Disconnected => "ReplicaDisconnected",
        Verdict::NotInRecovery => "ReplicaWritable",
        Verdict::PrimaryInRecovery => "PrimaryInRecovery",
        Verdict::Unknown => "ReplicaUnknown",
    }
}

fn backup_condition(i: &Input<'_>) -> Decided {
    use ConditionStatus::{False, True, Unknown};
    let t = ConditionType::BackupHealthy;
    let (Some(spec), Some(cal)) = (&i.db.spec.backup, &i.db.backup) else {
        return (t, False, "NotConfigured", "no spec.backup declared".into());
    };
    let backups = match &i.backups {
        Ok(b) => *b,
        Err(e) => {
            return (
                t,
                Unknown,
                "StoreUnreadable",
                format!("the backups could not be listed: {e}"),
            )
        }
    };
    let live: Vec<&Backup> = backups.iter().filter(|b| b.is_live()).collect();
    let Some(newest) = newest(live.iter().copied()) else {
        return (t, False, "NoBackup", format!("no backup yet in {}", spec.directory));
    };
    let age = i.now - newest.taken_at;
    if let Some(p) = period(cal, i.now) {
        if age > p + margin(p) {
            return (
                t,
                False,
                "BackupTooOld",
                format!(
                    "newest backup {} is {}h old; the schedule {:?} expects one every {}h",
                    newest.file,
                    age.whole_hours(),
                    spec.schedule,
                    p.whole_hours()
                ),
            );
        }
    }
    if spec.restore_test.is_some() {
        match live
            .iter()
            .filter(|b| b.restore.is_some())
            .max_by_key(|b| b.restore.as_ref().map(|r| r.at))
        {
            None => {
                return (
                    t,
                    False,
                    "NeverVerified",
                    format!("newest backup {}; no restore test has run yet", newest.file),
                )
            }
            Some(b) => {
                let r = b.restore.as_ref().expect("filtered");
                if !r.passed {
                    return (
                        t,
                        False,
                        "RestoreTestFailed",
                        format!("restore test of {} failed at {}: {}", b.file, rfc3339(r.at), r.message),
                    );
                }
                return (
                    t,
                    True,
                    "BackupVerified",
                    format!(
                        "newest backup {} ({} bytes) at {}; restore test of {} passed in {:.1}s",
                        newest.file,
                        newest.size_bytes,
                        rfc3339(newest.taken_at),
                        b.file,
                        r.restore_seconds
                    ),
                );
            }
        }
    }
    (
        t,
        True,
        "BackupRecent",
        format!(
            "newest backup {} at {} (no restore test declared)",
            newest.file,
            rfc3339(newest.taken_at)
        ),
    )
}

fn maintenance_condition(i: &Input<'_>) -> Decided {
    use ConditionStatus::{False, True, Unknown};
    let t = ConditionType::MaintenanceDue;
    let Some(v) = i.db.spec.maintenance.as_ref().and_then(|m| m.vacuum.as_ref()) else {
        return (t, False, "NotConfigured", "no spec.maintenance.vacuum declared".into());
    };
    let Some(stats) = &i.obs.stats else {
        return (t, Unknown, "StatsUnknown", "table statistics not read yet".into());
    };
    let over: Vec<String> = stats
        .tables
        .iter()
        .filter(|x| needs_vacuum(&x.stats(), v))
        .map(|x| format!("{} ({} dead, {:.0}%)", x.name, x.dead, x.dead_ratio() * 100.0))
        .collect();
    if over.is_empty() {
        return (t, False, "NothingDue", "no table over the vacuum thresholds".into());
    }
    let when = match (&i.db.window, i.db.spec.maintenance.as_ref()) {
        (Some(w), Some(m)) => match window_closes(w, m.window.duration.get(), i.now) {
            Some(end) => format!("window open until {}", rfc3339(end)),
            None => w
                .next_after(i.now)
                .map_or("no next window".into(), |n| format!("next window at {}", rfc3339(n))),
        },
        _ => String::new(),
    };
    (
        t,
        True,
        "VacuumDue",
        format!(
            "{} table(s) over the thresholds, {when}: {}",
            over.len(),
            over.join(", ")
        ),
    )
}
