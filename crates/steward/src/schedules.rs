//! `steward runs` and `steward trigger`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use steward_controller::schedule::{reconcile, Context, Scope};
use steward_controller::{prepare_all, PrepareError};
use steward_core::status::{EventType, NewEvent};
use steward_core::{rfc3339, Requeue};
use steward_schedule::run::job_name;
use steward_schedule::spec::ConcurrencyPolicy;
use steward_schedule::{Outcome, Run, ScheduleState, Trigger};
use steward_store::{Claim, Store};
use time::OffsetDateTime;

use crate::commands::{manifest_paths, open_store, swarm};
use crate::output::{emit, table, Format};
use crate::Cli;

pub fn run_rows(runs: &[Run]) -> Vec<Vec<String>> {
    runs.iter()
        .map(|r| {
            vec![
                r.schedule.clone(),
                r.id.to_string(),
                rfc3339(r.scheduled_at),
                r.started_at.map_or("-".into(), rfc3339),
                r.duration().map_or("-".into(), |d| format!("{:.1}s", d.as_secs_f64())),
                r.outcome.as_str().to_string(),
                r.exit_code.map_or("-".into(), |c| c.to_string()),
                r.trigger.as_str().to_string(),
                r.message.clone(),
            ]
        })
        .collect()
}

pub const RUN_HEADER: [&str; 9] = [
    "SCHEDULE",
    "ID",
    "SCHEDULED",
    "STARTED",
    "DURATION",
    "OUTCOME",
    "EXIT",
    "TRIGGER",
    "MESSAGE",
];

pub fn runs(cli: &Cli, schedule: Option<&str>, limit: usize, output: Format) -> anyhow::Result<u8> {
    let store = open_store(cli)?;
    let runs = store.runs(schedule, Some(limit))?;
    emit(
        output,
        || {
            if runs.is_empty() {
                return match schedule {
                    Some(s) => format!("no runs recorded for {s}\n"),
                    None => "no runs recorded\n".to_string(),
                };
            }
            table(&RUN_HEADER, &run_rows(&runs))
        },
        || serde_json::Value::Array(runs.iter().map(Run::listing_json).collect()),
    );
    Ok(0)
}

fn record(store: &Store, type_: EventType, reason: &str, schedule: &str, message: String) {
    let ev = NewEvent {
        type_,
        reason: reason.to_string(),
        message,
        object: format!("Schedule/{schedule}"),
    };
    if let Err(e) = store.record_event(&ev, OffsetDateTime::now_utc()) {
        eprintln!("warning: cannot record event: {e}");
    }
}

/// The schedule `name` as the desired state declares it (from `paths`, or from what the
/// controller last loaded).
pub fn load_schedule(
    store: &Store,
    paths: &[PathBuf],
    name: &str,
) -> anyhow::Result<Result<(String, ScheduleState), u8>> {
    let paths = manifest_paths(store, paths)?;
    let prepared = match prepare_all(&paths) {
        Ok(p) => p,
        Err(PrepareError::Invalid(errs)) => {
            for e in &errs.0 {
                println!("{e}");
            }
            return Ok(Err(1));
        }
    };
    match prepared.schedules.into_iter().find(|s| s.name == name) {
        Some(s) => Ok(Ok((prepared.desired.stack, s))),
        None => {
            eprintln!("no Schedule named {name:?} in the desired state");
            Ok(Err(1))
        }
    }
}

