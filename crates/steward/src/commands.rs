//! One function per command. Exit codes are part of the CLI contract (see the README).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use steward_backends::swarm::Swarm;
use steward_controller::{prepare, Controller, PrepareError, RunOptions};
use steward_plan::status::{ConditionType, ResourceStatus};
use steward_store::Store;
use time::OffsetDateTime;

use crate::output::{emit, table, Format};
use crate::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Validate { ref paths, resolve } => Ok(validate(paths, resolve)),
        Command::Import {
            ref file,
            ref stack,
            ref output,
            force,
        } => Ok(crate::import::run(file, stack.clone(), output.clone(), force)),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&steward_manifest::json_schema())?);
            Ok(0)
        }
        Command::Plan { ref paths, output } => runtime()?.block_on(plan(&cli, paths, output)),
        Command::Apply { ref paths, timeout } => runtime()?.block_on(apply(&cli, paths, timeout)),
        Command::Run {
            ref paths,
            resync,
            ref git,
            ref branch,
            ref git_path,
            interval,
            ref notify,
            ref notify_slack,
            notify_all,
            listen,
        } => {
            use steward_backends::notify::{Format as NotifyFormat, Target};
            let targets: Vec<Target> = notify
                .iter()
                .map(|u| Target {
                    url: u.clone(),
                    format: NotifyFormat::Generic,
                })
                .chain(notify_slack.iter().map(|u| Target {
                    url: u.clone(),
                    format: NotifyFormat::Slack,
                }))
                .collect();
            let git = git.as_ref().map(|url| GitArgs {
                url: url.clone(),
                branch: branch.clone(),
                path: git_path.clone(),
                interval,
            });
            runtime()?.block_on(run(&cli, paths, resync, git, targets, notify_all, listen))
        }
        Command::Status { output, ref server } => status(&cli, output, server.as_deref()),
        Command::Events {
            since,
            follow,
            output,
            ref server,
        } => crate::events::events(&cli, since, follow, output, server.as_deref()),
        Command::History { ref service, output } => history(&cli, service, output),
        Command::Rollback {
            ref service,
            to,
            ref paths,
            timeout,
        } => runtime()?.block_on(rollback(&cli, service, to, paths, timeout)),
        Command::Runs {
            ref schedule,
            limit,
            output,
        } => crate::schedules::runs(&cli, schedule.as_deref(), limit, output),
        Command::Trigger {
            ref schedule,
            ref paths,
            wait,
        } => runtime()?.block_on(crate::schedules::trigger(&cli, schedule, paths, wait)),
        Command::Backups {
            ref database,
            ref paths,
            output,
        } => crate::databases::backups(&cli, database.as_deref(), paths, output),
        Command::Backup {
            ref database,
            ref paths,
        } => crate::databases::run_now(&cli, database, steward_database::Task::Backup, paths),
        Command::RestoreTest {
            ref database,
            ref paths,
        } => crate::databases::run_now(&cli, database, steward_database::Task::RestoreTest, paths),
        Command::Describe {
            ref object,
            ref paths,
            output,
        } => crate::describe::describe(&cli, object, paths, output),
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn validate(paths: &[PathBuf], resolve: bool) -> u8 {
    // What the summary counts: each kind present, in the registry's order.
    let counts = |d: &steward_manifest::DesiredState| {
        [
            (d.services.len(), "services"),
            (d.schedules.len(), "schedules"),
            (d.networks.len(), "networks"),
            (d.volumes.len(), "volumes"),
            (d.databases.len(), "databases"),
        ]
        .iter()
        .enumerate()
        .filter(|(i, (n, _))| *i == 0 || *n > 0)
        .map(|(_, (n, what))| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    };
    let checked = steward_manifest::load_paths(paths)
        .map(|d| (d.stack.clone(), counts(&d)))
        .map_err(PrepareError::Invalid)
        .and_then(|c| if resolve { prepare(paths).map(|_| c) } else { Ok(c) });
    print_warnings(paths);
    match checked {
        Ok((stack, summary)) => {
            println!("valid: stack {stack}, {summary}");
            0
        }
        Err(PrepareError::Invalid(errs)) => {
            for e in &errs.0 {
                println!("{e}");
            }
            eprintln!("{} error{}", errs.0.len(), if errs.0.len() == 1 { "" } else { "s" });
            1
        }
    }
}

/// What is allowed but worth a reviewer's eye (`expose: env`), on stderr.
fn print_warnings(paths: &[PathBuf]) {
    if let Ok(state) = steward_manifest::load_paths(paths) {
        for w in state.warnings() {
            eprintln!("warning: {w}");
        }
    }
}

pub(crate) fn swarm(cli: &Cli) -> anyhow::Result<Swarm> {
    Swarm::connect(&cli.docker_host).context("cannot set up the Docker client")
}

async fn plan(cli: &Cli, paths: &[PathBuf], output: Format) -> anyhow::Result<u8> {
    let (desired, schedules, networks) = match steward_controller::prepare_all(paths) {
        Ok(p) => (p.desired, p.schedules, p.networks),
        Err(PrepareError::Invalid(errs)) => {
            for e in &errs.0 {
                println!("{e}");
            }
            return Ok(1);
        }
    };
    print_warnings(paths);
    let swarm = swarm(cli)?;
    let names: Vec<&str> = desired.services.iter().map(|s| s.name.as_str()).collect();
    let observed = swarm.observe(&desired.stack, &names).await;
    let unknown = matches!(observed, steward_plan::Observed::Unknown { .. });
    // A rejected or in-flight rollout changes what "in sync" means; read it if there is state.
    let rollout = if cli.state.exists() {
        let store = open_store(cli)?;
        let r = store
            .get_meta(steward_controller::META_ROLLOUT)?
            .and_then(|t| serde_json::from_str::<steward_plan::rollout::Rollout>(&t).ok());
        r.filter(|r| r.desired_hash == steward_controller::desired_hash(&desired))
    } else {
        None
    };
    // Secrets a revision in history still refers to are kept, as the controller keeps them.
    let mut desired = desired;
    if cli.state.exists() || cli.store.is_some() {
        desired.retained_objects = steward_controller::retained_objects(&*open_store(cli)?, &desired, &observed);
    }
    // The pass's own pipeline (effective desired state, plan, rollout annotation).
    let p = steward_plan::pipeline(&desired, rollout.as_ref(), &observed).plan;
    // Networks are created before services are written, as the controller does.
    let net = steward_controller::plan_networks(&swarm, &desired.stack, desired.prune, &networks).await;
    let net_text = if net.entries.is_empty() {
        String::new()
    } else {
        format!("\n{}", net.display())
    };
    let active = if cli.state.exists() || cli.store.is_some() {
        open_store(cli)?.active_runs()?
    } else {
        Vec::new()
    };
    emit(
        output,
        || p.display() + &net_text + &schedule_lines(&schedules, &active),
        || {
            let mut j = p.to_json();
            j["networks"] = net.to_json();
            j
        },
    );
    Ok(
        if unknown || p.errors().next().is_some() || net.errors().next().is_some() {
            1
        } else if !p.is_empty() || !net.actions().is_empty() {
            2
        } else {
            0
        },
    )
}

/// What the schedules will do next: their next instant, and runs in progress. A schedule's
/// runs are decided when they are due, so there is nothing to apply ahead of time.
fn schedule_lines(schedules: &[steward_schedule::ScheduleState], active: &[steward_schedule::Run]) -> String {
    if schedules.is_empty() {
        return String::new();
    }
    let now = OffsetDateTime::now_utc();
    let mut out = String::from("\nschedules:\n");
    for s in schedules {
        let next = if s.suspend {
            "suspended".to_string()
        } else {
            s.cron
                .next_after(now)
                .map_or("never".into(), |t| format!("next run {}", steward_core::rfc3339(t)))
        };
        let running = active.iter().filter(|r| r.schedule == s.name).count();
        out.push_str(&format!(
            "  Schedule/{}  {} ({}): {next}{}\n",
            s.name,
            s.cron.expr(),
            s.cron.time_zone(),
            if running > 0 {
                format!("; {running} run(s) in progress")
            } else {
                String::new()
            }
        ));
    }
    out
}

pub(crate) fn open_store(cli: &Cli) -> anyhow::Result<Arc<Store>> {
    let store = match &cli.store {
        Some(url) => Store::open_url(url).context("cannot open the store")?,
        None => Store::open(&cli.state).with_context(|| format!("cannot open state {}", cli.state.display()))?,
    };
    Ok(Arc::new(store))
}

async fn apply(cli: &Cli, paths: &[PathBuf], timeout: Duration) -> anyhow::Result<u8> {
    if let Err(PrepareError::Invalid(errs)) = prepare(paths) {
        for e in &errs.0 {
            println!("{e}");
        }
        eprintln!("desired state refused: nothing applied");
        return Ok(1);
    }
    let ctl = Controller::new(swarm(cli)?, open_store(cli)?, paths.to_vec());
    converge(ctl, timeout, true).await
}

/// Passes until converged, blocked, or out of time.
async fn converge(mut ctl: Controller, timeout: Duration, print_plan: bool) -> anyhow::Result<u8> {
    let deadline = Instant::now() + timeout;
    let mut first = print_plan;
    loop {
        let outcome = ctl.pass().await;
        if first {
            if let Some(p) = &outcome.plan {
                print!("{}", p.display());
            }
            first = false;
        }
        if outcome.converged {
            println!("converged");
            return Ok(0);
        }
        if !outcome.blocking.is_empty() {
            for b in &outcome.blocking {
                eprintln!("not converged: {b}");
            }
            return Ok(1);
        }
        if Instant::now() >= deadline {
            let rollout = outcome
                .rollout
                .as_ref()
                .filter(|r| !r.phase.is_terminal())
                .map(|r| format!("rollout of generation {} still {}; ", r.generation, r.phase.as_str()))
                .unwrap_or_default();
            let waiting: Vec<String> = outcome
                .plan
                .iter()
                .flat_map(|p| p.held.iter())
                .map(|h| format!("Service/{} {}: {}", h.name, h.hold.reason(), h.hold.message(&h.name)))
                .chain(outcome.failed.iter().cloned())
                .collect();
            eprintln!(
                "timed out after {} waiting for convergence: {rollout}{}{}",
                humantime::format_duration(timeout),
                if waiting.is_empty() { "" } else { ": " },
                waiting.join("; ")
            );
            return Ok(1);
        }
        let wait = outcome
            .requeue_after
            .unwrap_or(Duration::from_millis(500))
            .max(Duration::from_millis(100));
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

async fn rollback(
    cli: &Cli,
    service: &str,
    to: Option<u64>,
    paths: &[PathBuf],
    timeout: Duration,
) -> anyhow::Result<u8> {
    let store = open_store(cli)?;
    let paths = manifest_paths(&store, paths)?;
    let mut ctl = Controller::new(swarm(cli)?, store, paths);
    let target = match ctl.start_manual_rollback(service, to) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rollback refused: {e}");
            return Ok(1);
        }
    };
    println!(
        "rolling {service} back to revision {} ({})",
        target.number, target.image
    );
    // Converged here means the rollback finished: the rollout is RolledBack, which `converge`
    // reports as blocking; that is the expected end state of a manual rollback.
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = ctl.pass().await;
        match outcome.rollout.as_ref().map(|r| r.phase) {
            Some(steward_plan::rollout::Phase::RolledBack) => {
                println!(
                    "rolled back: {service} runs revision {} ({}); pinned until the desired state changes",
                    target.number, target.image
                );
                return Ok(0);
            }
            _ if Instant::now() >= deadline => {
                eprintln!(
                    "timed out after {} waiting for the rollback",
                    humantime::format_duration(timeout)
                );
                return Ok(1);
            }
            _ => {
                tokio::time::sleep(
                    outcome
                        .requeue_after
                        .unwrap_or(Duration::from_millis(500))
                        .clamp(Duration::from_millis(100), Duration::from_secs(1)),
                )
                .await
            }
        }
    }
}

