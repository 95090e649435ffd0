//! The planner's body; [`crate::plan`] holds the contract. In order: decide each active run
//! (oldest first), then the instants due since the cursor, then history, requeue and status.

use std::collections::BTreeSet;
use std::time::Duration;

use steward_core::{rfc3339, ObjectRef, Observation, Requeue, WaitingOn};
use time::OffsetDateTime;

use crate::model::ScheduleState;
use crate::plan::{Event, Input, JobObs, Plan, Reason, StartJob, StopJob, StopReason};
use crate::run::{job_name, Outcome, Run, Trigger, LOG_TAIL_BYTES};
use crate::spec::ConcurrencyPolicy;
use crate::status::{conditions, prune, status};

/// How often an active run's job is looked at: Swarm sends no event when a job's task ends, so
/// the only way to learn a run finished is to poll its service. One second keeps outcomes prompt
/// for one service inspect per active run per second.
const JOB_POLL: Duration = Duration::from_secs(1);

/// A run waiting for its `imageFrom` service's image looks again after five polls: the service
/// is mid-deploy or Swarm is unreachable, neither of which a one-second poll would hurry.
const IMAGE_POLL: Duration = Duration::from_secs(5);

/// Instants recorded after downtime: the newest ones. The rest are only counted (in the event).
const MAX_RECORDED: usize = 100;

/// Retry backoff: 10 s doubling per attempt, capped at 5 minutes (the spec's documented values).
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

pub fn plan(input: &Input) -> Plan {
    let mut p = Planner {
        input,
        s: input.schedule,
        now: input.now,
        decisions: Vec::new(),
        records: Vec::new(),
        record_starts: Vec::new(),
        events: Vec::new(),
        requeue: Requeue::Never,
    };
    let mut active: Vec<&Run> = input.runs.iter().filter(|r| r.outcome.is_active()).collect();
    active.sort_by_key(|r| (r.scheduled_at, r.id));
    for r in active {
        let d = p.decide_active(r);
        p.decisions.push(d);
    }
    let cursor = p.due();
    p.finish(cursor)
}

/// What one pass decides about one active run.
struct Decision {
    /// As stored.
    orig: Run,
    /// As planned; an update when it differs from `orig`.
    row: Run,
    start: Option<StartJob>,
    stop: Option<StopJob>,
    remove: Option<String>,
    events: Vec<Event>,
    requeue: Requeue,
    /// Its job service may exist (for `Replace`, which stops it).
    job_may_exist: bool,
}

impl Decision {
    /// The run as it stands once the plan is carried out.
    fn view(&self) -> &Run {
        self.start.as_ref().map_or(&self.row, |s| &s.running)
    }
}

/// What the job service of a run was seen doing.
enum Seen<'a> {
    /// Swarm could not be read.
    Unknown,
    /// The controller observed no such job (for a `Pending` row: not created yet).
    Absent,
    Known(&'a JobObs),
}

struct Planner<'a> {
    input: &'a Input<'a>,
    s: &'a ScheduleState,
    now: OffsetDateTime,
    decisions: Vec<Decision>,
    /// New rows, oldest first, and the start of each (by index into `records`).
    records: Vec<Run>,
    record_starts: Vec<(usize, StartJob)>,
    events: Vec<Event>,
    requeue: Requeue,
}

impl<'a> Planner<'a> {
    fn wake(&mut self, r: Requeue) {
        self.requeue = self.requeue.min(r, self.now);
    }

    fn job_of(&self, r: &Run) -> String {
        r.job
            .clone()
            .unwrap_or_else(|| job_name(&r.schedule, r.scheduled_at, r.attempt, r.trigger == Trigger::Manual))
    }

