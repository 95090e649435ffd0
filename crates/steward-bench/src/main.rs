//! `steward-bench`: measures steward against the real local Docker Swarm and prints Markdown.
//!
//! Sections (see docs/BENCHMARKS.md for the reading of the numbers):
//! 1. steady state: one reconcile pass over a converged 50-service stack (wall time, Engine API
//!    calls, writes, version indexes), compared with re-running `docker stack deploy` on the
//!    equivalent, unchanged compose stack;
//! 2. idle: `steward run` on the converged 50-service stack for a fixed window (RSS, CPU);
//! 3. drift: `docker service scale` by hand under `steward run`, time until steward restores it.
//!
//! `steward-bench rollback` is a separate run (see `rollback.rs`): a bad image deployed over a
//! healthy one, undone by steward and by Swarm alone. `steward-bench api` is another (see
//! `api/mod.rs`): the HTTP API over a large store, memory with that store, push to converged.
//! `steward-bench database` (see `database/mod.rs`): the Database kind on real PostgreSQL.
//!
//! Everything it creates is named `<prefix>-…` (default `bench-<pid>`) and removed at the end,
//! also after a failure. It never touches other services and never prunes.

mod api;
mod cli;
mod database;
mod drift;
mod engine;
mod rollback;
mod schedule;
mod stack_files;
mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use steward_backends::swarm::Swarm;
use steward_controller::Controller;
use steward_store::Store;

use crate::cli::{changed, docker, docker_timed, versions, RunningSteward};
use crate::engine::Engine;
use crate::stack_files::{write_compose, write_stack};
use crate::stats::{fmt_ms, fmt_secs, max, median, min, ms, percentile};

const IMAGE: &str = "taxcollector-demo:v1";
/// The whole run must stay under ten minutes; sections are skipped once this is spent.
const BUDGET: Duration = Duration::from_secs(9 * 60 + 30);

struct Opts {
    prefix: String,
    /// Services use every task-level field (`--every-field`).
    every_field: bool,
    services: usize,
    passes: usize,
    deploy_runs: usize,
    drift_runs: usize,
    drift_services: usize,
    idle: Duration,
    docker_host: String,
}

const USAGE: &str = "usage: steward-bench [--prefix bench-NAME] [--services 50] [--passes 20] [--deploy-runs 5] \
[--drift-runs 10] [--idle-secs 60] [--every-field]\n\nRuns against the Docker engine at $DOCKER_HOST (default: the local Docker socket), \
which must be a swarm manager with the image taxcollector-demo:v1 (scripts/demo-images.sh). \
Markdown goes to stdout, progress to stderr.\n\n\
steward-bench rollback --help: the rollback benchmark (a separate run).\n\
steward-bench api --help: the API, GitOps and memory benchmark (a separate run).\n\
steward-bench schedule --help: schedule start lateness and idle cost (a separate run).\n\
steward-bench database --help: the Database kind on a real primary and replica (a separate run).";

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        prefix: format!("bench-{}", std::process::id()),
        every_field: false,
        services: 50,
        passes: 20,
        deploy_runs: 5,
        drift_runs: 10,
        drift_services: 3,
        idle: Duration::from_secs(60),
        docker_host: std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| steward_backends::swarm::DEFAULT_DOCKER_HOST.to_string()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--prefix" => o.prefix = val("--prefix")?,
            "--services" => o.services = val("--services")?.parse()?,
            "--passes" => o.passes = val("--passes")?.parse()?,
            "--deploy-runs" => o.deploy_runs = val("--deploy-runs")?.parse()?,
            "--drift-runs" => o.drift_runs = val("--drift-runs")?.parse()?,
            "--idle-secs" => o.idle = Duration::from_secs(val("--idle-secs")?.parse()?),
            "--every-field" => o.every_field = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let p = &o.prefix;
    if !p.starts_with("bench-")
        || !p
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("--prefix must start with \"bench-\" and use only [a-z0-9-]");
    }
    if o.services == 0 || o.services > 99 || o.passes == 0 || o.deploy_runs == 0 || o.drift_runs == 0 {
        bail!("--services must be 1..=99 and the run counts at least 1");
    }
    Ok(o)
}

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench] {}", format!($($arg)*)) };
}

