//! Directory-format backups (`pg_dump -Fd -j N`) against the real primary of
//! scripts/ensure-postgres-replica.sh: published only complete under their name, one SHA-256
//! over their files, restored in parallel, a changed or truncated file failing the restore
//! test, stale partial directories removed, archive copies verified.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use steward_backends::pg_backup::{
    archive_copy, remove_backup, remove_stale_partials, restore_test_jobs, sha256_dir, sha256_path, take_backup_as,
    BackupError, BackupFile, DumpFormat, RestoreTarget, THROWAWAY_PREFIX,
};
use steward_database::spec::Check;
use support::{primary_available, primary_url, ScratchDb};

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

const TWO_JOBS: DumpFormat = DumpFormat::Directory { jobs: 2 };

/// A scratch database with tables `a` and `b` of `rows` rows each, and its directory-format
/// backup `db.dir` in a temp dir.
fn backed_up(tag: &str, rows: u32) -> (ScratchDb, tempfile::TempDir, BackupFile) {
    let db = ScratchDb::create(tag);
    db.sql(&format!(
        "CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;
         CREATE TABLE b (id int PRIMARY KEY, v text); INSERT INTO b SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"
    ));
    let dir = tempfile::tempdir().unwrap();
    let b = take_backup_as(&db.url(), None, dir.path(), "db.dir", TWO_JOBS).unwrap();
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

/// The documented digest, computed independently: over the files sorted by name, each as its
/// name, a NUL byte, its length (8 bytes big-endian) and its bytes.
fn documented_digest(dir: &Path) -> (String, u64) {
    let (mut h, mut total) = (Sha256::new(), 0u64);
    for name in names(dir) {
        let bytes = fs::read(dir.join(&name)).unwrap();
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
        total += bytes.len() as u64;
    }
    (hex::encode(h.finalize()), total)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for name in names(from) {
        fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// The largest data file of a directory backup (a table's rows).
fn largest_data_file(dir: &Path) -> PathBuf {
    names(dir)
        .into_iter()
        .filter(|n| n != "toc.dat")
        .map(|n| dir.join(n))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a data file")
}

fn throwaway_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(THROWAWAY_PREFIX))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_directory_backup_appears_complete_under_its_name_with_one_checksum_over_its_files() {
    if !primary_available("a_directory_backup_appears_complete_under_its_name_with_one_checksum_over_its_files") {
        return;
    }
    let (db, dir, b) = backed_up("dbk", 1000);
    assert_eq!(b.path, dir.path().join("db.dir"));
    assert!(b.path.is_dir());
    assert_eq!(names(dir.path()), ["db.dir"], "no .partial left");
    let files = names(&b.path);
    assert!(files.contains(&"toc.dat".to_string()), "{files:?}");
    assert!(files.len() >= 3, "a data file per table: {files:?}");
    let (digest, total) = documented_digest(&b.path);
    assert_eq!(b.sha256, digest, "the documented definition");
    assert_eq!(b.sha256, sha256_path(&b.path).unwrap());
    assert_eq!(sha256_dir(&b.path).unwrap(), (b.sha256.clone(), b.size_bytes));
    assert_eq!(b.size_bytes, total, "the size is the sum of its files");
    assert!(b.duration_seconds > 0.0);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&b.path), 0o700, "the owner's only");
    for f in &files {
        assert_eq!(mode(&b.path.join(f)), 0o600, "{f}");
    }

    // Never overwritten: a second backup to that name fails and the first is untouched.
    let again = take_backup_as(&db.url(), None, dir.path(), "db.dir", TWO_JOBS);
    assert!(matches!(again, Err(BackupError::Exists { .. })), "{again:?}");
    assert_eq!(sha256_path(&b.path).unwrap(), b.sha256);
    assert_eq!(names(dir.path()), ["db.dir"]);
    // A password in the URL is refused, and not repeated in the error.
    let url = format!(
        "postgres://postgres:s3cr3t-pw@127.0.0.1:{}/{}",
        support::primary_port(),
        db.name
    );
    let e = take_backup_as(&url, None, dir.path(), "pw.dir", TWO_JOBS).unwrap_err();
    assert!(matches!(e, BackupError::PasswordInUrl), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("s3cr3t-pw"));
    // A failing pg_dump (no such database): its stderr says why, no partial directory is left.
    let e = take_backup_as(&primary_url("stw_no_such_db"), None, dir.path(), "none.dir", TWO_JOBS).unwrap_err();
    assert!(matches!(e, BackupError::Failed { .. }), "{e:?}");
    assert!(e.to_string().contains("stw_no_such_db"), "{e}");
    assert_eq!(names(dir.path()), ["db.dir"]);

    // Deleting it (retention's call) removes the directory and its files.
    remove_backup(&b.path).unwrap();
    assert!(names(dir.path()).is_empty());
    remove_backup(&b.path).expect("one that is gone already is no error");
}

