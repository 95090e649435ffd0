//! Backups of a Database (`pg_dump -Fc`, or `-Fd -j N` as `spec.backup.format` says), their
//! restore tests and the archive copy. Blocking: the controller runs these on `spawn_blocking`.
//!
//! A file only ever appears under its final name complete and flushed: it is written as
//! `.<name>.partial-<pid>`, fsynced, linked to its name (never replacing one) and the directory
//! fsynced. A process killed mid-way leaves only the `.partial` file, which is never a backup;
//! [`remove_stale_partials`] removes those whose writer is certainly gone. pg_dump writes into a
//! pipe of ours (hashed on the way).
//!
//! Passwords reach child processes only through their environment (`PGPASSWORD`), never their
//! arguments, and never appear in errors (a URL carrying one is refused; stderr is masked).
//!
//! Two formats ([`DumpFormat`]). `custom` (the default, [`take_backup`]): `pg_dump -Fc` into one
//! file, hashed on the way. `directory` ([`take_directory_backup`]): `pg_dump -Fd -j N` into a
//! `.<name>.partial-<pid>` directory (the same naming: never counted, removed when stale), each
//! file and the directory fsynced, one SHA-256 over the whole directory ([`sha256_dir`]: its files
//! in name order, each as name, NUL, 8-byte big-endian length, bytes), then renamed as a whole;
//! restored with `pg_restore -j N` ([`restore_test_jobs`]), archived as a verified directory copy.
//! `-Fd -j 2` is faster when the database has several large tables and both cores are free
//! (965 MiB in 4 tables on 2 cores: 9.9 s against 17.4 s, docs/BENCHMARKS.md) and no faster
//! when one table dominates (pg_dump does not split a table across jobs), so it is opt-in.
//! Every pg_dump is started under `setpriv --pdeathsig KILL` (util-linux): the kernel kills it
//! when steward dies, which a `-Fd` dump writing its own files, or any dump waiting for a lock,
//! would otherwise outlive. Its partial output is never counted and removed by the next backup.

mod dump;
mod files;
mod process;
mod restore;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dump::{archive_copy, take_backup, take_backup_as, take_directory_backup};
pub use files::{is_partial, remove_backup, remove_stale_partials, sha256_dir, sha256_file, sha256_path};
pub use process::pg_program;
pub use restore::{restore_test, restore_test_jobs, RestoreTarget};

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
/// The most `pg_restore --jobs` of a restore test (the spec allows 16; a throwaway server takes
/// 30 connections).
const MAX_RESTORE_JOBS: u32 = 16;

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

/// How pg_dump writes a backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DumpFormat {
    /// `pg_dump -Fc`: one file, its SHA-256 that of its bytes.
    #[default]
    Custom,
    /// `pg_dump -Fd -j <jobs>`: one directory, its SHA-256 that of [`sha256_dir`].
    Directory { jobs: u32 },
}

/// A completed backup: a file, or a directory of the directory format (`size_bytes` the total
/// of its files).
#[derive(Clone, Debug, PartialEq)]
pub struct BackupFile {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub sha256: String,
    pub duration_seconds: f64,
}
