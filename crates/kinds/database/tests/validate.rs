//! A `Database` document: the issue's contract reads as written; bad input is refused with the
//! field and its line.

use std::path::Path;

use steward_database::spec::{BackupFormat, DatabaseDocument, Expect};
use steward_database::validate::validate_database;
use steward_spec::{typed, DocCtx, SpecError};

const FILE: &str = "m/db.yaml";

fn check(text: &str) -> Vec<SpecError> {
    let ctx = DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    };
    let d: DatabaseDocument = typed(&ctx, text).expect("the document reads");
    let mut errors = Vec::new();
    validate_database(&ctx, text, &d, &mut errors);
    errors
}

const CONTRACT: &str = r#"apiVersion: steward.io/v1alpha1
kind: Database
metadata: {name: taxcollector-db}
spec:
  primary: postgres://steward@primary.db.internal:5432/taxcollector
  replicas:
    - postgres://steward@replica1.db.internal:5432/taxcollector
  passwordFrom: {env: STEWARD_DB_PASSWORD}
  thresholds:
    replicationLag: 30s
    connections: 150
    longTransaction: 5m
  maintenance:
    window: {schedule: "0 6 * * *", timeZone: Indian/Antananarivo, duration: 1h}
    vacuum: {deadTupleRatio: 0.10, minDeadTuples: 1000}
    reindex: {schedule: "0 3 * * 0", timeZone: Indian/Antananarivo}
  backup:
    schedule: "0 2 * * *"
    timeZone: Indian/Antananarivo
    directory: /var/backups/taxcollector
    retention: {daily: 7, weekly: 4, monthly: 12}
    restoreTest:
      schedule: "0 1 * * 0"
      target: postgres://steward@restore.db.internal:5432/postgres
      checks:
        - {query: "SELECT count(*) FROM vehicles_vehicule", expect: "> 0"}
    archive: {schedule: "0 0 1 * *", directory: /var/backups/archive}
"#;

#[test]
fn the_issue_contract_is_valid_and_reads_as_written() {
    assert_eq!(check(CONTRACT), vec![]);
    let ctx = DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    };
    let d: DatabaseDocument = typed(&ctx, CONTRACT).unwrap();
    assert_eq!(d.spec.replicas.len(), 1);
    assert_eq!(d.spec.thresholds.replication_lag.get().as_secs(), 30);
    let b = d.spec.backup.unwrap();
    assert_eq!((b.retention.daily, b.retention.weekly, b.retention.monthly), (7, 4, 12));
    assert_eq!(b.restore_test.unwrap().checks[0].expect, "> 0");
}

#[test]
fn a_password_in_a_url_is_refused_without_echoing_it() {
    let text = CONTRACT.replace("postgres://steward@primary", "postgres://steward:hunter2@primary");
    let errors = check(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!((e.field.as_str(), e.line), ("spec.primary", 5));
    assert!(
        e.message.contains("passwordFrom") && !e.message.contains("hunter2"),
        "{}",
        e.message
    );
}

#[test]
fn bad_calendars_directories_and_checks_name_their_field_and_line() {
    let text = CONTRACT
        .replace("\"0 2 * * *\"", "\"every night\"")
        .replace("directory: /var/backups/taxcollector", "directory: backups")
        .replace("expect: \"> 0\"", "expect: \"lots\"")
        .replace("deadTupleRatio: 0.10", "deadTupleRatio: 1.5");
    let errors = check(&text);
    let fields: Vec<(&str, u64)> = errors.iter().map(|e| (e.field.as_str(), e.line)).collect();
    for (field, line) in [
        ("spec.backup.schedule", 17),
        ("spec.backup.directory", 20),
        ("spec.backup.restoreTest.checks[0].expect", 26),
        ("spec.maintenance.vacuum.deadTupleRatio", 15),
    ] {
        assert!(fields.contains(&(field, line)), "{field} at line {line} in {fields:?}");
    }
}

#[test]
fn a_restore_test_onto_the_primary_is_refused() {
    let text = CONTRACT.replace(
        "target: postgres://steward@restore.db.internal:5432/postgres",
        "target: postgres://steward@primary.db.internal:5432/taxcollector",
    );
    let errors = check(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.field == "spec.backup.restoreTest.target" && e.message.contains("WAL")),
        "{errors:?}"
    );
}

#[test]
fn expectations_compare_with_a_number() {
    assert!(Expect::parse("> 0").unwrap().holds(1.0));
    assert!(!Expect::parse("> 0").unwrap().holds(0.0));
    assert!(Expect::parse(">= 10").unwrap().holds(10.0));
    assert!(Expect::parse("= 1").unwrap().holds(1.0));
    assert!(Expect::parse("!= 0").unwrap().holds(3.0));
    assert!(Expect::parse("<5").unwrap().holds(4.0));
    assert_eq!(Expect::parse("lots"), None);
}

#[test]
fn the_backup_format_defaults_to_custom_and_directory_defaults_to_two_jobs() {
    let ctx = DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    };
    let d: DatabaseDocument = typed(&ctx, CONTRACT).unwrap();
    let b = d.spec.backup.unwrap();
    assert_eq!((b.format, b.jobs, b.effective_jobs()), (BackupFormat::Custom, None, 1));

    let text = CONTRACT.replace(
        "    directory: /var/backups/taxcollector\n",
        "    directory: /var/backups/taxcollector\n    format: directory\n",
    );
    assert_eq!(check(&text), vec![]);
    let b = typed::<DatabaseDocument>(&ctx, &text).unwrap().spec.backup.unwrap();
    assert_eq!(
        (b.format, b.jobs, b.effective_jobs()),
        (BackupFormat::Directory, None, 2)
    );

    let text = text.replace("    format: directory\n", "    format: directory\n    jobs: 16\n");
    assert_eq!(check(&text), vec![]);
    let b = typed::<DatabaseDocument>(&ctx, &text).unwrap().spec.backup.unwrap();
    assert_eq!(b.effective_jobs(), 16);
}

#[test]
fn jobs_out_of_range_or_with_the_custom_format_are_refused_at_their_line() {
    let at = "    directory: /var/backups/taxcollector\n";
    for (extra, needle) in [
        ("    format: directory\n    jobs: 0\n", "between 1 and 16, got 0"),
        ("    format: directory\n    jobs: 17\n", "between 1 and 16, got 17"),
        ("    jobs: 4\n", "only with format: directory"),
        ("    format: custom\n    jobs: 1\n", "only with format: directory"),
    ] {
        let text = CONTRACT.replace(at, &format!("{at}{extra}"));
        let errors = check(&text);
        assert_eq!(errors.len(), 1, "{extra}: {errors:?}");
        let e = &errors[0];
        let line = 1 + text.lines().position(|l| l.starts_with("    jobs:")).unwrap() as u64;
        assert_eq!((e.field.as_str(), e.line), ("spec.backup.jobs", line), "{extra}");
        assert!(e.message.contains(needle), "{extra}: {}", e.message);
        assert_eq!(e.file, Path::new(FILE));
    }
    // An unknown format is refused by the reader, naming the two it knows.
    let text = CONTRACT.replace(at, &format!("{at}    format: tar\n"));
    let ctx = DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    };
    let e = typed::<DatabaseDocument>(&ctx, &text).unwrap_err().to_string();
    assert!(e.contains("custom") && e.contains("directory"), "{e}");
}
