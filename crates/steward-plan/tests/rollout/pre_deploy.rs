//! Pre-deploy jobs: ordering, failures, timeouts, restarts and job names.

use super::*;

// ---------------------------------------------------------------------------------------------
// Pre-deploy jobs
// ---------------------------------------------------------------------------------------------

#[test]
fn pre_deploy_jobs_run_one_at_a_time_then_the_update_starts() {
    let old = desired("web")
        .image("app:v1")
        .secret_env("DB_PASSWORD", "hunter2")
        .build();
    let mut migrate = job("migrate", 300);
    migrate.command = Some(vec!["python".into(), "manage.py".into(), "migrate".into()]);
    let mut collect = job("collectstatic", 300);
    collect.args = Some(vec!["--noinput".into()]);
    let new = with_jobs(
        desired("web")
            .image("app:v2")
            .env("MODE", "prod")
            .secret_env("DB_PASSWORD", "hunter2")
            .build(),
        vec![migrate, collect],
    );
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert_eq!(r.phase, Phase::PreDeploy);
    let names: Vec<&str> = r.jobs.iter().map(|j| j.swarm_name.as_str()).collect();
    let (m, c) = (
        job_swarm_name("web", "migrate", &new.spec_hash),
        job_swarm_name("web", "collectstatic", &new.spec_hash),
    );
    assert_eq!(names, [m.as_str(), c.as_str()]);
    assert_eq!(m, format!("web-migrate-{}", &new.spec_hash[..8]));
    assert!(r.jobs.iter().all(|j| j.started_ms.is_none() && !j.done));
    let running_old = || vec![converged(&old)];

    // Every pass until the jobs are done, the old spec is what the planner keeps.
    let keeps_old = |r: &Rollout| {
        assert_eq!(phase_of(r, "web"), SvcPhase::Pending);
        let eff = effective(&d, Some(r), &swarm(running_old()));
        assert_eq!(target_hash(&eff, "web"), Some(old.spec_hash.clone()));
        assert!(eff.gates.is_empty());
        assert!(plan_for(&d, r, &running_old()).actions.is_empty());
    };
    keeps_old(&r);

    // Pass 1: the first job starts with the new image and environment.
    let out = step(&mut r, &d, &at(T0, running_old()));
    assert_eq!(reasons(&out), ["PreDeployStarted"]);
    assert_eq!(out.start_jobs.len(), 1);
    let s = &out.start_jobs[0];
    assert_eq!(
        (
            s.swarm_name.as_str(),
            s.service.as_str(),
            s.job.as_str(),
            s.image.as_str()
        ),
        (m.as_str(), "web", "migrate", "app:v2")
    );
    assert_eq!(s.command, ["python", "manage.py", "migrate"]);
    assert!(s.args.is_empty());
    assert_eq!(s.env.get("MODE").map(String::as_str), Some("prod"));
    assert_eq!(
        s.env.get("DB_PASSWORD").map(String::as_str),
        Some("hunter2"),
        "jobs get the real secret"
    );
    assert_eq!(r.jobs[0].started_ms, Some(T0));
    assert_eq!(r.phase, Phase::PreDeploy);
    keeps_old(&r);

    // Running, then briefly not visible: never started twice.
    for (t, j) in [(T0 + SEC, JobObs::Running), (T0 + 2 * SEC, JobObs::Missing)] {
        let out = step(&mut r, &d, &at(t, running_old()).job(&m, j));
        assert!(out.events.is_empty() && out.start_jobs.is_empty() && out.remove_jobs.is_empty());
        keeps_old(&r);
    }

    // Succeeds: removed; the next job waits for the next pass.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 3 * SEC, running_old()).job(
            &m,
            JobObs::Succeeded {
                logs: "Applied 3 migrations".into(),
            },
        ),
    );
    assert_eq!(reasons(&out), ["PreDeploySucceeded"]);
    assert!(event(&out, "PreDeploySucceeded")
        .message
        .contains("Applied 3 migrations"));
    assert_eq!(out.remove_jobs, std::slice::from_ref(&m));
    assert!(out.start_jobs.is_empty());
    assert!(r.jobs[0].done && r.jobs[1].started_ms.is_none());
    assert_eq!(r.phase, Phase::PreDeploy);
    keeps_old(&r);

    let done_m = || JobObs::Succeeded { logs: String::new() };
    let out = step(&mut r, &d, &at(T0 + 4 * SEC, running_old()).job(&m, done_m()));
    assert_eq!(reasons(&out), ["PreDeployStarted"]);
    assert_eq!(out.start_jobs.len(), 1);
    assert_eq!(
        (out.start_jobs[0].swarm_name.as_str(), out.start_jobs[0].job.as_str()),
        (c.as_str(), "collectstatic")
    );
    assert!(out.start_jobs[0].command.is_empty());
    assert_eq!(out.start_jobs[0].args, ["--noinput"]);
    keeps_old(&r);

    // Last job done: the same pass moves on to updating the service.
    let out = step(
        &mut r,
        &d,
        &at(T0 + 5 * SEC, running_old())
            .job(&m, done_m())
            .job(&c, JobObs::Succeeded { logs: String::new() }),
    );
    assert_eq!(
        reasons(&out),
        ["PreDeploySucceeded", "PreDeployComplete", "RolloutUpdating"]
    );
    assert_eq!(out.remove_jobs, std::slice::from_ref(&c));
    assert!(event(&out, "PreDeployComplete")
        .message
        .contains("web/migrate, web/collectstatic"));
    assert_eq!((r.phase, phase_of(&r, "web")), (Phase::Updating, SvcPhase::Updating));
    assert_eq!(r.phase_started_ms, T0 + 5 * SEC);
    assert_eq!(effective_hash(&d, &r, &running_old(), "web"), new.spec_hash);

    // No job is started again afterwards, whatever Swarm shows.
    let out = step(&mut r, &d, &at(T0 + 6 * SEC, vec![rolling(&new, T0 + 6 * SEC)]));
    assert!(out.start_jobs.is_empty() && out.remove_jobs.is_empty() && out.events.is_empty());
    let out = step(&mut r, &d, &at(T0 + 9 * SEC, vec![converged(&new)]));
    assert_eq!(reasons(&out), ["RolloutVerified", "RolloutComplete"]);
    assert!(out.start_jobs.is_empty());
}

