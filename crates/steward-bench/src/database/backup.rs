//! Section 2: steward's backup and restore test against `pg_dump` / `pg_restore` by hand, and
//! `pg_dump --format=directory -j 2` against `-Fc`.
//!
//! By hand means what an operator runs: `pg_dump -Fc -f FILE` (and `sha256sum FILE`), and for the
//! restore a server initdb'd by hand in a directory of the bench (Unix socket only, started with
//! `pg_ctl`), `createdb`, `pg_restore`, the same check with `psql`, `pg_ctl stop`. steward's
//! restore test does the same steps itself (its throwaway server), so the two are comparable.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use steward_backends::pg_backup::{pg_program, restore_test, take_backup, BackupFile, RestoreTarget};
use steward_database::backup::RestoreResult;
use steward_database::spec::Check;

use super::{client, psql_timed, run_timed, with_db, Opts};
use crate::stats::fmt_secs;

/// Any one dump or restore of the prepared database (about 1 GB).
const STEP_LIMIT: Duration = Duration::from_secs(15 * 60);

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

fn dir_size(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
    }
}

/// Runs `f` on a thread of its own, waiting at most `limit` (a child it started is left to die
/// with this process: pg_dump writes into our pipe).
fn bounded<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .map_err(|_| anyhow::anyhow!("{what} did not finish within {}", fmt_secs(limit)))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

/// Measurements by label, in first-seen order: every run's value, a size.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<f64>, String)>,
}

impl Table {
    fn push(&mut self, label: &str, secs: f64, size: String) {
        match self.rows.iter_mut().find(|r| r.0 == label) {
            Some(r) => {
                r.1.push(secs);
                r.2 = size;
            }
            None => self.rows.push((label.to_string(), vec![secs], size)),
        }
    }

    fn mean(&self, label: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.0 == label)
            .map_or(f64::NAN, |r| r.1.iter().sum::<f64>() / r.1.len() as f64)
    }

    fn write(&self, out: &mut String, with_size: bool) {
        for (label, xs, size) in &self.rows {
            let each: Vec<String> = xs.iter().map(|x| format!("{x:.2} s")).collect();
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            let size = if with_size { format!(" {size} |") } else { String::new() };
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {mean:.2} s |{size}",
                xs.len(),
                each.join(", ")
            );
        }
    }
}

/// A server started by hand (as an operator would: initdb, pg_ctl), stopped and removed on drop.
struct ManualServer {
    dir: PathBuf,
    started: bool,
}

impl ManualServer {
    /// A server program, as the `postgres` OS user when running as root (initdb refuses root).
    fn cmd(program: &str) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_program(program));
            c
        } else {
            Command::new(pg_program(program))
        }
    }

    fn new(dir: PathBuf) -> anyhow::Result<ManualServer> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            let st = Command::new("chown").arg("postgres:").arg(&dir).status()?;
            anyhow::ensure!(st.success(), "chown postgres {} failed", dir.display());
        }
        Ok(ManualServer { dir, started: false })
    }

    /// `(initdb, pg_ctl start)` times.
    fn start(&mut self) -> anyhow::Result<(Duration, Duration)> {
        let data = self.dir.join("data");
        let initdb = run_timed(
            Self::cmd("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"])
                .stdout(std::process::Stdio::null()),
            Duration::from_secs(120),
        )?;
        let opts = format!("-k {} -p 5432 -c listen_addresses=''", self.dir.display());
        self.started = true;
        let start = run_timed(
            Self::cmd("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .stdout(std::process::Stdio::null()),
            Duration::from_secs(90),
        )?;
        Ok((initdb, start))
    }

    /// libpq connection string of database `db` on it.
    fn conninfo(&self, db: &str) -> String {
        format!("host={} port=5432 user=postgres dbname={db}", self.dir.display())
    }

    fn stop(&mut self) -> anyhow::Result<Duration> {
        self.started = false;
        run_timed(
            Self::cmd("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-t", "60", "stop"])
                .stdout(std::process::Stdio::null()),
            Duration::from_secs(90),
        )
    }
}

