//! Jobs against the real swarm: success, failure, starting twice, missing, removal.
//!
//! The demo image has no command that exits 0 by itself (`--healthcheck` needs a listener in the
//! job's own network namespace). A succeeding job is therefore the demo server stopped with
//! SIGTERM, which it handles by exiting 0; a failing job is `--healthcheck` against a closed port.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use steward_backends::jobs::{JobSpec, JobState, JobStatus};
use steward_backends::swarm::{Swarm, SwarmError, DEFAULT_DOCKER_HOST};

const IMAGE: &str = "taxcollector-demo:v1";
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn swarm_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.ControlAvailable}}"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true");
    if !ok {
        assert!(
            std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "{test}: needs a Docker swarm manager (STEWARD_REQUIRE_SERVICES=1)"
        );
        eprintln!("SKIPPED {test}: no Docker swarm manager");
    }
    ok
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["service", "rm", &self.0]).output();
    }
}

fn name(test: &str) -> String {
    format!("job-{test}-{}", std::process::id())
}

/// The demo server as a job: runs until stopped; SIGTERM makes it exit 0.
fn server_job(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        image: IMAGE.into(),
        command: vec![],
        args: vec![],
        env: BTreeMap::from([("DEMO_VERSION".to_string(), "job-ok".to_string())]),
        labels: BTreeMap::from([("team".to_string(), "tax".to_string())]),
        mounts: vec![],
        task: Default::default(),
        objects: Default::default(),
        object_labels: Default::default(),
    }
}

/// Exits 1 at once: nothing listens on port 1 inside the job's container.
fn failing_job(name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        image: IMAGE.into(),
        command: vec!["/demo-app".into(), "--healthcheck".into()],
        args: vec![],
        env: BTreeMap::from([("PORT".to_string(), "1".to_string())]),
        labels: BTreeMap::new(),
        mounts: vec![],
        task: Default::default(),
        objects: Default::default(),
        object_labels: Default::default(),
    }
}