/// `paths`, or the manifest paths the controller last loaded (recorded in the store).
pub(crate) fn manifest_paths(store: &Store, paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if !paths.is_empty() {
        return Ok(paths.to_vec());
    }
    let recorded = store
        .get_meta(steward_controller::META_PATHS)?
        .context("no manifest paths recorded in the store (has a controller run?): pass --path")?;
    Ok(serde_json::from_str::<Vec<String>>(&recorded)?
        .into_iter()
        .map(PathBuf::from)
        .collect())
}

fn history(cli: &Cli, service: &str, output: Format) -> anyhow::Result<u8> {
    let store = open_store(cli)?;
    let revs = store.revisions(service)?;
    emit(
        output,
        || {
            if revs.is_empty() {
                return format!("no revisions recorded for {service}\n");
            }
            let rows: Vec<Vec<String>> = revs
                .iter()
                .map(|r| {
                    let created = OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.created_ms) * 1_000_000)
                        .map(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .unwrap_or_default()
                        })
                        .unwrap_or_default();
                    vec![
                        r.number.to_string(),
                        format!("{:?}", r.outcome),
                        r.image.clone(),
                        r.state.replicas.to_string(),
                        r.spec_hash.clone(),
                        format!("generation {}", r.generation),
                        created,
                    ]
                })
                .collect();
            table(
                &[
                    "REVISION",
                    "OUTCOME",
                    "IMAGE",
                    "REPLICAS",
                    "SPEC HASH",
                    "SOURCE",
                    "CREATED",
                ],
                &rows,
            )
        },
        || {
            serde_json::json!({ "service": service, "revisions": revs.iter().map(|r| serde_json::json!({
                "revision": r.number, "outcome": format!("{:?}", r.outcome), "image": r.image,
                "replicas": r.state.replicas, "specHash": r.spec_hash, "generation": r.generation, "createdMs": r.created_ms,
            })).collect::<Vec<_>>() })
        },
    );
    Ok(0)
}

