//! The `Service` document's checks and the resolution of its environment.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_saphyr::Spanned;

use crate::document::*;
use crate::types::*;

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub metadata: Metadata,
    pub spec: ServiceSpec,
    pub source: Source,
}

impl ServiceEntry {
    pub fn name(&self) -> &str {
        self.metadata.name.value.as_str()
    }
}

/// `dependsOn` names a service of this desired state, not itself, and forms no cycle.
pub fn check_dependencies(services: &[ServiceEntry], errors: &mut Vec<SpecError>) {
    let names: HashMap<&str, &ServiceEntry> = services.iter().map(|s| (s.name(), s)).collect();
    for s in services {
        for (i, dep) in s.spec.depends_on.iter().enumerate() {
            let err = |message: String| SpecError {
                file: s.source.file.clone(),
                line: dep.referenced.line() + s.source.line_offset,
                column: dep.referenced.column(),
                field: format!("spec.dependsOn[{i}]"),
                message,
            };
            if dep.value.as_str() == s.name() {
                errors.push(err("a service cannot depend on itself".into()));
            } else if !names.contains_key(dep.value.as_str()) {
                errors.push(err(format!(
                    "no Service named {:?} in this desired state",
                    dep.value.as_str()
                )));
            }
        }
    }
    // Depth-first search for a cycle; report it once, at the first service on it.
    fn visit<'a>(
        n: &'a str,
        names: &HashMap<&'a str, &'a ServiceEntry>,
        stack: &mut Vec<&'a str>,
        done: &mut std::collections::HashSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(pos) = stack.iter().position(|x| *x == n) {
            return Some(stack[pos..].to_vec());
        }
        if !done.insert(n) {
            return None;
        }
        stack.push(n);
        if let Some(s) = names.get(n) {
            for d in &s.spec.depends_on {
                if let Some((k, _)) = names.get_key_value(d.value.as_str()) {
                    if let Some(c) = visit(k, names, stack, done) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        None
    }
    let mut done = std::collections::HashSet::new();
    for s in services {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(s.name(), &names, &mut stack, &mut done) {
            let first = names[cycle[0]];
            errors.push(SpecError {
                file: first.source.file.clone(),
                line: first.source.line,
                column: 1,
                field: "spec.dependsOn".into(),
                message: format!("dependency cycle: {} -> {}", cycle.join(" -> "), cycle[0]),
            });
            break;
        }
    }
}
/// Checks environment variables at `prefix` (e.g. `spec.env`, `spec.job.env`): valid unique
/// names, exactly one of `value`/`valueFrom`, and no inline value for a name that looks like a
/// secret.
pub fn validate_env(ctx: &DocCtx, env: &[Spanned<EnvVar>], prefix: &str, errors: &mut Vec<SpecError>) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in env.iter().enumerate() {
        let err = at(ctx, e.referenced);
        let field = |f: &str| format!("{prefix}[{i}]{f}");
        let v: &EnvVar = &e.value;
        let name_ok = !v.name.is_empty()
            && !v.name.starts_with(|c: char| c.is_ascii_digit())
            && v.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            errors.push(err(
                &field(".name"),
                format!(
                    "invalid variable name {:?}: letters, digits and '_', not starting with a digit",
                    v.name
                ),
            ));
        }
        if let Some(prev) = names.insert(&v.name, i) {
            errors.push(err(
                &field(".name"),
                format!("duplicate variable {:?} (also {prefix}[{prev}])", v.name),
            ));
        }
        match (&v.value, &v.value_from) {
            (Some(_), Some(_)) => errors.push(err(&field(""), "set either value or valueFrom, not both".into())),
            (None, None) => errors.push(err(&field(""), "one of value or valueFrom is required".into())),
            (Some(_), None) => {
                let upper = v.name.to_ascii_uppercase();
                if SECRET_WORDS.iter().any(|w| upper.contains(w)) {
                    errors.push(err(
                        &field(".value"),
                        format!(
                            "{:?} looks like a secret; secrets are never written inline: use valueFrom.env or valueFrom.file",
                            v.name
                        ),
                    ));
                }
            }
            (None, Some(src)) => match (&src.env, &src.file) {
                (Some(_), Some(_)) | (None, None) => errors.push(err(
                    &field(".valueFrom"),
                    "exactly one of env or file is required".into(),
                )),
                _ => {}
            },
        }
    }
}

/// Variable names that look like credentials; their values must come from `valueFrom`.
const SECRET_WORDS: [&str; 6] = ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY", "PASSWD"];

