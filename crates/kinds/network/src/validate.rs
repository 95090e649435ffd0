//! Checks of a Network document, each naming `file:line:col` and the field. Unknown keys and
//! bad names are refused by the reader already.

use std::collections::HashMap;

use steward_spec::{locate, DocCtx, Pos, SpecError};

use crate::spec::{NetworkDocument, NetworkEntry};

/// Names Docker gives its own networks: a document of that name would never be the stack's.
pub const PREDEFINED: [&str; 5] = ["bridge", "host", "none", "ingress", "docker_gwbridge"];

/// Drivers that only make node-local networks (Docker refuses them with swarm scope).
const LOCAL_DRIVERS: [&str; 3] = ["bridge", "host", "null"];

pub fn validate(ctx: &DocCtx, text: &str, d: &NetworkDocument, errors: &mut Vec<SpecError>) {
    steward_spec::validate_labels(ctx, text, &d.metadata, errors);
    let name = d.metadata.name.value.as_str();
    if PREDEFINED.contains(&name) {
        errors.push(ctx.err(
            Some(d.metadata.name.referenced.into()),
            "metadata.name",
            format!(
                "{name:?} is one of Docker's predefined networks; services join it by name without a Network document"
            ),
        ));
    }
    let s = &d.spec;
    if s.driver.trim().is_empty() {
        errors.push(ctx.err(
            locate_key(text, "driver"),
            "spec.driver",
            "must not be empty (default: overlay)",
        ));
    } else if LOCAL_DRIVERS.contains(&s.driver.as_str()) {
        errors.push(ctx.err(
            locate_key(text, "driver"),
            "spec.driver",
            format!(
                "{:?} makes node-local networks only; a stack's network is swarm-scoped (use overlay, the default)",
                s.driver
            ),
        ));
    }
    for k in s.driver_opts.keys() {
        if k.trim().is_empty() {
            errors.push(ctx.err(
                locate_key(text, "driverOpts"),
                "spec.driverOpts",
                "option names must not be empty",
            ));
        }
    }
}

/// Network names are unique across the desired state.
pub fn check_unique(networks: &[NetworkEntry], errors: &mut Vec<SpecError>) {
    let mut seen: HashMap<&str, &NetworkEntry> = HashMap::new();
    for n in networks {
        if let Some(first) = seen.insert(n.name(), n) {
            errors.push(SpecError {
                file: n.source.file.clone(),
                line: n.source.line,
                column: n.metadata.name.referenced.column(),
                field: "metadata.name".into(),
                message: format!(
                    "duplicate Network name {:?} (first defined at {}:{})",
                    n.name(),
                    first.source.file.display(),
                    first.source.line
                ),
            });
        }
    }
}

/// The position of the first line under `spec:` whose key is `key`, so that a label of the
/// same name in `metadata` is not taken for it; else the first occurrence anywhere.
fn locate_key(text: &str, key: &str) -> Option<Pos> {
    let needle = format!("{key}:");
    text.lines()
        .enumerate()
        .skip_while(|(_, l)| !l.starts_with("spec:"))
        .find_map(|(i, l)| {
            let body = l.trim_start();
            body.starts_with(&needle)
                .then(|| Pos(i as u64 + 1, (l.len() - body.len()) as u64 + 1))
        })
        .or_else(|| locate(text, &needle))
}
