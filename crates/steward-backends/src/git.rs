//! The desired state from a git repository, through the `git` command line (file://, ssh and
//! https remotes; credentials are git's own business). Each fetched commit is exported to a
//! directory of its own, so the last good revision stays on disk while a bad one is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Revisions kept on disk: the one in force and the newest attempt.
const KEEP_EXPORTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git {op} failed for {url}: {stderr}")]
    Command {
        op: &'static str,
        url: String,
        stderr: String,
    },
    #[error("cannot run git {op}")]
    Spawn {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("path {path:?} does not exist in commit {sha}")]
    PathMissing { path: String, sha: String },
}

/// A commit, as shown in status and events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub author: String,
    pub subject: String,
    pub unix_time: i64,
}

impl Commit {
    pub fn short(&self) -> &str {
        &self.sha[..self.sha.len().min(7)]
    }
    /// `1a2b3c4 'scale web to 12' (Jane)`
    pub fn describe(&self) -> String {
        format!("{} '{}' ({})", self.short(), self.subject, self.author)
    }
}

/// What a fetch found.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub commit: Commit,
    /// Manifest directory of this commit (inside its export).
    pub manifests: PathBuf,
    /// The previous commit is not an ancestor of this one: the branch was rewritten.
    pub force_pushed_from: Option<String>,
}

pub struct GitSource {
    pub url: String,
    pub branch: String,
    /// Directory inside the repository holding the manifests (`.` for the root).
    pub path: String,
    /// Where the clone and the exports live (under steward's state directory).
    pub dir: PathBuf,
    last_sha: Option<String>,
}

