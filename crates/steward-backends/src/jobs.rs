//! One-shot jobs as Swarm replicated-job services: started at most once per name, watched to
//! completion, their last output read back, removed when no longer wanted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::Ordering;

use bollard::errors::Error as ApiError;
use bollard::models::*;
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions, LogsOptions};
use futures_util::StreamExt;

use crate::swarm::{error_chain, Swarm, SwarmError};

/// Marks a service as a job created by `start_job`. The value is the job's name, so a service that
/// merely happens to share the name is never mistaken for the job (and never removed as one).
pub const JOB_LABEL: &str = "steward.io/job";

/// How much of a finished job's output to read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTail {
    pub lines: usize,
    pub bytes: usize,
}

impl LogTail {
    /// For a pre-deploy job: enough to see why it failed, small enough for an event line.
    pub const SHORT: LogTail = LogTail { lines: 50, bytes: 4096 };
    /// For a scheduled run: the last 64 KiB, kept with the run in the store.
    pub const RUN: LogTail = LogTail {
        lines: 5000,
        bytes: 64 * 1024,
    };
}

#[cfg(test)]
const LOG_TAIL_LINES: usize = LogTail::SHORT.lines;
#[cfg(test)]
const LOG_MAX_BYTES: usize = LogTail::SHORT.bytes;

/// A volume, bind mount or tmpfs in a job's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobMount {
    pub kind: MountKind,
    /// Volume name or absolute host path; `None` for tmpfs.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

/// Env values shorter than this are not scrubbed from error messages: replacing every "1" or
/// "on" would garble the message while hiding nothing worth hiding.
const SCRUB_MIN_LEN: usize = 4;

