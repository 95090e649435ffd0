//! Replication lag from both ends, idle-safe and honest about broken replicas.
//!
//! - **Bytes behind** are measured against the primary's current WAL position, never against the
//!   replica's own receive position: a replica that stopped receiving has receive == replay and
//!   would otherwise look caught up.
//! - **Seconds behind** come from the primary's `pg_stat_replication.replay_lag` while the
//!   replica streams; when nothing is behind (bytes == 0) the lag is 0 s whatever the age of the
//!   last replayed transaction, so an idle primary is not "lagging". Only when bytes are behind and
//!   the primary has no lag figure is the age of the last replayed transaction used.
//! - A replica the primary does not list as streaming, or that is not in recovery, is not given a
//!   lag at all: it is `Disconnected` or `NotInRecovery`, an error condition, never "0 s".

use serde::Serialize;

/// A WAL position (`pg_lsn`) as a byte offset.
pub type Lsn = u64;

/// Parses PostgreSQL's `XXXXXXXX/YYYYYYYY` LSN text.
pub fn parse_lsn(s: &str) -> Option<Lsn> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

/// What the primary says about one standby (`pg_stat_replication`).
#[derive(Clone, Debug, PartialEq)]
pub struct SenderRow {
    /// `application_name` (or the client address): how the replica is matched.
    pub name: String,
    /// `state`: `streaming`, `catchup`, `startup`, `backup`, `stopping`.
    pub state: String,
    pub replay_lsn: Option<Lsn>,
    /// `replay_lag` in seconds; NULL (None) once the standby has caught up and nothing is sent.
    pub replay_lag_secs: Option<f64>,
}

/// What the primary says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct PrimaryObs {
    /// `pg_is_in_recovery()`: a primary in recovery is an error, not a guess.
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()`.
    pub current_lsn: Lsn,
    pub senders: Vec<SenderRow>,
}

/// What a replica says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaObs {
    /// The name the primary lists it under (`application_name` in its `primary_conninfo`).
    pub name: String,
    /// `pg_is_in_recovery()`: a writable "replica" is an error.
    pub in_recovery: bool,
    /// `pg_last_wal_receive_lsn()`; None when it never received (or is not a standby).
    pub receive_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`.
    pub replay_lsn: Option<Lsn>,
    /// `now() - pg_last_xact_replay_timestamp()` in seconds, when there was a replayed transaction.
    pub last_replay_age_secs: Option<f64>,
    /// `pg_is_wal_replay_paused()`.
    pub replay_paused: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Streaming and within the limit.
    Healthy,
    /// Streaming, behind by more than the limit.
    Lagging,
    /// Replay is paused on the replica (`pg_wal_replay_pause()`): it falls behind as the primary writes.
    ReplayPaused,
    /// The primary does not list it as streaming: it receives nothing, whatever its own positions say.
    Disconnected,
    /// The "replica" is writable (not in recovery).
    NotInRecovery,
    /// The primary itself is in recovery: no lag can be trusted.
    PrimaryInRecovery,
    /// The replica could not be read; with the primary's view only.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lag {
    pub replica: String,
    pub verdict: Verdict,
    /// Bytes of WAL the replica has not replayed, against the primary's current position.
    pub bytes: Option<u64>,
    /// Seconds behind; None when it cannot be said honestly (disconnected, not in recovery).
    pub seconds: Option<f64>,
    /// For status and events: what was measured, in words.
    pub message: String,
}

impl Lag {
    /// Holds a deploy gate (`maxReplicationLag`) closed: anything but Healthy.
    pub fn is_healthy(&self) -> bool {
        self.verdict == Verdict::Healthy
    }
}

/// The assessment of one replica. `replica` is None when it could not be read.
pub fn assess(primary: &PrimaryObs, name: &str, replica: Option<&ReplicaObs>, limit_secs: f64) -> Lag {
    let lag = |verdict, bytes, seconds, message: String| Lag {
        replica: name.to_string(),
        verdict,
        bytes,
        seconds,
        message,
    };
    if primary.in_recovery {
        return lag(
            Verdict::PrimaryInRecovery,
            None,
            None,
            "the primary is in recovery (pg_is_in_recovery() is true): replication cannot be judged".into(),
        );
    }
    let sender = primary.senders.iter().find(|s| s.name == name);
    let streaming = sender.is_some_and(|s| s.state == "streaming");
    let Some(r) = replica else {
        // The primary's view alone: bytes from its row, no verdict on health.
        let bytes = sender
            .and_then(|s| s.replay_lsn)
            .map(|l| primary.current_lsn.saturating_sub(l));
        return lag(
            Verdict::Unknown,
            bytes,
            None,
            format!(
                "replica unreachable; the primary {} it",
                if streaming { "streams to" } else { "does not stream to" }
            ),
        );
    };
    if !r.in_recovery {
        return lag(
            Verdict::NotInRecovery,
            None,
            None,
            "not in recovery (pg_is_in_recovery() is false): a writable server, not a replica".into(),
        );
    }
    let replayed = r.replay_lsn.or(sender.and_then(|s| s.replay_lsn));
    let bytes = replayed.map(|l| primary.current_lsn.saturating_sub(l));
    if !streaming {
        let state = sender.map_or("not listed in pg_stat_replication".to_string(), |s| {
            format!("in state {:?}", s.state)
        });
        return lag(
            Verdict::Disconnected,
            bytes,
            None,
            format!(
                "not streaming from the primary ({state}); {} bytes behind the primary's current position",
                bytes.map_or("unknown".into(), |b| b.to_string())
            ),
        );
    }
    let Some(bytes_behind) = bytes else {
        return lag(
            Verdict::Unknown,
            None,
            None,
            "streaming, but neither end reports a replay position".into(),
        );
    };
    let bytes = Some(bytes_behind);
    let seconds = match bytes_behind {
        // Nothing to replay: caught up, however long ago the last transaction was (idle primary).
        0 => Some(0.0),
        _ => sender.and_then(|s| s.replay_lag_secs).or(r.last_replay_age_secs),
    };
    let behind = |s: Option<f64>| s.is_some_and(|s| s > limit_secs);
    let (verdict, what) = if r.replay_paused && bytes_behind > 0 {
        (Verdict::ReplayPaused, "replay is paused on the replica")
    } else if behind(seconds) || seconds.is_none() {
        (Verdict::Lagging, "behind by more than the limit")
    } else {
        (Verdict::Healthy, "streaming")
    };
    lag(
        verdict,
        bytes,
        seconds,
        format!(
            "{what}: {} s and {} bytes behind (limit {limit_secs} s)",
            seconds.map_or("unknown".into(), |s| format!("{s:.1}")),
            bytes.map_or("unknown".into(), |b| b.to_string())
        ),
    )
}
