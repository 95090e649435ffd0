//! Metrics of the Schedule kind: runs by outcome, last success, next run.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use steward_schedule::Outcome;

use crate::schedule::Reconciled;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    schedule: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
}

type TimeGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Default)]
pub struct ScheduleMetrics {
    runs: Family<RunLabels, Counter>,
    last_success: Family<ScheduleLabels, TimeGauge>,
    next_run: Family<ScheduleLabels, TimeGauge>,
}

impl ScheduleMetrics {
    pub fn register(registry: &mut Registry) -> ScheduleMetrics {
        let m = ScheduleMetrics::default();
        registry.register(
            "schedule_runs",
            "Runs of each schedule that reached an outcome (Succeeded, Failed, TimedOut, Skipped, Missed, Replaced)",
            m.runs.clone(),
        );
        registry.register_with_unit(
            "schedule_last_success_timestamp",
            "Unix time the newest succeeded run of each schedule finished",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register_with_unit(
            "schedule_next_run_timestamp",
            "Unix time of each schedule's next instant (absent while suspended)",
            Unit::Seconds,
            m.next_run.clone(),
        );
        m
    }

    /// What one reconcile of `schedule` did and reported.
    pub fn observe(&self, schedule: &str, done: &Reconciled) {
        for run in &done.finished {
            // Outcomes are a closed enum: the label set stays bounded by schedules × 8.
            if run.outcome != Outcome::Pending && run.outcome != Outcome::Running {
                self.runs
                    .get_or_create(&RunLabels {
                        schedule: schedule.to_string(),
                        outcome: run.outcome.as_str().to_string(),
                    })
                    .inc();
            }
        }
        let Some(details) = done.status.as_ref().and_then(|s| s.details.as_ref()) else {
            return;
        };
        let labels = ScheduleLabels {
            schedule: schedule.to_string(),
        };
        let time = |key: &str| {
            details
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
        };
        if let Some(t) = time("lastSuccessfulTime") {
            self.last_success.get_or_create(&labels).set(t);
        }
        match time("nextScheduleTime") {
            Some(t) => {
                self.next_run.get_or_create(&labels).set(t);
            }
            None => {
                self.next_run.remove(&labels);
            }
        }
    }
}