impl GitSource {
    pub fn new(url: &str, branch: &str, path: &str, dir: &Path) -> Self {
        Self {
            url: url.to_string(),
            branch: branch.to_string(),
            path: path.trim_matches('/').to_string(),
            // Absolute: git resolves some paths (the index) against the work tree.
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
            last_sha: None,
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    fn git(&self, op: &'static str, args: &[&str]) -> Result<String, GitError> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.repo())
            .args(args)
            // Never prompt for credentials: a controller has no terminal.
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|source| GitError::Spawn { op, source })?;
        if !out.status.success() {
            return Err(GitError::Command {
                op,
                url: self.url.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Fetches the branch (a bare mirror of it; force-pushes are followed) and exports the
    /// head commit when it is new. `Ok(None)` when the head did not move.
    pub fn fetch(&mut self) -> Result<Option<Fetched>, GitError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| GitError::Io {
            path: self.dir.clone(),
            source,
        })?;
        if !self.repo().join("HEAD").exists() {
            let out = Command::new("git")
                .args(["init", "--bare", "-q"])
                .arg(self.repo())
                .output()
                .map_err(|source| GitError::Spawn { op: "init", source })?;
            if !out.status.success() {
                return Err(GitError::Command {
                    op: "init",
                    url: self.url.clone(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}", b = self.branch);
        self.git("fetch", &["fetch", "--quiet", "--no-tags", &self.url, &refspec])?;
        let head = format!("refs/remotes/origin/{}", self.branch);
        let sha = self.git("rev-parse", &["rev-parse", &head])?;
        if self.last_sha.as_deref() == Some(sha.as_str()) {
            return Ok(None);
        }
        let info = self.git("log", &["log", "-1", "--format=%H%x00%an%x00%s%x00%ct", &sha])?;
        let mut parts = info.split('\0');
        let commit = Commit {
            sha: parts.next().unwrap_or_default().to_string(),
            author: parts.next().unwrap_or_default().to_string(),
            subject: parts.next().unwrap_or_default().to_string(),
            unix_time: parts.next().and_then(|t| t.parse().ok()).unwrap_or(0),
        };
        let force_pushed_from = match &self.last_sha {
            Some(old)
                if self
                    .git("merge-base", &["merge-base", "--is-ancestor", old, &sha])
                    .is_err() =>
            {
                Some(old.clone())
            }
            _ => None,
        };
        let export = self.export(&sha)?;
        self.last_sha = Some(sha.clone());
        let manifests = if self.path.is_empty() || self.path == "." {
            export
        } else {
            export.join(&self.path)
        };
        if !manifests.exists() {
            return Err(GitError::PathMissing {
                path: self.path.clone(),
                sha,
            });
        }
        Ok(Some(Fetched {
            commit,
            manifests,
            force_pushed_from,
        }))
    }

    /// Writes the commit's tree to `exports/<sha>` (once), and drops older exports.
    fn export(&self, sha: &str) -> Result<PathBuf, GitError> {
        let exports = self.dir.join("exports");
        let target = exports.join(sha);
        if !target.exists() {
            let tmp = exports.join(format!(".{sha}.tmp"));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(|source| GitError::Io {
                path: tmp.clone(),
                source,
            })?;
            let out = Command::new("git")
                .arg("--git-dir")
                .arg(self.repo())
                .arg("--work-tree")
                .arg(&tmp)
                .args(["checkout", "--quiet", "--force", sha, "--", "."])
                .env("GIT_INDEX_FILE", self.dir.join("index.tmp"))
                .output()
                .map_err(|source| GitError::Spawn { op: "checkout", source })?;
            if !out.status.success() {
                return Err(GitError::Command {
                    op: "checkout",
                    url: self.url.clone(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            std::fs::rename(&tmp, &target).map_err(|source| GitError::Io {
                path: target.clone(),
                source,
            })?;
        }
        // Keep the newest few exports (by modification time); the one in force is among them.
        if let Ok(rd) = std::fs::read_dir(&exports) {
            let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = rd
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            dirs.sort();
            let excess = dirs.len().saturating_sub(KEEP_EXPORTS);
            for (_, d) in dirs.into_iter().take(excess) {
                if d != target {
                    let _ = std::fs::remove_dir_all(d);
                }
            }
        }
        Ok(target)
    }

    /// The export of a commit fetched earlier (e.g. the last good one, after a restart).
    pub fn export_of(&self, sha: &str) -> Option<PathBuf> {
        let p = self.dir.join("exports").join(sha);
        let p = if self.path.is_empty() || self.path == "." {
            p
        } else {
            p.join(&self.path)
        };
        p.exists().then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) {
        let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn commit(work: &Path, file: &str, body: &str, msg: &str) {
        std::fs::create_dir_all(work.join("deploy")).unwrap();
        std::fs::write(work.join("deploy").join(file), body).unwrap();
        sh(work, &["add", "-A"]);
        sh(
            work,
            &[
                "-c",
                "user.name=Jane",
                "-c",
                "user.email=jane@example.invalid",
                "commit",
                "-q",
                "-m",
                msg,
            ],
        );
    }

    #[test]
    fn fetches_new_commits_follows_force_push_and_reports_missing_path() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        sh(&work, &["init", "-q", "-b", "main"]);
        commit(&work, "a.yaml", "one", "first");
        let url = format!("file://{}", work.display());
        let mut src = GitSource::new(&url, "main", "deploy", &tmp.path().join("state"));

        let f = src.fetch().unwrap().expect("first fetch sees a commit");
        assert_eq!(f.commit.subject, "first");
        assert_eq!(f.commit.author, "Jane");
        assert_eq!(std::fs::read_to_string(f.manifests.join("a.yaml")).unwrap(), "one");
        assert!(src.fetch().unwrap().is_none(), "head did not move");

        commit(&work, "a.yaml", "two", "second");
        let f2 = src.fetch().unwrap().unwrap();
        assert_eq!(f2.commit.subject, "second");
        assert!(f2.force_pushed_from.is_none());
        assert!(src.export_of(&f.commit.sha).is_some(), "previous export kept");

        sh(&work, &["reset", "-q", "--hard", "HEAD~1"]);
        commit(&work, "a.yaml", "three", "rewritten");
        let f3 = src.fetch().unwrap().unwrap();
        assert_eq!(f3.force_pushed_from.as_deref(), Some(f2.commit.sha.as_str()));

        sh(&work, &["rm", "-q", "-r", "deploy"]);
        std::fs::write(work.join("README"), "x").unwrap();
        sh(&work, &["add", "-A"]);
        sh(
            &work,
            &[
                "-c",
                "user.name=Jane",
                "-c",
                "user.email=jane@example.invalid",
                "commit",
                "-q",
                "-m",
                "drop deploy",
            ],
        );
        assert!(matches!(src.fetch(), Err(GitError::PathMissing { .. })));

        let mut bad = GitSource::new("file:///nonexistent/repo", "main", ".", &tmp.path().join("bad"));
        assert!(matches!(bad.fetch(), Err(GitError::Command { op: "fetch", .. })));
    }
}