#[test]
fn pre_deploy_failure_rolls_back_without_any_write() {
    let old = v1();
    let new = with_jobs(v2(), vec![job("migrate", 300)]);
    let cache = desired("cache").image("redis:7").build();
    let d = gen2(vec![new.clone(), cache.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    assert_eq!(r.phase, Phase::PreDeploy);
    assert!(r.service("cache").unwrap().from.is_none());
    let m = r.jobs[0].swarm_name.clone();
    let observed = || vec![converged(&old)];

    let no_write = |r: &Rollout| {
        let eff = effective(&d, Some(r), &swarm(observed()));
        assert_eq!(target_hash(&eff, "web"), Some(old.spec_hash.clone()));
        let p = plan(&eff, &known(observed()));
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
    };

    // While the job runs: web keeps v1, the new cache waits for the jobs.
    let out = step(&mut r, &d, &at(T0, observed()));
    assert_eq!(out.start_jobs.len(), 1);
    assert!(r.services.iter().all(|s| s.phase == SvcPhase::Pending));
    let eff = effective(&d, Some(&r), &swarm(observed()));
    assert_eq!(
        eff.gates.get("cache"),
        Some(&Hold::WaitingOn {
            what: "pre-deploy jobs (migrate)".into()
        })
    );
    no_write(&r);
    let out = step(&mut r, &d, &at(T0 + SEC, observed()).job(&m, JobObs::Running));
    assert!(out.events.is_empty());
    assert!(r.services.iter().all(|s| s.phase == SvcPhase::Pending));
    no_write(&r);

    let out = step(
        &mut r,
        &d,
        &at(T0 + 2 * SEC, observed()).job(
            &m,
            JobObs::Failed {
                reason: "exit code 1".into(),
                logs: "relation \"orders\" does not exist".into(),
            },
        ),
    );
    assert_eq!(reasons(&out), ["PreDeployFailed", "RolledBack"]);
    assert!(out.start_jobs.is_empty());
    assert_eq!(out.remove_jobs, std::slice::from_ref(&m));
    let failed = event(&out, "PreDeployFailed");
    assert!(failed.warning() && failed.object == "Service/web");
    assert!(
        failed.message.contains("exit code 1") && failed.message.contains("relation \"orders\" does not exist"),
        "{}",
        failed.message
    );
    assert!(event(&out, "RolledBack").message.contains("no service was changed"));
    let mut fin = out.finished.clone();
    fin.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fin,
        [
            finished("cache", &cache.spec_hash, Outcome::RolledBack),
            finished("web", &new.spec_hash, Outcome::RolledBack)
        ]
    );
    assert_eq!(r.phase, Phase::RolledBack);
    assert!(r.services.iter().all(|s| s.phase == SvcPhase::RolledBack));
    assert_eq!(
        r.cause.as_deref(),
        Some("pre-deploy job web/migrate failed: exit code 1")
    );

    // Afterwards: web stays on v1, the cache is never created.
    no_write(&r);
    let eff = effective(&d, Some(&r), &swarm(observed()));
    assert!(target_hash(&eff, "cache").is_none());
    assert_eq!(eff.remove, BTreeSet::from(["cache".to_string()]));
    let out = step(&mut r, &d, &at(T0 + 60 * SEC, observed()).job(&m, JobObs::Missing));
    assert!(out.events.is_empty() && out.start_jobs.is_empty() && out.finished.is_empty());
}

#[test]
fn job_missing_after_start_is_not_restarted_and_fails_after_its_timeout() {
    let old = v1();
    let new = with_jobs(v2(), vec![job("migrate", 60)]);
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&old]), T0).unwrap();
    let out = step(&mut r, &d, &at(T0, vec![converged(&old)]));
    assert_eq!(out.start_jobs.len(), 1);
    for t in [T0 + SEC, T0 + 30 * SEC, T0 + 60 * SEC] {
        let out = step(&mut r, &d, &at(t, vec![converged(&old)]));
        assert!(
            out.start_jobs.is_empty() && out.events.is_empty(),
            "at +{}ms: {:?}",
            t - T0,
            out.events
        );
        assert_eq!(r.phase, Phase::PreDeploy);
    }
    let out = step(&mut r, &d, &at(T0 + 60 * SEC + 1, vec![converged(&old)]));
    assert_eq!(reasons(&out), ["PreDeployFailed", "RolledBack"]);
    assert!(out.start_jobs.is_empty());
    assert!(event(&out, "PreDeployFailed")
        .message
        .contains("job service disappeared"));
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(phase_of(&r, "web"), SvcPhase::RolledBack);
    assert_eq!(effective_hash(&d, &r, &[converged(&old)], "web"), old.spec_hash);
}