    fn seen(&self, job: &str) -> Seen<'a> {
        match self.input.jobs.get(job) {
            None => Seen::Absent,
            Some(Observation::Unknown { .. }) => Seen::Unknown,
            Some(Observation::Known(o)) => Seen::Known(o),
        }
    }

    /// Part (a) of the plan: one active run.
    fn decide_active(&self, r: &Run) -> Decision {
        let now = self.now;
        let job = self.job_of(r);
        let seen = self.seen(&job);
        let mut d = Decision {
            orig: r.clone(),
            row: r.clone(),
            start: None,
            stop: None,
            remove: None,
            events: Vec::new(),
            requeue: Requeue::Never,
            job_may_exist: false,
        };
        let timeout_at = r.started_at.map(|s| s + self.s.timeout);
        let exists = matches!(
            seen,
            Seen::Known(JobObs::Running | JobObs::Succeeded { .. } | JobObs::Failed { .. })
        );
        // A Running row's job was created; a Pending row's job is absent until it starts.
        d.job_may_exist = match seen {
            Seen::Unknown => true,
            Seen::Absent => r.outcome == Outcome::Running,
            Seen::Known(_) => exists,
        };
        match r.outcome {
            Outcome::Running => match seen {
                // Nothing is decided about a run whose job could not be seen.
                Seen::Unknown | Seen::Absent => d.requeue = Requeue::After(JOB_POLL),
                Seen::Known(JobObs::Running) => {
                    let deadline = timeout_at.unwrap_or(r.scheduled_at + self.s.timeout);
                    if now >= deadline {
                        self.time_out(&mut d, Some(job));
                    } else {
                        d.requeue = Requeue::After(JOB_POLL).min(Requeue::At(deadline), now);
                    }
                }
                Seen::Known(JobObs::Succeeded { logs }) => {
                    let took = fmt_duration(elapsed(r.started_at.unwrap_or(now), now));
                    d.row.outcome = Outcome::Succeeded;
                    d.row.finished_at = Some(now);
                    // Swarm marks a job's task complete only when its container exited 0.
                    d.row.exit_code = Some(0);
                    d.row.logs = log_tail(logs);
                    d.row.message = format!("succeeded in {took}");
                    d.remove = Some(job);
                    d.events.push(event(
                        Reason::RunSucceeded,
                        format!("{} succeeded in {took}{}", run_of(r), attempt_note(r.attempt)),
                    ));
                }
                Seen::Known(JobObs::Failed {
                    exit_code,
                    reason,
                    logs,
                }) => {
                    d.remove = Some(job);
                    d.row.logs = log_tail(logs);
                    if r.attempt <= self.s.retries {
                        self.retry(&mut d, reason, timeout_at);
                    } else {
                        let code = exit_code.map_or_else(|| reason.clone(), |c| format!("exit code {c}"));
                        d.row.outcome = Outcome::Failed;
                        d.row.finished_at = Some(now);
                        d.row.exit_code = *exit_code;
                        d.row.message = reason.clone();
                        d.events.push(event(
                            Reason::RunFailed,
                            format!("{} failed: {code}{}", run_of(r), attempt_note(r.attempt)),
                        ));
                    }
                }
                Seen::Known(JobObs::Missing) => {
                    let why = "the job service disappeared before it finished (removed outside steward?)";
                    d.row.outcome = Outcome::Failed;
                    d.row.finished_at = Some(now);
                    d.row.message = why.to_string();
                    d.events
                        .push(event(Reason::RunFailed, format!("{} failed: {why}", run_of(r))));
                }
            },
            Outcome::Pending => {
                if let Seen::Unknown = seen {
                    // Swarm unreadable: the job may exist, so neither start it nor give up on it.
                    d.requeue = Requeue::After(JOB_POLL);
                    return d;
                }
                if timeout_at.is_some_and(|t| now >= t) {
                    self.time_out(&mut d, exists.then_some(job));
                    return d;
                }
                if let Some(at) = r.retry_at.filter(|t| *t > now) {
                    d.requeue = Requeue::At(at);
                    if let Some(t) = timeout_at {
                        d.requeue = d.requeue.min(Requeue::At(t), now);
                    }
                    return d;
                }
                if exists {
                    // Created by a pass that ended before it could record the start.
                    d.row.outcome = Outcome::Running;
                    d.row.started_at = Some(r.started_at.unwrap_or(now));
                    d.row.job = Some(job);
                    d.row.retry_at = None;
                    d.requeue = Requeue::After(Duration::ZERO);
                    return d;
                }
                if let Some(deadline) = self.starting_deadline_of(r) {
                    if now > deadline {
                        d.row.outcome = Outcome::Missed;
                        d.row.finished_at = Some(now);
                        d.row.message = format!(
                            "missed: not started within the starting deadline ({})",
                            fmt_duration(self.s.starting_deadline.unwrap_or_default())
                        );
                        d.events
                            .push(event(Reason::RunMissed, format!("{} {}", run_of(r), d.row.message)));
                        return d;
                    }
                    d.requeue = Requeue::At(after(deadline));
                }
                match &self.input.image {
                    Observation::Unknown { reason } => {
                        let waiting = self.waiting_for_image(reason);
                        if d.row.message != waiting {
                            d.events
                                .push(event(Reason::ImageUnknown, format!("{}: {waiting}", run_of(r))));
                            d.row.message = waiting;
                        }
                        d.requeue = d.requeue.min(Requeue::After(IMAGE_POLL), now);
                    }
                    Observation::Known(image) => {
                        let mut running = r.clone();
                        running.outcome = Outcome::Running;
                        running.started_at = Some(r.started_at.unwrap_or(now));
                        running.job = Some(job.clone());
                        running.retry_at = None;
                        running.message = String::new();
                        let what = if r.attempt > 1 {
                            format!("started attempt {} of the {}", r.attempt, run_of(r))
                        } else {
                            format!("started {} ({})", run_of(r), r.trigger.as_str())
                        };
                        d.events
                            .push(event(Reason::RunStarted, format!("{what} as job {job} with {image}")));
                        d.start = Some(StartJob {
                            schedule: r.schedule.clone(),
                            scheduled_at: r.scheduled_at,
                            job,
                            image: image.clone(),
                            attempt: r.attempt,
                            running,
                        });
                        d.requeue = Requeue::After(JOB_POLL);
                    }
                }
            }
            _ => unreachable!("only active runs are decided"),
        }
        d
    }

    fn time_out(&self, d: &mut Decision, stop: Option<String>) {
        let msg = format!("timed out after {}", fmt_duration(self.s.timeout));
        d.row.outcome = Outcome::TimedOut;
        d.row.finished_at = Some(self.now);
        d.row.retry_at = None;
        d.row.message = msg.clone();
        let stopping = match &stop {
            Some(job) => format!("; stopping job {job}"),
            None => String::new(),
        };
        d.events.push(event(
            Reason::RunTimedOut,
            format!("{} {msg}{stopping}", run_of(&d.orig)),
        ));
        d.stop = stop.map(|job| StopJob {
            job,
            why: StopReason::TimedOut,
        });
    }

    fn retry(&self, d: &mut Decision, reason: &str, timeout_at: Option<OffsetDateTime>) {
        let r = &d.orig;
        let backoff = BACKOFF_FIRST
            .saturating_mul(1u32 << (r.attempt.saturating_sub(1)).min(16))
            .min(BACKOFF_CAP);
        let at = self.now + backoff;
        let next = r.attempt + 1;
        d.row.outcome = Outcome::Pending;
        d.row.attempt = next;
        d.row.job = Some(job_name(
            &r.schedule,
            r.scheduled_at,
            next,
            r.trigger == Trigger::Manual,
        ));
        d.row.retry_at = Some(at);
        d.row.message = format!("attempt {} failed: {reason}; retrying at {}", r.attempt, rfc3339(at));
        d.events
            .push(event(Reason::RunRetrying, format!("{}: {}", run_of(r), d.row.message)));
        d.requeue = Requeue::At(at);
        if let Some(t) = timeout_at {
            d.requeue = d.requeue.min(Requeue::At(t), self.now);
        }
    }

    /// When a run that never started stops being startable.
    fn starting_deadline_of(&self, r: &Run) -> Option<OffsetDateTime> {
        match (r.started_at, self.s.starting_deadline) {
            (None, Some(d)) => Some(r.scheduled_at + d),
            _ => None,
        }
    }

    fn waiting_for_image(&self, reason: &str) -> String {
        match self.image_dependency(reason) {
            Some(w) => w.to_string(),
            None => format!("waiting for the image: {reason}"),
        }
    }

    /// A run that cannot start until `imageFrom`'s service runs is waiting on that object.
    fn image_dependency(&self, reason: &str) -> Option<WaitingOn> {
        self.s.job.image_from.as_ref().map(|svc| WaitingOn::Dependency {
            object: ObjectRef::service(svc.as_str()),
            reason: reason.to_string(),
        })
    }

    fn still_active(&self) -> Vec<usize> {
        (0..self.decisions.len())
            .filter(|i| self.decisions[*i].view().outcome.is_active())
            .collect()
    }

    /// Part (b): the instants due since the cursor. Returns the cursor to store.
    fn due(&mut self) -> Option<OffsetDateTime> {
        let s = self.s;
        let now = self.now;
        let Some(cursor) = self.input.cursor else {
            // First sight: nothing before now is caught up.
            return Some(now);
        };
        if s.suspend {
            // Instants passed while suspended are not caught up: the cursor follows them. It
            // moves to the newest passed instant rather than to `now`, which is the same for
            // "considered" and writes nothing while no instant passes.
            let (newest, _) = s.cron.between(cursor, now, 1);
            return newest.last().copied();
        }
        let (instants, total) = s.cron.between(cursor, now, MAX_RECORDED);
        let latest = *instants.last()?;
        let recorded: BTreeSet<OffsetDateTime> = self
            .input
            .runs
            .iter()
            .filter(|r| r.trigger != Trigger::Manual)
            .map(|r| r.scheduled_at)
            .collect();
        if recorded.contains(&latest) {
            // Recorded by a pass that ended before it stored the cursor.
            return Some(latest);
        }
        let trigger_of = |t: OffsetDateTime| {
            if t < self.input.controller_started {
                Trigger::CatchUp
            } else {
                Trigger::Schedule
            }
        };
        let late = s.starting_deadline.filter(|d| now - latest > *d);
        let active = self.still_active();
        let fate = match (late, s.policy) {
            (Some(_), _) => Outcome::Missed,
            (None, ConcurrencyPolicy::Forbid) if !active.is_empty() => Outcome::Skipped,
            _ => Outcome::Pending,
        };

        // Every instant but the latest is missed (the latest too when past the deadline).
        let older = &instants[..instants.len() - 1];
        let deadline_msg =
            |d: Duration| format!("missed: not started within the starting deadline ({})", fmt_duration(d));
        let older_msg = match (late, fate) {
            (Some(d), _) => deadline_msg(d),
            (None, Outcome::Skipped) => "missed: a later instant was due instead (and skipped)".to_string(),
            _ => "missed: a later instant ran instead".to_string(),
        };
        for t in older.iter().filter(|t| !recorded.contains(t)) {
            let mut r = Run::new(&s.name, *t, trigger_of(*t), Outcome::Missed);
            r.finished_at = Some(now);
            r.message = older_msg.clone();
            self.records.push(r);
        }
        let missed = total - 1 + u64::from(late.is_some());
        if missed > 0 {
            let first = if total as usize == instants.len() {
                instants[0]
            } else {
                s.cron.next_after(cursor).unwrap_or(instants[0])
            };
            let last_missed = if late.is_some() { latest } else { older[older.len() - 1] };
            self.events.push(event(
                Reason::RunMissed,
                self.missed_message(missed, total, first, last_missed, late),
            ));
        }

        let mut row = Run::new(&s.name, latest, trigger_of(latest), fate);
        match fate {
            Outcome::Missed => {
                row.finished_at = Some(now);
                row.message = deadline_msg(late.unwrap_or_default());
            }
            Outcome::Skipped => {
                let blocking = self.decisions[active[0]].view();
                row.finished_at = Some(now);
                row.message = format!(
                    "run #{} of {} was still active",
                    blocking.id,
                    rfc3339(blocking.scheduled_at)
                );
                self.events.push(event(
                    Reason::RunSkipped,
                    format!("skipped the {}: {}", run_of(&row), row.message),
                ));
            }
            _ => {
                if s.policy == ConcurrencyPolicy::Replace {
                    for i in active {
                        self.replace(i, latest);
                    }
                }
                self.record_pending(row);
                return Some(latest);
            }
        }
        self.records.push(row);
        Some(latest)
    }

    fn missed_message(
        &self,
        missed: u64,
        total: u64,
        first: OffsetDateTime,
        last: OffsetDateTime,
        late: Option<Duration>,
    ) -> String {
        let at_least = if total >= crate::cron::MAX_COUNT {
            "at least "
        } else {
            ""
        };
        let span = if missed == 1 {
            format!("missed 1 instant, {}", rfc3339(last))
        } else {
            format!(
                "missed {at_least}{missed} instants from {} to {}",
                rfc3339(first),
                rfc3339(last)
            )
        };
        let why = if last < self.input.controller_started {
            "while no controller ran"
        } else {
            "because the schedule was reconciled late"
        };
        let mut msg = format!("{span} {why}");
        if let Some(d) = late {
            msg.push_str(&format!(
                "; the latest is past the starting deadline ({}) and does not run",
                fmt_duration(d)
            ));
        }
        let recorded = self.records.len() as u64 + u64::from(late.is_some());
        if recorded < missed {
            msg.push_str(&format!(" (only the newest {recorded} are recorded)"));
        }
        msg
    }

    /// `concurrencyPolicy: Replace`: the active run at index `i` gives way to the run of `by`.
    fn replace(&mut self, i: usize, by: OffsetDateTime) {
        let now = self.now;
        let job = self.job_of(&self.decisions[i].orig);
        let d = &mut self.decisions[i];
        // Whatever (a) decided for it (a start, a recorded start) is superseded.
        d.start = None;
        d.events.clear();
        d.requeue = Requeue::Never;
        d.row = d.orig.clone();
        d.row.outcome = Outcome::Replaced;
        d.row.finished_at = Some(now);
        d.row.retry_at = None;
        d.row.message = format!("replaced by the run of {}", rfc3339(by));
        d.stop = d.job_may_exist.then_some(StopJob {
            job,
            why: StopReason::Replaced,
        });
        d.events.push(event(
            Reason::RunReplaced,
            format!(
                "{} (#{}) replaced by the run of {}",
                run_of(&d.orig),
                d.orig.id,
                rfc3339(by)
            ),
        ));
    }

    /// Records a new `Pending` row and starts it when the image is known.
    fn record_pending(&mut self, mut row: Run) {
        let job = job_name(&row.schedule, row.scheduled_at, 1, false);
        row.job = Some(job.clone());
        match &self.input.image {
            Observation::Known(image) => {
                let mut running = row.clone();
                running.outcome = Outcome::Running;
                running.started_at = Some(self.now);
                self.events.push(event(
                    Reason::RunStarted,
                    format!(
                        "started {} ({}) as job {job} with {image}",
                        run_of(&row),
                        row.trigger.as_str()
                    ),
                ));
                self.record_starts.push((
                    self.records.len(),
                    StartJob {
                        schedule: row.schedule.clone(),
                        scheduled_at: row.scheduled_at,
                        job,
                        image: image.clone(),
                        attempt: 1,
                        running,
                    },
                ));
                self.wake(Requeue::After(JOB_POLL));
            }
            Observation::Unknown { reason } => {
                row.message = self.waiting_for_image(reason);
                self.events.push(event(
                    Reason::ImageUnknown,
                    format!("{}: {}", run_of(&row), row.message),
                ));
                self.wake(Requeue::After(IMAGE_POLL));
                if let Some(deadline) = self.starting_deadline_of(&row) {
                    self.wake(Requeue::At(after(deadline)));
                }
            }
        }
        self.records.push(row);
    }

    /// Parts (c) to (e): history, requeue, status; and the plan itself.
    fn finish(mut self, cursor: Option<OffsetDateTime>) -> Plan {
        let s = self.s;
        let now = self.now;
        let next = if s.suspend { None } else { s.cron.next_after(now) };
        if let Some(t) = next {
            self.wake(Requeue::At(t));
        }
        for d in &self.decisions {
            self.requeue = self.requeue.min(d.requeue, now);
        }

        // Every run as it stands once the plan is carried out.
        let decided: BTreeSet<i64> = self.decisions.iter().map(|d| d.orig.id).collect();
        let mut view: Vec<&Run> = self
            .input
            .runs
            .iter()
            .filter(|r| !(r.outcome.is_active() && decided.contains(&r.id)))
            .collect();
        view.extend(self.decisions.iter().map(Decision::view));
        view.extend(self.records.iter().enumerate().map(|(i, r)| {
            self.record_starts
                .iter()
                .find(|(j, _)| *j == i)
                .map_or(r, |(_, s)| &s.running)
        }));
        view.sort_by_key(|r| std::cmp::Reverse((r.scheduled_at, r.id)));

        let prune = prune(&view, s);
        let status = status(&view, s, next);
        let mut conditions = conditions(&view, s, next);
        // A run due but unable to start because the service it takes its image from is not
        // known: status says so, naming the object waited on.
        let waiting = match &self.input.image {
            Observation::Unknown { reason }
                if view
                    .iter()
                    .any(|r| r.outcome == Outcome::Pending && r.retry_at.is_none_or(|t| t <= now)) =>
            {
                self.image_dependency(reason)
            }
            _ => None,
        };
        if let Some(w) = &waiting {
            conditions.progressing = (true, "WaitingOn", w.to_string());
        }

        let mut plan = Plan {
            record: self.records,
            update: Vec::new(),
            stop: Vec::new(),
            start: Vec::new(),
            remove: Vec::new(),
            prune,
            cursor: cursor.filter(|c| Some(*c) != self.input.cursor),
            events: Vec::new(),
            requeue: self.requeue,
            status,
            conditions,
            waiting,
        };
        for d in self.decisions {
            if d.row != d.orig {
                plan.update.push((d.orig.outcome, d.row));
            }
            plan.stop.extend(d.stop);
            plan.start.extend(d.start);
            plan.remove.extend(d.remove);
            plan.events.extend(d.events);
        }
        plan.start.extend(self.record_starts.into_iter().map(|(_, s)| s));
        plan.events.extend(self.events);
        plan
    }
}

fn event(reason: Reason, message: String) -> Event {
    Event { reason, message }
}

pub(crate) fn run_of(r: &Run) -> String {
    match r.trigger {
        Trigger::Manual => format!("manual run of {}", rfc3339(r.scheduled_at)),
        _ => format!("run of {}", rfc3339(r.scheduled_at)),
    }
}

fn attempt_note(attempt: u32) -> String {
    if attempt > 1 {
        format!(" (attempt {attempt})")
    } else {
        String::new()
    }
}

/// Deadlines are exclusive ("more than `startingDeadline` late"): look just after one.
fn after(t: OffsetDateTime) -> OffsetDateTime {
    t + Duration::from_millis(1)
}

fn elapsed(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    Duration::try_from(to - from).unwrap_or_default()
}

/// The end of a job's output: at most [`LOG_TAIL_BYTES`], cut on a character boundary.
fn log_tail(logs: &str) -> String {
    if logs.len() <= LOG_TAIL_BYTES {
        return logs.to_string();
    }
    let mut start = logs.len() - LOG_TAIL_BYTES;
    while !logs.is_char_boundary(start) {
        start += 1;
    }
    logs[start..].to_string()
}

/// `1h30m`, `45s`, `250ms`: the spec's own duration syntax.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}