async fn wait_for(swarm: &Swarm, name: &str, what: &str, done: impl Fn(&JobState) -> bool) -> JobStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = swarm.job_status(name).await.unwrap();
        if done(&status.state) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: not {what} within {DEADLINE:?}: {status:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Services with exactly this name (the CLI's name filter matches prefixes).
fn services_named(name: &str) -> String {
    let all = docker(&[
        "service",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("name={name}"),
    ]);
    all.lines().filter(|l| *l == name).map(|l| format!("{l}\n")).collect()
}

fn lines(s: &str) -> usize {
    s.lines().filter(|l| !l.trim().is_empty()).count()
}

/// The job's container once its output contains `needle`.
async fn container_logging(name: &str, needle: &str) -> String {
    let filter = format!("label=com.docker.swarm.service.name={name}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let id = docker(&["ps", "-q", "--no-trunc", "--filter", &filter]);
        if let Some(id) = id.lines().next() {
            let out = Command::new("docker").args(["logs", id]).output().unwrap();
            if String::from_utf8_lossy(&out.stderr).contains(needle) {
                return id.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no container logging {needle:?} within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn succeeding_job_is_succeeded_with_its_output() {
    if !swarm_available("succeeding_job_is_succeeded_with_its_output") {
        return;
    }
    let name = name("ok");
    let _c = Cleanup(name.clone());
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();

    let started = Instant::now();
    let id = swarm.start_job(&server_job(&name)).await.unwrap();
    // The handler for SIGTERM is installed before this line is printed.
    let container = container_logging(&name, "listening on").await;
    let up = started.elapsed();

    let status = swarm.job_status(&name).await.unwrap();
    assert_eq!(
        status.state,
        JobState::Running,
        "a job still running is Running: {status:?}"
    );
    assert_eq!(status.logs, None, "no output before the job has finished");

    let stopped = Instant::now();
    docker(&["kill", "--signal", "TERM", &container]);
    let status = wait_for(&swarm, &name, "Succeeded", |s| *s == JobState::Succeeded).await;
    let finished = stopped.elapsed();
    eprintln!("job {name}: start to running {up:?}; exit to Succeeded {finished:?}");

    assert_eq!(status.service_id.as_deref(), Some(id.as_str()));
    let logs = status.logs.expect("a finished job's output is captured");
    assert!(
        logs.contains("version=job-ok") && logs.contains("listening on 0.0.0.0:8080"),
        "{logs}"
    );

    let (reads, writes) = (swarm.calls.reads(), swarm.calls.writes());
    swarm.job_status(&name).await.unwrap();
    assert_eq!(swarm.calls.writes() - writes, 0);
    assert_eq!(
        swarm.calls.reads() - reads,
        3,
        "service, tasks (for the container), logs"
    );
}

#[tokio::test]
async fn failing_job_is_failed_with_exit_code_and_output() {
    if !swarm_available("failing_job_is_failed_with_exit_code_and_output") {
        return;
    }
    let name = name("fail");
    let _c = Cleanup(name.clone());
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();

    let started = Instant::now();
    let id = swarm.start_job(&failing_job(&name)).await.unwrap();
    let status = wait_for(&swarm, &name, "Failed", |s| matches!(s, JobState::Failed { .. })).await;
    let elapsed = started.elapsed();

    assert_eq!(status.service_id.as_deref(), Some(id.as_str()));
    let JobState::Failed { reason } = &status.state else {
        unreachable!()
    };
    eprintln!(
        "job {name}: start to Failed {elapsed:?}; reason {reason:?}; logs {:?}",
        status.logs
    );
    assert!(reason.contains("exit code 1"), "{reason}");
    assert!(reason.contains("non-zero exit"), "{reason}");
    let logs = status.logs.expect("a failed job's output is captured");
    assert!(logs.contains("healthcheck") && logs.contains("127.0.0.1:1"), "{logs}");
}

#[tokio::test]
async fn starting_twice_runs_the_job_once() {
    if !swarm_available("starting_twice_runs_the_job_once") {
        return;
    }
    let name = name("twice");
    let _c = Cleanup(name.clone());
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    let job = failing_job(&name);

    // Concurrent starts: one creates, the other finds it (before or after losing the create race).
    let (a, b) = tokio::join!(swarm.start_job(&job), swarm.start_job(&job));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    wait_for(&swarm, &name, "Failed", |s| matches!(s, JobState::Failed { .. })).await;

    // Starting a finished job again (a restarted controller) must not run it again.
    let writes = swarm.calls.writes();
    assert_eq!(swarm.start_job(&job).await.unwrap(), a);
    assert_eq!(swarm.calls.writes(), writes, "an existing job is not written to");

    let services = services_named(&name);
    assert_eq!(lines(&services), 1, "one service: {services}");
    let tasks = docker(&["service", "ps", "-q", "--no-trunc", &name]);
    assert_eq!(lines(&tasks), 1, "one task, not retried: {tasks}");
}

#[tokio::test]
async fn missing_job_is_missing() {
    if !swarm_available("missing_job_is_missing") {
        return;
    }
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    let status = swarm.job_status(&name("never-started")).await.unwrap();
    assert_eq!(
        status,
        JobStatus {
            state: JobState::Missing,
            service_id: None,
            exit_code: None,
            logs: None
        }
    );
    assert_eq!((swarm.calls.reads(), swarm.calls.writes()), (1, 0));
}

#[tokio::test]
async fn remove_is_idempotent() {
    if !swarm_available("remove_is_idempotent") {
        return;
    }
    let name = name("rm");
    let _c = Cleanup(name.clone());
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    swarm.start_job(&failing_job(&name)).await.unwrap();

    swarm.remove_job(&name).await.unwrap();
    assert_eq!(swarm.job_status(&name).await.unwrap().state, JobState::Missing);

    let (reads, writes) = (swarm.calls.reads(), swarm.calls.writes());
    swarm.remove_job(&name).await.unwrap();
    assert_eq!(swarm.calls.reads() - reads, 1);
    assert_eq!(swarm.calls.writes() - writes, 0, "nothing to remove, nothing written");
}

#[tokio::test]
async fn a_service_that_is_not_the_job_is_left_alone() {
    if !swarm_available("a_service_that_is_not_the_job_is_left_alone") {
        return;
    }
    let name = name("other");
    let _c = Cleanup(name.clone());
    let swarm = Swarm::connect(DEFAULT_DOCKER_HOST).unwrap();
    docker(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--replicas",
        "0",
        "--name",
        &name,
        IMAGE,
    ]);

    let err = swarm.start_job(&failing_job(&name)).await.unwrap_err();
    assert!(matches!(err, SwarmError::Refused { .. }), "{err:?}");
    assert!(swarm.job_status(&name).await.is_err());
    assert!(swarm.remove_job(&name).await.is_err());
    let services = services_named(&name);
    assert_eq!(lines(&services), 1, "still there: {services}");
}

#[tokio::test]
async fn unreachable_engine_is_an_error_not_missing() {
    // A job reported Missing would be started again; an unreadable engine must not look like that.
    let swarm = Swarm::connect("tcp://127.0.0.1:9").unwrap();
    let err = swarm.job_status("any").await.unwrap_err();
    assert!(matches!(err, SwarmError::Unreachable { .. }), "{err:?}");
    assert!(swarm.remove_job("any").await.is_err());
}
