//! `steward backups`, `steward backup DATABASE` and `steward restore-test DATABASE`.
//!
//! A manual backup or restore test runs in this process (the controller need not run): it is
//! claimed as a run in the store like the controller's own, so `steward runs` lists it, and
//! its result is recorded on the backup the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use steward_controller::database::{execute, finish_run, new_run, reap_abandoned, store_events, TaskContext};
use steward_controller::{prepare_all, PrepareError};
use steward_core::rfc3339;
use steward_database::backup::{Backup, BackupTrigger};
use steward_database::retention::{self, KeptAs};
use steward_database::{DatabaseState, Task};
use steward_schedule::Trigger;
use steward_store::{Claim, Store};
use time::OffsetDateTime;

use crate::commands::{manifest_paths, open_store};
use crate::output::{emit, table, Format};
use crate::Cli;

/// Why each live backup is kept, by id, under the Database's retention (empty when it is not
/// declared in the desired state at hand).
fn kept_as(backups: &[Backup], db: Option<&DatabaseState>) -> BTreeMap<i64, BTreeSet<KeptAs>> {
    let Some(policy) = db.and_then(|d| d.spec.backup.as_ref()).map(|b| &b.retention) else {
        return BTreeMap::new();
    };
    let live: Vec<retention::BackupRecord> = backups
        .iter()
        .filter(|b| b.is_live())
        .map(Backup::retention_record)
        .collect();
    retention::decide(&live, policy)
        .keep
        .into_iter()
        .map(|(id, why)| (id as i64, why))
        .collect()
}

fn kept_text(why: Option<&BTreeSet<KeptAs>>) -> String {
    match why {
        None => "-".into(),
        Some(w) => w
            .iter()
            .map(|k| match k {
                KeptAs::Daily => "daily",
                KeptAs::Weekly => "weekly",
                KeptAs::Monthly => "monthly",
                KeptAs::NewestVerified => "newest-verified",
                KeptAs::NewestPreDeploy => "newest-pre-deploy",
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// The desired state's Databases (from `paths` or the controller's last manifests); `None`
/// when there are none to read (the listing then says nothing of retention).
fn desired_databases(store: &Store, paths: &[PathBuf]) -> Option<Vec<DatabaseState>> {
    let paths = manifest_paths(store, paths).ok()?;
    prepare_all(&paths).ok().map(|p| p.databases)
}

pub fn backups(cli: &Cli, database: Option<&str>, paths: &[PathBuf], output: Format) -> anyhow::Result<u8> {
    let store = open_store(cli)?;
    let all = store.backups(database)?;
    let dbs = desired_databases(&store, paths).unwrap_or_default();
    let mut kept: BTreeMap<i64, BTreeSet<KeptAs>> = BTreeMap::new();
    let names: BTreeSet<&str> = all.iter().map(|b| b.database.as_str()).collect();
    for name in names {
        let of: Vec<Backup> = all.iter().filter(|b| b.database == name).cloned().collect();
        kept.extend(kept_as(&of, dbs.iter().find(|d| d.name == name)));
    }
    emit(
        output,
        || {
            if all.is_empty() {
                return match database {
                    Some(d) => format!("no backups recorded for {d}\n"),
                    None => "no backups recorded\n".to_string(),
                };
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|b| {
                    vec![
                        b.database.clone(),
                        rfc3339(b.taken_at),
                        b.file.clone(),
                        b.size_bytes.to_string(),
                        b.sha256[..b.sha256.len().min(12)].to_string(),
                        match (&b.restore, b.deleted_at) {
                            (_, Some(_)) => "deleted".into(),
                            (Some(r), _) if r.passed => format!("yes ({:.1}s)", r.restore_seconds),
                            (Some(_), _) => "FAILED".into(),
                            (None, _) => "no".into(),
                        },
                        kept_text(kept.get(&b.id)),
                    ]
                })
                .collect();
            table(
                &["DATABASE", "TIME", "FILE", "SIZE", "SHA256", "VERIFIED", "KEPT"],
                &rows,
            )
        },
        || {
            serde_json::Value::Array(
                all.iter()
                    .map(|b| {
                        serde_json::json!({
                            "id": b.id,
                            "database": b.database,
                            "time": rfc3339(b.taken_at),
                            "file": b.file,
                            "sizeBytes": b.size_bytes,
                            "sha256": b.sha256,
                            "durationSeconds": b.duration_seconds,
                            "trigger": b.trigger,
                            "verified": b.verified(),
                            "restoreTest": b.restore,
                            "kept": kept.get(&b.id).map(|w| w.iter().collect::<Vec<_>>()).unwrap_or_default(),
                            "archivedTo": b.archived_to,
                            "deletedAt": b.deleted_at.map(rfc3339),
                        })
                    })
                    .collect(),
            )
        },
    );
    Ok(0)
}

/// `steward backup DB` / `steward restore-test DB`: runs the task now in this process.
pub fn run_now(cli: &Cli, database: &str, task: Task, paths: &[PathBuf]) -> anyhow::Result<u8> {
    let store = open_store(cli)?;
    let paths = manifest_paths(&store, paths)?;
    let prepared = match prepare_all(&paths) {
        Ok(p) => p,
        Err(PrepareError::Invalid(errs)) => {
            for e in &errs.0 {
                println!("{e}");
            }
            return Ok(1);
        }
    };
    let Some(db) = prepared.databases.into_iter().find(|d| d.name == database) else {
        eprintln!("no Database named {database:?} in the desired state");
        return Ok(1);
    };
    let now = OffsetDateTime::now_utc();
    let run = new_run(&db.name, task, now, Trigger::Manual, now);
    // A run of a process that was killed would block this claim forever.
    let mut emit = store_events(&store, &db.name);
    reap_abandoned(&store, &db.name, &Default::default(), &mut emit);
    let run = match store.claim_run(&run, true)? {
        Claim::Inserted(id) => steward_schedule::Run { id, ..run },
        Claim::Exists(_) | Claim::Busy(_) => {
            eprintln!("a {} of {database} is already running", task.as_str());
            return Ok(1);
        }
    };
    let ctx = TaskContext {
        trigger: BackupTrigger::Manual,
        now,
        hold: Arc::new(AtomicBool::new(false)),
        window_closes: None,
    };
    let out = execute(task, &db, &store, &ctx);
    finish_run(&store, &db.name, run, &out, &mut emit);
    println!("{}", out.logs);
    Ok(if out.ok { 0 } else { 1 })
}
