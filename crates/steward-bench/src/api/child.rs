//! A `steward run` child with the options these sections need (`--listen` on an ephemeral
//! port, git flags, environment), its log, and its memory as the kernel reports it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct Steward {
    child: Child,
    log: PathBuf,
}

impl Steward {
    /// `steward --state STATE run ARGS... --listen 127.0.0.1:0`, with debug logs of the loop
    /// (so passes can be counted) written to `log`.
    pub fn start(bin: &Path, state: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Steward> {
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--state")
            .arg(state)
            .arg("run")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("STEWARD_LOG", "info,steward_controller=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("cannot start steward run")?;
        Ok(Steward {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("steward run exited ({status}); log: {}", self.log.display());
        }
        Ok(())
    }

    /// The address the API listens on, from the `API listening addr=…` log line.
    pub async fn api_addr(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let t = Instant::now();
        loop {
            self.alive()?;
            let log = self.log_text();
            if let Some(addr) = log
                .lines()
                .find(|l| l.contains("API listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|r| r.split_whitespace().next())
            {
                return Ok(addr.to_string());
            }
            if t.elapsed() > timeout {
                bail!("steward run did not report its API address within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Passes finished so far, and how many of them found everything converged.
    pub fn passes(&self) -> (usize, usize) {
        let log = self.log_text();
        let done: Vec<&str> = log.lines().filter(|l| l.contains("pass done")).collect();
        let converged = done.iter().filter(|l| l.contains("converged=true")).count();
        (done.len(), converged)
    }

    /// Waits until a pass that started after this call reports `converged=true`.
    pub async fn wait_converged_pass(&mut self, after: usize, timeout: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            self.alive()?;
            let log = self.log_text();
            let converged_after = log
                .lines()
                .filter(|l| l.contains("pass done"))
                .skip(after)
                .any(|l| l.contains("converged=true"));
            if converged_after {
                return Ok(());
            }
            if t.elapsed() > timeout {
                bail!("steward run reported no converged pass within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then up to `timeout` for a clean exit (killed after that).
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

impl Drop for Steward {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Memory figures of a process from `/proc/PID/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss: u64,
    pub hwm: u64,
    pub anon: u64,
    pub file: u64,
}

pub fn mem(pid: u32) -> anyhow::Result<Mem> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
