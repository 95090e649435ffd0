//! Planner throughput: `cargo bench -p steward-schedule --bench plan`.
//!
//! No benchmark framework (build time): each cell plans every schedule of a set in batches
//! until at least 200 ms have been spent, then reports the median and mean time for the whole
//! set and per schedule. Output is a Markdown table.

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use std::hint::black_box;
use std::time::{Duration, Instant};

use fixtures::*;

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const MIN_CELL_TIME: Duration = Duration::from_millis(200);
/// A batch is timed as a whole so that clock overhead stays negligible for small sets.
const MIN_BATCH_TIME: Duration = Duration::from_micros(100);

/// A mix of what an operations calendar holds: daily, hourly, business hours, monthly, and
/// sub-minute ones, in zones with and without daylight saving.
const EXPRS: [&str; 8] = [
    "0 2 * * *",
    "*/5 * * * *",
    "30 2 * * *",
    "0 */2 * * *",
    "*/15 9-17 * * 1-5",
    "@hourly",
    "0 0 1 * *",
    "*/10 * * * * *",
];
const ZONES: [&str; 6] = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Indian/Antananarivo",
    "Australia/Sydney",
];

#[derive(Clone, Copy)]
enum Scenario {
    NothingDue,
    AllDue,
    OneActive,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::NothingDue, Scenario::AllDue, Scenario::OneActive];
    fn label(self) -> &'static str {
        match self {
            Scenario::NothingDue => "nothing due",
            Scenario::AllDue => "all due now",
            Scenario::OneActive => "one run active each",
        }
    }
}

fn world(i: usize, scenario: Scenario) -> World {
    let base = at("2025-03-12T10:17:23Z");
    let s = schedule(EXPRS[i % EXPRS.len()])
        .name(&format!("job-{i:05}"))
        .tz(ZONES[i % ZONES.len()])
        .deadline(secs(600))
        .retries(2)
        .env("LOG_LEVEL", "info", false)
        .env("PGPASSWORD", &format!("secret-{i}"), true)
        .build();
    match scenario {
        Scenario::NothingDue => World::new(s, base),
        Scenario::AllDue => {
            let due = s.cron.next_after(base).expect("a next instant");
            World::new(s, due).cursor(Some(plus(due, -1)))
        }
        Scenario::OneActive => {
            let started = plus(base, -30);
            World::new(s, base)
                .run(running(i as i64 + 1, started, started))
                .job(&job_of(started, 1), JobObs::Running)
        }
    }
}

struct Cell {
    median: Duration,
    mean: Duration,
    sets: u64,
    starts: usize,
}

fn plan_all(worlds: &[World]) -> usize {
    worlds.iter().map(|w| black_box(w.plan()).start.len()).sum()
}

fn measure(worlds: &[World]) -> Cell {
    let starts = plan_all(worlds);
    // Warm up, and size a batch.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(plan_all(black_box(worlds)));
        }
        if t.elapsed() >= MIN_BATCH_TIME {
            break;
        }
        batch *= 2;
    }
    let mut per_set = Vec::new();
    let mut total = Duration::ZERO;
    let mut sets = 0u64;
    while total < MIN_CELL_TIME || per_set.len() < 5 {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(plan_all(black_box(worlds)));
        }
        let e = t.elapsed();
        total += e;
        sets += batch;
        per_set.push(e / batch as u32);
    }
    per_set.sort();
    Cell {
        median: per_set[per_set.len() / 2],
        mean: total / sets as u32,
        sets,
        starts,
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter is not supported, everything runs.
    println!("| schedules | scenario | starts | median / set | mean / set | median / schedule | mean / schedule | sets timed |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for n in SIZES {
        for scenario in Scenario::ALL {
            let worlds: Vec<World> = (0..n).map(|i| world(i, scenario)).collect();
            let c = measure(&worlds);
            println!(
                "| {n} | {} | {} | {} | {} | {} | {} | {} |",
                scenario.label(),
                c.starts,
                fmt(c.median),
                fmt(c.mean),
                fmt(c.median / n as u32),
                fmt(c.mean / n as u32),
                c.sets
            );
        }
    }
}
