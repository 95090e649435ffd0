//! Retention over a faked calendar keeps exactly the expected backups.

use steward_database::retention::*;
use steward_database::spec::Retention;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// One backup a day at 02:00 for `days` days ending on `last`.
fn nightly(last: OffsetDateTime, days: i64) -> Vec<BackupRecord> {
    (0..days)
        .map(|i| {
            let t = last - Duration::days(days - 1 - i);
            BackupRecord {
                id: i as u64 + 1,
                file: format!("db-{}.dump", t.date()),
                taken_at: t,
                local_date: t.date(),
                verified: false,
                pre_deploy: false,
            }
        })
        .collect()
}

fn kept_dates(backups: &[BackupRecord], d: &Decision) -> Vec<String> {
    let mut v: Vec<String> = backups
        .iter()
        .filter(|b| d.keep.contains_key(&b.id))
        .map(|b| b.local_date.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_year_of_nightly_backups_keeps_7_daily_4_weekly_12_monthly() {
    let last = datetime!(2026-12-01 02:00 UTC);
    let backups = nightly(last, 400);
    let d = decide(&backups, &Retention::default());
    let kept = kept_dates(&backups, &d);
    // 7 days: Nov 25 .. Dec 1. Weeks (ISO, newest backup of each): Dec 1 (week 49, Tuesday),
    // Nov 29, Nov 22, Nov 15 (Sundays end ISO weeks). Months: the newest of each of the last 12
    // months: Dec 1, Nov 30, Oct 31, ..., Jan 31 2026.
    let mut expected: Vec<String> = (0..7).map(|i| (last.date() - Duration::days(i)).to_string()).collect();
    expected.extend(["2026-11-22", "2026-11-15"].map(String::from));
    expected.extend(
        [
            "2026-11-30",
            "2026-10-31",
            "2026-09-30",
            "2026-08-31",
            "2026-07-31",
            "2026-06-30",
            "2026-05-31",
            "2026-04-30",
            "2026-03-31",
            "2026-02-28",
            "2026-01-31",
        ]
        .map(String::from),
    );
    expected.sort();
    expected.dedup();
    assert_eq!(kept, expected);
    assert_eq!(d.keep.len() + d.delete.len(), 400);
    assert!(d.delete.iter().all(|id| !d.keep.contains_key(id)));
}

#[test]
fn the_newest_verified_backup_is_never_deleted() {
    let last = datetime!(2026-12-01 02:00 UTC);
    let mut backups = nightly(last, 60);
    // Only a backup from 50 days ago passed its restore test.
    backups[10].verified = true;
    let policy = Retention {
        daily: 2,
        weekly: 0,
        monthly: 0,
    };
    let d = decide(&backups, &policy);
    assert_eq!(d.keep.len(), 3);
    assert_eq!(
        d.keep
            .get(&backups[10].id)
            .map(|w| w.iter().copied().collect::<Vec<_>>()),
        Some(vec![KeptAs::NewestVerified])
    );
}

#[test]
fn two_backups_in_one_day_keep_the_newest_as_that_day_s() {
    let morning = datetime!(2026-12-01 02:00 UTC);
    let mut backups = nightly(morning, 1);
    backups.push(BackupRecord {
        id: 99,
        file: "db-before-deploy.dump".into(),
        taken_at: morning + Duration::hours(8),
        local_date: morning.date(),
        verified: false,
        pre_deploy: false,
    });
    let d = decide(
        &backups,
        &Retention {
            daily: 1,
            weekly: 0,
            monthly: 0,
        },
    );
    assert_eq!(d.keep.keys().copied().collect::<Vec<_>>(), vec![99]);
    assert_eq!(d.delete, vec![1]);
}

#[test]
fn nothing_to_decide_on_an_empty_list() {
    assert_eq!(decide(&[], &Retention::default()), Decision::default());
}

#[test]
fn the_newest_backup_before_a_deploy_outlives_the_counts() {
    // A deploy at 10:00 took its backup; the nightly ones went on for ten days after it.
    let last = datetime!(2026-12-11 02:00 UTC);
    let mut backups = nightly(last, 12);
    let deploy_day = datetime!(2026-12-01 10:00 UTC);
    for (id, at) in [(98, deploy_day - Duration::days(1)), (99, deploy_day)] {
        backups.push(BackupRecord {
            id,
            file: format!("db-predeploy-{id}.dump"),
            taken_at: at,
            local_date: at.date(),
            verified: false,
            pre_deploy: true,
        });
    }
    let d = decide(
        &backups,
        &Retention {
            daily: 3,
            weekly: 0,
            monthly: 0,
        },
    );
    assert_eq!(
        d.keep.get(&99).map(|k| k.iter().copied().collect::<Vec<_>>()),
        Some(vec![KeptAs::NewestPreDeploy])
    );
    assert!(
        d.delete.contains(&98),
        "only the newest pre-deploy backup is kept for it"
    );
    assert_eq!(d.keep.len(), 4, "3 daily + the pre-deploy one: {:?}", d.keep);
}
