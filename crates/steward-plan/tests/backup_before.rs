//! `backupBefore`: a rollout's PreDeploy phase takes the Database's backup first (the guide's
//! step 3, before the migrations), once per Database, waits for it, and a failed backup stops
//! the rollout before anything is touched.

mod fixtures;

use std::collections::BTreeMap;

use fixtures::*;
use steward_plan::rollout::*;
use steward_plan::DesiredService;
use steward_spec::{Duration, PreDeployJob, ResourceName};

const T0: i64 = 1_700_000_000_000;
const SEC: i64 = 1_000;

fn with(mut d: DesiredService, backup: Option<&str>, jobs: &[&str]) -> DesiredService {
    d.rollout.backup_before = backup.map(str::to_string);
    d.rollout.pre_deploy = jobs
        .iter()
        .map(|j| PreDeployJob {
            name: ResourceName::try_from(j.to_string()).unwrap(),
            command: None,
            args: None,
            timeout: Duration::from_secs(300),
        })
        .collect();
    d
}

fn last_good(ds: &[&DesiredService]) -> BTreeMap<String, Revision> {
    ds.iter()
        .map(|d| (d.name.clone(), Revision::of(d, 1, T0 - 3_600 * SEC, Outcome::Complete)))
        .collect()
}

fn at(now: i64, services: Vec<steward_plan::ObservedService>) -> Observations {
    Observations {
        now_ms: now,
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
        ..Default::default()
    }
}

#[test]
fn the_backup_comes_first_once_per_database_and_the_rollout_waits_for_it() {
    let old_web = desired("web").image("app:v1").build();
    let old_celery = desired("celery").image("app:v1").build();
    let web = with(desired("web").image("app:v2").build(), Some("tc-db"), &["migrate"]);
    let celery = with(desired("celery").image("app:v2").build(), Some("tc-db"), &[]);
    let d = stack_with(STACK, false, 2, vec![celery.clone(), web.clone()]);
    let mut r = begin(&d, "gen-2", &last_good(&[&old_web, &old_celery]), T0).unwrap();
    let jobs: Vec<(&str, Option<&str>)> = r
        .jobs
        .iter()
        .map(|j| (j.job.as_str(), j.backup_of.as_deref()))
        .collect();
    assert_eq!(
        jobs,
        [("backup-tc-db", Some("tc-db")), ("migrate", None)],
        "one backup, first"
    );
    let key = r.jobs[0].swarm_name.clone();
    assert!(is_backup_key(&key), "{key}");
    let running = vec![observed_from(&old_web).build(), observed_from(&old_celery).build()];

    // The first step asks the controller for the backup, not Swarm for a job.
    let out = step(&mut r, &d, &at(T0, running.clone()));
    assert_eq!(out.start_backups, [("tc-db".to_string(), key.clone())]);
    assert!(out.start_jobs.is_empty());
    assert_eq!(r.phase, Phase::PreDeploy);
    // Running: nothing else starts, however long it takes within the progress deadline.
    let running_obs = at(T0 + 120 * SEC, running.clone());
    let mut o = running_obs;
    o.jobs.insert(key.clone(), JobObs::Running);
    let out = step(&mut r, &d, &o);
    assert!(out.start_jobs.is_empty() && out.start_backups.is_empty(), "{out:?}");
    // Done: the migration starts next.
    let mut o = at(T0 + 121 * SEC, running.clone());
    o.jobs.insert(
        key.clone(),
        JobObs::Succeeded {
            logs: "backup written".into(),
        },
    );
    let out = step(&mut r, &d, &o);
    assert!(out.remove_jobs.contains(&key));
    let mut o = at(T0 + 122 * SEC, running);
    o.jobs.insert(key, JobObs::Succeeded { logs: String::new() });
    let out = step(&mut r, &d, &o);
    assert_eq!(out.start_jobs.len(), 1);
    assert_eq!(out.start_jobs[0].job, "migrate");
}

#[test]
fn a_failed_backup_stops_the_rollout_before_anything_is_touched() {
    let old = desired("web").image("app:v1").build();
    let web = with(desired("web").image("app:v2").build(), Some("tc-db"), &["migrate"]);
    let d = stack_with(STACK, false, 2, vec![web.clone()]);
    let mut r = begin(&d, "gen-2", &last_good(&[&old]), T0).unwrap();
    let key = r.jobs[0].swarm_name.clone();
    let running = vec![observed_from(&old).build()];
    step(&mut r, &d, &at(T0, running.clone()));
    let mut o = at(T0 + SEC, running);
    o.jobs.insert(
        key,
        JobObs::Failed {
            reason: "pg_dump: error: connection refused".into(),
            logs: String::new(),
        },
    );
    let out = step(&mut r, &d, &o);
    assert_eq!(r.phase, Phase::RolledBack, "{:?}", r.cause);
    assert!(
        r.cause.as_deref().unwrap().contains("connection refused"),
        "{:?}",
        r.cause
    );
    assert!(out.start_jobs.is_empty(), "the migration never starts");
    assert!(r.jobs.iter().all(|j| !j.done), "{:?}", r.jobs);
}

#[test]
fn a_backup_nobody_is_taking_any_more_is_started_again_and_the_rollout_goes_on() {
    let old = desired("web").image("app:v1").build();
    let web = with(desired("web").image("app:v2").build(), Some("tc-db"), &["migrate"]);
    let d = stack_with(STACK, false, 2, vec![web.clone()]);
    let mut r = begin(&d, "gen-2", &last_good(&[&old]), T0).unwrap();
    let key = r.jobs[0].swarm_name.clone();
    let running = vec![observed_from(&old).build()];
    let out = step(&mut r, &d, &at(T0, running.clone()));
    assert_eq!(out.start_backups.len(), 1);
    // A restarted controller has no backup in flight for the key: Missing, not Failed.
    let out = step(&mut r, &d, &at(T0 + 30 * SEC, running.clone()));
    assert_eq!(out.start_backups, [("tc-db".to_string(), key.clone())], "{out:?}");
    assert_eq!(r.phase, Phase::PreDeploy, "{:?}", r.cause);
    assert!(
        out.events.iter().any(|e| e.message.contains("started again")),
        "{:?}",
        out.events
    );
    assert!(out.start_jobs.is_empty(), "the migration waits for the backup");
    // The one started again succeeds: the migration comes next.
    let mut o = at(T0 + 60 * SEC, running.clone());
    o.jobs.insert(key.clone(), JobObs::Succeeded { logs: String::new() });
    step(&mut r, &d, &o);
    let mut o = at(T0 + 61 * SEC, running);
    o.jobs.insert(key, JobObs::Succeeded { logs: String::new() });
    let out = step(&mut r, &d, &o);
    assert_eq!(out.start_jobs.len(), 1);
    assert_eq!(out.start_jobs[0].job, "migrate");
}

#[test]
fn a_scale_only_change_takes_no_backup() {
    let old = with(desired("web").image("app:v1").build(), Some("tc-db"), &[]);
    let mut scaled = old.clone();
    scaled.state.replicas = 5;
    let scaled = DesiredService::new(
        scaled.name.clone(),
        scaled.state.clone(),
        scaled.secret_env.clone(),
        false,
    );
    let scaled = with(scaled, Some("tc-db"), &[]);
    let d = stack_with(STACK, false, 2, vec![scaled]);
    let r = begin(&d, "gen-2", &last_good(&[&old]), T0).unwrap();
    assert!(r.jobs.is_empty(), "{:?}", r.jobs);
}
