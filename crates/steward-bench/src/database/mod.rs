//! `steward-bench database`: what the Database kind costs and how fast it reacts, on a real
//! PostgreSQL primary and streaming replica (see docs/BENCHMARKS.md, "Database").
//!
//! 1. observe: `steward_backends::database::Observer::observe` on a database of 200+ tables, the
//!    cheap pass (every reconcile) and the stats pass (every `statsInterval`), on kept
//!    connections and connecting anew; statements and round trips per pass counted on the wire
//!    (a counting proxy); beside it, the guide's `psql -c` checks timed as processes;
//! 2. backup: `pg_backup::take_backup` and `restore_test` (throwaway server) on the prepared
//!    ~1 GB database, against `pg_dump -Fc` and `pg_restore` by hand (into a fresh database of a
//!    server initdb'd by hand), and `pg_dump --format=directory -j 2` against `-Fc`;
//! 3. gate: replay paused on the replica, a write on the primary, time until `gate_hold` holds on
//!    a fresh observation; replay resumed, time until it opens. Replay is always resumed at the
//!    end, also on failure (a guard).
//!
//! The data (a scratch database `steward_bench_…`, its tables) is prepared by
//! `scripts/bench-database.sh`, which also drops it at the end. This bench never touches another
//! database: it writes only into the one named by `--db`, and the restore tests create their own
//! scratch databases on servers of their own.

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[bench database] {}", format!($($arg)*)) };
}

mod backup;
mod gate;
mod observe;
mod proxy;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use steward_backends::pg_backup::pg_program;
use steward_database::spec::{DatabaseDocument, DatabaseEntry};
use steward_database::DatabaseState;
use steward_spec::{typed, DocCtx, Source};

use crate::cli::loadavg;
use crate::stats::fmt_secs;

/// Sections are skipped, not overrun, once this is spent (the script also bounds the run).
const BUDGET: Duration = Duration::from_secs(40 * 60);

pub struct Opts {
    /// `postgres://user@host:port` of the primary and the replica (any database path is replaced).
    pub primary: String,
    pub replica: String,
    /// The scratch database prepared by the script (`steward_bench_…`).
    pub db: String,
    pub passes: usize,
    pub psql_runs: usize,
    pub backup_runs: usize,
    pub gate_rounds: usize,
    pub sections: Vec<String>,
    pub work: PathBuf,
}

const USAGE: &str =
    "usage: steward-bench database --db steward_bench_NAME [--primary postgres://postgres@127.0.0.1:15433] \
[--replica postgres://postgres@127.0.0.1:15434] [--passes 200] [--psql-runs 50] [--backup-runs 3] [--gate-rounds 10] \
[--only observe|backup|gate]... [--work DIR]\n\n\
1. observe: Observer::observe (cheap pass and stats pass; kept connections and anew), statements and round trips \
counted on the wire, against the guide's psql -c checks;\n\
2. backup: pg_backup::take_backup and restore_test (throwaway server) against pg_dump -Fc / pg_restore by hand, \
and pg_dump --format=directory -j 2 against -Fc;\n\
3. gate: pg_wal_replay_pause() on the replica, a write on the primary: time until gate_hold holds; \
pg_wal_replay_resume(): time until it opens (replay is always resumed at the end).\n\n\
The database must exist with its tables (scripts/bench-database.sh prepares and drops it). \
Markdown goes to stdout, progress to stderr.";

