//! `steward describe Database/NAME`: the operations guide's six `psql` queries at a glance
//! (servers and roles, connections, replication, slow statements, largest tables, dead tuples),
//! with the backups and the calendar, from the status the controller last wrote.

use std::fmt::Write;

use serde_json::Value;
use steward_core::status::ResourceStatus;
use steward_database::DatabaseState;

use crate::output::table;

pub fn spec_text(d: &DatabaseState) -> String {
    let s = &d.spec;
    let mut out = String::new();
    let _ = writeln!(out, "Primary:      {}", DatabaseState::server_of(&s.primary));
    for r in &s.replicas {
        let _ = writeln!(out, "Replica:      {}", DatabaseState::server_of(r));
    }
    let _ = writeln!(
        out,
        "Thresholds:   replication lag {}s, {} connections, transactions {}s",
        s.thresholds.replication_lag.get().as_secs(),
        s.thresholds.connections,
        s.thresholds.long_transaction.get().as_secs()
    );
    if let Some(b) = &s.backup {
        let _ = writeln!(
            out,
            "Backups:      {} ({}) into {}, keep {} daily / {} weekly / {} monthly",
            b.schedule, b.time_zone, b.directory, b.retention.daily, b.retention.weekly, b.retention.monthly
        );
        if let Some(r) = &b.restore_test {
            let _ = writeln!(
                out,
                "Restore test: {} ({}) on {}, {} checks",
                r.schedule,
                r.time_zone,
                r.target
                    .as_deref()
                    .map_or("a throwaway local server".to_string(), DatabaseState::server_of),
                r.checks.len()
            );
        }
        if let Some(a) = &b.archive {
            let _ = writeln!(
                out,
                "Archive:      {} ({}) into {}",
                a.schedule, a.time_zone, a.directory
            );
        }
    }
    if let Some(m) = &s.maintenance {
        let _ = writeln!(
            out,
            "Maintenance:  window {} ({}) for {}s{}",
            m.window.schedule,
            m.window.time_zone,
            m.window.duration.get().as_secs(),
            m.vacuum.as_ref().map_or(String::new(), |v| format!(
                ", vacuum over {:.0}% and {} dead tuples",
                v.dead_tuple_ratio * 100.0,
                v.min_dead_tuples
            ))
        );
    }
    out
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    }
}

