//! Checks of a `Database` document, each error at its field's `file:line:col`.

use steward_schedule::cron::CronSchedule;
use steward_spec::{file_ref_problem, locate, validate_labels, DocCtx, SpecError};

use crate::spec::{BackupFormat, DatabaseDocument, Expect, MAX_BACKUP_JOBS};

/// `postgres://user@host:port/db` (or `postgresql://`), without a password.
fn url_problem(url: &str) -> Option<String> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Some(format!("{url:?}: expected postgres://user@host:port/database"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            // Say where it is, never what it is.
            return Some("a password inside the URL is refused: use spec.passwordFrom".into());
        }
    }
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Some("the URL names no host".into());
    }
    None
}

pub fn validate_database(ctx: &DocCtx, text: &str, d: &DatabaseDocument, errors: &mut Vec<SpecError>) {
    validate_labels(ctx, text, &d.metadata, errors);
    let s = &d.spec;
    let mut err =
        |needle: &str, field: &str, message: String| errors.push(ctx.err(locate(text, needle), field, message));
    if let Some(p) = url_problem(&s.primary) {
        err("primary:", "spec.primary", p);
    }
    for (i, r) in s.replicas.iter().enumerate() {
        if let Some(p) = url_problem(r) {
            err("replicas:", &format!("spec.replicas[{i}]"), p);
        }
        if r == &s.primary {
            err(
                "replicas:",
                &format!("spec.replicas[{i}]"),
                "the primary cannot be its own replica".into(),
            );
        }
    }
    if let Some(src) = &s.password_from {
        match (&src.env, &src.file) {
            (Some(_), Some(_)) | (None, None) => err(
                "passwordFrom",
                "spec.passwordFrom",
                "exactly one of env or file is required".into(),
            ),
            (None, Some(f)) => {
                if let Some(p) = file_ref_problem(f) {
                    err("passwordFrom", "spec.passwordFrom.file", p);
                }
            }
            _ => {}
        }
    }
    if s.thresholds.replication_lag.get().is_zero() {
        err(
            "replicationLag",
            "spec.thresholds.replicationLag",
            "must be more than 0s".into(),
        );
    }
    let mut cron = |needle: &str, field: &str, expr: &str, tz: &str| {
        if let Err(e) = CronSchedule::parse(expr, tz) {
            errors.push(ctx.err(locate(text, needle), field, e.to_string()));
        }
    };
    if let Some(m) = &s.maintenance {
        cron(
            "window:",
            "spec.maintenance.window.schedule",
            &m.window.schedule,
            &m.window.time_zone,
        );
        if let Some(r) = &m.reindex {
            cron(
                "reindex:",
                "spec.maintenance.reindex.schedule",
                &r.schedule,
                &r.time_zone,
            );
        }
    }
    if let Some(b) = &s.backup {
        cron("backup:", "spec.backup.schedule", &b.schedule, &b.time_zone);
        if let Some(t) = &b.restore_test {
            cron(
                "restoreTest:",
                "spec.backup.restoreTest.schedule",
                &t.schedule,
                &t.time_zone,
            );
        }
        if let Some(a) = &b.archive {
            cron("archive:", "spec.backup.archive.schedule", &a.schedule, &a.time_zone);
        }
    }
    let mut err =
        |needle: &str, field: &str, message: String| errors.push(ctx.err(locate(text, needle), field, message));
    if let Some(m) = &s.maintenance {
        if m.window.duration.get().is_zero() {
            err(
                "duration:",
                "spec.maintenance.window.duration",
                "must be more than 0s".into(),
            );
        }
        if let Some(v) = &m.vacuum {
            if !(0.0..=1.0).contains(&v.dead_tuple_ratio) {
                err(
                    "deadTupleRatio",
                    "spec.maintenance.vacuum.deadTupleRatio",
                    format!("must be between 0 and 1, got {}", v.dead_tuple_ratio),
                );
            }
        }
    }
    if let Some(b) = &s.backup {
        if !b.directory.starts_with('/') {
            err(
                "directory:",
                "spec.backup.directory",
                format!("{:?} must be an absolute path", b.directory),
            );
        }
        match (b.format, b.jobs) {
            (BackupFormat::Custom, Some(_)) => err(
                "jobs:",
                "spec.backup.jobs",
                "only with format: directory (the custom format is dumped and restored by one worker)".into(),
            ),
            (BackupFormat::Directory, Some(j)) if !(1..=MAX_BACKUP_JOBS).contains(&j) => err(
                "jobs:",
                "spec.backup.jobs",
                format!("must be between 1 and {MAX_BACKUP_JOBS}, got {j}"),
            ),
            _ => {}
        }
        if b.retention.daily == 0 {
            err(
                "daily",
                "spec.backup.retention.daily",
                "at least 1: the newest backup is always kept".into(),
            );
        }
        if let Some(t) = &b.restore_test {
            if let Some(target) = &t.target {
                if let Some(p) = url_problem(target) {
                    err("target:", "spec.backup.restoreTest.target", p);
                }
                if target == &s.primary {
                    err(
                        "target:",
                        "spec.backup.restoreTest.target",
                        "restoring onto the primary writes WAL its replicas must replay: use another server or none"
                            .into(),
                    );
                }
            }
            for (i, c) in t.checks.iter().enumerate() {
                if Expect::parse(&c.expect).is_none() {
                    err(
                        &c.expect,
                        &format!("spec.backup.restoreTest.checks[{i}].expect"),
                        format!("{:?}: expected a comparison with a number, e.g. \"> 0\"", c.expect),
                    );
                }
                if c.query.trim().is_empty() {
                    err(
                        "query:",
                        &format!("spec.backup.restoreTest.checks[{i}].query"),
                        "empty query".into(),
                    );
                }
            }
        }
        if let Some(a) = &b.archive {
            if !a.directory.starts_with('/') {
                err(
                    "archive:",
                    "spec.backup.archive.directory",
                    format!("{:?} must be an absolute path", a.directory),
                );
            }
        }
    }
}