fn parse_args(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        primary: "postgres://postgres@127.0.0.1:15433".into(),
        replica: "postgres://postgres@127.0.0.1:15434".into(),
        db: String::new(),
        passes: 200,
        psql_runs: 50,
        backup_runs: 3,
        gate_rounds: 10,
        sections: vec![],
        work: std::env::temp_dir().join(format!("steward-bench-db-{}", std::process::id())),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--primary" => o.primary = val("--primary")?,
            "--replica" => o.replica = val("--replica")?,
            "--db" => o.db = val("--db")?,
            "--passes" => o.passes = val("--passes")?.parse()?,
            "--psql-runs" => o.psql_runs = val("--psql-runs")?.parse()?,
            "--backup-runs" => o.backup_runs = val("--backup-runs")?.parse()?,
            "--gate-rounds" => o.gate_rounds = val("--gate-rounds")?.parse()?,
            "--only" => o.sections.push(val("--only")?),
            "--work" => o.work = PathBuf::from(val("--work")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let ok_name = o.db.starts_with("steward_bench_")
        && o.db
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok_name {
        bail!("--db must name the scratch database, steward_bench_[a-z0-9_]*\n{USAGE}");
    }
    if let Some(s) = o
        .sections
        .iter()
        .find(|s| !["observe", "backup", "gate"].contains(&s.as_str()))
    {
        bail!("unknown section {s:?}");
    }
    if o.passes == 0 || o.psql_runs == 0 || o.backup_runs == 0 || o.gate_rounds == 0 {
        bail!("the run counts must be at least 1");
    }
    Ok(o)
}

impl Opts {
    fn wants(&self, s: &str) -> bool {
        self.sections.is_empty() || self.sections.iter().any(|x| x == s)
    }
}

/// `scheme://authority` of `url` followed by `/db`.
pub fn with_db(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    format!("{scheme}://{authority}/{db}")
}

/// `(host, port)` of a `postgres://user@host:port` URL.
pub fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (h, p) = hostport.rsplit_once(':').context("the URL needs host:port")?;
    Ok((h.to_string(), p.parse().context("port")?))
}

/// `user` of a `postgres://user@host:port` URL (default postgres).
pub fn user_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .map_or("postgres".into(), |(u, _)| u.to_string())
}

/// A Database document naming the two servers (as a user writes it), read the controller's way.
pub fn database_state(name: &str, primary: &str, replica: &str) -> anyhow::Result<DatabaseState> {
    let doc = format!(
        "apiVersion: steward.io/v1alpha1\nkind: Database\nmetadata: {{name: {name}}}\nspec:\n  primary: {primary}\n  \
         replicas:\n    - {replica}\n  thresholds: {{replicationLag: 30s, connections: 150, longTransaction: 5m}}\n"
    );
    let ctx = DocCtx {
        file: std::path::Path::new("bench.yaml"),
        line_offset: 0,
    };
    let d: DatabaseDocument = typed(&ctx, &doc).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let entry = DatabaseEntry {
        metadata: d.metadata,
        spec: d.spec,
        source: Source {
            file: "bench.yaml".into(),
            line: 1,
            line_offset: 0,
        },
    };
    Ok(DatabaseState::from_entry(&entry, None))
}

/// A blocking client on `url` (the bench's own, for set-up and probes; never timed as steward's).
pub fn client(url: &str) -> anyhow::Result<postgres::Client> {
    let mut cfg: postgres::Config = url.parse()?;
    cfg.connect_timeout(Duration::from_secs(5))
        .application_name("steward-bench");
    cfg.connect(postgres::NoTls)
        .with_context(|| format!("cannot connect to {url}"))
}