pub async fn trigger(cli: &Cli, name: &str, paths: &[PathBuf], wait: Duration) -> anyhow::Result<u8> {
    let store = open_store(cli)?;
    let (stack, s) = match load_schedule(&store, paths, name)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let swarm = swarm(cli)?;
    let now = OffsetDateTime::now_utc();
    let mut run = Run::new(name, now, Trigger::Manual, Outcome::Pending);
    run.job = Some(job_name(name, now, 1, true));

    if s.policy == ConcurrencyPolicy::Replace {
        for active in store
            .schedule_runs(name, 0)?
            .into_iter()
            .filter(|r| r.outcome.is_active())
        {
            if let Some(job) = &active.job {
                if let Err(e) = swarm.remove_job(job).await {
                    eprintln!("warning: cannot stop job {job}: {e}");
                }
            }
            let mut replaced = active.clone();
            replaced.outcome = Outcome::Replaced;
            replaced.finished_at = Some(now);
            replaced.message = "replaced by a manual run".into();
            if store.update_run(active.outcome, &replaced)? {
                record(
                    &store,
                    EventType::Normal,
                    "RunReplaced",
                    name,
                    format!(
                        "run #{} of {} replaced by a manual run",
                        active.id,
                        rfc3339(active.scheduled_at)
                    ),
                );
            }
        }
    }
    let id = match store.claim_run(&run, s.policy == ConcurrencyPolicy::Forbid)? {
        Claim::Inserted(id) => id,
        Claim::Busy(active) => {
            let mut skipped = run.clone();
            skipped.outcome = Outcome::Skipped;
            skipped.job = None;
            skipped.finished_at = Some(now);
            skipped.message = format!(
                "run #{} of {} was still active",
                active.id,
                rfc3339(active.scheduled_at)
            );
            store.claim_run(&skipped, false)?;
            record(
                &store,
                EventType::Normal,
                "RunSkipped",
                name,
                format!("manual run skipped (concurrencyPolicy Forbid): {}", skipped.message),
            );
            println!("skipped: {} (concurrencyPolicy Forbid)", skipped.message);
            return Ok(1);
        }
        Claim::Exists(_) => anyhow::bail!("a run of {name} for {} exists already", rfc3339(now)),
    };
    record(
        &store,
        EventType::Normal,
        "RunTriggered",
        name,
        format!("manual run #{id} requested"),
    );
    println!(
        "run #{id} of {name} requested; waiting for it (up to {})",
        humantime::format_duration(wait)
    );

    let images = match &s.job.image_from {
        Some(svc) => match swarm.observe(&stack, &[svc.as_str()]).await {
            steward_plan::Observed::Known { services, .. } => Some(
                services
                    .into_iter()
                    .map(|o| (o.name.clone(), o.state.image.clone()))
                    .collect(),
            ),
            steward_plan::Observed::Unknown { .. } => None,
        },
        None => None,
    };
    let deadline = Instant::now() + wait;
    loop {
        let ctx = Context {
            stack: &stack,
            now: OffsetDateTime::now_utc(),
            controller_started: now,
            images: images.as_ref(),
            generation: 0,
        };
        let done = reconcile(&store, &swarm, &s, &ctx, Scope::Run(id)).await?;
        for ev in &done.events {
            record(&store, ev.type_, ev.reason, name, ev.message.clone());
        }
        let current = store
            .run(id)?
            .ok_or_else(|| anyhow::anyhow!("run #{id} vanished from the store"))?;
        if !current.outcome.is_active() {
            let took = current
                .duration()
                .map_or(String::new(), |d| format!(" in {:.1}s", d.as_secs_f64()));
            println!("run #{id}: {}{took}: {}", current.outcome.as_str(), current.message);
            if !current.logs.is_empty() {
                println!("--- last output ---\n{}", current.logs.trim_end());
            }
            return Ok(u8::from(current.outcome != Outcome::Succeeded));
        }
        if Instant::now() >= deadline {
            eprintln!(
                "run #{id} still {} after {}; it goes on (see `steward runs {name}`)",
                current.outcome.as_str(),
                humantime::format_duration(wait)
            );
            return Ok(1);
        }
        let pause = match done.requeue {
            Requeue::Never => Duration::from_secs(1),
            r => r.delay(OffsetDateTime::now_utc()).unwrap_or(Duration::from_secs(1)),
        };
        tokio::time::sleep(pause.clamp(Duration::from_millis(200), Duration::from_secs(1))).await;
    }
}
