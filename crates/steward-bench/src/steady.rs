//! Sections 1 and 2 of the Swarm bench: one reconcile pass over a converged stack (compared with
//! re-running `docker stack deploy`), then `steward run` idle on that stack.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use steward_backends::swarm::Swarm;
use steward_controller::Controller;
use steward_store::Store;

use crate::cli::{self, changed, docker, docker_timed, versions, RunningSteward};
use crate::engine::Engine;
use crate::stack_files::{write_compose, write_stack};
use crate::stats::{fmt_ms, fmt_secs, max, median, min, ms, percentile};
use crate::{svc_names, Ctx, IMAGE};

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench] {}", format!($($arg)*)) };
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

pub(crate) async fn steady_and_idle(ctx: &mut Ctx, out: &mut String) -> anyhow::Result<()> {
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
