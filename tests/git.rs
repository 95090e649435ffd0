//! `steward run --git`: the desired state from a git repository (a bare repository in a temp
//! dir is the remote), against the real Swarm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use steward_e2e::*;

struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").current_dir(dir).args(args).output().expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Repo {
    fn new(w: &World) -> Repo {
        let bare = w.dir.path().join("remote.git");
        let work = w.dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(
            w.dir.path(),
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { bare, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Commits `deploy/app.yaml` with `body` as Jane, pushes, returns the short sha.
    fn commit(&self, body: &str, subject: &str) -> String {
        std::fs::create_dir_all(self.work.join("deploy")).unwrap();
        std::fs::write(self.work.join("deploy/app.yaml"), body).unwrap();
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &[
                "-c",
                "user.name=Jane",
                "-c",
                "user.email=jane@example.invalid",
                "commit",
                "-q",
                "-m",
                subject,
            ],
        );
        git(&self.work, &["push", "-q", "--force", "origin", "main"]);
        git(&self.work, &["rev-parse", "--short=7", "HEAD"])
    }
}

fn manifest(w: &World, replicas: u32) -> String {
    format!(
        "{}{}",
        w.stack_doc(false),
        w.service_doc("web", "taxcollector-demo:v1", replicas, "")
    )
}

fn event_with(w: &World, reason: &str, needle: &str) -> Option<serde_json::Value> {
    w.events_json()
        .into_iter()
        .find(|e| e["reason"] == reason && e["message"].as_str().unwrap_or("").contains(needle))
}

#[test]
fn commits_are_applied_invalid_ones_refused_and_problems_reported() {
    if !require_swarm("commits_are_applied_invalid_ones_refused_and_problems_reported") {
        return;
    }
    let mut w = World::new("git");
    let web = w.svc("web");
    let repo = Repo::new(&w);
    let first = repo.commit(&manifest(&w, 1), "initial web");
    let url = repo.url();
    w.spawn_run_args(&[
        "--git",
        &url,
        "--branch",
        "main",
        "--path",
        "deploy",
        "--interval",
        "1s",
    ]);

    let ev = wait_for("first commit applied", Duration::from_secs(60), || {
        event_with(&w, "Applied", &format!("Applied {first} 'initial web' (Jane)"))
    });
    assert_eq!(ev["type"], "Normal");
    wait_for("web running", Duration::from_secs(60), || {
        (running(&web) == Some((1, 1))).then_some(())
    });

    // A commit that scales is reconciled within one poll interval.
    let scale = repo.commit(&manifest(&w, 2), "scale web to 2");
    wait_for("scaled by the commit", Duration::from_secs(15), || {
        (running(&web) == Some((2, 2))).then_some(())
    });
    assert!(event_with(&w, "Applied", &format!("Applied {scale} 'scale web to 2' (Jane)")).is_some());

    // An invalid commit is refused whole; the cluster is untouched; status shows both revisions.
    let version = version_index(&web);
    let bad = repo.commit(
        &manifest(&w, 3).replace("  replicas: 3", "  replicas: 3\n  replcas: 3"),
        "typo",
    );
    let ev = wait_for("InvalidRevision event", Duration::from_secs(15), || {
        event_with(&w, "InvalidRevision", &bad)
    });
    let msg = ev["message"].as_str().unwrap();
    assert!(msg.contains("app.yaml:") && msg.contains("replcas"), "{msg}");
    assert!(
        msg.contains(&format!("{scale} 'scale web to 2' (Jane) stays in force")),
        "{msg}"
    );
    let st = w.status_json();
    assert!(st["source"]["applied"].as_str().unwrap().starts_with(&scale), "{st}");
    assert!(st["source"]["attempted"].as_str().unwrap().starts_with(&bad), "{st}");
    // Per resource too.
    let item = st["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == web.as_str())
        .unwrap()
        .clone();
    assert!(item["appliedRevision"].as_str().unwrap().starts_with(&scale), "{item}");
    assert!(item["attemptedRevision"].as_str().unwrap().starts_with(&bad), "{item}");
    assert_eq!(version_index(&web), version, "nothing of an invalid commit is applied");
    assert_eq!(replicas(&web), Some(2));

    // The fix is applied.
    let fix = repo.commit(&manifest(&w, 3), "fix typo");
    wait_for("fixed commit applied", Duration::from_secs(15), || {
        (running(&web) == Some((3, 3))).then_some(())
    });
    assert!(event_with(&w, "Applied", &fix).is_some());

    // A force-pushed branch is followed and reported.
    git(&repo.work, &["reset", "-q", "--hard", "HEAD~1"]);
    let rewritten = repo.commit(&manifest(&w, 1), "rewrite history");
    wait_for("ForcePushed event", Duration::from_secs(15), || {
        event_with(&w, "ForcePushed", &rewritten)
    });
    wait_for("rewritten commit applied", Duration::from_secs(15), || {
        (replicas(&web) == Some(1)).then_some(())
    });

    // The manifest path deleted: reported, last good kept.
    git(&repo.work, &["rm", "-q", "-r", "deploy"]);
    std::fs::write(repo.work.join("README"), "moved").unwrap();
    git(&repo.work, &["add", "-A"]);
    git(
        &repo.work,
        &[
            "-c",
            "user.name=Jane",
            "-c",
            "user.email=jane@example.invalid",
            "commit",
            "-q",
            "-m",
            "remove deploy",
        ],
    );
    git(&repo.work, &["push", "-q", "origin", "main"]);
    wait_for("PathMissing event", Duration::from_secs(15), || {
        event_with(&w, "PathMissing", "deploy")
    });
    assert_eq!(replicas(&web), Some(1));
    assert!(w.owned_services().contains(&web), "a deleted path removes nothing");

    // Unreachable remote: reported once, last good kept, recovers.
    let moved = w.dir.path().join("remote-away.git");
    std::fs::rename(&repo.bare, &moved).unwrap();
    wait_for("SourceUnavailable event", Duration::from_secs(15), || {
        event_with(&w, "SourceUnavailable", "cannot be fetched")
    });
    docker_ok(&["service", "scale", "-d", &format!("{web}=4")]);
    wait_for(
        "drift still corrected from the last good commit",
        Duration::from_secs(10),
        || (replicas(&web) == Some(1)).then_some(()),
    );
    std::fs::rename(&moved, &repo.bare).unwrap();
    wait_for("SourceRecovered event", Duration::from_secs(15), || {
        event_with(&w, "SourceRecovered", "")
    });
}

#[test]
fn restart_on_an_invalid_head_keeps_the_last_good_commit() {
    if !require_swarm("restart_on_an_invalid_head_keeps_the_last_good_commit") {
        return;
    }
    let mut w = World::new("gitrs");
    let web = w.svc("web");
    let repo = Repo::new(&w);
    repo.commit(&manifest(&w, 2), "two replicas");
    let url = repo.url();
    let args = ["--git", url.as_str(), "--path", "deploy", "--interval", "1s"];
    let first = w.spawn_run_args(&args);
    wait_for("web 2/2", Duration::from_secs(60), || {
        (running(&web) == Some((2, 2))).then_some(())
    });
    assert!(w.stop(first).success());

    let bad = repo.commit(&manifest(&w, 3).replace("replicas: 3", "replicas: many"), "break it");
    w.spawn_run_args(&args);
    wait_for("InvalidRevision after restart", Duration::from_secs(20), || {
        event_with(&w, "InvalidRevision", &bad)
    });
    // The last good commit is still in force: drift is corrected toward it.
    docker_ok(&["service", "scale", "-d", &format!("{web}=5")]);
    wait_for("reverted to 2", Duration::from_secs(10), || {
        (replicas(&web) == Some(2)).then_some(())
    });
}

fn http_post(port: u16, path: &str, headers: &[(&str, String)], body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn push_webhook_reaches_swarm_within_two_seconds() {
    if !require_swarm("push_webhook_reaches_swarm_within_two_seconds") {
        return;
    }
    use hmac::Mac;
    let mut w = World::new("githook");
    let web = w.svc("web");
    let repo = Repo::new(&w);
    repo.commit(&manifest(&w, 1), "initial");
    let secret = "s3cret-for-webhooks";
    w.env.push(("STEWARD_WEBHOOK_SECRET".into(), secret.into()));
    let port = free_port();
    let url = repo.url();
    let listen = format!("127.0.0.1:{port}");
    // A one-hour poll: anything faster is the webhook's doing.
    w.spawn_run_args(&[
        "--git",
        &url,
        "--path",
        "deploy",
        "--interval",
        "1h",
        "--listen",
        &listen,
    ]);
    wait_for("web running", Duration::from_secs(60), || {
        (running(&web) == Some((1, 1))).then_some(())
    });
    let before = version_index(&web);

    let sha = repo.commit(&manifest(&w, 2), "scale web to 2");
    let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{sha}\"}}");
    let sign = |key: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    // A forged signature is refused and triggers nothing.
    let status = http_post(
        port,
        "/api/v1/webhooks/git",
        &[
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", sign("wrong")),
        ],
        &body,
    );
    assert_eq!(status, Some(401));

    let t0 = std::time::Instant::now();
    let status = http_post(
        port,
        "/api/v1/webhooks/git",
        &[("X-GitHub-Event", "push".into()), ("X-Hub-Signature-256", sign(secret))],
        &body,
    );
    assert_eq!(status, Some(202));
    wait_for("first Swarm write after the push", Duration::from_secs(5), || {
        (version_index(&web) > before).then_some(())
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "push to first Swarm write took {took:?}");
    eprintln!("webhook push -> first Swarm write: {took:?}");
    wait_for("scaled to 2", Duration::from_secs(30), || {
        (running(&web) == Some((2, 2))).then_some(())
    });
}
