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
    /// The tables each database last exported dead tuples for: the top 10 change, and only this
    /// database's series are dropped when they do.
    dead_tables: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
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
            let mut now_tables = Vec::new();
            for t in d.get("deadTuples").and_then(Value::as_array).into_iter().flatten() {
                let table = t.get("table").and_then(Value::as_str).unwrap_or("?").to_string();
                self.dead_tuples
                    .get_or_create(&TableLabels {
                        database: db(),
                        table: table.clone(),
                    })
                    .set(t.get("dead").and_then(Value::as_i64).unwrap_or(0));
                now_tables.push(table);
            }
            let mut seen = self.dead_tables.lock().unwrap_or_else(|e| e.into_inner());
            for old in seen.get(database).into_iter().flatten() {
                if !now_tables.contains(old) {
                    self.dead_tuples.remove(&TableLabels {
                        database: db(),
                        table: old.clone(),
                    });
                }
            }
            seen.insert(db(), now_tables);
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

#[cfg(test)]
mod tests {
    use steward_core::status::ResourceStatus;
    use steward_core::Requeue;

    use crate::database::DbReconciled;
    use crate::metrics::Metrics;

    fn reconciled(db: &str, tables: &[(&str, i64)], lag: Option<f64>) -> DbReconciled {
        let details = serde_json::json!({
            "servers": [{"server": "p:5432", "role": "primary", "reachable": true,
                         "connections": {"active": 2}, "sizeBytes": 1000}],
            "replication": [{"replica": "r:5432", "seconds": lag, "bytes": lag.map(|_| 10)}],
            "stats": {"at": "2026-12-02T00:00:00Z"},
            "deadTuples": tables.iter().map(|(t, n)| serde_json::json!({"table": t, "dead": n})).collect::<Vec<_>>(),
        });
        DbReconciled {
            requeue: Requeue::Never,
            status: Some(ResourceStatus::without_tasks(
                "Database",
                db,
                vec![],
                1,
                time::OffsetDateTime::UNIX_EPOCH,
                Some(details),
            )),
            finished: vec![],
            error: None,
        }
    }

    #[test]
    fn each_database_keeps_its_own_series_and_a_lag_that_cannot_be_said_is_absent() {
        let m = Metrics::new();
        m.databases
            .observe("a", &reconciled("a", &[("public.t1", 5), ("public.t2", 7)], Some(1.5)));
        m.databases
            .observe("b", &reconciled("b", &[("public.x", 9)], Some(0.0)));
        // a's top tables change; b's series stay.
        m.databases.observe("a", &reconciled("a", &[("public.t1", 3)], None));
        let text = m.encode();
        assert!(
            text.contains("steward_database_dead_tuples{database=\"a\",table=\"public.t1\"} 3"),
            "{text}"
        );
        assert!(!text.contains("table=\"public.t2\""), "{text}");
        assert!(
            text.contains("steward_database_dead_tuples{database=\"b\",table=\"public.x\"} 9"),
            "{text}"
        );
        assert!(
            text.contains("steward_database_connections{database=\"a\",state=\"active\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("steward_database_connections{database=\"a\",state=\"idle\"} 0"),
            "{text}"
        );
        // a's replica has no honest lag figure now: its series is gone, b's is there.
        assert!(
            !text.contains("steward_database_replication_lag_seconds{database=\"a\""),
            "{text}"
        );
        assert!(
            text.contains("steward_database_replication_lag_seconds{database=\"b\",replica=\"r:5432\"} 0"),
            "{text}"
        );
    }
}
