//! Fills a state file through `steward_store::Store`, as a controller running for weeks over a
//! large platform would have: `resources` statuses (a few stacks, the rest services, three
//! conditions each) and an event table of `events` rows over the same objects.
//!
//! Events are recorded one by one with `Store::record_event` and simulated times moving
//! forward, so folding is the store's own: retries of a failing update or an unreachable engine
//! come in bursts a few seconds apart and fold into one record; a service converging twice in
//! a few seconds folds too; everything else (messages carry replica counts, images, commits)
//! is a new record. Objects are picked with a skew, so some are much busier than others.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use steward_plan::status::{Condition, ConditionStatus, ConditionType, EventType, NewEvent, ResourceStatus};
use steward_store::Store;
use time::OffsetDateTime;

const STACKS: [&str; 10] = [
    "taxcollector",
    "payments",
    "ledger",
    "invoicing",
    "identity",
    "reports",
    "notify",
    "search",
    "audit",
    "portal",
];
const COMPONENTS: [&str; 33] = [
    "web",
    "api",
    "worker",
    "celery-worker",
    "celery-beat",
    "scheduler",
    "gateway",
    "cache-warmer",
    "exporter",
    "frontend",
    "admin",
    "webhooks",
    "mailer",
    "pdf-renderer",
    "importer",
    "reconciler",
    "ledger-sync",
    "search-indexer",
    "thumbnailer",
    "auth-proxy",
    "rate-limiter",
    "audit-writer",
    "event-relay",
    "report-builder",
    "cron",
    "outbox",
    "payments-adapter",
    "fx-rates",
    "sftp-drop",
    "ocr",
    "notifier",
    "archiver",
    "metrics-proxy",
];

/// xorshift64*: deterministic, so every run fills the same table.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One resource of the filled platform.
pub struct Object {
    pub kind: &'static str,
    pub name: String,
    stack: &'static str,
    component: &'static str,
}

impl Object {
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
    fn image(&self, minor: u64, patch: u64) -> String {
        format!(
            "registry.example.com/{}/{}:v2.{minor}.{patch}",
            self.stack, self.component
        )
    }
}

/// `n` objects: one stack per hundred (at least one), the rest services named
/// `<stack>-<component>-<shard>`.
pub fn objects(n: usize) -> Vec<Object> {
    let stacks = (n / 100).clamp(1, STACKS.len());
    let mut out: Vec<Object> = STACKS[..stacks]
        .iter()
        .map(|s| Object {
            kind: "Stack",
            name: (*s).to_string(),
            stack: s,
            component: "",
        })
        .collect();
    for i in 0..n.saturating_sub(stacks) {
        let stack = STACKS[i % stacks];
        let j = i / stacks;
        let component = COMPONENTS[j % COMPONENTS.len()];
        let shard = j / COMPONENTS.len() + 1;
        out.push(Object {
            kind: "Service",
            name: format!("{stack}-{component}-{shard}"),
            stack,
            component,
        });
    }
    out
}

pub struct FillReport {
    pub statuses: usize,
    pub objects: usize,
    pub rows: u64,
    /// `record_event` calls; `calls - rows` of them were folded into an existing record.
    pub calls: u64,
    pub max_count: u64,
    pub span: time::Duration,
    pub took: Duration,
    pub file_bytes: u64,
}

fn condition(
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    at: OffsetDateTime,
    generation: u64,
) -> Condition {
    Condition {
        type_,
        status,
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: at,
        observed_generation: generation,
    }
}

