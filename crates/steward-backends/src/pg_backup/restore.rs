//! Restore tests: a throwaway server or a scratch database of a target, `pg_restore`, checks.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls, SimpleQueryMessage};
use steward_database::backup::{CheckResult, RestoreResult};
use steward_database::spec::{Check, Expect};
use time::OffsetDateTime;

use super::files::sha256_path;
use super::process::{chain, libpq_env, one_line, parse_url, pg_program, random_hex, server_of, with_dbname, Proc};
use super::{
    CHECK_TIMEOUT, CONNECT_TIMEOUT, INITDB_TIMEOUT, MAX_RESTORE_JOBS, READY_TIMEOUT, SCRATCH_PREFIX, STOP_TIMEOUT,
    THROWAWAY_LABEL, THROWAWAY_PORT, THROWAWAY_PREFIX, THROWAWAY_USER,
};

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
        cmd.args("-c listen_addresses= -c max_connections=30".split(' '));
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
    restore_test_jobs(file, expected_sha256, target, checks, 1)
}

/// [`restore_test`] with `pg_restore --jobs=<jobs>` when `file` is a directory-format backup
/// (its digest, [`super::sha256_dir`], verified first: a changed or truncated file inside fails
/// the test before any server starts). A custom-format file is restored by one worker whatever
/// `jobs` says.
pub fn restore_test_jobs(
    file: &Path,
    expected_sha256: &str,
    target: &RestoreTarget,
    checks: &[Check],
    jobs: u32,
) -> RestoreResult {
    let at = OffsetDateTime::now_utc();
    let label = match target {
        RestoreTarget::Throwaway => THROWAWAY_LABEL.to_string(),
        RestoreTarget::Server { url, .. } => url.parse::<Config>().map_or("?".to_string(), |c| server_of(&c)),
    };
    let sha = match sha256_path(file) {
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
    let jobs = if file.is_dir() {
        jobs.clamp(1, MAX_RESTORE_JOBS)
    } else {
        1
    };
    restore_into(&mut place, file, checks, jobs, &mut result);
    if let Err(e) = place.drop_scratch() {
        result.message = format!("{}; and its scratch database could not be dropped: {e}", result.message);
    }
    result
}

/// The restore and its checks, into `r` (a failure until they passed).
fn restore_into(place: &mut Place, file: &Path, checks: &[Check], jobs: u32, r: &mut RestoreResult) {
    let name = format!("{SCRATCH_PREFIX}{}", random_hex());
    let create = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&name));
    if let Err(e) = place.client(None).and_then(|mut c| c.batch_execute(&create)) {
        r.message = format!("cannot create the scratch database: {}", chain(&e));
        return;
    }
    place.scratch = Some(name.clone());
    let mut cmd = Command::new(pg_program("pg_restore"));
    cmd.args("--no-owner --no-acl --exit-on-error --no-password --dbname".split(' '));
    cmd.arg(with_dbname(&place.conninfo, &name));
    if jobs > 1 {
        cmd.arg(format!("--jobs={jobs}"));
    }
    cmd.arg(file);
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
