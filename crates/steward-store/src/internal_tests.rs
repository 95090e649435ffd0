//! Connection settings, and the performance promises: with 100,000 events, recording one and reading the newest
//! N must stay index lookups, never a table scan or a sort of the whole table.

use super::*;

fn plan(store: &Store, sql: &str, values: Vec<impl rusqlite::ToSql>) -> String {
    let conn = store.lock();
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("prepare EXPLAIN");
    let rows = stmt
        .query_map(params_from_iter(values), |r| r.get::<_, String>(3))
        .expect("run EXPLAIN")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("read EXPLAIN");
    rows.join("\n")
}

fn assert_indexed(plan: &str, index: &str) {
    assert!(plan.contains(index), "expected {index} in plan:\n{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "plan sorts:\n{plan}");
    assert!(
        !plan.lines().any(|l| l.trim() == "SCAN events"),
        "plan scans the table:\n{plan}"
    );
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("plan.db")).unwrap();
    (dir, store)
}

#[test]
fn record_event_statements_use_indexes() {
    let (_dir, store) = store();
    let fold = plan(
        &store,
        FOLD_CANDIDATE_SQL,
        vec![
            Value::Text("Service/a".into()),
            Value::Text("Normal".into()),
            Value::Text("Reason".into()),
            Value::Text("message".into()),
            Value::Integer(0),
        ],
    );
    assert_indexed(&fold, "events_fold");
    assert_indexed(&plan(&store, NEXT_SEQ_SQL, Vec::<Value>::new()), "events_seq");
    assert_indexed(&plan(&store, CHANGED_SINCE_SQL, vec![Value::Integer(0)]), "events_seq");
}

#[test]
fn limited_event_queries_walk_an_index() {
    let (_dir, store) = store();
    let since = Some(OffsetDateTime::UNIX_EPOCH);
    let object = Some("Service/a".to_string());
    let cases = [
        (
            EventFilter {
                limit: Some(50),
                ..Default::default()
            },
            "events_last_seen",
        ),
        (
            EventFilter {
                since,
                limit: Some(50),
                ..Default::default()
            },
            "events_last_seen",
        ),
        (
            EventFilter {
                object: object.clone(),
                limit: Some(50),
                ..Default::default()
            },
            "events_object_last_seen",
        ),
        (
            EventFilter {
                object,
                since,
                limit: Some(50),
            },
            "events_object_last_seen",
        ),
        (EventFilter::default(), "events_last_seen"),
    ];
    for (filter, index) in cases {
        let (sql, values) = events_query(Dialect::Sqlite, &filter, "test").unwrap();
        assert_indexed(&plan(&store, &sql, values), index);
    }
}

#[test]
fn connection_settings() {
    let (_dir, store) = store();
    let conn = store.lock();
    let get = |name: &str| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
    assert_eq!(get("synchronous"), 1, "NORMAL");
    assert_eq!(get("busy_timeout"), BUSY_TIMEOUT.as_millis() as i64);
    assert_eq!(get("user_version"), SCHEMA_VERSION);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

/// The runs statements read only the rows they return: no scan of the table, no sort.
#[test]
fn runs_statements_use_indexes() {
    let (_dir, store) = store();
    let d = Dialect::Sqlite;
    let cases = [
        (runs::at_instant(d, "a", 0), vec!["runs_instant"]),
        (runs::newest_active(d, "a"), vec!["runs_active"]),
        (runs::listing(d, Some("a"), Some(5)), vec!["runs_instant"]),
        (runs::listing(d, Some("a"), None), vec!["runs_instant"]),
        (runs::listing(d, None, Some(5)), vec!["runs_newest"]),
        (runs::all_active(d), vec!["runs_active"]),
        // The merge sorts the finished side: at most `finished_limit` rows, never the table.
        (runs::of_schedule(d, "a", 5), vec!["runs_active", "runs_instant"]),
    ];
    for ((sql, values), indexes) in cases {
        let plan = plan(&store, &sql, values);
        for index in &indexes {
            assert!(plan.contains(index), "expected {index} in plan of\n{sql}:\n{plan}");
        }
        assert!(
            !plan.lines().any(|l| l.trim() == "SCAN runs"),
            "plan scans the table:\n{plan}"
        );
        if indexes.len() == 1 {
            assert!(!plan.contains("TEMP B-TREE"), "plan sorts:\n{plan}");
        }
    }
}
