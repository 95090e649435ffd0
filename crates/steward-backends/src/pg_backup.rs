//! Backups of a Database (`pg_dump -Fc`), their restore tests and the archive copy. Blocking:
//! the controller runs these on `spawn_blocking`.
//!
//! A file only ever appears under its final name complete and flushed: it is written as
//! `.<name>.partial-<pid>`, fsynced, linked to its name (never overwriting one) and the directory
//! fsynced. A process killed mid-way leaves only the `.partial` file, which is never a backup;
//! [`remove_stale_partials`] removes those whose writer is certainly gone.
//!
//! Passwords reach child processes only through their environment (`PGPASSWORD`), never their
//! arguments, and never appear in errors: a URL carrying one is refused.
//!
//! `-Fc` rather than `--format=directory -j N`: a single file (one checksum, one rename, one
//! copy to the archive) and, measured on a 2-core machine with ~200 MB in four tables, no
//! worthwhile gain from `-j 2` (see the module's tests and the issue for the figures).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
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
    #[error("invalid backup file name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{path} already exists (a backup is never overwritten)")]
    Exists { path: PathBuf },
    #[error("{path} is being written by this process already")]
    Busy { path: PathBuf },
    #[error("the database URL carries a password: pass it separately, never in the URL")]
    PasswordInUrl,
    #[error("invalid database URL")]
    Url(#[source] postgres::Error),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: &'static str,
        status: String,
        stderr: String,
    },
    #[error("checksum mismatch on {path}: expected {expected}, read {actual}")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BackupError + 'a {
    move |source| BackupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A completed backup file.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupFile {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub duration_seconds: f64,
}

// ---------------------------------------------------------------------------------------------
// Programs, child processes

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
    if let Some((_, p)) = found.pop() {
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Kills and reaps its child unless it was waited for.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until waited")
    }
    fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child().wait()?;
        self.0 = None;
        Ok(status)
    }
    /// Waits at most `timeout` (unbounded without one), then kills: `None` when it had to be killed.
    fn wait_bounded(&mut self, timeout: Option<Duration>) -> io::Result<Option<ExitStatus>> {
        let Some(timeout) = timeout else {
            return self.wait().map(Some);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child().try_wait()? {
                self.0 = None;
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                let _ = self.child().kill();
                let _ = self.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads a child's stderr on a thread of its own (so that a full pipe never blocks it), keeping
/// the last `STDERR_KEEP` bytes.
fn stderr_reader(child: &mut Child) -> Option<JoinHandle<Vec<u8>>> {
    let mut err = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP);
            }
        }
        kept
    }))
}

/// The last lines of a child's stderr on one line, any password masked.
fn tail(reader: Option<JoinHandle<Vec<u8>>>, password: Option<&str>) -> String {
    let bytes = reader.and_then(|h| h.join().ok()).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut s = lines[lines.len().saturating_sub(5)..].join(" / ");
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        s = s.replace(p, "***");
    }
    if s.len() > 1000 {
        let mut cut = s.len() - 1000;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s = format!("…{}", &s[cut..]);
    }
    if s.is_empty() {
        "(no output)".to_string()
    } else {
        s
    }
}

fn describe(status: Option<ExitStatus>, timeout: Option<Duration>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => format!("no exit within {} s, killed", timeout.unwrap_or_default().as_secs()),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => s.to_string(),
        },
    }
}