#[test]
fn a_directory_backup_restores_in_parallel_and_passes_its_checks() {
    if !primary_available("a_directory_backup_restores_in_parallel_and_passes_its_checks") {
        return;
    }
    let (_db, _dir, b) = backed_up("drt", 1000);
    let _one = restores();
    let before = throwaway_dirs();
    let checks = [
        check("SELECT count(*) FROM a", "= 1000"),
        check("SELECT count(*) FROM b", "= 1000"),
    ];
    let r = restore_test_jobs(&b.path, &b.sha256, &RestoreTarget::Throwaway, &checks, 2);
    assert!(r.passed, "{r:?}");
    assert_eq!(r.message, "passed");
    assert!(r.restore_seconds > 0.0);
    assert_eq!(r.checks.len(), 2);
    assert_eq!(r.checks[1].value.as_deref(), Some("1000"));
    // Onto an existing server too (a scratch database there), with one worker.
    let target = RestoreTarget::Server {
        url: primary_url("postgres"),
        password: None,
    };
    let r = restore_test_jobs(&b.path, &b.sha256, &target, &checks, 1);
    assert!(r.passed, "{r:?}");
    assert_eq!(throwaway_dirs(), before, "the throwaway server's directory is gone");
}

#[test]
fn a_changed_or_truncated_file_of_a_directory_backup_fails_its_restore_test() {
    if !primary_available("a_changed_or_truncated_file_of_a_directory_backup_fails_its_restore_test") {
        return;
    }
    let (_db, dir, b) = backed_up("dcr", 2000);
    let _one = restores();
    let before = throwaway_dirs();
    let checks = [check("SELECT count(*) FROM a", "> 0")];

    // One byte changed in one file, the recorded checksum kept: refused before any server starts.
    let flipped = dir.path().join("flipped.dir");
    copy_dir(&b.path, &flipped);
    let f = largest_data_file(&flipped);
    let mut bytes = fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&f, &bytes).unwrap();
    let r = restore_test_jobs(&flipped, &b.sha256, &RestoreTarget::Throwaway, &checks, 2);
    assert!(!r.passed);
    assert!(r.message.starts_with("checksum mismatch"), "{r:?}");
    assert_eq!(r.restore_seconds, 0.0);

    // One file truncated: the same.
    let truncated = dir.path().join("truncated.dir");
    copy_dir(&b.path, &truncated);
    let f = largest_data_file(&truncated);
    let len = fs::metadata(&f).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = restore_test_jobs(&truncated, &b.sha256, &RestoreTarget::Throwaway, &checks, 2);
    assert!(!r.passed);
    assert!(r.message.starts_with("checksum mismatch"), "{r:?}");

    // A file removed, or a file added: the same.
    let removed = dir.path().join("removed.dir");
    copy_dir(&b.path, &removed);
    fs::remove_file(largest_data_file(&removed)).unwrap();
    let r = restore_test_jobs(&removed, &b.sha256, &RestoreTarget::Throwaway, &checks, 2);
    assert!(r.message.starts_with("checksum mismatch"), "{r:?}");
    let added = dir.path().join("added.dir");
    copy_dir(&b.path, &added);
    fs::write(added.join("9999.dat.gz"), b"").unwrap();
    let r = restore_test_jobs(&added, &b.sha256, &RestoreTarget::Throwaway, &checks, 2);
    assert!(r.message.starts_with("checksum mismatch"), "{r:?}");

    // Truncated with its checksum recomputed: pg_restore itself fails, and the server is removed.
    let r = restore_test_jobs(
        &truncated,
        &sha256_path(&truncated).unwrap(),
        &RestoreTarget::Throwaway,
        &checks,
        2,
    );
    assert!(!r.passed, "{r:?}");
    assert!(r.message.starts_with("pg_restore failed"), "{r:?}");
    assert!(!r.message.contains('\n'));
    assert_eq!(throwaway_dirs(), before, "the throwaway servers' directories are gone");
}

