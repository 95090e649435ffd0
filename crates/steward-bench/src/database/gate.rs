//! Section 3: from lag appearing to the deploy gate holding, and from replay resuming to it
//! opening, on fresh observations in a bounded loop. Replay is resumed by a guard whatever
//! happens (the script's exit trap resumes it again if this process is killed).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use steward_backends::database::Observer;
use steward_database::observe::Observation;
use steward_database::status::gate_hold;
use steward_database::DatabaseState;
use time::OffsetDateTime;

use super::{client, database_state, with_db, Opts};
use crate::stats::{fmt_ms, max, median, min, ms};

const HOLD_TIMEOUT: Duration = Duration::from_secs(20);
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const NAME: &str = "bench-db";

/// Resumes replay on the replica when dropped (a failed or panicking round included).
struct ResumeGuard {
    replica: String,
}

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        for attempt in 0..5 {
            match client(&self.replica).and_then(|mut c| Ok(c.batch_execute("SELECT pg_wal_replay_resume()")?)) {
                Ok(()) => return,
                Err(e) => {
                    say!("gate: cannot resume replay (attempt {}): {e:#}", attempt + 1);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        say!(
            "gate: REPLAY MAY STILL BE PAUSED on {}: run SELECT pg_wal_replay_resume()",
            self.replica
        );
    }
}

fn observe(ob: &mut Observer, db: &DatabaseState) -> (Duration, Observation) {
    let t = Instant::now();
    let o = ob.observe(db, None, false, OffsetDateTime::now_utc());
    (t.elapsed(), o)
}

/// Observes until `done(gate_hold)` or the timeout: (time from `t0`, observations, last reason).
fn until(
    ob: &mut Observer,
    db: &DatabaseState,
    t0: Instant,
    timeout: Duration,
    passes: &mut Vec<f64>,
    mut done: impl FnMut(&Option<String>, &Observation) -> bool,
) -> anyhow::Result<(Duration, usize, Option<String>)> {
    let mut n = 0;
    loop {
        let (dt, o) = observe(ob, db);
        passes.push(ms(dt));
        n += 1;
        let hold = gate_hold(NAME, Some(&o), db.lag_limit());
        if done(&hold, &o) {
            return Ok((t0.elapsed(), n, hold));
        }
        if t0.elapsed() > timeout {
            anyhow::bail!("not reached within {timeout:?} ({n} observations); last: {hold:?}");
        }
    }
}

fn replica_replay(o: &Observation) -> Option<u64> {
    o.replicas.first()?.obs.as_ref().ok()?.replay.replay_lsn
}

struct Round {
    hold: Duration,
    hold_obs: usize,
    open: Duration,
    open_obs: usize,
    replayed: Option<Duration>,
    reason: String,
}

pub fn run(o: &Opts) -> anyhow::Result<String> {
    let (purl, rurl) = (with_db(&o.primary, &o.db), with_db(&o.replica, &o.db));
    let db = database_state(NAME, &purl, &rurl)?;
    let mut primary = client(&purl)?;
    let mut replica = client(&rurl)?;
    primary.batch_execute(
        "CREATE TABLE IF NOT EXISTS bench_lag_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
    )?;
    let mut ob = Observer::default();
    let mut passes = Vec::new();
    // Open before anything (replay running, caught up); another user's pause would show here.
    let t = Instant::now();
    until(&mut ob, &db, t, OPEN_TIMEOUT, &mut passes, |h, _| h.is_none())?;
    let mut rounds = Vec::new();
    let mut notes = Vec::new();
    let mut tries = 0;
    while rounds.len() < o.gate_rounds && tries < 2 * o.gate_rounds {
        tries += 1;
        let i = rounds.len();
        let guard = ResumeGuard { replica: rurl.clone() };
        replica.batch_execute("SELECT pg_wal_replay_pause()")?;
        // PostgreSQL 14+: the pause is requested, then takes effect.
        let t = Instant::now();
        loop {
            let s: String = replica.query_one("SELECT pg_get_wal_replay_pause_state()", &[])?.get(0);
            if s == "paused" {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("replay not paused within 10 s (state {s})");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (_, before) = observe(&mut ob, &db);
        if let Some(h) = gate_hold(NAME, Some(&before), db.lag_limit()) {
            // Someone else's write or pause: this round would measure nothing; not counted.
            notes.push(format!("a round was held before its write and not counted: `{h}`"));
            drop(guard);
            let t = Instant::now();
            until(&mut ob, &db, t, OPEN_TIMEOUT, &mut passes, |h, _| h.is_none())?;
            continue;
        }
        // The lag appears: one committed write on the primary.
        primary.batch_execute("INSERT INTO bench_lag_probe DEFAULT VALUES")?;
        let t0 = Instant::now();
        let (hold, hold_obs, reason) = until(&mut ob, &db, t0, HOLD_TIMEOUT, &mut passes, |h, _| h.is_some())?;
        let write_lsn: String = primary.query_one("SELECT pg_current_wal_lsn()::text", &[])?.get(0);
        let write_lsn = steward_database::replication::parse_lsn(&write_lsn).unwrap_or(u64::MAX);
        replica.batch_execute("SELECT pg_wal_replay_resume()")?;
        let t1 = Instant::now();
        let mut replayed = None;
        let (open, open_obs, _) = until(&mut ob, &db, t1, OPEN_TIMEOUT, &mut passes, |h, ob| {
            if replayed.is_none() && replica_replay(ob).is_some_and(|l| l >= write_lsn) {
                replayed = Some(t1.elapsed());
            }
            h.is_none()
        })?;
        drop(guard);
        rounds.push(Round {
            hold,
            hold_obs,
            open,
            open_obs,
            replayed,
            reason: reason.unwrap_or_default(),
        });
        say!(
            "gate round {}: held after {} ({hold_obs} obs), open {} after resume ({open_obs} obs)",
            i + 1,
            fmt_ms(ms(hold)),
            fmt_ms(ms(open))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Replay running at the end (the guards resumed it; checked).
    let paused: bool = replica.query_one("SELECT pg_is_wal_replay_paused()", &[])?.get(0);
    if paused {
        replica.batch_execute("SELECT pg_wal_replay_resume()")?;
        notes.push("replay was found paused at the end and resumed".into());
    }
    let col = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
    let cell = |xs: &[f64]| format!("{} / {} / {}", fmt_ms(min(xs)), fmt_ms(median(xs)), fmt_ms(max(xs)));
    let cnt = |xs: &[f64]| format!("{:.0} / {:.0} / {:.0}", min(xs), median(xs), max(xs));
    let hold = col(&|r| ms(r.hold));
    let open = col(&|r| ms(r.open));
    let replayed: Vec<f64> = rounds.iter().filter_map(|r| r.replayed.map(ms)).collect();
    let mut out = String::new();
    let _ = writeln!(out, "### Replication lag → deploy gate\n");
    let _ = writeln!(
        out,
        "{} rounds. Limit {} s (`thresholds.replicationLag`). Observations back to back on kept connections; \
         cells are min / median / max.\n",
        rounds.len(),
        db.lag_limit().as_secs()
    );
    let _ = writeln!(
        out,
        "| measurement | N | min / median / max | observations until then (min / median / max) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| write committed on the primary (replay paused) → `gate_hold` returns Some | {} | {} | {} |",
        hold.len(),
        cell(&hold),
        cnt(&col(&|r| r.hold_obs as f64))
    );
    let _ = writeln!(
        out,
        "| `pg_wal_replay_resume()` returned → replica's replay LSN past the write | {} | {} | – |",
        replayed.len(),
        cell(&replayed)
    );
    let _ = writeln!(
        out,
        "| `pg_wal_replay_resume()` returned → `gate_hold` returns None | {} | {} | {} |",
        open.len(),
        cell(&open),
        cnt(&col(&|r| r.open_obs as f64))
    );
    let _ = writeln!(
        out,
        "| one cheap observation inside these loops | {} | {} | – |",
        passes.len(),
        cell(&passes)
    );
    if let Some(r) = rounds.first() {
        let _ = writeln!(out, "\nThe reason while held (round 1): `{}`.", r.reason);
    }
    for n in &notes {
        let _ = writeln!(out, "- {n}");
    }
    let _ = writeln!(out);
    Ok(out)
}
