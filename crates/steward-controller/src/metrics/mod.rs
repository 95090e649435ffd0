//! Prometheus metrics of the controller, served by the API at `/metrics`.
//!
//! Label values that come from the outside world are kept to small, known sets: an unexpected
//! `result` or `outcome` is counted as `other`, so that a bug in a caller cannot explode the
//! number of series a scraper has to keep.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use steward_plan::rollout::{Phase, Rollout};
use steward_plan::status::{ConditionStatus, ResourceStatus};

use crate::pass::PassOutcome;

mod database;
mod schedule;
pub use database::DatabaseMetrics;
pub use schedule::ScheduleMetrics;

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// negotiates and parses natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reconcile duration buckets, in seconds: a steady-state pass takes milliseconds, a pass that
/// creates services or waits on a slow engine seconds; past 30 s only "very slow" matters.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const RESULTS: [&str; 3] = ["success", "error", "unknown"];
const OUTCOMES: [&str; 3] = ["complete", "rolled_back", "paused"];
/// Every condition is exported once per possible status, so that a status change is a value
/// change of existing series rather than one series vanishing and another appearing.
const STATUSES: [ConditionStatus; 3] = [ConditionStatus::True, ConditionStatus::False, ConditionStatus::Unknown];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    kind: String,
    name: String,
    r#type: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
    generation: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The controller's metrics. Cheap to update from the loop; [`Metrics::encode`] renders them
/// for a scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: HistogramFamily<KindLabels>,
    drift_corrections: Counter,
    rollouts_started: Counter,
    rollouts: Family<OutcomeLabels, Counter>,
    rollbacks: Counter,
    rollout_in_progress: Gauge,
    conditions: Family<ConditionLabels, Gauge>,
    /// The condition series currently exported, to remove those of resources that are gone.
    condition_keys: Mutex<HashSet<ConditionLabels>>,
    applied_revision: Family<RevisionLabels, Gauge>,
    applied_revision_key: Mutex<Option<RevisionLabels>>,
    last_sync: Gauge<f64, AtomicU64>,
    /// The rollout seen by the previous [`Metrics::observe_pass`], to count transitions.
    last_rollout: Mutex<Option<RolloutSeen>>,
    /// Unix milliseconds when these metrics began: a rollout started before was started by an
    /// earlier process.
    created_ms: i64,
    pub schedules: ScheduleMetrics,
    pub databases: DatabaseMetrics,
}

/// Identity and phase of a rollout: a new desired state is a new rollout even when the
/// generation number repeats (a restore of an older state).
#[derive(Clone, Debug, PartialEq)]
struct RolloutSeen {
    generation: u64,
    desired_hash: String,
    phase: Phase,
    started_ms: i64,
}

impl RolloutSeen {
    fn of(r: &Rollout) -> Self {
        RolloutSeen {
            generation: r.generation,
            desired_hash: r.desired_hash.clone(),
            phase: r.phase,
            started_ms: r.started_ms,
        }
    }

    fn same_rollout(&self, other: &RolloutSeen) -> bool {
        self.generation == other.generation && self.desired_hash == other.desired_hash
    }
}

