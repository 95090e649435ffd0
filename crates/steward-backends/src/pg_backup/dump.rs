//! Taking a backup (`pg_dump`) and its archive copy.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::files::{dir_files, feed_entry, free_name, hash_copy, sha256_dir, sha256_file, sync_dir_files, Partial};
use super::process::{dies_with_caller, libpq_env, parse_url, pg_program, Proc};
use super::{io_err, BackupError, BackupFile, DumpFormat};

/// [`take_backup`] (`pg_dump -Fc`, one file) or [`take_directory_backup`] (`pg_dump -Fd -j N`,
/// one directory), as `format` says.
pub fn take_backup_as(
    url: &str,
    password: Option<&str>,
    dir: &Path,
    name: &str,
    format: DumpFormat,
) -> Result<BackupFile, BackupError> {
    match format {
        DumpFormat::Custom => take_backup(url, password, dir, name),
        DumpFormat::Directory { jobs } => take_directory_backup(url, password, dir, name, jobs),
    }
}

/// `pg_dump --format=directory --jobs=<jobs>` of the database of `url` into the directory
/// `dir/name`. pg_dump writes `.<name>.partial-<pid>` (it creates that directory itself); every
/// file and the directory are then fsynced, its one SHA-256 ([`super::sha256_dir`]) and total
/// size read back, and it is renamed to `name` (never replacing anything) and `dir` fsynced. On
/// any failure nothing is left but, if this process is killed, the partial directory, which is
/// never a backup ([`super::remove_stale_partials`] removes it). No time limit.
pub fn take_directory_backup(
    url: &str,
    password: Option<&str>,
    dir: &Path,
    name: &str,
    jobs: u32,
) -> Result<BackupFile, BackupError> {
    let final_path = free_name(dir, name)?;
    parse_url(url)?;
    let started = Instant::now();
    let partial = Partial::claim_dir(dir, name, false)?;
    let mut cmd = dies_with_caller(pg_program("pg_dump"));
    cmd.args(["--format=directory", "--no-password"]);
    cmd.arg(format!("--jobs={}", jobs.max(1)))
        .arg("--file")
        .arg(&partial.path);
    cmd.arg("--dbname").arg(url).stdout(Stdio::null());
    libpq_env(&mut cmd, password);
    Proc::spawn(&mut cmd, "pg_dump")?.finish(None, password)?;
    sync_dir_files(&partial.path)?;
    let (sha256, size_bytes) = sha256_dir(&partial.path).map_err(io_err("cannot read", &partial.path))?;
    partial.finish_dir(dir, &final_path)?;
    Ok(BackupFile {
        path: final_path,
        size_bytes,
        sha256,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// `pg_dump -Fc` of the database of `url` into `dir/file_name`, its SHA-256 computed as it is
/// written. The final name exists only once the file is complete and durable; on any failure
/// nothing is left. No time limit: a backup takes as long as the database needs.
pub fn take_backup(url: &str, password: Option<&str>, dir: &Path, file_name: &str) -> Result<BackupFile, BackupError> {
    let final_path = free_name(dir, file_name)?;
    parse_url(url)?;
    let started = Instant::now();
    let (partial, mut file) = Partial::claim(dir, file_name)?;
    let mut cmd = dies_with_caller(pg_program("pg_dump"));
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
///
/// A directory-format backup is copied the same way, as a directory: each file into the partial
/// directory and fsynced, the source's digest computed as it is read and the copy's re-read.
pub fn archive_copy(src: &Path, expected_sha256: &str, dir: &Path) -> Result<PathBuf, BackupError> {
    let name = src.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if fs::metadata(src).is_ok_and(|m| m.is_dir()) {
        return archive_copy_dir(src, name, expected_sha256, dir);
    }
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

fn archive_copy_dir(src: &Path, name: &str, expected_sha256: &str, dir: &Path) -> Result<PathBuf, BackupError> {
    let final_path = free_name(dir, name)?;
    let mismatch = |path: &Path, actual| BackupError::ChecksumMismatch(path.into(), expected_sha256.into(), actual);
    let partial = Partial::claim_dir(dir, name, true)?;
    let mut h = Sha256::new();
    for (file_name, path) in dir_files(src).map_err(io_err("cannot list", src))? {
        let to = partial.path.join(&file_name);
        let mut input = File::open(&path).map_err(io_err("cannot open", &path))?;
        let mut out = File::create_new(&to).map_err(io_err("cannot create", &to))?;
        feed_entry(&mut h, &file_name, &mut input, Some(&mut out)).map_err(io_err("cannot copy", &path))?;
    }
    let read_sha = hex::encode(h.finalize());
    if !read_sha.eq_ignore_ascii_case(expected_sha256) {
        return Err(mismatch(src, read_sha));
    }
    sync_dir_files(&partial.path)?;
    let (copy_sha, _) = sha256_dir(&partial.path).map_err(io_err("cannot re-read", &partial.path))?;
    if !copy_sha.eq_ignore_ascii_case(expected_sha256) {
        return Err(mismatch(&final_path, copy_sha));
    }
    partial.finish_dir(dir, &final_path)?;
    Ok(final_path)
}
