//! Section 1: what one observation costs (statements, round trips, time), cheap and stats pass,
//! kept connections and anew, beside the guide's `psql -c` checks as processes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use steward_backends::database::Observer;
use steward_database::observe::Observation;
use steward_database::DatabaseState;
use time::OffsetDateTime;

use super::proxy::{Counts, Proxy};
use super::{client, database_state, host_port, psql_timed, user_of, with_db, Opts};
use crate::stats::{fmt_ms, max, median, min, ms, percentile};

const WARMUP: usize = 5;

#[derive(Clone, Copy, PartialEq)]
enum Conn {
    Kept,
    Anew,
}

/// One `observe()`; `anew` drops the observer (its connections) afterwards, inside the timing.
fn pass(kept: &mut Observer, conn: Conn, db: &DatabaseState, want_stats: bool) -> (Duration, Observation) {
    let t = Instant::now();
    let o = match conn {
        Conn::Kept => kept.observe(db, None, want_stats, OffsetDateTime::now_utc()),
        Conn::Anew => {
            let mut fresh = Observer::default();
            let o = fresh.observe(db, None, want_stats, OffsetDateTime::now_utc());
            drop(fresh);
            o
        }
    };
    (t.elapsed(), o)
}

/// Fails unless both servers were read (and, for a stats pass, the statistics).
fn check(o: &Observation, want_stats: bool, tables: usize) -> anyhow::Result<()> {
    if let Err(e) = &o.primary {
        anyhow::bail!("primary not read: {e}");
    }
    for r in &o.replicas {
        if let Err(e) = &r.obs {
            anyhow::bail!("replica {} not read: {e}", r.server);
        }
    }
    if want_stats {
        let s = o.stats.as_ref().ok_or_else(|| anyhow::anyhow!("no statistics read"))?;
        if s.tables.len() < tables {
            anyhow::bail!("statistics list {} tables, expected at least {tables}", s.tables.len());
        }
    }
    Ok(())
}

struct Guide {
    label: &'static str,
    server: &'static str,
    sql: &'static str,
}

/// The operations guide's checks (section 1.2), as an operator runs them with `psql -c`.
const GUIDE: &[Guide] = &[
    Guide {
        label: "connections by state (`pg_stat_activity`)",
        server: "primary",
        sql: "SELECT state, count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY state",
    },
    Guide {
        label: "replication (`pg_stat_replication`)",
        server: "primary",
        sql: "SELECT application_name, state, sent_lsn, replay_lsn, replay_lag FROM pg_stat_replication",
    },
    Guide {
        label: "replica role and replay age",
        server: "replica",
        sql: "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), now() - pg_last_xact_replay_timestamp()",
    },
    Guide {
        label: "largest tables (top 10 of `pg_stat_user_tables`)",
        server: "primary",
        sql: "SELECT relname, pg_size_pretty(pg_total_relation_size(relid)) FROM pg_stat_user_tables \
              ORDER BY pg_total_relation_size(relid) DESC LIMIT 10",
    },
    Guide {
        label: "dead tuples (top 10)",
        server: "primary",
        sql: "SELECT relname, n_live_tup, n_dead_tup, last_autovacuum FROM pg_stat_user_tables \
              ORDER BY n_dead_tup DESC LIMIT 10",
    },
    Guide {
        label: "slow statements (top 10 of `pg_stat_statements`)",
        server: "primary",
        sql: "SELECT left(query, 60), calls, round(mean_exec_time::numeric, 2) FROM pg_stat_statements \
              ORDER BY mean_exec_time DESC LIMIT 10",
    },
];

fn row(out: &mut String, what: &str, xs: &[f64]) {
    let _ = writeln!(
        out,
        "| {what} | {} | {} | {} | {} | {} |",
        xs.len(),
        fmt_ms(median(xs)),
        fmt_ms(percentile(xs, 95.0)),
        fmt_ms(min(xs)),
        fmt_ms(max(xs))
    );
}

/// Counts of one pass through the proxies: (primary, replica).
fn counted(db: &DatabaseState, p: &Proxy, r: &Proxy, conn: Conn, want_stats: bool) -> anyhow::Result<(Counts, Counts)> {
    let settle = || std::thread::sleep(Duration::from_millis(200));
    let mut kept = Observer::default();
    if conn == Conn::Kept {
        let (_, o) = pass(&mut kept, conn, db, want_stats);
        check(&o, false, 0)?;
    }
    settle();
    let (p0, r0) = (p.counts(), r.counts());
    let (_, o) = pass(&mut kept, conn, db, want_stats);
    check(&o, false, 0)?;
    settle();
    Ok((p.counts() - p0, r.counts() - r0))
}