pub struct GitArgs {
    url: String,
    branch: String,
    path: String,
    interval: Duration,
}

async fn run(
    cli: &Cli,
    paths: &[PathBuf],
    resync: Duration,
    git: Option<GitArgs>,
    notify: Vec<steward_backends::notify::Target>,
    notify_all: bool,
    listen: crate::Listen,
) -> anyhow::Result<u8> {
    let store = open_store(cli)?;
    let holder = format!(
        "{}:{}",
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into()),
        std::process::id()
    );
    // An embedded store has one writer by construction; a shared one elects a leader.
    let leadership = if store.is_postgres() {
        Some(Arc::new(
            steward_store::leader::Leadership::start(&store, &holder).context("cannot start leader election")?,
        ))
    } else {
        None
    };
    let mut ctl = Controller::new(swarm(cli)?, store.clone(), paths.to_vec());
    if let Some(l) = &leadership {
        ctl.set_fence(l.clone());
    }
    if !notify.is_empty() {
        ctl.set_notifier(steward_backends::notify::Notifier::start(notify), notify_all);
    }
    let state = cli.state.display();
    let source = match &git {
        Some(g) => format!(
            "{} (branch {}, path {}, every {})",
            g.url,
            g.branch,
            g.path,
            humantime::format_duration(g.interval)
        ),
        None => paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    };
    eprintln!(
        "steward: reconciling {source} against {} (resync {}); status: `steward status --state {state}`, events: `steward events --follow --state {state}`",
        cli.docker_host,
        humantime::format_duration(resync),
    );
    let git_interval = git.as_ref().map_or(Duration::from_secs(60), |g| g.interval);
    let git = git.map(|g| {
        // One clone per remote and branch, beside the state file.
        use sha2::Digest;
        let key = hex::encode(&sha2::Sha256::digest(format!("{}\n{}", g.url, g.branch))[..8]);
        let dir = cli
            .state
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("git")
            .join(key);
        steward_backends::git::GitSource::new(&g.url, &g.branch, &g.path, &dir)
    });
    // One signal stops both the loop and the API.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&stop| stop).await;
    };
    let (wake, after_pass, after_schedule, after_database, api) = match listen {
        crate::Listen::On(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr}: {e} (use --listen ADDR:PORT, or --listen off)")
            })?;
            let listener_addr = listener.local_addr()?;
            let a = steward_api::attach(
                listener,
                store,
                std::env::var("STEWARD_API_TOKEN").ok(),
                std::env::var("STEWARD_WEBHOOK_SECRET").ok(),
                stopped(stop_rx.clone()),
            );
            eprintln!(
                "steward: dashboard and API on http://{}/ (metrics at /metrics)",
                listener_addr
            );
            (
                Some(a.wake),
                Some(a.after_pass),
                Some(a.after_schedule),
                Some(a.after_database),
                Some(a.server),
            )
        }
        crate::Listen::Off => (None, None, None, None, None),
    };
    steward_controller::run(
        ctl,
        RunOptions {
            paths: paths.to_vec(),
            resync,
            git,
            git_interval,
            wake,
            after_pass,
            after_schedule,
            after_database,
            leadership,
        },
        stopped(stop_rx),
    )
    .await;
    if let Some(api) = api {
        match api.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "API server failed"),
            Err(e) => tracing::warn!(error = %e, "API server task failed"),
        }
    }
    Ok(0)
}

