//! `steward-bench api`: the HTTP API under a large store, the controller's memory with that
//! store, and how long a `git push` takes to reach Swarm (see docs/BENCHMARKS.md, "API, GitOps
//! and memory").
//!
//! 1. api: a state file filled through `steward_store::Store` (1,000 statuses, 100,000 event
//!    records), served in-process by `steward_api::serve`; sequential and concurrent clients
//!    time `GET /api/v1/status`, `/api/v1/events?limit=100`, `?object=…` and the default
//!    listing;
//! 2. memory: the real `steward run` on that file and on an empty one (3 services each): RSS
//!    at convergence and after an idle minute;
//! 3. push: `steward run --git` on a bare repository in a temp dir; time from the push webhook
//!    (and, separately, from `git push` with polling only) to the first Swarm write and to
//!    the new replica count running.
//!
//! Everything it creates is named `<prefix>-api-…` and removed at the end, also after a failure.

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[bench api] {}", format!($($arg)*)) };
}

mod child;
mod fill;
mod http;
mod latency;
mod memory;
mod push;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cli::{docker, loadavg, steward_bin, wait_containers_gone};
use crate::engine::Engine;
use crate::stats::{fmt_ms, max, median, min, percentile};
use child::mib;
use latency::Round;

pub const IMAGE: &str = "taxcollector-demo:v1";
/// The whole run stays under ten minutes; what would overrun is skipped and reported.
const BUDGET: Duration = Duration::from_secs(9 * 60 + 30);

struct Opts {
    prefix: String,
    resources: usize,
    events: u64,
    requests: usize,
    warmup: usize,
    clients: usize,
    idle: Duration,
    runs: usize,
    poll_interval: Duration,
    sections: Vec<String>,
}

const USAGE: &str = "usage: steward-bench api [--prefix bench-NAME] [--resources 1000] [--events 100000] \
[--requests 2000] [--warmup 100] [--clients 4] [--idle-secs 60] [--runs 5] [--poll-interval-secs 5] \
[--only api|memory|push]...\n\n\
1. api: fills a state file through steward_store (statuses, events with folding) and times \
GET /api/v1/status and /api/v1/events (limit, object, default) served in-process by steward_api::serve;\n\
2. memory: RSS of the real `steward run` (next to this binary) with that state file and with an empty one;\n\
3. push: git push -> first Swarm write -> converged, with a signed push webhook and with polling only.\n\n\
Needs a swarm manager at $DOCKER_HOST (default: the local socket) with taxcollector-demo:v1, and git. \
Markdown goes to stdout, progress to stderr.";

