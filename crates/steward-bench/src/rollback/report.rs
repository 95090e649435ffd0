//! The Markdown report: the summary table, the median timelines and the per-run lines.

use std::fmt::Write as _;

use super::observe::port_stall;
use super::run::RunResult;
use super::{Bad, Driver, Opts, HTTP_POLL};
use crate::stats::{max, median, min};

pub(super) fn fmt_s(ms: f64) -> String {
    if ms.abs() < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// `min / median / max` of the values, with `(n of N runs)` when some runs had none.
fn mmm(vals: &[Option<f64>]) -> String {
    let xs: Vec<f64> = vals.iter().flatten().copied().collect();
    if xs.is_empty() {
        return "–".into();
    }
    let s = format!("{} / {} / {}", fmt_s(min(&xs)), fmt_s(median(&xs)), fmt_s(max(&xs)));
    if xs.len() < vals.len() {
        format!("{s} ({} of {} runs)", xs.len(), vals.len())
    } else {
        s
    }
}

pub(super) fn report(out: &mut String, results: &[RunResult], opts: &Opts) -> std::fmt::Result {
    let pick = |d: Driver, b: Bad| {
        let mut v: Vec<&RunResult> = results.iter().filter(|r| r.driver == d && r.bad == b).collect();
        v.sort_by_key(|r| r.run);
        v
    };
    let field = |rs: &[&RunResult], f: fn(&RunResult) -> Option<f64>| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
    let window = opts.swarm_window.as_secs();

    writeln!(
        out,
        "## Rollback: a bad image over a healthy v2 (1 replica, host-mode port)\n"
    )?;
    writeln!(
        out,
        "Runs per case: {}; cells are min / median / max. The clock starts at the change: the manifest renamed into \
         the directory `steward run` watches, or `docker service update` started. \"v2 serves again\": the first \
         `HTTP 200` with `version` v2 on the published port after it had stopped answering v2 (a probe started every \
         {} ms).\n",
        opts.runs,
        HTTP_POLL.as_millis()
    )?;
    writeln!(
        out,
        "| measurement | steward (`steward run`) | Swarm alone (`docker service update`) |"
    )?;
    writeln!(out, "|---|---:|---:|")?;

    let (sb, wb) = (pick(Driver::Steward, Bad::Broken), pick(Driver::Swarm, Bad::Broken));
    let (su, wu) = (
        pick(Driver::Steward, Bad::Unhealthy),
        pick(Driver::Swarm, Bad::Unhealthy),
    );
    let stalls = |rs: &[&RunResult]| format!("{} of {}", rs.iter().filter(|r| port_stall(&r.tasks)).count(), rs.len());
    writeln!(
        out,
        "| `:broken`: change → v2 serves again | {} | {} |",
        mmm(&field(&sb, |r| r.total_ms)),
        mmm(&field(&wb, |r| r.total_ms))
    )?;
    writeln!(
        out,
        "| `:broken`: outage (v2 stops answering → answers again) | {} | {} |",
        mmm(&field(&sb, |r| r.outage_ms)),
        mmm(&field(&wb, |r| r.outage_ms))
    )?;
    writeln!(
        out,
        "| `:broken`: runs where a replacement task stayed `pending` (\"host-mode port already in use\") | {} | {} |",
        stalls(&sb),
        stalls(&wb)
    )?;
    let split = |rs: &[&RunResult], stalled: bool| {
        let v: Vec<Option<f64>> = rs
            .iter()
            .filter(|r| port_stall(&r.tasks) == stalled)
            .map(|r| r.total_ms)
            .collect();
        if v.is_empty() {
            "–".to_string()
        } else {
            format!("{} (n={})", mmm(&v), v.len())
        }
    };
    writeln!(
        out,
        "| `:broken`: change → v2 serves again, runs without that task | {} | {} |",
        split(&sb, false),
        split(&wb, false)
    )?;
    writeln!(
        out,
        "| `:broken`: change → v2 serves again, runs with that task | {} | {} |",
        split(&sb, true),
        split(&wb, true)
    )?;
    writeln!(
        out,
        "| `:broken`: UpdateStatus seen leaving `updating` (20 ms poll) → steward's `RollingBack` event | {} | – |",
        mmm(&field(&sb, |r| r.swarm_to_rolling_back_ms))
    )?;
    let writes = |rs: &[&RunResult]| {
        rs.iter()
            .map(|r| r.rollback_writes.map_or("?".into(), |w| w.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "| `:broken`: rollback writes by steward (`RollbackIssued` events), per run | {} | – (Swarm rolls back itself) |", writes(&sb))?;
    let unhealthy_swarm = if wu.is_empty() {
        "–".to_string()
    } else if wu.iter().all(|r| r.total_ms.is_none()) {
        let states: Vec<String> = wu.iter().map(|r| format!("`{}`", r.final_state.0)).collect();
        let answers: Vec<String> = wu.iter().map(|r| format!("`{}`", r.final_answer)).collect();
        format!(
            "never: still serving unhealthy after {window} s ({} of {} runs); last answer {}; UpdateStatus {}",
            wu.iter().filter(|r| r.final_answer.contains("unhealthy")).count(),
            wu.len(),
            dedup(&answers),
            dedup(&states)
        )
    } else {
        mmm(&field(&wu, |r| r.total_ms))
    };
    writeln!(
        out,
        "| `:unhealthy`: change → v2 serves again | {} | {unhealthy_swarm} |",
        mmm(&field(&su, |r| r.total_ms))
    )?;
    writeln!(
        out,
        "| `:unhealthy`: outage (v2 stops answering → answers again) | {} | – |",
        mmm(&field(&su, |r| r.outage_ms))
    )?;
    writeln!(
        out,
        "| `:unhealthy`: `RollingBack` event (pass that sees the 3rd failing probe) → `RollbackIssued` event (the Swarm write) | {} | – |",
        mmm(&field(&su, |r| r.rolling_back_to_issued_ms))
    )?;
    writeln!(
        out,
        "| `:unhealthy`: rollback writes by steward, per run | {} | – |",
        writes(&su)
    )?;
    writeln!(out)?;

    // Median timelines.
    for (title, rs) in [
        ("steward, `:broken`", &sb),
        ("steward, `:unhealthy`", &su),
        ("Swarm alone, `:broken`", &wb),
        ("Swarm alone, `:unhealthy`", &wu),
    ] {
        if rs.is_empty() {
            continue;
        }
        writeln!(
            out,
            "Timeline, {title} (offset from the change; each line is a median over the runs where it happened, so \
             lines from different subsets of runs may appear out of order):\n"
        )?;
        let mut labels: Vec<(String, Vec<f64>)> = Vec::new();
        for r in rs.iter() {
            for (l, ms) in &r.timeline {
                match labels.iter_mut().find(|(x, _)| x == l) {
                    Some((_, v)) => v.push(*ms),
                    None => labels.push((l.clone(), vec![*ms])),
                }
            }
        }
        labels.sort_by(|a, b| median(&a.1).total_cmp(&median(&b.1)));
        for (l, v) in &labels {
            let of = if v.len() < rs.len() {
                format!(" ({} of {} runs)", v.len(), rs.len())
            } else {
                String::new()
            };
            writeln!(out, "- +{} {l}{of}", fmt_s(median(v)))?;
        }
        writeln!(out)?;
    }

    writeln!(out, "Per run:\n")?;
    for r in [sb, wb, su, wu].iter().flat_map(|v| v.iter()) {
        let who = match r.driver {
            Driver::Steward => "steward",
            Driver::Swarm => "Swarm alone",
        };
        let mut line = format!(
            "- {who}, `:{}`, run {}: v2 again after {}",
            r.bad.tag(),
            r.run,
            r.total_ms
                .map_or(format!("– (not within {})", fmt_s(r.observed_ms)), fmt_s)
        );
        if let Some(x) = r.swarm_to_rolling_back_ms {
            let _ = write!(line, "; Swarm signal → `RollingBack` {}", fmt_s(x));
        }
        if let Some(x) = r.rolling_back_to_issued_ms {
            let _ = write!(line, "; `RollingBack` → `RollbackIssued` {}", fmt_s(x));
        }
        if let Some(x) = r.cli_ms {
            let _ = write!(line, "; `docker service update -d` took {}", fmt_s(x));
        }
        let _ =
            write!(
            line,
            ". Port: {}. UpdateStatus: {} (last: `{}`, \"{}\"). Tasks, oldest first: {}. Polls: {} HTTP, {} Engine.",
            r.answers.join(" → "),
            if r.states.is_empty() { "no change".into() } else { r.states.join(" → ") },
            r.final_state.0,
            r.final_state.1,
            r.tasks.join("; "),
            r.http_polls,
            r.swarm_polls
        );
        writeln!(out, "{line}")?;
    }
    writeln!(out)
}

fn dedup(xs: &[String]) -> String {
    let mut v: Vec<&String> = Vec::new();
    for x in xs {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_mixed_runs() {
        assert_eq!(
            mmm(&[Some(1500.0), None, Some(500.0)]),
            "500 ms / 1.00 s / 1.50 s (2 of 3 runs)"
        );
        assert_eq!(mmm(&[None]), "–");
    }
}