#[test]
fn running_job_times_out() {
    let new = with_jobs(v2(), vec![job("migrate", 60)]);
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0).unwrap();
    step(&mut r, &d, &at(T0, vec![converged(&v1())]));
    let m = r.jobs[0].swarm_name.clone();
    assert!(step(&mut r, &d, &at(T0 + 60 * SEC, vec![]).job(&m, JobObs::Running))
        .events
        .is_empty());
    let out = step(&mut r, &d, &at(T0 + 61 * SEC, vec![]).job(&m, JobObs::Running));
    assert_eq!(reasons(&out), ["PreDeployFailed", "RolledBack"]);
    assert_eq!(out.remove_jobs, [m]);
    assert!(event(&out, "PreDeployFailed").message.contains("timed out after 60s"));
}

#[test]
fn a_started_job_survives_a_restart_and_is_not_started_again() {
    let new = with_jobs(v2(), vec![job("migrate", 300)]);
    let d = gen2(vec![new.clone()]);
    let mut r = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0).unwrap();
    assert_eq!(step(&mut r, &d, &at(T0, vec![converged(&v1())])).start_jobs.len(), 1);
    // The controller persists, crashes, and reloads before Swarm lists the job.
    let text = serde_json::to_string(&r).unwrap();
    let mut reloaded: Rollout = serde_json::from_str(&text).unwrap();
    assert_eq!(reloaded, r);
    let out = step(&mut reloaded, &d, &at(T0 + 5 * SEC, vec![converged(&v1())]));
    assert!(out.start_jobs.is_empty() && out.events.is_empty());
    // And a fresh `begin` for the same revision names the job the same: Swarm's copy is found.
    let again = begin(&d, DESIRED_HASH, &last_good(&[&v1()]), T0 + 9 * SEC).unwrap();
    assert_eq!(again.jobs[0].swarm_name, r.jobs[0].swarm_name);
}

#[test]
fn job_names_are_deterministic_and_fit_swarm() {
    let h = "0123456789abcdef";
    assert_eq!(job_swarm_name("web", "migrate", h), "web-migrate-01234567");
    assert_eq!(job_swarm_name("web", "migrate", h), job_swarm_name("web", "migrate", h));
    assert_ne!(
        job_swarm_name("web", "migrate", h),
        job_swarm_name("web", "migrate", "fedcba9876543210")
    );
    let long = "s".repeat(63);
    let n = job_swarm_name(&long, "migrate", h);
    assert_eq!(n.len(), 63);
    assert!(n.ends_with("-migrate-01234567"), "{n}");
}