fn parse_args(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        prefix: format!("bench-{}", std::process::id()),
        resources: 1000,
        events: 100_000,
        requests: 2000,
        warmup: 100,
        clients: 4,
        idle: Duration::from_secs(60),
        runs: 5,
        poll_interval: Duration::from_secs(5),
        sections: vec![],
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--prefix" => o.prefix = val("--prefix")?,
            "--resources" => o.resources = val("--resources")?.parse()?,
            "--events" => o.events = val("--events")?.parse()?,
            "--requests" => o.requests = val("--requests")?.parse()?,
            "--warmup" => o.warmup = val("--warmup")?.parse()?,
            "--clients" => o.clients = val("--clients")?.parse()?,
            "--idle-secs" => o.idle = Duration::from_secs(val("--idle-secs")?.parse()?),
            "--runs" => o.runs = val("--runs")?.parse()?,
            "--poll-interval-secs" => o.poll_interval = Duration::from_secs(val("--poll-interval-secs")?.parse()?),
            "--only" => o.sections.push(val("--only")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    crate::cli::check_prefix(&o.prefix)?;
    if o.resources < 2 || o.events == 0 || o.requests == 0 || o.clients == 0 || o.runs == 0 {
        bail!("--resources must be at least 2, the counts at least 1");
    }
    if o.poll_interval.is_zero() || o.poll_interval > Duration::from_secs(60) {
        bail!("--poll-interval-secs must be 1..=60");
    }
    for s in &o.sections {
        if !["api", "memory", "push"].contains(&s.as_str()) {
            bail!("--only takes api, memory or push");
        }
    }
    if o.sections.is_empty() {
        o.sections = vec!["api".into(), "memory".into(), "push".into()];
    }
    Ok(o)
}

pub struct Ctx {
    pub prefix: String,
    pub work: PathBuf,
    pub bin: PathBuf,
    pub engine: Engine,
    started: Instant,
    /// Services this run created (or may have): removed at the end.
    pub created: Vec<String>,
}

impl Ctx {
    pub fn remaining(&self) -> Duration {
        BUDGET.saturating_sub(self.started.elapsed())
    }
    /// Fails when fewer than `need` remain of the budget.
    pub fn need(&self, what: &str, need: Duration) -> anyhow::Result<()> {
        if self.remaining() < need {
            bail!(
                "skipped {what}: {:.0} s of the time budget left, about {:.0} s needed",
                self.remaining().as_secs_f64(),
                need.as_secs_f64()
            );
        }
        Ok(())
    }
}

/// `Version.Index` of one service, through the bench's own Engine client.
pub async fn service_version(engine: &Engine, service: &str) -> anyhow::Result<u64> {
    let v = engine.get(&format!("/services/{service}")).await?;
    v.pointer("/Version/Index")
        .and_then(|i| i.as_u64())
        .with_context(|| format!("service {service} has no Version.Index"))
}

/// (running, desired) tasks of one service; `None` when it does not exist.
pub async fn service_running(engine: &Engine, service: &str) -> anyhow::Result<Option<(u64, u64)>> {
    let list = engine.task_counts(&serde_json::json!({ "name": [service] })).await?;
    Ok(list.into_iter().find(|(n, _, _)| n == service).map(|(_, r, d)| (r, d)))
}

/// Waits until every service runs `replicas` of `replicas` tasks.
pub async fn wait_running(
    engine: &Engine,
    services: &[String],
    replicas: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let mut all = true;
        for s in services {
            all &= service_running(engine, s).await? == Some((replicas, replicas));
        }
        if all {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!(
                "{} not all {replicas}/{replicas} within {timeout:?}",
                services.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stats_cells(xs: &[f64]) -> String {
    format!(
        "{} | {} | {} | {} | {}",
        xs.len(),
        fmt_ms(median(xs)),
        fmt_ms(percentile(xs, 90.0)),
        fmt_ms(percentile(xs, 99.0)),
        fmt_ms(max(xs))
    )
}

fn size(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / 1024.0 / 1024.0)
    } else if bytes >= 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{bytes:.0} B")
    }
}

fn round_row(endpoint: &str, round: &str, r: &Round) -> String {
    format!(
        "| `{endpoint}` | {round} | {} | {:.0} | {} |\n",
        stats_cells(&r.samples),
        r.samples.len() as f64 / r.wall.as_secs_f64(),
        size(r.mean_bytes)
    )
}

fn emit(md: &str) {
    print!("{md}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

async fn section_api(ctx: &mut Ctx, o: &Opts, big: &Path) -> anyhow::Result<String> {
    ctx.need("section 1 (api)", Duration::from_secs(90))?;
    let mut md = String::from("### 1. API latency over a large store\n\n");
    say!(
        "filling {} with {} statuses and {} event records",
        big.display(),
        o.resources,
        o.events
    );
    let f = fill::fill(big, o.resources, o.events, 0x57e4a2d)?;
    say!("filled in {:.1} s", f.took.as_secs_f64());
    writeln!(
        md,
        "State file, filled through `steward_store::Store` in {:.1} s:\n",
        f.took.as_secs_f64()
    )?;
    md.push_str("| statuses | event records | `record_event` calls | folded | largest count | simulated span | file size |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    writeln!(
        md,
        "| {} (3 conditions each) | {} over {} objects | {} | {} ({:.1} %) | {} | {:.1} days | {} |\n",
        f.statuses,
        f.rows,
        f.objects,
        f.calls,
        f.calls - f.rows,
        100.0 * (f.calls - f.rows) as f64 / f.calls as f64,
        f.max_count,
        f.span.as_seconds_f64() / 86_400.0,
        size(f.file_bytes as f64),
    )?;

    let server = latency::Server::start(big)?;
    let addr = server.addr.clone();
    // What the endpoints serve, checked once.
    let status = latency::get_json(&addr, "/api/v1/status").await?;
    let items = status["items"].as_array().map_or(0, Vec::len);
    if items != o.resources {
        bail!("/api/v1/status returned {items} items, {} expected", o.resources);
    }
    let newest = latency::get_json(&addr, "/api/v1/events?limit=100").await?;
    if newest.as_array().map_or(0, Vec::len) != 100 {
        bail!("/api/v1/events?limit=100 did not return 100 events");
    }
    // 50 objects spread over the list (stacks, busy and quiet services), taken in turn.
    let objs = fill::objects(o.resources);
    let step = (objs.len() / 50).max(1);
    let object_paths: Vec<String> = objs
        .iter()
        .step_by(step)
        .take(50)
        .map(|ob| format!("/api/v1/events?object={}", ob.key()))
        .collect();
    let mut per_object = Vec::new();
    for p in &object_paths {
        let v = latency::get_json(&addr, p).await?;
        let list = v.as_array().context("events is not a list")?;
        let want = p.split("object=").nth(1).unwrap_or_default();
        if list.iter().any(|e| e["object"] != want) {
            bail!("{p} returned events of other objects");
        }
        per_object.push(list.len() as f64);
    }
    let default_list = latency::get_json(&addr, "/api/v1/events").await?;
    let default_n = default_list.as_array().map_or(0, Vec::len);

    let deadline = Instant::now() + ctx.remaining().saturating_sub(Duration::from_secs(30));
    let n = o.requests;
    let endpoints: Vec<(String, Vec<String>, usize)> = vec![
        ("/api/v1/status".into(), vec!["/api/v1/status".into()], n),
        (
            "/api/v1/events?limit=100".into(),
            vec!["/api/v1/events?limit=100".into()],
            n,
        ),
        ("/api/v1/events?object=Kind/name".into(), object_paths.clone(), n),
        ("/api/v1/events".into(), vec!["/api/v1/events".into()], (n / 4).max(1)),
    ];
    md.push_str(&format!(
        "Served in-process by `steward_api::serve` (its own 2-worker runtime, as in `steward run`); \
         the client keeps one connection per client open and times each request from writing it to \
         having read the whole body. Sequential: {} untimed warm-up requests, then N in a row. \
         Concurrent: {} clients at once, N in all.\n\n",
        o.warmup, o.clients
    ));
    md.push_str("| endpoint | round | N | p50 | p90 | p99 | max | requests/s | response |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (label, paths, count) in &endpoints {
        say!(
            "GET {label}: {count} sequential, then {count} over {} clients",
            o.clients
        );
        let r = latency::sequential(&addr, paths, o.warmup, *count, deadline).await?;
        md.push_str(&round_row(label, "sequential", &r));
        let r = latency::concurrent(&addr, paths, o.warmup, *count, o.clients, deadline).await?;
        md.push_str(&round_row(label, &format!("{} clients", o.clients), &r));
    }
    drop(server);
    writeln!(
        md,
        "\n`/api/v1/status` returns all {items} statuses; `?limit=100` the newest 100 events; `?object=` \
         cycles through {} objects (stacks, busy and quiet services) that have {:.0}–{:.0} records each \
         (median {:.0}); the default listing returns the newest {default_n}.\n",
        object_paths.len(),
        min(&per_object),
        max(&per_object),
        median(&per_object),
    )?;
    Ok(md)
}

/// Copies a closed state file (with its WAL, if any) and removes every status from the copy.
fn copy_without_statuses(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.parent().context("state path has no parent")?)?;
    for suffix in ["", "-wal", "-shm"] {
        let src = PathBuf::from(format!("{}{suffix}", from.display()));
        if src.exists() {
            std::fs::copy(&src, format!("{}{suffix}", to.display()))?;
        }
    }
    let store = steward_store::Store::open(to)?;
    for s in store.statuses()? {
        store.remove_status(&s.kind, &s.name)?;
    }
    Ok(())
}

async fn section_memory(ctx: &mut Ctx, o: &Opts, big: &Path) -> anyhow::Result<String> {
    if !big.exists() {
        bail!("section 2 needs the filled state file of section 1 (run with --only api --only memory)");
    }
    ctx.need("section 2 (memory)", 3 * o.idle + Duration::from_secs(90))?;
    let mut md = format!("### 2. Controller memory with {} stored event records\n\n", o.events);
    let empty = ctx.work.join("empty/state.db");
    // The same events without the statuses: `steward run` reads every stored status in its
    // first pass and removes those not in its desired state, so the filled file measures that
    // one-off read too; this copy measures the event table alone.
    let events_only = ctx.work.join("events-only/state.db");
    copy_without_statuses(big, &events_only)?;
    let mut runs = Vec::new();
    for (label, state, stack) in [
        ("empty", empty.as_path(), format!("{}-api-mem-e", ctx.prefix)),
        (
            "events only",
            events_only.as_path(),
            format!("{}-api-mem-v", ctx.prefix),
        ),
        ("filled (section 1)", big, format!("{}-api-mem-f", ctx.prefix)),
    ] {
        say!("memory/{label}: steward run on {} with stack {stack}", state.display());
        runs.push(memory::run(ctx, label, state, &stack, o.idle).await?);
    }
    md.push_str(
        "`steward --state FILE run DIR --listen 127.0.0.1:0` (release build), DIR a stack of 3 services \
         (`taxcollector-demo:v1`, 1 replica each), a stack of its own per run. Memory from \
         `/proc/PID/status`: VmRSS (RssAnon + RssFile), VmHWM the peak.\n\n",
    );
    md.push_str("| state file | event records | status rows before → after | file size | start → converged | VmRSS at convergence | VmRSS after idle | max VmRSS in idle | RssAnon / RssFile after idle | VmHWM | passes in idle |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &runs {
        writeln!(
            md,
            "| {} | {} | {} → {} | {} | {:.1} s | {} | {} ({:.0} s) | {} | {} / {} | {} | {} |",
            r.label,
            r.event_rows,
            r.status_rows_before,
            r.status_rows_after,
            size(r.file_bytes as f64),
            r.to_converged.as_secs_f64(),
            mib(r.at_converged.rss),
            mib(r.idle_final.rss),
            r.idle.as_secs_f64(),
            mib(r.idle_max_rss),
            mib(r.idle_final.anon),
            mib(r.idle_final.file),
            mib(r.idle_final.hwm),
            r.idle_passes,
        )?;
    }
    md.push_str("\nAfter the idle window, the same process served these reads (one connection, sequential, after a short warm-up):\n\n");
    md.push_str("| state file | endpoint | N | p50 | p90 | p99 | max | requests/s | response | VmRSS after / VmHWM |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &runs {
        for (i, (label, round)) in r.api.iter().enumerate() {
            let after = if i + 1 == r.api.len() {
                r.after_api
                    .map_or("–".into(), |m| format!("{} / {}", mib(m.rss), mib(m.hwm)))
            } else {
                String::new()
            };
            writeln!(
                md,
                "| {} | `{label}` | {} | {:.0} | {} | {after} |",
                r.label,
                stats_cells(&round.samples),
                round.samples.len() as f64 / round.wall.as_secs_f64(),
                size(round.mean_bytes)
            )?;
        }
    }
    md.push('\n');
    Ok(md)
}

fn push_table(label: &str, m: &push::Mode, md: &mut String) -> anyhow::Result<()> {
    let ms = |f: &dyn Fn(&push::PushRun) -> Duration| -> Vec<f64> {
        m.runs.iter().map(|r| f(r).as_secs_f64() * 1000.0).collect()
    };
    let row = |what: &str, xs: &[f64]| -> String {
        let each: Vec<String> = xs
            .iter()
            .map(|x| fmt_ms(*x).trim_end_matches(" ms").to_string())
            .collect();
        format!(
            "| {label} | {what} | {} | {} | {} | {} | {} |\n",
            xs.len(),
            fmt_ms(min(xs)),
            fmt_ms(median(xs)),
            fmt_ms(max(xs)),
            each.join(", ")
        )
    };
    let webhook = m.runs.iter().any(|r| r.post.is_some());
    if webhook {
        md.push_str(&row("POST sent → first Swarm write", &ms(&|r| r.to_write)));
        md.push_str(&row(
            "POST sent → converged (running = desired)",
            &ms(&|r| r.to_converged),
        ));
        md.push_str(&row("POST round trip (202)", &ms(&|r| r.post.unwrap_or_default())));
    } else {
        md.push_str(&row("`git push` returned → first Swarm write", &ms(&|r| r.to_write)));
        md.push_str(&row(
            "`git push` returned → converged (running = desired)",
            &ms(&|r| r.to_converged),
        ));
        md.push_str(&row(
            "wait before the commit (spreads pushes over the poll cycle)",
            &ms(&|r| r.delay.unwrap_or_default()),
        ));
    }
    md.push_str(&row("`git push` itself", &ms(&|r| r.git_push)));
    Ok(())
}

async fn section_push(ctx: &mut Ctx, o: &Opts) -> anyhow::Result<String> {
    ctx.need(
        "section 3 (push)",
        Duration::from_secs(60) + o.poll_interval * (2 * o.runs as u32),
    )?;
    let mut md = String::from("### 3. Push → converged\n\n");
    let hook = push::run(ctx, true, o.runs, o.poll_interval).await?;
    let poll = push::run(ctx, false, o.runs, o.poll_interval).await?;
    writeln!(
        md,
        "`steward run --git file://…/remote.git --path deploy` on a bare repository in the bench's temp dir, \
         one service (`taxcollector-demo:v1`); each run commits `replicas: N+1` (2, 3, …). The Engine is polled \
         every {} ms (plus the request itself) for the service's `Version.Index` (first write) and for \
         running = desired tasks (converged). Start-up to 1/1: {:.1} s (webhook), {:.1} s (polling).\n",
        push::POLL.as_millis(),
        hook.setup.as_secs_f64(),
        poll.setup.as_secs_f64()
    )?;
    md.push_str("| mode | measurement | N | min | median | max | each run (ms) |\n|---|---|---:|---:|---:|---:|---|\n");
    push_table("webhook, `--interval 1h`", &hook, &mut md)?;
    push_table(
        &format!("polling, `--interval {}s`", o.poll_interval.as_secs()),
        &poll,
        &mut md,
    )?;
    md.push('\n');
    Ok(md)
}

fn cleanup(ctx: &Ctx) {
    let existing: Vec<String> = ctx
        .created
        .iter()
        .filter(|s| docker(&["service", "inspect", "--format", "{{.ID}}", s]).is_ok())
        .cloned()
        .collect();
    if !existing.is_empty() {
        say!("removing {}", existing.join(" "));
        let mut args = vec!["service", "rm"];
        args.extend(existing.iter().map(String::as_str));
        if let Err(e) = docker(&args) {
            say!("cleanup: {e:#}");
        }
        if let Err(e) = wait_containers_gone(&format!("{}-api-", ctx.prefix), Duration::from_secs(60)) {
            say!("cleanup: {e:#}");
        }
    }
    if ctx.work.exists() {
        if let Err(e) = std::fs::remove_dir_all(&ctx.work) {
            say!("cleanup: cannot remove {}: {e}", ctx.work.display());
        }
    }
}

fn header(o: &Opts) -> String {
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    let now = time::OffsetDateTime::now_utc();
    format!(
        "## steward-bench api\n\nRun {:04}-{:02}-{:02} {:02}:{:02} UTC, tree `{commit}`, {} cores, 1-minute load average {} at start. \
         {} resources, {} event records, {} requests per round, {} clients, {} s idle, {} push runs per mode.\n\n",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        o.resources,
        o.events,
        o.requests,
        o.clients,
        o.idle.as_secs(),
        o.runs
    )
}

pub async fn main(args: Vec<String>) -> ExitCode {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("steward-bench api: {e:#}");
            return ExitCode::from(2);
        }
    };
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| steward_backends::swarm::DEFAULT_DOCKER_HOST.to_string());
    let setup = || -> anyhow::Result<Ctx> {
        let work = std::env::temp_dir().join(format!("{}-api", o.prefix));
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        Ok(Ctx {
            prefix: o.prefix.clone(),
            work,
            bin: steward_bin()?,
            engine: Engine::new(&host)?,
            started: Instant::now(),
            created: vec![],
        })
    };
    let mut ctx = match setup() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("steward-bench api: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    let preflight = async {
        let info = ctx.engine.get("/info").await?;
        if info.pointer("/Swarm/ControlAvailable").and_then(|v| v.as_bool()) != Some(true) {
            bail!("the engine is not a swarm manager (scripts/ensure-swarm.sh)");
        }
        ctx.engine
            .get(&format!("/images/{IMAGE}/json"))
            .await
            .with_context(|| format!("image {IMAGE} missing (scripts/demo-images.sh)"))?;
        anyhow::Ok(())
    };
    if let Err(e) = preflight.await {
        eprintln!("steward-bench api: {e:#}");
        cleanup(&ctx);
        return ExitCode::FAILURE;
    }
    emit(&header(&o));
    let big = ctx.work.join("big/state.db");
    for section in ["api", "memory", "push"] {
        if !o.sections.iter().any(|s| s == section) {
            continue;
        }
        let t = Instant::now();
        let result = match section {
            "api" => section_api(&mut ctx, &o, &big).await,
            "memory" => section_memory(&mut ctx, &o, &big).await,
            _ => section_push(&mut ctx, &o).await,
        };
        match result {
            Ok(md) => {
                emit(&md);
                say!("section {section} done in {:.0} s", t.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed = true;
                say!("section {section} failed: {e:#}");
                emit(&format!("### section {section}: not measured\n\n{e:#}\n\n"));
            }
        }
    }
    say!("whole run: {:.0} s", ctx.started.elapsed().as_secs_f64());
    cleanup(&ctx);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
