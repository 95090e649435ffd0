//! Metrics of the Database kind, from each reconcile's status report: servers up, replication
//! lag (seconds and bytes), connections by state, size, dead tuples of the top tables, and the
//! backups' last success, last verified restore and restore time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use crate::database::DbReconciled;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    database: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    database: String,
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    database: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabels {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    database: String,
    table: String,
}

type F64 = Gauge<f64, AtomicU64>;

/// `pg_stat_activity.state` values.
const STATES: [&str; 6] = [
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
];

#[derive(Debug, Default)]
pub struct DatabaseMetrics {
    up: Family<ServerLabels, Gauge>,
    lag_seconds: Family<ReplicaLabels, F64>,
    lag_bytes: Family<ReplicaLabels, Gauge>,
    connections: Family<StateLabels, Gauge>,
    size: Family<DbLabels, Gauge>,
    dead_tuples: Family<TableLabels, Gauge>,
    backup_last_success: Family<DbLabels, F64>,
    restore_last_success: Family<DbLabels, F64>,
    restore_seconds: Family<DbLabels, F64>,
}

fn time_of(v: Option<&Value>) -> Option<f64> {
    let t = time::OffsetDateTime::parse(v?.as_str()?, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

impl DatabaseMetrics {
    pub fn register(registry: &mut Registry) -> DatabaseMetrics {
        let m = DatabaseMetrics::default();
        registry.register(
            "database_up",
            "1 when the server answered the last observation, 0 otherwise",
            m.up.clone(),
        );
        registry.register_with_unit(
            "database_replication_lag",
            "Replication lag of each replica (absent when it cannot be said honestly: disconnected, not in recovery, unreachable)",
            Unit::Seconds,
            m.lag_seconds.clone(),
        );
        registry.register_with_unit(
            "database_replication_lag",
            "WAL bytes each replica has not replayed, against the primary's current position",
            Unit::Bytes,
            m.lag_bytes.clone(),
        );
        registry.register(
            "database_connections",
            "Client connections of the primary by pg_stat_activity state",
            m.connections.clone(),
        );
        registry.register_with_unit(
            "database_size",
            "pg_database_size of the primary",
            Unit::Bytes,
            m.size.clone(),
        );
        registry.register(
            "database_dead_tuples",
            "Dead tuples of the tables with the most (top 10)",
            m.dead_tuples.clone(),
        );
        registry.register_with_unit(
            "backup_last_success_timestamp",
            "Unix time of the newest backup steward made of each database",
            Unit::Seconds,
            m.backup_last_success.clone(),
        );
        registry.register_with_unit(
            "backup_last_restore_test_success_timestamp",
            "Unix time of the newest restore test that passed",
            Unit::Seconds,
            m.restore_last_success.clone(),
        );
        registry.register_with_unit(
            "backup_restore",
            "Restore time (RTO) measured by the last restore test",
            Unit::Seconds,
            m.restore_seconds.clone(),
        );
        m
    }

    pub fn observe(&self, database: &str, done: &DbReconciled) {
        let db = || database.to_string();
        for (_, _, secs) in &done.finished {
            if let Some(s) = secs {
                self.restore_seconds.get_or_create(&DbLabels { database: db() }).set(*s);
            }
        }
        let Some(d) = done.status.as_ref().and_then(|s| s.details.as_ref()) else {
            return;
        };
        for s in d.get("servers").and_then(Value::as_array).into_iter().flatten() {
            let server = s.get("server").and_then(Value::as_str).unwrap_or("?").to_string();
            let up = s.get("reachable").and_then(Value::as_bool).unwrap_or(false);
            self.up
                .get_or_create(&ServerLabels { database: db(), server })
                .set(i64::from(up));
            if s.get("role").and_then(Value::as_str) == Some("primary") {
                // Every state PostgreSQL reports, so a state that empties reads 0, not stale.
                for state in STATES {
                    self.connections
                        .get_or_create(&StateLabels {
                            database: db(),
                            state: state.to_string(),
                        })
                        .set(0);
                }
                for (state, n) in s.get("connections").and_then(Value::as_object).into_iter().flatten() {
                    self.connections
                        .get_or_create(&StateLabels {
                            database: db(),
                            state: state.clone(),
                        })
                        .set(n.as_i64().unwrap_or(0));
                }
                if let Some(size) = s.get("sizeBytes").and_then(Value::as_i64) {
                    self.size.get_or_create(&DbLabels { database: db() }).set(size);
                }
            }
        }
        for l in d.get("replication").and_then(Value::as_array).into_iter().flatten() {
            let labels = ReplicaLabels {
                database: db(),
                replica: l.get("replica").and_then(Value::as_str).unwrap_or("?").to_string(),
            };
            match l.get("seconds").and_then(Value::as_f64) {
                Some(s) => {
                    self.lag_seconds.get_or_create(&labels).set(s);
                }
                None => {
                    self.lag_seconds.remove(&labels);
                }
            }
            match l.get("bytes").and_then(Value::as_i64) {
                Some(b) => {
                    self.lag_bytes.get_or_create(&labels).set(b);
                }
                None => {
                    self.lag_bytes.remove(&labels);
                }
            }
        }
        if d.get("stats").is_some_and(|s| !s.is_null()) {
            self.dead_tuples.clear();
            for t in d.get("deadTuples").and_then(Value::as_array).into_iter().flatten() {
                self.dead_tuples
                    .get_or_create(&TableLabels {
                        database: db(),
                        table: t.get("table").and_then(Value::as_str).unwrap_or("?").to_string(),
                    })
                    .set(t.get("dead").and_then(Value::as_i64).unwrap_or(0));
            }
        }
        if let Some(t) = time_of(d.get("lastBackupSuccess")) {
            self.backup_last_success
                .get_or_create(&DbLabels { database: db() })
                .set(t);
        }
        if let Some(t) = time_of(d.get("lastRestoreTestSuccess")) {
            self.restore_last_success
                .get_or_create(&DbLabels { database: db() })
                .set(t);
        }
        if let Some(s) = d
            .pointer("/backups/lastRestoreTest/restoreSeconds")
            .and_then(Value::as_f64)
        {
            self.restore_seconds.get_or_create(&DbLabels { database: db() }).set(s);
        }
    }
}
