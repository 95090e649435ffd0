//! The store's semantics, asserted identically against each backend: SQLite (a temporary
//! file) and PostgreSQL (a temporary database on the server from scripts/ensure-postgres.sh).
//! Both are opened through `Store::open_url`, as `--store` does.

mod support;

use std::collections::BTreeSet;
use std::thread;

use steward_plan::rollout::{Outcome, Revision};
use steward_plan::status::{
    Condition, ConditionStatus, ConditionType, EventRecord, EventType, NewEvent, ResourceStatus,
};
use steward_plan::{Amounts, PolicyState, ServiceState};
use steward_store::{EventFilter, Store, FOLD_WINDOW, REVISIONS_KEPT};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use support::TestDb;

const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

/// Where one backend's store lives; `open` may be called again to reopen it.
struct Fixture {
    backend: &'static str,
    location: String,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDb>,
}

impl Fixture {
    fn open(&self) -> Store {
        let store = Store::open_url(&self.location).unwrap_or_else(|e| panic!("open {} store: {e}", self.backend));
        assert_eq!(store.is_postgres(), self.backend == "postgres");
        store
    }
}

/// Runs `body` once per backend, each on a fresh, empty store. PostgreSQL is skipped (with a
/// message) when no server answers, unless STEWARD_REQUIRE_SERVICES=1.
fn each_backend(test: &str, body: impl Fn(&Fixture)) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Fixture {
        backend: "sqlite",
        location: dir.path().join("state").join("steward.db").display().to_string(),
        _dir: Some(dir),
        _db: None,
    };
    body(&sqlite);
    if let Some(db) = TestDb::create(test) {
        let postgres = Fixture {
            backend: "postgres",
            location: db.url.clone(),
            _dir: None,
            _db: Some(db),
        };
        body(&postgres);
    }
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

fn policy() -> PolicyState {
    PolicyState {
        parallelism: 1,
        delay_ns: 0,
        failure_action: "pause".into(),
        monitor_ns: 5_000_000_000,
        max_failure_ratio: 0.0,
        order: "stop-first".into(),
    }
}

fn revision(service: &str, hash: &str, outcome: Outcome) -> Revision {
    Revision {
        service: service.to_string(),
        number: 0,
        spec_hash: hash.to_string(),
        image: format!("app:{hash}"),
        generation: 1,
        created_ms: 1_700_000_000_000,
        outcome,
        state: ServiceState {
            image: format!("app:{hash}"),
            replicas: 2,
            command: vec![],
            args: vec![],
            env: [("SECRET".to_string(), String::new())].into(),
            labels: Default::default(),
            ports: vec![],
            limits: Amounts::default(),
            reservations: Amounts::default(),
            update: policy(),
            rollback: policy(),
            mode: Default::default(),
            task: Default::default(),
        },
        secret_env: ["SECRET".to_string()].into(),
        task_hash: format!("task-{hash}"),
    }
}

fn all(store: &Store) -> Vec<EventRecord> {
    store.events(&EventFilter::default()).unwrap()
}

fn messages(store: &Store, filter: EventFilter) -> Vec<String> {
    store.events(&filter).unwrap().into_iter().map(|e| e.message).collect()
}

fn ticks(ns: &[i64]) -> Vec<String> {
    ns.iter().map(|i| format!("tick {i}")).collect()
}

