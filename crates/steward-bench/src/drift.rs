//! Section 3 of the Swarm bench: `docker service scale` by hand under `steward run`, and the
//! time until steward restores the desired replicas.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::cli::{self, docker_timed, RunningSteward};
use crate::stack_files::write_stack;
use crate::stats::{fmt_ms, max, median, min, ms};
use crate::{svc_names, Ctx};

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("[bench] {}", format!($($arg)*)) };
}

pub(crate) async fn drift(ctx: &mut Ctx, out: &mut String) -> anyhow::Result<()> {
    ctx.need("drift", Duration::from_secs(90))?;
    let stack = format!("{}-drift", ctx.opts.prefix);
    let names = svc_names(&ctx.opts.prefix, "drift", ctx.opts.drift_services);
    let dir = ctx.work.join("drift");
    let state = ctx.work.join("drift.db");
    write_stack(&dir, &stack, &names, ctx.opts.every_field)?;
    progress!("drift: steward apply of {} services", names.len());
    cli::steward_apply(&ctx.bin, &state, &dir, "2m")?;

    let mut run = RunningSteward::start(&ctx.bin, &state, &dir, &ctx.work.join("drift-run.log"))?;
    run.wait_passes(1, Duration::from_secs(30))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let passes0 = run.passes();

    let poll = Duration::from_millis(20);
    let mut restore_ms = Vec::new();
    let mut settle_ms = Vec::new();
    let mut scale_ms = Vec::new();
    for i in 0..ctx.opts.drift_runs {
        let svc = &names[i % names.len()];
        let (scale_dt, _) = docker_timed(&["service", "scale", "--detach", &format!("{svc}=3")])?;
        let t0 = Instant::now();
        scale_ms.push(ms(scale_dt));
        // Spec back to the desired 1 replica.
        loop {
            if ctx.engine.spec_replicas(svc).await? == 1 {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("{svc}: replicas not restored within 30 s");
            }
            tokio::time::sleep(poll).await;
        }
        restore_ms.push(ms(t0.elapsed()));
        // Swarm reporting 1/1 running again.
        let filters = serde_json::json!({ "name": [svc] });
        loop {
            let counts = ctx.engine.task_counts(&filters).await?;
            if counts.iter().any(|(n, r, d)| n == svc && *r == 1 && *d == 1) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("{svc}: not back to 1/1 within 30 s");
            }
            tokio::time::sleep(poll).await;
        }
        settle_ms.push(ms(t0.elapsed()));
        progress!(
            "drift {}/{}: {svc} restored after {}, 1/1 after {}",
            i + 1,
            ctx.opts.drift_runs,
            fmt_ms(*restore_ms.last().unwrap()),
            fmt_ms(*settle_ms.last().unwrap())
        );
        // Let the surplus tasks finish shutting down before the next round.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let passes = run.passes() - passes0;
    run.stop(Duration::from_secs(10))?;
    let corrected = cli::steward_event_count(&ctx.bin, &state, "DriftCorrected")?;

    progress!("removing stack {stack}");
    cli::remove_services(&names)?;
    cli::wait_containers_gone(&format!("{}-drift-", ctx.opts.prefix), Duration::from_secs(60))?;

    writeln!(
        out,
        "## Drift: `docker service scale <svc>=3` under `steward run` (desired 1)\n"
    )?;
    writeln!(
        out,
        "{} services, {} rounds (round-robin over the services). Clock starts when `docker service scale --detach` returns; \
         the Engine API is polled every {} ms (bench's own client, not steward's).\n",
        names.len(),
        ctx.opts.drift_runs,
        poll.as_millis()
    )?;
    writeln!(out, "| measurement | N | min | median | max |")?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for (what, xs) in [
        (
            "scale returned → `Spec.Mode.Replicated.Replicas` back to 1",
            &restore_ms,
        ),
        ("scale returned → service reports 1/1 running tasks", &settle_ms),
        ("`docker service scale --detach` itself", &scale_ms),
    ] {
        writeln!(
            out,
            "| {what} | {} | {} | {} | {} |",
            xs.len(),
            fmt_ms(min(xs)),
            fmt_ms(median(xs)),
            fmt_ms(max(xs))
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "steward recorded {corrected} `DriftCorrected` occurrence(s) (`steward events -o json`, summed `count`) and ran {passes} passes during the rounds.\n"
    )?;
    if corrected != ctx.opts.drift_runs as u64 {
        writeln!(
            out,
            "Note: {} rounds but {corrected} corrections recorded.\n",
            ctx.opts.drift_runs
        )?;
    }
    Ok(())
}
