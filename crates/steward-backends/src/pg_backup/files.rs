//! Files of backups: temporary `.partial` names, publishing under the final name, stale
//! partials, checksums.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};

use super::{io_err, BackupError, BUF};

/// The temporary files this process is writing now (a restarted controller often gets the same
/// PID, e.g. 1 in a container: its predecessor's files are stale although the PID is alive).
static WRITING: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

fn writing() -> std::sync::MutexGuard<'static, HashSet<PathBuf>> {
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file (or a backup directory) being written under its temporary name: removed on drop
/// unless it became final.
pub(super) struct Partial {
    pub(super) path: PathBuf,
    done: bool,
    /// A directory (`pg_dump -Fd`, or its archive copy): removed with everything in it.
    is_dir: bool,
}

impl Partial {
    /// `.<name>.partial-<pid>` in `dir`, reserved in this process (two writers of one name in one
    /// process would share it).
    fn reserve(dir: &Path, name: &str, is_dir: bool) -> Result<Partial, BackupError> {
        let path = dir.join(format!(".{name}.partial-{}", std::process::id()));
        if !writing().insert(path.clone()) {
            return Err(BackupError::Busy(path));
        }
        Ok(Partial {
            path,
            done: false,
            is_dir,
        })
    }

    /// Claims `.<name>.partial-<pid>` in `dir` (a predecessor's leftover with our PID is removed).
    pub(super) fn claim(dir: &Path, name: &str) -> Result<(Partial, File), BackupError> {
        let partial = Partial::reserve(dir, name, false)?;
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
    pub(super) fn finish(mut self, dir: &Path, final_path: &Path) -> Result<(), BackupError> {
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

impl Partial {
    /// Claims the directory `.<name>.partial-<pid>` in `dir` (a predecessor's leftover with our
    /// PID is removed); creates it (owner only) when `create`, else leaves that to its writer
    /// (`pg_dump -Fd` creates its output directory itself and refuses a non-empty one).
    pub(super) fn claim_dir(dir: &Path, name: &str, create: bool) -> Result<Partial, BackupError> {
        let partial = Partial::reserve(dir, name, true)?;
        remove_backup(&partial.path).map_err(io_err("cannot remove", &partial.path))?;
        if create {
            fs::create_dir(&partial.path).map_err(io_err("cannot create", &partial.path))?;
            fs::set_permissions(&partial.path, fs::Permissions::from_mode(0o700))
                .map_err(io_err("cannot chmod", &partial.path))?;
        }
        Ok(partial)
    }

    /// Gives the directory its final name, refused when that name exists (checked, then renamed:
    /// racy only against another writer of that name, and rename(2) replaces only an empty
    /// directory), and makes that durable (the parent fsynced).
    pub(super) fn finish_dir(mut self, dir: &Path, final_path: &Path) -> Result<(), BackupError> {
        if final_path.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(final_path.to_path_buf()));
        }
        fs::rename(&self.path, final_path).map_err(io_err("cannot rename to", final_path))?;
        self.done = true;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("cannot fsync directory", dir))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done && self.is_dir {
            let _ = fs::remove_dir_all(&self.path);
        } else if !self.done {
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

/// Removes the `.partial` files (and directories, of the directory format, with everything in
/// them) of `dir` whose writer is certainly gone, and returns them: its
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
        let kind = entry.file_type()?;
        if stale && (kind.is_file() || kind.is_dir()) {
            // A directory is the partial of a directory-format backup or of its archive copy.
            let removed_now = if kind.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match removed_now {
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
pub(super) fn free_name(dir: &Path, name: &str) -> Result<PathBuf, BackupError> {
    check_name(name)?;
    let path = dir.join(name);
    match path.symlink_metadata() {
        Ok(_) => Err(BackupError::Exists(path)),
        Err(_) => Ok(path),
    }
}

/// Streams `r` into `w` (if any), returning the hex SHA-256 and the byte count.
pub(super) fn hash_copy(r: &mut impl Read, w: Option<&mut File>) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let total = feed(&mut h, r, w)?;
    Ok((hex::encode(h.finalize()), total))
}

/// Streams `r` into `h` and into `w` (if any), returning the byte count.
fn feed(h: &mut Sha256, r: &mut impl Read, mut w: Option<&mut File>) -> io::Result<u64> {
    let (mut buf, mut total) = (vec![0u8; BUF], 0u64);
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
    Ok(total)
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    hash_copy(&mut File::open(path)?, None).map(|(h, _)| h)
}

/// The entries of a directory-format backup: its regular files, sorted by name (as bytes). Any
/// other entry (a subdirectory, a symlink) is an error: pg_dump never writes one.
pub(super) fn dir_files(dir: &Path) -> io::Result<Vec<(OsString, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            let msg = format!("{} is not a regular file", entry.path().display());
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        files.push((entry.file_name(), entry.path()));
    }
    files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(files)
}

/// Feeds one file of a backup directory into its digest: the name's bytes, a NUL byte, the
/// length as 8 bytes big-endian, then the content (copied into `w` if any). The content read
/// must be as long as announced (a file that changes while it is read is an error).
pub(super) fn feed_entry(h: &mut Sha256, name: &OsString, r: &mut File, w: Option<&mut File>) -> io::Result<u64> {
    let len = r.metadata()?.len();
    h.update(name.as_bytes());
    h.update([0u8]);
    h.update(len.to_be_bytes());
    let n = feed(h, r, w)?;
    if n != len {
        let msg = format!("{name:?} changed while read: {n} bytes read, {len} announced");
        return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
    }
    Ok(n)
}

/// Hex SHA-256 and total size in bytes of a directory-format backup: one digest over its files
/// in name order, each as its name, a NUL byte, its length (8 bytes big-endian) and its bytes.
/// A changed, truncated, added, removed or renamed file changes it.
pub fn sha256_dir(dir: &Path) -> io::Result<(String, u64)> {
    let (mut h, mut total) = (Sha256::new(), 0u64);
    for (name, path) in dir_files(dir)? {
        total += feed_entry(&mut h, &name, &mut File::open(&path)?, None)?;
    }
    Ok((hex::encode(h.finalize()), total))
}

/// Hex SHA-256 of a backup: of a file, its bytes (what `sha256sum` prints); of a directory
/// (`pg_dump -Fd`), [`sha256_dir`]'s digest.
pub fn sha256_path(path: &Path) -> io::Result<String> {
    if fs::metadata(path)?.is_dir() {
        sha256_dir(path).map(|(h, _)| h)
    } else {
        sha256_file(path)
    }
}

/// Makes a backup directory durable and its owner's only: each file chmod 0600 and fsynced,
/// then the directory itself (0700).
pub(super) fn sync_dir_files(dir: &Path) -> Result<(), BackupError> {
    for (_, path) in dir_files(dir).map_err(io_err("cannot list", dir))? {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io_err("cannot chmod", &path))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_err("cannot fsync", &path))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("cannot chmod", dir))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot fsync directory", dir))
}

/// Deletes a backup steward recorded: a file, or a directory-format backup with everything in
/// it. One that is not there is no error. Never call it on a path steward did not record.
pub fn remove_backup(path: &Path) -> io::Result<()> {
    let removed = match path.symlink_metadata() {
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    match removed {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
