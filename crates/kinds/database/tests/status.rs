//! The Database's conditions, its deploy gate and which tasks are due, from fixture
//! observations: what an operator would check in `steward describe Database/NAME`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use steward_core::status::{ConditionStatus, ConditionType};
use steward_database::backup::{Backup, BackupTrigger, RestoreResult};
use steward_database::observe::*;
use steward_database::plan::{due, Input as PlanInput, NotNow};
use steward_database::replication::{PrimaryObs, ReplicaObs, SenderRow};
use steward_database::spec::{DatabaseDocument, DatabaseEntry};
use steward_database::status::{conditions, gate_hold, Input};
use steward_database::{DatabaseState, Task};
use steward_schedule::run::Trigger;
use steward_spec::{typed, DocCtx, Source};
use time::macros::datetime;
use time::OffsetDateTime;

const DOC: &str = r#"apiVersion: steward.io/v1alpha1
kind: Database
metadata: {name: tc-db}
spec:
  primary: postgres://steward@primary:5432/tc
  replicas:
    - postgres://steward@replica1:5432/tc
  thresholds: {replicationLag: 30s, connections: 150, longTransaction: 5m}
  maintenance:
    window: {schedule: "0 6 * * *", duration: 1h}
    vacuum: {deadTupleRatio: 0.10, minDeadTuples: 1000}
    reindex: {schedule: "0 3 * * 0"}
  backup:
    schedule: "0 2 * * *"
    directory: /var/backups/tc
    restoreTest:
      schedule: "0 1 * * 0"
"#;

fn db() -> DatabaseState {
    let ctx = DocCtx {
        file: Path::new("db.yaml"),
        line_offset: 0,
    };
    let d: DatabaseDocument = typed(&ctx, DOC).unwrap();
    let entry = DatabaseEntry {
        metadata: d.metadata,
        spec: d.spec,
        source: Source {
            file: "db.yaml".into(),
            line: 3,
            line_offset: 0,
        },
    };
    DatabaseState::from_entry(&entry, None)
}

fn server(in_recovery: bool) -> ServerObs {
    ServerObs {
        version: "15.10".into(),
        in_recovery,
        connections: [("active".to_string(), 3), ("idle".to_string(), 20)].into(),
        longest_transaction_seconds: Some(2.0),
        longest_transaction: Some("app@web (pid 1): active".into()),
        size_bytes: 1 << 30,
    }
}

/// A primary streaming to `replica1`, `behind` bytes behind, replay lag `lag` s.
fn obs(behind: u64, lag: Option<f64>, paused: bool) -> Observation {
    let current = 1_000_000;
    Observation {
        at: datetime!(2026-12-02 04:00 UTC),
        primary_server: "primary:5432".into(),
        primary: Ok(PrimaryRead {
            server: server(false),
            replication: PrimaryObs {
                in_recovery: false,
                current_lsn: current,
                senders: vec![SenderRow {
                    name: "replica1".into(),
                    state: "streaming".into(),
                    replay_lsn: Some(current - behind),
                    replay_lag_secs: lag,
                }],
            },
            slots: vec![],
        }),
        replicas: vec![ReplicaRead {
            server: "replica1:5432".into(),
            obs: Ok(ReplicaFacts {
                server: server(true),
                replay: ReplicaObs {
                    name: "replica1".into(),
                    in_recovery: true,
                    receive_lsn: Some(current),
                    replay_lsn: Some(current - behind),
                    last_replay_age_secs: Some(3600.0),
                    replay_paused: paused,
                },
                slot: None,
            }),
        }],
        stats: None,
    }
}

fn backup(id: i64, taken_at: OffsetDateTime, restore: Option<bool>) -> Backup {
    Backup {
        id,
        database: "tc-db".into(),
        file: format!("/var/backups/tc/tc-db-{id}.dump"),
        taken_at,
        local_date: taken_at.date(),
        size_bytes: 1000,
        sha256: "ab".repeat(32),
        duration_seconds: 1.0,
        trigger: BackupTrigger::Schedule,
        restore: restore.map(|passed| RestoreResult {
            at: taken_at + time::Duration::minutes(10),
            passed,
            restore_seconds: 4.2,
            checks: vec![],
            target: "throwaway local server".into(),
            message: if passed {
                "passed".into()
            } else {
                "pg_restore: error: corrupt".into()
            },
        }),
        archived_to: None,
        deleted_at: None,
    }
}

