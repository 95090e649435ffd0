//! One measured run: a bad image deployed over a healthy v2, by `steward run` or by Swarm alone.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::clock::{ms_between, now, parse_rfc3339, Nanos};
use super::observe::{answer_changes, gone_and_back, probe, probes_after, task_history, Observers, Probe, StateSeen};
use super::{Bad, Ctx, Driver, BACK_TIMEOUT, GOOD, GOOD_VERSION};
use crate::cli::{self, docker, docker_timed, RunningSteward};

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
    let evs = cli::steward_events_json(bin, state)?.into_iter().map(|v| {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_string();
        Event {
            reason: s("reason"),
            object: s("object"),
            message: s("message"),
            count: v.get("count").and_then(|c| c.as_u64()).unwrap_or(1),
            first_seen: v.get("firstSeen").and_then(|x| x.as_str()).and_then(parse_rfc3339),
        }
    });
    Ok(evs.collect())
}

pub(super) struct RunResult {
    pub(super) driver: Driver,
    pub(super) bad: Bad,
    pub(super) run: usize,
    /// Change (manifest renamed into place / `docker service update` started) → v2 answers again.
    pub(super) total_ms: Option<f64>,
    /// v2 stopped answering → v2 answers again.
    pub(super) outage_ms: Option<f64>,
    /// steward, `:broken`: Swarm's UpdateStatus seen leaving `updating` → `RollingBack` event.
    pub(super) swarm_to_rolling_back_ms: Option<f64>,
    /// steward, `:unhealthy`: `RollingBack` → `RollbackIssued` event.
    pub(super) rolling_back_to_issued_ms: Option<f64>,
    /// steward: `RollbackIssued` events (writes made to roll back).
    pub(super) rollback_writes: Option<u64>,
    /// Offsets from the change, in ms: (what, ms).
    pub(super) timeline: Vec<(String, f64)>,
    /// Distinct successive answers of the port after the change.
    pub(super) answers: Vec<String>,
    /// UpdateStatus states after the change, in order.
    pub(super) states: Vec<String>,
    /// Last UpdateStatus (state, message) seen.
    pub(super) final_state: (String, String),
    /// Last answer of the port.
    pub(super) final_answer: String,
    /// The service's tasks at the end of the run, oldest first.
    pub(super) tasks: Vec<String>,
    /// `docker service update -d` itself (Swarm alone).
    pub(super) cli_ms: Option<f64>,
    /// How long the run observed after the change (bounded).
    pub(super) observed_ms: f64,
    pub(super) http_polls: usize,
    pub(super) swarm_polls: usize,
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
pub(super) async fn run_steward(ctx: &Ctx, bad: Bad, run: usize) -> anyhow::Result<RunResult> {
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
pub(super) async fn run_swarm(ctx: &Ctx, bad: Bad, runs: &[usize], window: Duration) -> Vec<anyhow::Result<RunResult>> {
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
