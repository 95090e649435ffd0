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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{self, docker, docker_timed, RunningSteward};
use crate::engine::Engine;
use crate::stats::{fmt_secs, max, median, min};

/// Wall-clock time as nanoseconds since the Unix epoch: comparable with the `firstSeen`
/// timestamps steward records (same host clock).
type Nanos = i128;

fn now() -> Nanos {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Parses an RFC 3339 timestamp (`2026-11-24T10:00:00.123456789Z`, or with a `±hh:mm` offset)
/// into [`Nanos`].
fn parse_rfc3339(s: &str) -> Option<Nanos> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let kept = &digits[..digits.len().min(9)];
        frac = kept.parse::<i128>().ok()? * 10i128.pow(9 - kept.len() as u32);
    }
    let offset_secs: i64 = match s.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let secs = o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60;
            if o.starts_with('-') {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (years counted in 400-year eras).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const GOOD: &str = "taxcollector-demo:v2";
const GOOD_VERSION: &str = "v2";
/// The whole subcommand stays under ten minutes; runs are skipped once this is spent.
const BUDGET: Duration = Duration::from_secs(9 * 60 + 30);
const HTTP_POLL: Duration = Duration::from_millis(50);
const SWARM_POLL: Duration = Duration::from_millis(20);
/// Bound on "until v2 serves again" (Swarm may wait a minute for a task that never started).
const BACK_TIMEOUT: Duration = Duration::from_secs(90);

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench rollback] {}", format!($($arg)*)) };
}

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
    let p = &o.prefix;
    if !p.starts_with("bench-")
        || !p
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("--prefix must start with \"bench-\" and use only [a-z0-9-]");
    }
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

// ---------------------------------------------------------------------------------------------
// Observers

/// One `GET /api/v1/health/` on the published port.
#[derive(Clone, Debug)]
struct Probe {
    start: Nanos,
    end: Nanos,
    /// e.g. `HTTP 200 v2`, `HTTP 500 unhealthy`, `no answer: connection refused`.
    label: String,
    good: bool,
}

/// One `GET /api/v1/health/` on 127.0.0.1:port (HTTP/1.0, 2 s bound).
async fn probe(port: u16) -> (String, bool) {
    let fut = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /api/v1/health/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut buf = Vec::with_capacity(512);
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match tokio::time::timeout(Duration::from_secs(2), fut).await {
        Err(_) => return ("no answer: timeout".into(), false),
        Ok(Err(e)) => return (format!("no answer: {}", io_kind(&e)), false),
        Ok(Ok(b)) => b,
    };
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1).unwrap_or("?").to_string();
    let version = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| v.get("version").and_then(|x| x.as_str()).map(String::from));
    match version {
        Some(v) => {
            let good = status == "200" && v == GOOD_VERSION;
            (format!("HTTP {status} {v}"), good)
        }
        None if buf.is_empty() => ("no answer: closed without a response".into(), false),
        None => (format!("HTTP {status}, no version"), false),
    }
}

fn io_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// Starts a probe of the published port every [`HTTP_POLL`] until `stop`, without waiting for
/// the previous one: a connection attempt that hangs (a SYN dropped while a task starts is
/// retried after 1 s) does not delay the next probe.
fn spawn_http_poller(port: u16, stop: Arc<AtomicBool>, seen: Arc<Mutex<Vec<Probe>>>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HTTP_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inflight = tokio::task::JoinSet::new();
        let mut polls = 0;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            while inflight.try_join_next().is_some() {}
            let seen = seen.clone();
            polls += 1;
            inflight.spawn(async move {
                let start = now();
                let (label, good) = probe(port).await;
                let p = Probe {
                    start,
                    end: now(),
                    label,
                    good,
                };
                seen.lock().expect("poisoned").push(p);
            });
        }
        while inflight.join_next().await.is_some() {}
        polls
    })
}

/// The probes started at or after `t0`, by start time.
fn probes_after(probes: &[Probe], t0: Nanos) -> Vec<Probe> {
    let mut v: Vec<Probe> = probes.iter().filter(|p| p.start >= t0).cloned().collect();
    v.sort_by_key(|p| p.start);
    v
}

