//! `steward-bench`: measures steward against the real local Docker Swarm and prints Markdown.
//!
//! Sections (see docs/BENCHMARKS.md for the reading of the numbers):
//! 1. steady state: one reconcile pass over a converged 50-service stack (wall time, Engine API
//!    calls, writes, version indexes), compared with re-running `docker stack deploy` on the
//!    equivalent, unchanged compose stack;
//! 2. idle: `steward run` on the converged 50-service stack for a fixed window (RSS, CPU);
//! 3. drift: `docker service scale` by hand under `steward run`, time until steward restores it.
//!
//! `steward-bench rollback` is a separate run (see `rollback/mod.rs`): a bad image deployed over a
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
mod steady;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cli::docker;
use crate::engine::Engine;
use crate::stats::fmt_secs;

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
    crate::cli::check_prefix(&o.prefix)?;
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
    if let Err(e) = steady::steady_and_idle(&mut ctx, &mut out).await {
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
