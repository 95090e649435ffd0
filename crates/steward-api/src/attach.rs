//! Joining the API to a running controller loop: the wake channel in, metrics and readiness
//! out after every pass.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steward_controller::metrics::Metrics;
use steward_controller::AfterSchedule;
use steward_controller::{Controller, PassOutcome, Wake};
use steward_store::Store;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::{serve, ApiState};

/// Room for requests that arrive while a pass runs; more than one queued wake adds nothing.
const WAKE_QUEUE: usize = 16;
/// Drift events whose counts are remembered to count folds; past this the memory is dropped
/// and the next sighting of each counts as one.
const DRIFT_MEMORY: usize = 10_000;

/// The callback `RunOptions::after_pass` takes once it is given each pass's duration.
pub type AfterPass = Box<dyn FnMut(&Controller, &PassOutcome, Duration) + Send>;

/// What the controller loop needs from [`attach`].
pub struct Attached {
    /// For `RunOptions::wake`: sync requests and push webhooks.
    pub wake: mpsc::Receiver<Wake>,
    /// For `RunOptions::after_pass`, called with the pass's duration: updates the metrics and
    /// marks the API ready after the first pass.
    pub after_pass: AfterPass,
    /// For `RunOptions::after_schedule`: schedule metrics.
    pub after_schedule: AfterSchedule,
    /// For `RunOptions::after_database`: database metrics.
    pub after_database: steward_controller::AfterDatabase,
    /// The server task; await it once the loop has stopped (it ends on `shutdown`).
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    pub metrics: Arc<Metrics>,
}

