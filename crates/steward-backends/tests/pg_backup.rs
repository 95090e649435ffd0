//! Backups, restore tests and archive copies against the real primary of
//! scripts/ensure-postgres-replica.sh: each test has a scratch database of its own; restore
//! tests also start throwaway servers of their own, which must leave no process and no directory.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::Duration;

use steward_backends::pg_backup::{
    archive_copy, is_partial, remove_stale_partials, restore_test, sha256_file, take_backup, BackupError, BackupFile,
    RestoreTarget, SCRATCH_PREFIX, THROWAWAY_PREFIX,
};
use steward_database::spec::Check;
use support::{admin, primary_available, primary_url, wait_for, ScratchDb};

/// Restore tests that look for leftovers (throwaway directories, servers, scratch databases)
/// run one at a time, so that one test's server is not another's leftover.
static RESTORES: Mutex<()> = Mutex::new(());

fn restores() -> MutexGuard<'static, ()> {
    RESTORES.lock().unwrap_or_else(|e| e.into_inner())
}

fn check(query: &str, expect: &str) -> Check {
    Check {
        query: query.into(),
        expect: expect.into(),
    }
}

/// A scratch database with table `t` of `rows` rows, and its backup in a temp dir.
fn backed_up(tag: &str, rows: u32) -> (ScratchDb, tempfile::TempDir, BackupFile) {
    let db = ScratchDb::create(tag);
    db.sql(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"
    ));
    let dir = tempfile::tempdir().unwrap();
    let b = take_backup(&db.url(), None, dir.path(), "db.dump").unwrap();
    (db, dir, b)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Throwaway directories under the temp dir, and processes whose working directory is in one
/// (a PostgreSQL server runs in its data directory, and so do its backends).
fn throwaway_leftovers() -> (Vec<PathBuf>, Vec<String>) {
    let dirs: Vec<PathBuf> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(THROWAWAY_PREFIX))
        .map(|e| e.path())
        .collect();
    let procs = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cwd = fs::read_link(e.path().join("cwd")).ok()?;
            cwd.to_string_lossy()
                .contains(THROWAWAY_PREFIX)
                .then(|| format!("pid {} in {}", e.file_name().to_string_lossy(), cwd.display()))
        })
        .collect();
    (dirs, procs)
}

fn scratch_databases() -> Vec<String> {
    admin()
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
            &[&SCRATCH_PREFIX],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_backup_appears_complete_under_its_name_with_the_checksum_sha256sum_computes() {
    if !primary_available("a_backup_appears_complete_under_its_name_with_the_checksum_sha256sum_computes") {
        return;
    }
    let (db, dir, b) = backed_up("bk", 1000);
    assert_eq!(b.path, dir.path().join("db.dump"));
    let len = fs::metadata(&b.path).unwrap().len();
    assert!(len > 0);
    assert_eq!(b.size_bytes, len);
    assert_eq!(b.sha256, sha256sum(&b.path));
    assert_eq!(b.sha256, sha256_file(&b.path).unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&b.path).unwrap().permissions().mode() & 0o777,
        0o600,
        "the owner's only"
    );
    assert!(b.duration_seconds > 0.0);
    assert_eq!(names(dir.path()), ["db.dump"], "no .partial left");

    // Never overwritten: the second backup to that name fails and the first is untouched.
    let again = take_backup(&db.url(), None, dir.path(), "db.dump");
    assert!(matches!(again, Err(BackupError::Exists { .. })), "{again:?}");
    assert_eq!(sha256_file(&b.path).unwrap(), b.sha256);
    assert_eq!(names(dir.path()), ["db.dump"]);

    for bad in ["", "../x.dump", "a/b", ".hidden", ".x.partial-12"] {
        let r = take_backup(&db.url(), None, dir.path(), bad);
        assert!(matches!(r, Err(BackupError::InvalidName { .. })), "{bad:?}: {r:?}");
    }
    // A password in the URL is refused, and not repeated in the error.
    let url = format!(
        "postgres://postgres:s3cr3t-pw@127.0.0.1:{}/{}",
        support::primary_port(),
        db.name
    );
    let e = take_backup(&url, None, dir.path(), "pw.dump").unwrap_err();
    assert!(matches!(e, BackupError::PasswordInUrl), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("s3cr3t-pw"));
    // A failing pg_dump (no such database): its stderr says why, nothing is left.
    let e = take_backup(&primary_url("stw_no_such_db"), None, dir.path(), "none.dump").unwrap_err();
    assert!(matches!(e, BackupError::Failed { .. }), "{e:?}");
    assert!(e.to_string().contains("stw_no_such_db"), "{e}");
    assert_eq!(names(dir.path()), ["db.dump"]);
}

