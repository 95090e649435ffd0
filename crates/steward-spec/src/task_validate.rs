//! Checks of a `Service`'s task-level fields (networks, mounts, secrets, ...), each error at the
//! field's `file:line:col`.

use std::collections::BTreeMap;

use crate::document::*;
use crate::service::file_ref_problem;
use crate::task::*;
use crate::types::*;

/// Swarm's name rule for secrets and configs (and what a file name under /run/secrets can be).
fn object_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The names `ulimit` knows (`man 2 setrlimit`, as Docker spells them).
const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

pub fn validate_task(ctx: &DocCtx, text: &str, spec: &ServiceSpec, errors: &mut Vec<SpecError>) {
    let mut err = |needle: &str, field: String, message: String| {
        errors.push(ctx.err(locate(text, needle), &field, message));
    };
    // Networks.
    let mut seen = BTreeMap::new();
    for (i, n) in spec.networks.iter().enumerate() {
        let name = n.name();
        if name.is_empty() {
            err(
                "networks:",
                format!("spec.networks[{i}]"),
                "network name is empty".into(),
            );
        } else if let Some(prev) = seen.insert(name, i) {
            err(
                name,
                format!("spec.networks[{i}]"),
                format!("network {name:?} is listed twice (also spec.networks[{prev}])"),
            );
        }
        if name == "host" && !n.aliases().is_empty() {
            err(
                name,
                format!("spec.networks[{i}].aliases"),
                "the host network has no aliases".into(),
            );
        }
    }
    if seen.contains_key("host") && spec.networks.len() > 1 {
        err(
            "networks:",
            "spec.networks".into(),
            "`host` cannot be combined with other networks".into(),
        );
    }
    if seen.contains_key("host") && spec.ports.iter().any(|p| p.mode == PublishMode::Ingress) {
        err(
            "networks:",
            "spec.networks".into(),
            "a service on the host network publishes no ingress ports: use ports[].mode: host".into(),
        );
    }
    // Mounts.
    let mut targets = BTreeMap::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let f = |s: &str| format!("spec.mounts[{i}]{s}");
        let needle = format!("target: {}", m.target);
        if !m.target.starts_with('/') {
            err(
                &needle,
                f(".target"),
                format!("{:?} must be an absolute path in the container", m.target),
            );
        }
        if let Some(prev) = targets.insert(m.target.as_str(), i) {
            err(
                &needle,
                f(".target"),
                format!("{:?} is already mounted by spec.mounts[{prev}]", m.target),
            );
        }
        match (m.kind, &m.source) {
            (MountType::Bind, Some(s)) if !s.starts_with('/') => err(
                &needle,
                f(".source"),
                format!("a bind mount's source must be an absolute node path, got {s:?}"),
            ),
            (MountType::Bind, None) => err(&needle, f(".source"), "a bind mount needs a source path".into()),
            (MountType::Volume, None) => err(
                &needle,
                f(".source"),
                "an anonymous volume loses its data on every task replacement: name it".into(),
            ),
            (MountType::Volume, Some(s)) if s.contains('/') => err(
                &needle,
                f(".source"),
                format!("{s:?} is a path: use type: bind for node paths"),
            ),
            (MountType::Tmpfs, Some(_)) => err(&needle, f(".source"), "a tmpfs mount has no source".into()),
            _ => {}
        }
        if m.no_copy && m.kind != MountType::Volume {
            err(&needle, f(".noCopy"), "noCopy applies to volumes only".into());
        }
        if m.size.is_some() && m.kind != MountType::Tmpfs {
            err(&needle, f(".size"), "size applies to tmpfs only".into());
        }
    }
    if spec.mode == ServiceMode::Global && spec.placement.max_replicas_per_node.is_some() {
        err(
            "maxReplicasPerNode",
            "spec.placement.maxReplicasPerNode".into(),
            "a global service runs one task per node already".into(),
        );
    }
    for (i, c) in spec.placement.constraints.iter().enumerate() {
        if !["==", "!="].iter().any(|op| c.contains(op)) {
            err(
                c,
                format!("spec.placement.constraints[{i}]"),
                format!("{c:?}: expected `attribute == value` or `attribute != value`"),
            );
        }
    }
    if let Some(sig) = &spec.stop_signal {
        let ok = (sig.starts_with("SIG")
            && sig.len() > 3
            && sig[3..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '+' || c == '-'))
            || sig.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n));
        if !ok {
            err(
                "stopSignal",
                "spec.stopSignal".into(),
                format!("{sig:?}: expected a signal name such as SIGTERM, or its number"),
            );
        }
    }
    if let Some(h) = &spec.healthcheck {
        if let HealthcheckTest::Exec(v) = &h.test {
            let ok = match v.first().map(String::as_str) {
                Some("NONE") => v.len() == 1,
                Some("CMD") | Some("CMD-SHELL") => v.len() >= 2,
                _ => false,
            };
            if !ok {
                err(
                    "test:",
                    "spec.healthcheck.test".into(),
                    "expected [\"CMD\", program, args...], [\"CMD-SHELL\", command], [\"NONE\"] or a shell string"
                        .into(),
                );
            }
        }
        if h.retries == Some(0) {
            err(
                "retries",
                "spec.healthcheck.retries".into(),
                "must be at least 1".into(),
            );
        }
    }
    if let Some(w) = &spec.working_dir {
        if !w.starts_with('/') {
            err(
                "workingDir",
                "spec.workingDir".into(),
                format!("{w:?} must be an absolute path"),
            );
        }
    }
    for (name, u) in &spec.ulimits {
        if !ULIMITS.contains(&name.as_str()) {
            err(
                name,
                format!("spec.ulimits.{name}"),
                format!("unknown limit {name:?}; known: {}", ULIMITS.join(", ")),
            );
        }
        let (soft, hard) = u.soft_hard();
        if soft < 0 || hard < 0 || soft > hard {
            err(
                name,
                format!("spec.ulimits.{name}"),
                format!("soft {soft} and hard {hard}: need 0 <= soft <= hard"),
            );
        }
    }
    for (field, caps) in [("capAdd", &spec.cap_add), ("capDrop", &spec.cap_drop)] {
        for (i, c) in caps.iter().enumerate() {
            if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                err(
                    c,
                    format!("spec.{field}[{i}]"),
                    format!("{c:?} is not a capability name (e.g. NET_ADMIN)"),
                );
            }
        }
    }
    if let Some(l) = &spec.logging {
        if l.driver.is_empty() {
            err("logging:", "spec.logging.driver".into(), "driver is empty".into());
        }
    }
    validate_file_refs(ctx, text, &spec.secrets, "secrets", errors);
    validate_file_refs(ctx, text, &spec.configs, "configs", errors);
    // A variable from valueFrom is mounted at /run/secrets/<var>: a secrets entry may not take it.
    for (i, s) in spec.secrets.iter().enumerate() {
        let clash = spec
            .env
            .iter()
            .any(|e| e.value.value_from.is_some() && e.value.expose.is_none() && e.value.name == s.name);
        if clash {
            errors.push(ctx.err(
                locate(text, &format!("name: {}", s.name)),
                &format!("spec.secrets[{i}].name"),
                format!("{:?} is already the secret made from env variable {:?}", s.name, s.name),
            ));
        }
    }
}