/// Database names are unique.
pub fn check_unique(databases: &[crate::spec::DatabaseEntry], errors: &mut Vec<SpecError>) {
    let mut seen: std::collections::HashMap<&str, &crate::spec::DatabaseEntry> = Default::default();
    for d in databases {
        if let Some(first) = seen.insert(d.name(), d) {
            errors.push(SpecError {
                file: d.source.file.clone(),
                line: d.source.line,
                column: d.metadata.name.referenced.column(),
                field: "metadata.name".into(),
                message: format!(
                    "duplicate Database name {:?} (first defined at {}:{})",
                    d.name(),
                    first.source.file.display(),
                    first.source.line
                ),
            });
        }
    }
}

/// A Service's `gates[].database` and `backupBefore` name a Database of this desired state;
/// `backupBefore` needs that Database to declare `backup` (its directory).
pub fn check_references(
    services: &[steward_spec::ServiceEntry],
    databases: &[crate::spec::DatabaseEntry],
    errors: &mut Vec<SpecError>,
) {
    let find = |n: &str| databases.iter().find(|d| d.name() == n);
    for s in services {
        let err = |at: &serde_saphyr::Spanned<steward_spec::ResourceName>, field: String, message: String| SpecError {
            file: s.source.file.clone(),
            line: at.referenced.line() + s.source.line_offset,
            column: at.referenced.column(),
            field,
            message,
        };
        for (i, g) in s.spec.gates.iter().enumerate() {
            if find(g.database.value.as_str()).is_none() {
                errors.push(err(
                    &g.database,
                    format!("spec.gates[{i}].database"),
                    format!(
                        "no Database named {:?} in this desired state",
                        g.database.value.as_str()
                    ),
                ));
            }
        }
        if let Some(b) = &s.spec.backup_before {
            match find(b.value.as_str()) {
                None => errors.push(err(
                    b,
                    "spec.backupBefore".into(),
                    format!("no Database named {:?} in this desired state", b.value.as_str()),
                )),
                Some(d) if d.spec.backup.is_none() => errors.push(err(
                    b,
                    "spec.backupBefore".into(),
                    format!(
                        "Database {:?} declares no spec.backup (its directory): add one to back it up before a deploy",
                        b.value.as_str()
                    ),
                )),
                Some(_) => {}
            }
        }
    }
}