#[test]
fn a_throwaway_restore_passes_its_checks_and_leaves_no_server_nor_directory() {
    if !primary_available("a_throwaway_restore_passes_its_checks_and_leaves_no_server_nor_directory") {
        return;
    }
    let (_db, _dir, b) = backed_up("rt", 1000);
    let _one = restores();
    let before = throwaway_leftovers();
    let r = restore_test(
        &b.path,
        &b.sha256,
        &RestoreTarget::Throwaway,
        &[
            check("SELECT count(*) FROM t", "> 0"),
            check("SELECT max(id) FROM t", "= 1000"),
            // Our own server: no TCP port at all, and its superuser is steward's.
            check(
                "SELECT count(*) FROM pg_settings WHERE name = 'listen_addresses' AND setting = ''",
                "= 1",
            ),
            check("SELECT (current_user = 'steward')::int", "= 1"),
        ],
    );
    assert!(r.passed, "{r:?}");
    assert_eq!(r.message, "passed");
    assert_eq!(r.target, "throwaway local server");
    assert!(r.restore_seconds > 0.0, "{r:?}");
    assert_eq!(r.checks.len(), 4);
    assert!(r.checks.iter().all(|c| c.passed && c.message.is_empty()), "{r:?}");
    assert_eq!(r.checks[0].value.as_deref(), Some("1000"));
    assert_eq!(
        throwaway_leftovers(),
        before,
        "the throwaway server and its directory are gone"
    );
}

#[test]
fn a_server_restore_runs_in_a_scratch_database_dropped_afterwards_and_failing_checks_fail_it() {
    if !primary_available("a_server_restore_runs_in_a_scratch_database_dropped_afterwards_and_failing_checks_fail_it") {
        return;
    }
    let (_db, _dir, b) = backed_up("rs", 1000);
    let _one = restores();
    let before = scratch_databases();
    let target = RestoreTarget::Server {
        url: primary_url("postgres"),
        password: None,
    };
    let r = restore_test(
        &b.path,
        &b.sha256,
        &target,
        &[
            check("SELECT count(*) FROM t", "> 0"),
            // It ran in a scratch database of that server, not in the one backed up.
            check(
                &format!("SELECT count(*) FROM pg_database WHERE datname = current_database() AND starts_with(datname, '{SCRATCH_PREFIX}')"),
                "= 1",
            ),
            check("SELECT count(*) FROM t", "= 12345"),
            check("SELECT id FROM t", "> 0"),
            check("SELECT nothing FROM t", "> 0"),
            check("SELECT v FROM t WHERE id = 1", "> 0"),
        ],
    );
    assert!(!r.passed, "{r:?}");
    assert_eq!(r.target, format!("127.0.0.1:{}", support::primary_port()));
    assert!(r.restore_seconds > 0.0);
    let passed: Vec<bool> = r.checks.iter().map(|c| c.passed).collect();
    assert_eq!(passed, [true, true, false, false, false, false], "{r:?}");
    assert_eq!(r.checks[2].value.as_deref(), Some("1000"));
    assert_eq!(r.checks[2].message, "returned 1000, expected = 12345");
    assert!(r.checks[3].message.contains("1000 rows"), "{r:?}");
    assert!(r.checks[4].message.contains("nothing"), "{r:?}");
    assert_eq!(r.checks[4].value, None);
    assert!(r.checks[5].message.contains("not a number"), "{r:?}");
    assert!(
        r.message
            .starts_with("4 of 6 checks failed; first, `SELECT count(*) FROM t`: returned 1000"),
        "{}",
        r.message
    );
    assert!(!r.message.contains('\n'));
    assert_eq!(scratch_databases(), before, "the scratch database is dropped");
}

#[test]
fn a_corrupted_or_truncated_backup_fails_its_restore_test() {
    if !primary_available("a_corrupted_or_truncated_backup_fails_its_restore_test") {
        return;
    }
    let (_db, dir, b) = backed_up("cr", 2000);
    let bytes = fs::read(&b.path).unwrap();
    let _one = restores();
    let before = throwaway_leftovers();
    let checks = [check("SELECT count(*) FROM t", "> 0")];

    // Bytes flipped, the recorded checksum kept: refused before any server starts.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    for x in &mut flipped[mid..mid + 16] {
        *x ^= 0xff;
    }
    let f = dir.path().join("flipped.dump");
    fs::write(&f, &flipped).unwrap();
    let r = restore_test(&f, &b.sha256, &RestoreTarget::Throwaway, &checks);
    assert!(!r.passed);
    assert!(r.message.starts_with("checksum mismatch"), "{r:?}");
    assert_eq!(r.restore_seconds, 0.0);

    // Truncated, its checksum recomputed: pg_restore fails, and the server is still removed.
    let f = dir.path().join("truncated.dump");
    fs::write(&f, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let r = restore_test(&f, &sha256_file(&f).unwrap(), &RestoreTarget::Throwaway, &checks);
    assert!(!r.passed, "{r:?}");
    eprintln!("truncated: {}", r.message);
    assert!(r.message.starts_with("pg_restore failed"), "{r:?}");
    assert!(!r.message.contains('\n'));
    assert!(r.checks.is_empty());
    assert_eq!(
        throwaway_leftovers(),
        before,
        "the throwaway server and its directory are gone"
    );

    // A file that is not there.
    let r = restore_test(
        &dir.path().join("missing.dump"),
        &b.sha256,
        &RestoreTarget::Throwaway,
        &checks,
    );
    assert!(!r.passed && r.message.starts_with("cannot read"), "{r:?}");
}