/// Runs a command to completion within `timeout`: its stderr tail when it did not succeed.
fn run_bounded(
    cmd: &mut Command,
    program: &'static str,
    timeout: Option<Duration>,
    password: Option<&str>,
) -> Result<(), BackupError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let path = PathBuf::from(cmd.get_program());
    let mut child = ChildGuard(Some(
        cmd.spawn()
            .map_err(|source| BackupError::Spawn { program: path, source })?,
    ));
    let reader = stderr_reader(child.child());
    let status = child.wait_bounded(timeout).map_err(|source| BackupError::Spawn {
        program: PathBuf::from(program),
        source,
    })?;
    match status {
        Some(s) if s.success() => Ok(()),
        _ => Err(BackupError::Failed {
            program,
            status: describe(status, timeout),
            stderr: tail(reader, password),
        }),
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

/// `host:port` of a URL, for `RestoreResult::target` and messages.
fn server_of(cfg: &Config) -> String {
    let host = cfg.get_hosts().first().map_or("localhost".to_string(), |h| match h {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    });
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// The same connection string naming database `db` instead (URL or `key=value` form).
fn with_dbname(url: &str, db: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (before_q, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = before_q.split_once('/').map_or(before_q, |(a, _)| a);
        let params: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("dbname="))
            .collect();
        let q = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        format!("{scheme}://{authority}/{db}{q}")
    } else {
        // libpq: of a repeated keyword, the last one counts.
        format!("{url} dbname='{db}'")
    }
}

fn random_hex() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seed = (
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
    );
    format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one(seed))
}

// ---------------------------------------------------------------------------------------------
// Temporary names

/// The temporary files this process is writing now (a restarted controller often gets the same
/// PID, e.g. 1 in a container: its predecessor's files are stale although the PID is alive).
static WRITING: std::sync::LazyLock<Mutex<HashSet<PathBuf>>> = std::sync::LazyLock::new(|| Mutex::new(HashSet::new()));

/// A file being written under its temporary name: removed on drop unless it became final.
struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Partial {
    /// Claims `.<name>.partial-<pid>` in `dir`; a leftover of a predecessor with our PID is removed.
    fn claim(dir: &Path, name: &str) -> Result<(Partial, File), BackupError> {
        let path = dir.join(format!(".{name}.partial-{}", std::process::id()));
        if !WRITING.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone()) {
            return Err(BackupError::Busy { path });
        }
        let partial = Partial { path, keep: false };
        match fs::remove_file(&partial.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("cannot remove stale", &partial.path)(e))
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial.path)
            .map_err(io_err("cannot create", &partial.path))?;
        Ok((partial, file))
    }

    /// Gives it its final name without ever replacing one, and makes that durable.
    fn finish(mut self, dir: &Path, final_path: &Path) -> Result<(), BackupError> {
        match fs::hard_link(&self.path, final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists {
                    path: final_path.to_path_buf(),
                })
            }
            // A file system without hard links: check, then rename (racy only against another writer).
            Err(_) if !final_path.exists() => {
                fs::rename(&self.path, final_path).map_err(io_err("cannot rename to", final_path))?;
            }
            Err(_) => {
                return Err(BackupError::Exists {
                    path: final_path.to_path_buf(),
                })
            }
        }
        self.keep = true;
        let _ = fs::remove_file(&self.path);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot fsync directory", dir))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
        WRITING.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.path);
    }
}

fn partial_pid(name: &str) -> Option<u32> {
    let (head, pid) = name.rsplit_once(".partial-")?;
    (head.len() > 1 && head.starts_with('.') && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| pid.parse().ok())
        .flatten()
}

/// A temporary file of a backup or archive copy being written (or left by a killed writer):
/// `.<name>.partial-<pid>`. Never a backup.
pub fn is_partial(name: &str) -> bool {
    partial_pid(name).is_some()
}

