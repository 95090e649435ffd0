//! `steward run`: reconcile at start, on Swarm service events, on manifest changes and every
//! resync interval, until asked to stop.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::pass::Controller;

pub struct RunOptions {
    pub paths: Vec<PathBuf>,
    pub resync: Duration,
}

#[derive(Debug)]
#[allow(dead_code)] // the payload is read through Debug in trace logs
enum Trigger {
    Swarm(String),
    Files,
}

/// Gathers a burst of triggers into one pass (a `docker stack`-sized change emits many events).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Event stream re-subscription delay after a drop, doubling to the cap.
const RESUBSCRIBE: Duration = Duration::from_millis(500);
const RESUBSCRIBE_CAP: Duration = Duration::from_secs(30);

pub async fn run(mut ctl: Controller, opts: RunOptions, shutdown: impl Future<Output = ()>) {
    let (tx, mut rx) = mpsc::channel::<Trigger>(1024);

    // Swarm events: any service change wakes the loop. Re-subscribes after a drop with `since`
    // so nothing in between is lost.
    let swarm = ctl.swarm.clone();
    let etx = tx.clone();
    let events_task = tokio::spawn(async move {
        let mut since: Option<i64> = None;
        let mut delay = RESUBSCRIBE;
        loop {
            let mut stream = Box::pin(swarm.events(since));
            let mut got_any = false;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        got_any = true;
                        delay = RESUBSCRIBE;
                        since = Some(time::OffsetDateTime::now_utc().unix_timestamp() - 1);
                        tracing::debug!(action = %ev.action, name = %ev.name, "swarm event");
                        if etx.send(Trigger::Swarm(ev.name)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %steward_backends::swarm::error_chain(&e), "event stream dropped");
                        break;
                    }
                }
            }
            if since.is_none() {
                since = Some(time::OffsetDateTime::now_utc().unix_timestamp() - 1);
            }
            if !got_any {
                delay = (delay * 2).min(RESUBSCRIBE_CAP);
            }
            tokio::time::sleep(delay).await;
            // A new subscription may have missed changes: wake the loop to re-read.
            if etx.send(Trigger::Swarm(String::new())).await.is_err() {
                return;
            }
        }
    });

    // Manifest changes.
    let ftx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !ev.kind.is_access() {
                let _ = ftx.try_send(Trigger::Files);
            }
        }
    })
    .ok();
    if let Some(w) = watcher.as_mut() {
        for p in &opts.paths {
            if let Err(e) = w.watch(p, RecursiveMode::Recursive) {
                tracing::warn!(path = %p.display(), error = %e, "cannot watch manifests; relying on resync");
            }
        }
    }

    tokio::pin!(shutdown);
    let mut next = Duration::ZERO;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(next) => {}
            t = rx.recv() => {
                tracing::debug!(trigger = ?t, "woken");
                // Drain the burst.
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
            }
        }
        let started = std::time::Instant::now();
        let outcome = ctl.pass().await;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            executed = outcome.executed,
            converged = outcome.converged,
            "pass done"
        );
        next = outcome.requeue_after.unwrap_or(opts.resync).min(opts.resync);
    }
    events_task.abort();
    drop(watcher);
    tracing::info!("stopped");
}
