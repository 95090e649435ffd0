//! Backups of a Database (`pg_dump -Fc`), their restore tests and the archive copy. Blocking:
//! the controller runs these on `spawn_blocking`.
//!
//! A file only ever appears under its final name complete and flushed: it is written as
//! `.<name>.partial-<pid>`, fsynced, linked to its name (never replacing one) and the directory
//! fsynced. A process killed mid-way leaves only the `.partial` file, which is never a backup;
//! [`remove_stale_partials`] removes those whose writer is certainly gone. pg_dump writes into a
//! pipe of ours (hashed on the way): if steward dies, pg_dump dies of the broken pipe.
//!
//! Passwords reach child processes only through their environment (`PGPASSWORD`), never their
//! arguments, and never appear in errors (a URL carrying one is refused; stderr is masked).
//!
//! `-Fc`, not `--format=directory -j N`: one file (one checksum, one atomic rename, one archive
//! copy). `-Fd -j 2` is faster when the database has several large tables and both cores are
//! free (965 MiB in 4 tables on 2 cores: 9.9 s against 17.4 s, docs/BENCHMARKS.md) and no
//! faster when one table dominates (pg_dump does not split a table across jobs); the directory
//! format is the next step for large multi-table databases.

use std::collections::HashSet;
use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls, SimpleQueryMessage};
use sha2::{Digest, Sha256};
use steward_database::backup::{CheckResult, RestoreResult};
use steward_database::spec::{Check, Expect};
use time::OffsetDateTime;

