//! Maintenance runs only inside its window, never during a rollout or while a replica lags.

use std::time::Duration;

use steward_database::maintenance::*;
use steward_database::replication::{Lag, Verdict};
use steward_database::spec::Vacuum;
use steward_schedule::cron::CronSchedule;
use time::macros::datetime;

fn tables() -> Vec<TableStats> {
    vec![
        TableStats {
            name: "public.vehicles_vehicule".into(),
            live: 10_000,
            dead: 5_000,
        },
        TableStats {
            name: "public.payments".into(),
            live: 100_000,
            dead: 20_000,
        },
        // Over the ratio but under minDeadTuples.
        TableStats {
            name: "public.tiny".into(),
            live: 10,
            dead: 90,
        },
        // Over minDeadTuples but under the ratio.
        TableStats {
            name: "public.huge".into(),
            live: 10_000_000,
            dead: 50_000,
        },
    ]
}

fn healthy(name: &str) -> Lag {
    Lag {
        replica: name.into(),
        verdict: Verdict::Healthy,
        bytes: Some(0),
        seconds: Some(0.0),
        message: "streaming".into(),
    }
}

const VACUUM: Vacuum = Vacuum {
    dead_tuple_ratio: 0.10,
    min_dead_tuples: 1000,
};

fn input<'a>(now: time::OffsetDateTime, cal: &'a CronSchedule, t: &'a [TableStats], lags: &'a [Lag]) -> Input<'a> {
    Input {
        now,
        window: cal,
        window_duration: Duration::from_secs(3600),
        vacuum: &VACUUM,
        tables: Ok(t),
        replicas: lags,
        rollout_active: false,
    }
}

#[test]
fn inside_the_window_the_worst_table_over_both_thresholds_goes_first() {
    // 06:00 Indian/Antananarivo is 03:00 UTC.
    let cal = CronSchedule::parse("0 6 * * *", "Indian/Antananarivo").unwrap();
    let t = tables();
    let lags = [healthy("replica1")];
    match next_step(&input(datetime!(2026-12-02 03:20 UTC), &cal, &t, &lags)) {
        Step::Vacuum { table, window_closes } => {
            assert_eq!(table.name, "public.payments");
            assert_eq!(window_closes, datetime!(2026-12-02 04:00 UTC));
        }
        other => panic!("{other:?}"),
    }
    let cleaned: Vec<TableStats> = t
        .iter()
        .filter(|x| !x.name.ends_with("payments") && !x.name.ends_with("vehicule"))
        .cloned()
        .collect();
    assert_eq!(
        next_step(&input(datetime!(2026-12-02 03:30 UTC), &cal, &cleaned, &lags)),
        Step::Done
    );
}

#[test]
fn outside_the_window_nothing_runs_and_the_next_opening_is_said() {
    let cal = CronSchedule::parse("0 6 * * *", "Indian/Antananarivo").unwrap();
    let t = tables();
    let lags = [healthy("replica1")];
    // 04:00 UTC exactly: the window just closed.
    assert_eq!(
        next_step(&input(datetime!(2026-12-02 04:00 UTC), &cal, &t, &lags)),
        Step::Held(Hold::WindowClosed {
            next: Some(datetime!(2026-12-03 03:00 UTC))
        })
    );
}

#[test]
fn a_rollout_a_lagging_replica_or_an_unknown_primary_hold_it() {
    let cal = CronSchedule::parse("0 6 * * *", "Indian/Antananarivo").unwrap();
    let t = tables();
    let now = datetime!(2026-12-02 03:20 UTC);
    let lags = [healthy("replica1")];
    let mut i = input(now, &cal, &t, &lags);
    i.rollout_active = true;
    assert_eq!(next_step(&i), Step::Held(Hold::RolloutInProgress));

    let lagging = [Lag {
        verdict: Verdict::Lagging,
        message: "45.0 s behind".into(),
        ..healthy("replica1")
    }];
    let i = input(now, &cal, &t, &lagging);
    assert!(matches!(next_step(&i), Step::Held(Hold::ReplicationLagging { ref replica, .. }) if replica == "replica1"));

    let mut i = input(now, &cal, &t, &lags);
    i.tables = Err("connection refused".into());
    assert!(matches!(next_step(&i), Step::Held(Hold::PrimaryUnknown { .. })));
}