#[test]
fn stale_partial_directories_are_removed_only_when_their_writer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let mut alive = Command::new("sleep").arg("30").spawn().unwrap();
    let me = std::process::id();
    let partials = [
        format!(".a.dir.partial-{gone_pid}"),
        // This process's PID, but it is not writing it: a predecessor's.
        format!(".b.dir.partial-{me}"),
        format!(".c.dir.partial-{}", alive.id()),
    ];
    for p in &partials {
        fs::create_dir(dir.path().join(p)).unwrap();
        fs::write(dir.path().join(p).join("toc.dat"), b"x").unwrap();
        fs::write(dir.path().join(p).join("3001.dat.gz"), b"y").unwrap();
    }
    fs::create_dir(dir.path().join("d.dir")).unwrap();
    let mut removed = remove_stale_partials(dir.path()).unwrap();
    alive.kill().unwrap();
    alive.wait().unwrap();
    removed.sort();
    assert_eq!(removed, [dir.path().join(&partials[0]), dir.path().join(&partials[1])]);
    assert_eq!(names(dir.path()), [partials[2].clone(), "d.dir".to_string()]);
    assert_eq!(
        names(&dir.path().join(&partials[2])),
        ["3001.dat.gz", "toc.dat"],
        "kept whole"
    );
}

#[test]
fn an_archive_copy_of_a_directory_backup_is_verified_and_never_replaces_one() {
    if !primary_available("an_archive_copy_of_a_directory_backup_is_verified_and_never_replaces_one") {
        return;
    }
    let (_db, dir, b) = backed_up("dar", 500);
    let archive = tempfile::tempdir().unwrap();
    let copy = archive_copy(&b.path, &b.sha256, archive.path()).unwrap();
    assert_eq!(copy, archive.path().join("db.dir"));
    assert!(copy.is_dir());
    assert_eq!(sha256_path(&copy).unwrap(), b.sha256);
    assert_eq!(names(&copy), names(&b.path));
    assert_eq!(names(archive.path()), ["db.dir"], "no .partial left");

    let again = archive_copy(&b.path, &b.sha256, archive.path());
    assert!(matches!(again, Err(BackupError::Exists { .. })), "{again:?}");

    let other = tempfile::tempdir().unwrap();
    let e = archive_copy(&b.path, &"0".repeat(64), other.path()).unwrap_err();
    assert!(matches!(e, BackupError::ChecksumMismatch { .. }), "{e:?}");
    assert!(
        names(other.path()).is_empty(),
        "no copy left: {:?}",
        names(other.path())
    );

    // A source changed since it was recorded is not archived.
    let changed = dir.path().join("changed").join("db.dir");
    fs::create_dir(changed.parent().unwrap()).unwrap();
    copy_dir(&b.path, &changed);
    let f = largest_data_file(&changed);
    let mut bytes = fs::read(&f).unwrap();
    bytes[0] ^= 0x01;
    fs::write(&f, &bytes).unwrap();
    let e = archive_copy(&changed, &b.sha256, other.path()).unwrap_err();
    assert!(matches!(e, BackupError::ChecksumMismatch { .. }), "{e:?}");
    assert!(
        names(other.path()).is_empty(),
        "no copy left: {:?}",
        names(other.path())
    );
}
