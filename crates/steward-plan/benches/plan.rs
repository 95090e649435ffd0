//! Planner throughput: `cargo bench -p steward-plan --bench plan`.
//!
//! No benchmark framework (build time): each cell runs `plan()` in batches until at least
//! 200 ms have been spent, then reports the median and mean time per call. Output is a
//! Markdown table.

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

use std::hint::black_box;
use std::time::{Duration, Instant};

use fixtures::*;
use steward_plan::{plan, Desired, DesiredService, Observed};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const MIN_CELL_TIME: Duration = Duration::from_millis(200);
/// A batch is timed as a whole so that clock overhead stays negligible for small plans.
const MIN_BATCH_TIME: Duration = Duration::from_micros(100);

#[derive(Clone, Copy)]
enum Scenario {
    Converged,
    TenPercentDrifted,
    AllNew,
    /// Converged, every service using every task-level field (networks, mounts, secrets, ...).
    ConvergedEveryField,
    /// 10% drifted in one task-level field (the stop grace period).
    TaskFieldDrifted,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Converged,
        Scenario::TenPercentDrifted,
        Scenario::AllNew,
        Scenario::ConvergedEveryField,
        Scenario::TaskFieldDrifted,
    ];
    fn label(self) -> &'static str {
        match self {
            Scenario::Converged => "all converged",
            Scenario::TenPercentDrifted => "10% drifted",
            Scenario::AllNew => "all new",
            Scenario::ConvergedEveryField => "all converged, every field",
            Scenario::TaskFieldDrifted => "10% drifted, every field",
        }
    }
}

fn full_service(i: usize) -> DesiredService {
    let s = service(i);
    let mut state = s.state.clone();
    state.task = every_field(i);
    DesiredService::new(s.name.clone(), state, s.secret_env.clone(), false)
}

/// A service of typical size: a few env variables (one secret), labels, a port, limits.
fn service(i: usize) -> DesiredService {
    desired(&format!("svc-{i:05}"))
        .image(&format!("registry.example/team/app-{}:1.{}.0", i % 37, i % 11))
        .replicas((i % 5) as u64 + 1)
        .env("LOG_LEVEL", "info")
        .env("PORT", "8080")
        .env("UPSTREAM", &format!("http://svc-{:05}:8080", (i + 1) % 10_000))
        .env("REGION", "eu-west")
        .secret_env("DB_PASSWORD", &format!("secret-{i}"))
        .label("team", ["payments", "search", "growth"][i % 3])
        .label("tier", "backend")
        .port(10_000 + (i % 50_000) as u32, 8080)
        .cpu_limit(0.5)
        .memory_limit(256 * 1024 * 1024)
        .build()
}

fn world(n: usize, scenario: Scenario) -> (Desired, Observed) {
    let full = matches!(scenario, Scenario::ConvergedEveryField | Scenario::TaskFieldDrifted);
    let make = if full { full_service } else { service };
    let d = stack_with(STACK, true, 1, (0..n).map(make).collect());
    let observed = match scenario {
        Scenario::Converged | Scenario::ConvergedEveryField => applied(&d),
        Scenario::TaskFieldDrifted => known(
            d.services
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut o = observed_from(s).build();
                    if i % 10 == 0 {
                        o.state.task.stop_grace_period_ns = Some(10_000_000_000);
                    }
                    o
                })
                .collect(),
        ),
        Scenario::TenPercentDrifted => known(
            d.services
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let o = observed_from(s);
                    if i % 10 == 0 {
                        o.replicas(s.state.replicas + 2).build()
                    } else {
                        o.build()
                    }
                })
                .collect(),
        ),
        Scenario::AllNew => known(Vec::new()),
    };
    (d, observed)
}

struct Cell {
    median: Duration,
    mean: Duration,
    calls: u64,
    actions: usize,
}

fn measure(d: &Desired, o: &Observed) -> Cell {
    let actions = plan(d, o).actions.len();
    // Warm up, and size a batch.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(plan(black_box(d), black_box(o)));
        }
        if t.elapsed() >= MIN_BATCH_TIME {
            break;
        }
        batch *= 2;
    }
    let mut per_call = Vec::new();
    let mut total = Duration::ZERO;
    let mut calls = 0u64;
    while total < MIN_CELL_TIME || per_call.len() < 5 {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(plan(black_box(d), black_box(o)));
        }
        let e = t.elapsed();
        total += e;
        calls += batch;
        per_call.push(e / batch as u32);
    }
    per_call.sort();
    Cell {
        median: per_call[per_call.len() / 2],
        mean: total / calls as u32,
        calls,
        actions,
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
    println!("| services | scenario | actions | median / plan | mean / plan | median / service | calls |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for n in SIZES {
        for scenario in Scenario::ALL {
            let (d, o) = world(n, scenario);
            let c = measure(&d, &o);
            println!(
                "| {n} | {} | {} | {} | {} | {} | {} |",
                scenario.label(),
                c.actions,
                fmt(c.median),
                fmt(c.mean),
                fmt(c.median / n as u32),
                c.calls
            );
        }
    }
}