impl Drop for ManualServer {
    fn drop(&mut self) {
        if self.started {
            let _ = run_timed(
                Self::cmd("pg_ctl")
                    .arg("-D")
                    .arg(self.dir.join("data"))
                    .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                    .stdout(std::process::Stdio::null()),
                Duration::from_secs(40),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A restore by hand into a new database `db` of `server`: `(createdb, pg_restore, check)` times.
fn restore_by_hand(
    server: &ManualServer,
    db: &str,
    input: &Path,
    jobs: usize,
    check_sql: &str,
) -> anyhow::Result<(Duration, Duration, Duration, String)> {
    let create = run_timed(
        Command::new(pg_program("createdb")).args([
            "-h",
            &server.dir.display().to_string(),
            "-p",
            "5432",
            "-U",
            "postgres",
            db,
        ]),
        Duration::from_secs(60),
    )?;
    let mut cmd = Command::new(pg_program("pg_restore"));
    cmd.args(["--no-owner", "--no-acl", "--exit-on-error", "-d", &server.conninfo(db)]);
    if jobs > 1 {
        cmd.arg(format!("--jobs={jobs}"));
    }
    cmd.arg(input);
    let restore = run_timed(&mut cmd, STEP_LIMIT)?;
    let (check, value) = psql_timed(&server.conninfo(db), check_sql)?;
    Ok((create, restore, check, value.trim().to_string()))
}

pub fn run(o: &Opts, left: Duration) -> anyhow::Result<String> {
    let started = Instant::now();
    let remaining = || left.saturating_sub(started.elapsed());
    let url = with_db(&o.primary, &o.db);
    let mut c = client(&url)?;
    let row = c.query_one(
        "SELECT pg_database_size(current_database()), \
         (SELECT count(*) FROM pg_stat_user_tables WHERE relname LIKE 'big\\_%'), \
         (SELECT coalesce(sum(n_live_tup), 0)::bigint FROM pg_stat_user_tables WHERE relname LIKE 'big\\_%'), \
         (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_stat_user_tables WHERE relname LIKE 'big\\_%')",
        &[],
    )?;
    let (size, big_tables, big_rows, big_bytes): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let expected: i64 = c.query_one("SELECT count(*) FROM big_1", &[])?.get(0);
    drop(c);
    anyhow::ensure!(
        big_tables > 0,
        "no big_* tables in {}: scripts/bench-database.sh makes them",
        o.db
    );
    say!("backup: {} database, {big_tables} big tables", mib(size as u64));
    let dir = o.work.join("backups");
    std::fs::create_dir_all(&dir)?;
    let check_sql = "SELECT count(*) FROM big_1";
    let checks = vec![Check {
        query: check_sql.into(),
        expect: format!("= {expected}"),
    }];

    // Dumps: by hand and steward's, alternated; then the directory format.
    let mut dumps = Table::default();
    let mut kept: Option<BackupFile> = None;
    let mut per_dump = Duration::from_secs(60);
    const MANUAL_FC: &str = "`pg_dump -Fc -f FILE` by hand";
    const STEWARD_FC: &str =
        "`pg_backup::take_backup` (pg_dump -Fc into a pipe, sha256 on the way, fsync, link, fsync dir)";
    const SHA: &str = "`sha256sum FILE` of that -Fc file by hand";
    for i in 0..o.backup_runs {
        if remaining() < per_dump * 8 {
            say!("backup: budget left {}, no more dump runs", fmt_secs(remaining()));
            break;
        }
        let f = dir.join(format!("manual-{i}.dump"));
        let mut cmd = Command::new(pg_program("pg_dump"));
        cmd.args(["--format=custom", "--no-password", "-d", &url, "-f"]).arg(&f);
        let dt = run_timed(&mut cmd, STEP_LIMIT)?;
        per_dump = dt;
        let fsize = dir_size(&f);
        let sha = run_timed(
            Command::new("sha256sum").arg(&f).stdout(std::process::Stdio::null()),
            STEP_LIMIT,
        )?;
        say!(
            "backup: pg_dump -Fc {} ({}), sha256sum {}",
            fmt_secs(dt),
            mib(fsize),
            fmt_secs(sha)
        );
        dumps.push(MANUAL_FC, secs(dt), mib(fsize));
        dumps.push(SHA, secs(sha), "–".into());
        let _ = std::fs::remove_file(&f);

        let name = format!("steward-{i}.dump");
        let (u, d, n) = (url.clone(), dir.clone(), name.clone());
        let t = Instant::now();
        let b = bounded(STEP_LIMIT, "take_backup", move || take_backup(&u, None, &d, &n))??;
        let dt = t.elapsed();
        say!("backup: take_backup {} ({})", fmt_secs(dt), mib(b.size_bytes));
        dumps.push(STEWARD_FC, secs(dt), mib(b.size_bytes));
        if let Some(old) = kept.replace(b) {
            let _ = std::fs::remove_file(&old.path);
        }
    }
    let kept = kept.ok_or_else(|| anyhow::anyhow!("no backup taken (budget)"))?;
    let mut fd_dir: Option<PathBuf> = None;
    for i in 0..o.backup_runs {
        for jobs in [2usize, 1] {
            if remaining() < per_dump * 6 {
                say!(
                    "backup: budget left {}, skipping pg_dump -Fd -j {jobs}",
                    fmt_secs(remaining())
                );
                continue;
            }
            let d = dir.join(format!("fd-j{jobs}-{i}"));
            let mut cmd = Command::new(pg_program("pg_dump"));
            cmd.args([
                "--format=directory",
                &format!("--jobs={jobs}"),
                "--no-password",
                "-d",
                &url,
                "-f",
            ])
            .arg(&d);
            let dt = run_timed(&mut cmd, STEP_LIMIT)?;
            let s = dir_size(&d);
            say!("backup: pg_dump -Fd -j {jobs} {} ({})", fmt_secs(dt), mib(s));
            dumps.push(
                &format!("`pg_dump --format=directory -j {jobs} -f DIR` by hand"),
                secs(dt),
                mib(s),
            );
            if jobs == 2 && fd_dir.is_none() {
                fd_dir = Some(d);
            } else {
                let _ = std::fs::remove_dir_all(&d);
            }
        }
    }

    // Restores: steward's restore test, then by hand into a server initdb'd by hand; alternated.
    let mut restores = Table::default();
    const ST_WHOLE: &str =
        "`pg_backup::restore_test`, throwaway server: the whole call (sha256 check, initdb, start, pg_restore, check, stop, rm)";
    const ST_RESTORE: &str = "… of which `pg_restore` (`restore_seconds`, the RTO steward records)";
    const BH_TOTAL: &str = "by hand: initdb → pg_ctl stop, all steps below";
    let mut per_restore = Duration::ZERO;
    for i in 0..o.backup_runs {
        if remaining() < per_restore * 3 {
            say!("backup: budget left {}, no more restore runs", fmt_secs(remaining()));
            break;
        }
        let (file, sha, ch) = (kept.path.clone(), kept.sha256.clone(), checks.clone());
        let t = Instant::now();
        let r: RestoreResult = bounded(STEP_LIMIT, "restore_test", move || {
            restore_test(&file, &sha, &RestoreTarget::Throwaway, &ch)
        })?;
        let whole = t.elapsed();
        anyhow::ensure!(r.passed, "steward's restore test failed: {}", r.message);
        say!(
            "backup: restore_test {} (pg_restore {:.1} s)",
            fmt_secs(whole),
            r.restore_seconds
        );
        restores.push(ST_WHOLE, secs(whole), String::new());
        restores.push(ST_RESTORE, r.restore_seconds, String::new());
        per_restore = whole;

        let t = Instant::now();
        let mut server = ManualServer::new(o.work.join("manual-server"))?;
        let (initdb, start) = server.start()?;
        let (create, restore, check, value) = restore_by_hand(&server, "restored", &kept.path, 1, check_sql)?;
        anyhow::ensure!(
            value == expected.to_string(),
            "restored big_1 has {value} rows, expected {expected}"
        );
        let stop = server.stop()?;
        let total = t.elapsed();
        drop(server);
        say!(
            "backup: by hand {} (pg_restore {}), run {}",
            fmt_secs(total),
            fmt_secs(restore),
            i + 1
        );
        restores.push(BH_TOTAL, secs(total), String::new());
        for (what, d) in [
            ("by hand: `initdb`", initdb),
            ("by hand: `pg_ctl start`", start),
            ("by hand: `createdb`", create),
            ("by hand: `pg_restore` (one job, from the same -Fc file)", restore),
            ("by hand: `psql -c` the check", check),
            ("by hand: `pg_ctl stop`", stop),
        ] {
            restores.push(what, secs(d), String::new());
        }
    }
    // Parallel restores, for the choice of format (a server by hand, a database each).
    let inputs: Vec<(String, PathBuf)> = std::iter::once(("-Fc file".to_string(), kept.path.clone()))
        .chain(fd_dir.iter().map(|d| ("-Fd -j 2 directory".to_string(), d.clone())))
        .collect();
    if remaining() > per_restore * (2 * inputs.len() as u32) {
        let mut server = ManualServer::new(o.work.join("manual-server"))?;
        server.start()?;
        for (i, (what, input)) in inputs.iter().enumerate() {
            let (_, dt, _, value) = restore_by_hand(&server, &format!("restored_j{i}"), input, 2, check_sql)?;
            anyhow::ensure!(value == expected.to_string(), "restored big_1 has {value} rows");
            say!("backup: pg_restore -j 2 from the {what}: {}", fmt_secs(dt));
            restores.push(
                &format!("by hand, `pg_restore -j 2` from the {what}"),
                secs(dt),
                String::new(),
            );
        }
        server.stop()?;
    } else {
        say!(
            "backup: budget left {}, skipping the parallel restores",
            fmt_secs(remaining())
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut out = String::new();
    let _ = writeln!(out, "### Backup and restore test\n");
    let _ = writeln!(
        out,
        "Database `{}`: `pg_database_size` **{}** ({size} bytes); its {big_tables} generated tables hold {big_rows} rows, \
         {} with their indexes. Files are written to {} (the servers' disk). Runs alternate steward and by hand.\n",
        o.db,
        mib(size as u64),
        mib(big_bytes as u64),
        o.work.display(),
    );
    let _ = writeln!(out, "| dump | runs | wall time per run | mean | size |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    dumps.write(&mut out, true);
    let (m, s, h) = (dumps.mean(MANUAL_FC), dumps.mean(STEWARD_FC), dumps.mean(SHA));
    let _ = writeln!(
        out,
        "\nBackup overhead (means): steward {s:.1} s against `pg_dump -Fc` by hand {m:.1} s = **{:.2}×**; \
         against `pg_dump -Fc` followed by `sha256sum` ({:.1} s) {:.2}×.",
        s / m,
        m + h,
        s / (m + h)
    );
    for jobs in [2, 1] {
        let fd = dumps.mean(&format!("`pg_dump --format=directory -j {jobs} -f DIR` by hand"));
        if fd.is_finite() {
            let _ = writeln!(out, "`-Fd -j {jobs}` against `-Fc` by hand: {:.2}× the time.", fd / m);
        }
    }
    let _ = writeln!(out, "\n| restore | runs | wall time per run | mean |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    restores.write(&mut out, false);
    let (sw, sr) = (restores.mean(ST_WHOLE), restores.mean(ST_RESTORE));
    let (bt, br) = (
        restores.mean(BH_TOTAL),
        restores.mean("by hand: `pg_restore` (one job, from the same -Fc file)"),
    );
    if bt.is_finite() {
        let _ = writeln!(
            out,
            "\nRestore-test overhead (means): steward's whole call {sw:.1} s against {bt:.1} s by hand (initdb → stop) = \
             **{:.2}×**; `pg_restore` alone {sr:.1} s against {br:.1} s = {:.2}×.",
            sw / bt,
            sr / br
        );
    }
    let _ = writeln!(out);
    Ok(out)
}