pub fn run(o: &Opts) -> anyhow::Result<String> {
    let (purl, rurl) = (with_db(&o.primary, &o.db), with_db(&o.replica, &o.db));
    let db = database_state("bench-db", &purl, &rurl)?;
    let mut c = client(&purl)?;
    let facts = c.query_one(
        "SELECT count(*), coalesce(sum(n_live_tup), 0)::bigint, coalesce(sum(n_dead_tup), 0)::bigint, \
         pg_database_size(current_database()) FROM pg_stat_user_tables",
        &[],
    )?;
    let (tables, live, dead, size): (i64, i64, i64, i64) = (facts.get(0), facts.get(1), facts.get(2), facts.get(3));
    drop(c);
    if tables < 200 {
        anyhow::bail!(
            "{} has {tables} tables; scripts/bench-database.sh creates 200 and more",
            o.db
        );
    }
    say!("observe: {tables} tables, {live} live and {dead} dead tuples");
    let first = Observer::default().observe(&db, None, true, OffsetDateTime::now_utc());
    check(&first, true, 200)?;
    let stmts = match first.stats.as_ref().map(|s| &s.statements) {
        Some(Ok(s)) => format!("{} statements from `pg_stat_statements`", s.len()),
        Some(Err(e)) => format!("`pg_stat_statements`: {e}"),
        None => "no statistics".into(),
    };

    // Counting, through the proxies.
    let (pp, rp) = (
        Proxy::start(host_port(&o.primary)?)?,
        Proxy::start(host_port(&o.replica)?)?,
    );
    let via = |url: &str, port: u16| format!("postgres://{}@127.0.0.1:{port}/{}", user_of(url), o.db);
    let proxied = database_state("bench-db", &via(&o.primary, pp.port), &via(&o.replica, rp.port))?;
    let mut counts = Vec::new();
    for (label, conn, stats) in [
        ("cheap pass, kept connections", Conn::Kept, false),
        ("stats pass, kept connections", Conn::Kept, true),
        ("cheap pass, connecting anew", Conn::Anew, false),
        ("stats pass, connecting anew", Conn::Anew, true),
    ] {
        counts.push((label.to_string(), counted(&proxied, &pp, &rp, conn, stats)?));
    }
    for g in GUIDE {
        let (proxy, url) = if g.server == "primary" {
            (&pp, &o.primary)
        } else {
            (&rp, &o.replica)
        };
        let before = proxy.counts();
        psql_timed(&via(url, proxy.port), g.sql)?;
        std::thread::sleep(Duration::from_millis(200));
        let zero = Counts::default();
        let c = proxy.counts() - before;
        let pair = if g.server == "primary" { (c, zero) } else { (zero, c) };
        counts.push((format!("`psql -c`: {}", g.label), pair));
    }

    // Timing, direct.
    let mut times: Vec<(&str, Vec<f64>)> = Vec::new();
    for (label, conn, stats) in [
        ("`observe()` cheap pass, kept connections", Conn::Kept, false),
        ("`observe()` stats pass, kept connections", Conn::Kept, true),
        ("`observe()` cheap pass, connecting anew", Conn::Anew, false),
        ("`observe()` stats pass, connecting anew", Conn::Anew, true),
    ] {
        let mut kept = Observer::default();
        for _ in 0..WARMUP {
            let (_, ob) = pass(&mut kept, conn, &db, stats);
            check(&ob, stats, 200)?;
        }
        let mut xs = Vec::with_capacity(o.passes);
        for _ in 0..o.passes {
            let (dt, ob) = pass(&mut kept, conn, &db, stats);
            check(&ob, stats, 200)?;
            xs.push(ms(dt));
        }
        say!("{label}: median {}", fmt_ms(median(&xs)));
        times.push((label, xs));
    }
    let mut guide: Vec<Vec<f64>> = vec![Vec::new(); GUIDE.len()];
    for _ in 0..o.psql_runs {
        for (i, g) in GUIDE.iter().enumerate() {
            let url = if g.server == "primary" { &purl } else { &rurl };
            let (dt, _) = psql_timed(url, g.sql)?;
            guide[i].push(ms(dt));
        }
    }
    let round = |idx: &[usize]| -> Vec<f64> {
        (0..o.psql_runs)
            .map(|k| idx.iter().map(|&i| guide[i][k]).sum())
            .collect()
    };

    let mut out = String::new();
    let _ = writeln!(out, "### Observation cost: {tables} tables\n");
    let _ = writeln!(
        out,
        "Database `{}`: {tables} user tables, {live} live and {dead} dead tuples, `pg_database_size` {:.1} MiB \
         (section 2's tables included); {stmts}.\n",
        o.db,
        size as f64 / (1 << 20) as f64
    );
    let _ = writeln!(out, "Per pass, counted on the wire (primary + replica):\n");
    let _ = writeln!(
        out,
        "| pass | connections made | statements | round trips waited for | of them `Parse` (prepare) | `Close` sent unwaited | bytes to server / to client |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, (p, r)) in &counts {
        let t = *p + *r;
        let split = |f: fn(&Counts) -> u64| {
            if f(r) == 0 || f(p) == 0 {
                f(&t).to_string()
            } else {
                format!("{} ({} + {})", f(&t), f(p), f(r))
            }
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} / {} |",
            split(|c| c.connections),
            split(|c| c.statements),
            split(|c| c.round_trips),
            split(|c| c.parses),
            split(|c| c.unwaited),
            t.bytes_up,
            t.bytes_down
        );
    }
    let _ = writeln!(
        out,
        "\nRound trips count the startup (one, trust auth) and psql's `SSLRequest`; a new connection also costs its TCP \
         handshake.\n"
    );
    let _ = writeln!(out, "Wall time per pass (direct connections, not through the proxy):\n");
    let _ = writeln!(out, "| measurement | N | median | p95 | min | max |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (label, xs) in &times {
        row(&mut out, label, xs);
    }
    for (g, xs) in GUIDE.iter().zip(&guide) {
        row(&mut out, &format!("`psql -c` process: {} ({})", g.label, g.server), xs);
    }
    row(
        &mut out,
        "`psql -c` ×3 in a row: connections, replication, replica (what the cheap pass reads)",
        &round(&[0, 1, 2]),
    );
    row(
        &mut out,
        "`psql -c` ×4 in a row: connections, replication, table sizes, dead tuples",
        &round(&[0, 1, 3, 4]),
    );
    row(
        &mut out,
        "`psql -c` ×6 in a row: all six (what the stats pass reads)",
        &round(&[0, 1, 2, 3, 4, 5]),
    );
    let _ = writeln!(out);
    Ok(out)
}