fn outcome_label(phase: Phase) -> &'static str {
    match phase {
        Phase::RolledBack => "rolled_back",
        Phase::Paused => "paused",
        _ => "complete",
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("steward");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by resource kind and result",
            reconciles.clone(),
        );
        let reconcile_duration: HistogramFamily<KindLabels> = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Time taken by a reconcile, by resource kind",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let drift_corrections = Counter::default();
        registry.register(
            "drift_corrections",
            "Changes made outside steward that it reverted",
            drift_corrections.clone(),
        );
        let rollouts_started = Counter::default();
        registry.register("rollouts_started", "Rollouts begun", rollouts_started.clone());
        let rollouts = Family::<OutcomeLabels, Counter>::default();
        registry.register("rollouts", "Rollouts finished, by outcome", rollouts.clone());
        let rollbacks = Counter::default();
        registry.register("rollbacks", "Rollouts that ended rolled back", rollbacks.clone());
        let rollout_in_progress = Gauge::default();
        registry.register(
            "rollout_in_progress",
            "1 while a rollout is under way, else 0",
            rollout_in_progress.clone(),
        );
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "resource_condition",
            "1 for the current status of each condition of each resource, 0 for the other statuses",
            conditions.clone(),
        );
        let applied_revision = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "applied_revision_info",
            "The desired-state revision in force (value always 1)",
            applied_revision.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "last_successful_sync_timestamp",
            "Unix time of the last reconcile that converged without error",
            Unit::Seconds,
            last_sync.clone(),
        );
        let schedules = ScheduleMetrics::register(&mut registry);
        let databases = DatabaseMetrics::register(&mut registry);
        Arc::new(Metrics {
            schedules,
            databases,
            registry,
            reconciles,
            reconcile_duration,
            drift_corrections,
            rollouts_started,
            rollouts,
            rollbacks,
            rollout_in_progress,
            conditions,
            condition_keys: Mutex::new(HashSet::new()),
            applied_revision,
            applied_revision_key: Mutex::new(None),
            last_sync,
            last_rollout: Mutex::new(None),
            created_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }

    /// One reconcile of a `kind` (e.g. `Service`, `Stack`, or `pass` for a whole pass).
    /// `result` is `success`, `error` or `unknown` (the backend could not be read).
    pub fn reconcile(&self, kind: &str, result: &str, duration: Duration) {
        let result = known(result, &RESULTS);
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                result: result.to_string(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.to_string() })
            .observe(duration.as_secs_f64());
    }

    /// A change made outside steward was reverted. The object is not a label: one series per
    /// service would grow without bound as services come and go; the event names it.
    pub fn drift_corrected(&self, object: &str) {
        let _ = object;
        self.drift_corrections.inc();
    }

    pub fn rollout_started(&self) {
        self.rollouts_started.inc();
        self.rollout_in_progress.set(1);
    }

    /// `outcome` is `complete`, `rolled_back` or `paused`.
    pub fn rollout_finished(&self, outcome: &str) {
        let outcome = known(outcome, &OUTCOMES);
        self.rollouts
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
        if outcome == "rolled_back" {
            self.rollbacks.inc();
        }
        self.rollout_in_progress.set(0);
    }

    /// Replaces the exported conditions with those of `statuses`: resources and conditions
    /// missing from `statuses` disappear.
    pub fn set_conditions(&self, statuses: &[ResourceStatus]) {
        let mut keys = lock(&self.condition_keys);
        let mut current = HashSet::new();
        // New values are set before stale series are removed, so a concurrent scrape never
        // sees a resource without its conditions.
        for st in statuses {
            for c in &st.conditions {
                for s in STATUSES {
                    let labels = ConditionLabels {
                        kind: st.kind.clone(),
                        name: st.name.clone(),
                        r#type: c.type_.as_str().to_string(),
                        status: s.as_str().to_string(),
                    };
                    self.conditions.get_or_create(&labels).set(i64::from(c.status == s));
                    current.insert(labels);
                }
            }
        }
        for stale in keys.difference(&current) {
            self.conditions.remove(stale);
        }
        *keys = current;
    }

    /// The desired-state revision (spec hash) and generation now in force; the previous one's
    /// series is removed.
    pub fn set_applied_revision(&self, revision: &str, generation: u64) {
        let mut key = lock(&self.applied_revision_key);
        let labels = RevisionLabels {
            revision: revision.to_string(),
            generation: generation.to_string(),
        };
        self.applied_revision.get_or_create(&labels).set(1);
        if let Some(old) = key.take().filter(|old| *old != labels) {
            self.applied_revision.remove(&old);
        }
        *key = Some(labels);
    }

    /// A pass converged without error at `unix_seconds`.
    pub fn sync_succeeded(&self, unix_seconds: f64) {
        self.last_sync.set(unix_seconds);
    }

    /// Everything one controller pass tells: a reconcile of kind `Stack` (`unknown` when Swarm
    /// could not be read, `error` when something failed or blocks convergence), the sync time
    /// when it converged, and rollouts that began or ended since the previous pass.
    ///
    /// Rollouts are counted from the persisted rollout each pass reports, so one that begins
    /// and ends within a single pass counts too. A rollout that began before these metrics
    /// existed was started by an earlier process: it shows as in progress, and its end is
    /// counted, but its start is not (the counters restarted at zero anyway).
    pub fn observe_pass(&self, outcome: &PassOutcome, elapsed: Duration, now_unix_seconds: f64) {
        let result = if outcome.unknown {
            "unknown"
        } else if !outcome.failed.is_empty() || !outcome.blocking.is_empty() {
            "error"
        } else {
            "success"
        };
        self.reconcile("Stack", result, elapsed);
        if outcome.converged && result == "success" {
            self.sync_succeeded(now_unix_seconds);
        }

        let mut last = lock(&self.last_rollout);
        let now = outcome.rollout.as_ref().map(RolloutSeen::of);
        match (last.as_ref(), now.as_ref()) {
            (_, None) => {}
            (None, Some(n)) if n.started_ms >= self.created_ms => {
                self.rollout_started();
                if n.phase.is_terminal() {
                    self.rollout_finished(outcome_label(n.phase));
                }
            }
            (None, Some(n)) => {
                self.rollout_in_progress.set(i64::from(!n.phase.is_terminal()));
            }
            (Some(prev), Some(n)) if prev.same_rollout(n) => {
                if !prev.phase.is_terminal() && n.phase.is_terminal() {
                    self.rollout_finished(outcome_label(n.phase));
                }
            }
            (Some(prev), Some(n)) => {
                if !prev.phase.is_terminal() {
                    // Superseded by a newer desired state before it ended.
                    self.rollout_in_progress.set(0);
                }
                self.rollout_started();
                if n.phase.is_terminal() {
                    self.rollout_finished(outcome_label(n.phase));
                }
            }
        }
        if now.is_some() {
            *last = now;
        }
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]), ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }
}

