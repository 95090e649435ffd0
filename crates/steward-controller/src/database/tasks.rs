//! Carrying out a Database's tasks: backup (then retention), restore test, archive, vacuum and
//! reindex. Blocking (child processes, the PostgreSQL client, files): the controller runs them
//! on a blocking thread, `steward backup` and `steward restore-test` in their own process. Each
//! records what it did in the store itself, so a result is never lost with the process that
//! waited for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use steward_backends::database::connect;
use steward_backends::pg_backup::{self, DumpFormat, RestoreTarget};
use steward_backends::pg_maintenance;
use steward_backends::swarm::error_chain;
use steward_database::backup::{newest, Backup, BackupTrigger, RestoreResult};
use steward_database::maintenance::needs_vacuum;
use steward_database::retention;
use steward_database::spec::BackupFormat;
use steward_database::{DatabaseState, Reason, Task};
use steward_store::Store;
use time::OffsetDateTime;

/// An event a task wants recorded.
pub type TaskEvent = (Reason, String);

/// What a task did.
#[derive(Clone, Debug, Default)]
pub struct TaskOutcome {
    pub ok: bool,
    /// One line for the run's message.
    pub message: String,
    /// The run's log: one line per step.
    pub logs: String,
    pub events: Vec<TaskEvent>,
    /// Measured restore time, for the metric.
    pub restore_seconds: Option<f64>,
}

impl TaskOutcome {
    fn failed(reason: Reason, message: String) -> Self {
        TaskOutcome {
            ok: false,
            logs: message.clone(),
            events: vec![(reason, message.clone())],
            message,
            restore_seconds: None,
        }
    }
}

/// What a task needs besides the Database.
#[derive(Clone, Debug)]
pub struct TaskContext {
    pub trigger: BackupTrigger,
    pub now: OffsetDateTime,
    /// Vacuum stops between tables once this is set (a rollout began, a replica lags).
    pub hold: Arc<AtomicBool>,
    /// Vacuum starts no table after this instant (the window closes).
    pub window_closes: Option<OffsetDateTime>,
}

/// The name of a backup taken at `at`: `<database>-<YYYYmmddTHHMMSSZ>.dump` (a file, the custom
/// format) or `.dir` (a directory, the directory format).
pub fn backup_file_name(database: &str, at: OffsetDateTime, format: BackupFormat) -> String {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let ext = match format {
        BackupFormat::Custom => "dump",
        BackupFormat::Directory => "dir",
    };
    format!("{database}-{}.{ext}", at.format(&f).unwrap_or_default())
}

/// How pg_dump writes the backups of `spec`.
pub fn dump_format(spec: &steward_database::spec::Backup) -> DumpFormat {
    match spec.format {
        BackupFormat::Custom => DumpFormat::Custom,
        BackupFormat::Directory => DumpFormat::Directory {
            jobs: spec.effective_jobs(),
        },
    }
}

/// Runs `task` now. Never panics on a backend failure: the outcome says what failed.
pub fn execute(task: Task, db: &DatabaseState, store: &Store, ctx: &TaskContext) -> TaskOutcome {
    match task {
        Task::Backup => backup(db, store, ctx),
        Task::RestoreTest => restore_test(db, store, ctx),
        Task::Archive => archive(db, store),
        Task::Vacuum => vacuum(db, ctx),
        Task::Reindex => reindex(db),
    }
}

fn local_date(db: &DatabaseState, at: OffsetDateTime) -> time::Date {
    db.backup.as_ref().and_then(|c| c.local_date(at)).unwrap_or(at.date())
}

