//! Retention over a faked calendar, on real files and a real store: exactly the expected files
//! stay, a file steward did not make is never touched, the newest verified backup is never
//! deleted, and nothing is deleted when the list cannot be trusted.

use std::collections::BTreeSet;
use std::path::Path;

use steward_controller::database::tasks::{apply_retention, backup_file_name, TaskOutcome};
use steward_database::backup::{Backup, BackupTrigger, RestoreResult};
use steward_database::spec::{BackupFormat, DatabaseDocument, DatabaseEntry};
use steward_database::DatabaseState;
use steward_spec::{typed, DocCtx, Source};
use steward_store::Store;
use time::macros::datetime;
use time::OffsetDateTime;

fn db(dir: &Path) -> DatabaseState {
    let doc = format!(
        "apiVersion: steward.io/v1alpha1\nkind: Database\nmetadata: {{name: tc-db}}\nspec:\n  primary: postgres://steward@primary:5432/tc\n  backup:\n    schedule: \"0 2 * * *\"\n    timeZone: Indian/Antananarivo\n    directory: {}\n    retention: {{daily: 7, weekly: 4, monthly: 3}}\n",
        dir.display()
    );
    let ctx = DocCtx {
        file: Path::new("db.yaml"),
        line_offset: 0,
    };
    let d: DatabaseDocument = typed(&ctx, &doc).unwrap();
    DatabaseState::from_entry(
        &DatabaseEntry {
            metadata: d.metadata,
            spec: d.spec,
            source: Source {
                file: "db.yaml".into(),
                line: 3,
                line_offset: 0,
            },
        },
        None,
    )
}

fn record(dir: &Path, at: OffsetDateTime, verified: bool) -> Backup {
    let file = dir.join(backup_file_name("tc-db", at, BackupFormat::Custom));
    std::fs::write(&file, b"PGDMP fake").unwrap();
    Backup {
        id: 0,
        database: "tc-db".into(),
        file: file.display().to_string(),
        taken_at: at,
        local_date: at.date(),
        size_bytes: 10,
        sha256: "00".repeat(32),
        duration_seconds: 0.1,
        trigger: BackupTrigger::Schedule,
        restore: verified.then(|| RestoreResult {
            at: at + time::Duration::hours(1),
            passed: true,
            restore_seconds: 1.0,
            checks: vec![],
            target: "throwaway local server".into(),
            message: "passed".into(),
        }),
        archived_to: None,
        deleted_at: None,
    }
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

#[test]
fn a_hundred_days_of_daily_backups_keep_exactly_the_policy_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&tmp.path().join("s.db")).unwrap();
    let d = db(&dir);
    // 02:00 Antananarivo (23:00 UTC the day before), every day from 2026-08-24 to 2026-12-01.
    let first = datetime!(2026-08-23 23:00 UTC);
    for day in 0..100 {
        let at = first + time::Duration::days(day);
        // The only verified backup is an old one: it is kept whatever the counts say.
        let verified = day == 10;
        let mut b = record(&dir, at, verified);
        b.local_date = d.backup.as_ref().unwrap().local_date(at).unwrap();
        store.add_backup(&b).unwrap();
    }
    // A file steward did not make, in the same directory.
    std::fs::write(dir.join("manual-before-migration.dump"), b"keep me").unwrap();

    let mut out = TaskOutcome::default();
    apply_retention(&d, &store, &mut out);

    let kept = files(&dir);
    let mut expected = BTreeSet::new();
    expected.insert("manual-before-migration.dump".to_string());
    let local = |day: i64| first + time::Duration::days(day);
    let name = |day: i64| backup_file_name("tc-db", local(day), BackupFormat::Custom);
    // Daily: the newest 7 days (local 2026-11-25 .. 2026-12-01 are days 93..99).
    for day in 93..100 {
        expected.insert(name(day));
    }
    // Weekly: the newest of each of the last 4 ISO weeks. Local 2026-12-01 is a Tuesday; its
    // week's newest is day 99; the 3 weeks before end on Sundays 11-29, 11-22, 11-15.
    for day in [99, 97, 90, 83] {
        expected.insert(name(day));
    }
    // Monthly: the newest of December, November, October.
    for day in [99, 98, 68] {
        expected.insert(name(day));
    }
    // The newest verified backup.
    expected.insert(name(10));
    assert_eq!(kept, expected, "files left on disk");
    let records = store.backups(Some("tc-db")).unwrap();
    let live = records.iter().filter(|b| b.deleted_at.is_none()).count();
    assert_eq!(live, expected.len() - 1, "every deleted file is recorded as deleted");
    assert_eq!(
        out.events.len(),
        100 - live,
        "one BackupPruned event per deleted backup"
    );

    // Again: nothing more to delete (idempotent).
    let mut again = TaskOutcome::default();
    apply_retention(&d, &store, &mut again);
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(files(&dir), expected);
}

#[test]
fn a_directory_backup_retention_drops_is_deleted_with_its_files_and_only_recorded_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&tmp.path().join("s.db")).unwrap();
    let d = db(&dir);
    // 9 daily directory-format backups: the 2 oldest are beyond `daily: 7` (and are not the
    // newest of their week or month, which stay).
    let first = datetime!(2026-11-01 23:00 UTC);
    let name = |day: i64| backup_file_name("tc-db", first + time::Duration::days(day), BackupFormat::Directory);
    for day in 0..9 {
        let at = first + time::Duration::days(day);
        let mut b = record(&dir, at, false);
        std::fs::remove_file(&b.file).unwrap();
        let path = dir.join(name(day));
        assert!(path.to_string_lossy().ends_with(".dir"));
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("toc.dat"), b"PGDMP fake").unwrap();
        std::fs::write(path.join("3001.dat.gz"), b"rows").unwrap();
        b.file = path.display().to_string();
        b.local_date = d.backup.as_ref().unwrap().local_date(at).unwrap();
        store.add_backup(&b).unwrap();
    }
    // A directory steward did not record, in the same directory.
    std::fs::create_dir(dir.join("manual.dir")).unwrap();
    std::fs::write(dir.join("manual.dir").join("toc.dat"), b"keep me").unwrap();

    let mut out = TaskOutcome::default();
    apply_retention(&d, &store, &mut out);
    // Local 2026-11-02 (a Monday) .. 11-10: daily keeps days 2..8, the week of 11-02 keeps day
    // 6, November keeps day 8: days 0 and 1 are deleted, each with its files.
    assert_eq!(out.events.len(), 2, "{:?} {}", out.events, out.logs);
    let kept = files(&dir);
    let mut expected: BTreeSet<String> = (2..9).map(name).collect();
    expected.insert("manual.dir".into());
    assert_eq!(kept, expected);
    assert_eq!(files(&dir.join("manual.dir")), BTreeSet::from(["toc.dat".to_string()]));
    let records = store.backups(Some("tc-db")).unwrap();
    for b in records.iter().filter(|b| b.deleted_at.is_some()) {
        assert!(!Path::new(&b.file).exists(), "{} deleted with its files", b.file);
    }
    assert_eq!(records.iter().filter(|b| b.deleted_at.is_some()).count(), 2);
}