const BUF: usize = 64 * 1024;
/// How much of a child's stderr is kept for its error message.
const STDERR_KEEP: usize = 8 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// initdb of an empty cluster takes 1-3 s; generous for a loaded machine.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Each check query of a restore test.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// Name prefix of the throwaway servers' directories (under the system temp directory).
pub const THROWAWAY_PREFIX: &str = "steward-restore-";
/// Name prefix of the scratch databases restore tests create.
pub const SCRATCH_PREFIX: &str = "steward_restore_";
const THROWAWAY_LABEL: &str = "throwaway local server";
const THROWAWAY_USER: &str = "steward";
const THROWAWAY_PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The name, and what is wrong with it.
    #[error("invalid backup file name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("{0} already exists (a backup is never overwritten)")]
    Exists(PathBuf),
    #[error("{0} is being written by this process already")]
    Busy(PathBuf),
    #[error("the database URL carries a password: pass it separately, never in the URL")]
    PasswordInUrl,
    #[error("invalid database URL")]
    Url(#[source] postgres::Error),
    /// What could not be done, to which file.
    #[error("{0} {1}")]
    Io(&'static str, PathBuf, #[source] io::Error),
    #[error("cannot run {0}")]
    Spawn(PathBuf, #[source] io::Error),
    /// The program, how it ended, the tail of its stderr.
    #[error("{0} failed ({1}): {2}")]
    Failed(&'static str, String, String),
    /// The file, the checksum expected, the checksum read.
    #[error("checksum mismatch on {0}: expected {1}, read {2}")]
    ChecksumMismatch(PathBuf, String, String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |e| BackupError::Io(what, path, e)
}

/// A completed backup file.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupFile {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub duration_seconds: f64,
}

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

/// A child process whose stderr is read on a thread of its own (a full pipe never blocks it),
/// keeping the tail; killed and reaped on drop unless it was waited for.
struct Proc {
    program: &'static str,
    child: Option<Child>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Proc {
    fn spawn(cmd: &mut Command, program: &'static str) -> Result<Proc, BackupError> {
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
    fn finish(&mut self, timeout: Option<Duration>, password: Option<&str>) -> Result<(), BackupError> {
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
fn libpq_env(cmd: &mut Command, password: Option<&str>) {
    cmd.env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string());
    cmd.env_remove("PGPASSFILE");
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.env_remove("PGPASSWORD"),
    };
}

fn parse_url(url: &str) -> Result<Config, BackupError> {
    let cfg: Config = url.parse().map_err(BackupError::Url)?;
    if cfg.get_password().is_some() {
        return Err(BackupError::PasswordInUrl);
    }
    Ok(cfg)
}

/// `host:port` of a URL, for `RestoreResult::target`.
fn server_of(cfg: &Config) -> String {
    let host = cfg.get_hosts().first().map_or("localhost".to_string(), |h| match h {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    });
    format!("{host}:{}", cfg.get_ports().first().copied().unwrap_or(5432))
}

/// The same connection string naming database `db` instead (URL or `key=value` form).
fn with_dbname(url: &str, db: &str) -> String {
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

fn random_hex() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let seed = (std::process::id(), n, std::time::SystemTime::now());
    format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one(seed))
}

/// An error and its sources on one line (a client error's `db error` alone says nothing).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let all: Vec<String> = std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect();
    one_line(&all.join(": "))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The temporary files this process is writing now (a restarted controller often gets the same
/// PID, e.g. 1 in a container: its predecessor's files are stale although the PID is alive).
static WRITING: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

fn writing() -> std::sync::MutexGuard<'static, HashSet<PathBuf>> {
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file being written under its temporary name: removed on drop unless it became final.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Partial {
    /// Claims `.<name>.partial-<pid>` in `dir` (a predecessor's leftover with our PID is removed).
    fn claim(dir: &Path, name: &str) -> Result<(Partial, File), BackupError> {
        let path = dir.join(format!(".{name}.partial-{}", std::process::id()));
        if !writing().insert(path.clone()) {
            return Err(BackupError::Busy(path));
        }
        let partial = Partial { path, done: false };
        match fs::remove_file(&partial.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("cannot remove", &partial.path)(e)),
            _ => {}
        }
        let file = File::create_new(&partial.path).map_err(io_err("cannot create", &partial.path))?;
        // A backup holds the whole database: its owner's only.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("cannot chmod", &partial.path))?;
        Ok((partial, file))
    }

    /// Gives it its final name without ever replacing one, and makes that durable.
    fn finish(mut self, dir: &Path, final_path: &Path) -> Result<(), BackupError> {
        let exists = || BackupError::Exists(final_path.to_path_buf());
        match fs::hard_link(&self.path, final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
            // A file system without hard links: check, then rename (racy only against another writer).
            Err(_) if final_path.symlink_metadata().is_err() => {
                fs::rename(&self.path, final_path).map_err(io_err("cannot rename to", final_path))?
            }
            Err(_) => return Err(exists()),
        }
        self.done = true;
        let _ = fs::remove_file(&self.path);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot fsync directory", dir))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
        writing().remove(&self.path);
    }
}

fn partial_pid(name: &str) -> Option<u32> {
    let (head, pid) = name.rsplit_once(".partial-")?;
    let ok = head.len() > 1 && head.starts_with('.') && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| pid.parse().ok()).flatten()
}

/// A temporary file of a backup or archive copy being written (or left by a killed writer):
/// `.<name>.partial-<pid>`. Never a backup.
pub fn is_partial(name: &str) -> bool {
    partial_pid(name).is_some()
}

/// Removes the `.partial` files of `dir` whose writer is certainly gone, and returns them: its
/// PID is not alive, or it is this process's PID and this process is not writing that file (a
/// restarted controller with its predecessor's PID). One whose PID is alive in another process is
/// kept, even if that PID was reused: deleting a backup being written is the one unsafe outcome
/// (without `/proc`, every other PID counts as alive). Age is not used: a pg_dump waiting for a
/// lock writes nothing for as long as it waits.
pub fn remove_stale_partials(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let me = std::process::id();
    let have_proc = Path::new("/proc/self").exists();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(partial_pid) else {
            continue;
        };
        let path = entry.path();
        let stale = if pid == me {
            !writing().contains(&path)
        } else {
            have_proc && !Path::new(&format!("/proc/{pid}")).exists()
        };
        if stale && entry.file_type()?.is_file() {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

fn check_name(name: &str) -> Result<(), BackupError> {
    let reason = match name {
        "" => "empty",
        _ if name.contains('/') || name.contains('\0') => "a file name, not a path",
        _ if name.starts_with('.') => "starts with a dot (temporary and hidden names)",
        _ => return Ok(()),
    };
    Err(BackupError::InvalidName(name.to_string(), reason))
}

/// Where `name` will go in `dir`, refused when something is there already.
fn free_name(dir: &Path, name: &str) -> Result<PathBuf, BackupError> {
    check_name(name)?;
    let path = dir.join(name);
    match path.symlink_metadata() {
        Ok(_) => Err(BackupError::Exists(path)),
        Err(_) => Ok(path),
    }
}

/// Streams `r` into `w` (if any), returning the hex SHA-256 and the byte count.
fn hash_copy(r: &mut impl Read, mut w: Option<&mut File>) -> io::Result<(String, u64)> {
    let (mut h, mut buf, mut total) = (Sha256::new(), vec![0u8; BUF], 0u64);
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        if let Some(w) = w.as_deref_mut() {
            w.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    hash_copy(&mut File::open(path)?, None).map(|(h, _)| h)
}

/// `pg_dump -Fc` of the database of `url` into `dir/file_name`, its SHA-256 computed as it is
/// written. The final name exists only once the file is complete and durable; on any failure
/// nothing is left. No time limit: a backup takes as long as the database needs.
pub fn take_backup(url: &str, password: Option<&str>, dir: &Path, file_name: &str) -> Result<BackupFile, BackupError> {
    let final_path = free_name(dir, file_name)?;
    parse_url(url)?;
    let started = Instant::now();
    let (partial, mut file) = Partial::claim(dir, file_name)?;
    let mut cmd = Command::new(pg_program("pg_dump"));
    cmd.args(["--format=custom", "--no-password", "--dbname"]).arg(url);
    cmd.stdout(Stdio::piped());
    libpq_env(&mut cmd, password);
    let mut dump = Proc::spawn(&mut cmd, "pg_dump")?;
    let mut out = dump.child.as_mut().and_then(|c| c.stdout.take()).expect("piped stdout");
    // On a write error, dropping `dump` kills pg_dump.
    let (sha256, size_bytes) = hash_copy(&mut out, Some(&mut file)).map_err(io_err("cannot write", &partial.path))?;
    drop(out);
    dump.finish(None, password)?;
    file.sync_all().map_err(io_err("cannot fsync", &partial.path))?;
    drop(file);
    partial.finish(dir, &final_path)?;
    Ok(BackupFile {
        path: final_path,
        size_bytes,
        sha256,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Copies `src` into `dir` under the same name (temporary name, fsync, rename), verifying the
/// source against `expected_sha256` as it is read and the copy as re-read from `dir` before it
/// gets its name: a copy that does not verify is removed.
pub fn archive_copy(src: &Path, expected_sha256: &str, dir: &Path) -> Result<PathBuf, BackupError> {
    let name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let final_path = free_name(dir, name)?;
    let mismatch = |path: &Path, actual| BackupError::ChecksumMismatch(path.into(), expected_sha256.into(), actual);
    let (partial, mut file) = Partial::claim(dir, name)?;
    let mut input = File::open(src).map_err(io_err("cannot open", src))?;
    let (read_sha, _) = hash_copy(&mut input, Some(&mut file)).map_err(io_err("cannot copy", src))?;
    if !read_sha.eq_ignore_ascii_case(expected_sha256) {
        return Err(mismatch(src, read_sha));
    }
    file.sync_all().map_err(io_err("cannot fsync", &partial.path))?;
    drop(file);
    let copy_sha = sha256_file(&partial.path).map_err(io_err("cannot re-read", &partial.path))?;
    if !copy_sha.eq_ignore_ascii_case(expected_sha256) {
        return Err(mismatch(&final_path, copy_sha));
    }
    partial.finish(dir, &final_path)?;
    Ok(final_path)
}

/// Where a restore test restores.
#[derive(Clone, PartialEq)]
pub enum RestoreTarget {
    /// A PostgreSQL server of our own, started for the test on a unix socket only, then removed.
    Throwaway,
    /// An existing server: a scratch database is created there and dropped afterwards.
    Server { url: String, password: Option<String> },
}

impl std::fmt::Debug for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Throwaway => f.write_str("Throwaway"),
            RestoreTarget::Server { url, password } => f
                .debug_struct("Server")
                .field("url", url)
                .field("password", &password.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

/// The OS user the server binaries run as: root may not run them (initdb refuses).
fn server_user() -> Result<Option<(u32, u32)>, String> {
    if fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "postgres")
        .and_then(|f| Some(Some((f[2].parse().ok()?, f[3].parse().ok()?))))
        .ok_or_else(|| "running as root, and there is no `postgres` OS user to run a throwaway server as".into())
}

/// A throwaway server: its directory (data, socket, log) and its postmaster, a child of ours;
/// stopped and removed on drop.
struct Throwaway {
    dir: PathBuf,
    user: Option<(u32, u32)>,
    /// The postmaster, a child of ours.
    pm: Option<Child>,
}

impl Throwaway {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(pg_program(program));
        cmd.env_clear().envs([("PATH", "/usr/bin:/bin"), ("LC_ALL", "C")]);
        cmd.current_dir(&self.dir).stdout(Stdio::null());
        if let Some((uid, gid)) = self.user {
            // std also drops root's supplementary groups when it changes the uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn start() -> Result<Throwaway, String> {
        let user = server_user()?;
        let dir = std::env::temp_dir().join(format!("{THROWAWAY_PREFIX}{}", random_hex()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut t = Throwaway { dir, user, pm: None };
        fs::set_permissions(&t.dir, fs::Permissions::from_mode(0o700))
            .and_then(|()| user.map_or(Ok(()), |(u, g)| std::os::unix::fs::chown(&t.dir, Some(u), Some(g))))
            .map_err(|e| format!("cannot prepare {}: {e}", t.dir.display()))?;
        let mut initdb = t.command("initdb");
        initdb.args("-D data --auth=trust --encoding=UTF8 --locale=C --no-sync -U".split(' '));
        initdb.arg(THROWAWAY_USER);
        let initdb = Proc::spawn(&mut initdb, "initdb").and_then(|mut p| p.finish(Some(INITDB_TIMEOUT), None));
        initdb.map_err(|e| chain(&e))?;
        let log_path = t.dir.join("server.log");
        let log = File::create(&log_path).map_err(|e| format!("cannot create the server log: {e}"))?;
        let (sock, port) = (t.dir.display().to_string(), THROWAWAY_PORT.to_string());
        let mut cmd = t.command("postgres");
        // No TCP at all: a unix socket in its own directory.
        cmd.args(["-D", "data", "-k", &sock, "-p", &port]);
        cmd.args("-c listen_addresses= -c max_connections=10".split(' '));
        cmd.stdin(Stdio::null()).stderr(log);
        t.pm = Some(cmd.spawn().map_err(|e| format!("cannot start postgres: {e}"))?);
        let deadline = Instant::now() + READY_TIMEOUT;
        let log_tail = || {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(3)..].join(" / ")
        };
        loop {
            if t.config("postgres").connect(NoTls).is_ok() {
                return Ok(t);
            }
            if let Some(Ok(Some(s))) = t.pm.as_mut().map(Child::try_wait) {
                t.pm = None;
                return Err(format!("the throwaway server exited ({s}): {}", log_tail()));
            }
            if Instant::now() >= deadline {
                return Err(format!("the throwaway server did not answer in time: {}", log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn config(&self, db: &str) -> Config {
        let mut cfg = Config::new();
        cfg.host_path(&self.dir).port(THROWAWAY_PORT);
        cfg.user(THROWAWAY_USER).dbname(db);
        cfg.connect_timeout(CONNECT_TIMEOUT).application_name("steward");
        cfg
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if let Some(mut pm) = self.pm.take() {
            let mut stop = self.command("pg_ctl");
            stop.args("stop -D data -m immediate -w -t 20".split(' '));
            if let Err(e) = Proc::spawn(&mut stop, "pg_ctl").and_then(|mut p| p.finish(Some(STOP_TIMEOUT), None)) {
                tracing::warn!(error = %chain(&e), "pg_ctl stop of the throwaway server failed; killing it");
            }
            // Reaped within a bound, else killed (its backends exit when they see it gone).
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(pm.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = pm.kill();
            let _ = pm.wait();
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the throwaway server's directory");
        }
    }
}

/// Where a restore test runs: how to reach the server (the client, and pg_restore's connection
/// string without its database), the scratch database once created, and the throwaway server if
/// any. On drop the scratch database is dropped, then the server stopped and removed.
struct Place {
    cfg: Config,
    conninfo: String,
    password: Option<String>,
    scratch: Option<String>,
    _server: Option<Throwaway>,
}

impl Place {
    fn new(target: &RestoreTarget) -> Result<Place, String> {
        let (cfg, conninfo, password, server) = match target {
            RestoreTarget::Throwaway => {
                let t = Throwaway::start()?;
                let conninfo = format!("host='{}' port={THROWAWAY_PORT} user={THROWAWAY_USER}", t.dir.display());
                (t.config("postgres"), conninfo, None, Some(t))
            }
            RestoreTarget::Server { url, password } => {
                let mut cfg = parse_url(url).map_err(|e| chain(&e))?;
                cfg.connect_timeout(CONNECT_TIMEOUT).application_name("steward");
                if let Some(p) = password {
                    cfg.password(p);
                }
                (cfg, url.clone(), password.clone(), None)
            }
        };
        Ok(Place {
            cfg,
            conninfo,
            password,
            scratch: None,
            _server: server,
        })
    }

    fn client(&self, db: Option<&str>) -> Result<Client, postgres::Error> {
        let mut cfg = self.cfg.clone();
        if let Some(db) = db {
            cfg.dbname(db);
        }
        cfg.connect(NoTls)
    }

    /// Drops the scratch database, if created (every client of it closed by then).
    fn drop_scratch(&mut self) -> Result<(), String> {
        let Some(name) = self.scratch.take() else { return Ok(()) };
        let mut c = self.client(None).map_err(|e| chain(&e))?;
        let v13 = "SELECT current_setting('server_version_num')::int >= 130000";
        let force = c.query_one(v13, &[]).is_ok_and(|r| r.get::<_, bool>(0));
        let sql = format!(
            "DROP DATABASE IF EXISTS {}{}",
            quote_ident(&name),
            if force { " WITH (FORCE)" } else { "" }
        );
        c.batch_execute(&sql).map_err(|e| format!("{name}: {}", chain(&e)))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Err(e) = self.drop_scratch() {
            tracing::warn!(error = %e, "cannot drop the restore test's scratch database");
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn failed(at: OffsetDateTime, target: &str, message: String) -> RestoreResult {
    let (restore_seconds, checks, target) = (0.0, Vec::new(), target.to_string());
    RestoreResult {
        at,
        passed: false,
        restore_seconds,
        checks,
        target,
        message,
    }
}

/// Restores `file` (its SHA-256 verified first) with `pg_restore --no-owner --no-acl
/// --exit-on-error` into a fresh scratch database of `target` and runs `checks` there; the
/// scratch database (and a throwaway server) are removed whatever happened. Never panics: a
/// failure is a result with `passed: false` and a one-line message.
pub fn restore_test(file: &Path, expected_sha256: &str, target: &RestoreTarget, checks: &[Check]) -> RestoreResult {
    let at = OffsetDateTime::now_utc();
    let label = match target {
        RestoreTarget::Throwaway => THROWAWAY_LABEL.to_string(),
        RestoreTarget::Server { url, .. } => url.parse::<Config>().map_or("?".to_string(), |c| server_of(&c)),
    };
    let sha = match sha256_file(file) {
        Ok(sha) => sha,
        Err(e) => return failed(at, &label, format!("cannot read {}: {e}", file.display())),
    };
    if !sha.eq_ignore_ascii_case(expected_sha256) {
        let msg = format!("checksum mismatch: recorded {expected_sha256}, file has {sha}");
        return failed(at, &label, msg);
    }
    let mut place = match Place::new(target) {
        Ok(p) => p,
        Err(e) => return failed(at, &label, e),
    };
    let mut result = failed(at, &label, String::new());
    restore_into(&mut place, file, checks, &mut result);
    if let Err(e) = place.drop_scratch() {
        result.message = format!("{}; and its scratch database could not be dropped: {e}", result.message);
    }
    result
}

/// The restore and its checks, into `r` (a failure until they passed).
fn restore_into(place: &mut Place, file: &Path, checks: &[Check], r: &mut RestoreResult) {
    let name = format!("{SCRATCH_PREFIX}{}", random_hex());
    let create = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&name));
    if let Err(e) = place.client(None).and_then(|mut c| c.batch_execute(&create)) {
        r.message = format!("cannot create the scratch database: {}", chain(&e));
        return;
    }
    place.scratch = Some(name.clone());
    let mut cmd = Command::new(pg_program("pg_restore"));
    cmd.args("--no-owner --no-acl --exit-on-error --no-password --dbname".split(' '));
    cmd.arg(with_dbname(&place.conninfo, &name)).arg(file);
    libpq_env(cmd.stdout(Stdio::null()), place.password.as_deref());
    let started = Instant::now();
    // No time limit: the restore takes as long as the database needs (that is what is measured).
    let restored = Proc::spawn(&mut cmd, "pg_restore").and_then(|mut p| p.finish(None, place.password.as_deref()));
    r.restore_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = restored {
        r.message = chain(&e);
        return;
    }
    let ms = CHECK_TIMEOUT.as_millis();
    let session = format!("SET statement_timeout = {ms}; SET default_transaction_read_only = on");
    let client = place
        .client(Some(&name))
        .and_then(|mut c| c.batch_execute(&session).map(|()| c));
    r.checks = match client {
        Ok(mut c) => checks.iter().map(|ch| run_check(&mut c, ch)).collect(),
        Err(e) => {
            let msg = format!("cannot connect to the scratch database: {}", chain(&e));
            let unreachable = |ch| check_result(ch, None, Err(msg.clone()));
            checks.iter().map(unreachable).collect()
        }
    };
    let bad: Vec<&CheckResult> = r.checks.iter().filter(|c| !c.passed).collect();
    let (n, of) = (bad.len(), r.checks.len());
    r.message = match bad.first().map(|c| (one_line(&c.query), &c.message)) {
        None => "passed".to_string(),
        Some((q, m)) if n == 1 => format!("check `{q}`: {m}"),
        Some((q, m)) => format!("{n} of {of} checks failed; first, `{q}`: {m}"),
    };
    r.passed = n == 0;
}

fn check_result(ch: &Check, value: Option<String>, outcome: Result<(), String>) -> CheckResult {
    CheckResult {
        query: ch.query.clone(),
        expect: ch.expect.clone(),
        value,
        passed: outcome.is_ok(),
        message: outcome.err().unwrap_or_default(),
    }
}

/// One check: its query must return one row of one value, a number that meets `expect`.
fn run_check(c: &mut Client, ch: &Check) -> CheckResult {
    let v = match check_value(c, &ch.query) {
        Ok(v) => v,
        Err(e) => return check_result(ch, None, Err(e)),
    };
    let outcome = match (Expect::parse(&ch.expect), v.trim().parse::<f64>()) {
        (None, _) => Err(format!("cannot read expect {:?}", ch.expect)),
        (_, Err(_)) => Err(format!("returned {v:?}, not a number")),
        (Some(e), Ok(n)) if e.holds(n) => Ok(()),
        (Some(_), Ok(_)) => Err(format!("returned {v}, expected {}", ch.expect.trim())),
    };
    check_result(ch, Some(v), outcome)
}

/// The single value of a query, as text.
fn check_value(c: &mut Client, query: &str) -> Result<String, String> {
    let msgs = c.simple_query(query).map_err(|e| chain(&e))?;
    let is_row = |m: &&SimpleQueryMessage| matches!(m, SimpleQueryMessage::Row(_));
    let n = msgs.iter().filter(is_row).count();
    let (1, Some(SimpleQueryMessage::Row(row))) = (n, msgs.iter().find(is_row)) else {
        return Err(format!("returned {n} rows, expected one"));
    };
    if row.len() != 1 {
        return Err(format!("returned {} columns, expected one", row.len()));
    }
    row.get(0).map(str::to_string).ok_or_else(|| "returned NULL".into())
}