pub struct JobSpec {
    /// Swarm service name (at most 63 characters). The caller makes it unique and deterministic:
    /// it is the job's identity, and starting a name twice runs the job once.
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when non-empty.
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Values may be secrets: they are never logged, printed by `Debug`, or put in errors.
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<JobMount>,
    /// Task settings taken from a service (networks, mounts, secrets, configs, user, ...) for a
    /// pre-deploy job that runs as the service would; empty for schedules' jobs.
    pub task: steward_plan::TaskState,
    /// Secrets and configs `task` mounts that steward makes: created (if missing) before the job.
    pub objects: BTreeMap<String, steward_plan::ObjectData>,
    /// Labels of those objects (ownership: the stack's service, or the schedule).
    pub object_labels: BTreeMap<String, String>,
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("labels", &self.labels)
            .field("mounts", &self.mounts)
            .field("task", &self.task)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Created and not finished yet (including waiting to be scheduled).
    Running,
    Succeeded,
    /// The task failed, was rejected, or was orphaned; the job is not retried.
    Failed {
        reason: String,
    },
    /// No service with that name exists.
    Missing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatus {
    pub state: JobState,
    pub service_id: Option<String>,
    /// The exit code of the finished task's container, when it had one.
    pub exit_code: Option<i64>,
    /// The job's last output (stdout and stderr interleaved), only once it has finished and only
    /// when its container could be read: at most 50 lines and 4 KiB.
    pub logs: Option<String>,
}

impl Swarm {
    fn count_read(&self) {
        self.calls.reads.fetch_add(1, Ordering::Relaxed);
    }
    fn count_write(&self) {
        self.calls.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Creates the job's service and returns its id. When the job already exists (running or
    /// finished) it is not run again: its id is returned. One read when it exists; one read and
    /// one write when it is created.
    pub async fn start_job(&self, job: &JobSpec) -> Result<String, SwarmError> {
        const OP: &str = "start job";
        if let Some(s) = self.find_service(OP, &job.name).await? {
            return job_service_id(OP, &job.name, &s);
        }
        self.count_write();
        for (name, data) in &job.objects {
            self.create_object_labelled(name, data, &job.object_labels).await?;
        }
        let refs = self.object_refs(&job.task).await?;
        match self.docker().create_service(job_service_spec(job, &refs), None).await {
            Ok(r) => Ok(r.id.unwrap_or_default()),
            // Another starter created it between our lookup and our create: the job is started,
            // once, and its id is what the caller needs.
            Err(ApiError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => match self.find_service(OP, &job.name).await? {
                Some(s) => job_service_id(OP, &job.name, &s),
                None => Err(SwarmError::Refused {
                    op: OP,
                    name: job.name.clone(),
                    message: scrub(message, &job.env),
                }),
            },
            Err(e) => Err(api_error(OP, &job.name, e, &job.env)),
        }
    }

    /// Where the job stands. The service's task counts decide when they show it complete;
    /// otherwise its tasks do. Reads: one when Missing, two when Running (service, tasks), three
    /// when finished (the tasks also name the container whose logs are read). Output that cannot
    /// be read leaves `logs` empty rather than hiding the state.
    pub async fn job_status(&self, name: &str) -> Result<JobStatus, SwarmError> {
        self.job_status_tail(name, LogTail::SHORT).await
    }

    /// [`Swarm::job_status`], reading back `tail` of a finished job's output.
    pub async fn job_status_tail(&self, name: &str, tail: LogTail) -> Result<JobStatus, SwarmError> {
        const OP: &str = "job status";
        let Some(service) = self.find_service(OP, name).await? else {
            return Ok(JobStatus {
                state: JobState::Missing,
                service_id: None,
                exit_code: None,
                logs: None,
            });
        };
        let id = job_service_id(OP, name, &service)?;
        let total = total_completions(&service).ok_or_else(|| not_a_job(OP, name))?;
        let completed = service
            .service_status
            .as_ref()
            .and_then(|s| s.completed_tasks)
            .unwrap_or(0);

        let (state, finished_task) = if completed >= total {
            let task = match self.job_tasks(OP, name, &id).await {
                Ok(tasks) => latest(current_iteration(&service, tasks), |s| s == TaskState::COMPLETE),
                Err(e) => {
                    tracing::debug!(job = name, error = %error_chain(&e), "finished job: tasks unreadable, no logs");
                    None
                }
            };
            (JobState::Succeeded, task)
        } else {
            let tasks = current_iteration(&service, self.job_tasks(OP, name, &id).await?);
            state_from_tasks(tasks, total)
        };

        let exit_code = finished_task
            .as_ref()
            .and_then(|t| t.status.as_ref()?.container_status.as_ref())
            .filter(|c| c.container_id.as_deref().is_some_and(|id| !id.is_empty()))
            .and_then(|c| c.exit_code);
        let container = finished_task
            .as_ref()
            .and_then(|t| t.status.as_ref()?.container_status.as_ref()?.container_id.clone())
            .filter(|c| !c.is_empty());
        let logs = match container {
            Some(c) => match self.container_tail(&c, tail).await {
                Ok(text) => Some(text),
                Err(e) => {
                    tracing::debug!(job = name, error = %error_chain(&e), "finished job: logs unreadable");
                    None
                }
            },
            None => None,
        };
        Ok(JobStatus {
            state,
            service_id: Some(id),
            exit_code,
            logs,
        })
    }

    /// Removes the job's service, and with it the job's containers. Removing a job that does not
    /// exist is Ok; a service of that name that is not this job is left alone and reported.
    pub async fn remove_job(&self, name: &str) -> Result<(), SwarmError> {
        const OP: &str = "remove job";
        let Some(service) = self.find_service(OP, name).await? else {
            return Ok(());
        };
        let id = job_service_id(OP, name, &service)?;
        self.count_write();
        match self.docker().delete_service(&id).await {
            Ok(()) => Ok(()),
            // Removed by someone else since we looked: the outcome the caller asked for.
            Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(api_error(OP, name, e, &BTreeMap::new())),
        }
    }

    /// The service named exactly `name`, with task counts.
    async fn find_service(&self, op: &'static str, name: &str) -> Result<Option<Service>, SwarmError> {
        self.count_read();
        let services = self
            .docker()
            .list_services(Some(ListServicesOptions {
                filters: Some(HashMap::from([("name".to_string(), vec![name.to_string()])])),
                status: Some(true),
            }))
            .await
            .map_err(|e| api_error(op, name, e, &BTreeMap::new()))?;
        // The name filter matches prefixes: keep the exact match only.
        Ok(services
            .into_iter()
            .find(|s| s.spec.as_ref().and_then(|sp| sp.name.as_deref()) == Some(name)))
    }

    async fn job_tasks(&self, op: &'static str, name: &str, service_id: &str) -> Result<Vec<Task>, SwarmError> {
        self.count_read();
        self.docker()
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([("service".to_string(), vec![service_id.to_string()])])),
            }))
            .await
            .map_err(|e| api_error(op, name, e, &BTreeMap::new()))
    }

    /// The end of a container's output. The engine does the line tail, so a chatty job's whole log
    /// never crosses the socket; the byte cap guards against a few enormous lines.
    async fn container_tail(&self, container_id: &str, limit: LogTail) -> Result<String, ApiError> {
        self.count_read();
        let mut stream = self.docker().logs(
            container_id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: limit.lines.to_string(),
                ..Default::default()
            }),
        );
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(chunk?.as_ref());
            // Keeping more than the cap lets `tail_text` still see where a cut line begins.
            if buf.len() > 4 * limit.bytes {
                buf.drain(..buf.len() - 2 * limit.bytes);
            }
        }
        Ok(tail_text(&buf, limit))
    }
}

