//! One step of the rollout state machine: pre-deploy jobs, updating, verifying, rolling back.

use std::collections::BTreeSet;

use steward_core::{ObjectRef, Reason};

use super::verify::{verify_service, Verdict};
use super::*;

/// Grace for comparing Swarm's timestamps with ours (same host, different clocks' rounding).
const CLOCK_SKEW_MS: i64 = 1_000;

/// Advances the rollout by one pass.
pub fn step(r: &mut Rollout, desired: &Desired, obs: &Observations) -> StepOutput {
    let mut out = StepOutput::default();
    let now = obs.now_ms;
    let policy = |name: &str| {
        desired
            .services
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.rollout.clone())
            .unwrap_or_else(RolloutPolicy::none)
    };
    let target = |name: &str| desired.services.iter().find(|d| d.name == name);

    match r.phase {
        Phase::Complete | Phase::RolledBack | Phase::Paused => return out,
        Phase::PreDeploy => {
            let deadline = r
                .jobs
                .iter()
                .map(|j| policy(&j.service).progress_deadline_ms)
                .max()
                .unwrap_or(i64::MAX);
            if now - r.phase_started_ms > deadline {
                let running = r.jobs.iter().find(|j| !j.done).cloned();
                if let Some(j) = &running {
                    out.remove_jobs.push(j.swarm_name.clone());
                }
                let cause = format!(
                    "progress deadline {}s exceeded in pre-deploy{}",
                    deadline / 1000,
                    running
                        .map(|j| format!(" (job {}/{} not finished)", j.service, j.job))
                        .unwrap_or_default()
                );
                reject_before_any_write(r, cause, now, &mut out);
                return out;
            }
            step_jobs(r, desired, obs, &mut out);
            if r.phase == Phase::PreDeploy && r.jobs.iter().all(|j| j.done) {
                r.phase = Phase::Updating;
                r.phase_started_ms = now;
                out.events.push(RolloutEvent {
                    reason: Reason::PreDeployComplete,
                    object: ObjectRef::rollout(r.generation),
                    message: format!(
                        "pre-deploy jobs done: {}",
                        r.jobs
                            .iter()
                            .map(|j| format!("{}/{}", j.service, j.job))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            if r.phase != Phase::Updating {
                return out;
            }
        }
        _ => {}
    }

    if r.phase == Phase::RollingBack {
        step_rolling_back(r, obs, &mut out);
        return out;
    }

    // Updating / Verifying.
    let mut failure: Option<(String, String)> = None;
    let verified: BTreeSet<String> = r
        .services
        .iter()
        .filter(|s| s.phase == SvcPhase::Verified)
        .map(|s| s.name.clone())
        .collect();
    let in_rollout: BTreeSet<String> = r.services.iter().map(|s| s.name.clone()).collect();
    for s in &mut r.services {
        let p = policy(&s.name);
        let deadline = p.progress_deadline_ms.max(1);
        match s.phase {
            SvcPhase::Pending => {
                let blocked = p
                    .depends_on
                    .iter()
                    .any(|d| in_rollout.contains(d) && !verified.contains(d));
                if !blocked {
                    s.phase = SvcPhase::Updating;
                    s.phase_started_ms = now;
                    out.events.push(RolloutEvent {
                        reason: Reason::RolloutUpdating,
                        object: ObjectRef::service(&s.name),
                        message: format!("rolling out {} (revision {})", s.to_image, &s.to_hash),
                    });
                }
            }
            SvcPhase::Updating => {
                let o = obs.services.get(&s.name);
                let replicas = target(&s.name).map_or(0, |d| d.state.replicas);
                if let Some(u) = o.and_then(|o| o.update_status.as_ref()) {
                    let ours = u.started_at_ms.is_none_or(|t| t + CLOCK_SKEW_MS >= s.phase_started_ms);
                    let failed = matches!(
                        u.state,
                        UpdateState::Paused
                            | UpdateState::RollbackStarted
                            | UpdateState::RollbackPaused
                            | UpdateState::RollbackCompleted
                    );
                    if ours
                        && failed
                        && o.is_some_and(|o| {
                            o.spec_hash.as_deref() != Some(s.to_hash.as_str()) || u.state == UpdateState::Paused
                        })
                    {
                        failure = Some((s.name.clone(), format!("Swarm update {:?}: {}", u.state, u.message)));
                        break;
                    }
                }
                let written = o.is_some_and(|o| o.spec_hash.as_deref() == Some(s.to_hash.as_str()));
                // Swarm clears the update status on every write and counts old tasks as running
                // until it replaces them: when tasks are to be replaced, only an update Swarm
                // started after this phase began and completed counts as done.
                let needs_update = !s.scale_only && s.from.is_some();
                let phase_start = s.phase_started_ms;
                let settled = o.is_some_and(|o| {
                    let status_ok = match &o.update_status {
                        None => !needs_update,
                        // No task to replace: Swarm starts no update, and whatever status the
                        // last one left (even a rollback) says nothing about this change.
                        Some(u) if !needs_update => {
                            !matches!(u.state, UpdateState::Updating | UpdateState::RollbackStarted)
                        }
                        Some(u) => {
                            u.state == UpdateState::Completed
                                && u.started_at_ms.is_none_or(|t| t + CLOCK_SKEW_MS >= phase_start)
                        }
                    };
                    // A global service runs one task per eligible node: Swarm's own count.
                    let want = if o.state.mode == Mode::Global {
                        o.desired_task_count()
                    } else {
                        replicas
                    };
                    o.running_tasks == Some(want) && status_ok
                });
                if written && settled {
                    let verify = !s.scale_only && (p.health.is_some() || p.analysis.is_some());
                    s.phase = if verify {
                        SvcPhase::Verifying
                    } else {
                        SvcPhase::Verified
                    };
                    s.phase_started_ms = now;
                    out.events.push(RolloutEvent {
                        reason: if verify {
                            Reason::RolloutVerifying
                        } else {
                            Reason::RolloutVerified
                        },
                        object: ObjectRef::service(&s.name),
                        message: if verify {
                            format!(
                                "{replicas}/{replicas} tasks on {}; verifying for {}s",
                                s.to_image,
                                p.verify_window_ms / 1000
                            )
                        } else {
                            format!("{replicas}/{replicas} tasks on {}", s.to_image)
                        },
                    });
                } else if now - s.phase_started_ms > deadline {
                    let running = o.and_then(|o| o.running_tasks).unwrap_or(0);
                    failure = Some((
                        s.name.clone(),
                        format!(
                            "progress deadline {}s exceeded while updating: {running}/{replicas} tasks running",
                            deadline / 1000
                        ),
                    ));
                    break;
                }
            }
            SvcPhase::Verifying => {
                if let Some(why) = verify_service(s, &p, obs) {
                    match why {
                        Verdict::Fail(cause) => {
                            failure = Some((s.name.clone(), cause));
                            break;
                        }
                        Verdict::Inconclusive(cause) => {
                            r.phase = Phase::Paused;
                            r.phase_started_ms = now;
                            r.cause = Some(format!("{}: {cause}", s.name));
                            out.events.push(RolloutEvent {
                                reason: Reason::AnalysisInconclusive,
                                object: ObjectRef::service(&s.name),
                                message: format!(
                                    "rollout paused for a decision (steward rollback, or a new commit): {cause}"
                                ),
                            });
                            return out;
                        }
                        Verdict::Pass => {
                            s.phase = SvcPhase::Verified;
                            s.phase_started_ms = now;
                            out.events.push(RolloutEvent {
                                reason: Reason::RolloutVerified,
                                object: ObjectRef::service(&s.name),
                                message: format!(
                                    "{} verified: {} health probes, {} analysis measurements",
                                    s.to_image, s.health.probes, s.analysis.measurements
                                ),
                            });
                        }
                    }
                } else if now - s.phase_started_ms > deadline {
                    failure = Some((
                        s.name.clone(),
                        format!("progress deadline {}s exceeded while verifying", deadline / 1000),
                    ));
                    break;
                }
            }
            _ => {}
        }
    }

    if let Some((name, cause)) = failure {
        start_rollback(r, &name, &cause, now, &mut out);
        step_rolling_back(r, obs, &mut out);
        return out;
    }
    if r.services.iter().all(|s| s.phase == SvcPhase::Verified) {
        r.phase = Phase::Complete;
        r.phase_started_ms = now;
        for s in &r.services {
            out.finished
                .push((s.name.clone(), s.to_hash.clone(), Outcome::Complete));
        }
        out.events.push(RolloutEvent {
            reason: Reason::RolloutComplete,
            object: ObjectRef::rollout(r.generation),
            message: format!(
                "generation {} rolled out: {}",
                r.generation,
                r.services
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.to_image))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    } else if r
        .services
        .iter()
        .all(|s| matches!(s.phase, SvcPhase::Verifying | SvcPhase::Verified))
    {
        if r.phase != Phase::Verifying {
            r.phase = Phase::Verifying;
            r.phase_started_ms = now;
        }
    } else {
        r.phase = Phase::Updating;
    }
    out
}

fn step_jobs(r: &mut Rollout, desired: &Desired, obs: &Observations, out: &mut StepOutput) {
    let now = obs.now_ms;
    // Sequential: one job at a time, in manifest order.
    let Some(idx) = r.jobs.iter().position(|j| !j.done) else {
        return;
    };
    let j = r.jobs[idx].clone();
    let d = desired.services.iter().find(|d| d.name == j.service);
    let def = d.and_then(|d| d.rollout.pre_deploy.iter().find(|x| x.name.as_str() == j.job));
    // A backup is bounded by the PreDeploy phase's progress deadline alone: its size decides.
    let timeout_ms = match &j.backup_of {
        Some(_) => i64::MAX,
        None => def.map_or(300_000, |x| x.timeout.get().as_millis() as i64),
    };
    let fail = |r: &mut Rollout, out: &mut StepOutput, cause: String, logs: &str| {
        out.remove_jobs.push(j.swarm_name.clone());
        out.events.push(RolloutEvent {
            reason: Reason::PreDeployFailed,
            object: ObjectRef::service(&j.service),
            message: format!("job {} failed: {cause}{}", j.job, logs_suffix(logs)),
        });
        reject_before_any_write(
            r,
            format!("pre-deploy job {}/{} failed: {cause}", j.service, j.job),
            now,
            out,
        );
    };
    match obs.jobs.get(&j.swarm_name).cloned().unwrap_or(JobObs::Missing) {
        // A backup nobody is taking (never started, or its controller stopped, or its start
        // failed) is started (again): unlike a Swarm job it changes nothing but adds a file, and
        // the PreDeploy phase's progress deadline bounds the retries.
        JobObs::Missing if j.backup_of.is_some() => {
            let db = j.backup_of.clone().unwrap_or_default();
            out.start_backups.push((db.clone(), j.swarm_name.clone()));
            let message = match j.started_ms {
                None => format!("backup of Database/{db} started (backupBefore)"),
                Some(_) => format!(
                    "backup of Database/{db} started again (backupBefore): the one started before is not running (controller restarted, or it could not start)"
                ),
            };
            r.jobs[idx].started_ms = Some(now);
            out.events.push(RolloutEvent {
                reason: Reason::PreDeployStarted,
                object: ObjectRef::service(&j.service),
                message,
            });
        }
        JobObs::Missing if j.started_ms.is_none() => {
            let Some(d) = d else { return };
            let def = def.cloned();
            out.start_jobs.push(JobStart {
                swarm_name: j.swarm_name.clone(),
                service: j.service.clone(),
                job: j.job.clone(),
                image: d.state.image.clone(),
                command: def.as_ref().and_then(|x| x.command.clone()).unwrap_or_default(),
                args: def.as_ref().and_then(|x| x.args.clone()).unwrap_or_default(),
                env: d.state.env.clone(),
                task: d.state.task.for_job(),
                objects: d.objects.clone(),
            });
            r.jobs[idx].started_ms = Some(now);
            out.events.push(RolloutEvent {
                reason: Reason::PreDeployStarted,
                object: ObjectRef::service(&j.service),
                message: format!("job {} started with {}", j.job, d.state.image),
            });
        }
        JobObs::Missing => {
            // Started but not visible yet (or removed by someone): never start it twice.
            if now - j.started_ms.unwrap_or(now) > timeout_ms {
                fail(r, out, "job service disappeared".into(), "");
            }
        }
        JobObs::Running => {
            if now - j.started_ms.unwrap_or(now) > timeout_ms {
                fail(r, out, format!("timed out after {}s", timeout_ms / 1000), "");
            }
        }
        JobObs::Succeeded { logs } => {
            r.jobs[idx].done = true;
            out.remove_jobs.push(j.swarm_name.clone());
            out.events.push(RolloutEvent {
                reason: Reason::PreDeploySucceeded,
                object: ObjectRef::service(&j.service),
                message: format!("job {} succeeded{}", j.job, logs_suffix(&logs)),
            });
        }
        JobObs::Failed { reason, logs } => fail(r, out, reason, &logs),
    }
}

/// A job's captured output, appended to its event message.
fn logs_suffix(logs: &str) -> String {
    if logs.is_empty() {
        String::new()
    } else {
        format!("\n--- logs ---\n{logs}")
    }
}

/// Rejects the revision while nothing has been replaced: no service is written at all.
fn reject_before_any_write(r: &mut Rollout, cause: String, now: i64, out: &mut StepOutput) {
    r.cause = Some(cause.clone());
    for s in &mut r.services {
        s.phase = SvcPhase::RolledBack;
        out.finished
            .push((s.name.clone(), s.to_hash.clone(), Outcome::RolledBack));
    }
    r.phase = Phase::RolledBack;
    r.phase_started_ms = now;
    out.events.push(RolloutEvent {
        reason: Reason::RolledBack,
        object: ObjectRef::rollout(r.generation),
        message: format!("generation {} rejected, no service was changed: {cause}", r.generation),
    });
}

/// Every service the revision changed returns to its previous good spec.
pub fn start_rollback(r: &mut Rollout, name: &str, cause: &str, now_ms: i64, out: &mut StepOutput) {
    r.cause = Some(format!("{name}: {cause}"));
    r.phase = Phase::RollingBack;
    r.phase_started_ms = now_ms;
    for s in &mut r.services {
        s.phase = match s.phase {
            // Untouched: nothing to undo.
            SvcPhase::Pending if s.from.is_some() => SvcPhase::RolledBack,
            _ => SvcPhase::RollingBack,
        };
        s.phase_started_ms = now_ms;
    }
    out.events.push(RolloutEvent {
        reason: Reason::RollingBack,
        object: ObjectRef::service(name),
        message: format!(
            "rolling back generation {} ({}): {cause}",
            r.generation,
            r.services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
}

fn step_rolling_back(r: &mut Rollout, obs: &Observations, out: &mut StepOutput) {
    for s in &mut r.services {
        if s.phase != SvcPhase::RollingBack {
            continue;
        }
        let o = obs.services.get(&s.name);
        let done = match &s.from {
            None => o.is_none(),
            Some(rev) => o.is_some_and(|o| {
                // The restored spec carries the secrets that run now: its hash differs from the
                // revision's own when a secret was rotated in between.
                let restored = rev
                    .restore(Some(&o.state), None, RolloutPolicy::none())
                    .map(|x| x.spec_hash);
                let back = o.spec_hash.as_deref() == Some(rev.spec_hash.as_str())
                    || (o.spec_hash.is_some() && o.spec_hash == restored);
                let want = if rev.state.mode == Mode::Global {
                    o.desired_task_count()
                } else {
                    rev.state.replicas
                };
                back && o.running_tasks == Some(want)
                    && o.update_status
                        .as_ref()
                        .is_none_or(|u| u.state != UpdateState::Updating && u.state != UpdateState::RollbackStarted)
            }),
        };
        if done {
            s.phase = SvcPhase::RolledBack;
            s.phase_started_ms = obs.now_ms;
        }
    }
    if r.services.iter().all(|s| s.phase == SvcPhase::RolledBack) {
        r.phase = Phase::RolledBack;
        r.phase_started_ms = obs.now_ms;
        for s in &r.services {
            out.finished
                .push((s.name.clone(), s.to_hash.clone(), Outcome::RolledBack));
        }
        let cause = r.cause.clone().unwrap_or_default();
        out.events.push(RolloutEvent {
            reason: Reason::RolledBack,
            object: ObjectRef::rollout(r.generation),
            message: format!(
                "generation {} rolled back, previous versions restored ({}); it is not applied again until the desired state changes. Cause: {cause}",
                r.generation,
                r.services
                    .iter()
                    .map(|s| match &s.from {
                        Some(f) => format!("{} {}", s.name, f.image),
                        None => format!("{} removed", s.name),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
}
