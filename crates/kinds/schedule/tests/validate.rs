//! Checks of a Schedule document: each error names `file:line:col` and the field.

use std::path::Path;

use steward_schedule::spec::{ScheduleDocument, ScheduleEntry};
use steward_schedule::validate::{check_references, validate};
use steward_schedule::ScheduleState;
use steward_spec::{typed, DocCtx, Source, SpecError};

const FILE: &str = "schedules/backup.yaml";

fn doc(spec: &str) -> String {
    format!(
        "apiVersion: steward.io/v1alpha1\nkind: Schedule\nmetadata:\n  name: db-backup\n  labels:\n    \
         schedule: nightly\nspec:\n{spec}"
    )
}

fn parse(text: &str) -> ScheduleDocument {
    let ctx = DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    };
    typed(&ctx, text).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(spec: &str) -> Vec<String> {
    let text = doc(spec);
    let ctx = DocCtx {
        file: Path::new(FILE),
        line_offset: 0,
    };
    let mut errors = Vec::new();
    validate(&ctx, &text, &parse(&text), &mut errors);
    errors.iter().map(SpecError::to_string).collect()
}

const GOOD: &str = "  schedule: \"0 2 * * *\"\n  timeZone: Europe/Paris\n  job:\n    image: postgres:16\n";

#[test]
fn a_valid_schedule_has_no_errors_and_builds_its_state() {
    assert_eq!(errors(GOOD), Vec::<String>::new());
    let text = doc(GOOD);
    let d = parse(&text);
    let entry = ScheduleEntry {
        metadata: d.metadata,
        spec: d.spec,
        source: Source {
            file: FILE.into(),
            line: 4,
            line_offset: 0,
        },
    };
    let s = ScheduleState::from_entry(&entry, Vec::new());
    assert_eq!((s.name.as_str(), s.cron.time_zone()), ("db-backup", "Europe/Paris"));
    assert_eq!(s.timeout, std::time::Duration::from_secs(3600));
    assert_eq!(s.job.image.as_deref(), Some("postgres:16"));
}

#[test]
fn schedule_and_time_zone_are_both_reported_at_their_lines() {
    let e = errors("  schedule: \"0 2 * *\"\n  timeZone: Mars/Olympus\n  job:\n    image: postgres:16\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    // Line 8, not the `schedule:` label on line 6.
    assert!(
        e[0].starts_with("schedules/backup.yaml:8:3: spec.schedule: expected 5 fields"),
        "{}",
        e[0]
    );
    assert_eq!(
        e[1],
        "schedules/backup.yaml:9:3: spec.timeZone: unknown time zone \"Mars/Olympus\"; expected an IANA name such as Europe/Paris"
    );
}

#[test]
fn image_or_image_from_exactly_one() {
    let both = errors("  schedule: \"@daily\"\n  job:\n    image: postgres:16\n    imageFrom:\n      service: web\n");
    assert_eq!(
        both,
        ["schedules/backup.yaml:11:5: spec.job: set either image or imageFrom, not both"]
    );
    let none = errors("  schedule: \"@daily\"\n  job:\n    command: [pg_dump]\n");
    assert_eq!(
        none,
        ["schedules/backup.yaml:9:3: spec.job: one of image or imageFrom is required"]
    );
}

#[test]
fn durations_must_be_positive() {
    let e = errors("  schedule: \"@daily\"\n  timeout: 0s\n  startingDeadline: 0s\n  job:\n    image: postgres:16\n");
    assert_eq!(
        e,
        [
            "schedules/backup.yaml:9:3: spec.timeout: must be greater than 0",
            "schedules/backup.yaml:10:3: spec.startingDeadline: must be greater than 0 (leave it out for no deadline)"
        ]
    );
}

#[test]
fn mounts_are_checked_one_by_one() {
    let e = errors(
        "  schedule: \"@daily\"\n  job:\n    image: postgres:16\n    mounts:\n\
         \x20     - target: backups\n        source: pgdata\n\
         \x20     - type: bind\n        target: /etc/pg\n\
         \x20     - type: bind\n        source: etc/pg\n        target: /etc/pg2\n\
         \x20     - source: x\n        target: /v\n\
         \x20     - type: volume\n        target: /w\n\
         \x20     - type: tmpfs\n        source: /tmp\n        target: /scratch\n\
         \x20     - type: tmpfs\n        target: /etc/pg/\n",
    );
    let expected = [
        "schedules/backup.yaml:12:9: spec.job.mounts[0].target: expected an absolute path inside the container, got \"backups\"",
        "schedules/backup.yaml:15:9: spec.job.mounts[1].source: a bind mount needs source: the absolute host path to mount",
        "schedules/backup.yaml:18:9: spec.job.mounts[2].source: a bind mount needs an absolute host path, got \"etc/pg\"",
        "schedules/backup.yaml:20:9: spec.job.mounts[3].source: invalid volume name \"x\": expected at least 2 letters, digits, '_', '.' or '-', starting with a letter or digit",
        "schedules/backup.yaml:22:9: spec.job.mounts[4].source: a volume mount needs source: the name of the volume",
        "schedules/backup.yaml:25:9: spec.job.mounts[5].source: a tmpfs mount takes no source (it is a fresh memory-backed directory)",
        "schedules/backup.yaml:27:9: spec.job.mounts[6].target: \"/etc/pg/\" is already mounted by spec.job.mounts[1]",
    ];
    assert_eq!(e, expected, "{e:#?}");
}

#[test]
fn env_is_checked_with_the_service_rules() {
    let e = errors(
        "  schedule: \"@daily\"\n  job:\n    image: postgres:16\n    env:\n      - name: PGPASSWORD\n        value: hunter2\n",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("spec.job.env[0].value") && e[0].contains("looks like a secret"),
        "{}",
        e[0]
    );
}

#[test]
fn image_from_must_name_a_service_of_the_desired_state() {
    let text = doc("  schedule: \"@daily\"\n  job:\n    imageFrom:\n      service: web\n");
    let d = parse(&text);
    let entry = ScheduleEntry {
        metadata: d.metadata,
        spec: d.spec,
        source: Source {
            file: FILE.into(),
            line: 24,
            line_offset: 20,
        },
    };
    let mut errors = Vec::new();
    check_references(std::slice::from_ref(&entry), &["web"], &mut errors);
    assert!(errors.is_empty());
    check_references(&[entry], &["api", "celery"], &mut errors);
    let e: Vec<String> = errors.iter().map(SpecError::to_string).collect();
    assert_eq!(
        e,
        ["schedules/backup.yaml:31:16: spec.job.imageFrom.service: no Service named \"web\" in this desired state"]
    );
}