fn job_service_spec(job: &JobSpec, refs: &crate::task_spec::Refs) -> ServiceSpec {
    let mut labels: HashMap<String, String> = job.labels.clone().into_iter().collect();
    labels.insert(JOB_LABEL.to_string(), job.name.clone());
    let mut task = TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some(job.image.clone()),
            command: (!job.command.is_empty()).then(|| job.command.clone()),
            args: (!job.args.is_empty()).then(|| job.args.clone()),
            env: (!job.env.is_empty()).then(|| job.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            ..Default::default()
        }),
        ..Default::default()
    };
    crate::task_spec::write_task(&job.task, refs, &mut task);
    if !job.mounts.is_empty() {
        let c = task.container_spec.get_or_insert_with(Default::default);
        c.mounts
            .get_or_insert_with(Vec::new)
            .extend(job.mounts.iter().map(to_mount));
    }
    // A failed job stays failed: retrying is the caller's decision, under a new name.
    task.restart_policy = Some(TaskSpecRestartPolicy {
        condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
        ..Default::default()
    });
    ServiceSpec {
        name: Some(job.name.clone()),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated_job: Some(ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..Default::default()
        }),
        // Swarm refuses an update config on jobs.
        update_config: None,
        ..Default::default()
    }
}

fn to_mount(m: &JobMount) -> Mount {
    Mount {
        target: Some(m.target.clone()),
        source: m.source.clone(),
        typ: Some(match m.kind {
            MountKind::Volume => MountType::VOLUME,
            MountKind::Bind => MountType::BIND,
            MountKind::Tmpfs => MountType::TMPFS,
        }),
        read_only: Some(m.read_only),
        ..Default::default()
    }
}

/// The id of `service` when it is the job named `name`.
fn job_service_id(op: &'static str, name: &str, service: &Service) -> Result<String, SwarmError> {
    let label = service
        .spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(JOB_LABEL));
    match (label, service.id.as_ref()) {
        (Some(v), Some(id)) if v == name => Ok(id.clone()),
        _ => Err(not_a_job(op, name)),
    }
}

fn not_a_job(op: &'static str, name: &str) -> SwarmError {
    SwarmError::Refused {
        op,
        name: name.to_string(),
        message: format!(
            "a service with this name exists but is not the job ({JOB_LABEL}={name} missing or not a replicated job); left untouched"
        ),
    }
}

fn total_completions(service: &Service) -> Option<u64> {
    let job = service.spec.as_ref()?.mode.as_ref()?.replicated_job.as_ref()?;
    // Swarm's own default when unset is one completion per concurrent task.
    Some(job.total_completions.or(job.max_concurrent).unwrap_or(1).max(1) as u64)
}

