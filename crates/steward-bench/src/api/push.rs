//! Section 3: from a `git push` to the desired state's repository to the change running on
//! Swarm, with a push webhook (`--interval 1h`, so any speed is the webhook's) and with
//! polling alone. The remote is a bare repository in the bench's temp dir (`file://`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hmac::Mac;

use super::child::Steward;
use super::fill::Rng;
use super::http::Conn;
use super::{service_running, service_version, wait_running, Ctx, IMAGE};

/// The Engine is polled this often while waiting for the first write and for convergence.
pub const POLL: Duration = Duration::from_millis(20);

struct Repo {
    work: PathBuf,
    url: String,
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Repo {
    fn new(root: &Path) -> anyhow::Result<Repo> {
        let bare = root.join("remote.git");
        let work = root.join("work");
        std::fs::create_dir_all(&work)?;
        let bare_s = bare.to_str().context("non-UTF-8 temp path")?;
        git(root, &["init", "-q", "--bare", "-b", "main", bare_s])?;
        git(&work, &["init", "-q", "-b", "main"])?;
        git(&work, &["remote", "add", "origin", bare_s])?;
        Ok(Repo {
            work,
            url: format!("file://{bare_s}"),
        })
    }

    /// Commits `deploy/app.yaml`; returns the full sha. Not pushed.
    fn commit(&self, body: &str, subject: &str) -> anyhow::Result<String> {
        std::fs::create_dir_all(self.work.join("deploy"))?;
        std::fs::write(self.work.join("deploy/app.yaml"), body)?;
        git(&self.work, &["add", "-A"])?;
        git(
            &self.work,
            &[
                "-c",
                "user.name=Bench",
                "-c",
                "user.email=bench@example.invalid",
                "commit",
                "-q",
                "-m",
                subject,
            ],
        )?;
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// `git push`, timed.
    fn push(&self) -> anyhow::Result<Duration> {
        let t = Instant::now();
        git(&self.work, &["push", "-q", "origin", "main"])?;
        Ok(t.elapsed())
    }
}

fn manifest(stack: &str, service: &str, replicas: u64) -> String {
    format!(
        "apiVersion: steward.io/v1alpha1\nkind: Stack\nmetadata:\n  name: {stack}\n---\n\
         apiVersion: steward.io/v1alpha1\nkind: Service\nmetadata:\n  name: {service}\nspec:\n  \
         image: {IMAGE}\n  replicas: {replicas}\n  update:\n    parallelism: 0\n    monitor: 1s\n"
    )
}

pub struct PushRun {
    /// Polling mode: the wait before the commit, to spread the push over the poll cycle.
    pub delay: Option<Duration>,
    pub git_push: Duration,
    /// Webhook mode: the POST's round trip (202 expected).
    pub post: Option<Duration>,
    pub to_write: Duration,
    pub to_converged: Duration,
}

pub struct Mode {
    pub runs: Vec<PushRun>,
    pub setup: Duration,
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Waits (polling every [`POLL`]) until the service's `Version.Index` differs from `before`.
async fn wait_write(ctx: &Ctx, service: &str, before: u64, t0: Instant, timeout: Duration) -> anyhow::Result<Duration> {
    loop {
        if service_version(&ctx.engine, service).await? != before {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("{service}: no Swarm write within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (polling every [`POLL`]) until the service runs `replicas` tasks out of `replicas`.
async fn wait_converged(
    ctx: &Ctx,
    service: &str,
    replicas: u64,
    t0: Instant,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    loop {
        if service_running(&ctx.engine, service).await? == Some((replicas, replicas)) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("{service}: not {replicas}/{replicas} within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `webhook`: `--interval 1h` and a signed POST after each push; otherwise `--interval
/// poll_interval` and nothing but the push.
pub async fn run(ctx: &mut Ctx, webhook: bool, runs: usize, poll_interval: Duration) -> anyhow::Result<Mode> {
    let name = if webhook { "hook" } else { "poll" };
    let stack = format!("{}-api-{name}", ctx.prefix);
    let service = format!("{stack}-web");
    ctx.created.push(service.clone());
    let root = ctx.work.join(format!("git-{name}"));
    std::fs::create_dir_all(&root)?;
    let repo = Repo::new(&root)?;
    repo.commit(&manifest(&stack, &service, 1), "initial: one web task")?;
    repo.push()?;

    // A secret of this run only; never printed.
    let secret = format!("bench-{:016x}", Rng::new(u64::from(std::process::id()) ^ 0x5eed).next());
    let interval = if webhook {
        "1h".to_string()
    } else {
        format!("{}ms", poll_interval.as_millis())
    };
    let state = root.join("state/steward.db");
    let log = ctx.work.join(format!("git-{name}-run.log"));
    let env: Vec<(&str, &str)> = if webhook {
        vec![("STEWARD_WEBHOOK_SECRET", secret.as_str())]
    } else {
        vec![]
    };
    let t = Instant::now();
    let mut st = Steward::start(
        &ctx.bin,
        &state,
        &["--git", &repo.url, "--path", "deploy", "--interval", &interval],
        &env,
        &log,
    )?;
    let addr = st.api_addr(Duration::from_secs(30)).await?;
    wait_running(&ctx.engine, std::slice::from_ref(&service), 1, Duration::from_secs(90)).await?;
    let setup = t.elapsed();
    say!(
        "push/{name}: {service} 1/1 after {:.1} s; {runs} runs",
        setup.as_secs_f64()
    );

    let mut rng = Rng::new(0xb0a7 + runs as u64);
    let mut out = Vec::new();
    for i in 0..runs {
        ctx.need(
            &format!("push/{name} run {}", i + 1),
            Duration::from_secs(20) + poll_interval,
        )?;
        // Let the previous change settle (its own Swarm events and passes) first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let replicas = 2 + i as u64;
        let delay = if webhook {
            None
        } else {
            let d = Duration::from_secs_f64(rng.unit() * poll_interval.as_secs_f64());
            tokio::time::sleep(d).await;
            Some(d)
        };
        let sha = repo.commit(
            &manifest(&stack, &service, replicas),
            &format!("scale web to {replicas}"),
        )?;
        let before = service_version(&ctx.engine, &service).await?;
        let (t0, git_push, post) = if webhook {
            let git_push = repo.push()?;
            let body = format!(
                "{{\"ref\":\"refs/heads/main\",\"before\":\"0000000000000000000000000000000000000000\",\"after\":\"{sha}\",\"repository\":{{\"full_name\":\"ops/taxcollector\"}}}}"
            );
            let signature = sign(&secret, &body);
            let t0 = Instant::now();
            let mut c = Conn::connect(&addr).await?;
            let a = c
                .request(
                    "POST",
                    "/api/v1/webhooks/git",
                    &[
                        ("Content-Type", "application/json"),
                        ("X-GitHub-Event", "push"),
                        ("X-GitHub-Delivery", "bench"),
                        ("X-Hub-Signature-256", &signature),
                        ("Connection", "close"),
                    ],
                    body.as_bytes(),
                )
                .await?;
            let post = t0.elapsed();
            if a.status != 202 {
                bail!("webhook POST answered HTTP {} (202 expected)", a.status);
            }
            (t0, git_push, Some(post))
        } else {
            let git_push = repo.push()?;
            (Instant::now(), git_push, None)
        };
        let timeout = Duration::from_secs(15) + if webhook { Duration::ZERO } else { poll_interval };
        let to_write = wait_write(ctx, &service, before, t0, timeout).await?;
        let to_converged = wait_converged(ctx, &service, replicas, t0, Duration::from_secs(60)).await?;
        say!(
            "push/{name} run {}: → {replicas} replicas, first write {:.0} ms, converged {:.0} ms",
            i + 1,
            to_write.as_secs_f64() * 1000.0,
            to_converged.as_secs_f64() * 1000.0
        );
        out.push(PushRun {
            delay,
            git_push,
            post,
            to_write,
            to_converged,
        });
    }
    st.stop(Duration::from_secs(10))?;
    Ok(Mode { runs: out, setup })
}