pub fn validate_service(ctx: &DocCtx, text: &str, d: &ServiceDocument, errors: &mut Vec<SpecError>) {
    validate_labels(ctx, text, &d.metadata, errors);
    validate_env(ctx, &d.spec.env, "spec.env", errors);
    let mut published: BTreeMap<(u16, Protocol), usize> = BTreeMap::new();
    for (i, p) in d.spec.ports.iter().enumerate() {
        let loc = locate(text, &format!("target: {}", p.target));
        if p.target == 0 {
            errors.push(ctx.err(loc, &format!("spec.ports[{i}].target"), "must be between 1 and 65535"));
        }
        if let Some(pp) = p.published {
            if pp == 0 {
                errors.push(ctx.err(
                    loc,
                    &format!("spec.ports[{i}].published"),
                    "must be between 1 and 65535",
                ));
            } else if let Some(prev) = published.insert((pp, p.protocol), i) {
                errors.push(ctx.err(
                    loc,
                    &format!("spec.ports[{i}].published"),
                    format!("port {pp} is already published by spec.ports[{prev}]"),
                ));
            }
        }
    }
    let mut jobs = std::collections::BTreeSet::new();
    for (i, j) in d.spec.pre_deploy.iter().enumerate() {
        if !jobs.insert(j.name.as_str()) {
            errors.push(ctx.err(
                locate(text, &format!("name: {}", j.name)),
                &format!("spec.preDeploy[{i}].name"),
                format!("duplicate job name {:?}", j.name.as_str()),
            ));
        }
    }
    if let Some(h) = &d.spec.health {
        if !(h.url.starts_with("http://") || h.url.starts_with("https://")) {
            errors.push(ctx.err(
                locate(text, "url:"),
                "spec.health.url",
                format!("expected an http:// or https:// URL, got {:?}", h.url),
            ));
        }
        if h.success_threshold == 0 || h.failure_threshold == 0 {
            errors.push(ctx.err(
                locate(text, "Threshold"),
                "spec.health",
                "successThreshold and failureThreshold must be at least 1",
            ));
        }
    }
    if let Some(a) = &d.spec.analysis {
        if !(a.prometheus.starts_with("http://") || a.prometheus.starts_with("https://")) {
            errors.push(ctx.err(
                locate(text, "prometheus:"),
                "spec.analysis.prometheus",
                format!("expected an http:// or https:// URL, got {:?}", a.prometheus),
            ));
        }
        if a.metrics.is_empty() {
            errors.push(ctx.err(
                locate(text, "analysis:"),
                "spec.analysis.metrics",
                "at least one metric is required",
            ));
        }
        if a.count == 0 {
            errors.push(ctx.err(locate(text, "count:"), "spec.analysis.count", "must be at least 1"));
        }
        for (i, m) in a.metrics.iter().enumerate() {
            if m.success_condition.is_none() && m.failure_condition.is_none() {
                errors.push(ctx.err(
                    locate(text, &format!("name: {}", m.name)),
                    &format!("spec.analysis.metrics[{i}]"),
                    "set successCondition, failureCondition or both",
                ));
            }
        }
    }
    for (name, ratio) in [
        ("spec.update.maxFailureRatio", d.spec.update.max_failure_ratio),
        ("spec.rollback.maxFailureRatio", d.spec.rollback.max_failure_ratio),
    ] {
        if !(0.0..=1.0).contains(&ratio) {
            errors.push(ctx.err(
                locate(text, "maxFailureRatio"),
                name,
                format!("must be between 0 and 1, got {ratio}"),
            ));
        }
    }
}

/// Values resolved from `valueFrom` at reconcile time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEnv {
    pub name: String,
    pub value: String,
    /// True when the value came from `valueFrom`: it is never displayed.
    pub secret: bool,
}

/// Resolves a service's environment, reading referenced environment variables and files.
pub fn resolve_env(entry: &ServiceEntry) -> Result<Vec<ResolvedEnv>, SpecErrors> {
    resolve_env_vars(
        &entry.spec.env,
        &entry.source,
        &format!("Service/{}: spec.env", entry.name()),
    )
}

/// Resolves environment variables declared in the document at `source`; `field` prefixes error
/// fields (`Schedule/db-backup: spec.job.env`).
pub fn resolve_env_vars(env: &[Spanned<EnvVar>], source: &Source, field: &str) -> Result<Vec<ResolvedEnv>, SpecErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, e) in env.iter().enumerate() {
        let v = &e.value;
        let fail = |f: &str, message: String| SpecError {
            file: source.file.clone(),
            line: e.referenced.line() + source.line_offset,
            column: e.referenced.column(),
            field: format!("{field}[{i}]{f}"),
            message,
        };
        let resolved = match (&v.value, &v.value_from) {
            (Some(val), _) => Ok((val.clone(), false)),
            (None, Some(EnvSource { env: Some(var), .. })) => std::env::var(var)
                .map(|s| (s, true))
                .map_err(|_| fail(".valueFrom.env", format!("environment variable {var:?} is not set"))),
            (None, Some(EnvSource { file: Some(f), .. })) => {
                let base = source.file.parent().unwrap_or(Path::new("."));
                let path = base.join(f);
                std::fs::read_to_string(&path)
                    .map(|s| (s.trim_end_matches(['\n', '\r']).to_string(), true))
                    .map_err(|e| fail(".valueFrom.file", format!("cannot read {}: {e}", path.display())))
            }
            _ => Err(fail("", "no value".into())),
        };
        match resolved {
            Ok((value, secret)) => out.push(ResolvedEnv {
                name: v.name.clone(),
                value,
                secret,
            }),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SpecErrors(errors))
    }
}