/// (start of the first probe after `t0` that did not get v2, earliest end of a v2 answer to a
/// probe started after that one): v2 stopped answering, v2 answers again.
fn gone_and_back(probes: &[Probe], t0: Nanos) -> Option<(Nanos, Nanos)> {
    let v = probes_after(probes, t0);
    let gone = v.iter().position(|p| !p.good)?;
    let back = v[gone + 1..].iter().filter(|p| p.good).map(|p| p.end).min()?;
    Some((v[gone].start, back))
}

/// Distinct successive answers after `t0`, with the start of the first probe of each.
fn answer_changes(probes: &[Probe], t0: Nanos) -> Vec<(Nanos, String)> {
    let mut out: Vec<(Nanos, String)> = Vec::new();
    for p in probes_after(probes, t0) {
        if out.last().is_none_or(|(_, l)| *l != p.label) {
            out.push((p.start, p.label));
        }
    }
    out
}

/// A change of the service's `UpdateStatus.State` (`none` when there is no update status).
#[derive(Clone, Debug)]
struct StateSeen {
    at: Nanos,
    state: String,
    message: String,
}

/// Polls `GET /services/{name}` every [`SWARM_POLL`] until `stop`, recording each change of
/// `UpdateStatus.State`.
fn spawn_swarm_poller(
    engine: Engine,
    name: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<StateSeen>>>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWARM_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls = 0;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let Ok((state, message)) = engine.update_status(&name).await else {
                continue;
            };
            let at = now();
            polls += 1;
            let mut v = seen.lock().expect("poisoned");
            if v.last().is_none_or(|l| l.state != state) {
                v.push(StateSeen { at, state, message });
            }
        }
        polls
    })
}

struct Observers {
    stop: Arc<AtomicBool>,
    http: Arc<Mutex<Vec<Probe>>>,
    swarm: Arc<Mutex<Vec<StateSeen>>>,
    handles: Vec<tokio::task::JoinHandle<usize>>,
}

impl Observers {
    fn start(engine: &Engine, name: &str, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let http = Arc::new(Mutex::new(Vec::new()));
        let swarm = Arc::new(Mutex::new(Vec::new()));
        let handles = vec![
            spawn_http_poller(port, stop.clone(), http.clone()),
            spawn_swarm_poller(engine.clone(), name.to_string(), stop.clone(), swarm.clone()),
        ];
        Self {
            stop,
            http,
            swarm,
            handles,
        }
    }

    /// v2 stopped answering after `t0` and answers again, if so yet.
    fn back(&self, t0: Nanos) -> Option<(Nanos, Nanos)> {
        gone_and_back(&self.http.lock().expect("poisoned"), t0)
    }

    async fn finish(self) -> (Vec<Probe>, Vec<StateSeen>, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut counts = Vec::new();
        for h in self.handles {
            counts.push(h.await.unwrap_or(0));
        }
        let http = self.http.lock().expect("poisoned").clone();
        let swarm = self.swarm.lock().expect("poisoned").clone();
        (http, swarm, counts[0], counts[1])
    }
}

/// The service's tasks, oldest first, as `image state` (`: error` when Swarm gives one):
/// kept in the report to explain slow rollbacks.
async fn task_history(engine: &Engine, name: &str) -> Vec<String> {
    let filters = serde_json::json!({ "service": [name] }).to_string();
    let Ok(v) = engine
        .get(&format!("/tasks?filters={}", crate::engine::encode(&filters)))
        .await
    else {
        return vec![];
    };
    let mut tasks: Vec<(String, String)> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    let s = |p: &str| t.pointer(p).and_then(|x| x.as_str()).unwrap_or("").to_string();
                    let image = s("/Spec/ContainerSpec/Image");
                    let tag = image.rsplit(':').next().unwrap_or(&image).to_string();
                    let err = s("/Status/Err");
                    let mut d = format!("{tag} {}", s("/Status/State"));
                    if !err.is_empty() {
                        let _ = write!(d, ": {err}");
                    }
                    (s("/CreatedAt"), d)
                })
                .collect()
        })
        .unwrap_or_default();
    tasks.sort();
    tasks.into_iter().map(|(_, d)| d).collect()
}

/// A task that never got a node because of the host port (see the report's reading).
fn port_stall(tasks: &[String]) -> bool {
    tasks
        .iter()
        .any(|t| t.contains(" pending") && t.contains("host-mode port already in use"))
}