/// Removes the `.partial` files of `dir` whose writer is certainly gone, and returns them: its
/// PID is not alive, or it is this process's PID and this process is not writing that file
/// (a restarted controller with its predecessor's PID). A partial whose PID is alive in another
/// process is kept, even if that PID was reused: deleting a backup being written is the one
/// unsafe outcome (without `/proc`, every other PID counts as alive). Age is not used: a pg_dump
/// waiting for a lock writes nothing for as long as it waits.
pub fn remove_stale_partials(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let me = std::process::id();
    let proc_ok = Path::new("/proc/self").exists();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(partial_pid) else {
            continue;
        };
        let path = entry.path();
        if !entry.file_type()?.is_file() {
            continue;
        }
        let stale = if pid == me {
            !WRITING.lock().unwrap_or_else(|e| e.into_inner()).contains(&path)
        } else {
            proc_ok && !Path::new(&format!("/proc/{pid}")).exists()
        };
        if stale {
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
    let reason = if name.is_empty() {
        "empty"
    } else if name.contains('/') || name.contains('\0') {
        "a file name, not a path"
    } else if name.starts_with('.') {
        "starts with a dot (temporary and hidden names)"
    } else {
        return Ok(());
    };
    Err(BackupError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

// ---------------------------------------------------------------------------------------------
// Checksums, backup, archive

/// Streams `r` into `w` (if any), returning the hex SHA-256 and the byte count.
fn hash_copy(r: &mut impl Read, mut w: Option<&mut File>) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n_total = 0u64;
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
        n_total += n as u64;
    }
    Ok((hex::encode(h.finalize()), n_total))
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    hash_copy(&mut File::open(path)?, None).map(|(h, _)| h)
}

/// `pg_dump -Fc` of the database of `url` into `dir/file_name`, its SHA-256 computed as it is
/// written. The final name exists only once the file is complete and durable; on any failure
/// nothing is left. No time limit: a backup takes as long as the database needs.
pub fn take_backup(url: &str, password: Option<&str>, dir: &Path, file_name: &str) -> Result<BackupFile, BackupError> {
    check_name(file_name)?;
    parse_url(url)?;
    let final_path = dir.join(file_name);
    if final_path.symlink_metadata().is_ok() {
        return Err(BackupError::Exists { path: final_path });
    }
    let started = Instant::now();
    let (partial, mut file) = Partial::claim(dir, file_name)?;
    let program = pg_program("pg_dump");
    let mut cmd = Command::new(&program);
    cmd.args(["--format=custom", "--no-password", "--dbname"])
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    libpq_env(&mut cmd, password);
    let mut child = ChildGuard(Some(
        cmd.spawn().map_err(|source| BackupError::Spawn { program, source })?,
    ));
    let reader = stderr_reader(child.child());
    let mut out = child.child().stdout.take().expect("piped stdout");
    let copied = hash_copy(&mut out, Some(&mut file));
    drop(out);
    let (sha256, size_bytes) = match copied {
        Ok(v) => v,
        Err(source) => {
            drop(child); // kills pg_dump
            return Err(BackupError::Io {
                what: "cannot write",
                path: partial.path.clone(),
                source,
            });
        }
    };
    let status = child.wait().map_err(|source| BackupError::Spawn {
        program: PathBuf::from("pg_dump"),
        source,
    })?;
    if !status.success() {
        return Err(BackupError::Failed {
            program: "pg_dump",
            status: describe(Some(status), None),
            stderr: tail(reader, password),
        });
    }
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
/// source against `expected_sha256` as it is read and the copy as re-read from `dir`.
pub fn archive_copy(src: &Path, expected_sha256: &str, dir: &Path) -> Result<PathBuf, BackupError> {
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BackupError::InvalidName {
            name: src.display().to_string(),
            reason: "no file name",
        })?;
    check_name(name)?;
    let final_path = dir.join(name);
    if final_path.symlink_metadata().is_ok() {
        return Err(BackupError::Exists { path: final_path });
    }
    let (partial, mut file) = Partial::claim(dir, name)?;
    let mut input = File::open(src).map_err(io_err("cannot open", src))?;
    let (read_sha, _) = hash_copy(&mut input, Some(&mut file)).map_err(io_err("cannot copy", src))?;
    if !read_sha.eq_ignore_ascii_case(expected_sha256) {
        return Err(BackupError::ChecksumMismatch {
            path: src.to_path_buf(),
            expected: expected_sha256.to_string(),
            actual: read_sha,
        });
    }
    file.sync_all().map_err(io_err("cannot fsync", &partial.path))?;
    drop(file);
    let copy_sha = sha256_file(&partial.path).map_err(io_err("cannot re-read", &partial.path))?;
    if !copy_sha.eq_ignore_ascii_case(expected_sha256) {
        return Err(BackupError::ChecksumMismatch {
            path: final_path,
            expected: expected_sha256.to_string(),
            actual: copy_sha,
        });
    }
    partial.finish(dir, &final_path)?;
    Ok(final_path)
}

// ---------------------------------------------------------------------------------------------
// Restore tests

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
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if uid != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == "postgres")
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| "running as root, and there is no `postgres` OS user to run a throwaway server as".to_string())
}

