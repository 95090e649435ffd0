//! The Compose file (version 3.x, what `docker stack deploy` reads), typed. Every struct keeps the
//! keys it does not know in `other`, so the converter can list them instead of dropping them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// Keys this model does not type, with their values (listed as not imported).
pub type Other = BTreeMap<String, serde_json::Value>;

#[derive(Debug, Deserialize)]
pub struct ComposeFile {
    #[serde(default)]
    pub version: Option<Scalar>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<NetworkDef>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<VolumeDef>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, FileObjectDef>,
    #[serde(default)]
    pub configs: BTreeMap<String, FileObjectDef>,
    #[serde(flatten)]
    pub other: Other,
}

/// A YAML scalar where Compose takes a string but people write numbers or booleans.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Float(n) => write!(f, "{n}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

/// `["a", "b"]` or `"a b"` (split like a shell would).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StrOrList {
    Str(String),
    List(Vec<Scalar>),
}

/// `["K=V", "K"]` or `{K: V}` (environment, labels).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum ListOrMap {
    #[default]
    Empty,
    List(Vec<String>),
    Map(BTreeMap<String, Option<Scalar>>),
}

impl ListOrMap {
    /// As pairs; `None` is a key without a value (`FOO` in a list, `FOO:` in a map).
    pub fn pairs(&self) -> BTreeMap<String, Option<String>> {
        match self {
            ListOrMap::Empty => BTreeMap::new(),
            ListOrMap::List(l) => l
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (kv.clone(), None),
                })
                .collect(),
            ListOrMap::Map(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(Scalar::to_string)))
                .collect(),
        }
    }
}

/// `true`, or `{name: NAME}` (Compose 3.0-3.3).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum External {
    Flag(bool),
    Named { name: String },
}

