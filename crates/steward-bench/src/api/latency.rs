//! Section 1: latency of the read endpoints over a large store, served in-process by
//! `steward_api::serve` on a runtime of its own (two workers, as `steward run` has), and timed
//! by a client on the bench's runtime over real TCP connections on loopback.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use steward_api::ApiState;
use steward_controller::metrics::Metrics;
use steward_store::Store;
use tokio::sync::{mpsc, oneshot};

use super::http::Conn;

/// The API server on its own thread and runtime; stopped (gracefully) when dropped.
pub struct Server {
    pub addr: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub fn start(state_file: &Path) -> anyhow::Result<Server> {
        let store = Arc::new(Store::open(state_file)?);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("api-server".into())
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    // The loop is not running: the sender only has to exist. Kept open (the
                    // receiver lives here) so nothing reports "controller not running".
                    let (wake, _wake_rx) = mpsc::channel(16);
                    let state = ApiState {
                        store,
                        metrics: Metrics::new(),
                        wake,
                        api_token: None,
                        webhook_secret: None,
                        ready: Arc::new(AtomicBool::new(true)),
                    };
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let _ = addr_tx.send(listener.local_addr()?.to_string());
                    steward_api::serve(listener, state, async move {
                        let _ = stop_rx.await;
                    })
                    .await?;
                    Ok(())
                })
            })?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the in-process API server did not start")?;
        Ok(Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Latencies of one round.
pub struct Round {
    pub samples: Vec<f64>,
    pub wall: Duration,
    pub mean_bytes: f64,
}

/// `n` sequential requests on one kept-alive connection after `warmup` untimed ones; `paths`
/// are taken in turn.
pub async fn sequential(
    addr: &str,
    paths: &[String],
    warmup: usize,
    n: usize,
    deadline: Instant,
) -> anyhow::Result<Round> {
    let mut c = Conn::connect(addr).await?;
    for i in 0..warmup {
        check(c.get(&paths[i % paths.len()]).await?.status, &paths[i % paths.len()])?;
    }
    let mut samples = Vec::with_capacity(n);
    let mut bytes = 0usize;
    let t = Instant::now();
    for i in 0..n {
        if Instant::now() > deadline {
            bail!("out of time after {i} of {n} requests");
        }
        let p = &paths[i % paths.len()];
        let a = c.get(p).await?;
        check(a.status, p)?;
        samples.push(crate::stats::ms(a.took));
        bytes += a.bytes;
    }
    Ok(Round {
        mean_bytes: bytes as f64 / n.max(1) as f64,
        wall: t.elapsed(),
        samples,
    })
}

/// `clients` connections at once, each making `n / clients` requests (after `warmup / clients`
/// untimed ones); latencies pooled. Each client starts at a different place in `paths`.
pub async fn concurrent(
    addr: &str,
    paths: &[String],
    warmup: usize,
    n: usize,
    clients: usize,
    deadline: Instant,
) -> anyhow::Result<Round> {
    let per = n / clients.max(1);
    let warm = warmup / clients.max(1);
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Conn::connect(addr).await?);
    }
    let paths: Arc<Vec<String>> = Arc::new(paths.to_vec());
    let gate = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for (k, mut c) in conns.into_iter().enumerate() {
        let paths = paths.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let off = k * 7;
            for i in 0..warm {
                let p = &paths[(off + i) % paths.len()];
                check(c.get(p).await?.status, p)?;
            }
            gate.wait().await;
            let mut samples = Vec::with_capacity(per);
            let mut bytes = 0usize;
            for i in 0..per {
                if Instant::now() > deadline {
                    bail!("out of time after {i} of {per} requests");
                }
                let p = &paths[(off + i) % paths.len()];
                let a = c.get(p).await?;
                check(a.status, p)?;
                samples.push(crate::stats::ms(a.took));
                bytes += a.bytes;
            }
            anyhow::Ok((samples, bytes))
        }));
    }
    // A client that failed during its warm-up never reaches the gate.
    tokio::time::timeout(Duration::from_secs(120), gate.wait())
        .await
        .context("the clients did not finish warming up within 120 s")?;
    let t = Instant::now();
    let mut samples = Vec::with_capacity(per * clients);
    let mut bytes = 0usize;
    for task in tasks {
        let (s, b) = task.await.context("client task panicked")??;
        samples.extend(s);
        bytes += b;
    }
    Ok(Round {
        mean_bytes: bytes as f64 / samples.len().max(1) as f64,
        wall: t.elapsed(),
        samples,
    })
}

fn check(status: u16, path: &str) -> anyhow::Result<()> {
    if status != 200 {
        bail!("GET {path}: HTTP {status}");
    }
    Ok(())
}

/// One `GET path` whose JSON body is returned, to check what an endpoint serves.
pub async fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut c = Conn::connect(addr).await?;
    let a = c.get(path).await?;
    check(a.status, path)?;
    serde_json::from_slice(c.body()).with_context(|| format!("GET {path}: invalid JSON"))
}