fn cond(
    d: &DatabaseState,
    o: &Observation,
    backups: &[Backup],
    now: OffsetDateTime,
    t: ConditionType,
) -> (ConditionStatus, &'static str, String) {
    let all = conditions(&Input {
        db: d,
        obs: o,
        backups: Ok(backups),
        now,
    });
    let (_, s, r, m) = all.into_iter().find(|c| c.0 == t).expect("condition reported");
    (s, r, m)
}

const NOW: OffsetDateTime = datetime!(2026-12-02 04:00 UTC);

#[test]
fn an_idle_caught_up_replica_is_healthy_and_ready_for_failover() {
    let d = db();
    // Caught up an hour after the last transaction: an idle primary is not "lagging".
    let o = obs(0, None, false);
    let (s, r, _) = cond(&d, &o, &[], NOW, ConditionType::ReplicationHealthy);
    assert_eq!((s, r), (ConditionStatus::True, "Streaming"));
    let (s, _, m) = cond(&d, &o, &[], NOW, ConditionType::FailoverReady);
    assert_eq!(s, ConditionStatus::True, "{m}");
    assert!(m.contains("human decision"), "{m}");
    let (s, r, m) = cond(&d, &o, &[], NOW, ConditionType::Ready);
    assert_eq!((s, r), (ConditionStatus::True, "PrimaryWritable"), "{m}");
    assert!(gate_hold("tc-db", Some(&o), std::time::Duration::from_secs(30)).is_none());
}

#[test]
fn paused_replay_closes_the_gate_with_the_measured_lag() {
    let d = db();
    let o = obs(50_000, Some(42.0), true);
    let (s, r, m) = cond(&d, &o, &[], NOW, ConditionType::ReplicationHealthy);
    assert_eq!((s, r), (ConditionStatus::False, "ReplayPaused"), "{m}");
    let why = gate_hold("tc-db", Some(&o), std::time::Duration::from_secs(30)).expect("held");
    assert!(
        why.contains("Database/tc-db") && why.contains("42.0 s") && why.contains("50000 bytes"),
        "{why}"
    );
    let (s, _, _) = cond(&d, &o, &[], NOW, ConditionType::FailoverReady);
    assert_eq!(s, ConditionStatus::False);
}

#[test]
fn a_lag_within_the_gate_opens_it_and_one_over_holds_it() {
    let o = obs(10_000, Some(12.0), false);
    assert!(gate_hold("tc-db", Some(&o), std::time::Duration::from_secs(30)).is_none());
    let why = gate_hold("tc-db", Some(&o), std::time::Duration::from_secs(10)).expect("over 10 s");
    assert!(why.contains("over 10s"), "{why}");
}

#[test]
fn an_unreachable_primary_is_unknown_and_holds_the_gate_and_every_task() {
    let d = db();
    let mut o = obs(0, None, false);
    o.primary = Err("connection refused".into());
    let (s, r, _) = cond(&d, &o, &[], NOW, ConditionType::Ready);
    assert_eq!((s, r), (ConditionStatus::Unknown, "PrimaryUnreachable"));
    let (s, _, _) = cond(&d, &o, &[], NOW, ConditionType::ReplicationHealthy);
    assert_eq!(s, ConditionStatus::Unknown);
    assert!(gate_hold("tc-db", Some(&o), std::time::Duration::from_secs(30))
        .unwrap()
        .contains("unknown"));
    // 02:05 local (UTC): the backup instant is due, and is not started.
    let now = datetime!(2026-12-02 02:05 UTC);
    let (start, held) = due(&PlanInput {
        db: &d,
        obs: &o,
        now,
        started: now,
        rollout_active: false,
        running: &BTreeSet::new(),
        has_backup: true,
        has_verified: true,
        claimed: &BTreeMap::new(),
    });
    assert!(start.is_empty(), "{start:?}");
    assert!(held.contains(&(Task::Backup, NotNow::PrimaryUnknown)), "{held:?}");
    // Never observed: the gate holds too.
    assert!(gate_hold("tc-db", None, std::time::Duration::from_secs(30)).is_some());
}

#[test]
fn a_writable_replica_and_a_primary_in_recovery_are_errors_not_guesses() {
    let d = db();
    let mut o = obs(0, None, false);
    if let Ok(f) = &mut o.replicas[0].obs {
        f.replay.in_recovery = false;
    }
    let (s, r, _) = cond(&d, &o, &[], NOW, ConditionType::ReplicationHealthy);
    assert_eq!((s, r), (ConditionStatus::False, "ReplicaWritable"));
    let mut o = obs(0, None, false);
    if let Ok(p) = &mut o.primary {
        p.server.in_recovery = true;
    }
    let (s, r, _) = cond(&d, &o, &[], NOW, ConditionType::Ready);
    assert_eq!((s, r), (ConditionStatus::False, "PrimaryInRecovery"));
}

