//! `steward-bench schedule`: how late scheduled runs start, and what 1,000 declared schedules cost
//! an idle controller.
//!
//! 1. Lateness: `steward run` on one schedule every 2 seconds (`*/2 * * * * *`) for `--runs`
//!    instants. Per run, from the store: instant → steward creates the job (`startedAt`), and
//!    instant → the job's container runs (the demo task prints its own start time, kept in the
//!    run's logs). Beside it, the floor Swarm sets: `docker service create --mode
//!    replicated-job` by hand → the container runs, which is what cron plus the Docker CLI (or
//!    swarm-cronjob's service update) costs at best.
//! 2. Idle: `steward run` with 1,000 schedules declared (none due within the window) for
//!    `--idle-secs`: RSS and CPU.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use steward_store::Store;

use crate::cli::{clk_tck, cpu_ticks, docker, rss_kib, steward_bin, RunningSteward};
use crate::stats::{fmt_ms, max, median, min, ms, percentile};

const IMAGE: &str = "taxcollector-demo:v1";

struct Opts {
    prefix: String,
    runs: usize,
    manual: usize,
    idle: Duration,
    schedules: usize,
}

const USAGE: &str =
    "usage: steward-bench schedule [--prefix bench-NAME] [--runs 30] [--manual 10] [--idle-secs 60] [--schedules 1000]";

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        prefix: format!("bench-{}", std::process::id()),
        runs: 30,
        manual: 10,
        idle: Duration::from_secs(60),
        schedules: 1000,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--prefix" => o.prefix = val("--prefix")?,
            "--runs" => o.runs = val("--runs")?.parse()?,
            "--manual" => o.manual = val("--manual")?.parse()?,
            "--idle-secs" => o.idle = Duration::from_secs(val("--idle-secs")?.parse()?),
            "--schedules" => o.schedules = val("--schedules")?.parse()?,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