/// Starts serving the API on `listener` for the controller that writes `store`, until
/// `shutdown`. Credentials come from the caller (`STEWARD_API_TOKEN`,
/// `STEWARD_WEBHOOK_SECRET`); `None` or empty disables the endpoint that needs them.
pub fn attach(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    api_token: Option<String>,
    webhook_secret: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Attached {
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (wake_tx, wake) = mpsc::channel(WAKE_QUEUE);
    let state = ApiState {
        store: store.clone(),
        metrics: metrics.clone(),
        wake: wake_tx,
        api_token: api_token.filter(|t| !t.is_empty()),
        webhook_secret: webhook_secret.filter(|t| !t.is_empty()),
        ready: ready.clone(),
    };
    let server = tokio::spawn(serve(listener, state, shutdown));
    let mut observer = PassObserver::new(store, metrics.clone(), ready);
    Attached {
        wake,
        after_pass: Box::new(move |ctl, outcome, elapsed| {
            observer.observe(outcome, elapsed, ctl.source_applied().map(|r| r.id.as_str()));
        }),
        after_schedule: {
            let metrics = metrics.clone();
            Box::new(move |_ctl, name, done, elapsed| {
                let result = if done.error.is_some() { "error" } else { "success" };
                metrics.reconcile("Schedule", result, elapsed);
                metrics.schedules.observe(name, done);
            })
        },
        after_database: {
            let metrics = metrics.clone();
            Box::new(move |_ctl, name, done, elapsed| {
                let result = if done.error.is_some() { "error" } else { "success" };
                metrics.reconcile("Database", result, elapsed);
                metrics.databases.observe(name, done);
            })
        },
        server,
        metrics,
    }
}

/// Turns what each pass did and recorded into metrics.
pub struct PassObserver {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    /// Event changes up to here are counted.
    seen_seq: i64,
    /// Count of each DriftCorrected record when last seen: a fold raises it, and every step is
    /// one correction.
    drift_counts: HashMap<i64, u64>,
}

impl PassObserver {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> PassObserver {
        // Corrections made before this process started are history, not counted again.
        let seen_seq = store.latest_event_seq().unwrap_or(0);
        PassObserver {
            store,
            metrics,
            ready,
            seen_seq,
            drift_counts: HashMap::new(),
        }
    }

    /// After a pass that took `elapsed`. `source_revision` is the git commit in force, if the
    /// desired state comes from git; otherwise the desired state's hash stands for it.
    pub fn observe(&mut self, outcome: &PassOutcome, elapsed: Duration, source_revision: Option<&str>) {
        let now = OffsetDateTime::now_utc();
        self.metrics
            .observe_pass(outcome, elapsed, now.unix_timestamp_nanos() as f64 / 1e9);
        match self.store.statuses() {
            Ok(statuses) => {
                self.metrics.set_conditions(&statuses);
                let generation = statuses
                    .iter()
                    .find(|s| s.kind == "Stack")
                    .map(|s| s.observed_generation)
                    .or(outcome.rollout.as_ref().map(|r| r.generation));
                let revision = source_revision
                    .map(str::to_string)
                    .or_else(|| outcome.rollout.as_ref().map(|r| r.desired_hash.clone()));
                if let (Some(revision), Some(generation)) = (revision, generation) {
                    self.metrics.set_applied_revision(&revision, generation);
                }
            }
            Err(e) => tracing::debug!(error = %e, "metrics: cannot read statuses"),
        }
        self.count_drift();
        self.ready.store(true, Ordering::Release);
    }

    fn count_drift(&mut self) {
        let (records, seq) = match self.store.events_changed_since(self.seen_seq) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: cannot read new events");
                return;
            }
        };
        self.seen_seq = seq;
        if self.drift_counts.len() > DRIFT_MEMORY {
            self.drift_counts.clear();
        }
        for r in records.iter().filter(|r| r.reason == "DriftCorrected") {
            let before = self.drift_counts.insert(r.id, r.count);
            let new = before.map_or(1, |b| r.count.saturating_sub(b));
            for _ in 0..new {
                self.metrics.drift_corrected(&r.object);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_plan::status::{EventType, NewEvent};

    fn outcome() -> PassOutcome {
        PassOutcome {
            plan: None,
            executed: 0,
            failed: vec![],
            converged: true,
            blocking: vec![],
            unknown: false,
            requeue_after: None,
            rollout: None,
        }
    }

    fn drift(store: &Store, object: &str) {
        let ev = NewEvent {
            type_: EventType::Warning,
            reason: "DriftCorrected".into(),
            message: "changed outside steward, restored: replicas: 3 → 2".into(),
            object: object.into(),
        };
        store.record_event(&ev, OffsetDateTime::now_utc()).unwrap();
    }

    fn sample(m: &Metrics, series: &str) -> Option<f64> {
        m.encode()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn passes_mark_ready_and_count_drift_from_recorded_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
        drift(&store, "Service/old");
        let metrics = Metrics::new();
        let ready = Arc::new(AtomicBool::new(false));
        let mut obs = PassObserver::new(store.clone(), metrics.clone(), ready.clone());

        obs.observe(&outcome(), Duration::from_millis(3), Some("abc1234"));
        assert!(ready.load(Ordering::Acquire));
        assert_eq!(
            sample(&metrics, "steward_drift_corrections_total"),
            Some(0.0),
            "history is not counted"
        );

        drift(&store, "Service/web");
        drift(&store, "Service/worker");
        obs.observe(&outcome(), Duration::from_millis(3), None);
        assert_eq!(sample(&metrics, "steward_drift_corrections_total"), Some(2.0));
        // Two folds into the same record between passes are two corrections.
        drift(&store, "Service/web");
        drift(&store, "Service/web");
        obs.observe(&outcome(), Duration::from_millis(3), None);
        assert_eq!(sample(&metrics, "steward_drift_corrections_total"), Some(4.0));
        obs.observe(&outcome(), Duration::from_millis(3), None);
        assert_eq!(sample(&metrics, "steward_drift_corrections_total"), Some(4.0));
        assert_eq!(
            sample(&metrics, r#"steward_reconciles_total{kind="Stack",result="success"}"#),
            Some(4.0)
        );
    }

    #[tokio::test]
    async fn attach_serves_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.db")).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let attached = attach(listener, store, Some(String::new()), None, async move {
            let _ = stop_rx.await;
        });
        stop_tx.send(()).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(3), attached.server)
            .await
            .expect("server stops at shutdown");
        assert!(r.unwrap().is_ok());
    }
}
