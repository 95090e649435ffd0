//! `steward describe KIND/NAME`: one object of any kind in full.

use std::fmt::Write;
use std::path::PathBuf;

use steward_controller::prepare_all;
use steward_core::status::ResourceStatus;
use steward_core::{rfc3339, Kind, ObjectRef};
use steward_store::EventFilter;

use crate::commands::{ago, manifest_paths, open_store};
use crate::events::{event_rows, EVENT_HEADER};
use crate::output::{emit, table, Format};
use crate::schedules::{run_rows, RUN_HEADER};
use crate::Cli;

/// Events shown with an object.
const RECENT_EVENTS: usize = 20;
/// Runs shown with a schedule.
const RECENT_RUNS: usize = 10;

pub fn describe(cli: &Cli, object: &str, paths: &[PathBuf], output: Format) -> anyhow::Result<u8> {
    let object: ObjectRef = match object.parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let store = open_store(cli)?;
    let status = store.status(object.kind.as_str(), &object.name)?;
    let events = store.events(&EventFilter {
        object: Some(object.to_string()),
        limit: Some(RECENT_EVENTS),
        ..Default::default()
    })?;
    // The spec as declared now, when the manifests can be read; describe works without them.
    let prepared = manifest_paths(&store, paths).ok().and_then(|p| prepare_all(&p).ok());
    let mut spec = serde_json::Value::Null;
    let mut spec_lines = String::new();
    let mut runs = Vec::new();
    match object.kind {
        Kind::Schedule => {
            if let Some(s) = prepared
                .as_ref()
                .and_then(|p| p.schedules.iter().find(|s| s.name == object.name))
            {
                let image = s
                    .job
                    .image
                    .clone()
                    .or_else(|| {
                        s.job
                            .image_from
                            .as_ref()
                            .map(|f| format!("(the image Service/{f} runs)"))
                    })
                    .unwrap_or_default();
                spec = serde_json::json!({
                    "schedule": s.cron.expr(), "timeZone": s.cron.time_zone(),
                    "concurrencyPolicy": format!("{:?}", s.policy), "suspend": s.suspend,
                    "startingDeadline": s.starting_deadline.map(|d| humantime::format_duration(d).to_string()),
                    "timeout": humantime::format_duration(s.timeout).to_string(), "retries": s.retries,
                    "image": image, "command": s.job.command, "args": s.job.args,
                    "env": s.job.env.keys().collect::<Vec<_>>(),
                });
                let _ = writeln!(
                    spec_lines,
                    "Schedule:     {} ({})\nPolicy:       {:?}{}\nTimeout:      {}, retries {}\nImage:        {image}\nCommand:      {}",
                    s.cron.expr(),
                    s.cron.time_zone(),
                    s.policy,
                    if s.suspend { ", suspended" } else { "" },
                    humantime::format_duration(s.timeout),
                    s.retries,
                    s.job.command.iter().chain(&s.job.args).cloned().collect::<Vec<_>>().join(" "),
                );
            }
            runs = store.runs(Some(&object.name), Some(RECENT_RUNS))?;
        }
        Kind::Service => {
            if let Some(d) = prepared
                .as_ref()
                .and_then(|p| p.desired.services.iter().find(|s| s.name == object.name))
            {
                spec = serde_json::json!({
                    "image": d.state.image, "replicas": d.state.replicas,
                    "env": d.state.env.keys().collect::<Vec<_>>(), "specHash": d.spec_hash,
                });
                let _ = writeln!(
                    spec_lines,
                    "Image:        {}\nReplicas:     {}\nSpec hash:    {}",
                    d.state.image, d.state.replicas, d.spec_hash
                );
            }
            let revs = store.revisions(&object.name)?;
            if let Some(r) = revs.first() {
                let _ = writeln!(
                    spec_lines,
                    "Revisions:    {} recorded, newest #{} {:?} ({})",
                    revs.len(),
                    r.number,
                    r.outcome,
                    r.image
                );
            }
        }
        Kind::Database => {
            if let Some(d) = prepared
                .as_ref()
                .and_then(|p| p.databases.iter().find(|d| d.name == object.name))
            {
                spec = serde_json::to_value(&d.spec).unwrap_or_default();
                spec_lines.push_str(&crate::describe_database::spec_text(d));
            }
            for t in steward_database::Task::ALL {
                runs.extend(store.runs(Some(&t.run_name(&object.name)), Some(RECENT_RUNS))?);
            }
            runs.sort_by(|a, b| b.scheduled_at.cmp(&a.scheduled_at).then(b.id.cmp(&a.id)));
            runs.truncate(RECENT_RUNS);
        }
        Kind::Stack | Kind::Rollout | Kind::Network | Kind::Volume | Kind::Secret | Kind::Config => {}
    }
    if status.is_none() && events.is_empty() && spec.is_null() {
        eprintln!("{object}: nothing known (not in the desired state, no status, no events)");
        return Ok(1);
    }
    emit(
        output,
        || {
            let mut out = format!("Name:         {object}\n");
            out.push_str(&spec_lines);
            if let Some(st) = &status {
                out.push_str(&status_text(st));
                if object.kind == Kind::Database {
                    out.push_str(&crate::describe_database::report_text(st));
                }
            } else {
                out.push_str("Status:       not reconciled yet\n");
            }
            if !runs.is_empty() {
                out.push_str("\nRuns:\n");
                out.push_str(&table(&RUN_HEADER, &run_rows(&runs)));
                if let Some(last) = runs.iter().find(|r| !r.logs.is_empty()) {
                    let _ = write!(
                        out,
                        "\nOutput of run #{} (last lines):\n{}\n",
                        last.id,
                        last_lines(&last.logs, 15)
                    );
                }
            }
            out.push_str("\nEvents:\n");
            if events.is_empty() {
                out.push_str("  none\n");
            } else {
                out.push_str(&table(&EVENT_HEADER, &event_rows(&events)));
            }
            out
        },
        || {
            serde_json::json!({
                "object": object.to_string(), "spec": spec, "status": status,
                "runs": runs.iter().map(steward_schedule::Run::listing_json).collect::<Vec<_>>(), "events": events,
            })
        },
    );
    Ok(0)
}

fn status_text(st: &ResourceStatus) -> String {
    let mut out = String::new();
    if let (Some(r), Some(d)) = (st.running_replicas, st.desired_replicas) {
        let _ = writeln!(out, "Replicas:     {r}/{d} running");
    }
    if let Some(details) = st.details.as_ref().and_then(|d| d.as_object()) {
        for (key, label) in [
            ("lastScheduleTime", "Last run:"),
            ("lastSuccessfulTime", "Last success:"),
            ("nextScheduleTime", "Next run:"),
            ("lastOutcome", "Last outcome:"),
        ] {
            if let Some(v) = details.get(key).and_then(|v| v.as_str()) {
                let _ = writeln!(out, "{label:<14}{v}");
            }
        }
    }
    let _ = writeln!(
        out,
        "Reconciled:   {} ago (generation {}, at {})\nConditions:",
        ago(st.last_reconcile),
        st.observed_generation,
        rfc3339(st.last_reconcile)
    );
    let rows: Vec<Vec<String>> = st
        .conditions
        .iter()
        .map(|c| {
            vec![
                format!("  {}", c.type_.as_str()),
                c.status.as_str().to_string(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["  TYPE", "STATUS", "REASON", "MESSAGE"], &rows));
    out
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