fn status_of(o: &Object, rng: &mut Rng, now: OffsetDateTime, services_per_stack: usize) -> ResourceStatus {
    use ConditionStatus::{False, True};
    use ConditionType::{Degraded, Progressing, Ready};
    let generation = 1200 + rng.below(300);
    let since = now - time::Duration::seconds(60 + rng.below(20 * 86_400) as i64);
    if o.kind == "Stack" {
        let msg = format!("{services_per_stack}/{services_per_stack} services ready, revision 1a2b3c4 'raise worker concurrency' (Jane)");
        return ResourceStatus {
            kind: o.kind.into(),
            name: o.name.clone(),
            conditions: vec![
                condition(Ready, True, "Converged", &msg, since, generation),
                condition(Progressing, False, "Converged", &msg, since, generation),
                condition(Degraded, False, "AsExpected", &msg, since, generation),
            ],
            desired_replicas: None,
            running_replicas: None,
            image: None,
            observed_generation: generation,
            last_reconcile: now,
            applied_revision: None,
            attempted_revision: None,
            details: None,
        };
    }
    let replicas = 1 + rng.below(12);
    let image = o.image(10 + rng.below(8), rng.below(20));
    let roll = rng.below(100);
    let (running, conditions) = if roll < 90 {
        let msg = format!("{replicas}/{replicas} tasks running {image}");
        (
            replicas,
            vec![
                condition(Ready, True, "Converged", &msg, since, generation),
                condition(Progressing, False, "Converged", &msg, since, generation),
                condition(Degraded, False, "AsExpected", &msg, since, generation),
            ],
        )
    } else if roll < 97 {
        let msg = format!(
            "updating replicas: {} → {replicas}, image: {} → {image}",
            replicas.saturating_sub(1).max(1),
            o.image(9, 4)
        );
        (
            replicas.saturating_sub(1),
            vec![
                condition(Ready, False, "SpecChanged", &msg, now, generation),
                condition(Progressing, True, "SpecChanged", &msg, now, generation),
                condition(Degraded, False, "AsExpected", &msg, since, generation),
            ],
        )
    } else {
        let msg = format!(
            "update to {image} failed and was rolled back by Swarm: task: non-zero exit (1): \
             django.db.utils.OperationalError: could not connect to server: Connection refused; \
             the revision is rejected until the desired state changes"
        );
        (
            replicas,
            vec![
                condition(Ready, False, "RevisionRejected", &msg, now, generation),
                condition(Progressing, False, "RevisionRejected", &msg, now, generation),
                condition(Degraded, True, "RevisionRejected", &msg, now, generation),
            ],
        )
    };
    ResourceStatus {
        kind: o.kind.into(),
        name: o.name.clone(),
        conditions,
        desired_replicas: Some(replicas),
        running_replicas: Some(running),
        image: Some(image),
        observed_generation: generation,
        last_reconcile: now,
        applied_revision: None,
        attempted_revision: None,
        details: None,
    }
}

/// One incident: identical events at the given offsets (seconds) from its start.
struct Incident {
    object: usize,
    type_: EventType,
    reason: &'static str,
    message: String,
    offsets: Vec<i64>,
}

fn short_sha(rng: &mut Rng) -> String {
    format!("{:07x}", rng.below(0x1000_0000))
}

const AUTHORS: [&str; 6] = ["Jane", "Ahmed", "Li Wei", "María", "Olu", "Sven"];
const SUBJECTS: [&str; 6] = [
    "scale web to 12",
    "bump image to v2.14.3",
    "raise celery concurrency",
    "move beat to its own node",
    "set LOG_LEVEL=info",
    "pin gunicorn workers to 4",
];

fn incident(objs: &[Object], stacks: usize, rng: &mut Rng) -> Incident {
    // Busy objects: the square of a uniform number favours the low indices (the stacks, then
    // the first services of each stack).
    let u = rng.unit();
    let svc = stacks + ((u * u) * (objs.len() - stacks) as f64) as usize;
    let svc = svc.min(objs.len() - 1);
    let stack = rng.below(stacks as u64) as usize;
    let o = &objs[svc];
    let r = 1 + rng.below(12);
    let image = o.image(10 + rng.below(8), rng.below(20));
    let once = vec![0];
    let roll = rng.below(100);
    let (object, type_, reason, message, offsets) = match roll {
        0..=29 => {
            // Converged; a third of the time seen again a few seconds later (a task restarted
            // and came back), which folds.
            let offsets = if rng.below(3) == 0 { vec![0, 2 + rng.below(20) as i64] } else { once };
            (svc, EventType::Normal, "Converged", format!("{r}/{r} tasks running {image}"), offsets)
        }
        30..=49 => {
            let message = match rng.below(3) {
                0 => format!("updated: replicas: {} → {r}", 1 + rng.below(12)),
                1 => format!("updated: image: {} → {image}", o.image(10 + rng.below(8), rng.below(20))),
                _ => format!("updated: env.LOG_LEVEL: debug → info, resources.limits.memory: 256Mi → {}Mi", 256 + 128 * rng.below(8)),
            };
            (svc, EventType::Normal, "Updated", message, once)
        }
        50..=61 => (
            svc,
            EventType::Warning,
            "DriftCorrected",
            format!("changed outside steward, restored: replicas: {} → {r}", r + 1 + rng.below(5)),
            once,
        ),
        62..=71 => {
            // A failing update retried with backoff until someone fixes it: folds.
            let n = 2 + rng.below(7) as i64;
            let mut t = 0;
            let offsets = (0..n)
                .map(|_| {
                    let at = t;
                    t += 10 + rng.below(50) as i64;
                    at
                })
                .collect();
            (
                svc,
                EventType::Warning,
                "UpdateFailed",
                format!(
                    "cannot update service {}: Error response from daemon: rpc error: code = Unknown desc = update out of sequence; retrying",
                    o.name
                ),
                offsets,
            )
        }
        72..=74 => {
            let n = 3 + rng.below(10) as i64;
            (
                stack,
                EventType::Warning,
                "BackendUnavailable",
                "cannot read Swarm: error trying to connect: Connection refused (os error 111); nothing is changed until it answers".to_string(),
                (0..n).map(|i| i * 5).collect(),
            )
        }
        75..=76 => (
            stack,
            EventType::Normal,
            "BackendRecovered",
            "Swarm answers again".to_string(),
            once,
        ),
        77..=81 => (
            svc,
            EventType::Normal,
            "Created",
            format!("created service {} ({r} replicas, {image})", o.name),
            once,
        ),
        82..=87 => {
            let a = AUTHORS[rng.below(AUTHORS.len() as u64) as usize];
            let s = SUBJECTS[rng.below(SUBJECTS.len() as u64) as usize];
            (stack, EventType::Normal, "Applied", format!("Applied {} '{s}' ({a})", short_sha(rng)), once)
        }
        88..=92 => (
            stack,
            EventType::Normal,
            "RolloutStarted",
            format!("rollout {} started: {} services → {image}", 100 + rng.below(900), 1 + rng.below(6)),
            once,
        ),
        93..=95 => (
            svc,
            EventType::Warning,
            "RollbackIssued",
            format!("restoring the previous revision: image: {image} → {}", o.image(9, 4)),
            once,
        ),
        _ => (
            stack,
            EventType::Warning,
            "RolledBack",
            format!(
                "rollout {} rolled back: health gate failed 3 times in a row (GET http://127.0.0.1:8000/api/v1/health/: 503)",
                100 + rng.below(900)
            ),
            once,
        ),
    };
    Incident {
        object,
        type_,
        reason,
        message,
        offsets,
    }
}

