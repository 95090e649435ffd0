//! PostgreSQL-only behaviour: several handles ("processes") on one database, schema migration,
//! reconnecting after a lost session, and leader election with fencing.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use steward_plan::status::{Condition, ConditionStatus, ConditionType, EventType, NewEvent, ResourceStatus};
use steward_store::leader::{Leadership, LEASE_DURATION, LOCK_KEY, RETRY_PERIOD, VALIDITY};
use steward_store::{EventFilter, Store, StoreError, POSTGRES_SCHEMA_VERSION};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use support::TestDb;

const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);
/// The bound for a standby to take over from a killed leader.
const TAKEOVER_LIMIT: StdDuration = StdDuration::from_secs(15);
const POLL: StdDuration = StdDuration::from_millis(20);

fn event(object: &str, message: &str) -> NewEvent {
    NewEvent {
        type_: EventType::Normal,
        reason: "Tick".to_string(),
        message: message.to_string(),
        object: object.to_string(),
    }
}

fn status(name: &str, at: OffsetDateTime) -> ResourceStatus {
    ResourceStatus {
        kind: "Service".to_string(),
        name: name.to_string(),
        conditions: vec![Condition {
            type_: ConditionType::Ready,
            status: ConditionStatus::True,
            reason: "Because".into(),
            message: "ready".into(),
            last_transition_time: at,
            observed_generation: 1,
        }],
        desired_replicas: Some(1),
        running_replicas: Some(1),
        image: None,
        observed_generation: 1,
        last_reconcile: at,
        applied_revision: None,
        attempted_revision: None,
        details: None,
    }
}

/// Polls `cond` every [`POLL`] until it holds or `limit` passes; returns how long it took.
fn wait_for(limit: StdDuration, mut cond: impl FnMut() -> bool) -> Option<StdDuration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        thread::sleep(POLL);
    }
    cond().then(|| start.elapsed())
}

/// Terminates every session of the test database whose application_name is `app`; returns
/// how many.
fn terminate(db: &TestDb, app: &str) -> i64 {
    db.client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1
               AND pid <> pg_backend_pid()",
            &[&app],
        )
        .unwrap()
        .get(0)
}

/// `steward run` writing while `steward status` / `steward events --follow` read through
/// another handle (another process in production).
#[test]
fn one_handle_writes_while_another_reads() {
    let Some(db) = TestDb::create("one_handle_writes_while_another_reads") else {
        return;
    };
    let writer = db.open();
    let reader = db.open();
    let done = Arc::new(AtomicBool::new(false));
    const N: i64 = 600;

    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N {
                let at = T0 + Duration::seconds(i);
                writer
                    .record_event(&event("Service/web", &format!("tick {}", i % 50)), at)
                    .unwrap();
                if i % 10 == 0 {
                    writer.put_status(&status(&format!("svc{}", i % 7), at)).unwrap();
                    writer.set_meta("generation", &i.to_string()).unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        // What a follower (`steward events --follow`) knows: each event's latest count.
        let mut followed = std::collections::BTreeMap::new();
        let (mut cursor, mut reads) = (0, 0u64);
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
            let (changed, next) = reader.events_changed_since(cursor).unwrap();
            assert!(next >= cursor);
            for e in changed {
                followed.insert(e.id, e.count);
            }
            cursor = next;
            reads += 1;
            // Read before this round's queries: once set, they saw every write.
            if finished {
                break;
            }
        }
        assert!(reads > 1);
        assert_eq!(cursor, N, "the follower reached the last change");
        let stored: std::collections::BTreeMap<i64, u64> = reader
            .events(&EventFilter::default())
            .unwrap()
            .iter()
            .map(|e| (e.id, e.count))
            .collect();
        assert_eq!(followed, stored, "the follower missed no insert and no fold");
    });
    let events = reader.events(&EventFilter::default()).unwrap();
    assert_eq!(events.len(), 50);
    assert_eq!(events.iter().map(|e| e.count).sum::<u64>(), N as u64);
    assert_eq!(reader.statuses().unwrap().len(), 7);
    assert_eq!(reader.get_meta("generation").unwrap().as_deref(), Some("590"));
}