fn bytes(v: Option<&Value>) -> String {
    let Some(n) = v.and_then(Value::as_f64) else {
        return "-".into();
    };
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

pub fn report_text(st: &ResourceStatus) -> String {
    let Some(d) = st.details.as_ref() else {
        return String::new();
    };
    let mut out = String::new();
    let list = |k: &str| d.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    out.push_str("\nServers:\n");
    let rows: Vec<Vec<String>> = list("servers")
        .iter()
        .map(|x| {
            vec![
                format!("  {}", s(x, "server")),
                s(x, "role"),
                if x.get("reachable").and_then(Value::as_bool) == Some(true) {
                    if x.get("inRecovery").and_then(Value::as_bool) == Some(true) {
                        "in recovery".into()
                    } else {
                        "writable".into()
                    }
                } else {
                    format!("UNREACHABLE: {}", s(x, "error"))
                },
                s(x, "version"),
                match x.get("connections").and_then(Value::as_object) {
                    None => "-".into(),
                    Some(m) if m.is_empty() => "0".into(),
                    Some(m) => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                },
                x.get("longestTransactionSeconds")
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |t| format!("{t:.0}s")),
                bytes(x.get("sizeBytes")),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "  SERVER",
            "ROLE",
            "STATE",
            "VERSION",
            "CONNECTIONS",
            "LONGEST XACT",
            "SIZE",
        ],
        &rows,
    ));
    let repl = list("replication");
    if !repl.is_empty() {
        out.push_str("\nReplication:\n");
        let rows: Vec<Vec<String>> = repl
            .iter()
            .map(|x| {
                vec![
                    format!("  {}", s(x, "replica")),
                    s(x, "verdict"),
                    x.get("seconds")
                        .and_then(Value::as_f64)
                        .map_or("-".into(), |v| format!("{v:.1}s")),
                    bytes(x.get("bytes")),
                    s(x, "message"),
                ]
            })
            .collect();
        out.push_str(&table(&["  REPLICA", "VERDICT", "LAG", "BEHIND", "MESSAGE"], &rows));
    }
    if let Some(stats) = d.get("stats").filter(|v| !v.is_null()) {
        let _ = writeln!(out, "\nStatistics (read at {}):", s(stats, "at"));
        match stats.get("statements") {
            Some(Value::Array(st)) if !st.is_empty() => {
                let rows: Vec<Vec<String>> = st
                    .iter()
                    .map(|x| {
                        let q: String = s(x, "query").split_whitespace().collect::<Vec<_>>().join(" ");
                        vec![
                            format!("  {}", q.chars().take(70).collect::<String>()),
                            s(x, "calls"),
                            x.get("meanMs")
                                .and_then(Value::as_f64)
                                .map_or("-".into(), |v| format!("{v:.2}")),
                        ]
                    })
                    .collect();
                out.push_str(&table(&["  SLOWEST STATEMENTS (MEAN)", "CALLS", "MEAN MS"], &rows));
            }
            Some(Value::String(why)) => {
                let _ = writeln!(out, "  statements: {why}");
            }
            _ => out.push_str("  statements: none recorded\n"),
        }
        let rows: Vec<Vec<String>> = stats
            .get("largest")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|x| {
                vec![
                    format!("  {}", s(x, "name")),
                    bytes(x.get("totalBytes")),
                    s(x, "live"),
                    s(x, "dead"),
                    s(x, "lastAutovacuum"),
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&table(
                &["  LARGEST TABLES", "SIZE", "LIVE", "DEAD", "LAST AUTOVACUUM"],
                &rows,
            ));
        }
    }
    let dead = list("deadTuples");
    if !dead.is_empty() {
        let rows: Vec<Vec<String>> = dead
            .iter()
            .map(|x| {
                vec![
                    format!("  {}", s(x, "table")),
                    s(x, "dead"),
                    x.get("ratio")
                        .and_then(Value::as_f64)
                        .map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
                    if x.get("overThresholds").and_then(Value::as_bool) == Some(true) {
                        "vacuum due".into()
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect();
        out.push_str(&table(&["  DEAD TUPLES", "DEAD", "RATIO", ""], &rows));
    }
    if let Some(b) = d.get("backups") {
        out.push_str("\nBackups:\n");
        if let Some(n) = b.get("newest").filter(|v| !v.is_null()) {
            let _ = writeln!(
                out,
                "  newest:       {} at {} ({})",
                s(n, "file"),
                s(n, "takenAt"),
                bytes(n.get("sizeBytes"))
            );
        } else {
            out.push_str("  newest:       none\n");
        }
        if let Some(r) = b.get("lastRestoreTest").filter(|v| !v.is_null()) {
            let _ = writeln!(
                out,
                "  restore test: {} at {}: {}",
                s(r, "target"),
                s(r, "at"),
                s(r, "message")
            );
        }
        let _ = writeln!(out, "  recorded:     {}", s(b, "count"));
    }
    if let Some(held) = d.get("held").and_then(Value::as_array).filter(|h| !h.is_empty()) {
        out.push_str("\nDue, not started:\n");
        for h in held {
            let _ = writeln!(out, "  {:<13} {}", s(h, "task"), s(h, "message"));
        }
    }
    if let Some(next) = d.get("nextRuns").and_then(Value::as_object) {
        out.push_str("\nNext:\n");
        for (k, v) in next {
            let _ = writeln!(out, "  {k:<13} {}", v.as_str().unwrap_or("-"));
        }
    }
    out
}
