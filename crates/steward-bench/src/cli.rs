//! Child processes: the `docker` CLI (as a user would run it) and the `steward` binary.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Runs `docker ARGS`, returning stdout; fails with stderr on a non-zero exit.
/// Everything a bench run creates is named from `--prefix`, and cleanup removes by it: refuse a prefix that
/// could match something that is not the bench's.
pub fn check_prefix(p: &str) -> anyhow::Result<()> {
    if !p.starts_with("bench-")
        || !p
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        anyhow::bail!("--prefix must start with \"bench-\" and use only [a-z0-9-]");
    }
    Ok(())
}

pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`docker`], timed; also returns stderr (warnings).
pub fn docker_timed(args: &[&str]) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run the docker CLI")?;
    let dt = t.elapsed();
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((dt, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// `Version.Index` of each named service, through `docker service inspect`.
pub fn versions(names: &[String]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut args = vec!["service", "inspect", "--format", "{{.Spec.Name}} {{.Version.Index}}"];
    args.extend(names.iter().map(String::as_str));
    let out = docker(&args)?;
    let mut map = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (name, idx) = line
            .rsplit_once(' ')
            .context("unexpected docker service inspect output")?;
        map.insert(name.to_string(), idx.trim().parse().context("version index")?);
    }
    if map.len() != names.len() {
        bail!(
            "expected {} services, docker service inspect returned {}",
            names.len(),
            map.len()
        );
    }
    Ok(map)
}

/// Services whose version index differs between two snapshots.
pub fn changed(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> usize {
    before.iter().filter(|(k, v)| after.get(*k) != Some(*v)).count()
}

/// Names of the services whose name starts with `prefix`.
pub fn services_with_prefix(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = docker(&[
        "service",
        "ls",
        "--filter",
        &format!("name={prefix}"),
        "--format",
        "{{.Name}}",
    ])?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect())
}

/// Removes the named services (in batches, one CLI call each).
pub fn remove_services(names: &[String]) -> anyhow::Result<()> {
    for chunk in names.chunks(25) {
        let mut args = vec!["service", "rm"];
        args.extend(chunk.iter().map(String::as_str));
        docker(&args)?;
    }
    Ok(())
}

/// Waits until no container whose name contains `prefix` exists (task containers are named
/// `<service>.<slot>.<task id>`), so a removed stack stops loading the machine.
pub fn wait_containers_gone(prefix: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let out = docker(&["ps", "-aq", "--filter", &format!("name={prefix}")])?;
        if out.trim().is_empty() {
            return Ok(t.elapsed());
        }
        if t.elapsed() > timeout {
            bail!("containers of {prefix}* still present after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Count of lines of `docker stack ps -q STACK` (every task, history included).
pub fn stack_task_count(stack: &str) -> anyhow::Result<usize> {
    Ok(docker(&["stack", "ps", "-q", stack])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// The steward binary built next to this one (both are `cargo build --release` outputs).
pub fn steward_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the bench binary")?;
    let bin = exe.with_file_name("steward");
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p steward -p steward-bench`",
            bin.display()
        );
    }
    Ok(bin)
}

/// `steward --state STATE apply DIR --timeout T`, timed. Fails unless it exits 0 (converged).
pub fn steward_apply(bin: &Path, state: &Path, dir: &Path, timeout: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = Command::new(bin)
        .arg("--state")
        .arg(state)
        .arg("apply")
        .arg(dir)
        .args(["--timeout", timeout])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("cannot run steward")?;
    let dt = t.elapsed();
    if !out.status.success() {
        bail!(
            "steward apply failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dt)
}

/// `steward --state STATE events -o json`, one JSON value per event (unparsable lines skipped).
pub fn steward_events_json(bin: &Path, state: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = Command::new(bin)
        .arg("--state")
        .arg(state)
        .args(["events", "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run steward events")?;
    if !out.status.success() {
        bail!("steward events failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// `steward events -o json` summed by reason: total `count` of events with this reason.
pub fn steward_event_count(bin: &Path, state: &Path, reason: &str) -> anyhow::Result<u64> {
    Ok(steward_events_json(bin, state)?
        .iter()
        .filter(|v| v.get("reason").and_then(|r| r.as_str()) == Some(reason))
        .map(|v| v.get("count").and_then(|c| c.as_u64()).unwrap_or(1))
        .sum())
}

/// A `steward run` child. Stopped with SIGTERM by [`RunningSteward::stop`]; killed if dropped
/// while still running (a failed bench must not leave a controller behind).
pub struct RunningSteward {
    child: Child,
    log: PathBuf,
}

impl RunningSteward {
    pub fn start(bin: &Path, state: &Path, dir: &Path, log: &Path) -> anyhow::Result<Self> {
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--state")
            .arg(state)
            .arg("run")
            .arg(dir)
            // The loop logs "pass done" at debug: counting those lines counts passes.
            .env("STEWARD_LOG", "info,steward_controller=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("cannot start steward run")?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Passes the controller has finished so far (from its debug log).
    pub fn passes(&self) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |s| s.matches("pass done").count())
    }

    /// The controller's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until at least `n` passes have finished.
    pub fn wait_passes(&mut self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        while self.passes() < n {
            if let Some(status) = self.child.try_wait()? {
                bail!("steward run exited early ({status}); log: {}", self.log.display());
            }
            if t.elapsed() > timeout {
                bail!("steward run did not finish {n} passes within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit (SIGKILL after that).
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("steward run exited with {status} after SIGTERM");
                }
                return Ok(());
            }
            if t.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("steward run did not stop within {timeout:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningSteward {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident set size (VmRSS) of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it start with the state (3).
    let rest = &s[s.rfind(')').context("malformed stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Why the controller woke, from the `woken` debug lines of its log: (events for services in
/// `names`, events for other services, re-subscription wake-ups, manifest changes).
pub fn wake_reasons(log: &str, names: &[String]) -> (usize, usize, usize, usize) {
    let (mut own, mut other, mut resub, mut files) = (0, 0, 0, 0);
    for line in log.lines().filter(|l| l.contains(" woken")) {
        if let Some(rest) = line.split("Swarm(\"").nth(1) {
            let name = rest.split('"').next().unwrap_or("");
            if name.is_empty() {
                resub += 1;
            } else if names.iter().any(|n| n == name) {
                own += 1;
            } else {
                other += 1;
            }
        } else if line.contains("Files") {
            files += 1;
        }
    }
    (own, other, resub, files)
}

/// The 1-minute load average.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}