#[test]
fn folding_window_and_key_fields() {
    each_backend("folding_window_and_key_fields", |fx| {
        let store = fx.open();
        let ev = event("Service/web", "DriftCorrected", "replicas 1 -> 2");
        let first = store.record_event(&ev, T0).unwrap();
        assert_eq!((first.count, first.first_seen, first.last_seen), (1, T0, T0));

        let later = T0 + Duration::minutes(3);
        let folded = store.record_event(&ev, later).unwrap();
        assert_eq!(folded.id, first.id, "{}", fx.backend);
        assert_eq!((folded.count, folded.first_seen, folded.last_seen), (2, T0, later));

        // Exactly at the window edge (from last_seen) still folds; past it starts a new record.
        let edge = store.record_event(&ev, later + FOLD_WINDOW).unwrap();
        assert_eq!((edge.id, edge.count), (first.id, 3));
        let after = later + FOLD_WINDOW + FOLD_WINDOW + Duration::SECOND;
        let fresh = store.record_event(&ev, after).unwrap();
        assert_ne!(fresh.id, first.id);
        assert_eq!((fresh.count, fresh.first_seen), (1, after));
        let again = store.record_event(&ev, after + Duration::minutes(1)).unwrap();
        assert_eq!((again.id, again.count), (fresh.id, 2));

        // A record stamped slightly in the future (clock skew) is folded into, and keeps the
        // earliest first_seen and the latest last_seen.
        let skewed = store.record_event(&ev, after - Duration::seconds(5)).unwrap();
        assert_eq!(skewed.id, fresh.id);
        assert_eq!(skewed.first_seen, after - Duration::seconds(5));
        assert_eq!(skewed.last_seen, after + Duration::minutes(1));

        // Any differing key field means a separate record.
        let base = event("Service/x", "Scaled", "replicas 1 -> 2");
        let variants = [
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
                object: "Service/y".into(),
                ..base.clone()
            },
            NewEvent {
                type_: EventType::Warning,
                ..base.clone()
            },
        ];
        let ids: BTreeSet<i64> = variants.iter().map(|v| store.record_event(v, T0).unwrap().id).collect();
        assert_eq!(ids.len(), 5, "{}", fx.backend);

        // Messages too long to be an index key still fold exactly.
        let long = event("Service/web", "Failed", &"x".repeat(10_000));
        let a = store.record_event(&long, T0).unwrap();
        let b = store.record_event(&long, T0 + Duration::SECOND).unwrap();
        assert_eq!((b.id, b.count), (a.id, 2));
        let mut almost = long.clone();
        almost.message.push('y');
        assert_ne!(store.record_event(&almost, T0).unwrap().id, a.id);
    });
}

