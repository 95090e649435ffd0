//! Helpers for the tests that drive the HTTP API and the dashboard: a `steward run --listen` of
//! a test's own, and headless Chromium driven over the DevTools protocol (a WebSocket).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{wait_for, World, REQUIRE_ENV};

/// Chromium's path; `None` (the test skipped) when it is not installed, unless
/// STEWARD_REQUIRE_SERVICES=1, where a missing Chromium fails the test.
pub fn require_chromium(test: &str) -> Option<PathBuf> {
    let found = Chromium::find();
    if found.is_none() {
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("{test}: needs Chromium ({REQUIRE_ENV}=1): run scripts/ensure-chromium.sh");
        }
        eprintln!("SKIPPED {test}: no chromium here (scripts/ensure-chromium.sh installs it)");
    }
    found
}

/// A `steward run --listen` of our own: World's `spawn_run` puts extra flags before the
/// subcommand, and `--listen` belongs to `run`. Killed when dropped.
pub struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    pub fn start(w: &World, port: u16, token: &str) -> Controller {
        let log = w.dir.path().join("run-api.log");
        let child = w
            .cmd()
            .args(["run", w.manifests().to_str().unwrap(), "--resync", "60s"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("STEWARD_API_TOKEN", token)
            .env_remove("STEWARD_WEBHOOK_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn steward run --listen");
        Controller { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test with the controller's log when it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("steward run exited ({status}); its log:\n{}", self.log());
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium in a process group of its own, driven over the DevTools protocol. The
/// whole group (renderers, GPU and zygote helpers) is killed when dropped, pass or fail.
pub struct Chromium {
    child: Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// A single DevTools call's answer time; page loads are waited for by polling, not here.
pub const CDP_TIMEOUT: Duration = Duration::from_secs(15);

impl Chromium {
    pub fn find() -> Option<PathBuf> {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
    }

    pub fn launch(bin: &Path, url: &str) -> Chromium {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args([
                "--headless",
                // Tests run as root in a container, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1280,900",
                // Port 0: Chromium picks a free one and writes it to DevToolsActivePort.
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(profile.path().join("chromium.log")).unwrap(),
            ))
            .spawn()
            .expect("start chromium");
        let mut guard = Launching(Some(child));
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = wait_for("Chromium's DevTools port", Duration::from_secs(30), || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()
        });
        let ws_url = wait_for("the dashboard's DevTools target", Duration::from_secs(30), || {
            let targets: serde_json::Value = serde_json::from_str(&devtools_get(port, "/json/list")?).ok()?;
            let id = targets.as_array()?.iter().find_map(|t| {
                (t["type"] == "page" && t["url"].as_str()?.starts_with(url))
                    .then(|| t["id"].as_str().map(String::from))?
            })?;
            Some(format!("ws://127.0.0.1:{port}/devtools/page/{id}"))
        });
        let (ws, _) = tungstenite::connect(ws_url.as_str()).expect("connect to the page over DevTools");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(CDP_TIMEOUT)).unwrap();
        }
        Chromium {
            child: guard.0.take().unwrap(),
            ws,
            next_id: 0,
            _profile: profile,
        }
    }

    /// One DevTools call; events that arrive in between are skipped.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .expect("send a DevTools call");
        let deadline = Instant::now() + CDP_TIMEOUT;
        while Instant::now() < deadline {
            let reply = match self.ws.read().expect("read from DevTools") {
                tungstenite::Message::Text(t) => serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap(),
                _ => continue,
            };
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
        }
        panic!("no answer to {method} within {CDP_TIMEOUT:?}");
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression} threw: {r}");
        r["result"]["value"].clone()
    }

    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", serde_json::json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// Kills Chromium if setting up the DevTools connection panics midway.
pub struct Launching(Option<Child>);

impl Drop for Launching {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            kill_group(c);
        }
    }
}

pub fn kill_group(child: &mut Child) {
    // The group id is Chromium's pid (process_group(0)); the minus sign addresses the group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        kill_group(&mut self.child);
    }
}

/// `GET` from Chromium's DevTools HTTP server, which keeps the connection open whatever the
/// request says: the body is read to its Content-Length.
pub fn devtools_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        let len: usize = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })?;
        if body.len() >= len {
            return Some(body[..len].to_string());
        }
    }
}
