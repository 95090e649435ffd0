//! Reading manifests: files -> documents -> a validated [`DesiredState`] of every kind, or every
//! error found. Which kinds exist, and how each is parsed, is [`registry`]'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use steward_database::spec::DatabaseEntry;
use steward_network::spec::NetworkEntry;
use steward_schedule::spec::ScheduleEntry;
use steward_spec::*;
use steward_volume::spec::VolumeEntry;

use crate::registry::{self, Documents};

/// Stack name used when no `kind: Stack` document is present.
pub const DEFAULT_STACK: &str = "default";

/// A validated desired state: every document of every file, or nothing.
#[derive(Clone, Debug)]
pub struct DesiredState {
    pub stack: String,
    pub prune: bool,
    /// Sorted by name.
    pub services: Vec<ServiceEntry>,
    /// Sorted by name.
    pub schedules: Vec<ScheduleEntry>,
    /// Sorted by name.
    pub networks: Vec<NetworkEntry>,
    /// Sorted by name.
    pub volumes: Vec<VolumeEntry>,
    /// Sorted by name.
    pub databases: Vec<DatabaseEntry>,
    pub files: Vec<PathBuf>,
}

impl DesiredState {
    /// Allowed but worth a reviewer's eye: secrets exposed in the environment.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.services.iter().flat_map(steward_spec::service_warnings).collect();
        for s in &self.schedules {
            out.extend(steward_spec::env_warnings(
                &s.spec.job.env,
                &s.source,
                &format!("Schedule/{}: spec.job.env", s.name()),
            ));
        }
        out
    }
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
    match parse_cached(&inputs) {
        Ok(state) if errors.is_empty() => Ok(state),
        Ok(_) => Err(SpecErrors(errors)),
        Err(SpecErrors(more)) => {
            errors.extend(more);
            errors.sort();
            Err(SpecErrors(errors))
        }
    }
}

/// The last parse, by the SHA-256 of its inputs (paths and contents). Parsing is a pure function
/// of them, so a controller that re-reads unchanged manifests on every pass (it must: a pass takes
/// no input) skips the YAML parse and validation, which dominate a pass over large manifests.
type ParseMemo = Option<([u8; 32], Result<DesiredState, SpecErrors>)>;
static LAST_PARSE: std::sync::Mutex<ParseMemo> = std::sync::Mutex::new(None);

fn parse_cached(inputs: &[(PathBuf, String)]) -> Result<DesiredState, SpecErrors> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (p, text) in inputs {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    let key: [u8; 32] = h.finalize().into();
    if let Some((k, r)) = LAST_PARSE.lock().expect("parse cache lock").as_ref() {
        if *k == key {
            return r.clone();
        }
    }
    let r = parse_sources(inputs);
    *LAST_PARSE.lock().expect("parse cache lock") = Some((key, r.clone()));
    r
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
    let mut docs = Documents::default();
    for (file, text) in inputs {
        for doc in split_documents(text) {
            let ctx = DocCtx {
                file,
                line_offset: doc.line_offset,
            };
            match read_kind(&ctx, doc.text, registry::EXPECTED) {
                Ok(kind) => registry::parse_document(&ctx, doc.text, &kind, &mut docs, &mut errors),
                Err(e) => errors.push(e),
            }
        }
    }
    registry::check_across(&docs, &mut errors);
    let Documents {
        mut services,
        stacks,
        mut schedules,
        mut networks,
        mut volumes,
        mut databases,
    } = docs;
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
    schedules.sort_by(|a, b| a.name().cmp(b.name()));
    networks.sort_by(|a, b| a.name().cmp(b.name()));
    volumes.sort_by(|a, b| a.name().cmp(b.name()));
    databases.sort_by(|a, b| a.name().cmp(b.name()));
    let (stack, prune) = match stacks.into_iter().next() {
        Some((d, _)) => (d.metadata.name.value.to_string(), d.spec.prune),
        None => (DEFAULT_STACK.to_string(), false),
    };
    Ok(DesiredState {
        stack,
        prune,
        services,
        schedules,
        networks,
        volumes,
        databases,
        files: inputs.iter().map(|(f, _)| f.clone()).collect(),
    })
}
