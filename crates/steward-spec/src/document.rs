//! Reading one manifest document: splitting files at `---`, typing a document with the field
//! path and `file:line:col` of its first error, and helpers every kind's validation uses.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

use crate::types::*;

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

pub struct RawDoc<'a> {
    pub text: &'a str,
    /// Lines before this document's first line in the file.
    pub line_offset: u64,
}

/// Splits a multi-document file at `---` lines, keeping line numbers. Each document is parsed
/// on its own so an error in one does not hide the errors of the next.
pub fn split_documents(text: &str) -> Vec<RawDoc<'_>> {
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

pub struct DocCtx<'a> {
    pub file: &'a Path,
    pub line_offset: u64,
}

impl DocCtx<'_> {
    pub fn err(&self, loc: Option<Pos>, field: &str, message: impl Into<String>) -> SpecError {
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

/// The reader's options: positions are printed by [`SpecError`], not inside the message.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { with_snippet: false }
}

/// Checks `apiVersion` and returns the document's `kind` (with its position), for the registry
/// to pick the concrete type. `expected` lists the known kinds for the error message.
pub fn read_kind(ctx: &DocCtx, text: &str, expected: &str) -> Result<Spanned<String>, SpecError> {
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
    header
        .kind
        .ok_or_else(|| ctx.err(None, "kind", format!("missing; expected {expected}")))
}

/// An error at the `kind:` field: no kind of that name.
pub fn unknown_kind(ctx: &DocCtx, kind: &Spanned<String>, expected: &str) -> SpecError {
    ctx.err(
        Some(kind.referenced.into()),
        "kind",
        format!("unknown kind {:?}; expected {expected}", kind.value),
    )
}

/// Deserializes one document, keeping the field path of the first error.
pub fn typed<T: DeserializeOwned>(ctx: &DocCtx, text: &str) -> Result<T, SpecError> {
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
pub struct Pos(pub u64, pub u64);

impl From<Location> for Pos {
    fn from(l: Location) -> Self {
        Pos(l.line(), l.column())
    }
}

pub fn at<'a>(ctx: &'a DocCtx<'a>, loc: Location) -> impl Fn(&str, String) -> SpecError + 'a {
    move |field, message| ctx.err(Some(loc.into()), field, message)
}

/// Finds the line and column of `needle` in a document (first occurrence), for values that
/// carry no span of their own.
pub fn locate(text: &str, needle: &str) -> Option<Pos> {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| Pos(i as u64 + 1, c as u64 + 1)))
}

pub fn validate_labels(ctx: &DocCtx, text: &str, m: &Metadata, errors: &mut Vec<SpecError>) {
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

/// Span helper used by the tests.
pub fn span_line<T>(s: &Spanned<T>) -> u64 {
    s.referenced.line()
}
