//! Section 2: memory of the real `steward run` (release build) with a 100,000-event state file
//! against the same run with an empty one, each on a small stack of its own.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::child::{mem, Mem, Steward};
use super::latency::{self, Round};
use super::{wait_running, Ctx, IMAGE};

pub struct MemRun {
    pub label: String,
    pub event_rows: usize,
    pub status_rows_before: usize,
    pub status_rows_after: usize,
    pub file_bytes: u64,
    pub to_converged: Duration,
    pub at_converged: Mem,
    pub idle: Duration,
    pub idle_final: Mem,
    pub idle_max_rss: u64,
    pub idle_passes: usize,
    /// Requests to the real process after the idle window, and its memory after them.
    pub api: Vec<(String, Round)>,
    pub after_api: Option<Mem>,
}

fn write_stack(dir: &Path, stack: &str, services: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut y = format!("apiVersion: steward.io/v1alpha1\nkind: Stack\nmetadata: {{name: {stack}}}\n");
    for s in services {
        write!(
            y,
            "---\napiVersion: steward.io/v1alpha1\nkind: Service\nmetadata: {{name: {s}}}\nspec:\n  image: {IMAGE}\n  replicas: 1\n"
        )?;
    }
    std::fs::write(dir.join("stack.yaml"), y)?;
    Ok(())
}

fn rows(state: &Path) -> anyhow::Result<(usize, usize)> {
    let store = steward_store::Store::open(state)?;
    let events = store
        .events(&steward_store::EventFilter::default())
        .context("counting events")?
        .len();
    Ok((events, store.statuses()?.len()))
}

fn file_bytes(state: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", state.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// Runs `steward run` on `state` and a 3-service stack named `stack` until converged, then
/// leaves it idle for `idle`, sampling its memory every second; then times a few API calls on
/// it (a cross-check of section 1 on the real process) and stops it.
pub async fn run(ctx: &mut Ctx, label: &str, state: &Path, stack: &str, idle: Duration) -> anyhow::Result<MemRun> {
    let (event_rows, status_rows_before) = rows(state)?;
    let services: Vec<String> = (1..=3).map(|i| format!("{stack}-{i:02}")).collect();
    ctx.created.extend(services.iter().cloned());
    let dir = ctx.work.join(format!("{stack}-manifests"));
    write_stack(&dir, stack, &services)?;
    let log = ctx.work.join(format!("{stack}-run.log"));
    let file_bytes = file_bytes(state);

    let t = Instant::now();
    let dir_s = dir.to_str().context("non-UTF-8 temp path")?;
    let mut st = Steward::start(&ctx.bin, state, &[dir_s], &[], &log)?;
    let pid = st.pid();
    wait_running(&ctx.engine, &services, 1, Duration::from_secs(90)).await?;
    st.wait_converged_pass(0, Duration::from_secs(60)).await?;
    let to_converged = t.elapsed();
    let at_converged = mem(pid)?;
    say!(
        "{label}: converged after {:.1} s, RSS {}",
        to_converged.as_secs_f64(),
        super::child::mib(at_converged.rss)
    );

    let (passes0, _) = st.passes();
    let t = Instant::now();
    let mut idle_max_rss = at_converged.rss;
    while t.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(1).min(idle.saturating_sub(t.elapsed()))).await;
        idle_max_rss = idle_max_rss.max(mem(pid)?.rss);
    }
    let idle_final = mem(pid)?;
    let idle_passes = st.passes().0 - passes0;
    say!(
        "{label}: after {:.0} s idle, RSS {}",
        idle.as_secs_f64(),
        super::child::mib(idle_final.rss)
    );

    // The same reads as section 1, now on the real process (its first pass has removed the
    // statuses of resources that are not in its desired state; the events stay).
    let mut api = Vec::new();
    let addr = st.api_addr(Duration::from_secs(5)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let paths = vec!["/api/v1/events?limit=100".to_string()];
    api.push((
        paths[0].clone(),
        latency::sequential(&addr, &paths, 50, 500, deadline).await?,
    ));
    let paths = vec!["/api/v1/events".to_string()];
    api.push((
        "/api/v1/events (default limit 1000)".to_string(),
        latency::sequential(&addr, &paths, 20, 200, deadline).await?,
    ));
    let after_api = Some(mem(pid)?);
    st.stop(Duration::from_secs(10))?;
    let (_, status_rows_after) = rows(state)?;
    Ok(MemRun {
        label: label.to_string(),
        event_rows,
        status_rows_before,
        status_rows_after,
        file_bytes,
        to_converged,
        at_converged,
        idle,
        idle_final,
        idle_max_rss,
        idle_passes,
        api,
        after_api,
    })
}
