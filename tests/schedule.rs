//! Schedules on the real Swarm: runs start on their instant, outcomes (exit codes, timeouts) are
//! recorded once, `steward trigger` runs at once, and neither a SIGKILL of the controller nor two
//! controllers on one store ever run an instant twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use steward_e2e::*;

fn schedule_doc(name: &str, schedule: &str, extra: &str, command: &str) -> String {
    format!(
        "---\napiVersion: steward.io/v1alpha1\nkind: Schedule\nmetadata:\n  name: {name}\nspec:\n  schedule: \"{schedule}\"\n{extra}  job:\n    image: taxcollector-demo:v1\n    command: {command}\n"
    )
}

fn runs(w: &World, schedule: &str) -> Vec<serde_json::Value> {
    let o = w.steward(&["runs", schedule, "-o", "json", "--limit", "1000"]);
    assert!(o.status.success(), "runs failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("runs JSON: an array of runs")
}

fn time(v: &serde_json::Value) -> f64 {
    let s = v.as_str().unwrap_or_else(|| panic!("a time, got {v}"));
    let o = std::process::Command::new("date")
        .args(["-u", "-d", s, "+%s.%N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn with_outcome<'a>(runs: &'a [serde_json::Value], outcome: &str) -> Vec<&'a serde_json::Value> {
    runs.iter().filter(|r| r["outcome"] == outcome).collect()
}

fn job_services(schedule: &str) -> Vec<String> {
    docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("label=steward.io/schedule={schedule}"),
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .filter(|l| !l.is_empty())
    .map(String::from)
    .collect()
}

#[test]
fn every_five_seconds_runs_on_its_instants_and_records_each_outcome_once() {
    if !require_swarm("every_five_seconds_runs_on_its_instants_and_records_each_outcome_once") {
        return;
    }
    let mut w = World::new("sched");
    let name = w.svc("tick");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            schedule_doc(
                &name,
                "*/5 * * * * *",
                "  timeout: 30s\n",
                "[/demo-app, task, tick, --sleep, \"0.5\"]"
            )
        ),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    w.spawn_run(&["--listen", &listen]);
    let done = wait_for("three succeeded runs", Duration::from_secs(60), || {
        let r = runs(&w, &name);
        (with_outcome(&r, "Succeeded").len() >= 3).then_some(r)
    });
    let ok = with_outcome(&done, "Succeeded");
    let mut instants = std::collections::BTreeSet::new();
    for r in &ok {
        assert_eq!(r["trigger"], "Schedule", "{r}");
        assert_eq!(r["exitCode"], 0, "{r}");
        let scheduled = time(&r["scheduledAt"]);
        assert_eq!(scheduled % 5.0, 0.0, "an instant of */5 seconds: {r}");
        let late = time(&r["startedAt"]) - scheduled;
        eprintln!("run {} started {:.3}s after its instant", r["id"], late);
        assert!(
            (0.0..1.0).contains(&late),
            "started within 1 s of its instant: {late}s {r}"
        );
        assert!(time(&r["finishedAt"]) >= time(&r["startedAt"]));
        assert!(instants.insert(r["scheduledAt"].to_string()), "one run per instant");
    }
    // The kept output and the events.
    let o = w.steward(&["describe", &format!("Schedule/{name}")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("tick: done"),
        "describe shows the last run's output:\n{text}"
    );
    assert!(text.contains("Next run:"), "{text}");
    let evs = w.events_json();
    let succeeded = evs.iter().filter(|e| e["reason"] == "RunSucceeded").count();
    assert!(succeeded >= 1, "RunSucceeded events: {evs:?}");
    // Ready, with the next run in the status, and finished jobs removed from Swarm.
    assert_eq!(
        w.condition("Schedule", &name, "Ready").map(|c| c.0).as_deref(),
        Some("True")
    );
    let status = w.status_json();
    let item = status["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "Schedule" && i["name"] == name)
        .cloned()
        .unwrap();
    let next = time(&item["details"]["nextScheduleTime"]);
    assert_eq!(next % 5.0, 0.0, "{item}");
    wait_for("finished jobs removed", Duration::from_secs(10), || {
        let ok_jobs: Vec<String> = ok.iter().filter_map(|r| r["job"].as_str().map(String::from)).collect();
        let left = job_services(&name);
        (!left.iter().any(|j| ok_jobs.contains(j))).then_some(())
    });
    // Metrics and the API say the same.
    let (code, metrics) = http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    let counted = metrics
        .lines()
        .find(|l| {
            l.starts_with("steward_schedule_runs_total{")
                && l.contains(&format!("schedule=\"{name}\""))
                && l.contains("outcome=\"Succeeded\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("steward_schedule_runs_total for {name}:\n{metrics}"));
    assert!(counted >= 3.0, "{counted}");
    for gauge in [
        "steward_schedule_last_success_timestamp_seconds",
        "steward_schedule_next_run_timestamp_seconds",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(gauge) && l.contains(&format!("schedule=\"{name}\""))),
            "{gauge} for {name}:\n{metrics}"
        );
    }
    let (code, body) = http_get(port, &format!("/api/v1/runs?schedule={name}&limit=2")).expect("/api/v1/runs answers");
    assert_eq!(code, 200, "{body}");
    let api_runs: Vec<serde_json::Value> = serde_json::from_str(&body).expect("runs JSON");
    assert_eq!(api_runs.len(), 2);
    assert!(
        api_runs[0]["scheduledAt"].as_str() > api_runs[1]["scheduledAt"].as_str(),
        "newest first"
    );
    assert!(api_runs[0].get("logs").is_none(), "listings carry no logs");
    // `steward status` lists the schedule with its next run.
    let table = stdout(&w.steward(&["status"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&name) && l.contains("*/5 * * * * * (UTC)")),
        "{table}"
    );
    assert!(w.stop(0).success());
}

#[test]
fn failing_and_hanging_jobs_and_manual_triggers() {
    if !require_swarm("failing_and_hanging_jobs_and_manual_triggers") {
        return;
    }
    let w = World::new("trig");
    let fail = w.svc("fail");
    let slow = w.svc("slow");
    let ok = w.svc("ok");
    // Never due on its own (1 January, 00:00): only manual runs.
    let yearly = "0 0 1 1 *";
    w.write(
        "app.yaml",
        &format!(
            "{}{}{}{}",
            w.stack_doc(false),
            schedule_doc(&fail, yearly, "", "[/demo-app, task, broken, --exit, \"3\"]"),
            schedule_doc(
                &slow,
                yearly,
                "  timeout: 3s\n",
                "[/demo-app, task, hang, --sleep, \"60\"]"
            ),
            schedule_doc(&ok, yearly, "", "[/demo-app, task, report, --sleep, \"4\"]"),
        ),
    );
    let m = w.manifests();
    let m = m.to_str().unwrap();

    // `steward plan` says what the schedules will do next; there is nothing to apply ahead.
    let o = w.steward(&["plan", m]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("Schedule/{ok}  0 0 1 1 * (UTC): next run ")),
        "{}",
        stdout(&o)
    );

    // No controller runs: the store arbitrates, the CLI drives the run itself.
    let t0 = Instant::now();
    let o = w.steward(&["trigger", &ok, "--path", m]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Succeeded"), "{}", stdout(&o));
    let r = runs(&w, &ok);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["trigger"], "Manual");
    let started_after = time(&r[0]["startedAt"]) - time(&r[0]["scheduledAt"]);
    assert!(started_after < 2.0, "a manual run starts at once: {started_after}s");
    assert!(t0.elapsed() < Duration::from_secs(60));

    let o = w.steward(&["trigger", &fail, "--path", m]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let r = runs(&w, &fail);
    assert_eq!(r[0]["outcome"], "Failed", "{r:?}");
    assert_eq!(r[0]["exitCode"], 3, "{r:?}");
    let ev = w
        .events_json()
        .into_iter()
        .find(|e| e["reason"] == "RunFailed" && e["object"] == format!("Schedule/{fail}"))
        .expect("a RunFailed event");
    assert_eq!(ev["type"], "Warning");
    assert!(ev["message"].as_str().unwrap().contains("exit code 3"), "{ev}");

    let t0 = Instant::now();
    let o = w.steward(&["trigger", &slow, "--path", m]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "stopped at its timeout, not after 60 s"
    );
    let r = runs(&w, &slow);
    assert_eq!(r[0]["outcome"], "TimedOut", "{r:?}");
    wait_for("the timed-out job stopped", Duration::from_secs(10), || {
        job_services(&slow).is_empty().then_some(())
    });
    assert!(w
        .events_json()
        .iter()
        .any(|e| e["reason"] == "RunTimedOut" && e["type"] == "Warning"));

    // Forbid: a second trigger while the first runs is Skipped.
    let mut first = w.cmd().args(["trigger", &ok, "--path", m]).spawn().unwrap();
    wait_for("the first manual run active", Duration::from_secs(20), || {
        runs(&w, &ok).iter().any(|r| r["outcome"] == "Running").then_some(())
    });
    let o = w.steward(&["trigger", &ok, "--path", m]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("skipped"), "{}", stdout(&o));
    assert!(first.wait().unwrap().success());
    let r = runs(&w, &ok);
    let counts: BTreeMap<String, usize> = r.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["outcome"].as_str().unwrap().to_string()).or_default() += 1;
        m
    });
    assert_eq!(counts.get("Succeeded"), Some(&2), "{r:?}");
    assert_eq!(counts.get("Skipped"), Some(&1), "{r:?}");
}

#[test]
fn sigkill_during_a_run_records_its_outcome_once_and_runs_no_instant_twice() {
    if !require_swarm("sigkill_during_a_run_records_its_outcome_once_and_runs_no_instant_twice") {
        return;
    }
    let mut w = World::new("kill");
    let name = w.svc("long");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            schedule_doc(
                &name,
                "*/10 * * * * *",
                "  timeout: 60s\n",
                "[/demo-app, task, long, --sleep, \"6\"]"
            )
        ),
    );
    let a = w.spawn_run(&[]);
    let running = wait_for("a run in progress", Duration::from_secs(40), || {
        runs(&w, &name).into_iter().find(|r| r["outcome"] == "Running")
    });
    w.child(a).kill().unwrap();
    w.child(a).wait().unwrap();
    // The job goes on without a controller; its outcome is read back after the restart.
    let job = running["job"].as_str().unwrap().to_string();
    w.spawn_run(&[]);
    let finished = wait_for("the interrupted run recorded", Duration::from_secs(60), || {
        runs(&w, &name)
            .into_iter()
            .find(|r| r["id"] == running["id"] && r["outcome"] != "Running")
    });
    assert_eq!(finished["outcome"], "Succeeded", "{finished}");
    assert_eq!(finished["job"], job.as_str());
    wait_for("two more instants after the restart", Duration::from_secs(60), || {
        let r = runs(&w, &name);
        (with_outcome(&r, "Succeeded").len() >= 3).then_some(())
    });
    let r = runs(&w, &name);
    let mut seen = std::collections::BTreeSet::new();
    for run in &r {
        assert!(
            seen.insert(run["scheduledAt"].to_string()),
            "an instant ran twice: {r:?}"
        );
    }
    assert!(r.iter().filter(|x| x["trigger"] == "CatchUp").count() <= 1, "{r:?}");
    let succeeded_events: Vec<_> = w
        .events_json()
        .into_iter()
        .filter(|e| e["reason"] == "RunSucceeded" && e["message"].as_str().unwrap().contains(&job_instant(&job)))
        .collect();
    assert_eq!(succeeded_events.len(), 1, "{succeeded_events:?}");
    assert_eq!(succeeded_events[0]["count"], 1);
}