pub async fn main(args: Vec<String>) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("steward-bench schedule: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = run(&opts).await;
    cleanup(&opts.prefix);
    match result {
        Ok(md) => {
            print!("{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("steward-bench schedule: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cleanup(prefix: &str) {
    let names = docker(&[
        "service",
        "ls",
        "--filter",
        &format!("label=steward.io/job-stack={prefix}"),
        "--format",
        "{{.Name}}",
    ])
    .unwrap_or_default();
    let mut names: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
    let floor = format!("{prefix}-floor");
    let extra = docker(&[
        "service",
        "ls",
        "--filter",
        &format!("name={floor}"),
        "--format",
        "{{.Name}}",
    ])
    .unwrap_or_default();
    names.extend(extra.lines().filter(|l| l.starts_with(&floor)));
    if !names.is_empty() {
        let mut args = vec!["service", "rm"];
        args.extend(names);
        let _ = docker(&args);
    }
}

fn schedule_doc(name: &str, schedule: &str, command: &str) -> String {
    format!(
        "---\napiVersion: steward.io/v1alpha1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  schedule: \"{schedule}\"\n  timeout: 30s\n  history: {{succeeded: 1000, failed: 100}}\n  job:\n    image: {IMAGE}\n    command: {command}\n"
    )
}

/// The container's own start time, printed by `demo-app task` ("tick: starting at 1700000000.123").
fn container_start(logs: &str) -> Option<f64> {
    logs.lines()
        .find_map(|l| l.split_once("starting at ")?.1.split_whitespace().next()?.parse().ok())
}

fn secs(t: time::OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}

fn row(label: &str, v: &[Duration]) -> String {
    let v: Vec<f64> = v.iter().copied().map(ms).collect();
    format!(
        "| {label} | {} | {} | {} | {} | {} |\n",
        v.len(),
        fmt_ms(median(&v)),
        fmt_ms(percentile(&v, 99.0)),
        fmt_ms(max(&v)),
        fmt_ms(min(&v))
    )
}

async fn run(o: &Opts) -> anyhow::Result<String> {
    let bin = steward_bin()?;
    let dir = std::env::temp_dir().join(&o.prefix);
    std::fs::create_dir_all(&dir)?;
    let dir = Dir(dir);
    let mut md = String::new();

    // 1. Lateness.
    let m = dir.path().join("late");
    std::fs::create_dir_all(&m)?;
    let name = format!("{}-tick", o.prefix);
    std::fs::write(
        m.join("s.yaml"),
        format!(
            "apiVersion: steward.io/v1alpha1\nkind: Stack\nmetadata:\n  name: {}\n{}",
            o.prefix,
            schedule_doc(&name, "*/2 * * * * *", "[/demo-app, task, tick]")
        ),
    )?;
    let state = dir.path().join("late.db");
    let ctl = RunningSteward::start(&bin, &state, &m, &dir.path().join("late.log"))?;
    let deadline = Instant::now() + Duration::from_secs(2 * o.runs as u64 + 60);
    let store = loop {
        if let Ok(s) = Store::open(&state) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    loop {
        let done = store
            .runs(Some(&name), None)?
            .into_iter()
            .filter(|r| r.outcome == steward_schedule::Outcome::Succeeded)
            .count();
        eprintln!("schedule bench: {done}/{} runs", o.runs);
        if done >= o.runs {
            break;
        }
        if Instant::now() > deadline {
            let outcomes: Vec<String> = store
                .runs(Some(&name), None)?
                .iter()
                .map(|r| format!("{} {}", r.outcome.as_str(), r.message))
                .collect();
            bail!(
                "only {done} runs succeeded in time; log {}; runs: {outcomes:?}",
                dir.path().join("late.log").display()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    ctl.stop(Duration::from_secs(10))?;
    let runs = store.runs(Some(&name), None)?;
    let mut created = Vec::new();
    let mut running = Vec::new();
    for r in runs
        .iter()
        .filter(|r| r.outcome == steward_schedule::Outcome::Succeeded)
    {
        let at = secs(r.scheduled_at);
        if let Some(s) = r.started_at {
            created.push(Duration::from_secs_f64((secs(s) - at).max(0.0)));
        }
        if let Some(c) = container_start(&r.logs) {
            running.push(Duration::from_secs_f64((c - at).max(0.0)));
        }
    }
    let other: Vec<_> = runs
        .iter()
        .filter(|r| r.outcome != steward_schedule::Outcome::Succeeded)
        .map(|r| r.outcome.as_str())
        .collect();

    // The floor: a replicated job created by hand, to its container running.
    let mut floor = Vec::new();
    for i in 0..o.manual {
        let job = format!("{}-floor-{i}", o.prefix);
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        docker(&[
            "service",
            "create",
            "-d",
            "--quiet",
            "--name",
            &job,
            "--mode",
            "replicated-job",
            "--restart-condition",
            "none",
            "--no-resolve-image",
            IMAGE,
            "task",
            "floor",
        ])?;
        let started = wait_logged_start(&job, Duration::from_secs(30))?;
        floor.push(Duration::from_secs_f64((started - t0).max(0.0)));
        let _ = docker(&["service", "rm", &job]);
    }

    let _ = writeln!(md, "### Start lateness\n");
    let _ = writeln!(
        md,
        "`*/2 * * * * *` for {} runs; other outcomes seen: {}.\n",
        created.len(),
        if other.is_empty() {
            "none".to_string()
        } else {
            other.join(", ")
        }
    );
    md.push_str("| from the scheduled instant to … | runs | p50 | p99 | max | min |\n|---|---|---|---|---|---|\n");
    md.push_str(&row("steward creates the Swarm job (`startedAt`)", &created));
    md.push_str(&row("the job's container runs (its own clock)", &running));
    md.push_str(&row(
        "floor: `docker service create --mode replicated-job` → container runs",
        &floor,
    ));
    md.push('\n');

    // 2. Idle with many schedules declared.
    let m = dir.path().join("idle");
    std::fs::create_dir_all(&m)?;
    let mut text = format!(
        "apiVersion: steward.io/v1alpha1\nkind: Stack\nmetadata:\n  name: {}\n",
        o.prefix
    );
    for i in 0..o.schedules {
        // Never due inside the window: 1 January at a minute of its own.
        text.push_str(&schedule_doc(
            &format!("{}-s{i}", o.prefix),
            &format!("{} {} 1 1 *", i % 60, (i / 60) % 24),
            "[/demo-app, task, idle]",
        ));
    }
    std::fs::write(m.join("s.yaml"), text)?;
    let state = dir.path().join("idle.db");
    let mut ctl = RunningSteward::start(&bin, &state, &m, &dir.path().join("idle.log"))?;
    ctl.wait_passes(1, Duration::from_secs(60))?;
    wait_statuses(&state, o.schedules, Duration::from_secs(60))?;
    let pid = ctl.pid();
    let rss_start = rss_kib(pid)?;
    let ticks0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(o.idle).await;
    let cpu = (cpu_ticks(pid)? - ticks0) as f64 / clk_tck() as f64;
    let rss_end = rss_kib(pid)?;
    let wall = t0.elapsed().as_secs_f64();
    ctl.stop(Duration::from_secs(10))?;
    let _ = writeln!(md, "### Idle with {} schedules declared\n", o.schedules);
    md.push_str("| window | RSS at start | RSS at end | CPU | share of one core |\n|---|---|---|---|---|\n");
    let _ = writeln!(
        md,
        "| {:.0} s | {:.1} MiB | {:.1} MiB | {:.2} s | {:.3} % |",
        wall,
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        cpu,
        100.0 * cpu / wall
    );
    Ok(md)
}

/// The bench's scratch directory, removed at the end.
struct Dir(std::path::PathBuf);

impl Dir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait_statuses(state: &Path, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let store = Store::open(state)?;
    let t = Instant::now();
    loop {
        let have = store.statuses()?.iter().filter(|s| s.kind == "Schedule").count();
        if have >= n {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!("only {have}/{n} schedules reconciled within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the job's container to print its start time, and returns it.
fn wait_logged_start(job: &str, timeout: Duration) -> anyhow::Result<f64> {
    let t = Instant::now();
    loop {
        if let Ok(logs) = docker(&["service", "logs", "--raw", job]) {
            if let Some(s) = container_start(&logs) {
                return Ok(s);
            }
        }
        if t.elapsed() > timeout {
            bail!("job {job} did not start within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