fn validate_file_refs(ctx: &DocCtx, text: &str, refs: &[FileRef], what: &str, errors: &mut Vec<SpecError>) {
    let mut names = BTreeMap::new();
    let mut targets = BTreeMap::new();
    for (i, r) in refs.iter().enumerate() {
        let loc = locate(text, &format!("name: {}", r.name));
        let mut err = |f: &str, message: String| errors.push(ctx.err(loc, &format!("spec.{what}[{i}]{f}"), message));
        if !object_name_ok(&r.name) {
            err(
                ".name",
                format!(
                    "{:?}: 1 to 64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
                    r.name
                ),
            );
        }
        if let Some(prev) = names.insert(r.name.as_str(), i) {
            err(
                ".name",
                format!("duplicate name {:?} (also spec.{what}[{prev}])", r.name),
            );
        }
        let sources =
            usize::from(r.value_from.is_some()) + usize::from(r.value.is_some()) + usize::from(r.external.is_some());
        if sources != 1 {
            let allowed = if what == "secrets" {
                "valueFrom or external"
            } else {
                "valueFrom, value or external"
            };
            err("", format!("exactly one of {allowed} is required"));
        }
        if what == "secrets" && r.value.is_some() {
            err(
                ".value",
                "a secret is never written inline: use valueFrom.env or valueFrom.file".into(),
            );
        }
        if let Some(src) = &r.value_from {
            match (&src.env, &src.file) {
                (Some(_), Some(_)) | (None, None) => err(".valueFrom", "exactly one of env or file is required".into()),
                (None, Some(f)) => {
                    if let Some(p) = file_ref_problem(f) {
                        err(".valueFrom.file", p);
                    }
                }
                _ => {}
            }
        }
        if let Some(x) = &r.external {
            if !object_name_ok(x) {
                err(
                    ".external",
                    format!("{x:?} is not a Swarm {} name", &what[..what.len() - 1]),
                );
            }
        }
        if let Some(t) = &r.target {
            if t.is_empty() {
                err(".target", "empty target".into());
            }
            if let Some(prev) = targets.insert(t.as_str(), i) {
                err(".target", format!("{t:?} is already the target of spec.{what}[{prev}]"));
            }
        }
        if let Some(m) = r.mode {
            if m > 0o777 {
                err(".mode", format!("{m} is over 0o777 (511)"));
            }
        }
    }
}