// ---------------------------------------------------------------------------------------------
// One run

#[derive(Debug, Default, Clone)]
struct Event {
    reason: String,
    object: String,
    message: String,
    count: u64,
    first_seen: Option<Nanos>,
}

/// `steward --state STATE events -o json`.
fn steward_events(bin: &Path, state: &Path) -> anyhow::Result<Vec<Event>> {
    let out = Command::new(bin)
        .arg("--state")
        .arg(state)
        .args(["events", "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run steward events")?;
    if !out.status.success() {
        bail!("steward events failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut evs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
        evs.push(Event {
            reason: s("reason"),
            object: s("object"),
            message: s("message"),
            count: v.get("count").and_then(|c| c.as_u64()).unwrap_or(1),
            first_seen: v.get("firstSeen").and_then(|x| x.as_str()).and_then(parse_rfc3339),
        });
    }
    Ok(evs)
}

struct RunResult {
    driver: Driver,
    bad: Bad,
    run: usize,
    /// Change (manifest renamed into place / `docker service update` started) → v2 answers again.
    total_ms: Option<f64>,
    /// v2 stopped answering → v2 answers again.
    outage_ms: Option<f64>,
    /// steward, `:broken`: Swarm's UpdateStatus seen leaving `updating` → `RollingBack` event.
    swarm_to_rolling_back_ms: Option<f64>,
    /// steward, `:unhealthy`: `RollingBack` → `RollbackIssued` event.
    rolling_back_to_issued_ms: Option<f64>,
    /// steward: `RollbackIssued` events (writes made to roll back).
    rollback_writes: Option<u64>,
    /// Offsets from the change, in ms: (what, ms).
    timeline: Vec<(String, f64)>,
    /// Distinct successive answers of the port after the change.
    answers: Vec<String>,
    /// UpdateStatus states after the change, in order.
    states: Vec<String>,
    /// Last UpdateStatus (state, message) seen.
    final_state: (String, String),
    /// Last answer of the port.
    final_answer: String,
    /// The service's tasks at the end of the run, oldest first.
    tasks: Vec<String>,
    /// `docker service update -d` itself (Swarm alone).
    cli_ms: Option<f64>,
    /// How long the run observed after the change (bounded).
    observed_ms: f64,
    http_polls: usize,
    swarm_polls: usize,
}

fn ms_between(a: Nanos, b: Nanos) -> f64 {
    (b - a) as f64 / 1e6
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

fn manifest(stack: &str, name: &str, image: &str, port: u16, health: bool) -> String {
    let mut y = format!(
        "apiVersion: steward.io/v1alpha1
kind: Stack
metadata:
  name: {stack}
---
apiVersion: steward.io/v1alpha1
kind: Service
metadata:
  name: {name}
spec:
  image: {image}
  replicas: 1
  ports:
    - target: 8080
      published: {port}
      mode: host
  update:
    parallelism: 1
    monitor: 3s
    failureAction: rollback
    order: stop-first
"
    );
    if health {
        let _ = write!(
            y,
            "  health:
    url: http://127.0.0.1:{port}/api/v1/health/
    interval: 300ms
    timeout: 1s
    successThreshold: 2
    failureThreshold: 3
  verifyWindow: 2s
"
        );
    }
    y
}

/// Waits until the port answers `HTTP 200 v2`.
async fn wait_serving_good(port: u16, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let (label, good) = probe(port).await;
        if good {
            return Ok(t.elapsed());
        }
        if t.elapsed() > timeout {
            bail!("port {port} does not serve {GOOD_VERSION} after {timeout:?} (last answer: {label})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes one service and waits until its containers are gone (its host port is then free).
fn remove_service(name: &str) {
    let _ = docker(&["service", "rm", name]);
    let _ = cli::wait_containers_gone(&format!("{name}."), Duration::from_secs(60));
}

struct Ctx {
    opts: Opts,
    work: PathBuf,
    bin: PathBuf,
    engine: Engine,
    started: Instant,
}

/// What the pollers saw, with the change's time.
struct Observed {
    t0: Nanos,
    http: Vec<Probe>,
    swarm: Vec<StateSeen>,
    http_polls: usize,
    swarm_polls: usize,
    observed_ms: f64,
    tasks: Vec<String>,
}

impl Observed {
    fn back(&self) -> Option<(Nanos, Nanos)> {
        gone_and_back(&self.http, self.t0)
    }

    /// Port and UpdateStatus milestones, as offsets from the change.
    fn timeline(&self) -> Vec<(String, f64)> {
        let mut t: Vec<(String, f64)> = Vec::new();
        for s in self.swarm.iter().filter(|s| s.at >= self.t0) {
            // A state seen again (the rollback's own `updating`, `completed`) is a milestone of
            // its own: numbered, so medians never mix the two.
            let base = format!("UpdateStatus → `{}`", s.state);
            let nth = t.iter().filter(|(l, _)| l.starts_with(&base)).count();
            let label = match nth {
                0 => format!("{base} (seen by the 20 ms poll)"),
                n => format!(
                    "{base} again{} (seen by the 20 ms poll)",
                    if n > 1 { format!(" ({})", n + 1) } else { String::new() }
                ),
            };
            t.push((label, ms_between(self.t0, s.at)));
        }
        if let Some((gone, back)) = self.back() {
            t.push(("port stops answering v2".into(), ms_between(self.t0, gone)));
            t.push(("port answers v2 again".into(), ms_between(self.t0, back)));
        }
        let mut shown: Vec<String> = Vec::new();
        for (at, label) in answer_changes(&self.http, self.t0) {
            if label.starts_with("HTTP") && !label.ends_with(GOOD_VERSION) && !shown.contains(&label) {
                t.push((format!("port answers `{label}`"), ms_between(self.t0, at)));
                shown.push(label);
            }
        }
        t
    }

    fn result(&self, driver: Driver, bad: Bad, run: usize) -> RunResult {
        let back = self.back();
        RunResult {
            driver,
            bad,
            run,
            total_ms: back.map(|(_, b)| ms_between(self.t0, b)),
            outage_ms: back.map(|(g, b)| ms_between(g, b)),
            swarm_to_rolling_back_ms: None,
            rolling_back_to_issued_ms: None,
            rollback_writes: None,
            timeline: self.timeline(),
            answers: answer_changes(&self.http, self.t0)
                .into_iter()
                .map(|(_, l)| l)
                .collect(),
            states: self
                .swarm
                .iter()
                .filter(|s| s.at >= self.t0)
                .map(|s| s.state.clone())
                .collect(),
            final_state: self
                .swarm
                .last()
                .map(|s| (s.state.clone(), s.message.clone()))
                .unwrap_or_default(),
            final_answer: probes_after(&self.http, self.t0)
                .last()
                .map(|p| p.label.clone())
                .unwrap_or_default(),
            tasks: self.tasks.clone(),
            cli_ms: None,
            observed_ms: self.observed_ms,
            http_polls: self.http_polls,
            swarm_polls: self.swarm_polls,
        }
    }
}

/// steward: `steward run` on a v2 manifest; the manifest is then replaced by the bad one.
async fn run_steward(ctx: &Ctx, bad: Bad, run: usize) -> anyhow::Result<RunResult> {
    let stack = format!("{}-rb-{}-{}-{run}", ctx.opts.prefix, Driver::Steward.short(), bad.tag());
    let name = format!("{stack}-web");
    let port = free_port()?;
    let health = bad == Bad::Unhealthy;
    let dir = ctx.work.join(&stack);
    let state = ctx.work.join(format!("{stack}.db"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("app.yaml"), manifest(&stack, &name, GOOD, port, health))?;

    let mut steward = RunningSteward::start(&ctx.bin, &state, &dir, &ctx.work.join(format!("{stack}.log")))?;
    let result = async {
        steward.wait_passes(1, Duration::from_secs(30))?;
        wait_serving_good(port, Duration::from_secs(60)).await?;
        // The creation is a rollout too (verified through the health gate when there is one).
        let t = Instant::now();
        while cli::steward_event_count(&ctx.bin, &state, "RolloutComplete")? < 1 {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("the v2 rollout did not complete within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;

        // The change: the new manifest is written beside the directory and renamed into it, so
        // the controller never reads a half-written file.
        let staged = ctx.work.join(format!("{stack}.next.yaml"));
        std::fs::write(&staged, manifest(&stack, &name, &bad.image(), port, health))?;
        let obs = Observers::start(&ctx.engine, &name, port);
        tokio::time::sleep(Duration::from_millis(200)).await; // both pollers have a baseline
        let t0 = now();
        std::fs::rename(&staged, dir.join("app.yaml"))?;
        let t0_i = Instant::now();
        progress!("steward {name}: manifest changed to {}", bad.image());

        while obs.back(t0).is_none() && t0_i.elapsed() < BACK_TIMEOUT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let observed_ms = t0_i.elapsed().as_secs_f64() * 1000.0;
        // Give steward a moment to record the end of the rollout (`RolledBack`), bounded: it
        // waits for Swarm to report the rollback complete, after the rollback's monitor period.
        let t = Instant::now();
        while cli::steward_event_count(&ctx.bin, &state, "RolledBack")? < 1 && t.elapsed() < Duration::from_secs(8) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let tasks = task_history(&ctx.engine, &name).await;
        let (http, swarm, http_polls, swarm_polls) = obs.finish().await;
        let events = steward_events(&ctx.bin, &state)?;
        let o = Observed {
            t0,
            http,
            swarm,
            http_polls,
            swarm_polls,
            observed_ms,
            tasks,
        };
        Ok::<_, anyhow::Error>((o, events))
    }
    .await;
    // Stop the controller before removing its service, or it would create it again.
    let stopped = steward.stop(Duration::from_secs(10));
    remove_service(&name);
    let (o, events) = result?;
    stopped?;

    let after: Vec<&Event> = events
        .iter()
        .filter(|e| e.first_seen.is_some_and(|t| t >= o.t0))
        .collect();
    let first = |reason: &str| {
        after
            .iter()
            .filter(|e| e.reason == reason)
            .filter_map(|e| e.first_seen)
            .min()
    };
    let mut r = o.result(Driver::Steward, bad, run);
    let mut sorted = after.clone();
    sorted.sort_by_key(|e| e.first_seen);
    for e in &sorted {
        let label = format!("steward event `{}`", e.reason);
        if !r.timeline.iter().any(|(l, _)| *l == label) {
            r.timeline
                .push((label, ms_between(o.t0, e.first_seen.expect("filtered"))));
        }
    }
    let rolling_back = first("RollingBack");
    let issued = first("RollbackIssued");
    if rolling_back.is_none() {
        progress!(
            "warning: no RollingBack event after the change ({} events after it)",
            after.len()
        );
    }
    for e in after
        .iter()
        .filter(|e| e.reason == "RollingBack" || e.reason == "RollbackIssued")
    {
        progress!("  {} {}: {}", e.reason, e.object, e.message);
    }
    r.swarm_to_rolling_back_ms = match (bad, swarm_left_updating(&o.swarm, o.t0), rolling_back) {
        (Bad::Broken, Some((at, _)), Some(rb)) => Some(ms_between(at, rb)),
        _ => None,
    };
    r.rolling_back_to_issued_ms = match (rolling_back, issued) {
        (Some(rb), Some(i)) => Some(ms_between(rb, i)),
        _ => None,
    };
    r.rollback_writes = Some(
        after
            .iter()
            .filter(|e| e.reason == "RollbackIssued")
            .map(|e| e.count)
            .sum(),
    );
    Ok(r)
}

/// Swarm alone: services created with `docker service create` (v2, host-mode port), then
/// `docker service update --image BAD` with rollback as the failure action. Several runs are
/// observed at once (the `:unhealthy` ones, which only wait out the window).
async fn run_swarm(ctx: &Ctx, bad: Bad, runs: &[usize], window: Duration) -> Vec<anyhow::Result<RunResult>> {
    let mut svcs = Vec::new();
    let mut out = Vec::new();
    for &run in runs {
        let name = format!("{}-rb-{}-{}-{run}", ctx.opts.prefix, Driver::Swarm.short(), bad.tag());
        let created = free_port().and_then(|port| {
            let publish = format!("mode=host,target=8080,published={port}");
            docker(&[
                "service",
                "create",
                "-d",
                "--name",
                &name,
                "--replicas",
                "1",
                "--publish",
                &publish,
                "--no-resolve-image",
                GOOD,
            ])?;
            Ok(port)
        });
        match created {
            Ok(port) => svcs.push((run, name, port)),
            Err(e) => out.push(Err(e)),
        }
    }
    let result = async {
        for (_, _, port) in &svcs {
            wait_serving_good(*port, Duration::from_secs(60)).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut started = Vec::new();
        for (run, name, port) in &svcs {
            let obs = Observers::start(&ctx.engine, name, *port);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let image = bad.image();
            let t0 = now();
            let t0_i = Instant::now();
            let (cli_dt, _) = docker_timed(&[
                "service",
                "update",
                "--image",
                &image,
                "--update-failure-action",
                "rollback",
                "--update-monitor",
                "3s",
                "--update-parallelism",
                "1",
                "--no-resolve-image",
                "-d",
                name,
            ])?;
            progress!(
                "swarm {name}: `docker service update --image {image} … -d` returned after {:.0} ms",
                cli_dt.as_secs_f64() * 1000.0
            );
            started.push((*run, name.clone(), obs, t0, t0_i, cli_dt));
        }
        let mut done = Vec::new();
        for (run, name, obs, t0, t0_i, cli_dt) in started {
            while obs.back(t0).is_none() && t0_i.elapsed() < window {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let observed_ms = t0_i.elapsed().as_secs_f64() * 1000.0;
            let tasks = task_history(&ctx.engine, &name).await;
            let (http, swarm, http_polls, swarm_polls) = obs.finish().await;
            let o = Observed {
                t0,
                http,
                swarm,
                http_polls,
                swarm_polls,
                observed_ms,
                tasks,
            };
            let mut r = o.result(Driver::Swarm, bad, run);
            r.cli_ms = Some(cli_dt.as_secs_f64() * 1000.0);
            done.push(r);
        }
        Ok::<_, anyhow::Error>(done)
    }
    .await;
    for (_, name, _) in &svcs {
        remove_service(name);
    }
    match result {
        Ok(rs) => out.extend(rs.into_iter().map(Ok)),
        Err(e) => out.push(Err(e)),
    }
    out
}

/// The first poll after `t0` that saw the state leave `updating` (having seen `updating`).
fn swarm_left_updating(states: &[StateSeen], t0: Nanos) -> Option<(Nanos, String)> {
    let after: Vec<&StateSeen> = states.iter().filter(|s| s.at >= t0).collect();
    let upd = after.iter().position(|s| s.state == "updating")?;
    after[upd..]
        .iter()
        .find(|s| s.state != "updating")
        .map(|s| (s.at, s.state.clone()))
}

// ---------------------------------------------------------------------------------------------
// Report

fn fmt_s(ms: f64) -> String {
    if ms.abs() < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// `min / median / max` of the values, with `(n of N runs)` when some runs had none.
fn mmm(vals: &[Option<f64>]) -> String {
    let xs: Vec<f64> = vals.iter().flatten().copied().collect();
    if xs.is_empty() {
        return "–".into();
    }
    let s = format!("{} / {} / {}", fmt_s(min(&xs)), fmt_s(median(&xs)), fmt_s(max(&xs)));
    if xs.len() < vals.len() {
        format!("{s} ({} of {} runs)", xs.len(), vals.len())
    } else {
        s
    }
}

fn report(out: &mut String, results: &[RunResult], opts: &Opts) -> std::fmt::Result {
    let pick = |d: Driver, b: Bad| {
        let mut v: Vec<&RunResult> = results.iter().filter(|r| r.driver == d && r.bad == b).collect();
        v.sort_by_key(|r| r.run);
        v
    };
    let field = |rs: &[&RunResult], f: fn(&RunResult) -> Option<f64>| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let window = opts.swarm_window.as_secs();

    writeln!(
        out,
        "## Rollback: a bad image over a healthy v2 (1 replica, host-mode port)\n"
    )?;
    writeln!(
        out,
        "Runs per case: {}; cells are min / median / max. The clock starts at the change: the manifest renamed into \
         the directory `steward run` watches, or `docker service update` started. \"v2 serves again\": the first \
         `HTTP 200` with `version` v2 on the published port after it had stopped answering v2 (a probe started every \
         {} ms).\n",
        opts.runs,
        HTTP_POLL.as_millis()
    )?;
    writeln!(
        out,
        "| measurement | steward (`steward run`) | Swarm alone (`docker service update`) |"
    )?;
    writeln!(out, "|---|---:|---:|")?;

    let (sb, wb) = (pick(Driver::Steward, Bad::Broken), pick(Driver::Swarm, Bad::Broken));
    let (su, wu) = (
        pick(Driver::Steward, Bad::Unhealthy),
        pick(Driver::Swarm, Bad::Unhealthy),
    );
    let stalls = |rs: &[&RunResult]| format!("{} of {}", rs.iter().filter(|r| port_stall(&r.tasks)).count(), rs.len());
    writeln!(
        out,
        "| `:broken`: change → v2 serves again | {} | {} |",
        mmm(&field(&sb, |r| r.total_ms)),
        mmm(&field(&wb, |r| r.total_ms))
    )?;
    writeln!(
        out,
        "| `:broken`: outage (v2 stops answering → answers again) | {} | {} |",
        mmm(&field(&sb, |r| r.outage_ms)),
        mmm(&field(&wb, |r| r.outage_ms))
    )?;
    writeln!(
        out,
        "| `:broken`: runs where a replacement task stayed `pending` (\"host-mode port already in use\") | {} | {} |",
        stalls(&sb),
        stalls(&wb)
    )?;
    let split = |rs: &[&RunResult], stalled: bool| {
        let v: Vec<Option<f64>> = rs
            .iter()
            .filter(|r| port_stall(&r.tasks) == stalled)
            .map(|r| r.total_ms)
            .collect();
        if v.is_empty() {
            "–".to_string()
        } else {
            format!("{} (n={})", mmm(&v), v.len())
        }
    };
    writeln!(
        out,
        "| `:broken`: change → v2 serves again, runs without that task | {} | {} |",
        split(&sb, false),
        split(&wb, false)
    )?;
    writeln!(
        out,
        "| `:broken`: change → v2 serves again, runs with that task | {} | {} |",
        split(&sb, true),
        split(&wb, true)
    )?;
    writeln!(
        out,
        "| `:broken`: UpdateStatus seen leaving `updating` (20 ms poll) → steward's `RollingBack` event | {} | – |",
        mmm(&field(&sb, |r| r.swarm_to_rolling_back_ms))
    )?;
    let writes = |rs: &[&RunResult]| {
        rs.iter()
            .map(|r| r.rollback_writes.map_or("?".into(), |w| w.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "| `:broken`: rollback writes by steward (`RollbackIssued` events), per run | {} | – (Swarm rolls back itself) |", writes(&sb))?;
    let unhealthy_swarm = if wu.is_empty() {
        "–".to_string()
    } else if wu.iter().all(|r| r.total_ms.is_none()) {
        let states: Vec<String> = wu.iter().map(|r| format!("`{}`", r.final_state.0)).collect();
        let answers: Vec<String> = wu.iter().map(|r| format!("`{}`", r.final_answer)).collect();
        format!(
            "never: still serving unhealthy after {window} s ({} of {} runs); last answer {}; UpdateStatus {}",
            wu.iter().filter(|r| r.final_answer.contains("unhealthy")).count(),
            wu.len(),
            dedup(&answers),
            dedup(&states)
        )
    } else {
        mmm(&field(&wu, |r| r.total_ms))
    };
    writeln!(
        out,
        "| `:unhealthy`: change → v2 serves again | {} | {unhealthy_swarm} |",
        mmm(&field(&su, |r| r.total_ms))
    )?;
    writeln!(
        out,
        "| `:unhealthy`: outage (v2 stops answering → answers again) | {} | – |",
        mmm(&field(&su, |r| r.outage_ms))
    )?;
    writeln!(
        out,
        "| `:unhealthy`: `RollingBack` event (pass that sees the 3rd failing probe) → `RollbackIssued` event (the Swarm write) | {} | – |",
        mmm(&field(&su, |r| r.rolling_back_to_issued_ms))
    )?;
    writeln!(
        out,
        "| `:unhealthy`: rollback writes by steward, per run | {} | – |",
        writes(&su)
    )?;
    writeln!(out)?;

    // Median timelines.
    for (title, rs) in [
        ("steward, `:broken`", &sb),
        ("steward, `:unhealthy`", &su),
        ("Swarm alone, `:broken`", &wb),
        ("Swarm alone, `:unhealthy`", &wu),
    ] {
        if rs.is_empty() {
            continue;
        }
        writeln!(
            out,
            "Timeline, {title} (offset from the change; each line is a median over the runs where it happened, so \
             lines from different subsets of runs may appear out of order):\n"
        )?;
        let mut labels: Vec<(String, Vec<f64>)> = Vec::new();
        for r in rs.iter() {
            for (l, ms) in &r.timeline {
                match labels.iter_mut().find(|(x, _)| x == l) {
                    Some((_, v)) => v.push(*ms),
                    None => labels.push((l.clone(), vec![*ms])),
                }
            }
        }
        labels.sort_by(|a, b| median(&a.1).total_cmp(&median(&b.1)));
        for (l, v) in &labels {
            let of = if v.len() < rs.len() {
                format!(" ({} of {} runs)", v.len(), rs.len())
            } else {
                String::new()
            };
            writeln!(out, "- +{} {l}{of}", fmt_s(median(v)))?;
        }
        writeln!(out)?;
    }

    writeln!(out, "Per run:\n")?;
    for r in [sb, wb, su, wu].iter().flat_map(|v| v.iter()) {
        let who = match r.driver {
            Driver::Steward => "steward",
            Driver::Swarm => "Swarm alone",
        };
        let mut line = format!(
            "- {who}, `:{}`, run {}: v2 again after {}",
            r.bad.tag(),
            r.run,
            r.total_ms
                .map_or(format!("– (not within {})", fmt_s(r.observed_ms)), fmt_s)
        );
        if let Some(x) = r.swarm_to_rolling_back_ms {
            let _ = write!(line, "; Swarm signal → `RollingBack` {}", fmt_s(x));
        }
        if let Some(x) = r.rolling_back_to_issued_ms {
            let _ = write!(line, "; `RollingBack` → `RollbackIssued` {}", fmt_s(x));
        }
        if let Some(x) = r.cli_ms {
            let _ = write!(line, "; `docker service update -d` took {}", fmt_s(x));
        }
        let _ =
            write!(
            line,
            ". Port: {}. UpdateStatus: {} (last: `{}`, \"{}\"). Tasks, oldest first: {}. Polls: {} HTTP, {} Engine.",
            r.answers.join(" → "),
            if r.states.is_empty() { "no change".into() } else { r.states.join(" → ") },
            r.final_state.0,
            r.final_state.1,
            r.tasks.join("; "),
            r.http_polls,
            r.swarm_polls
        );
        writeln!(out, "{line}")?;
    }
    writeln!(out)
}

fn dedup(xs: &[String]) -> String {
    let mut v: Vec<&String> = Vec::new();
    for x in xs {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01.5Z"), Some(86_401_500_000_000));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800 * 1_000_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-24T10:00:00.123456789+01:00"),
            Some(1_795_510_800 * 1_000_000_000 + 123_456_789)
        );
        assert_eq!(parse_rfc3339("2026-11-24 10:00:00"), None);
    }

    #[test]
    fn median_of_mixed_runs() {
        assert_eq!(
            mmm(&[Some(1500.0), None, Some(500.0)]),
            "500 ms / 1.00 s / 1.50 s (2 of 3 runs)"
        );
        assert_eq!(mmm(&[None]), "–");
    }

    fn p(start: i128, end: i128, label: &str) -> Probe {
        Probe {
            start,
            end,
            label: label.into(),
            good: label == "HTTP 200 v2",
        }
    }

    #[test]
    fn back_is_the_earliest_answer_after_the_gap() {
        let probes = vec![
            p(0, 2, "HTTP 200 v2"),
            p(10, 12, "HTTP 200 v2"),
            p(20, 21, "no answer: connection refused"),
            // Started first, answered last (a retried SYN): the later probe counts.
            p(30, 1030, "HTTP 200 v2"),
            p(40, 43, "HTTP 200 v2"),
        ];
        assert_eq!(gone_and_back(&probes, 5), Some((20, 43)));
        assert_eq!(gone_and_back(&probes[..3], 5), None);
        let changes: Vec<String> = answer_changes(&probes, 5).into_iter().map(|(_, l)| l).collect();
        assert_eq!(changes, ["HTTP 200 v2", "no answer: connection refused", "HTTP 200 v2"]);
    }
}