/// Runs `psql -X -A -t -q -d URL -c SQL` as a user would, timed; fails on a non-zero exit.
pub fn psql_timed(url: &str, sql: &str) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let out = Command::new(pg_program("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .context("cannot run psql")?;
    let dt = t.elapsed();
    if !out.status.success() {
        bail!(
            "psql -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((dt, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A timed child process (pg_dump, pg_restore, initdb, …) with a time limit; its stderr tail in
/// the error.
pub fn run_timed(cmd: &mut Command, limit: Duration) -> anyhow::Result<Duration> {
    use std::io::Read as _;
    let what = format!("{:?}", cmd.get_program());
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {}", fmt_secs(limit));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let dt = t.elapsed();
    if !status.success() {
        let stderr = reader.join().unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{what} failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(dt)
}

fn machine(o: &Opts) -> String {
    let version = client(&with_db(&o.primary, &o.db))
        .and_then(|mut c| {
            Ok(c.query_one("SELECT current_setting('server_version')", &[])?
                .get::<_, String>(0))
        })
        .unwrap_or_else(|e| format!("? ({e:#})"));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cpus} cores, PostgreSQL {version} (primary {}, replica {}, both local), load average at start {}",
        DatabaseState::server_of(&o.primary),
        DatabaseState::server_of(&o.replica),
        loadavg()
    )
}

/// Waits (bounded) until both servers answer `SELECT 1`.
fn wait_reachable(o: &Opts, timeout: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let ok = [&o.primary, &o.replica].iter().all(|u| {
            client(&with_db(u, &o.db))
                .and_then(|mut c| Ok(c.batch_execute("SELECT 1")?))
                .is_ok()
        });
        if ok {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!("the servers did not both answer within {}", fmt_secs(timeout));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The primary and replica are shared with other users (the end-to-end tests stop, restart and
/// pause the replica): a section that fails is run again, up to 3 times in all, once both
/// servers answer again; the attempts are said in the output.
fn with_retries(o: &Opts, name: &str, section: fn(&Opts) -> anyhow::Result<String>) -> anyhow::Result<String> {
    let mut failed = Vec::new();
    loop {
        wait_reachable(o, Duration::from_secs(120))?;
        match section(o) {
            Ok(md) if failed.is_empty() => return Ok(md),
            Ok(md) => {
                let why: Vec<String> = failed.iter().map(|e| format!("`{e}`")).collect();
                return Ok(format!(
                    "{md}(Attempt {} of this section: the earlier one(s) failed: {}.)\n\n",
                    failed.len() + 1,
                    why.join("; ")
                ));
            }
            Err(e) if failed.len() < 2 => {
                say!("{name} failed, running it again once both servers answer: {e:#}");
                failed.push(format!("{e:#}"));
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn run(o: &Opts) -> (String, Vec<String>) {
    let started = Instant::now();
    let mut out = String::new();
    let mut errors = Vec::new();
    let _ = writeln!(out, "<!-- steward-bench database, db {} -->\n", o.db);
    let _ = writeln!(out, "Machine: {}.\n", machine(o));
    if let Err(e) = std::fs::create_dir_all(&o.work) {
        errors.push(format!("cannot create {}: {e}", o.work.display()));
        return (out, errors);
    }
    let left = || BUDGET.saturating_sub(started.elapsed());
    type Section = fn(&Opts) -> anyhow::Result<String>;
    for (name, section) in [("observe", observe::run as Section), ("gate", gate::run as Section)] {
        if !o.wants(name) {
            continue;
        }
        let t = Instant::now();
        match with_retries(o, name, section) {
            Ok(md) => out.push_str(&md),
            Err(e) => errors.push(format!("{name}: {e:#}")),
        }
        say!("{name} took {}", fmt_secs(t.elapsed()));
    }
    if o.wants("backup") {
        let t = Instant::now();
        match backup::run(o, left()) {
            Ok(md) => out.push_str(&md),
            Err(e) => errors.push(format!("backup: {e:#}")),
        }
        say!("backup took {}", fmt_secs(t.elapsed()));
    }
    let _ = std::fs::remove_dir_all(&o.work);
    let _ = writeln!(
        out,
        "Whole run: {}; 1-minute load average at the end: {}.",
        fmt_secs(started.elapsed()),
        loadavg()
    );
    (out, errors)
}

pub async fn main(args: Vec<String>) -> ExitCode {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("steward-bench database: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The blocking PostgreSQL client must not run on the async runtime's threads.
    let (out, errors) = match tokio::task::spawn_blocking(move || run(&opts)).await {
        Ok(r) => r,
        Err(e) => (String::new(), vec![format!("the bench panicked: {e}")]),
    };
    print!("{out}");
    for e in &errors {
        eprintln!("steward-bench database: {e}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