#[test]
fn event_filters_order_and_limit() {
    each_backend("event_filters_order_and_limit", |fx| {
        let store = fx.open();
        // web: minutes 0, 2, 4, 6, 8; api: minutes 1, 3, 5, 7, 9.
        for i in 0..10 {
            let object = if i % 2 == 0 { "Service/web" } else { "Service/api" };
            store
                .record_event(&event(object, "Tick", &format!("tick {i}")), T0 + Duration::minutes(i))
                .unwrap();
        }
        let f = |since: Option<i64>, object: Option<&str>, limit: Option<usize>| EventFilter {
            since: since.map(|m| T0 + Duration::minutes(m)),
            object: object.map(str::to_string),
            limit,
        };
        assert_eq!(
            messages(&store, f(None, None, None)),
            ticks(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        );
        assert_eq!(messages(&store, f(Some(7), None, None)), ticks(&[7, 8, 9]));
        assert_eq!(
            messages(&store, f(None, Some("Service/api"), None)),
            ticks(&[1, 3, 5, 7, 9])
        );
        assert_eq!(messages(&store, f(None, None, Some(3))), ticks(&[7, 8, 9]));
        assert_eq!(
            messages(&store, f(Some(3), Some("Service/web"), Some(2))),
            ticks(&[6, 8])
        );
        assert_eq!(messages(&store, f(None, None, Some(0))), ticks(&[]));
        assert_eq!(messages(&store, f(None, None, Some(usize::MAX))).len(), 10);
        assert!(messages(&store, f(None, Some("Service/none"), None)).is_empty());

        // A fold moves the event's last_seen, and with it its place in the order.
        store
            .record_event(&event("Service/web", "Tick", "tick 0"), T0 + Duration::seconds(570))
            .unwrap();
        assert_eq!(messages(&store, f(None, None, Some(2))), ticks(&[9, 0]));

        // Equal last_seen: ordered by id, with and without a limit.
        let ids: Vec<i64> = (0..5)
            .map(|i| {
                store
                    .record_event(&event("Service/same", "Same", &format!("m{i}")), T0)
                    .unwrap()
                    .id
            })
            .collect();
        let same = |limit| -> Vec<i64> {
            store
                .events(&EventFilter {
                    object: Some("Service/same".into()),
                    limit,
                    ..Default::default()
                })
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(same(None), ids);
        assert_eq!(same(Some(2)), ids[3..]);
    });
}

#[test]
fn events_changed_since_follows_inserts_and_folds() {
    each_backend("events_changed_since_follows_inserts_and_folds", |fx| {
        let store = fx.open();
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
        let (changed, same) = store.events_changed_since(seq).unwrap();
        assert!(changed.is_empty());
        assert_eq!(same, seq);

        let folded = store.record_event(&a, T0 + Duration::minutes(1)).unwrap();
        let (changed, seq2) = store.events_changed_since(seq).unwrap();
        assert_eq!(changed, vec![folded]);
        assert_eq!(changed[0].count, 2);
        assert!(seq2 > seq);

        let c = store.record_event(&event("Service/db", "Created", "ok"), T0).unwrap();
        let b2 = store.record_event(&b, T0 + Duration::minutes(2)).unwrap();
        let a3 = store.record_event(&a, T0 + Duration::minutes(3)).unwrap();
        let (changed, seq3) = store.events_changed_since(seq2).unwrap();
        assert_eq!(changed, vec![c, b2, a3]);
        assert_eq!(seq3, store.latest_event_seq().unwrap());
        let (replay, _) = store.events_changed_since(0).unwrap();
        assert_eq!(replay.len(), 3);
    });
}

#[test]
fn record_event_returns_what_is_stored() {
    each_backend("record_event_returns_what_is_stored", |fx| {
        let store = fx.open();
        let offset = datetime!(2025-03-01 14:00:00.123456789 +02:00);
        let rec = store
            .record_event(&event("Service/web", "Scaled", "up"), offset)
            .unwrap();
        assert_eq!(rec.first_seen, offset);
        assert_eq!(rec.first_seen.offset(), time::UtcOffset::UTC);
        let warning = NewEvent {
            type_: EventType::Warning,
            ..event("Service/web", "Failed", "ünïcødé ✓")
        };
        let w = store.record_event(&warning, offset).unwrap();
        assert_eq!(all(&store), vec![rec, w]);
    });
}

#[test]
fn put_status_keeps_transition_time_unless_status_changes() {
    each_backend("put_status_keeps_transition_time_unless_status_changes", |fx| {
        let store = fx.open();
        let (t1, t2) = (T0, T0 + Duration::minutes(5));
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
        next.observed_generation = 2;
        next.running_replicas = Some(1);
        store.put_status(&next).unwrap();

        let got = store.status("Service", "web").unwrap().unwrap();
        assert_eq!(got.condition(ConditionType::Ready).unwrap().last_transition_time, t2);
        let progressing = got.condition(ConditionType::Progressing).unwrap();
        assert_eq!(progressing.last_transition_time, t1, "{}: kept", fx.backend);
        assert_eq!(progressing.reason, "NewReason");
        assert_eq!(got.condition(ConditionType::Degraded).unwrap().last_transition_time, t2);
        assert_eq!((got.observed_generation, got.running_replicas), (2, Some(1)));
        assert_eq!(got.last_reconcile, t2);

        let (t3, t4) = (t2 + Duration::minutes(5), t2 + Duration::minutes(10));
        for (s, at) in [(ConditionStatus::Unknown, t3), (ConditionStatus::True, t4)] {
            store
                .put_status(&status("web", vec![condition(ConditionType::Ready, s, at)], at))
                .unwrap();
        }
        let got = store.status("Service", "web").unwrap().unwrap();
        assert_eq!(got.conditions.len(), 1);
        assert_eq!(got.conditions[0].last_transition_time, t4);
    });
}

#[test]
fn statuses_are_ordered_and_removable() {
    each_backend("statuses_are_ordered_and_removable", |fx| {
        let store = fx.open();
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
        store.remove_status("Service", "api").unwrap();
        assert!(store.status("Service", "api").unwrap().is_none());
        assert_eq!(store.statuses().unwrap().len(), 2);
    });
}

#[test]
fn meta_get_and_set() {
    each_backend("meta_get_and_set", |fx| {
        let store = fx.open();
        assert_eq!(store.get_meta("generation").unwrap(), None);
        store.set_meta("generation", "1").unwrap();
        store.set_meta("hash", "abc").unwrap();
        store.set_meta("generation", "2").unwrap();
        assert_eq!(store.get_meta("generation").unwrap().as_deref(), Some("2"));
        assert_eq!(store.get_meta("hash").unwrap().as_deref(), Some("abc"));
    });
}

#[test]
fn revisions_are_numbered_trimmed_and_updated() {
    each_backend("revisions_are_numbered_trimmed_and_updated", |fx| {
        let store = fx.open();
        assert!(store.revisions("web").unwrap().is_empty());
        assert!(store.last_good().unwrap().is_empty());

        let total = REVISIONS_KEPT + 5;
        for i in 1..=total {
            let outcome = if i == 3 {
                Outcome::Baseline
            } else {
                Outcome::Progressing
            };
            let n = store.add_revision(&revision("web", &format!("h{i}"), outcome)).unwrap();
            assert_eq!(n, i, "{}", fx.backend);
        }
        // Numbering is per service.
        assert_eq!(
            store.add_revision(&revision("api", "a1", Outcome::Complete)).unwrap(),
            1
        );

        let web = store.revisions("web").unwrap();
        assert_eq!(web.len() as u64, REVISIONS_KEPT);
        let numbers: Vec<u64> = web.iter().map(|r| r.number).collect();
        let expected: Vec<u64> = (total - REVISIONS_KEPT + 1..=total).rev().collect();
        assert_eq!(numbers, expected, "newest first, oldest trimmed");
        assert_eq!(web[0].spec_hash, format!("h{total}"));
        assert_eq!(web[0], {
            let mut r = revision("web", &format!("h{total}"), Outcome::Progressing);
            r.number = total;
            r
        });

        // The Baseline (number 3) was trimmed: web has no known-good revision yet.
        let good = store.last_good().unwrap();
        assert_eq!(good.keys().collect::<Vec<_>>(), vec!["api"]);

        let hash = format!("h{}", total - 1);
        store.set_revision_outcome("web", &hash, Outcome::Complete).unwrap();
        store
            .set_revision_outcome("web", "no-such-hash", Outcome::Complete)
            .unwrap();
        let good = store.last_good().unwrap();
        assert_eq!(good["web"].spec_hash, hash);
        assert_eq!(good["web"].outcome, Outcome::Complete);
        assert_eq!(good["web"].number, total - 1);
        store
            .set_revision_outcome("web", &format!("h{total}"), Outcome::RolledBack)
            .unwrap();
        assert_eq!(store.revisions("web").unwrap()[0].outcome, Outcome::RolledBack);
        assert_eq!(store.last_good().unwrap()["web"].spec_hash, hash);
    });
}

#[test]
fn data_survives_reopening() {
    each_backend("data_survives_reopening", |fx| {
        let (rec, st) = {
            let store = fx.open();
            let rec = store.record_event(&event("Service/web", "Scaled", "up"), T0).unwrap();
            let st = status(
                "web",
                vec![condition(ConditionType::Ready, ConditionStatus::True, T0)],
                T0,
            );
            store.put_status(&st).unwrap();
            store.set_meta("generation", "7").unwrap();
            store.add_revision(&revision("web", "h1", Outcome::Complete)).unwrap();
            (rec, st)
        };
        let store = fx.open();
        assert_eq!(all(&store), vec![rec.clone()]);
        assert_eq!(store.statuses().unwrap(), vec![st]);
        assert_eq!(store.get_meta("generation").unwrap().as_deref(), Some("7"));
        let folded = store
            .record_event(&event("Service/web", "Scaled", "up"), T0 + Duration::minutes(1))
            .unwrap();
        assert_eq!((folded.id, folded.count), (rec.id, 2));
        assert_eq!(store.latest_event_seq().unwrap(), 2);
        assert_eq!(
            store.add_revision(&revision("web", "h2", Outcome::Complete)).unwrap(),
            2
        );
    });
}

/// Two handles writing at once (two controllers during a handover, or a one-off command):
/// writes serialise without errors or lost updates, and the change counter has no gaps.
#[test]
fn concurrent_writers_serialise() {
    each_backend("concurrent_writers_serialise", |fx| {
        const PER_WRITER: i64 = 300;
        thread::scope(|s| {
            for w in 0..2 {
                let store = fx.open();
                s.spawn(move || {
                    for i in 0..PER_WRITER {
                        store
                            .record_event(
                                &event("Service/web", "Tick", &format!("w{w} {}", i % 5)),
                                T0 + Duration::seconds(i),
                            )
                            .unwrap();
                        if i % 30 == 0 {
                            store
                                .add_revision(&revision("web", &format!("w{w}-{i}"), Outcome::Progressing))
                                .unwrap();
                        }
                    }
                });
            }
        });
        let store = fx.open();
        let events = all(&store);
        assert_eq!(events.len(), 10, "{}", fx.backend);
        assert_eq!(events.iter().map(|e| e.count).sum::<u64>(), 2 * PER_WRITER as u64);
        assert_eq!(store.latest_event_seq().unwrap(), 2 * PER_WRITER);
        let numbers: Vec<u64> = store.revisions("web").unwrap().iter().map(|r| r.number).collect();
        assert_eq!(numbers, (1..=20).rev().collect::<Vec<u64>>());
    });
}
