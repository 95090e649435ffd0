//! The dashboard on made-up data, to look at it without a swarm:
//! `cargo run -p steward-api --example dashboard -- 127.0.0.1:9469`, then open the address.
//! A drift event is recorded every few seconds so the live timeline has something to show.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use steward_controller::metrics::Metrics;
use steward_plan::status::{Condition, ConditionStatus, ConditionType, EventType, NewEvent, ResourceStatus};
use steward_store::Store;
use time::OffsetDateTime;

fn status(
    kind: &str,
    name: &str,
    ready: bool,
    progressing: bool,
    running: u64,
    desired: u64,
    image: Option<&str>,
) -> ResourceStatus {
    let now = OffsetDateTime::now_utc();
    let cond = |type_, status: bool, reason: &str, message: &str| Condition {
        type_,
        status: ConditionStatus::from_bool(status),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now,
        observed_generation: 4,
    };
    ResourceStatus {
        kind: kind.into(),
        name: name.into(),
        conditions: vec![
            if ready {
                cond(
                    ConditionType::Ready,
                    true,
                    "Converged",
                    &format!("{running}/{desired} tasks running"),
                )
            } else {
                cond(
                    ConditionType::Ready,
                    false,
                    "TasksStarting",
                    &format!("{running}/{desired} tasks running"),
                )
            },
            if progressing {
                cond(
                    ConditionType::Progressing,
                    true,
                    "Verifying",
                    "generation 4: verifying taxcollector-demo:v2: 3 health probes (3 ok in a row)",
                )
            } else {
                cond(ConditionType::Progressing, false, "AsExpected", "")
            },
            cond(ConditionType::Degraded, false, "AsExpected", ""),
        ],
        desired_replicas: Some(desired),
        running_replicas: Some(running),
        image: image.map(String::from),
        observed_generation: 4,
        last_reconcile: now,
        applied_revision: None,
        attempted_revision: None,
        details: None,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| steward_api::DEFAULT_LISTEN.to_string());
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(&dir.path().join("demo.db")).expect("open a scratch store"));
    store
        .put_status(&status("Stack", "demo", false, true, 7, 8, None))
        .unwrap();
    store
        .put_status(&status(
            "Service",
            "demo-web",
            false,
            true,
            1,
            2,
            Some("taxcollector-demo:v2"),
        ))
        .unwrap();
    store
        .put_status(&status(
            "Service",
            "demo-worker",
            true,
            false,
            6,
            6,
            Some("taxcollector-demo:v1"),
        ))
        .unwrap();
    store
        .set_meta(
            steward_controller::META_ROLLOUT,
            r#"{"generation":4,"phase":"Verifying","services":[{"name":"demo-web","phase":"Verifying","to_image":"taxcollector-demo:v2"}],"cause":null}"#,
        )
        .unwrap();
    let record = |type_, reason: &str, object: &str, message: &str| {
        let ev = NewEvent {
            type_,
            reason: reason.into(),
            message: message.into(),
            object: object.into(),
        };
        store.record_event(&ev, OffsetDateTime::now_utc()).unwrap();
    };
    record(
        EventType::Normal,
        "Created",
        "Service/demo-worker",
        "created service demo-worker (taxcollector-demo:v1, 6 replicas)",
    );
    record(
        EventType::Normal,
        "RolloutStarted",
        "Rollout/4",
        "rolling out generation 4: demo-web taxcollector-demo:v1 → taxcollector-demo:v2",
    );
    record(
        EventType::Warning,
        "DriftCorrected",
        "Service/demo-worker",
        "changed outside steward, restored: replicas: 9 → 6",
    );

    let (wake, mut wakes) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move { while wakes.recv().await.is_some() {} });
    let state = steward_api::ApiState {
        store: store.clone(),
        metrics: Metrics::new(),
        wake,
        api_token: None,
        webhook_secret: None,
        ready: Arc::new(AtomicBool::new(true)),
    };
    let ticker = store.clone();
    tokio::spawn(async move {
        let mut n = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(4)).await;
            n += 1;
            let ev = NewEvent {
                type_: EventType::Warning,
                reason: "DriftCorrected".into(),
                message: format!("changed outside steward, restored: replicas: {} → 6", 6 + n % 3 + 1),
                object: "Service/demo-worker".into(),
            };
            let _ = ticker.record_event(&ev, OffsetDateTime::now_utc());
        }
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("dashboard on http://{}", listener.local_addr()?);
    steward_api::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
