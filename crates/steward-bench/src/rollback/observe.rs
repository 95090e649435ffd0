//! The bench's own observers: the published port polled over HTTP and the service's
//! `UpdateStatus` polled through the Engine API, and what is read from what they saw.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::clock::{now, Nanos};
use super::{GOOD_VERSION, HTTP_POLL, SWARM_POLL};
use crate::engine::Engine;

/// One `GET /api/v1/health/` on the published port.
#[derive(Clone, Debug)]
pub(super) struct Probe {
    start: Nanos,
    end: Nanos,
    /// e.g. `HTTP 200 v2`, `HTTP 500 unhealthy`, `no answer: connection refused`.
    pub(super) label: String,
    good: bool,
}

/// One `GET /api/v1/health/` on 127.0.0.1:port (HTTP/1.0, 2 s bound).
pub(super) async fn probe(port: u16) -> (String, bool) {
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
pub(super) fn probes_after(probes: &[Probe], t0: Nanos) -> Vec<Probe> {
    let mut v: Vec<Probe> = probes.iter().filter(|p| p.start >= t0).cloned().collect();
    v.sort_by_key(|p| p.start);
    v
}

/// (start of the first probe after `t0` that did not get v2, earliest end of a v2 answer to a
/// probe started after that one): v2 stopped answering, v2 answers again.
pub(super) fn gone_and_back(probes: &[Probe], t0: Nanos) -> Option<(Nanos, Nanos)> {
    let v = probes_after(probes, t0);
    let gone = v.iter().position(|p| !p.good)?;
    let back = v[gone + 1..].iter().filter(|p| p.good).map(|p| p.end).min()?;
    Some((v[gone].start, back))
}

/// Distinct successive answers after `t0`, with the start of the first probe of each.
pub(super) fn answer_changes(probes: &[Probe], t0: Nanos) -> Vec<(Nanos, String)> {
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
pub(super) struct StateSeen {
    pub(super) at: Nanos,
    pub(super) state: String,
    pub(super) message: String,
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

pub(super) struct Observers {
    stop: Arc<AtomicBool>,
    http: Arc<Mutex<Vec<Probe>>>,
    swarm: Arc<Mutex<Vec<StateSeen>>>,
    handles: Vec<tokio::task::JoinHandle<usize>>,
}

impl Observers {
    pub(super) fn start(engine: &Engine, name: &str, port: u16) -> Self {
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
    pub(super) fn back(&self, t0: Nanos) -> Option<(Nanos, Nanos)> {
        gone_and_back(&self.http.lock().expect("poisoned"), t0)
    }

    pub(super) async fn finish(self) -> (Vec<Probe>, Vec<StateSeen>, usize, usize) {
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
pub(super) async fn task_history(engine: &Engine, name: &str) -> Vec<String> {
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
pub(super) fn port_stall(tasks: &[String]) -> bool {
    tasks
        .iter()
        .any(|t| t.contains(" pending") && t.contains("host-mode port already in use"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