#[test]
fn backup_healthy_needs_a_recent_backup_and_a_passed_restore_test() {
    let d = db();
    let o = obs(0, None, false);
    let (s, r, _) = cond(&d, &o, &[], NOW, ConditionType::BackupHealthy);
    assert_eq!((s, r), (ConditionStatus::False, "NoBackup"));
    let fresh = datetime!(2026-12-02 02:00 UTC);
    let (s, r, _) = cond(&d, &o, &[backup(1, fresh, None)], NOW, ConditionType::BackupHealthy);
    assert_eq!((s, r), (ConditionStatus::False, "NeverVerified"));
    let (s, r, m) = cond(
        &d,
        &o,
        &[backup(1, fresh, Some(true))],
        NOW,
        ConditionType::BackupHealthy,
    );
    assert_eq!((s, r), (ConditionStatus::True, "BackupVerified"), "{m}");
    assert!(m.contains("4.2s"), "the restore time is reported: {m}");
    let (s, r, m) = cond(
        &d,
        &o,
        &[backup(1, fresh, Some(false))],
        NOW,
        ConditionType::BackupHealthy,
    );
    assert_eq!((s, r), (ConditionStatus::False, "RestoreTestFailed"));
    assert!(m.contains("corrupt"), "{m}");
    // Daily backups: 30 h old is over the period (24 h) plus its margin (6 h).
    let old = NOW - time::Duration::hours(31);
    let (s, r, _) = cond(&d, &o, &[backup(1, old, Some(true))], NOW, ConditionType::BackupHealthy);
    assert_eq!((s, r), (ConditionStatus::False, "BackupTooOld"));
    let (s, _, _) = cond(
        &d,
        &o,
        &[backup(1, NOW - time::Duration::hours(29), Some(true))],
        NOW,
        ConditionType::BackupHealthy,
    );
    assert_eq!(s, ConditionStatus::True);
    let unreadable = conditions(&Input {
        db: &d,
        obs: &o,
        backups: Err("database is locked".into()),
        now: NOW,
    });
    assert!(unreadable
        .iter()
        .any(|c| c.0 == ConditionType::BackupHealthy && c.1 == ConditionStatus::Unknown));
}

fn with_bloat(mut o: Observation) -> Observation {
    let table = |name: &str, live, dead| TableHealth {
        name: name.into(),
        total_bytes: 1 << 20,
        live,
        dead,
        last_vacuum: None,
        last_autovacuum: None,
        last_analyze: None,
        last_autoanalyze: None,
    };
    let tables = vec![table("public.payments", 10_000, 5_000), table("public.ok", 10_000, 10)];
    o.stats = Some(SlowStats {
        at: NOW,
        statements: Err("pg_stat_statements unavailable".into()),
        largest: tables.clone(),
        tables,
    });
    o
}

#[test]
fn vacuum_is_due_only_in_the_window_and_never_during_a_rollout_or_lag() {
    let d = db();
    let o = with_bloat(obs(0, None, false));
    let (s, r, m) = cond(&d, &o, &[], NOW, ConditionType::MaintenanceDue);
    assert_eq!((s, r), (ConditionStatus::True, "VacuumDue"));
    assert!(m.contains("public.payments") && !m.contains("public.ok"), "{m}");
    let input = |now, rollout_active, o: &Observation| {
        due(&PlanInput {
            db: &d,
            obs: o,
            now,
            started: datetime!(2026-12-01 00:00 UTC),
            rollout_active,
            running: &BTreeSet::new(),
            has_backup: true,
            has_verified: true,
            claimed: &BTreeMap::new(),
        })
    };
    let in_window = datetime!(2026-12-02 06:20 UTC);
    let (start, _) = input(in_window, false, &o);
    let v = start
        .iter()
        .find(|d| d.task == Task::Vacuum)
        .expect("vacuum due in the window");
    assert_eq!(v.at, datetime!(2026-12-02 06:00 UTC));
    assert_eq!(v.window_closes, Some(datetime!(2026-12-02 07:00 UTC)));
    let (start, held) = input(in_window, true, &o);
    assert!(start.iter().all(|d| d.task != Task::Vacuum));
    assert!(held.contains(&(Task::Vacuum, NotNow::RolloutInProgress)));
    let lagging = with_bloat(obs(50_000, Some(60.0), false));
    let (start, held) = input(in_window, false, &lagging);
    assert!(start.iter().all(|d| d.task != Task::Vacuum));
    assert!(held
        .iter()
        .any(|h| matches!(h, (Task::Vacuum, NotNow::ReplicationLagging { .. }))));
    // 07:30: the window closed at 07:00; nothing starts until the next one.
    let (start, _) = input(datetime!(2026-12-02 07:30 UTC), false, &o);
    assert!(start.iter().all(|d| d.task != Task::Vacuum), "{start:?}");
}

