use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use steward_plan::status::{Condition, ConditionStatus, ConditionType, EventType, NewEvent, ResourceStatus};
use steward_store::{EventFilter, Store, StoreError, FOLD_WINDOW, SCHEMA_VERSION};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("steward.db")).unwrap();
    (dir, store)
}

fn event(object: &str, reason: &str, message: &str) -> NewEvent {
    NewEvent {
        type_: EventType::Normal,
        reason: reason.to_string(),
        message: message.to_string(),
        object: object.to_string(),
    }
}

fn condition(type_: ConditionType, status: ConditionStatus, at: OffsetDateTime) -> Condition {
    Condition {
        type_,
        status,
        reason: "Because".to_string(),
        message: format!("{} is {}", type_.as_str(), status.as_str()),
        last_transition_time: at,
        observed_generation: 1,
    }
}

fn status(name: &str, conditions: Vec<Condition>, at: OffsetDateTime) -> ResourceStatus {
    ResourceStatus {
        kind: "Service".to_string(),
        name: name.to_string(),
        conditions,
        desired_replicas: Some(2),
        running_replicas: Some(2),
        image: Some("nginx:1.27".to_string()),
        observed_generation: 1,
        last_reconcile: at,
        applied_revision: None,
        attempted_revision: None,
        details: None,
    }
}

fn all(store: &Store) -> Vec<steward_plan::status::EventRecord> {
    store.events(&EventFilter::default()).unwrap()
}

#[test]
fn folding_increments_count_and_keeps_first_seen() {
    let (_dir, store) = open();
    let ev = event("Service/web", "DriftCorrected", "replicas 1 -> 2");
    let first = store.record_event(&ev, T0).unwrap();
    assert_eq!(first.count, 1);
    assert_eq!(first.first_seen, T0);
    assert_eq!(first.last_seen, T0);

    let later = T0 + Duration::minutes(3);
    let folded = store.record_event(&ev, later).unwrap();
    assert_eq!(folded.id, first.id);
    assert_eq!(folded.count, 2);
    assert_eq!(folded.first_seen, T0);
    assert_eq!(folded.last_seen, later);

    // The window is measured from last_seen, so a steady repeat keeps folding for longer than
    // the window itself.
    let mut at = later;
    for _ in 0..10 {
        at += Duration::minutes(9);
        store.record_event(&ev, at).unwrap();
    }
    let stored = all(&store);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].count, 12);
    assert_eq!(stored[0].first_seen, T0);
    assert_eq!(stored[0].last_seen, at);
    assert_eq!(stored[0].type_, EventType::Normal);
    assert_eq!(stored[0].reason, "DriftCorrected");
    assert_eq!(stored[0].message, "replicas 1 -> 2");
    assert_eq!(stored[0].object, "Service/web");
}

#[test]
fn events_outside_the_window_are_not_folded() {
    let (_dir, store) = open();
    let ev = event("Service/web", "Unhealthy", "task failed");
    let first = store.record_event(&ev, T0).unwrap();
    // Exactly at the window edge still folds.
    let edge = store.record_event(&ev, T0 + FOLD_WINDOW).unwrap();
    assert_eq!(edge.id, first.id);
    assert_eq!(edge.count, 2);

    let after = T0 + FOLD_WINDOW + FOLD_WINDOW + Duration::SECOND;
    let fresh = store.record_event(&ev, after).unwrap();
    assert_ne!(fresh.id, first.id);
    assert_eq!(fresh.count, 1);
    assert_eq!(fresh.first_seen, after);

    // The newer record is the one that folds from now on.
    let again = store.record_event(&ev, after + Duration::minutes(1)).unwrap();
    assert_eq!(again.id, fresh.id);
    assert_eq!(again.count, 2);
    let stored = all(&store);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].count, 2);
}

#[test]
fn events_differing_in_any_key_field_are_not_folded() {
    let (_dir, store) = open();
    let base = event("Service/web", "Scaled", "replicas 1 -> 2");
    let ids: Vec<i64> = [
        base.clone(),
        NewEvent {
            message: "replicas 2 -> 3".into(),
            ..base.clone()
        },
        NewEvent {
            reason: "Updated".into(),
            ..base.clone()
        },
        NewEvent {
            object: "Service/api".into(),
            ..base.clone()
        },
        NewEvent {
            type_: EventType::Warning,
            ..base.clone()
        },
    ]
    .iter()
    .enumerate()
    .map(|(i, ev)| store.record_event(ev, T0 + Duration::seconds(i as i64)).unwrap().id)
    .collect();
    let unique: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 5, "{ids:?}");
    assert!(all(&store).iter().all(|e| e.count == 1));
}