struct Ctx {
    opts: Opts,
    work: PathBuf,
    bin: PathBuf,
    engine: Engine,
    started: Instant,
    /// Hard failures of the things the bench asserts (writes in steady state, …).
    violations: Vec<String>,
}

impl Ctx {
    fn remaining(&self) -> Duration {
        BUDGET.saturating_sub(self.started.elapsed())
    }
    /// Fails when fewer than `need` remain of the budget.
    fn need(&self, section: &str, need: Duration) -> anyhow::Result<()> {
        if self.remaining() < need {
            bail!(
                "skipped {section}: {} of the time budget left, about {} needed",
                fmt_secs(self.remaining()),
                fmt_secs(need)
            );
        }
        Ok(())
    }
}

fn svc_names(prefix: &str, what: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{what}-{i:02}")).collect()
}

/// Waits until every service matching `filters` (expected `n` of them) runs 1/1.
async fn wait_running(
    engine: &Engine,
    filters: serde_json::Value,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let counts = engine.task_counts(&filters).await?;
        let ready = counts.iter().filter(|(_, r, d)| *d == 1 && *r == 1).count();
        if counts.len() == n && ready == n {
            return Ok(t.elapsed());
        }
        if t.elapsed() > timeout {
            bail!("only {ready}/{n} services running 1/1 after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Section 1 (+ 2, idle, which reuses the converged stack)

struct PassSample {
    wall: Duration,
    reads: u64,
    writes: u64,
    executed: usize,
    converged: bool,
}

async fn steady_and_idle(ctx: &mut Ctx, out: &mut String) -> anyhow::Result<()> {
    let n = ctx.opts.services;
    let stack = ctx.opts.prefix.clone();
    let names = svc_names(&stack, "svc", n);
    let dir = ctx.work.join("steady");
    let state = ctx.work.join("steady.db");
    write_stack(&dir, &stack, &names, ctx.opts.every_field)?;

    progress!("steward apply: creating {n} services in stack {stack}");
    let apply_time = cli::steward_apply(&ctx.bin, &state, &dir, "5m")?;
    progress!("converged after {}", fmt_secs(apply_time));
    // steward's "converged" means every task is running; double-check through the Engine API.
    let filters = serde_json::json!({ "label": [format!("steward.io/stack={stack}")] });
    wait_running(&ctx.engine, filters, n, Duration::from_secs(60)).await?;

    // In-process controller on the same state file the apply used.
    let swarm = Swarm::connect(&ctx.opts.docker_host)?;
    let store = Arc::new(Store::open(&state)?);
    let mut ctl = Controller::new(swarm, store, vec![dir.clone()]);
    let warm = ctl.pass().await;
    if !warm.converged || warm.executed != 0 {
        bail!(
            "warm-up pass on the converged stack: converged={} executed={}",
            warm.converged,
            warm.executed
        );
    }

    let before = versions(&names)?;
    let load_before = cli::loadavg();
    let mut samples = Vec::new();
    for _ in 0..ctx.opts.passes {
        let (r0, w0) = (ctl.swarm.calls.reads(), ctl.swarm.calls.writes());
        let t = Instant::now();
        let o = ctl.pass().await;
        let wall = t.elapsed();
        samples.push(PassSample {
            wall,
            reads: ctl.swarm.calls.reads() - r0,
            writes: ctl.swarm.calls.writes() - w0,
            executed: o.executed,
            converged: o.converged,
        });
    }
    let after = versions(&names)?;
    let pass_changed = changed(&before, &after);
    let total_writes: u64 = samples.iter().map(|s| s.writes).sum();
    let total_executed: usize = samples.iter().map(|s| s.executed).sum();
    let all_converged = samples.iter().all(|s| s.converged);
    if total_writes != 0 || total_executed != 0 || pass_changed != 0 || !all_converged {
        ctx.violations.push(format!(
            "steady state: {total_writes} writes, {total_executed} actions, {pass_changed} version indexes changed, all converged: {all_converged}"
        ));
    }
    let pass_ms: Vec<f64> = samples.iter().map(|s| ms(s.wall)).collect();
    let reads: Vec<u64> = samples.iter().map(|s| s.reads).collect();
    progress!("{} passes: median {}", samples.len(), fmt_ms(median(&pass_ms)));

    // The part of a pass spent in the Engine: the one list call, alone.
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut observe_ms = Vec::new();
    for _ in 0..ctx.opts.passes {
        let t = Instant::now();
        let o = ctl.swarm.observe(&stack, &refs).await;
        observe_ms.push(ms(t.elapsed()));
        if let steward_plan::Observed::Unknown { reason } = o {
            bail!("observe failed: {reason}");
        }
    }

    // The CLI as a user runs it on the converged stack: process start, state, one pass.
    let mut apply_ms = Vec::new();
    for _ in 0..ctx.opts.deploy_runs {
        apply_ms.push(ms(cli::steward_apply(&ctx.bin, &state, &dir, "1m")?));
    }
    let after_cli = versions(&names)?;
    let cli_changed = changed(&after, &after_cli);
    if cli_changed != 0 {
        ctx.violations.push(format!(
            "steward apply on the converged stack changed {cli_changed} version indexes"
        ));
    }
    drop(ctl);

    // Idle controller.
    let idle = idle(ctx, &state, &dir, &names).await;

    progress!("removing stack {stack}");
    cli::remove_services(&names)?;
    let gone = cli::wait_containers_gone(&format!("{stack}-svc-"), Duration::from_secs(120))?;
    progress!("containers gone after {}", fmt_secs(gone));

    // docker stack deploy comparison.
    let compose = compose(ctx).await;

    // ---- Markdown
    writeln!(out, "## Steady-state reconcile: {n} services\n")?;
    writeln!(
        out,
        "Setup: `steward apply` created the {n} services and waited until every task ran: {} (not a steady-state number; \
         it includes pulling nothing, scheduling and starting {n} containers). One warm-up pass on the converged stack \
         was run and not counted.\n",
        fmt_secs(apply_time)
    )?;
    writeln!(out, "1-minute load average just before the passes: {load_before}.\n")?;
    writeln!(out, "| measurement | N | median | p90 | min | max | Engine API reads / run | writes / run | `Version.Index` changed |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let rr = |v: &[u64]| {
        let (lo, hi) = (
            v.iter().min().copied().unwrap_or(0),
            v.iter().max().copied().unwrap_or(0),
        );
        if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}–{hi}")
        }
    };
    let row = |out: &mut String, what: &str, xs: &[f64], calls: &str, writes: &str, changed: &str| {
        writeln!(
            out,
            "| {what} | {} | {} | {} | {} | {} | {calls} | {writes} | {changed} |",
            xs.len(),
            fmt_ms(median(xs)),
            fmt_ms(percentile(xs, 90.0)),
            fmt_ms(min(xs)),
            fmt_ms(max(xs)),
        )
    };
    let w: Vec<u64> = samples.iter().map(|s| s.writes).collect();
    row(
        out,
        "`Controller::pass()`, converged stack",
        &pass_ms,
        &rr(&reads),
        &rr(&w),
        &format!("{pass_changed}/{n}"),
    )?;
    row(
        out,
        "`Swarm::observe()` alone (part of a pass)",
        &observe_ms,
        "1",
        "0",
        "–",
    )?;
    row(
        out,
        "`steward apply` CLI process, converged stack",
        &apply_ms,
        "–",
        "–",
        &format!("{cli_changed}/{n} (all runs)"),
    )?;
    let pass_med = median(&pass_ms);
    let apply_med = median(&apply_ms);
    match &compose {
        Ok(c) => {
            let changed_runs: Vec<String> = c.changed.iter().map(|x| x.to_string()).collect();
            row(
                out,
                "`docker stack deploy -c compose.yml` re-run, unchanged stack",
                &c.deploy_ms,
                "–",
                &format!("{n} service updates"),
                &format!(
                    "{}/{n} per run ({})",
                    c.changed.iter().max().unwrap_or(&0),
                    changed_runs.join(", ")
                ),
            )?;
            let never_runs: Vec<String> = c.never_changed.iter().map(|x| x.to_string()).collect();
            row(
                out,
                "`docker stack deploy --resolve-image never -c compose.yml` re-run, unchanged stack",
                &c.never_ms,
                "–",
                &format!("{n} service updates"),
                &format!(
                    "{}/{n} per run ({})",
                    c.never_changed.iter().max().unwrap_or(&0),
                    never_runs.join(", ")
                ),
            )?;
            writeln!(out)?;
            let dmed = median(&c.deploy_ms);
            let nmed = median(&c.never_ms);
            writeln!(
                out,
                "Ratio docker-stack-deploy / steward pass (medians): **{:.1}×** ({} / {}). \
                 Against the whole `steward apply` process instead of the in-process pass: {:.1}× ({} / {}).\n",
                dmed / pass_med,
                fmt_ms(dmed),
                fmt_ms(pass_med),
                dmed / apply_med,
                fmt_ms(dmed),
                fmt_ms(apply_med)
            )?;
            writeln!(
                out,
                "Without the registry lookups (`--resolve-image never`): {:.1}× the in-process pass ({} / {}), \
                 {:.1}× the `steward apply` process.\n",
                nmed / pass_med,
                fmt_ms(nmed),
                fmt_ms(pass_med),
                nmed / apply_med
            )?;
            let slow = c.lookup_ms.iter().filter(|x| **x > 1000.0).count();
            writeln!(
                out,
                "Registry lookup through the engine (`GET /distribution/{IMAGE}/json`, what the default deploy asks \
                 once per service): {} lookups, HTTP {}, median {}, max {}, {slow} took over 1 s.\n",
                c.lookup_ms.len(),
                c.lookup_status,
                fmt_ms(median(&c.lookup_ms)),
                fmt_ms(max(&c.lookup_ms)),
            )?;
            writeln!(
                out,
                "Compose stack: initial `docker stack deploy` returned in {}, all {n} services 1/1 after {} more. \
                 Tasks in `docker stack ps -q` before the re-runs: {}, after: {} (a larger number would mean re-runs \
                 replaced tasks).{}\n",
                fmt_secs(c.initial),
                fmt_secs(c.until_running),
                c.tasks_before,
                c.tasks_after,
                if c.warned_digest {
                    " Every run printed \"image taxcollector-demo:v1 could not be accessed on a registry to record its digest\" \
                     (no registry here; default `--resolve-image always`)."
                } else {
                    ""
                }
            )?;
        }
        Err(e) => {
            writeln!(out, "\n`docker stack deploy` comparison failed: {e:#}\n")?;
        }
    }
    let list = |xs: &[f64]| xs.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ");
    writeln!(out, "Per-pass wall times (ms, in order): {}.\n", list(&pass_ms))?;
    if let Ok(c) = &compose {
        writeln!(
            out,
            "Per-run `docker stack deploy` times (ms, in order): {}.\n",
            list(&c.deploy_ms)
        )?;
        writeln!(
            out,
            "Per-run `docker stack deploy --resolve-image never` times (ms, in order): {}.\n",
            list(&c.never_ms)
        )?;
        writeln!(out, "Registry lookup times (ms, in order): {}.\n", list(&c.lookup_ms))?;
    }

    match idle {
        Ok(i) => {
            writeln!(
                out,
                "## Idle controller: `steward run` on the converged {n}-service stack\n"
            )?;
            writeln!(out, "| metric | value |")?;
            writeln!(out, "|---|---:|")?;
            writeln!(
                out,
                "| window (starts after the first pass finished, {} after start) | {} |",
                fmt_secs(i.settle),
                fmt_secs(i.window)
            )?;
            writeln!(
                out,
                "| RSS max (VmRSS, sampled every second) | {:.1} MiB |",
                i.rss_max as f64 / 1024.0
            )?;
            writeln!(out, "| RSS final | {:.1} MiB |", i.rss_final as f64 / 1024.0)?;
            writeln!(
                out,
                "| RSS after the first pass (window start) | {:.1} MiB |",
                i.rss_start as f64 / 1024.0
            )?;
            writeln!(
                out,
                "| CPU (utime+stime) in window | {:.2} s = **{:.2} % of one core** |",
                i.cpu_secs,
                100.0 * i.cpu_secs / i.window.as_secs_f64()
            )?;
            writeln!(
                out,
                "| CPU from process start to window end | {:.2} s |",
                i.cpu_total_secs
            )?;
            let (own, other, resub, files) = i.wakes;
            writeln!(out, "| reconcile passes in window | {} |", i.passes)?;
            writeln!(
                out,
                "| … woken by Swarm events of this stack / of other services / event re-subscription / manifest changes | {own} / {other} / {resub} / {files} |"
            )?;
            writeln!(
                out,
                "| … not woken by an event (resync timer, 30 s default) | {} |",
                i.passes.saturating_sub(own + other + resub + files)
            )?;
            writeln!(out, "| `Version.Index` changed during the window | {}/{n} |", i.changed)?;
            writeln!(out)?;
        }
        Err(e) => writeln!(out, "## Idle controller\n\nfailed: {e:#}\n")?,
    }
    Ok(())
}

struct IdleOut {
    settle: Duration,
    window: Duration,
    rss_start: u64,
    rss_max: u64,
    rss_final: u64,
    cpu_secs: f64,
    cpu_total_secs: f64,
    passes: usize,
    /// (own-stack service events, other services' events, re-subscriptions, manifest changes)
    wakes: (usize, usize, usize, usize),
    changed: usize,
}

async fn idle(ctx: &mut Ctx, state: &Path, dir: &Path, names: &[String]) -> anyhow::Result<IdleOut> {
    ctx.need("idle controller", ctx.opts.idle + Duration::from_secs(150))?;
    let before = versions(names)?;
    let t0 = Instant::now();
    let mut run = RunningSteward::start(&ctx.bin, state, dir, &ctx.work.join("idle-run.log"))?;
    let pid = run.pid();
    run.wait_passes(1, Duration::from_secs(30))?;
    let settle = t0.elapsed();
    progress!(
        "idle: steward run (pid {pid}) did its first pass after {}; sampling {}",
        fmt_secs(settle),
        fmt_secs(ctx.opts.idle)
    );
    let tck = cli::clk_tck() as f64;
    let passes0 = run.passes();
    let log0 = run.log_text().len();
    let cpu0 = cli::cpu_ticks(pid)?;
    let rss_start = cli::rss_kib(pid)?;
    let w0 = Instant::now();
    let mut rss_max = rss_start;
    let mut rss_final = rss_start;
    let secs = ctx.opts.idle.as_secs();
    for i in 1..=secs {
        let due = w0 + Duration::from_secs(i);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        rss_final = cli::rss_kib(pid)?;
        rss_max = rss_max.max(rss_final);
    }
    let cpu1 = cli::cpu_ticks(pid)?;
    let window = w0.elapsed();
    let passes = run.passes() - passes0;
    let wakes = cli::wake_reasons(run.log_text().get(log0..).unwrap_or(""), names);
    run.stop(Duration::from_secs(10))?;
    let after = versions(names)?;
    let changed = changed(&before, &after);
    if changed != 0 {
        ctx.violations
            .push(format!("idle steward run changed {changed} version indexes"));
    }
    Ok(IdleOut {
        settle,
        window,
        rss_start,
        rss_max,
        rss_final,
        cpu_secs: (cpu1 - cpu0) as f64 / tck,
        cpu_total_secs: cpu1 as f64 / tck,
        passes,
        wakes,
        changed,
    })
}

struct ComposeOut {
    initial: Duration,
    until_running: Duration,
    deploy_ms: Vec<f64>,
    changed: Vec<usize>,
    never_ms: Vec<f64>,
    never_changed: Vec<usize>,
    /// Timed registry lookups through the engine (what the default deploy does per service).
    lookup_ms: Vec<f64>,
    lookup_status: u16,
    tasks_before: usize,
    tasks_after: usize,
    warned_digest: bool,
}

async fn compose(ctx: &mut Ctx) -> anyhow::Result<ComposeOut> {
    ctx.need("docker stack deploy comparison", Duration::from_secs(150))?;
    let n = ctx.opts.services;
    let stack = format!("{}-compose", ctx.opts.prefix);
    let short: Vec<String> = (1..=n).map(|i| format!("svc-{i:02}")).collect();
    let names: Vec<String> = short.iter().map(|s| format!("{stack}_{s}")).collect();
    let file = ctx.work.join("compose.yml");
    write_compose(&file, &short)?;
    let file_s = file.to_str().context("non-UTF-8 work dir")?;

    progress!("docker stack deploy: {n} services in stack {stack}");
    let (initial, _) = docker_timed(&["stack", "deploy", "-c", file_s, &stack])?;
    let filters = serde_json::json!({ "label": [format!("com.docker.stack.namespace={stack}")] });
    let until_running = wait_running(&ctx.engine, filters, n, Duration::from_secs(240)).await?;
    progress!("compose stack running 1/1 after {}", fmt_secs(initial + until_running));
    // Let the just-started tasks settle before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let tasks_before = cli::stack_task_count(&stack)?;
    let mut deploy_ms = Vec::new();
    let mut changed_runs = Vec::new();
    let mut warned_digest = true;
    for i in 0..ctx.opts.deploy_runs {
        let before = versions(&names)?;
        let (dt, stderr) = docker_timed(&["stack", "deploy", "-c", file_s, &stack])?;
        let after = versions(&names)?;
        deploy_ms.push(ms(dt));
        changed_runs.push(changed(&before, &after));
        warned_digest &= stderr.contains("could not be accessed on a registry");
        progress!("docker stack deploy re-run {}: {}", i + 1, fmt_ms(ms(dt)));
    }
    // The same without the per-service registry lookup.
    let mut never_ms = Vec::new();
    let mut never_changed = Vec::new();
    for _ in 0..ctx.opts.deploy_runs {
        let before = versions(&names)?;
        let (dt, _) = docker_timed(&["stack", "deploy", "--resolve-image", "never", "-c", file_s, &stack])?;
        let after = versions(&names)?;
        never_ms.push(ms(dt));
        never_changed.push(changed(&before, &after));
    }
    progress!(
        "docker stack deploy --resolve-image never: median {}",
        fmt_ms(median(&never_ms))
    );
    // The registry lookup alone, as the engine answers it here (bounded: 20 lookups or 20 s).
    let mut lookup_ms = Vec::new();
    let mut lookup_status = 0;
    let t = Instant::now();
    while lookup_ms.len() < 20 && t.elapsed() < Duration::from_secs(20) {
        let (status, dt) = ctx.engine.time_distribution(IMAGE).await?;
        lookup_status = status;
        lookup_ms.push(ms(dt));
    }
    // Give Swarm a moment to act on the updates (it would replace tasks if the spec changed).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks_after = cli::stack_task_count(&stack)?;

    progress!("removing stack {stack}");
    docker(&["stack", "rm", &stack])?;
    let gone = cli::wait_containers_gone(&format!("{stack}_"), Duration::from_secs(120))?;
    progress!("containers gone after {}", fmt_secs(gone));
    Ok(ComposeOut {
        initial,
        until_running,
        deploy_ms,
        changed: changed_runs,
        never_ms,
        never_changed,
        lookup_ms,
        lookup_status,
        tasks_before,
        tasks_after,
        warned_digest,
    })
}

// ---------------------------------------------------------------------------------------------

fn preflight(opts: &Opts) -> anyhow::Result<String> {
    let info = docker(&["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.ServerVersion}} {{.NCPU}} {{.OperatingSystem}} / {{.KernelVersion}}"])?;
    let mut parts = info.trim().splitn(5, ' ');
    let (state, manager) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if state != "active" || manager != "true" {
        bail!("the engine must be an active swarm manager (got {state:?}, manager {manager:?}); see scripts/ensure-swarm.sh");
    }
    let version = parts.next().unwrap_or("?").to_string();
    let ncpu = parts.next().unwrap_or("?").to_string();
    let os = parts.next().unwrap_or("?").to_string();
    docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .with_context(|| format!("image {IMAGE} missing: run scripts/demo-images.sh"))?;
    let existing = cli::services_with_prefix(&format!("{}-", opts.prefix))?;
    if !existing.is_empty() {
        bail!("services named {}-* already exist; pick another --prefix", opts.prefix);
    }
    let api = docker(&["version", "--format", "{{.Server.APIVersion}}"]).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    Ok(format!(
        "Engine {version} (API {}), single-node swarm manager; {ncpu} CPUs ({cpu}); {os}.",
        api.trim()
    ))
}

/// Removes everything named `<prefix>-…`: services (steward's and the compose stack's), the
/// compose stack's network, then waits for the containers to go.
fn cleanup(prefix: &str) {
    let compose = format!("{prefix}-compose");
    let _ = docker(&["stack", "rm", &compose]);
    if let Ok(names) = cli::services_with_prefix(&format!("{prefix}-")) {
        if !names.is_empty() {
            progress!("cleanup: removing {} leftover services", names.len());
            let _ = cli::remove_services(&names);
        }
    }
    let _ = cli::wait_containers_gone(&format!("{prefix}-"), Duration::from_secs(90));
    if let Ok(nets) = docker(&[
        "network",
        "ls",
        "--filter",
        &format!("name={prefix}-"),
        "--format",
        "{{.Name}}",
    ]) {
        for n in nets
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with(&format!("{prefix}-")))
        {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("rollback") {
        return rollback::main(std::env::args().skip(2).collect()).await;
    }
    if std::env::args().nth(1).as_deref() == Some("api") {
        return api::main(std::env::args().skip(2).collect()).await;
    }
    if std::env::args().nth(1).as_deref() == Some("schedule") {
        return schedule::main(std::env::args().skip(2).collect()).await;
    }
    if std::env::args().nth(1).as_deref() == Some("database") {
        return database::main(std::env::args().skip(2).collect()).await;
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("steward-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let machine = match preflight(&opts) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("steward-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let setup = (|| -> anyhow::Result<(PathBuf, PathBuf, Engine)> {
        let work = std::env::temp_dir().join(&opts.prefix);
        std::fs::create_dir_all(&work)?;
        Ok((work, cli::steward_bin()?, Engine::new(&opts.docker_host)?))
    })();
    let (work, bin, engine) = match setup {
        Ok(s) => s,
        Err(e) => {
            eprintln!("steward-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let prefix = opts.prefix.clone();
    let mut ctx = Ctx {
        opts,
        work: work.clone(),
        bin,
        engine,
        started: Instant::now(),
        violations: vec![],
    };
    progress!("prefix {prefix}, work dir {}", work.display());

    let mut out = String::new();
    let _ = writeln!(out, "<!-- steward-bench, prefix {prefix} -->\n");
    let _ = writeln!(
        out,
        "Machine: {machine} 1-minute load average at start: {}.\n",
        cli::loadavg()
    );
    let mut errors: BTreeMap<&str, String> = BTreeMap::new();
    if let Err(e) = steady_and_idle(&mut ctx, &mut out).await {
        errors.insert("steady state", format!("{e:#}"));
    }
    cleanup(&prefix);
    if let Err(e) = drift::drift(&mut ctx, &mut out).await {
        errors.insert("drift", format!("{e:#}"));
    }
    cleanup(&prefix);
    let _ = std::fs::remove_dir_all(&work);

    let _ = writeln!(
        out,
        "Whole run: {}; 1-minute load average at the end: {}.",
        fmt_secs(ctx.started.elapsed()),
        cli::loadavg()
    );
    print!("{out}");
    for (section, e) in &errors {
        eprintln!("steward-bench: {section} failed: {e}");
    }
    for v in &ctx.violations {
        eprintln!("steward-bench: VIOLATION: {v}");
    }
    if errors.is_empty() && ctx.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