#[test]
fn migration_creates_the_schema_once_and_rejects_newer() {
    let Some(db) = TestDb::create("migration_creates_the_schema_once_and_rejects_newer") else {
        return;
    };
    let mut client = db.client();
    let tables = |client: &mut postgres::Client| -> Vec<String> {
        client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert!(tables(&mut client).is_empty(), "starts empty");

    let store = db.open();
    assert!(store.is_postgres());
    assert_eq!(
        tables(&mut client),
        [
            "steward_backups",
            "steward_events",
            "steward_leader",
            "steward_meta",
            "steward_revisions",
            "steward_runs",
            "steward_schema",
            "steward_statuses"
        ]
    );
    store.set_meta("kept", "yes").unwrap();
    drop(store);

    // Reopening an existing database migrates nothing and keeps the data.
    let store = db.open();
    assert_eq!(store.get_meta("kept").unwrap().as_deref(), Some("yes"));
    drop(store);
    let versions: Vec<i64> = client
        .query("SELECT version FROM steward_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // One row per migration step, applied in order.
    assert_eq!(versions, (1..=POSTGRES_SCHEMA_VERSION).collect::<Vec<_>>());

    // A database migrated by a newer steward is refused, naming the database.
    client
        .execute(
            "INSERT INTO steward_schema (version) VALUES ($1)",
            &[&(POSTGRES_SCHEMA_VERSION + 1)],
        )
        .unwrap();
    match Store::open_url(&db.url) {
        Err(err @ StoreError::UnsupportedSchema { found, supported, .. }) => {
            assert_eq!(
                (found, supported),
                (POSTGRES_SCHEMA_VERSION + 1, POSTGRES_SCHEMA_VERSION)
            );
            assert!(err.to_string().contains(&db.name), "{err}");
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
}

/// Controllers started together on an empty database: one migrates, the others wait for it
/// and find the schema current.
#[test]
fn concurrent_first_opens_do_not_fail() {
    let Some(db) = TestDb::create("concurrent_first_opens_do_not_fail") else {
        return;
    };
    const OPENERS: usize = 6;
    let barrier = Barrier::new(OPENERS);
    thread::scope(|s| {
        let handles: Vec<_> = (0..OPENERS)
            .map(|i| {
                let (barrier, url) = (&barrier, &db.url);
                s.spawn(move || {
                    barrier.wait();
                    let store = Store::open_url(url).unwrap();
                    store.set_meta(&format!("opener{i}"), "ok").unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().expect("opener failed");
        }
    });
    let store = db.open();
    for i in 0..OPENERS {
        assert_eq!(store.get_meta(&format!("opener{i}")).unwrap().as_deref(), Some("ok"));
    }
}

/// A session cut under the store (server restart, failover, an admin's pg_terminate_backend)
/// costs no error: the next call reconnects, and a write that never reached COMMIT is run
/// again, exactly once.
#[test]
fn reconnects_after_the_session_is_lost() {
    let Some(db) = TestDb::create("reconnects_after_the_session_is_lost") else {
        return;
    };
    let store = db.open();
    store.set_meta("a", "1").unwrap();
    assert_eq!(terminate(&db, "steward"), 1);
    assert_eq!(store.get_meta("a").unwrap().as_deref(), Some("1"));

    store.record_event(&event("Service/web", "before"), T0).unwrap();
    assert_eq!(terminate(&db, "steward"), 1);
    let rec = store.record_event(&event("Service/web", "after"), T0).unwrap();
    assert_eq!(rec.count, 1);
    let events = store.events(&EventFilter::default()).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(store.latest_event_seq().unwrap(), 2);
}

#[test]
fn connection_errors_name_the_url_without_password() {
    // Nothing listens on port 1; the error must come back promptly and never show the
    // password.
    let start = Instant::now();
    let err = Store::open_url("postgres://steward:s3cret@127.0.0.1:1/steward?connect_timeout=1").unwrap_err();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(matches!(err, StoreError::PostgresConnect { attempts: 4, .. }), "{text}");
    assert!(text.contains("postgres://steward:***@127.0.0.1:1/steward"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(start.elapsed() < StdDuration::from_secs(20));
}

#[test]
fn sqlite_store_always_leads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_url(&dir.path().join("s.db").display().to_string()).unwrap();
    assert!(!store.is_postgres());
    let leadership = Leadership::start(&store, "host:1").unwrap();
    assert!(leadership.is_leader());
    assert_eq!(leadership.epoch(), 1);
    assert!(leadership.confirm());
}

fn holder_pid(db: &TestDb) -> i32 {
    db.client()
        .query_one("SELECT holder_pid FROM steward_leader WHERE id = 1", &[])
        .unwrap()
        .get(0)
}

/// Panics unless `l` leads without a break for `period` (renewals must keep up).
fn leads_steadily(l: &Leadership, period: StdDuration) {
    let lapse = wait_for(period, || !l.is_leader());
    assert!(lapse.is_none(), "{l:?} stopped leading after {lapse:?}");
}

/// Samples both sides every [`POLL`] until `done`; panics if both ever claim to lead.
fn never_both(
    a: &Leadership,
    b: &Leadership,
    limit: StdDuration,
    mut done: impl FnMut() -> bool,
) -> Option<StdDuration> {
    wait_for(limit, || {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders: {a:?} {b:?}");
        done()
    })
}

#[test]
fn exactly_one_leads_and_a_standby_takes_over_when_the_leader_session_dies() {
    let Some(db) = TestDb::create("exactly_one_leads_and_a_standby_takes_over_when_the_leader_session_dies") else {
        return;
    };
    let store_a = db.open();
    let store_b = db.open();
    let a = Leadership::start(&store_a, "host-a:1").unwrap();
    let b = Leadership::start(&store_b, "host-b:2").unwrap();
    // The first to start leads at once; the other stands by.
    assert!(a.is_leader(), "{a:?}");
    assert_eq!(a.epoch(), 1);
    assert!(never_both(&a, &b, RETRY_PERIOD * 2, || false).is_none());
    leads_steadily(&a, VALIDITY + RETRY_PERIOD);
    assert!(!b.is_leader());
    assert!(a.confirm());
    assert!(!b.confirm());
    // A standby serves reads from the same store.
    store_a.set_meta("written-by", "a").unwrap();
    assert_eq!(store_b.get_meta("written-by").unwrap().as_deref(), Some("a"));

    // Kill the leader's session, as if its process had died.
    let pid = holder_pid(&db);
    let killed = db
        .client()
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get::<_, bool>(0);
    assert!(killed);
    let taken =
        never_both(&a, &b, TAKEOVER_LIMIT, || b.is_leader()).expect("the standby did not take over within 15 s");
    eprintln!("failover after the leader's session was terminated: {taken:?}");
    leads_steadily(&b, VALIDITY + RETRY_PERIOD * 2);
    assert!(
        taken <= RETRY_PERIOD + VALIDITY + StdDuration::from_secs(1),
        "{taken:?}"
    );
    assert!(!a.is_leader());
    assert!(!a.confirm(), "a stale leader must fail the fencing check");
    assert!(b.confirm());
    assert!(b.epoch() > a.epoch(), "{} > {}", b.epoch(), a.epoch());
    let (holder, epoch): (String, i64) = {
        let row = db
            .client()
            .query_one("SELECT holder, epoch FROM steward_leader WHERE id = 1", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((holder.as_str(), epoch as u64), ("host-b:2", b.epoch()));

    // The old leader reconnects and stands by; it does not take leadership back.
    assert!(never_both(&a, &b, RETRY_PERIOD * 2, || false).is_none());
    assert!(b.is_leader() && !a.is_leader());
}

#[test]
fn a_leader_that_stops_hands_over_without_waiting() {
    let Some(db) = TestDb::create("a_leader_that_stops_hands_over_without_waiting") else {
        return;
    };
    let store = db.open();
    let a = Leadership::start(&store, "host-a:1").unwrap();
    let b = Leadership::start(&store, "host-b:2").unwrap();
    assert!(a.is_leader() && !b.is_leader());
    let epoch_a = a.epoch();
    drop(a);
    let taken = wait_for(TAKEOVER_LIMIT, || b.is_leader()).expect("no takeover");
    eprintln!("failover after the leader stepped down: {taken:?}");
    leads_steadily(&b, VALIDITY + RETRY_PERIOD * 2);
    assert!(taken <= RETRY_PERIOD + StdDuration::from_secs(1), "{taken:?}");
    assert!(b.epoch() > epoch_a);
}

/// A holder that keeps its session (and so the lock) but stops renewing, like a frozen
/// process, loses the lock once the lease has run out; a holder that renews is left alone.
#[test]
fn a_stuck_holder_is_replaced_after_the_lease() {
    let Some(db) = TestDb::create("a_stuck_holder_is_replaced_after_the_lease") else {
        return;
    };
    let store = db.open();
    let mut stuck = db.client();
    let locked: bool = stuck
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
        .unwrap()
        .get(0);
    assert!(locked);
    stuck
        .execute(
            "INSERT INTO steward_leader (id, epoch, holder, holder_pid, acquired_at, renewed_at)
             VALUES (1, 7, 'frozen:1', pg_backend_pid(), now(), now())",
            &[],
        )
        .unwrap();
    let b = Leadership::start(&store, "host-b:2").unwrap();
    // While the lease is fresh, the holder is respected.
    assert!(wait_for(RETRY_PERIOD * 2, || b.is_leader()).is_none());
    // Then it stops renewing: pretend its last renewal was longer ago than the lease.
    stuck
        .execute(
            "UPDATE steward_leader SET renewed_at = now() - make_interval(secs => $1)",
            &[&(LEASE_DURATION.as_secs_f64() + 1.0)],
        )
        .unwrap();
    let taken = wait_for(TAKEOVER_LIMIT, || b.is_leader()).expect("the stuck holder kept the lock");
    eprintln!("takeover from a holder whose lease expired: {taken:?}");
    leads_steadily(&b, VALIDITY + RETRY_PERIOD);
    assert_eq!(b.epoch(), 8);
    assert!(
        stuck.execute("SELECT 1", &[]).is_err(),
        "the stuck session was terminated"
    );
}

/// What a controller does before each Swarm write, with the write itself replaced by an entry
/// in a shared log. Leaders are killed one after another while three contenders keep trying;
/// a write may only ever follow writes of the same or an older epoch, and every kill hands
/// over to a new epoch.
#[test]
fn fenced_writes_never_interleave_across_failovers() {
    let Some(db) = TestDb::create("fenced_writes_never_interleave_across_failovers") else {
        return;
    };
    const KILLS: usize = 2;
    let log = std::sync::Mutex::new(Vec::<(u64, String)>::new());
    let stop = AtomicBool::new(false);
    let stores: Vec<Store> = (0..3).map(|_| db.open()).collect();
    let leaderships: Vec<Leadership> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| Leadership::start(s, &format!("host-{i}:1")).unwrap())
        .collect();

    thread::scope(|s| {
        for l in &leaderships {
            let (log, stop) = (&log, &stop);
            s.spawn(move || {
                let deadline = Instant::now() + TAKEOVER_LIMIT * (KILLS as u32 + 1);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    if l.is_leader() {
                        // Confirm and "write" as one step, so the log order is the write order.
                        let mut log = log.lock().unwrap();
                        if l.confirm() {
                            log.push((l.epoch(), l.holder().to_string()));
                        }
                    }
                    thread::sleep(StdDuration::from_millis(5));
                }
            });
        }
        let epoch_of_last_write = || log.lock().unwrap().last().map(|(e, _)| *e);
        for _ in 0..KILLS {
            let before = wait_for(TAKEOVER_LIMIT, || epoch_of_last_write().is_some())
                .and_then(|_| epoch_of_last_write())
                .expect("nobody leads");
            let pid = holder_pid(&db);
            db.client().execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
            let took = wait_for(TAKEOVER_LIMIT, || epoch_of_last_write() > Some(before))
                .expect("no write by a new leader within 15 s");
            eprintln!("fenced failover: first write by the new leader {took:?} after the kill");
        }
        stop.store(true, Ordering::SeqCst);
    });

    let log = log.into_inner().unwrap();
    assert!(
        log.windows(2).all(|w| w[0].0 <= w[1].0),
        "a stale leader wrote after a newer one"
    );
    let mut holders_by_epoch = std::collections::BTreeMap::new();
    for (epoch, holder) in &log {
        let h = holders_by_epoch.entry(*epoch).or_insert(holder.clone());
        assert_eq!(h, holder, "two holders wrote at epoch {epoch}");
    }
    assert!(holders_by_epoch.len() > KILLS, "{holders_by_epoch:?}");
}

/// The store and the election are called straight from async code: no call may need, or
/// conflict with, the caller's tokio runtime, whichever flavour it is. (Only the test's own
/// database set-up stays outside the runtime.)
#[test]
fn usable_from_async_code_on_either_runtime_flavour() {
    let Some(db) = TestDb::create("usable_from_async_code_on_either_runtime_flavour") else {
        return;
    };
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    current.block_on(from_async(&db, "current-thread"));
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    multi.block_on(from_async(&db, "multi-thread"));
}

async fn from_async(db: &TestDb, flavour: &str) {
    let store = Arc::new(db.open());
    let rec = store.record_event(&event("Service/web", flavour), T0).unwrap();
    assert_eq!(rec.count, 1);
    let leadership = Leadership::start(&store, flavour).unwrap();
    assert!(leadership.is_leader(), "{leadership:?}");
    assert!(leadership.confirm());
    let spawned = {
        let store = store.clone();
        let flavour = flavour.to_string();
        tokio::spawn(async move {
            let filter = EventFilter {
                object: Some("Service/web".into()),
                ..Default::default()
            };
            store
                .events(&filter)
                .unwrap()
                .iter()
                .filter(|e| e.message == flavour)
                .count()
        })
    };
    assert_eq!(spawned.await.unwrap(), 1);
    // Dropped inside the runtime too: stepping down and closing the sessions must not panic.
    drop(leadership);
    drop(store);
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<Leadership>();
}
