//! Notifications: events posted as JSON to webhooks, a generic payload or a Slack-compatible
//! one, with retries and backoff, on a task of their own so that a slow or dead receiver never
//! holds up a reconcile.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;

/// Events waiting to be sent; beyond this, new ones are dropped (and counted) rather than
/// growing memory while a receiver is down.
const QUEUE: usize = 1024;
/// Attempts per notification: the first and four retries.
const ATTEMPTS: u32 = 5;
/// First retry delay, doubling: 0.5 s, 1 s, 2 s, 4 s.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Per request: a receiver that hangs is given up on, not waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"type","reason","object","message","count","firstSeen","lastSeen","stack"}`
    Generic,
    /// `{"text": "..."}`, what Slack's (and Mattermost's) incoming webhooks take.
    Slack,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub format: Format,
}

/// What is sent: an event, as recorded.
#[derive(Clone, Debug)]
pub struct Notification {
    pub stack: String,
    pub warning: bool,
    pub reason: String,
    pub object: String,
    pub message: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

#[derive(Clone)]
pub struct Notifier {
    /// One queue and sender task per target: a receiver that hangs delays only itself.
    queues: Vec<mpsc::Sender<Notification>>,
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Notifier {
    /// Starts one sender task per target on the current runtime.
    pub fn start(targets: Vec<Target>) -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        let queues = targets
            .into_iter()
            .map(|t| {
                let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
                let client = client.clone();
                tokio::spawn(async move {
                    while let Some(n) = rx.recv().await {
                        deliver(&client, &t, &n).await;
                    }
                });
                tx
            })
            .collect();
        Notifier {
            queues,
            dropped: Default::default(),
        }
    }

    /// Queues a notification for every target; never waits.
    pub fn send(&self, n: Notification) {
        for q in &self.queues {
            if q.try_send(n.clone()).is_err() {
                self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("notification queue full; dropping a notification");
            }
        }
    }
}

pub fn payload(format: Format, n: &Notification) -> serde_json::Value {
    match format {
        Format::Generic => json!({
            "stack": n.stack,
            "type": if n.warning { "Warning" } else { "Normal" },
            "reason": n.reason,
            "object": n.object,
            "message": n.message,
            "count": n.count,
            "firstSeen": n.first_seen,
            "lastSeen": n.last_seen,
        }),
        Format::Slack => json!({
            "text": format!(
                "{} *{}* `{}` ({}): {}",
                if n.warning { ":warning:" } else { ":information_source:" },
                n.reason,
                n.object,
                n.stack,
                n.message
            ),
        }),
    }
}

async fn deliver(client: &reqwest::Client, t: &Target, n: &Notification) {
    let body = payload(t.format, n);
    let mut delay = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match client.post(&t.url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(url = %t.url, status = r.status().as_u16(), attempt, "notification refused"),
            Err(e) => tracing::warn!(url = %t.url, error = %e, attempt, "notification failed"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    tracing::error!(url = %t.url, reason = %n.reason, "notification given up after {ATTEMPTS} attempts");
}
