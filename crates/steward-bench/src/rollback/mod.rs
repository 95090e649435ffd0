//! `steward-bench rollback`: how fast a bad image deployed over a healthy one is undone, by
//! steward (`steward run`, manifest rewritten) and by Swarm alone (`docker service update` with
//! `--update-failure-action rollback`).
//!
//! Two bad images, each deployed over a healthy `taxcollector-demo:v2` service (1 replica, port
//! published in host mode, update parallelism 1, monitor 3s, failure action rollback,
//! stop-first):
//! - `:broken` exits 1 at start: Swarm detects the failure itself;
//! - `:unhealthy` runs but its health endpoint answers 500: only steward's health gate sees it.
//!
//! Observations go through the bench's own clients, never steward's: the published port is
//! polled every 50 ms (`GET /api/v1/health/`, `version` of the JSON body), and the service's
//! `UpdateStatus` every 20 ms (`GET /services/{name}`, the object `docker service inspect`
//! prints). steward's side comes from its own events (`steward events -o json`, `firstSeen`).
//!
//! Everything is named `<prefix>-rb-…` and removed after each run, and again at the end.

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench rollback] {}", format!($($arg)*)) };
}

mod clock;
mod observe;
mod report;
mod run;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use self::report::{fmt_s, report};
use self::run::{run_steward, run_swarm};
use crate::cli::{self, docker};
use crate::engine::Engine;
use crate::stats::fmt_secs;

const GOOD: &str = "taxcollector-demo:v2";
const GOOD_VERSION: &str = "v2";
/// The whole subcommand stays under ten minutes; runs are skipped once this is spent.
const BUDGET: Duration = Duration::from_secs(9 * 60 + 30);
const HTTP_POLL: Duration = Duration::from_millis(50);
const SWARM_POLL: Duration = Duration::from_millis(20);
/// Bound on "until v2 serves again" (Swarm may wait a minute for a task that never started).
const BACK_TIMEOUT: Duration = Duration::from_secs(90);

const USAGE: &str =
    "usage: steward-bench rollback [--prefix bench-NAME] [--runs 3] [--swarm-window-secs 60] [--steward PATH]\n\n\
Deploys taxcollector-demo:broken and :unhealthy over a healthy :v2 service, with `steward run` (manifest rewritten) \
and with `docker service update` alone, and times until v2 serves again. --steward picks the steward binary \
(default: the one next to this binary). Markdown goes to stdout, progress to stderr.";

struct Opts {
    prefix: String,
    runs: usize,
    swarm_window: Duration,
    steward: Option<PathBuf>,
    docker_host: String,
}

fn parse_args(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        prefix: format!("bench-{}", std::process::id()),
        runs: 3,
        swarm_window: Duration::from_secs(60),
        steward: None,
        docker_host: std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| steward_backends::swarm::DEFAULT_DOCKER_HOST.to_string()),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--prefix" => o.prefix = val("--prefix")?,
            "--runs" => o.runs = val("--runs")?.parse()?,
            "--swarm-window-secs" => o.swarm_window = Duration::from_secs(val("--swarm-window-secs")?.parse()?),
            "--steward" => o.steward = Some(PathBuf::from(val("--steward")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    crate::cli::check_prefix(&o.prefix)?;
    if o.runs == 0 || o.runs > 10 {
        bail!("--runs must be 1..=10");
    }
    if o.swarm_window < Duration::from_secs(10) || o.swarm_window > Duration::from_secs(120) {
        bail!("--swarm-window-secs must be 10..=120");
    }
    Ok(o)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bad {
    Broken,
    Unhealthy,
}

impl Bad {
    fn tag(self) -> &'static str {
        match self {
            Bad::Broken => "broken",
            Bad::Unhealthy => "unhealthy",
        }
    }
    fn image(self) -> String {
        format!("taxcollector-demo:{}", self.tag())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    Steward,
    Swarm,
}

impl Driver {
    fn short(self) -> &'static str {
        match self {
            Driver::Steward => "st",
            Driver::Swarm => "sw",
        }
    }
}

struct Ctx {
    opts: Opts,
    work: PathBuf,
    bin: PathBuf,
    engine: Engine,
    started: Instant,
}

// ---------------------------------------------------------------------------------------------

fn preflight(opts: &Opts) -> anyhow::Result<String> {
    let info = docker(&[
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.ServerVersion}} {{.NCPU}}",
    ])?;
    let f: Vec<&str> = info.split_whitespace().collect();
    if f.first() != Some(&"active") || f.get(1) != Some(&"true") {
        bail!(
            "the engine must be an active swarm manager (got {:?}); see scripts/ensure-swarm.sh",
            info.trim()
        );
    }
    for tag in ["v2", "broken", "unhealthy"] {
        let image = format!("taxcollector-demo:{tag}");
        docker(&["image", "inspect", "--format", "{{.Id}}", &image])
            .with_context(|| format!("image {image} missing: run scripts/demo-images.sh"))?;
    }
    if !cli::services_with_prefix(&format!("{}-", opts.prefix))?.is_empty() {
        bail!("services named {}-* already exist; pick another --prefix", opts.prefix);
    }
    Ok(format!(
        "Engine {}, {} CPUs",
        f.get(2).unwrap_or(&"?"),
        f.get(3).unwrap_or(&"?")
    ))
}

