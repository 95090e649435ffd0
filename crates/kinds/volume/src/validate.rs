//! Checks of a Volume document, each naming `file:line:col` and the field.

use std::collections::HashMap;

use steward_spec::{locate, DocCtx, SpecError};

use crate::spec::{VolumeDocument, VolumeEntry};

/// The only options Docker's `local` driver accepts (`size` needs a quota-capable filesystem);
/// others fail at the first mount, on a node, long after the manifest was applied.
const LOCAL_OPTS: [&str; 4] = ["type", "o", "device", "size"];

pub fn validate(ctx: &DocCtx, text: &str, d: &VolumeDocument, errors: &mut Vec<SpecError>) {
    steward_spec::validate_labels(ctx, text, &d.metadata, errors);
    let name = d.metadata.name.value.as_str();
    // Docker's volume name pattern is `[a-zA-Z0-9][a-zA-Z0-9_.-]+`: one more character than a
    // resource name needs.
    if name.len() < 2 {
        errors.push(ctx.err(
            Some(d.metadata.name.referenced.into()),
            "metadata.name",
            format!("invalid volume name {name:?}: Docker needs at least 2 characters"),
        ));
    }
    let s = &d.spec;
    if s.driver.trim().is_empty() {
        errors.push(ctx.err(
            locate(text, "driver:"),
            "spec.driver",
            "must not be empty (default: local)",
        ));
    }
    if s.driver == "local" {
        for k in s.driver_opts.keys() {
            if !LOCAL_OPTS.contains(&k.as_str()) {
                errors.push(ctx.err(
                    locate(text, &format!("{k}:")).or_else(|| locate(text, "driverOpts:")),
                    &format!("spec.driverOpts.{k}"),
                    format!("the local driver takes only {} options", LOCAL_OPTS.join(", ")),
                ));
            }
        }
    }
}

/// Volume names are unique across the desired state.
pub fn check_unique(volumes: &[VolumeEntry], errors: &mut Vec<SpecError>) {
    let mut seen: HashMap<&str, &VolumeEntry> = HashMap::new();
    for v in volumes {
        if let Some(first) = seen.insert(v.name(), v) {
            errors.push(SpecError {
                file: v.source.file.clone(),
                line: v.source.line,
                column: v.metadata.name.referenced.column(),
                field: "metadata.name".into(),
                message: format!(
                    "duplicate Volume name {:?} (first defined at {}:{})",
                    v.name(),
                    first.source.file.display(),
                    first.source.line
                ),
            });
        }
    }
}