#[test]
fn event_filters_since_object_and_limit() {
    let (_dir, store) = open();
    // web: minutes 0, 2, 4, 6, 8; api: minutes 1, 3, 5, 7, 9.
    for i in 0..10 {
        let object = if i % 2 == 0 { "Service/web" } else { "Service/api" };
        let ev = event(object, "Tick", &format!("tick {i}"));
        store.record_event(&ev, T0 + Duration::minutes(i)).unwrap();
    }
    let messages = |filter: EventFilter| -> Vec<String> {
        store.events(&filter).unwrap().into_iter().map(|e| e.message).collect()
    };
    let ticks = |ns: &[i64]| -> Vec<String> { ns.iter().map(|i| format!("tick {i}")).collect() };

    assert_eq!(messages(EventFilter::default()), ticks(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    assert_eq!(
        messages(EventFilter {
            since: Some(T0 + Duration::minutes(7)),
            ..Default::default()
        }),
        ticks(&[7, 8, 9])
    );
    assert_eq!(
        messages(EventFilter {
            object: Some("Service/api".into()),
            ..Default::default()
        }),
        ticks(&[1, 3, 5, 7, 9])
    );
    assert_eq!(
        messages(EventFilter {
            limit: Some(3),
            ..Default::default()
        }),
        ticks(&[7, 8, 9])
    );
    assert_eq!(
        messages(EventFilter {
            since: Some(T0 + Duration::minutes(3)),
            object: Some("Service/web".into()),
            limit: Some(2),
        }),
        ticks(&[6, 8])
    );
    assert_eq!(
        messages(EventFilter {
            limit: Some(0),
            ..Default::default()
        }),
        ticks(&[])
    );
    assert_eq!(
        messages(EventFilter {
            limit: Some(usize::MAX),
            ..Default::default()
        })
        .len(),
        10
    );
    assert!(messages(EventFilter {
        object: Some("Service/none".into()),
        ..Default::default()
    })
    .is_empty());

    // A fold moves the event's last_seen, and with it its place in the order.
    store
        .record_event(
            &event("Service/web", "Tick", "tick 0"),
            T0 + Duration::seconds(9 * 60 + 30),
        )
        .unwrap();
    assert_eq!(
        messages(EventFilter {
            limit: Some(2),
            ..Default::default()
        }),
        ticks(&[9, 0])
    );
}

#[test]
fn same_last_seen_is_ordered_by_id() {
    let (_dir, store) = open();
    let ids: Vec<i64> = (0..5)
        .map(|i| {
            store
                .record_event(&event("Service/web", "Same", &format!("m{i}")), T0)
                .unwrap()
                .id
        })
        .collect();
    let got: Vec<i64> = all(&store).iter().map(|e| e.id).collect();
    assert_eq!(got, ids);
    let newest: Vec<i64> = store
        .events(&EventFilter {
            limit: Some(2),
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(newest, ids[3..]);
}

#[test]
fn events_changed_since_sees_inserts_and_folds() {
    let (_dir, store) = open();
    assert_eq!(store.latest_event_seq().unwrap(), 0);
    let (none, seq) = store.events_changed_since(0).unwrap();
    assert!(none.is_empty());
    assert_eq!(seq, 0);

    let a = event("Service/web", "Scaled", "up");
    let b = event("Service/api", "Scaled", "up");
    store.record_event(&a, T0).unwrap();
    store.record_event(&b, T0).unwrap();
    let (changed, seq) = store.events_changed_since(0).unwrap();
    assert_eq!(changed.len(), 2);
    assert_eq!(seq, store.latest_event_seq().unwrap());

    // Nothing new: same cursor back.
    let (changed, same) = store.events_changed_since(seq).unwrap();
    assert!(changed.is_empty());
    assert_eq!(same, seq);

    // A fold of `a` shows up again, with its new count.
    let folded = store.record_event(&a, T0 + Duration::minutes(1)).unwrap();
    let (changed, seq2) = store.events_changed_since(seq).unwrap();
    assert_eq!(changed, vec![folded.clone()]);
    assert_eq!(changed[0].count, 2);
    assert!(seq2 > seq);

    // Changes come back in change order, each record once.
    let c = store.record_event(&event("Service/db", "Created", "ok"), T0).unwrap();
    let b2 = store.record_event(&b, T0 + Duration::minutes(2)).unwrap();
    let a3 = store.record_event(&a, T0 + Duration::minutes(3)).unwrap();
    let (changed, seq3) = store.events_changed_since(seq2).unwrap();
    assert_eq!(changed, vec![c, b2, a3]);
    assert_eq!(seq3, store.latest_event_seq().unwrap());
    // Replaying from 0 still yields each record once, in last-change order.
    let (replay, _) = store.events_changed_since(0).unwrap();
    assert_eq!(replay.len(), 3);
}

#[test]
fn record_event_returns_what_is_stored() {
    let (_dir, store) = open();
    let offset = datetime!(2025-03-01 14:00:00.123456789 +02:00);
    let rec = store
        .record_event(&event("Service/web", "Scaled", "up"), offset)
        .unwrap();
    assert_eq!(rec.first_seen, offset);
    assert_eq!(rec.first_seen.offset(), time::UtcOffset::UTC);
    assert_eq!(all(&store), vec![rec]);
}

#[test]
fn put_status_keeps_transition_time_unless_status_changes() {
    let (_dir, store) = open();
    let t1 = T0;
    let t2 = T0 + Duration::minutes(5);
    store
        .put_status(&status(
            "web",
            vec![
                condition(ConditionType::Ready, ConditionStatus::False, t1),
                condition(ConditionType::Progressing, ConditionStatus::True, t1),
            ],
            t1,
        ))
        .unwrap();

    // Ready flips, Progressing stays True, Degraded is new.
    let mut next = status(
        "web",
        vec![
            condition(ConditionType::Ready, ConditionStatus::True, t2),
            condition(ConditionType::Progressing, ConditionStatus::True, t2),
            condition(ConditionType::Degraded, ConditionStatus::False, t2),
        ],
        t2,
    );
    next.conditions[1].reason = "NewReason".into();
    next.conditions[1].observed_generation = 2;
    next.observed_generation = 2;
    next.running_replicas = Some(1);
    store.put_status(&next).unwrap();

    let got = store.status("Service", "web").unwrap().unwrap();
    let ready = got.condition(ConditionType::Ready).unwrap();
    assert_eq!(ready.status, ConditionStatus::True);
    assert_eq!(ready.last_transition_time, t2);
    let progressing = got.condition(ConditionType::Progressing).unwrap();
    assert_eq!(progressing.last_transition_time, t1, "kept: status unchanged");
    assert_eq!(progressing.reason, "NewReason", "other fields still update");
    assert_eq!(progressing.observed_generation, 2);
    let degraded = got.condition(ConditionType::Degraded).unwrap();
    assert_eq!(degraded.last_transition_time, t2);
    assert_eq!(got.observed_generation, 2);
    assert_eq!(got.running_replicas, Some(1));
    assert_eq!(got.last_reconcile, t2);

    // Unknown -> back to True later moves it again.
    let t3 = t2 + Duration::minutes(5);
    let t4 = t3 + Duration::minutes(5);
    store
        .put_status(&status(
            "web",
            vec![condition(ConditionType::Ready, ConditionStatus::Unknown, t3)],
            t3,
        ))
        .unwrap();
    store
        .put_status(&status(
            "web",
            vec![condition(ConditionType::Ready, ConditionStatus::True, t4)],
            t4,
        ))
        .unwrap();
    let got = store.status("Service", "web").unwrap().unwrap();
    assert_eq!(got.conditions.len(), 1);
    assert_eq!(got.conditions[0].last_transition_time, t4);
}

#[test]
fn statuses_are_ordered_and_removable() {
    let (_dir, store) = open();
    for (kind, name) in [("Service", "web"), ("Network", "front"), ("Service", "api")] {
        let mut s = status(name, vec![], T0);
        s.kind = kind.to_string();
        store.put_status(&s).unwrap();
    }
    let keys: Vec<(String, String)> = store
        .statuses()
        .unwrap()
        .into_iter()
        .map(|s| (s.kind, s.name))
        .collect();
    let key = |k: &str, n: &str| (k.to_string(), n.to_string());
    assert_eq!(
        keys,
        vec![key("Network", "front"), key("Service", "api"), key("Service", "web")]
    );
    assert!(store.status("Service", "missing").unwrap().is_none());
    assert!(store.status("Network", "web").unwrap().is_none());

    store.remove_status("Service", "api").unwrap();
    store.remove_status("Service", "api").unwrap(); // idempotent
    assert!(store.status("Service", "api").unwrap().is_none());
    assert_eq!(store.statuses().unwrap().len(), 2);
}

#[test]
fn meta_get_and_set() {
    let (_dir, store) = open();
    assert_eq!(store.get_meta("generation").unwrap(), None);
    store.set_meta("generation", "1").unwrap();
    store.set_meta("hash", "abc").unwrap();
    store.set_meta("generation", "2").unwrap();
    assert_eq!(store.get_meta("generation").unwrap().as_deref(), Some("2"));
    assert_eq!(store.get_meta("hash").unwrap().as_deref(), Some("abc"));
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("state").join("steward.db");
    let (rec, st) = {
        let store = Store::open(&path).unwrap();
        let rec = store.record_event(&event("Service/web", "Scaled", "up"), T0).unwrap();
        let st = status(
            "web",
            vec![condition(ConditionType::Ready, ConditionStatus::True, T0)],
            T0,
        );
        store.put_status(&st).unwrap();
        store.set_meta("generation", "7").unwrap();
        (rec, st)
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(all(&store), vec![rec.clone()]);
    assert_eq!(store.statuses().unwrap(), vec![st]);
    assert_eq!(store.get_meta("generation").unwrap().as_deref(), Some("7"));
    // Folding and seq continue across the reopen.
    let folded = store
        .record_event(&event("Service/web", "Scaled", "up"), T0 + Duration::minutes(1))
        .unwrap();
    assert_eq!((folded.id, folded.count), (rec.id, 2));
    assert_eq!(store.latest_event_seq().unwrap(), 2);
}

#[test]
fn open_uses_wal_and_rejects_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    drop(Store::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    }
    match Store::open(&path) {
        Err(StoreError::UnsupportedSchema { found, supported, .. }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
}

#[test]
fn error_names_the_file_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database file should be: opening it fails.
    let path = dir.path().join("is-a-dir");
    std::fs::create_dir(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("is-a-dir"), "{msg}");
    assert!(std::error::Error::source(&err).is_some());
}

/// Two handles on one file stand in for `steward run` writing while `steward status` /
/// `steward events` read from another process: nobody may see "database is locked".
#[test]
fn concurrent_writer_and_reader_do_not_lock_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    let writer = Store::open(&path).unwrap();
    let reader = Store::open(&path).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    const N: i64 = 2000;

    let write = {
        let done = done.clone();
        thread::spawn(move || {
            for i in 0..N {
                let at = T0 + Duration::seconds(i);
                writer
                    .record_event(&event("Service/web", "Tick", &format!("tick {}", i % 50)), at)
                    .unwrap();
                if i % 10 == 0 {
                    writer
                        .put_status(&status(
                            &format!("svc{}", i % 7),
                            vec![condition(ConditionType::Ready, ConditionStatus::True, at)],
                            at,
                        ))
                        .unwrap();
                    writer.set_meta("generation", &i.to_string()).unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let read = thread::spawn(move || {
        let mut cursor = 0;
        let mut reads = 0u64;
        loop {
            let finished = done.load(Ordering::SeqCst);
            reader
                .events(&EventFilter {
                    limit: Some(20),
                    ..Default::default()
                })
                .unwrap();
            reader.statuses().unwrap();
            reader.get_meta("generation").unwrap();
            let (_, next) = reader.events_changed_since(cursor).unwrap();
            assert!(next >= cursor);
            cursor = next;
            reads += 1;
            if finished {
                break;
            }
        }
        (reader, cursor, reads)
    });

    write.join().expect("writer failed");
    let (reader, cursor, reads) = read.join().expect("reader failed");
    assert!(reads > 1);
    // Every write is visible to the other handle once committed.
    assert_eq!(cursor, N);
    let events = reader.events(&EventFilter::default()).unwrap();
    assert_eq!(events.len(), 50);
    assert_eq!(events.iter().map(|e| e.count).sum::<u64>(), N as u64);
    assert_eq!(reader.statuses().unwrap().len(), 7);
}

/// Two handles writing at the same time (say `steward run` and a one-off command) serialise
/// through SQLite's lock and the busy timeout, without errors or lost updates.
#[test]
fn concurrent_writers_serialise() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    let handles: Vec<_> = (0..2)
        .map(|w| {
            let store = Store::open(&path).unwrap();
            thread::spawn(move || {
                for i in 0..500 {
                    store
                        .record_event(
                            &event("Service/web", "Tick", &format!("w{w} {}", i % 5)),
                            T0 + Duration::seconds(i),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let events = all(&store);
    assert_eq!(events.len(), 10);
    assert_eq!(events.iter().map(|e| e.count).sum::<u64>(), 1000);
    assert_eq!(store.latest_event_seq().unwrap(), 1000);
}

/// A controller and `steward status` started together both open a fresh file: each open
/// succeeds (SQLite refuses one of two connections asking to switch the file to WAL at once,
/// without waiting; the store retries that within its busy timeout).
#[test]
fn opening_a_fresh_file_from_many_places_at_once_succeeds_everywhere() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.db");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&path)
                        .map(|_| ())
                        .map_err(|e| format!("{e:#}: {:?}", std::error::Error::source(&e)))
                })
            })
            .collect();
        for h in handles {
            let r = h.join().unwrap();
            assert!(r.is_ok(), "round {round}: {r:?}");
        }
    }
}
