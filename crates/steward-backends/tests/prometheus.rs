//! The Prometheus client against a real Prometheus (scripts/ensure-prometheus.sh) scraping a
//! real demo service on the local swarm: values, empty answers, NaN and each kind of error.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use steward_backends::prometheus::{single_value, Prometheus, PrometheusError, QueryResult};

const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prometheus hands discovered targets to the scraper at most every 5 s; measured 0.5-5.2 s here.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(60);
/// Swarm schedules and starts a 1.5 MB image; generous for a busy 2-core machine.
const SERVICE_START_DEADLINE: Duration = Duration::from_secs(90);
const POLL_EVERY: Duration = Duration::from_millis(250);

fn prometheus_url() -> String {
    let port = std::env::var("STEWARD_PROMETHEUS_PORT").unwrap_or_else(|_| "19090".into());
    format!("http://127.0.0.1:{port}")
}

fn targets_dir() -> PathBuf {
    let dir = std::env::var("STEWARD_PROMETHEUS_DIR").unwrap_or_else(|_| "/tmp/steward-prometheus".into());
    PathBuf::from(dir).join("targets")
}

/// Returns false after printing why, or panics when STEWARD_REQUIRE_SERVICES=1 says the
/// services must be there (CI), so that a broken set-up cannot pass as skipped tests.
fn skip(test: &str, why: &str) -> bool {
    assert!(
        std::env::var("STEWARD_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "{test}: {why} (STEWARD_REQUIRE_SERVICES=1)"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

async fn prometheus_available(test: &str) -> bool {
    let ready = reqwest::Client::new()
        .get(format!("{}/-/ready", prometheus_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if !ready {
        return skip(
            test,
            &format!(
                "no Prometheus ready at {} (run scripts/ensure-prometheus.sh)",
                prometheus_url()
            ),
        );
    }
    if !targets_dir().is_dir() {
        return skip(test, &format!("no file_sd folder {}", targets_dir().display()));
    }
    true
}

fn docker_available(test: &str, image: &str) -> bool {
    let manager = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.ControlAvailable}}"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true");
    if !manager {
        return skip(test, "no Docker swarm manager");
    }
    let has_image = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_image {
        return skip(test, &format!("no image {image} (run scripts/demo-images.sh)"));
    }
    true
}

fn prometheus() -> Prometheus {
    Prometheus::new(&prometheus_url(), QUERY_TIMEOUT).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A one-task demo service published on a host port (the ingress mesh does not work here);
/// removed when dropped, whatever the test did.
struct DemoService {
    name: String,
    port: u16,
}

impl DemoService {
    async fn start(name: String, image: &str) -> DemoService {
        let port = free_port();
        let service = DemoService { name, port };
        let out = Command::new("docker")
            .args(["service", "create", "--detach", "--name", &service.name])
            .args(["--publish", &format!("mode=host,target=8080,published={port}")])
            .args(["--limit-memory", "32m", "--stop-grace-period", "1s", image])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker service create {}: {}",
            service.name,
            String::from_utf8_lossy(&out.stderr)
        );
        service.wait_answering().await;
        service
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_answering(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + SERVICE_START_DEADLINE;
        loop {
            let answer = client
                .get(format!("{}/version", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                let ps = Command::new("docker")
                    .args(["service", "ps", "--no-trunc", &self.name])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!(
                    "{} not answering on {} after {SERVICE_START_DEADLINE:?}:\n{ps}",
                    self.name,
                    self.base()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

impl Drop for DemoService {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["service", "rm", &self.name]).output();
    }
}

/// A file_sd target file; Prometheus stops scraping it once the file is gone.
struct Target(PathBuf);

impl Target {
    fn register(port: u16, instance_id: &str) -> Target {
        let dir = targets_dir();
        let path = dir.join(format!("{instance_id}.json"));
        let body = format!(r#"[{{"targets": ["127.0.0.1:{port}"], "labels": {{"instance_id": "{instance_id}"}}}}]"#);
        // Renamed into place: Prometheus must never read a half-written file.
        let tmp = dir.join(format!("{instance_id}.json.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        Target(path)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn poll_value(prom: &Prometheus, promql: &str, until: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + SCRAPE_DEADLINE;
    loop {
        let last = prom.query(promql).await;
        if let Ok(r) = &last {
            if let Some(v) = single_value(r).filter(|v| until(*v)) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{promql}: condition not met after {SCRAPE_DEADLINE:?}; last answer {last:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[tokio::test]
async fn scraped_demo_traffic_is_queryable() {
    let test = "scraped_demo_traffic_is_queryable";
    if !prometheus_available(test).await || !docker_available(test, "taxcollector-demo:v1") {
        return;
    }
    let instance_id = format!("be-prom-{}", std::process::id());
    let service = DemoService::start(instance_id.clone(), "taxcollector-demo:v1").await;
    let registered = Instant::now();
    let _target = Target::register(service.port, &instance_id);

    let client = reqwest::Client::new();
    for (path, count, status) in [("/", 50, 200), ("/no-such-page", 20, 404)] {
        for _ in 0..count {
            let r = client.get(format!("{}{path}", service.base())).send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "GET {path}");
        }
    }
    let traffic_took = registered.elapsed();

    let prom = prometheus();
    let sel = format!(r#"demo_http_requests_total{{instance_id="{instance_id}"}}"#);
    let first = poll_value(&prom, &format!("sum({sel})"), |v| v > 0.0).await;
    let first_after = registered.elapsed();
    // The demo app counts a 404 under path="other"; scrapes of /metrics are counted too.
    let ours = format!(r#"sum(demo_http_requests_total{{instance_id="{instance_id}",path=~"/|other"}})"#);
    poll_value(&prom, &ours, |v| v >= 70.0).await;
    eprintln!(
        "timing: traffic sent {:.2}s after registration; first sample (sum {first}) queryable after {:.2}s, all of it after {:.2}s",
        traffic_took.as_secs_f64(),
        first_after.as_secs_f64(),
        registered.elapsed().as_secs_f64()
    );

    let ratio_query =
        format!(r#"sum(demo_http_requests_total{{instance_id="{instance_id}",status=~"4..|5.."}}) / sum({sel})"#);
    let ratio = single_value(&prom.query(&ratio_query).await.unwrap()).expect("one sample");
    assert!(ratio > 0.0 && ratio < 1.0, "error ratio {ratio}");

    // Unaggregated: one series per path and status, with the target's labels attached.
    let QueryResult::Vector(series) = prom.query(&sel).await.unwrap() else {
        panic!("a vector")
    };
    let not_found = series
        .iter()
        .find(|(l, _)| l.get("status").map(String::as_str) == Some("404"))
        .expect("a 404 series");
    assert_eq!(not_found.1, 20.0);
    assert_eq!(not_found.0.get("job").map(String::as_str), Some("steward-e2e"));
    assert_eq!(not_found.0.get("instance_id"), Some(&instance_id));
    assert!(series.len() >= 2 && single_value(&QueryResult::Vector(series)).is_none());

    // A ratio over no traffic: present, but NaN, which the caller must treat as inconclusive.
    let idle = format!(r#"sum({sel}) * 0 / (sum({sel}) * 0)"#);
    let v = single_value(&prom.query(&idle).await.unwrap()).expect("one sample");
    assert!(v.is_nan(), "{v}");
}

#[tokio::test]
async fn a_missing_metric_is_empty() {
    let test = "a_missing_metric_is_empty";
    if !prometheus_available(test).await {
        return;
    }
    let q = format!("steward_no_such_metric_{}", std::process::id());
    assert_eq!(prometheus().query(&q).await.unwrap(), QueryResult::Empty);
    let r = prometheus().query(&format!("sum({q})")).await.unwrap();
    assert_eq!(r, QueryResult::Empty);
    assert_eq!(single_value(&r), None);
}

#[tokio::test]
async fn zero_by_zero_is_nan() {
    let test = "zero_by_zero_is_nan";
    if !prometheus_available(test).await {
        return;
    }
    let r = prometheus().query("0/0").await.unwrap();
    assert!(matches!(r, QueryResult::Scalar(v) if v.is_nan()), "{r:?}");
    let r = prometheus().query("vector(0) / 0").await.unwrap();
    assert!(single_value(&r).is_some_and(f64::is_nan), "{r:?}");
}

#[tokio::test]
async fn invalid_promql_is_a_bad_request() {
    let test = "invalid_promql_is_a_bad_request";
    if !prometheus_available(test).await {
        return;
    }
    let e = prometheus()
        .query("sum(rate(demo_http_requests_total[1m])")
        .await
        .unwrap_err();
    assert!(e.is_bad_query(), "{e:?}");
    let PrometheusError::Status { status, message, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*status, 400);
    assert!(message.contains("parse error"), "{message}");
}

#[tokio::test]
async fn an_unreachable_prometheus_is_unreachable() {
    // Nothing listens on the discard port.
    let prom = Prometheus::new("http://127.0.0.1:9", QUERY_TIMEOUT).unwrap();
    let e = prom.query("up").await.unwrap_err();
    assert!(matches!(e, PrometheusError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("127.0.0.1:9"), "{e}");
}

#[tokio::test]
async fn a_silent_prometheus_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and never answers; ends with the test's runtime.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let timeout = Duration::from_millis(500);
    let prom = Prometheus::new(&format!("http://{addr}"), timeout).unwrap();
    let start = Instant::now();
    let e = prom.query("up").await.unwrap_err();
    assert!(matches!(e, PrometheusError::Timeout { .. }), "{e:?}");
    assert!(
        start.elapsed() < timeout + Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}