pub async fn main(args: Vec<String>) -> ExitCode {
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("steward-bench rollback: {e:#}");
            return ExitCode::from(2);
        }
    };
    let machine = match preflight(&opts) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("steward-bench rollback: {e:#}");
            return ExitCode::from(2);
        }
    };
    let setup = (|| -> anyhow::Result<(PathBuf, PathBuf, Engine)> {
        let work = std::env::temp_dir().join(format!("{}-rb", opts.prefix));
        std::fs::create_dir_all(&work)?;
        let bin = match &opts.steward {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => bail!("--steward {}: no such file", p.display()),
            None => cli::steward_bin()?,
        };
        Ok((work, bin, Engine::new(&opts.docker_host)?))
    })();
    let (work, bin, engine) = match setup {
        Ok(s) => s,
        Err(e) => {
            eprintln!("steward-bench rollback: {e:#}");
            return ExitCode::from(2);
        }
    };
    let prefix = opts.prefix.clone();
    let ctx = Ctx {
        opts,
        work: work.clone(),
        bin,
        engine,
        started: Instant::now(),
    };
    progress!(
        "prefix {prefix}, steward {}, work dir {}",
        ctx.bin.display(),
        work.display()
    );
    let load_start = cli::loadavg();

    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut skipped = Vec::new();
    let left = |ctx: &Ctx| BUDGET.saturating_sub(ctx.started.elapsed());
    let runs: Vec<usize> = (1..=ctx.opts.runs).collect();

    // Swarm alone, `:unhealthy`, first: every run is observed at once for the whole window
    // (nothing rolls it back; the window only bounds the wait).
    let need = ctx.opts.swarm_window + Duration::from_secs(30);
    if left(&ctx) < need {
        skipped.push("Swarm alone, :unhealthy (all runs)".to_string());
    } else {
        progress!(
            "Swarm alone :unhealthy, runs {runs:?} at once, {} s window (load {})",
            ctx.opts.swarm_window.as_secs(),
            cli::loadavg()
        );
        for r in run_swarm(&ctx, Bad::Unhealthy, &runs, ctx.opts.swarm_window).await {
            match r {
                Ok(r) => results.push(r),
                Err(e) => errors.push(format!("Swarm alone :unhealthy: {e:#}")),
            }
        }
    }

    // The timed cases, one at a time and interleaved, so that a change of machine load spreads
    // over every case. A `:broken` run needs up to ~110 s (a 90 s bound on the rollback, 8 s for
    // steward's `RolledBack`, set-up, removal).
    for &run in &runs {
        for (driver, bad) in [
            (Driver::Steward, Bad::Broken),
            (Driver::Swarm, Bad::Broken),
            (Driver::Steward, Bad::Unhealthy),
        ] {
            let need = if bad == Bad::Broken {
                Duration::from_secs(110)
            } else {
                Duration::from_secs(45)
            };
            if left(&ctx) < need {
                skipped.push(format!("{driver:?} :{} run {run}", bad.tag()));
                continue;
            }
            progress!(
                "{driver:?} :{} run {run}/{} (load {})",
                bad.tag(),
                ctx.opts.runs,
                cli::loadavg()
            );
            let r = match driver {
                Driver::Steward => run_steward(&ctx, bad, run).await,
                Driver::Swarm => run_swarm(&ctx, bad, &[run], BACK_TIMEOUT).await.pop().expect("one run"),
            };
            match r {
                Ok(r) => {
                    progress!("  v2 again after {}", r.total_ms.map_or("– (bounded)".into(), fmt_s));
                    results.push(r);
                }
                Err(e) => {
                    progress!("  failed: {e:#}");
                    errors.push(format!("{driver:?} :{} run {run}: {e:#}", bad.tag()));
                }
            }
        }
    }
    crate::cleanup(&prefix);
    let _ = std::fs::remove_dir_all(&work);

    let mut out = String::new();
    let _ = writeln!(out, "<!-- steward-bench rollback, prefix {prefix} -->\n");
    let _ = writeln!(
        out,
        "Machine: {machine}; 1-minute load average at start {load_start}. steward binary: `{}`.\n",
        ctx.bin.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()
    );
    let _ = report(&mut out, &results, &ctx.opts);
    for s in &skipped {
        let _ = writeln!(out, "Skipped (time budget): {s}.");
    }
    for e in &errors {
        let _ = writeln!(out, "Failed: {e}.");
    }
    let _ = writeln!(
        out,
        "Whole run: {}; 1-minute load average at the end: {}.",
        fmt_secs(ctx.started.elapsed()),
        cli::loadavg()
    );
    print!("{out}");
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
