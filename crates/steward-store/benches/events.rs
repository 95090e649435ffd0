//! Store timings with a 100,000-event table: `cargo bench -p steward-store --bench events`.
//! Against PostgreSQL: `STEWARD_BENCH_STORE=postgres://…/scratch cargo bench …` (an empty
//! database of its own: the events stay there).

use steward_plan::status::{EventType, NewEvent};
use steward_store::{EventFilter, Store};
use time::{macros::datetime, Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-11-01 00:00 UTC);

fn event(object: &str, reason: &str, message: &str) -> NewEvent {
    NewEvent {
        type_: EventType::Normal,
        reason: reason.to_string(),
        message: message.to_string(),
        object: object.to_string(),
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = match std::env::var("STEWARD_BENCH_STORE") {
        Ok(url) => Store::open_url(&url).unwrap(),
        Err(_) => Store::open(&dir.path().join("bench.db")).unwrap(),
    };
    let start = std::time::Instant::now();
    for i in 0..100_000i64 {
        let ev = event(&format!("Service/s{}", i % 100), "Tick", &format!("tick {i}"));
        store.record_event(&ev, T0 + Duration::milliseconds(i)).unwrap();
    }
    let insert = start.elapsed();
    let start = std::time::Instant::now();
    for i in 0..1000i64 {
        let ev = event(
            &format!("Service/s{}", i % 100),
            "Tick",
            &format!("tick {}", 99_000 + i),
        );
        store
            .record_event(&ev, T0 + Duration::seconds(100) + Duration::milliseconds(i))
            .unwrap();
    }
    let fold = start.elapsed();
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        let got = store
            .events(&EventFilter {
                limit: Some(50),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.len(), 50);
    }
    let newest = start.elapsed();
    let start = std::time::Instant::now();
    for i in 0..1000 {
        let got = store
            .events(&EventFilter {
                object: Some(format!("Service/s{}", i % 100)),
                limit: Some(50),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.len(), 50);
    }
    let newest_object = start.elapsed();
    println!(
        "100k inserts: {insert:?} ({:?}/event); 1000 folds: {fold:?}; \
         1000x newest 50: {newest:?}; 1000x newest 50 of one object: {newest_object:?}",
        insert / 100_000
    );
}