/// Tasks of the service's current run only: re-running a job (a forced update) keeps the tasks of
/// earlier runs, which must not decide the outcome of this one.
fn current_iteration(service: &Service, tasks: Vec<Task>) -> Vec<Task> {
    let current = service
        .job_status
        .as_ref()
        .and_then(|j| j.job_iteration.as_ref())
        .and_then(|v| v.index);
    match current {
        Some(i) => tasks
            .into_iter()
            .filter(|t| t.job_iteration.as_ref().and_then(|v| v.index).is_none_or(|ti| ti == i))
            .collect(),
        None => tasks,
    }
}

fn task_state(t: &Task) -> Option<TaskState> {
    t.status.as_ref()?.state
}

fn is_failed(s: TaskState) -> bool {
    // Orphaned: its node is gone, and with restart `none` nothing will replace it.
    matches!(s, TaskState::FAILED | TaskState::REJECTED | TaskState::ORPHANED)
}

/// The most recently changed task whose state matches: a higher version index is a later write.
fn latest(tasks: Vec<Task>, want: impl Fn(TaskState) -> bool) -> Option<Task> {
    tasks
        .into_iter()
        .filter(|t| task_state(t).is_some_and(&want))
        .max_by_key(|t| t.version.as_ref().and_then(|v| v.index).unwrap_or(0))
}

/// The tasks decide when the service's counts have not (yet) shown completion: its counts can
/// trail a task that has just completed.
fn state_from_tasks(tasks: Vec<Task>, total: u64) -> (JobState, Option<Task>) {
    let completed = tasks
        .iter()
        .filter(|t| task_state(t) == Some(TaskState::COMPLETE))
        .count() as u64;
    if completed >= total {
        return (JobState::Succeeded, latest(tasks, |s| s == TaskState::COMPLETE));
    }
    match latest(tasks, is_failed) {
        Some(t) => (
            JobState::Failed {
                reason: failure_reason(&t),
            },
            Some(t),
        ),
        None => (JobState::Running, None),
    }
}

/// E.g. "failed: task: non-zero exit (1), exit code 1" or "rejected: No such image: x:1".
fn failure_reason(t: &Task) -> String {
    let status = t.status.clone().unwrap_or_default();
    let state = status.state.map_or_else(|| "failed".to_string(), |s| s.to_string());
    let why = status
        .err
        .filter(|e| !e.is_empty())
        .or(status.message.filter(|m| !m.is_empty()))
        .unwrap_or_else(|| "no reason given".to_string());
    let mut reason = format!("{state}: {why}");
    // A rejected task may never have had a container; its zero exit code would mislead.
    if let Some(cs) = status
        .container_status
        .filter(|c| c.container_id.as_deref().is_some_and(|id| !id.is_empty()))
    {
        if let Some(code) = cs.exit_code {
            reason.push_str(&format!(", exit code {code}"));
        }
    }
    reason
}

/// The last `LOG_TAIL_LINES` lines of `raw`, at most `LOG_MAX_BYTES`, starting on a whole line
/// when the byte cap cuts (unless a single line is longer than the cap).
fn tail_text(raw: &[u8], limit: LogTail) -> String {
    let mut text = raw;
    while text.last() == Some(&b'\n') {
        text = &text[..text.len() - 1];
    }
    if let Some(pos) = text
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(limit.lines - 1)
        .map(|(i, _)| i)
    {
        text = &text[pos + 1..];
    }
    if text.len() > limit.bytes {
        text = &text[text.len() - limit.bytes..];
        match text.iter().position(|b| *b == b'\n') {
            Some(nl) if nl + 1 < text.len() => text = &text[nl + 1..],
            // One long line: keep its end, from a character boundary.
            _ => {
                while text.first().is_some_and(|b| b & 0xC0 == 0x80) {
                    text = &text[1..];
                }
            }
        }
    }
    String::from_utf8_lossy(text).into_owned()
}

