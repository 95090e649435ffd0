//! Helpers for end-to-end tests: run the `steward` binary, talk to Docker, poll with deadlines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod browser;
pub mod proxy;

/// Set by CI: a test that needs Docker fails instead of skipping when Docker is missing.
pub const REQUIRE_ENV: &str = "STEWARD_REQUIRE_SERVICES";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the `steward` binary once per test process and returns its path.
pub fn steward_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // A prebuilt binary (e.g. a release build being benchmarked) can be named explicitly.
        if let Some(bin) = std::env::var_os("STEWARD_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "steward", "--bin", "steward"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p steward failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        target.join("debug/steward")
    })
}

/// True when the Docker engine answers and is a swarm manager. Without it the test is skipped,
/// unless STEWARD_REQUIRE_SERVICES=1, where it fails.
pub fn require_swarm(test: &str) -> bool {
    let out = Command::new("docker")
        .args([
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ])
        .output();
    let ok = matches!(&out, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "active true");
    if !ok {
        let why = match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => e.to_string(),
        };
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("{test}: needs a Docker swarm manager ({REQUIRE_ENV}=1): {why}");
        }
        eprintln!("SKIPPED {test}: no Docker swarm manager here ({why})");
        return false;
    }
    for tag in ["v1", "v2"] {
        let img = format!("taxcollector-demo:{tag}");
        let ok = Command::new("docker")
            .args(["image", "inspect", &img])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{test}: image {img} missing: run `make demo-images`");
    }
    true
}

/// Polls `cond` until it returns Some, or panics after `timeout` saying what was awaited.
pub fn wait_for<T>(what: &str, timeout: Duration, cond: impl FnMut() -> Option<T>) -> T {
    try_wait_for(timeout, cond).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// [`wait_for`] that returns `None` at the deadline, so the caller can say what it saw last.
pub fn try_wait_for<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("run docker")
}

pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `docker service inspect --format`, `None` when the service does not exist.
pub fn inspect(name: &str, format: &str) -> Option<String> {
    let o = docker(&["service", "inspect", name, "--format", format]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub fn version_index(name: &str) -> u64 {
    inspect(name, "{{.Version.Index}}")
        .unwrap_or_else(|| panic!("service {name} exists"))
        .parse()
        .unwrap()
}

pub fn replicas(name: &str) -> Option<u64> {
    inspect(name, "{{.Spec.Mode.Replicated.Replicas}}").and_then(|s| s.parse().ok())
}

pub fn image(name: &str) -> Option<String> {
    inspect(name, "{{.Spec.TaskTemplate.ContainerSpec.Image}}")
}

pub fn label(name: &str, key: &str) -> Option<String> {
    inspect(name, &format!("{{{{index .Spec.Labels \"{key}\"}}}}")).filter(|s| !s.is_empty() && s != "<no value>")
}

/// Running tasks of a service, from `docker service ls` (status=true under the hood).
pub fn running(name: &str) -> Option<(u64, u64)> {
    let out = docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.Name}} {{.Replicas}}",
    ]);
    out.lines().find_map(|l| {
        let (n, r) = l.split_once(' ')?;
        if n != name {
            return None;
        }
        let r = r.split_whitespace().next()?;
        let (a, b) = r.split_once('/')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
}

/// One test's world: a unique stack name, a manifest directory, a state file, and cleanup
/// of every service it created (by ownership label and by name) when dropped.
pub struct World {
    pub stack: String,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    extra_services: Vec<String>,
    /// Networks and volumes made outside steward (or by Swarm for a mount), for cleanup.
    pub extra_networks: Vec<String>,
    pub extra_volumes: Vec<String>,
    children: Vec<Child>,
    /// Environment for every steward process of this world (secrets for the API, webhooks).
    pub env: Vec<(String, String)>,
}

impl World {
    pub fn new(test: &str) -> World {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 100_000;
        let stack = format!("e2e-{test}-{}-{nonce}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state/steward.db");
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        World {
            stack,
            dir,
            state,
            extra_services: vec![],
            extra_networks: vec![],
            extra_volumes: vec![],
            children: vec![],
            env: vec![],
        }
    }

    /// Unique service name within this world.
    pub fn svc(&self, short: &str) -> String {
        format!("{}-{short}", self.stack)
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("m")
    }

    /// Writes `m/<file>` (with the Stack document prepended when `stack_doc`).
    pub fn write(&self, file: &str, body: &str) -> PathBuf {
        let p = self.manifests().join(file);
        std::fs::write(&p, body).unwrap();
        p
    }

    pub fn stack_doc(&self, prune: bool) -> String {
        format!(
            "apiVersion: steward.io/v1alpha1\nkind: Stack\nmetadata:\n  name: {}\nspec:\n  prune: {prune}\n",
            self.stack
        )
    }

    pub fn service_doc(&self, short: &str, image: &str, replicas: u32, extra: &str) -> String {
        format!(
            "---\napiVersion: steward.io/v1alpha1\nkind: Service\nmetadata:\n  name: {}\nspec:\n  image: {image}\n  replicas: {replicas}\n  update:\n    parallelism: 0\n    monitor: 1s\n{extra}",
            self.svc(short)
        )
    }

    /// Remember a service created outside steward, for cleanup.
    pub fn track(&mut self, name: &str) {
        self.extra_services.push(name.to_string());
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(steward_bin());
        c.arg("--state").arg(&self.state);
        c.env("STEWARD_LOG", "info");
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    pub fn steward(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run steward")
    }

    pub fn apply(&self) -> Output {
        self.steward(&["apply", self.manifests().to_str().unwrap(), "--timeout", "90s"])
    }

    /// Starts `steward run` on the manifests; killed when the world drops.
    pub fn spawn_run(&mut self, extra: &[&str]) -> usize {
        let m = self.manifests();
        let mut args = vec![m.to_str().unwrap(), "--resync", "60s"];
        args.extend_from_slice(extra);
        self.spawn_run_args(&args)
    }

    /// Starts `steward run ARGS...`; killed when the world drops.
    pub fn spawn_run_args(&mut self, args: &[&str]) -> usize {
        let mut args: Vec<&str> = args.to_vec();
        // Tests run side by side: an ephemeral port unless the test picks one.
        if !args.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let child = self
            .cmd()
            .arg("run")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join(format!("run-{}.log", self.children.len()))).unwrap(),
            ))
            .spawn()
            .expect("spawn steward run");
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }

    pub fn run_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("run-{i}.log"))).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self, i: usize) -> std::process::ExitStatus {
        let pid = self.children[i].id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let child = &mut self.children[i];
        wait_for("steward run to exit after SIGTERM", Duration::from_secs(10), || {
            child.try_wait().unwrap()
        })
    }

    pub fn status_json(&self) -> serde_json::Value {
        let o = self.steward(&["status", "-o", "json"]);
        assert!(
            o.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("status JSON")
    }

    /// The condition `type` of `Kind/name` from `steward status -o json`.
    pub fn condition(&self, kind: &str, name: &str, type_: &str) -> Option<(String, String)> {
        let s = self.status_json();
        let item = s["items"]
            .as_array()?
            .iter()
            .find(|i| i["kind"] == kind && i["name"] == name)?
            .clone();
        let c = item["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?
            .clone();
        Some((c["status"].as_str()?.to_string(), c["reason"].as_str()?.to_string()))
    }

    pub fn events_json(&self) -> Vec<serde_json::Value> {
        let o = self.steward(&["events", "-o", "json"]);
        assert!(
            o.status.success(),
            "events failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("event JSON line"))
            .collect()
    }

    /// Owned services of this stack still present in Swarm.
    pub fn owned_services(&self) -> Vec<String> {
        let out = docker_ok(&[
            "service",
            "ls",
            "--filter",
            &format!("label=steward.io/stack={}", self.stack),
            "--format",
            "{{.Name}}",
        ]);
        let mut v: Vec<String> = out.lines().map(String::from).filter(|s| !s.is_empty()).collect();
        v.sort();
        v
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failed test shows what its controllers logged last (the log is in the temporary
        // directory, gone once the test ends).
        if std::thread::panicking() {
            for i in 0..self.children.len() {
                let log = self.run_log(i);
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("--- steward run #{i} of {}, last {} lines:", self.stack, tail.len());
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let mut names = self.owned_services();
        names.append(&mut self.extra_services);
        // Jobs (pre-deploy and scheduled runs) carry the stack in a label of their own.
        let jobs = docker_ok(&[
            "service",
            "ls",
            "--filter",
            &format!("label=steward.io/job-stack={}", self.stack),
            "--format",
            "{{.Name}}",
        ]);
        names.extend(jobs.lines().filter(|l| !l.is_empty()).map(String::from));
        if !names.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(names.iter().map(String::as_str));
            let _ = docker(&args);
        }
        // Secrets and configs steward made for this stack's services and jobs, then networks
        // (which Docker frees once the removed services' containers are gone: bounded retries).
        for kind in ["secret", "config"] {
            for label in ["steward.io/stack", "steward.io/job-stack"] {
                let ids = docker_ok(&[kind, "ls", "-q", "--filter", &format!("label={label}={}", self.stack)]);
                let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
                if !ids.is_empty() {
                    let mut args = vec![kind, "rm"];
                    args.extend(ids);
                    let _ = docker(&args);
                }
            }
        }
        let mut nets = docker_ok(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=steward.io/stack={}", self.stack),
        ])
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect::<Vec<_>>();
        nets.append(&mut self.extra_networks);
        for _ in 0..20 {
            nets.retain(|n| {
                !docker(&["network", "rm", n]).status.success() && docker(&["network", "inspect", n]).status.success()
            });
            if nets.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        for v in &self.extra_volumes {
            for _ in 0..20 {
                if docker(&["volume", "rm", v]).status.success() || !docker(&["volume", "inspect", v]).status.success()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Asserts that a steward command succeeded, printing its output when not.
pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "steward failed ({:?}):\n{}\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET http://127.0.0.1:{port}{path}` → (status, body); `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The version the demo app on `port` reports from its health endpoint.
pub fn served_version(port: u16) -> Option<String> {
    let (_, body) = http_get(port, "/api/v1/health/")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["version"].as_str().map(String::from)
}

/// A database of our own on the project's PostgreSQL (scripts/ensure-postgres.sh), dropped after.
pub struct PgDb {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDb {
    pub fn create(test: &str) -> Option<PgDb> {
        let port = std::env::var("STEWARD_PG_PORT").unwrap_or_else(|_| "15432".into());
        let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let ok = Command::new("psql")
            .args([&admin, "-qAtc", "select 1"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
                "{test}: PostgreSQL is not running: run scripts/ensure-postgres.sh"
            );
            eprintln!("SKIPPED {test}: no PostgreSQL on 127.0.0.1:{port}");
            return None;
        }
        let name = format!(
            "steward_e2e_{}_{}",
            std::process::id(),
            std::time::Instant::now().elapsed().subsec_nanos() % 100_000
        );
        let out = Command::new("psql")
            .args([&admin, "-qAtc", &format!("CREATE DATABASE {name}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let url = format!("postgres://postgres@127.0.0.1:{port}/{name}");
        Some(PgDb { admin, name, url })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &self.admin,
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A hold on the project's shared PostgreSQL replica (127.0.0.1:15434), across every test binary:
/// tests that pause, cut or stop it hold it exclusively, tests that need it streaming share it.
/// A file lock, because the test binaries of `cargo test --workspace` run side by side; the
/// kernel drops it when the holder ends, however it ends.
pub struct ReplicaHold(#[allow(dead_code)] std::fs::File);

fn replica_lock_file() -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("steward-tests-pg-replica.lock"))
        .expect("the replica lock file")
}

/// Shares the replica with other readers (waits while a test holds it exclusively).
pub fn replica_shared() -> ReplicaHold {
    let f = replica_lock_file();
    f.lock_shared().expect("shared lock on the replica");
    ReplicaHold(f)
}

/// Holds the replica alone (waits for every other holder to let go).
pub fn replica_exclusive() -> ReplicaHold {
    let f = replica_lock_file();
    f.lock().expect("exclusive lock on the replica");
    ReplicaHold(f)
}