impl External {
    pub fn is_external(&self) -> bool {
        !matches!(self, External::Flag(false))
    }
    pub fn name(&self) -> Option<&str> {
        match self {
            External::Named { name } => Some(name),
            External::Flag(_) => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<StrOrList>,
    pub entrypoint: Option<StrOrList>,
    #[serde(default)]
    pub environment: ListOrMap,
    pub env_file: Option<StrOrList>,
    #[serde(default)]
    pub ports: Vec<PortDef>,
    #[serde(default)]
    pub deploy: Deploy,
    #[serde(default)]
    pub labels: ListOrMap,
    pub healthcheck: Option<Healthcheck>,
    pub stop_grace_period: Option<String>,
    pub stop_signal: Option<String>,
    pub user: Option<Scalar>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub init: Option<bool>,
    pub logging: Option<LoggingDef>,
    #[serde(default)]
    pub ulimits: BTreeMap<String, UlimitDef>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    pub networks: Option<ServiceNetworks>,
    #[serde(default)]
    pub volumes: Vec<ServiceVolume>,
    pub tmpfs: Option<StrOrList>,
    #[serde(default)]
    pub secrets: Vec<FileRefDef>,
    #[serde(default)]
    pub configs: Vec<FileRefDef>,
    pub restart: Option<String>,
    pub depends_on: Option<DependsOn>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, serde_json::Value>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PortDef {
    Short(Scalar),
    Long(LongPort),
}

#[derive(Debug, Deserialize)]
pub struct LongPort {
    pub target: u16,
    pub published: Option<Scalar>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct Deploy {
    pub mode: Option<String>,
    pub replicas: Option<u64>,
    #[serde(default)]
    pub labels: ListOrMap,
    #[serde(default)]
    pub resources: ResourcesDef,
    pub update_config: Option<UpdateDef>,
    pub rollback_config: Option<UpdateDef>,
    pub restart_policy: Option<RestartDef>,
    #[serde(default)]
    pub placement: PlacementDef,
    pub endpoint_mode: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResourcesDef {
    pub limits: Option<AmountsDef>,
    pub reservations: Option<AmountsDef>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct AmountsDef {
    pub cpus: Option<Scalar>,
    pub memory: Option<Scalar>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct UpdateDef {
    pub parallelism: Option<u64>,
    pub delay: Option<String>,
    pub failure_action: Option<String>,
    pub monitor: Option<String>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct RestartDef {
    pub condition: Option<String>,
    pub delay: Option<String>,
    pub max_attempts: Option<u64>,
    pub window: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct PlacementDef {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<SpreadDef>,
    pub max_replicas_per_node: Option<u64>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct SpreadDef {
    pub spread: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Healthcheck {
    pub test: Option<StrOrList>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u64>,
    pub start_period: Option<String>,
    #[serde(default)]
    pub disable: bool,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct LoggingDef {
    pub driver: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, Option<Scalar>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UlimitDef {
    Single(i64),
    Pair { soft: i64, hard: i64 },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<ServiceNetwork>>),
}

#[derive(Debug, Default, Deserialize)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ServiceVolume {
    Short(String),
    Long(LongVolume),
}

#[derive(Debug, Deserialize)]
pub struct LongVolume {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    pub volume: Option<VolumeOpts>,
    pub tmpfs: Option<TmpfsOpts>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct VolumeOpts {
    #[serde(default)]
    pub nocopy: bool,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
pub struct TmpfsOpts {
    pub size: Option<Scalar>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FileRefDef {
    Short(String),
    Long(LongFileRef),
}

#[derive(Debug, Deserialize)]
pub struct LongFileRef {
    pub source: String,
    pub target: Option<String>,
    pub uid: Option<Scalar>,
    pub gid: Option<Scalar>,
    pub mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NetworkDef {
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: ListOrMap,
    pub external: Option<External>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

#[derive(Debug, Default, Deserialize)]
pub struct VolumeDef {
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, Scalar>>,
    #[serde(default)]
    pub labels: ListOrMap,
    pub external: Option<External>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub other: Other,
}

/// A top-level secret or config.
#[derive(Debug, Default, Deserialize)]
pub struct FileObjectDef {
    pub file: Option<String>,
    pub external: Option<External>,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: ListOrMap,
    #[serde(flatten)]
    pub other: Other,
}

/// An unreadable or invalid Compose file: where, and why.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{file}: {message}")]
    Semantic { file: String, message: String },
}

/// Reads and types a Compose file. Variables (`${VAR}`, `${VAR:-default}`, `$VAR`) are
/// substituted from `vars` first, as `docker stack deploy` does from the shell; the names of
/// unset ones are returned (they become empty strings, as in Compose).
pub fn parse(
    file: &Path,
    text: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<(ComposeFile, Vec<String>), ComposeError> {
    let (text, unset) = interpolate(text, vars);
    let name = file.display().to_string();
    let compose: ComposeFile = serde_saphyr::from_str(&text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let msg = e.to_string();
        let message = msg.find(" at line ").map_or(msg.clone(), |i| msg[..i].to_string());
        ComposeError::Invalid {
            file: name.clone(),
            line,
            column,
            message,
        }
    })?;
    if compose.services.is_empty() {
        return Err(ComposeError::Semantic {
            file: name,
            message: "no services: expected a Compose file with a top-level `services:` map".into(),
        });
    }
    Ok((compose, unset))
}

/// Compose's variable substitution; `$$` is a literal `$`.
fn interpolate(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut unset = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                rest = after;
                continue;
            };
            let expr = &body[..end];
            let (name, default, when_empty) = match (expr.find(":-"), expr.find('-')) {
                (Some(j), _) => (&expr[..j], Some(&expr[j + 2..]), true),
                (None, Some(j)) => (&expr[..j], Some(&expr[j + 1..]), false),
                _ => (expr, None, false),
            };
            let value = vars(name).filter(|v| !(when_empty && v.is_empty()));
            match (value, default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => unset.push(name.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$');
                rest = after;
                continue;
            }
            match vars(&after[..len]) {
                Some(v) => out.push_str(&v),
                None => unset.push(after[..len].to_string()),
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    unset.sort();
    unset.dedup();
    (out, unset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_follows_compose() {
        let vars = |n: &str| match n {
            "TAG" => Some("v2".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let (s, unset) = interpolate(
            "a:${TAG} b:$TAG c:${NOPE:-x} d:${EMPTY:-y} e:${EMPTY-z} f:$$HOME g:${MISSING}",
            &vars,
        );
        assert_eq!(s, "a:v2 b:v2 c:x d:y e: f:$HOME g:");
        assert_eq!(unset, vec!["MISSING".to_string()]);
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse(Path::new("c.yml"), "services:\n  web:\n    image: [a\n", &|_| None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.yml:"), "{msg}");
        assert!(matches!(err, ComposeError::Invalid { line, .. } if line >= 3), "{msg}");
    }
}
