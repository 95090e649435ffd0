//! The `Service` document's checks and the resolution of its environment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use crate::document::*;
use crate::task::*;
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
                (None, Some(f)) => {
                    if let Some(p) = file_ref_problem(f) {
                        errors.push(err(&field(".valueFrom.file"), p));
                    }
                }
                _ => {}
            },
        }
        if v.expose.is_some() && v.value_from.is_none() {
            errors.push(err(&field(".expose"), "expose applies to valueFrom values only".into()));
        }
    }
}

/// Variable names that look like credentials; their values must come from `valueFrom`.
const SECRET_WORDS: [&str; 6] = ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY", "PASSWD"];

pub fn validate_service(ctx: &DocCtx, text: &str, d: &ServiceDocument, errors: &mut Vec<SpecError>) {
    validate_labels(ctx, text, &d.metadata, errors);
    validate_env(ctx, &d.spec.env, "spec.env", errors);
    crate::task_validate::validate_task(ctx, text, &d.spec, errors);
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
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedEnv {
    pub name: String,
    pub value: String,
    /// True when the value came from `valueFrom`: it is never displayed.
    pub secret: bool,
    /// `expose: env`: the secret value goes into the environment rather than a Swarm secret.
    pub expose: bool,
}

impl std::fmt::Debug for ResolvedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedEnv")
            .field("name", &self.name)
            .field("value", if self.secret { &"<redacted>" } else { &self.value })
            .field("expose", &self.expose)
            .finish()
    }
}

/// A `secrets:` or `configs:` entry with its content read.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedFile {
    pub name: String,
    /// The content, for steward-owned objects (`valueFrom`, or `value` for configs).
    pub content: Option<String>,
    /// An existing Swarm object steward does not manage.
    pub external: Option<String>,
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub mode: Option<u32>,
}

impl std::fmt::Debug for ResolvedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedFile")
            .field("name", &self.name)
            .field("content", &self.content.as_ref().map(|_| "<redacted>"))
            .field("external", &self.external)
            .field("target", &self.target)
            .finish()
    }
}

/// Everything a service's manifest refers to, read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub env: Vec<ResolvedEnv>,
    pub secrets: Vec<ResolvedFile>,
    pub configs: Vec<ResolvedFile>,
}

static SECRETS_DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// Sets the directory `valueFrom.file` reads below (`--secrets-dir`), once per process. Without
/// it, `STEWARD_SECRETS_DIR` is used; with neither, file references are refused.
pub fn set_secrets_dir(dir: Option<PathBuf>) {
    let _ = SECRETS_DIR.set(dir);
}