/// PIDs of this process's `pg_dump` children whose arguments mention `needle`.
fn pg_dump_children(needle: &str) -> Vec<u32> {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            (comm.ends_with("(pg_dump") && ppid == me && String::from_utf8_lossy(&cmdline).contains(needle))
                .then_some(pid)
        })
        .collect()
}

#[test]
fn a_pg_dump_killed_mid_backup_leaves_no_backup_nor_partial() {
    if !primary_available("a_pg_dump_killed_mid_backup_leaves_no_backup_nor_partial") {
        return;
    }
    let db = ScratchDb::create("kill");
    db.sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)");
    // pg_dump waits for its ACCESS SHARE lock on t as long as this transaction holds it.
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (send, recv) = mpsc::channel();
    let (url, path) = (db.url(), dir.path().to_path_buf());
    std::thread::spawn(move || send.send(take_backup(&url, None, &path, "killed.dump")));

    let pid = wait_for("pg_dump to start", Duration::from_secs(20), || {
        pg_dump_children(&db.name).first().copied()
    });
    let partial = format!(".killed.dump.partial-{}", std::process::id());
    wait_for("the partial file", Duration::from_secs(5), || {
        dir.path().join(&partial).exists().then_some(())
    });
    assert!(is_partial(&partial));
    let killed = Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let r = recv.recv_timeout(Duration::from_secs(30)).expect("take_backup returns");
    let e = r.unwrap_err();
    eprintln!("killed: {e}");
    assert!(e.to_string().contains("signal 9"), "{e}");
    assert!(!dir.path().join("killed.dump").exists());
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    tx.rollback().unwrap();
}

#[test]
fn stale_partials_are_removed_only_when_their_writer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let mut alive = Command::new("sleep").arg("30").spawn().unwrap();
    let me = std::process::id();
    let files = [
        format!(".a.dump.partial-{gone_pid}"),
        // This process's PID, but it is not writing it: a predecessor's (PID 1 in a container).
        format!(".b.dump.partial-{me}"),
        format!(".c.dump.partial-{}", alive.id()),
        "d.dump".to_string(),
        ".e.dump.partial-x".to_string(),
    ];
    for f in &files {
        fs::write(dir.path().join(f), b"x").unwrap();
    }
    let mut removed = remove_stale_partials(dir.path()).unwrap();
    alive.kill().unwrap();
    alive.wait().unwrap();
    removed.sort();
    assert_eq!(removed, [dir.path().join(&files[0]), dir.path().join(&files[1])]);
    let mut left = files[2..].to_vec();
    left.sort();
    assert_eq!(names(dir.path()), left);

    assert!(is_partial(".x.dump.partial-123"));
    for name in [
        "x.dump",
        ".x.dump.partial-",
        ".x.dump.partial-12a",
        ".partial-12",
        "x.partial-12",
    ] {
        assert!(!is_partial(name), "{name}");
    }
}

#[test]
fn an_archive_copy_is_verified_and_never_replaces_a_file() {
    if !primary_available("an_archive_copy_is_verified_and_never_replaces_a_file") {
        return;
    }
    let (_db, _dir, b) = backed_up("ar", 500);
    let archive = tempfile::tempdir().unwrap();
    let copy = archive_copy(&b.path, &b.sha256, archive.path()).unwrap();
    assert_eq!(copy, archive.path().join("db.dump"));
    assert_eq!(sha256sum(&copy), b.sha256);
    assert_eq!(names(archive.path()), ["db.dump"]);

    let again = archive_copy(&b.path, &b.sha256, archive.path());
    assert!(matches!(again, Err(BackupError::Exists { .. })), "{again:?}");

    let other = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let e = archive_copy(&b.path, &wrong, other.path()).unwrap_err();
    assert!(matches!(e, BackupError::ChecksumMismatch { .. }), "{e:?}");
    assert!(
        names(other.path()).is_empty(),
        "no copy left: {:?}",
        names(other.path())
    );
}