/// A throwaway server: its directory (data, socket, log) and process; stopped and removed on drop.
struct Throwaway {
    dir: PathBuf,
    user: Option<(u32, u32)>,
    postmaster: ChildGuard,
}

impl Throwaway {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(pg_program(program));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .current_dir(&self.dir);
        if let Some((uid, gid)) = self.user {
            // std drops root's supplementary groups when it changes the uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn start() -> Result<Throwaway, String> {
        let user = server_user()?;
        let dir = std::env::temp_dir().join(format!("{THROWAWAY_PREFIX}{}", random_hex()));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut t = Throwaway {
            dir,
            user,
            postmaster: ChildGuard(None),
        };
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&t.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod the throwaway directory: {e}"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&t.dir, Some(uid), Some(gid))
                .map_err(|e| format!("cannot chown the throwaway directory: {e}"))?;
        }
        run_bounded(
            t.command("initdb").args([
                "-D",
                "data",
                "-U",
                THROWAWAY_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]),
            "initdb",
            Some(INITDB_TIMEOUT),
            None,
        )
        .map_err(|e| e.to_string())?;
        let log_path = t.dir.join("server.log");
        let log = File::create(&log_path).map_err(|e| format!("cannot create the server log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot create the server log: {e}"))?;
        let sock = t.dir.display().to_string();
        let mut cmd = t.command("postgres");
        cmd.args(["-D", "data", "-k", &sock, "-p", &THROWAWAY_PORT.to_string()])
            .args([
                "-c",
                "listen_addresses=",
                "-c",
                "max_connections=10",
                "-c",
                "logging_collector=off",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        t.postmaster = ChildGuard(Some(cmd.spawn().map_err(|e| format!("cannot start postgres: {e}"))?));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if t.client("postgres").is_ok() {
                return Ok(t);
            }
            if let Ok(Some(s)) = t.postmaster.child().try_wait() {
                t.postmaster.0 = None;
                return Err(format!("the throwaway server exited ({s}): {}", log_tail(&log_path)));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the throwaway server did not accept connections within {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    log_tail(&log_path)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn config(&self, db: &str) -> Config {
        let mut cfg = Config::new();
        cfg.host_path(&self.dir)
            .port(THROWAWAY_PORT)
            .user(THROWAWAY_USER)
            .dbname(db)
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("steward");
        cfg
    }

    fn client(&self, db: &str) -> Result<Client, postgres::Error> {
        self.config(db).connect(NoTls)
    }

    fn conninfo(&self, db: &str) -> String {
        format!(
            "host='{}' port={THROWAWAY_PORT} user={THROWAWAY_USER} dbname='{db}'",
            self.dir.display()
        )
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if self.postmaster.0.is_some() {
            let stop = run_bounded(
                self.command("pg_ctl")
                    .args(["stop", "-D", "data", "-m", "immediate", "-w", "-t", "20"]),
                "pg_ctl",
                Some(STOP_TIMEOUT),
                None,
            );
            if let Err(e) = stop {
                tracing::warn!(error = %e, "pg_ctl stop of the throwaway server failed; killing it");
            }
            // Reaped within the bound, else killed.
            let _ = self.postmaster.wait_bounded(Some(Duration::from_secs(10)));
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the throwaway server's directory");
        }
    }
}

/// Where the scratch database lives and how to reach it.
enum Place {
    Throwaway(Throwaway),
    Server {
        cfg: Config,
        url: String,
        password: Option<String>,
    },
}

impl Place {
    fn client(&self, db: &str) -> Result<Client, postgres::Error> {
        match self {
            Place::Throwaway(t) => t.client(db),
            Place::Server { cfg, .. } => {
                let mut cfg = cfg.clone();
                cfg.dbname(db);
                cfg.connect(NoTls)
            }
        }
    }
    fn admin(&self) -> Result<Client, postgres::Error> {
        match self {
            Place::Throwaway(t) => t.client("postgres"),
            Place::Server { cfg, .. } => cfg.connect(NoTls),
        }
    }
    fn password(&self) -> Option<&str> {
        match self {
            Place::Throwaway(_) => None,
            Place::Server { password, .. } => password.as_deref(),
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Drops the scratch database on drop (after every client of it is closed).
struct Scratch<'a> {
    place: &'a Place,
    name: String,
    created: bool,
    dropped: Option<Result<(), String>>,
}

impl Scratch<'_> {
    fn drop_now(&mut self) -> Result<(), String> {
        if !self.created {
            return Ok(());
        }
        if let Some(r) = &self.dropped {
            return r.clone();
        }
        let r = (|| {
            let mut c = self.place.admin()?;
            let force = c
                .query_one("SELECT current_setting('server_version_num')::int >= 130000", &[])?
                .get::<_, bool>(0);
            let sql = format!(
                "DROP DATABASE IF EXISTS {}{}",
                quote_ident(&self.name),
                if force { " WITH (FORCE)" } else { "" }
            );
            c.batch_execute(&sql)
        })()
        .map_err(|e| chain(&e));
        self.dropped = Some(r.clone());
        r
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.drop_now() {
            tracing::warn!(database = %self.name, error = %e, "cannot drop the restore test's scratch database");
        }
    }
}

fn failed(at: OffsetDateTime, target: String, message: String) -> RestoreResult {
    RestoreResult {
        at,
        passed: false,
        restore_seconds: 0.0,
        checks: Vec::new(),
        target,
        message,
    }
}

/// Restores `file` into a fresh scratch database of `target` and runs `checks` there; the
/// scratch database (and a throwaway server) are removed whatever happened. Never panics: a
/// failure is a result with `passed: false` and a one-line message.
pub fn restore_test(file: &Path, expected_sha256: &str, target: &RestoreTarget, checks: &[Check]) -> RestoreResult {
    let at = OffsetDateTime::now_utc();
    let label = match target {
        RestoreTarget::Throwaway => THROWAWAY_LABEL.to_string(),
        RestoreTarget::Server { url, .. } => url.parse::<Config>().map_or("?".to_string(), |c| server_of(&c)),
    };
    match sha256_file(file) {
        Err(e) => return failed(at, label, format!("cannot read {}: {e}", file.display())),
        Ok(sha) if !sha.eq_ignore_ascii_case(expected_sha256) => {
            return failed(
                at,
                label,
                format!("checksum mismatch: recorded {expected_sha256}, file has {sha}"),
            )
        }
        Ok(_) => {}
    }
    let place = match target {
        RestoreTarget::Throwaway => match Throwaway::start() {
            Ok(t) => Place::Throwaway(t),
            Err(e) => return failed(at, label, e),
        },
        RestoreTarget::Server { url, password } => match parse_url(url) {
            Ok(mut cfg) => {
                cfg.connect_timeout(CONNECT_TIMEOUT).application_name("steward");
                if let Some(p) = password {
                    cfg.password(p);
                }
                Place::Server {
                    cfg,
                    url: url.clone(),
                    password: password.clone(),
                }
            }
            Err(e) => return failed(at, label, chain(&e)),
        },
    };
    let mut scratch = Scratch {
        place: &place,
        name: format!("{SCRATCH_PREFIX}{}", random_hex()),
        created: false,
        dropped: None,
    };
    let mut result = restore_into(&mut scratch, at, label, file, checks);
    if let Err(e) = scratch.drop_now() {
        result.message = format!(
            "{}; and the scratch database {} could not be dropped: {e}",
            result.message, scratch.name
        );
    }
    result
}

fn restore_into(
    scratch: &mut Scratch<'_>,
    at: OffsetDateTime,
    label: String,
    file: &Path,
    checks: &[Check],
) -> RestoreResult {
    let place = scratch.place;
    let created = place.admin().and_then(|mut c| {
        c.batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE template0",
            quote_ident(&scratch.name)
        ))
    });
    if let Err(e) = created {
        return failed(
            at,
            label,
            format!("cannot create the scratch database: {}", chain(&e)),
        );
    }
    scratch.created = true;
    let conn = match place {
        Place::Throwaway(t) => t.conninfo(&scratch.name),
        Place::Server { url, .. } => with_dbname(url, &scratch.name),
    };
    let mut cmd = Command::new(pg_program("pg_restore"));
    cmd.args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password", "--dbname"])
        .arg(&conn)
        .arg(file);
    libpq_env(&mut cmd, place.password());
    let started = Instant::now();
    // No time limit: the restore takes as long as the database needs (that is what is measured).
    let restored = run_bounded(&mut cmd, "pg_restore", None, place.password());
    let restore_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = restored {
        let mut r = failed(at, label, chain(&e));
        r.restore_seconds = restore_seconds;
        return r;
    }
    let results: Vec<CheckResult> = match place.client(&scratch.name).and_then(|mut c| {
        c.batch_execute(&format!(
            "SET statement_timeout = {}; SET default_transaction_read_only = on",
            CHECK_TIMEOUT.as_millis()
        ))?;
        Ok(c)
    }) {
        Ok(mut c) => checks.iter().map(|ch| run_check(&mut c, ch)).collect(),
        Err(e) => {
            let msg = format!("cannot connect to the scratch database: {}", chain(&e));
            checks
                .iter()
                .map(|ch| CheckResult {
                    query: ch.query.clone(),
                    expect: ch.expect.clone(),
                    value: None,
                    passed: false,
                    message: msg.clone(),
                })
                .collect()
        }
    };
    let bad: Vec<&CheckResult> = results.iter().filter(|c| !c.passed).collect();
    let message = match bad.as_slice() {
        [] => "passed".to_string(),
        [one] => format!("check `{}`: {}", one_line(&one.query), one.message),
        [first, ..] => format!(
            "{} of {} checks failed; first, `{}`: {}",
            bad.len(),
            results.len(),
            one_line(&first.query),
            first.message
        ),
    };
    RestoreResult {
        at,
        passed: bad.is_empty(),
        restore_seconds,
        checks: results,
        target: label,
        message,
    }
}

/// An error and its sources on one line (a client error's `db error` alone says nothing).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    one_line(&s)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run_check(c: &mut Client, ch: &Check) -> CheckResult {
    let (value, outcome) = match check_value(c, &ch.query) {
        Err(e) => (None, Err(e)),
        Ok(v) => {
            let outcome = match (Expect::parse(&ch.expect), v.trim().parse::<f64>()) {
                (None, _) => Err(format!("cannot read expect {:?}", ch.expect)),
                (_, Err(_)) => Err(format!("returned {v:?}, not a number")),
                (Some(e), Ok(n)) if e.holds(n) => Ok(()),
                (Some(_), Ok(_)) => Err(format!("returned {v}, expected {}", ch.expect.trim())),
            };
            (Some(v), outcome)
        }
    };
    CheckResult {
        query: ch.query.clone(),
        expect: ch.expect.clone(),
        value,
        passed: outcome.is_ok(),
        message: outcome.err().unwrap_or_default(),
    }
}

/// The single value of a query, as text.
fn check_value(c: &mut Client, query: &str) -> Result<String, String> {
    let msgs = c.simple_query(query).map_err(|e| chain(&e))?;
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    let [row] = rows.as_slice() else {
        return Err(format!("returned {} rows, expected one", rows.len()));
    };
    if row.len() != 1 {
        return Err(format!("returned {} columns, expected one", row.len()));
    }
    row.get(0)
        .map(str::to_string)
        .ok_or_else(|| "returned NULL".to_string())
}
