//! Reading manifests: files -> documents -> a validated [`DesiredState`], or every error found.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

use crate::types::*;

/// Stack name used when no `kind: Stack` document is present.
pub const DEFAULT_STACK: &str = "default";

/// One problem in the desired state, pointing at `file:line:column` and the field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpecError {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// Dotted field path, e.g. `spec.update.delay`; empty for whole-document errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = if self.field.is_empty() { "document" } else { &self.field };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            field,
            self.message
        )
    }
}

/// All the errors of one load, sorted by file and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub file: PathBuf,
    pub line: u64,
    /// Lines in the file before this document starts (spans inside it are relative).
    pub line_offset: u64,
}

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

/// A validated desired state: every document of every file, or nothing.
#[derive(Clone, Debug)]
pub struct DesiredState {
    pub stack: String,
    pub prune: bool,
    /// Sorted by name.
    pub services: Vec<ServiceEntry>,
    pub files: Vec<PathBuf>,
}

/// Loads files and directories (every `*.yaml`/`*.yml` below a directory, in path order).
pub fn load_paths(paths: &[PathBuf]) -> Result<DesiredState, SpecErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if let Err(e) = collect_files(p, &mut files) {
            errors.push(SpecError {
                file: p.clone(),
                line: 0,
                column: 0,
                field: String::new(),
                message: e,
            });
        }
    }
    let mut inputs = Vec::new();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => inputs.push((f.clone(), text)),
            Err(e) => errors.push(SpecError {
                file: f.clone(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if files.is_empty() && errors.is_empty() {
        errors.push(SpecError {
            file: paths.first().cloned().unwrap_or_default(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "no *.yaml or *.yml files found".into(),
        });
    }
    match parse_sources(&inputs) {
        Ok(state) if errors.is_empty() => Ok(state),
        Ok(_) => Err(SpecErrors(errors)),
        Err(SpecErrors(more)) => {
            errors.extend(more);
            errors.sort();
            Err(SpecErrors(errors))
        }
    }
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| format!("cannot list directory: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect_files(&e, out)?;
        } else if matches!(e.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            out.push(e);
        }
    }
    Ok(())
}

/// Parses already-read sources `(path, text)`. Pure: no file system access.
pub fn parse_sources(inputs: &[(PathBuf, String)]) -> Result<DesiredState, SpecErrors> {
    let mut errors = Vec::new();
    let mut services: Vec<ServiceEntry> = Vec::new();
    let mut stacks: Vec<(StackDocument, Source)> = Vec::new();
    for (file, text) in inputs {
        for doc in split_documents(text) {
            let ctx = DocCtx {
                file,
                line_offset: doc.line_offset,
            };
            match parse_document(&ctx, doc.text) {
                Ok(Some(Parsed::Service(d))) => {
                    let source = Source {
                        file: file.clone(),
                        line: d.metadata.name.referenced.line() + doc.line_offset,
                        line_offset: doc.line_offset,
                    };
                    validate_service(&ctx, doc.text, &d, &mut errors);
                    services.push(ServiceEntry {
                        metadata: d.metadata,
                        spec: d.spec,
                        source,
                    });
                }
                Ok(Some(Parsed::Stack(d))) => {
                    validate_labels(&ctx, doc.text, &d.metadata, &mut errors);
                    let line = d.metadata.name.referenced.line() + doc.line_offset;
                    stacks.push((
                        d,
                        Source {
                            file: file.clone(),
                            line,
                            line_offset: doc.line_offset,
                        },
                    ));
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    // Names are unique across the whole desired state.
    let mut seen: HashMap<&str, &ServiceEntry> = HashMap::new();
    for s in &services {
        if let Some(first) = seen.insert(s.name(), s) {
            errors.push(SpecError {
                file: s.source.file.clone(),
                line: s.source.line,
                column: s.metadata.name.referenced.column(),
                field: "metadata.name".into(),
                message: format!(
                    "duplicate Service name {:?} (first defined at {}:{})",
                    s.name(),
                    first.source.file.display(),
                    first.source.line
                ),
            });
        }
    }
    check_dependencies(&services, &mut errors);
    if stacks.len() > 1 {
        let (_, first) = &stacks[0];
        for (d, src) in &stacks[1..] {
            errors.push(SpecError {
                file: src.file.clone(),
                line: src.line,
                column: d.metadata.name.referenced.column(),
                field: "kind".into(),
                message: format!(
                    "only one Stack document is allowed (first at {}:{})",
                    first.file.display(),
                    first.line
                ),
            });
        }
    }
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Err(SpecErrors(errors));
    }
    services.sort_by(|a, b| a.name().cmp(b.name()));
    let (stack, prune) = match stacks.into_iter().next() {
        Some((d, _)) => (d.metadata.name.value.to_string(), d.spec.prune),
        None => (DEFAULT_STACK.to_string(), false),
    };
    Ok(DesiredState {
        stack,
        prune,
        services,
        files: inputs.iter().map(|(f, _)| f.clone()).collect(),
    })
}

/// `dependsOn` names a service of this desired state, not itself, and forms no cycle.
fn check_dependencies(services: &[ServiceEntry], errors: &mut Vec<SpecError>) {
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

struct RawDoc<'a> {
    text: &'a str,
    /// Lines before this document's first line in the file.
    line_offset: u64,
}

/// Splits a multi-document file at `---` lines, keeping line numbers. Each document is parsed
/// on its own so an error in one does not hide the errors of the next.
fn split_documents(text: &str) -> Vec<RawDoc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 0u64;
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push(RawDoc {
                text: &text[start..pos],
                line_offset: start_line,
            });
            start = pos + line.len();
            start_line = i as u64 + 1;
        }
        pos += line.len();
    }
    docs.push(RawDoc {
        text: &text[start..],
        line_offset: start_line,
    });
    docs.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "...")
    });
    docs
}