pub(crate) fn ago(t: OffsetDateTime) -> String {
    let d = OffsetDateTime::now_utc() - t;
    let s = d.whole_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// GET `{server}{path}` as JSON from a running controller.
pub(crate) fn api_get(server: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", server.trim_end_matches('/'));
    runtime()?.block_on(async {
        let r = reqwest::get(&url)
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = r.status();
        anyhow::ensure!(status.is_success(), "{url} answered {status}");
        r.json().await.with_context(|| format!("{url} sent malformed JSON"))
    })
}

fn status(cli: &Cli, output: Format, server: Option<&str>) -> anyhow::Result<u8> {
    let (all, applied, attempted): (Vec<ResourceStatus>, Option<String>, Option<String>) = match server {
        Some(server) => {
            let v = api_get(server, "/api/v1/status")?;
            let items = serde_json::from_value(v["items"].clone()).context("status items")?;
            let s = |k: &str| v["source"][k].as_str().map(String::from);
            (items, s("applied"), s("attempted"))
        }
        None => {
            let store = open_store(cli)?;
            let meta = |k: &str| store.get_meta(k).ok().flatten();
            (
                store.statuses()?,
                meta(steward_controller::META_SOURCE_APPLIED_DESCRIBE),
                meta(steward_controller::META_SOURCE_ATTEMPTED_DESCRIBE),
            )
        }
    };
    let source = serde_json::json!({ "applied": applied, "attempted": attempted });
    let source_line = match (applied, attempted) {
        (Some(a), Some(t)) if a != t => format!("source: applied {a}; latest attempt {t} was refused\n"),
        (Some(a), _) => format!("source: applied {a}\n"),
        (None, Some(t)) => format!("source: latest attempt {t} was refused; nothing applied\n"),
        _ => String::new(),
    };
    emit(
        output,
        || {
            let cond = |s: &ResourceStatus, t| {
                s.condition(t)
                    .map_or("-".to_string(), |c| c.status.as_str().to_string())
            };
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    let why = [
                        ConditionType::Degraded,
                        ConditionType::Progressing,
                        ConditionType::Ready,
                    ]
                    .into_iter()
                    .filter_map(|t| s.condition(t))
                    .find(|c| {
                        (c.type_ == ConditionType::Ready) || c.status != steward_plan::status::ConditionStatus::False
                    })
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_default();
                    vec![
                        format!("{}/{}", s.kind, s.name),
                        cond(s, ConditionType::Ready),
                        cond(s, ConditionType::Progressing),
                        cond(s, ConditionType::Degraded),
                        match (s.running_replicas, s.desired_replicas) {
                            (Some(r), Some(d)) => format!("{r}/{d}"),
                            (None, Some(d)) => format!("?/{d}"),
                            _ => "-".into(),
                        },
                        s.image.clone().unwrap_or_else(|| "-".into()),
                        s.observed_generation.to_string(),
                        ago(s.last_reconcile),
                        why,
                    ]
                })
                .collect();
            if rows.is_empty() {
                return format!("no status recorded yet in {}\n", cli.state.display());
            }
            source_line.clone()
                + &table(
                    &[
                        "RESOURCE",
                        "READY",
                        "PROGRESSING",
                        "DEGRADED",
                        "REPLICAS",
                        "IMAGE",
                        "GEN",
                        "RECONCILED",
                        "REASON",
                    ],
                    &rows,
                )
                + &schedules_table(&all)
        },
        || serde_json::json!({ "items": all, "source": source }),
    );
    Ok(0)
}

/// Schedules with their next run and last outcome, below the resources (empty without any).
fn schedules_table(all: &[ResourceStatus]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .filter(|s| s.kind == "Schedule")
        .map(|s| {
            let d = s.details.clone().unwrap_or_default();
            let text = |k: &str| d[k].as_str().map_or("-".to_string(), String::from);
            vec![
                s.name.clone(),
                format!("{} ({})", text("schedule"), text("timeZone")),
                if d["suspended"] == true {
                    "suspended".into()
                } else {
                    text("nextScheduleTime")
                },
                text("lastOutcome"),
                text("lastSuccessfulTime"),
                d["active"].as_array().map_or(0, Vec::len).to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    "\n".to_string()
        + &table(
            &["SCHEDULE", "WHEN", "NEXT RUN", "LAST OUTCOME", "LAST SUCCESS", "ACTIVE"],
            &rows,
        )
}
