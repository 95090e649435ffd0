//! Child processes (pg_dump, pg_restore, initdb, postgres) and the libpq environment they get.

use std::fs;
use std::hash::BuildHasher;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::Config;

use super::{BackupError, CONNECT_TIMEOUT, STDERR_KEEP};

/// `name` from the newest `/usr/lib/postgresql/<version>/bin`, else from `PATH`.
pub fn pg_program(name: &str) -> PathBuf {
    let mut found: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: Option<Vec<u32>> = e.file_name().to_str()?.split('.').map(|p| p.parse().ok()).collect();
            let p = e.path().join("bin").join(name);
            p.is_file().then_some((version?, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()))
            .unwrap_or_else(|| PathBuf::from(name))
    })
}

/// A command running `program` that is killed when the thread that started it ends, steward
/// killed included: util-linux's `setpriv --pdeathsig KILL` sets the kernel's parent-death
/// signal before it execs `program`. A pg_dump of the directory format writes its own files and
/// would otherwise run on to its end, holding connections to the primary; one waiting for a lock
/// would wait on. Without `setpriv` on `PATH`, `program` is run as it is.
pub(super) fn dies_with_caller(program: PathBuf) -> Command {
    static SETPRIV: std::sync::LazyLock<Option<PathBuf>> = std::sync::LazyLock::new(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("setpriv"))
            .find(|p| p.is_file())
    });
    match SETPRIV.as_ref() {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A child process whose stderr is read on a thread of its own (a full pipe never blocks it),
/// keeping the tail; killed and reaped on drop unless it was waited for.
pub(super) struct Proc {
    program: &'static str,
    pub(super) child: Option<Child>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Proc {
    pub(super) fn spawn(cmd: &mut Command, program: &'static str) -> Result<Proc, BackupError> {
        let program_path = PathBuf::from(cmd.get_program());
        let spawned = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn();
        let mut child = spawned.map_err(|e| BackupError::Spawn(program_path, e))?;
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let (mut kept, mut buf) = (Vec::new(), [0u8; 4096]);
            while let Ok(n @ 1..) = err.read(&mut buf) {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_KEEP {
                    kept.drain(..kept.len() - STDERR_KEEP);
                }
            }
            kept
        });
        let (child, stderr) = (Some(child), Some(stderr));
        Ok(Proc { program, child, stderr })
    }

    /// Waits (at most `timeout`, then kills it); an error with its stderr tail unless it succeeded.
    pub(super) fn finish(&mut self, timeout: Option<Duration>, password: Option<&str>) -> Result<(), BackupError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut c = self.child.take().expect("spawned");
        let status = loop {
            match c.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if deadline.is_none_or(|d| Instant::now() < d) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => break None,
            }
        };
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        match status {
            Some(s) if s.success() => Ok(()),
            _ => Err(BackupError::Failed(
                self.program,
                describe(status, timeout),
                self.tail(password),
            )),
        }
    }

    /// The last lines of its stderr on one line, any password masked.
    fn tail(&mut self, password: Option<&str>) -> String {
        let bytes = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let mut s = lines[lines.len().saturating_sub(5)..].join(" / ");
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            s = s.replace(p, "***");
        }
        let chars = s.chars().count();
        if chars > 1000 {
            s = format!("…{}", s.chars().skip(chars - 1000).collect::<String>());
        }
        Some(s)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "(no output)".into())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn describe(status: Option<ExitStatus>, timeout: Option<Duration>) -> String {
    match status.map(|s| (s, s.code(), s.signal())) {
        None => format!("no exit within {} s, killed", timeout.unwrap_or_default().as_secs()),
        Some((_, Some(c), _)) => format!("exit status {c}"),
        Some((_, None, Some(sig))) => format!("killed by signal {sig}"),
        Some((s, ..)) => s.to_string(),
    }
}

/// Environment of every libpq child: no prompt, bounded connection, the password if any.
pub(super) fn libpq_env(cmd: &mut Command, password: Option<&str>) {
    cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string());
    cmd.env_remove("PGPASSFILE");
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.env_remove("PGPASSWORD"),
    };
}

pub(super) fn parse_url(url: &str) -> Result<Config, BackupError> {
    let cfg: Config = url.parse().map_err(BackupError::Url)?;
    if cfg.get_password().is_some() {
        return Err(BackupError::PasswordInUrl);
    }
    Ok(cfg)
}

/// `host:port` of a URL, for `RestoreResult::target`.
pub(super) fn server_of(cfg: &Config) -> String {
    let host = cfg.get_hosts().first().map_or("localhost".to_string(), |h| match h {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    });
    format!("{host}:{}", cfg.get_ports().first().copied().unwrap_or(5432))
}

/// The same connection string naming database `db` instead (URL or `key=value` form).
pub(super) fn with_dbname(url: &str, db: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // libpq: of a repeated keyword, the last one counts.
        return format!("{url} dbname='{db}'");
    };
    let (before_q, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_q.split_once('/').map_or(before_q, |(a, _)| a);
    let params: String = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("dbname="))
        .map(|p| format!("&{p}"))
        .collect();
    let q = params.replacen('&', "?", 1);
    format!("{scheme}://{authority}/{db}{q}")
}

pub(super) fn random_hex() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let seed = (std::process::id(), n, std::time::SystemTime::now());
    format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one(seed))
}

/// An error and its sources on one line (a client error's `db error` alone says nothing).
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let all: Vec<String> = std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect();
    one_line(&all.join(": "))
}

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