/// An engine error as a `SwarmError`, with any env value of the job removed from the message: the
/// engine may echo parts of the spec it refuses, and errors end up in logs and status lines.
fn api_error(op: &'static str, name: &str, e: ApiError, env: &BTreeMap<String, String>) -> SwarmError {
    match e {
        ApiError::DockerResponseServerError { message, .. } => SwarmError::Refused {
            op,
            name: name.to_string(),
            message: scrub(message, env),
        },
        other => SwarmError::Unreachable { op, source: other },
    }
}

fn scrub(mut message: String, env: &BTreeMap<String, String>) -> String {
    // Longest first, so a value containing another is replaced whole.
    let mut values: Vec<&String> = env.values().filter(|v| v.len() >= SCRUB_MIN_LEN).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values {
        message = message.replace(v.as_str(), "***");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: TaskState, index: u64, err: &str, exit: Option<i64>) -> Task {
        Task {
            version: Some(ObjectVersion { index: Some(index) }),
            status: Some(TaskStatus {
                state: Some(state),
                err: (!err.is_empty()).then(|| err.to_string()),
                container_status: exit.map(|code| ContainerStatus {
                    container_id: Some(format!("c{index}")),
                    pid: Some(0),
                    exit_code: Some(code),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tasks_decide_state() {
        let (s, t) = state_from_tasks(vec![task(TaskState::RUNNING, 3, "", None)], 1);
        assert_eq!((s, t), (JobState::Running, None));

        let (s, t) = state_from_tasks(vec![task(TaskState::COMPLETE, 5, "", Some(0))], 1);
        assert_eq!(s, JobState::Succeeded);
        assert_eq!(t.unwrap().version.unwrap().index, Some(5));

        let (s, _) = state_from_tasks(vec![task(TaskState::FAILED, 7, "task: non-zero exit (1)", Some(1))], 1);
        assert_eq!(
            s,
            JobState::Failed {
                reason: "failed: task: non-zero exit (1), exit code 1".into()
            }
        );

        let (s, t) = state_from_tasks(vec![task(TaskState::REJECTED, 2, "No such image: nope:1", None)], 1);
        assert_eq!(
            s,
            JobState::Failed {
                reason: "rejected: No such image: nope:1".into()
            }
        );
        assert!(t.unwrap().status.unwrap().container_status.is_none());
    }

    #[test]
    fn tail_keeps_last_lines_within_byte_cap() {
        let many: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let t = tail_text(many.as_bytes(), LogTail::SHORT);
        assert_eq!(t.lines().count(), LOG_TAIL_LINES);
        assert!(t.starts_with("line 150\n") && t.ends_with("line 199"), "{t}");

        let wide: String = (0..20).map(|i| format!("{i:>3}{}\n", "x".repeat(400))).collect();
        let t = tail_text(wide.as_bytes(), LogTail::SHORT);
        assert!(t.len() <= LOG_MAX_BYTES);
        assert!(t.starts_with(' ') && t.ends_with('x'), "starts on a whole line");

        let one = "é".repeat(3000);
        let t = tail_text(one.as_bytes(), LogTail::SHORT);
        assert!(t.len() <= LOG_MAX_BYTES && t.chars().all(|c| c == 'é'));
    }

    #[test]
    fn errors_and_debug_hide_env_values() {
        let env = BTreeMap::from([
            ("DB_PASSWORD".to_string(), "hunter22".to_string()),
            ("PORT".to_string(), "1".to_string()),
        ]);
        assert_eq!(
            scrub("bad env DB_PASSWORD=hunter22".into(), &env),
            "bad env DB_PASSWORD=***"
        );
        let job = JobSpec {
            name: "j".into(),
            image: "i".into(),
            command: vec![],
            args: vec![],
            env,
            labels: BTreeMap::new(),
            mounts: vec![],
            task: Default::default(),
            objects: Default::default(),
            object_labels: Default::default(),
        };
        let dbg = format!("{job:?}");
        assert!(dbg.contains("DB_PASSWORD") && !dbg.contains("hunter22"), "{dbg}");
    }
}