/// The instant a job name carries (`<schedule>-<unix seconds>`), as RFC 3339.
fn job_instant(job: &str) -> String {
    let secs = job.rsplit('-').next().unwrap();
    let o = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn two_controllers_on_one_postgres_store_run_each_instant_once_across_a_failover() {
    if !require_swarm("two_controllers_on_one_postgres_store_run_each_instant_once_across_a_failover") {
        return;
    }
    let Some(db) = PgDb::create("two_controllers_on_one_postgres_store_run_each_instant_once_across_a_failover") else {
        return;
    };
    let mut w = World::new("schedha");
    w.env.push(("STEWARD_STORE".into(), db.url.clone()));
    let name = w.svc("tick");
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            schedule_doc(&name, "*/3 * * * * *", "", "[/demo-app, task, tick]")
        ),
    );
    let a = w.spawn_run(&[]);
    wait_for("a leader", Duration::from_secs(30), || {
        w.events_json()
            .iter()
            .any(|e| e["reason"] == "LeadershipAcquired")
            .then_some(())
    });
    let b = w.spawn_run(&[]);
    wait_for("three succeeded runs", Duration::from_secs(60), || {
        let r = runs(&w, &name);
        (with_outcome(&r, "Succeeded").len() >= 3).then_some(())
    });
    // The leader dies mid-stream; the standby takes over and goes on with the next instants.
    w.child(a).kill().unwrap();
    w.child(a).wait().unwrap();
    let pid_b = w.child(b).id();
    wait_for("the standby leads", Duration::from_secs(20), || {
        w.events_json()
            .iter()
            .any(|e| {
                e["reason"] == "LeadershipAcquired"
                    && e["message"].as_str().unwrap().contains(&format!(":{pid_b} leads"))
            })
            .then_some(())
    });
    let before = with_outcome(&runs(&w, &name), "Succeeded").len();
    let r = wait_for(
        "three more succeeded runs under the new leader",
        Duration::from_secs(60),
        || {
            let r = runs(&w, &name);
            (with_outcome(&r, "Succeeded").len() >= before + 3).then_some(r)
        },
    );
    let mut seen = std::collections::BTreeSet::new();
    for run in &r {
        assert!(
            seen.insert(run["scheduledAt"].to_string()),
            "an instant ran twice: {r:?}"
        );
    }
    let started: Vec<_> = w
        .events_json()
        .into_iter()
        .filter(|e| e["reason"] == "RunStarted" && e["object"] == format!("Schedule/{name}"))
        .collect();
    assert!(
        started.iter().all(|e| e["count"] == 1),
        "every run started once: {started:?}"
    );
    let leaders = w
        .events_json()
        .into_iter()
        .filter(|e| e["reason"] == "LeadershipAcquired")
        .count();
    assert_eq!(leaders, 2, "the first leader, then the one that took over");
    // No run is left without an outcome by the failover: at most the newest is still active.
    let active = r
        .iter()
        .filter(|x| x["outcome"] == "Running" || x["outcome"] == "Pending")
        .count();
    assert!(active <= 1, "{r:?}");
}
