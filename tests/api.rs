//! The HTTP API and dashboard of `steward run --listen`, end to end: a real controller on the
//! real Swarm, the page in headless Chromium driven over the DevTools protocol.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use steward_e2e::browser::{require_chromium, Chromium, Controller};
use steward_e2e::*;

/// `POST` with an optional bearer token → status code; `None` when nothing answers.
fn http_post(port: u16, path: &str, token: Option<&str>) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

fn api_status(port: u16) -> Option<serde_json::Value> {
    let (code, body) = http_get(port, "/api/v1/status")?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn service_item<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["items"]
        .as_array()?
        .iter()
        .find(|i| i["kind"] == "Service" && i["name"] == name)
}

fn is_ready(item: &serde_json::Value) -> bool {
    item["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// `running/desired` as the dashboard prints it.
fn replicas_text(item: &serde_json::Value) -> String {
    let n = |v: &serde_json::Value| v.as_u64().map_or("?".to_string(), |n| n.to_string());
    format!("{}/{}", n(&item["runningReplicas"]), n(&item["desiredReplicas"]))
}

/// Each resource row of the page as `[Kind/name, replicas text]`.
const ROWS_JS: &str = r#"JSON.stringify([...document.querySelectorAll("tr[data-resource]")].map((tr) => [tr.dataset.resource, tr.querySelector("td.replicas").innerText.trim()]))"#;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

#[test]
fn dashboard_shows_status_and_live_events_and_sync_needs_the_token() {
    const TEST: &str = "dashboard_shows_status_and_live_events_and_sync_needs_the_token";
    if !require_swarm(TEST) {
        return;
    }
    let Some(chromium) = require_chromium(TEST) else {
        return;
    };

    let w = World::new("api");
    let (web, worker) = (w.svc("web"), w.svc("worker"));
    let report = w.svc("report");
    w.write(
        "app.yaml",
        &format!(
            "{}{}{}---\napiVersion: steward.io/v1alpha1\nkind: Schedule\nmetadata:\n  name: {report}\nspec:\n  schedule: \"*/3 * * * * *\"\n  job:\n    imageFrom: {{service: {web}}}\n    command: [/demo-app, task, report]\n",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 2, ""),
            w.service_doc("worker", "taxcollector-demo:v1", 1, "")
        ),
    );
    let token = format!("e2e-token-{}", std::process::id());
    let port = free_port();
    let mut ctl = Controller::start(&w, port, &token);

    wait_for("/readyz to answer 200", Duration::from_secs(60), || {
        ctl.assert_running();
        (http_get(port, "/readyz")?.0 == 200).then_some(())
    });
    let status = wait_for("both services Ready in /api/v1/status", Duration::from_secs(90), || {
        let s = api_status(port)?;
        (is_ready(service_item(&s, &web)?) && is_ready(service_item(&s, &worker)?)).then_some(s)
    });
    assert_eq!(replicas_text(service_item(&status, &web).unwrap()), "2/2", "{status}");
    assert_eq!(
        replicas_text(service_item(&status, &worker).unwrap()),
        "1/1",
        "{status}"
    );

    let (code, metrics) = http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    assert!(metrics.contains("# EOF"), "{metrics}");

    // Sync needs the token.
    assert_eq!(http_post(port, "/api/v1/sync", None), Some(401));
    assert_eq!(http_post(port, "/api/v1/sync", Some("not-the-token")), Some(401));
    assert_eq!(http_post(port, "/api/v1/sync", Some(&token)), Some(202));

    // The page shows both services with the replica counts the API reports. The API is read
    // again on every look, as both change while tasks settle.
    let url = format!("http://127.0.0.1:{port}/");
    let mut page = Chromium::launch(&chromium, &url);
    wait_for(
        "the dashboard to show both services as the API does",
        Duration::from_secs(30),
        || {
            let shown: Vec<(String, String)> = serde_json::from_str(page.eval(ROWS_JS).as_str()?).ok()?;
            let api = api_status(port)?;
            let expect = |name: &str| Some((format!("Service/{name}"), replicas_text(service_item(&api, name)?)));
            let (a, b) = (expect(&web)?, expect(&worker)?);
            (shown.contains(&a) && shown.contains(&b)).then_some(())
        },
    );
    let text = page.eval("document.body.innerText").as_str().unwrap().to_string();
    assert!(
        text.contains(&web) && text.contains(&worker) && text.contains(&w.stack),
        "{text}"
    );
    assert!(!text.contains("DriftCorrected"), "no drift yet: {text}");

    // The schedule, with its next run and a timeline of succeeded runs (its job runs the image
    // the web service runs).
    let schedule_row = format!(r#"document.querySelector('#schedules tr[data-schedule="{report}"]')"#);
    wait_for("the schedule's runs on the timeline", Duration::from_secs(40), || {
        let n = page
            .eval(&format!(
                r#"{schedule_row}?.querySelectorAll('.timeline .run[data-outcome="Succeeded"]').length ?? 0"#
            ))
            .as_u64()?;
        (n >= 1).then_some(())
    });
    let next = page
        .eval(&format!("{schedule_row}.querySelector('td.next').innerText"))
        .as_str()
        .unwrap()
        .to_string();
    assert!(!next.is_empty() && next != "—", "next run shown: {next:?}");

    // A drift, corrected by steward, reaches the open page through the event stream: the page
    // is never reloaded (the marker set now would not survive a reload).
    page.eval("window.stewardE2eMarker = 'same page'");
    docker_ok(&["service", "scale", "-d", &format!("{web}=3")]);
    let text = wait_for("DriftCorrected on the open page", Duration::from_secs(30), || {
        ctl.assert_running();
        let text = page.eval("document.body.innerText").as_str()?.to_string();
        text.contains("DriftCorrected").then_some(text)
    });
    assert!(text.contains(&format!("Service/{web}")), "{text}");
    assert_eq!(
        page.eval("window.stewardE2eMarker"),
        "same page",
        "the page was reloaded"
    );
    assert_eq!(
        page.eval(r#"document.querySelector("li.warning")?.dataset.reason ?? null"#),
        "DriftCorrected",
        "newest on top, highlighted"
    );
    wait_for("web back at 2/2 on the page", Duration::from_secs(30), || {
        let shown: Vec<(String, String)> = serde_json::from_str(page.eval(ROWS_JS).as_str()?).ok()?;
        shown
            .contains(&(format!("Service/{web}"), "2/2".to_string()))
            .then_some(())
    });

    let shot = target_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    page.screenshot(&shot);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG ({} bytes)",
        shot.display(),
        png.len()
    );
    // A phone-sized view too: the table turns into cards.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    let narrow = target_dir().join("dashboard-narrow.png");
    page.screenshot(&narrow);
    assert!(std::fs::read(&narrow).unwrap().starts_with(b"\x89PNG"));
    eprintln!("{TEST}: screenshots at {} and {}", shot.display(), narrow.display());
}

/// `steward status --server` and `steward events --follow --server` read a running controller.
#[test]
fn cli_reads_status_and_follows_events_from_a_running_controller() {
    if !require_swarm("cli_reads_status_and_follows_events_from_a_running_controller") {
        return;
    }
    let mut w = World::new("server");
    let web = w.svc("web");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 1, "")
        ),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    w.spawn_run(&["--listen", &listen]);
    let server = format!("http://{listen}");
    let status = wait_for("status over the API shows web Ready", Duration::from_secs(60), || {
        // A different state file: the data can only come from the server.
        let o = std::process::Command::new(steward_bin())
            .args([
                "--state",
                "/nonexistent/steward.db",
                "status",
                "-o",
                "json",
                "--server",
                &server,
            ])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        let item = v["items"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == web.as_str())?
            .clone();
        let ready = item["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(item)
    });
    assert_eq!(status["runningReplicas"], 1);

    let mut follow = std::process::Command::new(steward_bin())
        .args([
            "--state",
            "/nonexistent/steward.db",
            "events",
            "--follow",
            "-o",
            "json",
            "--server",
            &server,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Let the follower connect (it prints the history first), then cause a Warning.
    wait_for("history printed", Duration::from_secs(10), || {
        rx.recv_timeout(Duration::from_millis(200)).ok()
    });
    docker_ok(&["service", "scale", "-d", &format!("{web}=2")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = false;
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(250)) {
            if line.contains("DriftCorrected") {
                seen = true;
                break;
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "events --follow --server printed the DriftCorrected event live");
}