#[test]
fn an_instant_missed_before_the_controller_started_is_a_catch_up_within_the_deadline() {
    let d = db();
    let o = obs(0, None, false);
    let (start, _) = due(&PlanInput {
        db: &d,
        obs: &o,
        now: datetime!(2026-12-02 02:40 UTC),
        started: datetime!(2026-12-02 02:30 UTC),
        rollout_active: false,
        running: &BTreeSet::new(),
        has_backup: true,
        has_verified: true,
        claimed: &BTreeMap::new(),
    });
    let b = start.iter().find(|d| d.task == Task::Backup).expect("backup due");
    assert_eq!((b.at, b.trigger), (datetime!(2026-12-02 02:00 UTC), Trigger::CatchUp));
    // Past the starting deadline (1 h): not caught up.
    let (start, _) = due(&PlanInput {
        db: &d,
        obs: &o,
        now: datetime!(2026-12-02 03:30 UTC),
        started: datetime!(2026-12-02 03:00 UTC),
        rollout_active: false,
        running: &BTreeSet::new(),
        has_backup: true,
        has_verified: true,
        claimed: &BTreeMap::new(),
    });
    assert!(start.iter().all(|d| d.task != Task::Backup), "{start:?}");
}

#[test]
fn a_restore_test_waits_for_a_backup_and_the_archive_for_a_verified_one() {
    let d = db();
    let o = obs(0, None, false);
    // Sunday 01:10: the restore test's instant is due.
    let now = datetime!(2026-12-06 01:10 UTC);
    let run = |has_backup, has_verified| {
        due(&PlanInput {
            db: &d,
            obs: &o,
            now,
            started: now,
            rollout_active: false,
            running: &BTreeSet::new(),
            has_backup,
            has_verified,
            claimed: &BTreeMap::new(),
        })
    };
    let (start, held) = run(false, false);
    assert!(start.iter().all(|x| x.task != Task::RestoreTest));
    assert!(held.contains(&(Task::RestoreTest, NotNow::NothingToRestore)));
    let (start, _) = run(true, false);
    assert!(start.iter().any(|x| x.task == Task::RestoreTest));
}

#[test]
fn an_instant_already_claimed_is_neither_started_again_nor_reported_held() {
    let d = db();
    let now = datetime!(2026-12-02 02:05 UTC);
    let at = datetime!(2026-12-02 02:00 UTC);
    let claimed = BTreeMap::from([(Task::Backup, at)]);
    let plan = |o: &Observation, claimed: &BTreeMap<Task, OffsetDateTime>| {
        due(&PlanInput {
            db: &d,
            obs: o,
            now,
            started: now,
            rollout_active: false,
            running: &BTreeSet::new(),
            has_backup: true,
            has_verified: true,
            claimed,
        })
    };
    // Readable primary: the 02:00 backup starts unless it was claimed.
    let up = obs(0, None, false);
    let (start, _) = plan(&up, &BTreeMap::new());
    assert!(start.iter().any(|x| x.task == Task::Backup && x.at == at), "{start:?}");
    let (start, held) = plan(&up, &claimed);
    assert!(start.iter().all(|x| x.task != Task::Backup), "{start:?}");
    assert!(held.iter().all(|(t, _)| *t != Task::Backup), "{held:?}");
    // The primary lost after the 02:00 backup ran: nothing is held that is not due.
    let mut down = obs(0, None, false);
    down.primary = Err("connection refused".into());
    let (_, held) = plan(&down, &claimed);
    assert!(held.iter().all(|(t, _)| *t != Task::Backup), "{held:?}");
    let (_, held) = plan(&down, &BTreeMap::new());
    assert!(held.contains(&(Task::Backup, NotNow::PrimaryUnknown)), "{held:?}");
}