fn known<'a>(value: &'a str, allowed: &[&str]) -> &'a str {
    if allowed.contains(&value) {
        value
    } else {
        "other"
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sets are rebuilt whole on every call, so a panic midway leaves nothing that
    // the next call does not repair.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_plan::status::{Condition, ConditionType};
    use time::OffsetDateTime;

    /// The value of the sample whose line starts with `series` (name and labels, exactly as
    /// encoded).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
    }

    fn status(kind: &str, name: &str, ready: ConditionStatus) -> ResourceStatus {
        let cond = |type_, status| Condition {
            type_,
            status,
            reason: "R".into(),
            message: String::new(),
            last_transition_time: OffsetDateTime::UNIX_EPOCH,
            observed_generation: 1,
        };
        ResourceStatus {
            kind: kind.into(),
            name: name.into(),
            conditions: vec![
                cond(ConditionType::Ready, ready),
                cond(ConditionType::Progressing, ConditionStatus::False),
                cond(ConditionType::Degraded, ConditionStatus::False),
            ],
            desired_replicas: Some(1),
            running_replicas: Some(1),
            image: None,
            observed_generation: 1,
            last_reconcile: OffsetDateTime::UNIX_EPOCH,
            applied_revision: None,
            attempted_revision: None,
            details: None,
        }
    }

    #[test]
    fn reconcile_counts_by_kind_and_result_and_times_into_buckets() {
        let m = Metrics::new();
        m.reconcile("Service", "success", Duration::from_millis(3));
        m.reconcile("Service", "success", Duration::from_millis(40));
        m.reconcile("Service", "error", Duration::from_secs(2));
        m.reconcile("Stack", "no-such-result", Duration::from_secs(60));
        let t = m.encode();
        assert_eq!(
            sample(&t, r#"steward_reconciles_total{kind="Service",result="success"}"#),
            Some(2.0),
            "{t}"
        );
        assert_eq!(
            sample(&t, r#"steward_reconciles_total{kind="Service",result="error"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, r#"steward_reconciles_total{kind="Stack",result="other"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, r#"steward_reconcile_duration_seconds_count{kind="Service"}"#),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"steward_reconcile_duration_seconds_bucket{le="0.001",kind="Service"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"steward_reconcile_duration_seconds_bucket{le="0.005",kind="Service"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"steward_reconcile_duration_seconds_bucket{le="0.05",kind="Service"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"steward_reconcile_duration_seconds_bucket{le="30.0",kind="Service"}"#
            ),
            Some(3.0)
        );
        // A minute is past the last bucket: only +Inf counts it.
        assert_eq!(
            sample(
                &t,
                r#"steward_reconcile_duration_seconds_bucket{le="30.0",kind="Stack"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"steward_reconcile_duration_seconds_bucket{le="+Inf",kind="Stack"}"#
            ),
            Some(1.0)
        );
        assert!(t.contains("# UNIT steward_reconcile_duration_seconds seconds"), "{t}");
    }

    #[test]
    fn drift_corrections_are_one_series_whatever_the_object() {
        let m = Metrics::new();
        m.drift_corrected("Service/a");
        m.drift_corrected("Service/b");
        let t = m.encode();
        assert_eq!(sample(&t, "steward_drift_corrections_total"), Some(2.0), "{t}");
        assert!(!t.contains("Service/a"), "no per-object label: {t}");
    }

    #[test]
    fn rollouts_count_outcomes_and_rollbacks() {
        let m = Metrics::new();
        m.rollout_started();
        assert_eq!(sample(&m.encode(), "steward_rollout_in_progress"), Some(1.0));
        m.rollout_finished("complete");
        m.rollout_started();
        m.rollout_finished("rolled_back");
        m.rollout_started();
        m.rollout_finished("paused");
        m.rollout_finished("sideways");
        let t = m.encode();
        assert_eq!(sample(&t, "steward_rollouts_started_total"), Some(3.0), "{t}");
        assert_eq!(sample(&t, r#"steward_rollouts_total{outcome="complete"}"#), Some(1.0));
        assert_eq!(
            sample(&t, r#"steward_rollouts_total{outcome="rolled_back"}"#),
            Some(1.0)
        );
        assert_eq!(sample(&t, r#"steward_rollouts_total{outcome="paused"}"#), Some(1.0));
        assert_eq!(sample(&t, r#"steward_rollouts_total{outcome="other"}"#), Some(1.0));
        assert_eq!(sample(&t, "steward_rollbacks_total"), Some(1.0));
        assert_eq!(sample(&t, "steward_rollout_in_progress"), Some(0.0));
    }

    #[test]
    fn conditions_are_one_hot_and_replaced_whole() {
        let m = Metrics::new();
        m.set_conditions(&[
            status("Service", "web", ConditionStatus::True),
            status("Service", "worker", ConditionStatus::Unknown),
        ]);
        let t = m.encode();
        let ready = |name: &str, s: &str| {
            format!(r#"steward_resource_condition{{kind="Service",name="{name}",type="Ready",status="{s}"}}"#)
        };
        assert_eq!(sample(&t, &ready("web", "True")), Some(1.0), "{t}");
        assert_eq!(sample(&t, &ready("web", "False")), Some(0.0));
        assert_eq!(sample(&t, &ready("web", "Unknown")), Some(0.0));
        assert_eq!(sample(&t, &ready("worker", "Unknown")), Some(1.0));
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("steward_resource_condition{"))
                .count(),
            2 * 3 * 3
        );

        // worker is gone and web is no longer ready.
        m.set_conditions(&[status("Service", "web", ConditionStatus::False)]);
        let t = m.encode();
        assert_eq!(sample(&t, &ready("web", "True")), Some(0.0), "{t}");
        assert_eq!(sample(&t, &ready("web", "False")), Some(1.0));
        assert!(!t.contains(r#"name="worker""#), "removed resources disappear: {t}");
        assert_eq!(
            t.lines()
                .filter(|l| l.starts_with("steward_resource_condition{"))
                .count(),
            3 * 3
        );
    }

    #[test]
    fn only_the_current_revision_is_exported() {
        let m = Metrics::new();
        m.set_applied_revision("abc123", 4);
        m.set_applied_revision("abc123", 4);
        let t = m.encode();
        assert_eq!(
            sample(&t, r#"steward_applied_revision_info{revision="abc123",generation="4"}"#),
            Some(1.0),
            "{t}"
        );
        m.set_applied_revision("def456", 5);
        let t = m.encode();
        assert_eq!(
            sample(&t, r#"steward_applied_revision_info{revision="def456",generation="5"}"#),
            Some(1.0),
            "{t}"
        );
        assert!(!t.contains("abc123"), "{t}");
    }

    #[test]
    fn last_sync_is_a_unix_timestamp_in_seconds() {
        let m = Metrics::new();
        m.sync_succeeded(1_700_000_000.5);
        let t = m.encode();
        assert_eq!(
            sample(&t, "steward_last_successful_sync_timestamp_seconds"),
            Some(1_700_000_000.5),
            "{t}"
        );
        assert!(
            t.contains("# TYPE steward_last_successful_sync_timestamp_seconds gauge"),
            "{t}"
        );
    }

    /// A pass outcome with a rollout begun now (or long ago for generation 1, from an earlier
    /// process).
    fn outcome(rollout: Option<(u64, &str, Phase)>) -> PassOutcome {
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        PassOutcome {
            plan: None,
            executed: 0,
            failed: vec![],
            converged: true,
            blocking: vec![],
            unknown: false,
            requeue_after: None,
            rollout: rollout.map(|(generation, hash, phase)| Rollout {
                generation,
                desired_hash: hash.into(),
                phase,
                phase_started_ms: 0,
                started_ms: if generation == 1 { 0 } else { now_ms },
                services: vec![],
                jobs: vec![],
                cause: None,
                manual: false,
            }),
        }
    }

    #[test]
    fn a_pass_is_a_stack_reconcile_and_a_converged_one_a_sync() {
        let m = Metrics::new();
        m.observe_pass(&outcome(None), Duration::from_millis(4), 1000.0);
        let mut failed = outcome(None);
        failed.converged = false;
        failed.failed.push("Service/web: boom".into());
        m.observe_pass(&failed, Duration::from_millis(4), 2000.0);
        let mut unknown = outcome(None);
        unknown.converged = false;
        unknown.unknown = true;
        m.observe_pass(&unknown, Duration::from_millis(4), 3000.0);
        let t = m.encode();
        for result in ["success", "error", "unknown"] {
            let series = format!(r#"steward_reconciles_total{{kind="Stack",result="{result}"}}"#);
            assert_eq!(sample(&t, &series), Some(1.0), "{result}: {t}");
        }
        assert_eq!(
            sample(&t, "steward_last_successful_sync_timestamp_seconds"),
            Some(1000.0),
            "{t}"
        );
    }

    #[test]
    fn rollouts_are_counted_from_phase_changes_between_passes() {
        use Phase::*;
        let m = Metrics::new();
        let d = Duration::from_millis(1);
        // Found under way at start: in progress, not counted as started.
        m.observe_pass(&outcome(Some((1, "h1", Verifying))), d, 0.0);
        m.observe_pass(&outcome(Some((1, "h1", Complete))), d, 0.0);
        m.observe_pass(&outcome(Some((1, "h1", Complete))), d, 0.0);
        m.observe_pass(&outcome(None), d, 0.0);
        let t = m.encode();
        assert_eq!(sample(&t, "steward_rollouts_started_total"), Some(0.0), "{t}");
        assert_eq!(
            sample(&t, r#"steward_rollouts_total{outcome="complete"}"#),
            Some(1.0),
            "{t}"
        );
        // A new one that rolls back.
        m.observe_pass(&outcome(Some((2, "h2", Updating))), d, 0.0);
        assert_eq!(sample(&m.encode(), "steward_rollout_in_progress"), Some(1.0));
        m.observe_pass(&outcome(Some((2, "h2", RollingBack))), d, 0.0);
        m.observe_pass(&outcome(Some((2, "h2", RolledBack))), d, 0.0);
        // One superseded midway by the next, which completes within its first pass.
        m.observe_pass(&outcome(Some((3, "h3", Updating))), d, 0.0);
        m.observe_pass(&outcome(Some((4, "h4", Complete))), d, 0.0);
        let t = m.encode();
        assert_eq!(sample(&t, "steward_rollouts_started_total"), Some(3.0), "{t}");
        assert_eq!(
            sample(&t, r#"steward_rollouts_total{outcome="complete"}"#),
            Some(2.0),
            "{t}"
        );
        assert_eq!(
            sample(&t, r#"steward_rollouts_total{outcome="rolled_back"}"#),
            Some(1.0),
            "{t}"
        );
        assert_eq!(sample(&t, "steward_rollbacks_total"), Some(1.0), "{t}");
        assert_eq!(sample(&t, "steward_rollout_in_progress"), Some(0.0), "{t}");

        // A rollout this process began in its very first pass is counted from its start.
        let m = Metrics::new();
        m.observe_pass(&outcome(Some((7, "h7", Complete))), d, 0.0);
        let t = m.encode();
        assert_eq!(sample(&t, "steward_rollouts_started_total"), Some(1.0), "{t}");
        assert_eq!(
            sample(&t, r#"steward_rollouts_total{outcome="complete"}"#),
            Some(1.0),
            "{t}"
        );
    }

    #[test]
    fn encoding_is_openmetrics_text() {
        let t = Metrics::new().encode();
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("# TYPE steward_drift_corrections counter"), "{t}");
        assert!(t.contains("# HELP steward_drift_corrections "), "{t}");
        // Before the first reconcile the labelled families have no series, but the unlabelled
        // counters read 0 rather than being absent, so rate() works from the first scrape.
        assert_eq!(sample(&t, "steward_rollbacks_total"), Some(0.0), "{t}");
    }
}
