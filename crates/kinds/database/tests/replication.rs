//! The replication assessment against the cases the popular exporters get wrong.

use steward_database::replication::*;

const GB: u64 = 1 << 30;

fn primary(current: Lsn, senders: Vec<SenderRow>) -> PrimaryObs {
    PrimaryObs {
        in_recovery: false,
        current_lsn: current,
        senders,
    }
}

fn streaming(name: &str, replay: Lsn, lag: Option<f64>) -> SenderRow {
    SenderRow {
        name: name.into(),
        state: "streaming".into(),
        replay_lsn: Some(replay),
        replay_lag_secs: lag,
    }
}

fn replica(receive: Lsn, replay: Lsn, age: Option<f64>) -> ReplicaObs {
    ReplicaObs {
        name: "replica1".into(),
        in_recovery: true,
        receive_lsn: Some(receive),
        replay_lsn: Some(replay),
        last_replay_age_secs: age,
        replay_paused: false,
    }
}

#[test]
fn lsn_text_parses_as_postgres_writes_it() {
    assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
    assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
    assert_eq!(parse_lsn("nonsense"), None);
    assert_eq!(parse_lsn("1/FFFFFFFFF"), None);
}

#[test]
fn an_idle_primary_is_not_lagging_however_old_the_last_transaction() {
    // Nothing written for an hour: the last replayed transaction is an hour old, nothing is behind.
    let p = primary(5 * GB, vec![streaming("replica1", 5 * GB, None)]);
    let lag = assess(&p, "replica1", Some(&replica(5 * GB, 5 * GB, Some(3600.0))), 30.0);
    assert_eq!(lag.verdict, Verdict::Healthy, "{}", lag.message);
    assert_eq!(lag.seconds, Some(0.0));
    assert_eq!(lag.bytes, Some(0));
}

#[test]
fn a_disconnected_replica_with_equal_receive_and_replay_is_not_zero_seconds_behind() {
    // The primary moved on by 1 GiB; the replica received nothing since, so its own receive and
    // replay positions agree. It is not "0 s behind": it is disconnected, 1 GiB behind.
    let p = primary(6 * GB, vec![]);
    let lag = assess(&p, "replica1", Some(&replica(5 * GB, 5 * GB, Some(10.0))), 30.0);
    assert_eq!(lag.verdict, Verdict::Disconnected, "{}", lag.message);
    assert_eq!(lag.seconds, None);
    assert_eq!(lag.bytes, Some(GB));
    assert!(!lag.is_healthy());
}

#[test]
fn streaming_within_and_over_the_limit() {
    let p = primary(5 * GB + 4096, vec![streaming("replica1", 5 * GB, Some(2.5))]);
    let ok = assess(&p, "replica1", Some(&replica(5 * GB + 4096, 5 * GB, Some(2.5))), 30.0);
    assert_eq!(
        (ok.verdict, ok.bytes, ok.seconds),
        (Verdict::Healthy, Some(4096), Some(2.5))
    );
    let p = primary(6 * GB, vec![streaming("replica1", 5 * GB, Some(45.0))]);
    let slow = assess(&p, "replica1", Some(&replica(6 * GB, 5 * GB, Some(45.0))), 30.0);
    assert_eq!(slow.verdict, Verdict::Lagging, "{}", slow.message);
    assert!(
        slow.message.contains("45.0 s") && slow.message.contains("limit 30 s"),
        "{}",
        slow.message
    );
}

#[test]
fn paused_replay_with_writes_pending_holds_the_gate() {
    let p = primary(5 * GB + 8192, vec![streaming("replica1", 5 * GB, Some(1.0))]);
    let mut r = replica(5 * GB + 8192, 5 * GB, Some(1.0));
    r.replay_paused = true;
    let lag = assess(&p, "replica1", Some(&r), 30.0);
    assert_eq!(lag.verdict, Verdict::ReplayPaused);
    assert!(!lag.is_healthy());
}

#[test]
fn a_writable_replica_and_a_primary_in_recovery_are_errors_not_guesses() {
    let p = primary(5 * GB, vec![streaming("replica1", 5 * GB, None)]);
    let mut r = replica(5 * GB, 5 * GB, None);
    r.in_recovery = false;
    assert_eq!(assess(&p, "replica1", Some(&r), 30.0).verdict, Verdict::NotInRecovery);
    let mut p2 = p.clone();
    p2.in_recovery = true;
    assert_eq!(
        assess(&p2, "replica1", Some(&replica(5 * GB, 5 * GB, None)), 30.0).verdict,
        Verdict::PrimaryInRecovery
    );
}

#[test]
fn an_unreadable_replica_is_unknown_and_never_healthy() {
    let p = primary(5 * GB + 100, vec![streaming("replica1", 5 * GB, None)]);
    let lag = assess(&p, "replica1", None, 30.0);
    assert_eq!(lag.verdict, Verdict::Unknown);
    assert_eq!(lag.bytes, Some(100), "the primary's own view is kept");
    assert!(!lag.is_healthy());
}

#[test]
fn behind_in_bytes_without_a_lag_figure_uses_the_replay_age() {
    // Bytes behind, the primary's replay_lag is NULL (just reconnected): the age decides.
    let p = primary(5 * GB + 100, vec![streaming("replica1", 5 * GB, None)]);
    let lag = assess(&p, "replica1", Some(&replica(5 * GB + 100, 5 * GB, Some(120.0))), 30.0);
    assert_eq!(lag.verdict, Verdict::Lagging);
    assert_eq!(lag.seconds, Some(120.0));
}

#[test]
fn no_replay_position_at_either_end_is_unknown_not_healthy() {
    let p = primary(
        5 * GB,
        vec![SenderRow {
            name: "replica1".into(),
            state: "streaming".into(),
            replay_lsn: None,
            replay_lag_secs: None,
        }],
    );
    let mut r = replica(5 * GB, 5 * GB, None);
    r.replay_lsn = None;
    let lag = assess(&p, "replica1", Some(&r), 30.0);
    assert_eq!(lag.verdict, Verdict::Unknown);
    assert!(!lag.is_healthy());
}

#[test]
fn behind_in_bytes_with_no_time_figure_at_all_is_lagging() {
    // Bytes behind, no replay_lag, no replayed transaction yet: not provably within the limit.
    let p = primary(5 * GB + 100, vec![streaming("replica1", 5 * GB, None)]);
    let lag = assess(&p, "replica1", Some(&replica(5 * GB + 100, 5 * GB, None)), 30.0);
    assert_eq!(lag.verdict, Verdict::Lagging);
    assert_eq!(lag.seconds, None);
}