fn backup(db: &DatabaseState, store: &Store, ctx: &TaskContext) -> TaskOutcome {
    let Some(spec) = &db.spec.backup else {
        return TaskOutcome::failed(Reason::BackupFailed, "no spec.backup declared".into());
    };
    let dir = PathBuf::from(&spec.directory);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return TaskOutcome::failed(
            Reason::BackupFailed,
            format!("cannot create the backup directory {}: {e}", dir.display()),
        );
    }
    // Leftovers of a killed backup (their writer is gone) are never backups: removed.
    if let Ok(stale) = pg_backup::remove_stale_partials(&dir) {
        for p in stale {
            tracing::info!(file = %p.display(), "removed the partial file of an interrupted backup");
        }
    }
    let name = backup_file_name(&db.name, ctx.now, spec.format);
    let (primary, password) = (&db.spec.primary, db.password.as_deref());
    let file = match pg_backup::take_backup_as(primary, password, &dir, &name, dump_format(spec)) {
        Ok(f) => f,
        Err(e) => {
            return TaskOutcome::failed(
                Reason::BackupFailed,
                format!("backup to {} failed: {}", dir.display(), error_chain(&e)),
            )
        }
    };
    let record = Backup {
        id: 0,
        database: db.name.clone(),
        file: file.path.display().to_string(),
        taken_at: ctx.now,
        local_date: local_date(db, ctx.now),
        size_bytes: file.size_bytes,
        sha256: file.sha256.clone(),
        duration_seconds: file.duration_seconds,
        trigger: ctx.trigger,
        restore: None,
        archived_to: None,
        deleted_at: None,
    };
    let mut out = TaskOutcome {
        ok: true,
        message: format!(
            "backup {} written: {} bytes in {:.1}s, sha256 {}",
            record.file,
            record.size_bytes,
            record.duration_seconds,
            &record.sha256[..record.sha256.len().min(12)]
        ),
        ..Default::default()
    };
    if let Err(e) = store.add_backup(&record) {
        // The file is complete but unrecorded: retention will never count or delete it.
        return TaskOutcome::failed(
            Reason::BackupFailed,
            format!("backup {} written but not recorded: {}", record.file, error_chain(&e)),
        );
    }
    out.logs = out.message.clone();
    out.events.push((Reason::BackupSucceeded, out.message.clone()));
    apply_retention(db, store, &mut out);
    out
}

/// Deletes the backups retention does not keep: only files steward recorded, never the newest
/// verified one, nothing at all when the list cannot be read.
pub fn apply_retention(db: &DatabaseState, store: &Store, out: &mut TaskOutcome) {
    let Some(spec) = &db.spec.backup else { return };
    let all = match store.backups(Some(&db.name)) {
        Ok(b) => b,
        Err(e) => {
            out.logs.push_str(&format!(
                "\nretention skipped: the backups could not be listed: {}",
                error_chain(&e)
            ));
            return;
        }
    };
    let live: Vec<&Backup> = all.iter().filter(|b| b.is_live()).collect();
    let records: Vec<retention::BackupRecord> = live.iter().map(|b| b.retention_record()).collect();
    let decision = retention::decide(&records, &spec.retention);
    for id in decision.delete {
        let Some(b) = live.iter().find(|b| b.id as u64 == id) else {
            continue;
        };
        // A file, or a directory-format backup with its files: only what steward recorded.
        match pg_backup::remove_backup(Path::new(&b.file)) {
            Ok(()) => {}
            Err(e) => {
                out.logs.push_str(&format!("\ncannot delete {}: {e}", b.file));
                continue;
            }
        }
        if let Err(e) = store.mark_backup_deleted(b.id, OffsetDateTime::now_utc()) {
            out.logs.push_str(&format!(
                "\ndeleted {} but cannot record it: {}",
                b.file,
                error_chain(&e)
            ));
            continue;
        }
        let r = &spec.retention;
        let msg = format!(
            "backup {} deleted by retention (keeps the newest of {} days, {} weeks, {} months and the newest verified)",
            b.file, r.daily, r.weekly, r.monthly
        );
        out.logs.push_str(&format!("\n{msg}"));
        out.events.push((Reason::BackupPruned, msg));
    }
}