pub fn secrets_dir() -> Option<PathBuf> {
    match SECRETS_DIR.get() {
        Some(d) => d.clone(),
        None => std::env::var_os("STEWARD_SECRETS_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    }
}

/// A `valueFrom.file` path that can never be inside the secrets directory: absolute, or with a
/// `..` component. Checked at validation, before any directory is known.
pub fn file_ref_problem(f: &str) -> Option<String> {
    let p = Path::new(f);
    if p.is_absolute() {
        return Some(format!(
            "{f:?} is absolute; valueFrom.file is relative to the secrets directory (--secrets-dir)"
        ));
    }
    if p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Some(format!("{f:?} leads out of the secrets directory (\"..\")"));
    }
    if f.is_empty() {
        return Some("empty path".into());
    }
    None
}

/// Reads one `valueFrom` source: an environment variable of the controller, or a file below the
/// secrets directory (symlinks leading out of it are refused). Err: (field suffix, message).
pub fn read_source(src: &EnvSource, dir: Option<&Path>) -> Result<String, (&'static str, String)> {
    match (&src.env, &src.file) {
        (Some(var), None) => {
            std::env::var(var).map_err(|_| (".valueFrom.env", format!("environment variable {var:?} is not set")))
        }
        (None, Some(f)) => {
            if let Some(problem) = file_ref_problem(f) {
                return Err((".valueFrom.file", problem));
            }
            let Some(dir) = dir else {
                return Err((
                    ".valueFrom.file",
                    format!("{f:?}: file references are refused without a secrets directory (--secrets-dir or STEWARD_SECRETS_DIR)"),
                ));
            };
            let root = dir
                .canonicalize()
                .map_err(|e| (".valueFrom.file", format!("secrets directory {}: {e}", dir.display())))?;
            let path = root.join(f).canonicalize().map_err(|e| {
                (
                    ".valueFrom.file",
                    format!("cannot read {f:?} in the secrets directory: {e}"),
                )
            })?;
            if !path.starts_with(&root) {
                return Err((".valueFrom.file", format!("{f:?} leads out of the secrets directory")));
            }
            std::fs::read_to_string(&path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| {
                    (
                        ".valueFrom.file",
                        format!("cannot read {f:?} in the secrets directory: {e}"),
                    )
                })
        }
        _ => Err((".valueFrom", "exactly one of env or file is required".into())),
    }
}

/// Resolves everything a service refers to: its environment, secrets and configs.
pub fn resolve_service(entry: &ServiceEntry) -> Result<Resolved, SpecErrors> {
    let prefix = format!("Service/{}: spec", entry.name());
    let env = resolve_env_vars(&entry.spec.env, &entry.source, &format!("{prefix}.env"));
    let dir = secrets_dir();
    let mut errors = Vec::new();
    let mut files = |refs: &[FileRef], field: &str| -> Vec<ResolvedFile> {
        let mut out = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let content = match (&r.value_from, &r.value) {
                (Some(src), _) => match read_source(src, dir.as_deref()) {
                    Ok(v) => Some(v),
                    Err((f, message)) => {
                        errors.push(SpecError {
                            file: entry.source.file.clone(),
                            line: entry.source.line,
                            column: 1,
                            field: format!("{prefix}.{field}[{i}]{f}"),
                            message,
                        });
                        continue;
                    }
                },
                (None, v) => v.clone(),
            };
            out.push(ResolvedFile {
                name: r.name.clone(),
                content,
                external: r.external.clone(),
                target: r.target.clone(),
                uid: r.uid.clone(),
                gid: r.gid.clone(),
                mode: r.mode,
            });
        }
        out
    };
    let secrets = files(&entry.spec.secrets, "secrets");
    let configs = files(&entry.spec.configs, "configs");
    match env {
        Ok(env) if errors.is_empty() => Ok(Resolved { env, secrets, configs }),
        Ok(_) => Err(SpecErrors(errors)),
        Err(SpecErrors(mut e)) => {
            e.extend(errors);
            Err(SpecErrors(e))
        }
    }
}

/// Resolves environment variables declared in the document at `source`; `field` prefixes error
/// fields (`Schedule/db-backup: spec.job.env`).
pub fn resolve_env_vars(env: &[Spanned<EnvVar>], source: &Source, field: &str) -> Result<Vec<ResolvedEnv>, SpecErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let dir = secrets_dir();
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
            (None, Some(src)) => read_source(src, dir.as_deref())
                .map(|s| (s, true))
                .map_err(|(f, m)| fail(f, m)),
            _ => Err(fail("", "no value".into())),
        };
        match resolved {
            Ok((value, secret)) => out.push(ResolvedEnv {
                name: v.name.clone(),
                value,
                secret,
                expose: v.expose == Some(Expose::Env),
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

/// Things that are allowed but that a reviewer should see: `expose: env` puts a secret where
/// `docker service inspect` shows it. One line each, `file:line:col: field: message`.
pub fn env_warnings(env: &[Spanned<EnvVar>], source: &Source, prefix: &str) -> Vec<String> {
    env.iter()
        .enumerate()
        .filter(|(_, e)| e.value.expose == Some(Expose::Env) && e.value.value_from.is_some())
        .map(|(i, e)| {
            format!(
                "{}:{}:{}: {prefix}[{i}].expose: the value of {:?} goes into the service's environment, where anyone with access to the Engine API reads it (docker service inspect); without expose it is a Swarm secret at /run/secrets/{} with {}_FILE",
                source.file.display(),
                e.referenced.line() + source.line_offset,
                e.referenced.column(),
                e.value.name,
                e.value.name,
                e.value.name
            )
        })
        .collect()
}

pub fn service_warnings(entry: &ServiceEntry) -> Vec<String> {
    env_warnings(
        &entry.spec.env,
        &entry.source,
        &format!("Service/{}: spec.env", entry.name()),
    )
}
