use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use sha2::Sha256;
use steward_controller::metrics::Metrics;
use steward_controller::Wake;
use steward_plan::status::{Condition, ConditionStatus, ConditionType, EventType, NewEvent, ResourceStatus};
use steward_store::Store;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::{router, serve, ApiState};

const TOKEN: &str = "t0ken-for-tests";
const SECRET: &str = "webhook-secret-for-tests";

struct Fixture {
    _dir: tempfile::TempDir,
    state: ApiState,
    wakes: mpsc::Receiver<Wake>,
}

fn fixture(token: Option<&str>, secret: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
    let (wake, wakes) = mpsc::channel(8);
    Fixture {
        _dir: dir,
        state: ApiState {
            store,
            metrics: Metrics::new(),
            wake,
            api_token: token.map(String::from),
            webhook_secret: secret.map(String::from),
            ready: Arc::new(AtomicBool::new(false)),
        },
        wakes,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn call(state: &ApiState, req: Request<Body>) -> Reply {
    let res = router(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn get(state: &ApiState, uri: &str) -> Reply {
    call(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

fn post(uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::post(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn status_of(kind: &str, name: &str, ready: bool) -> ResourceStatus {
    let now = OffsetDateTime::now_utc();
    let cond = |type_, status: bool| Condition {
        type_,
        status: ConditionStatus::from_bool(status),
        reason: if status {
            "Converged".into()
        } else {
            "AsExpected".into()
        },
        message: "m".into(),
        last_transition_time: now,
        observed_generation: 3,
    };
    ResourceStatus {
        kind: kind.into(),
        name: name.into(),
        conditions: vec![
            cond(ConditionType::Ready, ready),
            cond(ConditionType::Progressing, false),
            cond(ConditionType::Degraded, false),
        ],
        desired_replicas: Some(2),
        running_replicas: Some(if ready { 2 } else { 1 }),
        image: Some("taxcollector-demo:v1".into()),
        observed_generation: 3,
        last_reconcile: now,
        applied_revision: None,
        attempted_revision: None,
        details: None,
    }
}

fn event(object: &str, reason: &str) -> NewEvent {
    NewEvent {
        type_: EventType::Warning,
        reason: reason.into(),
        message: format!("{reason} happened"),
        object: object.into(),
    }
}

#[tokio::test]
async fn healthz_answers_ok() {
    let f = fixture(None, None);
    let r = get(&f.state, "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn readyz_waits_for_the_first_pass() {
    let f = fixture(None, None);
    assert_eq!(get(&f.state, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    f.state.ready.store(true, Ordering::Release);
    assert_eq!(get(&f.state, "/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let f = fixture(None, None);
    f.state
        .metrics
        .reconcile("Service", "success", Duration::from_millis(5));
    let r = get(&f.state, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        steward_controller::metrics::CONTENT_TYPE
    );
    assert!(
        r.body
            .contains(r#"steward_reconciles_total{kind="Service",result="success"} 1"#),
        "{}",
        r.body
    );
    assert!(r.body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn status_lists_resources_and_the_persisted_rollout() {
    let f = fixture(None, None);
    let r = get(&f.state, "/api/v1/status").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        serde_json::json!({"items": [], "rollout": null, "source": {"applied": null, "attempted": null}})
    );

    f.state.store.put_status(&status_of("Service", "web", true)).unwrap();
    f.state
        .store
        .put_status(&status_of("Service", "worker", false))
        .unwrap();
    f.state.store.put_status(&status_of("Stack", "demo", false)).unwrap();
    f.state
        .store
        .set_meta(
            steward_controller::META_ROLLOUT,
            r#"{"generation":3,"phase":"Verifying","cause":null}"#,
        )
        .unwrap();
    let v = get(&f.state, "/api/v1/status").await.json();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "worker", "demo"], "ordered by kind, then name: {v}");
    assert_eq!(v["items"][0]["conditions"][0]["type"], "Ready");
    assert_eq!(v["items"][0]["conditions"][0]["status"], "True");
    assert_eq!(v["items"][1]["runningReplicas"], 1);
    assert_eq!(v["rollout"]["phase"], "Verifying");
    f.state
        .store
        .set_meta(
            steward_controller::META_SOURCE_APPLIED_DESCRIBE,
            "1a2b3c4 'scale web' (Jane)",
        )
        .unwrap();
    let v = get(&f.state, "/api/v1/status").await.json();
    assert_eq!(v["source"]["applied"], "1a2b3c4 'scale web' (Jane)");

    // The controller writes "null" when no rollout is in force; garbage reads as none too.
    f.state
        .store
        .set_meta(steward_controller::META_ROLLOUT, "null")
        .unwrap();
    assert_eq!(
        get(&f.state, "/api/v1/status").await.json()["rollout"],
        serde_json::Value::Null
    );
    f.state
        .store
        .set_meta(steward_controller::META_ROLLOUT, "{not json")
        .unwrap();
    assert_eq!(
        get(&f.state, "/api/v1/status").await.json()["rollout"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn events_filter_by_since_object_and_limit_oldest_first() {
    let f = fixture(None, None);
    let now = OffsetDateTime::now_utc();
    let store = &f.state.store;
    store
        .record_event(&event("Service/a", "Old"), now - time::Duration::hours(2))
        .unwrap();
    store
        .record_event(&event("Service/b", "Middle"), now - time::Duration::minutes(5))
        .unwrap();
    store
        .record_event(&event("Service/a", "New"), now - time::Duration::minutes(1))
        .unwrap();
    let reasons = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect()
    };

    let all = get(&f.state, "/api/v1/events").await;
    assert_eq!(all.status, StatusCode::OK);
    let v = all.json();
    assert_eq!(reasons(v.clone()), ["Old", "Middle", "New"]);
    assert_eq!(v[0]["type"], "Warning");
    assert_eq!(v[0]["count"], 1);
    assert!(v[0]["firstSeen"].is_string() && v[0]["lastSeen"].is_string(), "{v}");

    assert_eq!(
        reasons(get(&f.state, "/api/v1/events?since=10m").await.json()),
        ["Middle", "New"]
    );
    let since = (now - time::Duration::minutes(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let since = since.replace('+', "%2B");
    assert_eq!(
        reasons(get(&f.state, &format!("/api/v1/events?since={since}")).await.json()),
        ["New"]
    );
    assert_eq!(
        reasons(get(&f.state, "/api/v1/events?object=Service/a").await.json()),
        ["Old", "New"]
    );
    assert_eq!(
        reasons(get(&f.state, "/api/v1/events?limit=2").await.json()),
        ["Middle", "New"]
    );
    assert_eq!(
        reasons(get(&f.state, "/api/v1/events?object=Service%2Fa&limit=1").await.json()),
        ["New"]
    );

    for bad in ["since=yesterday", "limit=0", "limit=x", "limit=100000"] {
        let r = get(&f.state, &format!("/api/v1/events?{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.json()["error"].as_str().is_some(), "{bad}: {}", r.body);
    }
}

#[tokio::test]
async fn sync_needs_the_bearer_token() {
    let mut f = fixture(Some(TOKEN), None);
    let r = call(&f.state, post("/api/v1/sync", &[], "")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    let r = call(&f.state, post("/api/v1/sync", &[("authorization", "Bearer wrong")], "")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.body.contains("wrong\""), "the given token is not echoed: {}", r.body);
    let r = call(
        &f.state,
        post("/api/v1/sync", &[("authorization", &format!("Bearer {TOKEN}x"))], ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(
        &f.state,
        post("/api/v1/sync", &[("authorization", &format!("Basic {TOKEN}"))], ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(f.wakes.try_recv().is_err(), "no wake for a rejected request");

    let r = call(
        &f.state,
        post("/api/v1/sync", &[("authorization", &format!("Bearer {TOKEN}"))], ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(f.wakes.try_recv().unwrap(), Wake::Sync);
    // A burst of requests while the loop is busy coalesces into the queued wakes.
    for _ in 0..20 {
        let r = call(
            &f.state,
            post("/api/v1/sync", &[("authorization", &format!("bearer {TOKEN}"))], ""),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
}

#[tokio::test]
async fn sync_is_forbidden_without_a_configured_token() {
    let mut f = fixture(None, Some(SECRET));
    let r = call(
        &f.state,
        post("/api/v1/sync", &[("authorization", "Bearer anything")], ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("STEWARD_API_TOKEN is unset"),
        "{}",
        r.body
    );
    assert!(f.wakes.try_recv().is_err());
}

#[tokio::test]
async fn sync_reports_a_stopped_loop() {
    let f = fixture(Some(TOKEN), None);
    drop(f.wakes);
    let r = call(
        &f.state,
        post("/api/v1/sync", &[("authorization", &format!("Bearer {TOKEN}"))], ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

const GITHUB_PUSH: &str = r#"{"ref":"refs/heads/main","before":"1111111111111111111111111111111111111111","after":"2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e","repository":{"full_name":"ops/desired"}}"#;
const GITLAB_PUSH: &str = r#"{"object_kind":"push","ref":"refs/heads/release","before":"1111111111111111111111111111111111111111","after":"","checkout_sha":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432","project":{"path_with_namespace":"ops/desired"}}"#;

fn github_headers(sig: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", "push".into()),
        ("content-type", "application/json".into()),
        ("x-hub-signature-256", format!("sha256={sig}")),
    ]
}

async fn webhook(f: &Fixture, headers: &[(&str, String)], body: &str) -> Reply {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    call(&f.state, post("/api/v1/webhooks/git", &h, body)).await
}

#[tokio::test]
async fn github_push_with_a_valid_signature_wakes_a_fetch() {
    let mut f = fixture(None, Some(SECRET));
    let r = webhook(&f, &github_headers(&sign(SECRET, GITHUB_PUSH)), GITHUB_PUSH).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let v = r.json();
    assert_eq!(v["source"], "github");
    assert_eq!(v["branch"], "main");
    assert_eq!(v["ref"], "refs/heads/main");
    assert_eq!(v["commit"], "2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e");
    assert_eq!(f.wakes.try_recv().unwrap(), Wake::Fetch);
}

#[tokio::test]
async fn github_signature_is_checked() {
    let mut f = fixture(None, Some(SECRET));
    let good = sign(SECRET, GITHUB_PUSH);
    // Wrong secret.
    let r = webhook(&f, &github_headers(&sign("another", GITHUB_PUSH)), GITHUB_PUSH).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Tampered body: the signature of the original no longer matches.
    let tampered = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/evil");
    assert_eq!(
        webhook(&f, &github_headers(&good), &tampered).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Missing header.
    let no_sig = vec![("x-github-event", "push".to_string())];
    let r = webhook(&f, &no_sig, GITHUB_PUSH).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json()["error"].as_str().unwrap().contains("X-Hub-Signature-256"));
    // Without the `sha256=` prefix, and a truncated signature.
    let bare = vec![("x-hub-signature-256", good.clone())];
    assert_eq!(webhook(&f, &bare, GITHUB_PUSH).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        webhook(&f, &github_headers(&good[..40]), GITHUB_PUSH).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(f.wakes.try_recv().is_err(), "no wake for a rejected delivery");
}

#[tokio::test]
async fn github_ping_and_other_events_do_not_wake() {
    let mut f = fixture(None, Some(SECRET));
    let body = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let mut h = github_headers(&sign(SECRET, body));
    h[0].1 = "ping".into();
    let r = webhook(&f, &h, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["pong"], true);
    h[0].1 = "issues".into();
    let r = webhook(&f, &h, body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["ignored"], "issues");
    assert!(f.wakes.try_recv().is_err());
}

#[tokio::test]
async fn gitea_push_is_verified_by_its_own_header() {
    let mut f = fixture(None, Some(SECRET));
    let body = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/prod");
    let headers = |sig: String| vec![("x-gitea-event", "push".to_string()), ("x-gitea-signature", sig)];
    let r = webhook(&f, &headers(sign(SECRET, &body)), &body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.json()["source"], "gitea");
    assert_eq!(r.json()["branch"], "prod");
    assert_eq!(f.wakes.try_recv().unwrap(), Wake::Fetch);

    assert_eq!(
        webhook(&f, &headers(sign("another", &body)), &body).await.status,
        StatusCode::UNAUTHORIZED
    );
    let tampered = body.replace("prod", "main");
    assert_eq!(
        webhook(&f, &headers(sign(SECRET, &body)), &tampered).await.status,
        StatusCode::UNAUTHORIZED
    );
    let missing = vec![("x-gitea-event", "push".to_string())];
    assert_eq!(webhook(&f, &missing, &body).await.status, StatusCode::UNAUTHORIZED);
    assert!(f.wakes.try_recv().is_err());
}

#[tokio::test]
async fn gitlab_push_is_verified_by_its_token() {
    let mut f = fixture(None, Some(SECRET));
    let headers = |token: &str| {
        vec![
            ("x-gitlab-event", "Push Hook".to_string()),
            ("x-gitlab-token", token.to_string()),
        ]
    };
    let r = webhook(&f, &headers(SECRET), GITLAB_PUSH).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let v = r.json();
    assert_eq!(v["source"], "gitlab");
    assert_eq!(v["branch"], "release");
    assert_eq!(
        v["commit"], "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432",
        "checkout_sha when after is empty"
    );
    assert_eq!(f.wakes.try_recv().unwrap(), Wake::Fetch);

    assert_eq!(
        webhook(&f, &headers("wrong"), GITLAB_PUSH).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        webhook(&f, &headers(""), GITLAB_PUSH).await.status,
        StatusCode::UNAUTHORIZED
    );
    let missing = vec![("x-gitlab-event", "Push Hook".to_string())];
    assert_eq!(
        webhook(&f, &missing, GITLAB_PUSH).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(f.wakes.try_recv().is_err());
}

#[tokio::test]
async fn webhooks_are_forbidden_without_a_configured_secret() {
    let mut f = fixture(Some(TOKEN), None);
    let r = webhook(&f, &github_headers(&sign("", GITHUB_PUSH)), GITHUB_PUSH).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("STEWARD_WEBHOOK_SECRET is unset"));
    assert!(f.wakes.try_recv().is_err());
}

#[tokio::test]
async fn a_signed_payload_that_is_not_json_is_a_bad_request() {
    let mut f = fixture(None, Some(SECRET));
    let body = "ref=refs/heads/main";
    let r = webhook(&f, &github_headers(&sign(SECRET, body)), body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(f.wakes.try_recv().is_err());
}

#[tokio::test]
async fn dashboard_is_one_self_contained_page() {
    let f = fixture(None, None);
    let r = get(&f.state, "/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(r.body.contains("name=\"viewport\""));
    assert!(r.body.contains("new EventSource(\"/api/v1/events/stream\")"));
    // Nothing is loaded from elsewhere, and data never goes through innerHTML.
    for banned in [
        "src=\"http",
        "href=\"http",
        "<link ",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(!r.body.contains(banned), "dashboard contains {banned:?}");
    }
}

/// A request on a raw connection to a real server, and everything it has answered so far.
struct Conn {
    stream: tokio::net::TcpStream,
    received: String,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr, path: &str, extra_headers: &str) -> Conn {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{extra_headers}\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        Conn {
            stream,
            received: String::new(),
        }
    }

    /// Reads until the received text contains `needle`, failing after `timeout`.
    async fn read_until(&mut self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !self.received.contains(needle) {
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} within {timeout:?}; got:\n{}", self.received))
                .unwrap();
            assert!(n > 0, "connection closed before {needle:?}; got:\n{}", self.received);
            self.received.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[tokio::test]
async fn event_stream_delivers_events_recorded_after_connecting_and_ends_at_shutdown() {
    let f = fixture(None, None);
    let store = f.state.store.clone();
    store
        .record_event(&event("Service/web", "BeforeConnect"), OffsetDateTime::now_utc())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, f.state.clone(), async move {
        let _ = stop_rx.await;
    }));

    let mut live = Conn::open(addr, "/api/v1/events/stream", "").await;
    live.read_until("\r\n\r\n", Duration::from_secs(5)).await;
    assert!(live.received.starts_with("HTTP/1.1 200"), "{}", live.received);
    assert!(
        live.received
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        live.received
    );

    // The response head is sent once the stream's starting point is fixed, so this is "after".
    store
        .record_event(&event("Service/web", "DriftCorrected"), OffsetDateTime::now_utc())
        .unwrap();
    live.read_until("\"reason\":\"DriftCorrected\"", Duration::from_secs(5))
        .await;
    assert!(
        !live.received.contains("BeforeConnect"),
        "only new events: {}",
        live.received
    );
    let data = live.received.lines().find(|l| l.contains("DriftCorrected")).unwrap();
    let json: serde_json::Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(json["object"], "Service/web");
    assert_eq!(json["type"], "Warning");
    assert_eq!(json["count"], 1);
    // A fold is an update: the same event comes again with its new count.
    store
        .record_event(&event("Service/web", "DriftCorrected"), OffsetDateTime::now_utc())
        .unwrap();
    live.read_until("\"count\":2", Duration::from_secs(5)).await;
    assert!(live.received.contains("id: 3"), "{}", live.received);

    // A reconnecting browser resumes after the last id it saw; ?after=0 replays everything.
    let mut resumed = Conn::open(addr, "/api/v1/events/stream", "Last-Event-ID: 1\r\n").await;
    resumed.read_until("\"count\":2", Duration::from_secs(5)).await;
    assert!(!resumed.received.contains("BeforeConnect"), "{}", resumed.received);
    let mut replay = Conn::open(addr, "/api/v1/events/stream?after=0", "").await;
    replay.read_until("\"count\":2", Duration::from_secs(5)).await;
    assert!(replay.received.contains("BeforeConnect"), "{}", replay.received);

    // Open streams do not hold up shutdown.
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("serve returns promptly with streams open")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_bad_resume_point_is_a_bad_request() {
    let f = fixture(None, None);
    assert_eq!(
        get(&f.state, "/api/v1/events/stream?after=abc").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&f.state, "/api/v1/events/stream?after=-1").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn debug_never_shows_credentials() {
    let f = fixture(Some(TOKEN), Some(SECRET));
    let text = format!("{:?}", f.state);
    assert!(!text.contains(TOKEN) && !text.contains(SECRET), "{text}");
    assert!(text.contains("<set>"), "{text}");
}