fn restore_test(db: &DatabaseState, store: &Store, ctx: &TaskContext) -> TaskOutcome {
    let Some((backup_spec, spec)) = db
        .spec
        .backup
        .as_ref()
        .and_then(|b| Some((b, b.restore_test.as_ref()?)))
    else {
        return TaskOutcome::failed(Reason::RestoreTestFailed, "no spec.backup.restoreTest declared".into());
    };
    let all = match store.backups(Some(&db.name)) {
        Ok(b) => b,
        Err(e) => {
            return TaskOutcome::failed(
                Reason::RestoreTestFailed,
                format!("the backups could not be listed: {}", error_chain(&e)),
            )
        }
    };
    let Some(b) = newest(all.iter().filter(|b| b.is_live())) else {
        return TaskOutcome::failed(Reason::RestoreTestFailed, "no backup to restore yet".into());
    };
    let target = match &spec.target {
        Some(url) => RestoreTarget::Server {
            url: url.clone(),
            password: db.password.clone(),
        },
        None => RestoreTarget::Throwaway,
    };
    // A directory-format backup is restored by `jobs` workers (pg_restore reads the format).
    let jobs = backup_spec.effective_jobs();
    let mut r: RestoreResult = pg_backup::restore_test_jobs(Path::new(&b.file), &b.sha256, &target, &spec.checks, jobs);
    r.at = ctx.now.max(r.at);
    if let Err(e) = store.set_backup_restore(b.id, &r) {
        return TaskOutcome::failed(
            Reason::RestoreTestFailed,
            format!("restore test of {} done but not recorded: {}", b.file, error_chain(&e)),
        );
    }
    let checks: Vec<String> = r
        .checks
        .iter()
        .map(|c| {
            format!(
                "{} {}: {} ({})",
                if c.passed { "PASS" } else { "FAIL" },
                c.query,
                c.value.as_deref().unwrap_or("-"),
                if c.message.is_empty() {
                    c.expect.as_str()
                } else {
                    c.message.as_str()
                }
            )
        })
        .collect();
    let message = if r.passed {
        format!(
            "restore test of {} passed on {} in {:.1}s ({} checks)",
            b.file,
            r.target,
            r.restore_seconds,
            r.checks.len()
        )
    } else {
        format!("restore test of {} failed on {}: {}", b.file, r.target, r.message)
    };
    TaskOutcome {
        ok: r.passed,
        logs: std::iter::once(message.clone())
            .chain(checks)
            .collect::<Vec<_>>()
            .join("\n"),
        events: vec![(
            if r.passed {
                Reason::RestoreTestPassed
            } else {
                Reason::RestoreTestFailed
            },
            message.clone(),
        )],
        message,
        restore_seconds: Some(r.restore_seconds),
    }
}

fn archive(db: &DatabaseState, store: &Store) -> TaskOutcome {
    let Some(spec) = db.spec.backup.as_ref().and_then(|b| b.archive.as_ref()) else {
        return TaskOutcome::failed(Reason::ArchiveFailed, "no spec.backup.archive declared".into());
    };
    let all = match store.backups(Some(&db.name)) {
        Ok(b) => b,
        Err(e) => {
            return TaskOutcome::failed(
                Reason::ArchiveFailed,
                format!("the backups could not be listed: {}", error_chain(&e)),
            )
        }
    };
    let Some(b) = newest(all.iter().filter(|b| b.is_live() && b.verified())) else {
        return TaskOutcome::failed(Reason::ArchiveFailed, "no verified backup to archive".into());
    };
    let dir = PathBuf::from(&spec.directory);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return TaskOutcome::failed(Reason::ArchiveFailed, format!("cannot create {}: {e}", dir.display()));
    }
    match pg_backup::archive_copy(Path::new(&b.file), &b.sha256, &dir) {
        Ok(path) => {
            let path = path.display().to_string();
            if let Err(e) = store.set_backup_archived(b.id, &path) {
                return TaskOutcome::failed(
                    Reason::ArchiveFailed,
                    format!("archived to {path} but not recorded: {}", error_chain(&e)),
                );
            }
            let message = format!("{} archived to {path}, checksum verified", b.file);
            TaskOutcome {
                ok: true,
                logs: message.clone(),
                events: vec![(Reason::Archived, message.clone())],
                message,
                restore_seconds: None,
            }
        }
        Err(e) => TaskOutcome::failed(
            Reason::ArchiveFailed,
            format!("archive of {} failed: {}", b.file, error_chain(&e)),
        ),
    }
}