/// Creates `path` (which must not exist) with `resources` statuses and exactly `events` event
/// records.
pub fn fill(path: &Path, resources: usize, events: u64, seed: u64) -> anyhow::Result<FillReport> {
    if path.exists() {
        bail!("{} exists already", path.display());
    }
    let t = Instant::now();
    let store = Store::open(path).with_context(|| format!("cannot create {}", path.display()))?;
    let objs = objects(resources);
    let stacks = objs.iter().filter(|o| o.kind == "Stack").count();
    let per_stack = (objs.len() - stacks) / stacks.max(1);
    let mut rng = Rng::new(seed);
    let now = OffsetDateTime::now_utc();
    for o in &objs {
        store.put_status(&status_of(o, &mut rng, now, per_stack))?;
    }

    // About 25 days of history ending a few days ago: the mean gap between incidents is chosen
    // so that `events` records take about that long. Bursts run on past the next incidents'
    // start, as retries interleave with other objects' events in a real table.
    let start = now - time::Duration::days(30);
    let mean_gap_s = (25.0 * 86_400.0 / events as f64).max(0.001);
    let mut clock = start;
    let mut last = start;
    let (mut rows, mut calls, mut max_count) = (0u64, 0u64, 0u64);
    let keys: Vec<String> = objs.iter().map(Object::key).collect();
    // Bounded: folding can never take more than a few calls per record.
    let max_calls = events.saturating_mul(10).max(1000);
    'fill: while rows < events {
        let inc = incident(&objs, stacks, &mut rng);
        let gap = rng.unit() * 2.0 * mean_gap_s;
        clock += time::Duration::seconds_f64(gap);
        let ev = NewEvent {
            type_: inc.type_,
            reason: inc.reason.to_string(),
            message: inc.message,
            object: keys[inc.object].clone(),
        };
        for off in &inc.offsets {
            let at = clock + time::Duration::seconds(*off);
            last = last.max(at);
            let rec = store.record_event(&ev, at)?;
            calls += 1;
            if rec.count == 1 {
                rows += 1;
            }
            max_count = max_count.max(rec.count);
            if rows >= events {
                break 'fill;
            }
            if calls >= max_calls {
                bail!("filling did not reach {events} records within {max_calls} calls");
            }
        }
    }
    let span = last - start;
    drop(store);
    let file_bytes = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum();
    Ok(FillReport {
        statuses: objs.len(),
        objects: objs.len(),
        rows,
        calls,
        max_count,
        span,
        took: t.elapsed(),
        file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let objs = objects(1000);
        let keys: std::collections::BTreeSet<String> = objs.iter().map(Object::key).collect();
        assert_eq!(keys.len(), 1000);
        assert_eq!(objs.iter().filter(|o| o.kind == "Stack").count(), 10);
    }

    #[test]
    fn fills_exactly_the_asked_number_of_records_with_folding() {
        let dir = std::env::temp_dir().join(format!("steward-bench-fill-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("state.db");
        let r = fill(&path, 50, 2000, 7).unwrap();
        assert_eq!(r.rows, 2000);
        assert!(r.calls > r.rows, "some events fold");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.events(&Default::default()).unwrap().len(), 2000);
        assert_eq!(store.statuses().unwrap().len(), 50);
        assert!(store.statuses().unwrap().iter().all(|s| s.conditions.len() == 3));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
