//! `steward import compose.yml [--stack NAME] [-o DIR] [--force]`: a Compose / stack file turned
//! into steward manifests, with a report of the secrets to provide and of everything steward
//! cannot express. With `--stack`, the manifests describe exactly what
//! `docker stack deploy -c compose.yml NAME` made, so that adopting it changes nothing.

mod compose;
mod convert;
mod emit;
mod service;
mod units;

#[cfg(test)]
mod tests;

use std::fmt::Write;
use std::path::{Path, PathBuf};

pub use convert::{Imported, Options};

/// Reads, converts, writes, prints the summary. Exit 1 on an unreadable or invalid file, or when
/// a file would be overwritten without `force`.
pub fn run(file: &Path, stack: Option<String>, output: Option<PathBuf>, force: bool) -> u8 {
    match import(file, stack, output, force) {
        Ok(summary) => {
            print!("{summary}");
            0
        }
        Err(e) => {
            eprintln!("steward import: {e}");
            1
        }
    }
}

fn import(file: &Path, stack: Option<String>, output: Option<PathBuf>, force: bool) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|source| compose::ComposeError::Read {
        file: file.display().to_string(),
        source,
    })?;
    let vars = |n: &str| std::env::var(n).ok();
    let (parsed, unset) = compose::parse(file, &text, &vars)?;
    let dir = std::path::absolute(file)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let opts = Options {
        stack,
        project: project_name(&dir),
        compose_dir: dir,
        compose_file: file
            .file_name()
            .map_or_else(|| file.display().to_string(), |f| f.to_string_lossy().into_owned()),
    };
    let read = |p: &Path| std::fs::read_to_string(p);
    let mut imported = convert::convert(&parsed, &opts, &read, &vars);
    for v in unset {
        imported.report.notes.insert(
            0,
            format!("variable {v} is not set: substituted an empty string (as Compose does)"),
        );
    }
    let out_dir = output.unwrap_or_else(|| PathBuf::from("."));
    write_files(&out_dir, &imported, force)?;
    Ok(summary(&out_dir, &opts, &imported))
}

/// Compose's project name: the directory's name, lower case, letters, digits, `-` and `_`.
fn project_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map_or("default".into(), |n| n.to_string_lossy().to_lowercase());
    let name: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    let name = name.trim_start_matches(['-', '_']).to_string();
    if name.is_empty() {
        "default".into()
    } else {
        name
    }
}

fn write_files(dir: &Path, imported: &Imported, force: bool) -> anyhow::Result<()> {
    if !force {
        let existing: Vec<String> = imported
            .files
            .iter()
            .map(|f| dir.join(&f.name))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            anyhow::bail!(
                "refusing to overwrite {} (use --force); nothing written",
                existing.join(", ")
            );
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    for f in &imported.files {
        let p = dir.join(&f.name);
        std::fs::write(&p, &f.text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// The human summary: files written, what to provide, what was not imported, notes.
pub fn summary(dir: &Path, opts: &Options, imported: &Imported) -> String {
    let mut s = String::new();
    let mode = match &opts.stack {
        Some(st) => format!(" (adopting stack {st} as docker stack deploy made it)"),
        None => " (for a fresh deployment)".into(),
    };
    let _ = writeln!(s, "Imported {}{mode}.", opts.compose_file);
    let _ = writeln!(s, "\nFiles written ({}):", imported.files.len());
    for f in &imported.files {
        let _ = writeln!(s, "  {}  {}", dir.join(&f.name).display(), f.what.join(", "));
    }
    let r = &imported.report;
    let section = |s: &mut String, title: &str, items: &[String]| {
        let _ = writeln!(s, "\n{title} ({}):", items.len());
        if items.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for i in items {
            let _ = writeln!(s, "  - {i}");
        }
    };
    section(&mut s, "To provide", &r.to_provide);
    section(&mut s, "Not imported: steward cannot express these", &r.unsupported);
    if !r.notes.is_empty() {
        section(&mut s, "Notes", &r.notes);
    }
    let _ = writeln!(
        s,
        "\nNext: steward validate {d}{then}",
        d = dir.display(),
        then = if opts.stack.is_some() {
            format!(
                "; steward plan {} shows the services as adopted, with no field changed",
                dir.display()
            )
        } else {
            String::new()
        }
    );
    s
}