fn vacuum(db: &DatabaseState, ctx: &TaskContext) -> TaskOutcome {
    let Some(m) = &db.spec.maintenance else {
        return TaskOutcome::failed(Reason::VacuumFailed, "no spec.maintenance declared".into());
    };
    let Some(v) = &m.vacuum else {
        return TaskOutcome::failed(Reason::VacuumFailed, "no spec.maintenance.vacuum declared".into());
    };
    let (mut c, _) = match connect(&db.spec.primary, db.password.as_deref()) {
        Ok(c) => c,
        Err(e) => return TaskOutcome::failed(Reason::VacuumFailed, error_chain(&e)),
    };
    let mut out = TaskOutcome {
        ok: true,
        ..Default::default()
    };
    let mut done: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut left = 0usize;
    loop {
        let tables = match pg_maintenance::table_stats(&mut c) {
            Ok(t) => t,
            Err(e) => {
                out.ok = false;
                out.logs
                    .push_str(&format!("cannot read table statistics: {}\n", error_chain(&e)));
                break;
            }
        };
        let mut over: Vec<_> = tables
            .into_iter()
            .filter(|t| needs_vacuum(t, v) && !done.contains(&t.name) && !skipped.contains(&t.name))
            .collect();
        over.sort_by(|a, b| b.dead.cmp(&a.dead).then(a.name.cmp(&b.name)));
        let Some(t) = over.first().cloned() else { break };
        if ctx.window_closes.is_some_and(|end| OffsetDateTime::now_utc() >= end) {
            left = over.len();
            out.logs
                .push_str("the window closed: the rest waits for the next window\n");
            break;
        }
        if ctx.hold.load(Ordering::SeqCst) {
            left = over.len();
            out.logs
                .push_str("held (a rollout began or a replica lags): the rest waits\n");
            break;
        }
        match pg_maintenance::vacuum_table(&mut c, &t.name, m.lock_timeout.get(), m.statement_timeout.get()) {
            Ok(r) => {
                let msg = format!(
                    "VACUUM (ANALYZE) {}: dead tuples {} -> {} in {:.2}s",
                    r.table, r.dead_before, r.dead_after, r.duration_seconds
                );
                out.logs.push_str(&msg);
                out.logs.push('\n');
                out.events.push((Reason::Vacuumed, msg));
                done.push(t.name.clone());
            }
            Err(e) => {
                let msg = format!("VACUUM (ANALYZE) {} failed: {}", t.name, error_chain(&e));
                out.logs.push_str(&msg);
                out.logs.push('\n');
                out.events.push((Reason::VacuumFailed, msg));
                out.ok = false;
                skipped.push(t.name.clone());
            }
        }
    }
    out.message = match (done.len(), left) {
        (0, 0) if out.ok => "no table over the vacuum thresholds".into(),
        (n, 0) => format!(
            "{n} table(s) vacuumed{}",
            if skipped.is_empty() {
                String::new()
            } else {
                format!(", {} failed", skipped.len())
            }
        ),
        (n, l) => format!("{n} table(s) vacuumed, {l} left for the next window"),
    };
    out
}

fn reindex(db: &DatabaseState) -> TaskOutcome {
    let (mut c, _) = match connect(&db.spec.primary, db.password.as_deref()) {
        Ok(c) => c,
        Err(e) => return TaskOutcome::failed(Reason::ReindexFailed, error_chain(&e)),
    };
    let timeout = db
        .spec
        .maintenance
        .as_ref()
        .map_or(std::time::Duration::from_secs(3600), |m| m.statement_timeout.get());
    match pg_maintenance::reindex_concurrently(&mut c, timeout) {
        Ok(r) => {
            let message = format!("REINDEX ... CONCURRENTLY done: {r}");
            TaskOutcome {
                ok: true,
                logs: message.clone(),
                events: vec![(Reason::Reindexed, message.clone())],
                message,
                restore_seconds: None,
            }
        }
        Err(e) => TaskOutcome::failed(Reason::ReindexFailed, format!("REINDEX failed: {}", error_chain(&e))),
    }
}
