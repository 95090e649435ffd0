//! Checks of a Schedule document, each naming `file:line:col` and the field.
//!
//! What the types already refuse while reading (unknown keys, bad durations, names, images) is
//! reported by the reader; these are the checks that need more than one value or a parser.

use std::collections::BTreeMap;

use steward_spec::{locate, DocCtx, Pos, SpecError};

use crate::cron::{parse_time_zone, CronError, CronSchedule};
use crate::spec::{MountType, ScheduleDocument, ScheduleEntry};

pub fn validate(ctx: &DocCtx, text: &str, d: &ScheduleDocument, errors: &mut Vec<SpecError>) {
    steward_spec::validate_labels(ctx, text, &d.metadata, errors);
    steward_spec::validate_env(ctx, &d.spec.job.env, "spec.job.env", errors);
    let s = &d.spec;

    // The expression and the zone are checked apart so that both errors are reported.
    if let Err(CronError::Schedule(m) | CronError::TimeZone(m)) = CronSchedule::parse(&s.schedule, "UTC") {
        errors.push(ctx.err(locate_key(text, "schedule", 0), "spec.schedule", m));
    }
    if let Err(CronError::Schedule(m) | CronError::TimeZone(m)) = parse_time_zone(&s.time_zone) {
        errors.push(ctx.err(locate_key(text, "timeZone", 0), "spec.timeZone", m));
    }
    if s.timeout.get().is_zero() {
        errors.push(ctx.err(locate_key(text, "timeout", 0), "spec.timeout", "must be greater than 0"));
    }
    if s.starting_deadline.is_some_and(|d| d.get().is_zero()) {
        errors.push(ctx.err(
            locate_key(text, "startingDeadline", 0),
            "spec.startingDeadline",
            "must be greater than 0 (leave it out for no deadline)",
        ));
    }

    let job = &s.job;
    match (&job.image, &job.image_from) {
        (Some(_), Some(_)) => errors.push(ctx.err(
            locate_key(text, "imageFrom", 0),
            "spec.job",
            "set either image or imageFrom, not both",
        )),
        (None, None) => errors.push(ctx.err(
            locate_key(text, "job", 0),
            "spec.job",
            "one of image or imageFrom is required",
        )),
        _ => {}
    }

    let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in job.mounts.iter().enumerate() {
        // Mounts carry no span; the i-th `target` key of the spec is this mount's (no other
        // field of a Schedule is called `target`).
        let loc = locate_key(text, "target", i);
        let field = |f: &str| format!("spec.job.mounts[{i}].{f}");
        if !m.target.starts_with('/') {
            errors.push(ctx.err(
                loc,
                &field("target"),
                format!("expected an absolute path inside the container, got {:?}", m.target),
            ));
        }
        let normalized = match m.target.trim_end_matches('/') {
            "" => "/",
            t => t,
        };
        if let Some(prev) = targets.insert(normalized, i) {
            errors.push(ctx.err(
                loc,
                &field("target"),
                format!("{:?} is already mounted by spec.job.mounts[{prev}]", m.target),
            ));
        }
        match (m.type_, &m.source) {
            (MountType::Bind, None) => errors.push(ctx.err(
                loc,
                &field("source"),
                "a bind mount needs source: the absolute host path to mount",
            )),
            (MountType::Bind, Some(src)) if !src.starts_with('/') => errors.push(ctx.err(
                loc,
                &field("source"),
                format!("a bind mount needs an absolute host path, got {src:?}"),
            )),
            (MountType::Volume, None) => errors.push(ctx.err(
                loc,
                &field("source"),
                "a volume mount needs source: the name of the volume",
            )),
            (MountType::Volume, Some(src)) if !is_volume_name(src) => errors.push(ctx.err(
                loc,
                &field("source"),
                format!(
                    "invalid volume name {src:?}: expected at least 2 letters, digits, '_', '.' or '-', \
                     starting with a letter or digit"
                ),
            )),
            (MountType::Tmpfs, Some(_)) => errors.push(ctx.err(
                loc,
                &field("source"),
                "a tmpfs mount takes no source (it is a fresh memory-backed directory)",
            )),
            _ => {}
        }
    }
}

/// `job.imageFrom.service` names a Service of this desired state.
pub fn check_references(schedules: &[ScheduleEntry], services: &[&str], errors: &mut Vec<SpecError>) {
    for s in schedules {
        let Some(from) = &s.spec.job.image_from else {
            continue;
        };
        if services.contains(&from.service.as_str()) {
            continue;
        }
        let (line, column) = match from.service_at {
            Some(at) => (at.line() + s.source.line_offset, at.column()),
            None => (s.source.line, 1),
        };
        errors.push(SpecError {
            file: s.source.file.clone(),
            line,
            column,
            field: "spec.job.imageFrom.service".into(),
            message: format!("no Service named {:?} in this desired state", from.service.as_str()),
        });
    }
}

/// Docker's volume name pattern, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn is_volume_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The position of the `n`-th (0-based) line under `spec:` whose key is `key` (as `key:` or
/// `- key:`), so that a label of the same name in `metadata` is not taken for it. Falls back
/// to the first occurrence anywhere.
fn locate_key(text: &str, key: &str, n: usize) -> Option<Pos> {
    let needle = format!("{key}:");
    text.lines()
        .enumerate()
        .skip_while(|(_, l)| !l.starts_with("spec:"))
        .filter_map(|(i, l)| {
            let body = l.trim_start();
            let body = body.strip_prefix("- ").map(str::trim_start).unwrap_or(body);
            body.starts_with(&needle)
                .then(|| Pos(i as u64 + 1, (l.len() - body.len()) as u64 + 1))
        })
        .nth(n)
        .or_else(|| locate(text, &needle))
}