struct DocCtx<'a> {
    file: &'a Path,
    line_offset: u64,
}

impl DocCtx<'_> {
    fn err(&self, loc: Option<Pos>, field: &str, message: impl Into<String>) -> SpecError {
        let (line, column) = loc.map_or((1, 1), |l| (l.0, l.1));
        SpecError {
            file: self.file.to_path_buf(),
            line: line + self.line_offset,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

// Short-lived, one per document: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Service(ServiceDocument),
    Stack(StackDocument),
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { with_snippet: false }
}

fn parse_document(ctx: &DocCtx, text: &str) -> Result<Option<Parsed>, SpecError> {
    let header: Header = typed(ctx, text)?;
    let api = header
        .api_version
        .ok_or_else(|| ctx.err(None, "apiVersion", format!("missing; expected {API_VERSION}")))?;
    if api.value != API_VERSION {
        return Err(ctx.err(
            Some(api.referenced.into()),
            "apiVersion",
            format!("unsupported {:?}; expected {API_VERSION}", api.value),
        ));
    }
    let kind = header
        .kind
        .ok_or_else(|| ctx.err(None, "kind", "missing; expected Service or Stack"))?;
    match kind.value.as_str() {
        "Service" => typed(ctx, text).map(|d| Some(Parsed::Service(d))),
        "Stack" => typed(ctx, text).map(|d| Some(Parsed::Stack(d))),
        other => Err(ctx.err(
            Some(kind.referenced.into()),
            "kind",
            format!("unknown kind {other:?}; expected Service or Stack"),
        )),
    }
}

/// Deserializes one document, keeping the field path of the first error.
fn typed<T: DeserializeOwned>(ctx: &DocCtx, text: &str) -> Result<T, SpecError> {
    // The reader checks the stream's end after the closure returns, so the error itself must be
    // returned from the closure; its field path is kept aside.
    let mut path = String::new();
    let out = serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    let err = match out {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if path == "." {
        path.clear();
    }
    Err(ctx.err(err.location().map(Pos::from), &path, clean_message(&err)))
}

/// The reader's message without its own position suffix (we print position in front).
fn clean_message(err: &serde_saphyr::Error) -> String {
    let msg = err.to_string();
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    msg.trim().to_string()
}

/// A 1-based (line, column) within one document.
#[derive(Clone, Copy)]
struct Pos(u64, u64);

impl From<Location> for Pos {
    fn from(l: Location) -> Self {
        Pos(l.line(), l.column())
    }
}

fn at<'a>(ctx: &'a DocCtx<'a>, loc: Location) -> impl Fn(&str, String) -> SpecError + 'a {
    move |field, message| ctx.err(Some(loc.into()), field, message)
}

/// Finds the line and column of `needle` in a document (first occurrence), for values that
/// carry no span of their own.
fn locate(text: &str, needle: &str) -> Option<Pos> {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| Pos(i as u64 + 1, c as u64 + 1)))
}

fn validate_labels(ctx: &DocCtx, text: &str, m: &Metadata, errors: &mut Vec<SpecError>) {
    for k in m.labels.keys() {
        if k.starts_with(crate::RESERVED_LABEL_PREFIX) {
            errors.push(ctx.err(
                locate(text, k),
                &format!("metadata.labels.{k}"),
                format!(
                    "label keys under {} are reserved for steward's ownership labels",
                    crate::RESERVED_LABEL_PREFIX
                ),
            ));
        }
    }
}

/// Variable names that look like credentials; their values must come from `valueFrom`.
const SECRET_WORDS: [&str; 6] = ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY", "PASSWD"];

fn validate_service(ctx: &DocCtx, text: &str, d: &ServiceDocument, errors: &mut Vec<SpecError>) {
    validate_labels(ctx, text, &d.metadata, errors);
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in d.spec.env.iter().enumerate() {
        let err = at(ctx, e.referenced);
        let field = |f: &str| format!("spec.env[{i}]{f}");
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
                format!("duplicate variable {:?} (also spec.env[{prev}])", v.name),
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
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, e) in entry.spec.env.iter().enumerate() {
        let v = &e.value;
        let fail = |field: &str, message: String| SpecError {
            file: entry.source.file.clone(),
            line: e.referenced.line() + entry.source.line_offset,
            column: e.referenced.column(),
            field: format!("Service/{}: spec.env[{i}]{field}", entry.name()),
            message,
        };
        let resolved = match (&v.value, &v.value_from) {
            (Some(val), _) => Ok((val.clone(), false)),
            (None, Some(EnvSource { env: Some(var), .. })) => std::env::var(var)
                .map(|s| (s, true))
                .map_err(|_| fail(".valueFrom.env", format!("environment variable {var:?} is not set"))),
            (None, Some(EnvSource { file: Some(f), .. })) => {
                let base = entry.source.file.parent().unwrap_or(Path::new("."));
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

/// Span helper used by the tests.
pub fn span_line<T>(s: &Spanned<T>) -> u64 {
    s.referenced.line()
}
