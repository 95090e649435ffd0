//! Compose → steward documents: names, networks, volumes, secrets and configs, and the report of
//! what the operator must provide and what could not be expressed. Pure: files are read through
//! the `read` function the caller passes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::compose::*;
use super::emit::{self, Map, Node};
use super::service::{bind_source, list_other, service_doc};
use super::units::{format_bytes, parse_docker_bytes};

/// docker/cli `convert.LabelNamespace`: the stack a service, network, volume, secret or
/// config belongs to.
pub const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// docker/cli `convert.LabelImage`: the image as written in the Compose file.
pub const STACK_IMAGE_LABEL: &str = "com.docker.stack.image";
/// docker stack deploy's network driver when the file names none.
const DEFAULT_NETWORK_DRIVER: &str = "overlay";
/// Configs up to this size are inlined as `value`; larger ones are read at reconcile time.
const MAX_INLINE_CONFIG: usize = 16 * 1024;

pub struct Options {
    /// `Some(NAME)`: adopt what `docker stack deploy -c FILE NAME` made.
    pub stack: Option<String>,
    /// Name of the Stack document without `--stack` (the Compose project's name).
    pub project: String,
    /// The Compose file's directory: relative paths in it are relative to this.
    pub compose_dir: PathBuf,
    /// How the Compose file is named in headers.
    pub compose_file: String,
}

/// What the operator is told.
#[derive(Debug, Default)]
pub struct Report {
    /// Each `valueFrom` reference produced, and external objects that must exist.
    pub to_provide: Vec<String>,
    /// What steward cannot express (never dropped silently).
    pub unsupported: Vec<String>,
    pub notes: Vec<String>,
}

pub struct OutFile {
    pub name: String,
    /// e.g. `Service tc_web`.
    pub what: Vec<String>,
    pub text: String,
}

pub struct Imported {
    pub files: Vec<OutFile>,
    pub report: Report,
}

pub struct Ctx<'a> {
    pub opts: &'a Options,
    compose: &'a ComposeFile,
    read: &'a dyn Fn(&Path) -> std::io::Result<String>,
    pub vars: &'a dyn Fn(&str) -> Option<String>,
    pub report: Report,
    used_networks: BTreeSet<String>,
    used_volumes: BTreeSet<String>,
}

impl Ctx<'_> {
    /// The Swarm name of a stack object: `<stack>_<name>` when adopting (docker/cli
    /// `Namespace.Scope`), the Compose name otherwise.
    pub fn scope(&self, name: &str) -> String {
        match &self.opts.stack {
            Some(s) => format!("{s}_{name}"),
            None => name.to_string(),
        }
    }
    pub fn unsupported(&mut self, service: &str, field: &str, why: &str) {
        self.report
            .unsupported
            .push(format!("service {service}: {field}: {why}"));
    }
    pub fn note(&mut self, n: String) {
        self.report.notes.push(n);
    }
    pub fn secret(&mut self, s: String) {
        self.report.to_provide.push(s);
    }
    pub fn read_relative(&self, path: &str) -> std::io::Result<String> {
        (self.read)(&self.opts.compose_dir.join(path.trim_start_matches("./")))
    }

    /// The name of Compose network `key` in Swarm, and whether it is external.
    fn network_name(&self, key: &str) -> (String, bool) {
        let def = self.compose.networks.get(key).and_then(Option::as_ref);
        let external = def.and_then(|d| d.external.as_ref()).filter(|e| e.is_external());
        if let Some(e) = external {
            let name = def.and_then(|d| d.name.clone()).or(e.name().map(String::from));
            return (name.unwrap_or_else(|| key.to_string()), true);
        }
        if let Some(n) = def.and_then(|d| d.name.clone()) {
            return (n, false);
        }
        match (&self.opts.stack, key) {
            (None, "default") => (format!("{}_default", self.opts.project), false),
            _ => (self.scope(key), false),
        }
    }

    /// A service's attachments: the `default` network when it lists none, each with the service
    /// name as an alias when adopting (docker/cli `convertServiceNetworks`).
    pub fn service_networks(&mut self, service: &str, n: Option<&ServiceNetworks>) -> Vec<Node> {
        let mut list: Vec<(String, Vec<String>)> = match n {
            None => vec![("default".into(), vec![])],
            Some(ServiceNetworks::List(l)) if l.is_empty() => vec![("default".into(), vec![])],
            Some(ServiceNetworks::List(l)) => l.iter().map(|k| (k.clone(), vec![])).collect(),
            Some(ServiceNetworks::Map(m)) => m
                .iter()
                .map(|(k, v)| {
                    if let Some(v) = v {
                        list_other(self, service, &format!("networks.{k}."), &v.other);
                    }
                    (k.clone(), v.as_ref().map(|v| v.aliases.clone()).unwrap_or_default())
                })
                .collect(),
        };
        list.sort();
        let mut out = Vec::new();
        for (key, mut aliases) in list {
            if key != "default" && !self.compose.networks.contains_key(&key) {
                self.unsupported(
                    service,
                    &format!("networks.{key}"),
                    "undefined network (not in the top-level networks:)",
                );
                continue;
            }
            let (name, external) = self.network_name(&key);
            if !external {
                self.used_networks.insert(key.clone());
            }
            let user_defined = !matches!(name.as_str(), "host" | "bridge" | "none");
            if self.opts.stack.is_some() && user_defined {
                aliases.push(service.to_string());
            }
            if aliases.is_empty() {
                out.push(Node::Str(name));
            } else {
                let mut m = Map::new();
                m.set("name", name).set("aliases", aliases);
                out.push(Node::Map(m));
            }
        }
        out
    }

    /// One `volumes:` entry of a service as a steward mount.
    pub fn mount(&mut self, service: &str, v: &ServiceVolume) -> Option<Map> {
        let (kind, source, target, read_only, no_copy, size) = match v {
            ServiceVolume::Short(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let (src, dst, mode) = match parts.as_slice() {
                    [t] => (None, *t, ""),
                    [s, t] => (Some(*s), *t, ""),
                    [s, t, m] => (Some(*s), *t, *m),
                    _ => {
                        self.unsupported(service, "volumes", &format!("{s:?}: not SOURCE:TARGET[:MODE]"));
                        return None;
                    }
                };
                let mut ro = false;
                let mut nocopy = false;
                for opt in mode.split(',').filter(|o| !o.is_empty()) {
                    match opt {
                        "ro" => ro = true,
                        "rw" => ro = false,
                        "nocopy" => nocopy = true,
                        other => self.unsupported(service, "volumes", &format!("{s}: mode {other:?}")),
                    }
                }
                let kind = match src {
                    None => "volume",
                    Some(p) if p.starts_with(['/', '.', '~']) => "bind",
                    Some(_) => "volume",
                };
                (
                    kind.to_string(),
                    src.map(String::from),
                    dst.to_string(),
                    ro,
                    nocopy,
                    None,
                )
            }
            ServiceVolume::Long(l) => {
                list_other(self, service, "volumes.", &l.other);
                let nocopy = l.volume.as_ref().is_some_and(|o| o.nocopy);
                if let Some(o) = &l.volume {
                    list_other(self, service, "volumes.volume.", &o.other);
                }
                let size = match l.tmpfs.as_ref().and_then(|t| {
                    list_other(self, service, "volumes.tmpfs.", &t.other);
                    t.size.as_ref()
                }) {
                    None => None,
                    Some(sz) => match parse_docker_bytes(&sz.to_string()) {
                        Ok(b) => format_bytes(b),
                        Err(e) => {
                            self.unsupported(service, "volumes.tmpfs.size", &e);
                            None
                        }
                    },
                };
                (
                    l.kind.clone(),
                    l.source.clone(),
                    l.target.clone(),
                    l.read_only,
                    nocopy,
                    size,
                )
            }
        };
        let mut m = Map::new();
        let source = match (kind.as_str(), source) {
            ("volume", None) => {
                self.unsupported(service, "volumes", &format!("{target}: an anonymous volume (its data would be lost on every task replacement); declare a named volume"));
                return None;
            }
            ("volume", Some(key)) => Some(self.volume_name(service, &key)?),
            ("bind", Some(src)) => Some(bind_source(&self.opts.compose_dir, &src, (self.vars)("HOME"))),
            ("tmpfs", _) => None,
            (other, _) => {
                self.unsupported(service, "volumes", &format!("{target}: type {other:?}"));
                return None;
            }
        };
        m.set("type", kind.as_str()).opt("source", source).set("target", target);
        if read_only {
            m.set("readOnly", true);
        }
        if no_copy {
            m.set("noCopy", true);
        }
        m.opt("size", size);
        Some(m)
    }

    fn volume_name(&mut self, service: &str, key: &str) -> Option<String> {
        let Some(def) = self.compose.volumes.get(key) else {
            self.unsupported(
                service,
                "volumes",
                &format!("{key}: undefined volume (not in the top-level volumes:)"),
            );
            return None;
        };
        let def = def.as_ref();
        if let Some(e) = def.and_then(|d| d.external.as_ref()).filter(|e| e.is_external()) {
            let name = def.and_then(|d| d.name.clone()).or(e.name().map(String::from));
            return Some(name.unwrap_or_else(|| key.to_string()));
        }
        self.used_volumes.insert(key.to_string());
        Some(def.and_then(|d| d.name.clone()).unwrap_or_else(|| self.scope(key)))
    }

    /// A service's `secrets:` or `configs:` (`what`) as steward file references.
    pub fn file_refs(&mut self, service: &str, what: &str, refs: &[FileRefDef]) -> Vec<Node> {
        let mut out = Vec::new();
        let mut names = BTreeSet::new();
        for r in refs {
            let (source, target, uid, gid, mode) = match r {
                FileRefDef::Short(s) => (s.clone(), None, None, None, None),
                FileRefDef::Long(l) => (
                    l.source.clone(),
                    l.target.clone(),
                    l.uid.as_ref().map(|u| u.to_string()),
                    l.gid.as_ref().map(|g| g.to_string()),
                    l.mode,
                ),
            };
            let defs = if what == "secrets" {
                &self.compose.secrets
            } else {
                &self.compose.configs
            };
            let Some(def) = defs.get(&source) else {
                self.unsupported(
                    service,
                    what,
                    &format!("{source}: undefined (not in the top-level {what}:)"),
                );
                continue;
            };
            // steward's entry names are unique within a service; Compose may mount one source twice.
            let mut entry = source.clone();
            let mut n = 1;
            while !names.insert(entry.clone()) {
                n += 1;
                entry = format!("{source}-{n}");
            }
            let mut m = Map::new();
            m.set("name", &entry);
            let external = def.external.as_ref().filter(|e| e.is_external());
            let adopting = self.opts.stack.is_some();
            if let Some(e) = external {
                let name = def
                    .name
                    .clone()
                    .or(e.name().map(String::from))
                    .unwrap_or_else(|| source.clone());
                self.secret(format!(
                    "existing Swarm {} {name} (service {service}; external, steward never changes it)",
                    &what[..what.len() - 1]
                ));
                m.set("external", name);
            } else if adopting {
                // docker stack deploy created it as <stack>_<name>: referring to that object
                // keeps the adopted service unchanged (no new secret version, no task restart).
                let name = def.name.clone().unwrap_or_else(|| self.scope(&source));
                self.note(format!("service {service}: {what} {source} refers to {name}, made by docker stack deploy; switch to valueFrom later to have steward version it"));
                m.set("external", name);
            } else if let Some(file) = &def.file {
                self.fresh_file(service, what, &source, file, &mut m);
            } else {
                self.unsupported(
                    service,
                    what,
                    &format!("{source}: neither file nor external (driver-made objects cannot be expressed)"),
                );
                continue;
            }
            list_other(self, service, &format!("{what}.{source}."), &def.other);
            if !adopting && !matches!(def.labels, ListOrMap::Empty) {
                self.unsupported(
                    service,
                    &format!("{what}.{source}.labels"),
                    "labels of a secret or config (steward labels the objects it makes itself)",
                );
            }
            // docker stack deploy writes the target it was given, else the source name
            // (relative: Swarm puts a config at /<name>); adopting mirrors that exactly.
            let target = match (target, adopting && what == "configs") {
                (Some(t), _) => Some(t),
                (None, true) => Some(source.clone()),
                (None, false) => None,
            };
            m.opt("target", target)
                .opt("uid", uid)
                .opt("gid", gid)
                .opt("mode", mode.map(Node::Octal));
            out.push(Node::Map(m));
        }
        out
    }

    /// A secret or config of a fresh deployment read from `file`.
    fn fresh_file(&mut self, service: &str, what: &str, source: &str, file: &str, m: &mut Map) {
        let rel = file.trim_start_matches("./").to_string();
        if what == "configs" {
            if let Ok(text) = self.read_relative(file) {
                if text.len() <= MAX_INLINE_CONFIG {
                    m.set("value", text);
                    return;
                }
            }
        }
        if Path::new(&rel).is_absolute() || rel.starts_with("../") {
            let base = Path::new(&rel)
                .file_name()
                .map_or(rel.clone(), |b| b.to_string_lossy().into_owned());
            self.note(format!("service {service}: {what} {source}: {file} is outside the Compose directory; copy it under the secrets dir as {base}"));
            let mut from = Map::new();
            from.set("file", base.clone());
            m.set("valueFrom", from);
            self.secret(format!(
                "file {base} under --secrets-dir ({what} {source}, service {service})"
            ));
            return;
        }
        let mut from = Map::new();
        from.set("file", rel.clone());
        m.set("valueFrom", from);
        self.secret(format!(
            "file {rel} under --secrets-dir ({what} {source}, service {service})"
        ));
    }
}

/// Converts a typed Compose file into manifest files and the report.
pub fn convert(
    compose: &ComposeFile,
    opts: &Options,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Imported {
    let mut ctx = Ctx {
        opts,
        compose,
        read,
        vars,
        report: Report::default(),
        used_networks: BTreeSet::new(),
        used_volumes: BTreeSet::new(),
    };
    if let Some(v) = compose
        .version
        .as_ref()
        .map(Scalar::to_string)
        .filter(|v| !v.starts_with('3'))
    {
        ctx.report.notes.push(format!(
            "version {v:?}: docker stack deploy reads version 3.x files; imported as such"
        ));
    }
    for k in compose.other.keys().filter(|k| !k.starts_with("x-")) {
        ctx.report
            .unsupported
            .push(format!("top-level {k}: not part of a stack file"));
    }
    let header = format!(
        "Imported from {} by `steward import`{}.",
        opts.compose_file,
        opts.stack.as_ref().map_or(String::new(), |s| format!(
            " --stack {s} (adopts what docker stack deploy made)"
        ))
    );
    let mut files = Vec::new();
    let reserved = ["stack", "networks", "volumes"];
    for (key, s) in &compose.services {
        let Some(doc) = service_doc(&mut ctx, key, s) else {
            continue;
        };
        let file = if reserved.contains(&key.as_str()) {
            format!("service-{key}.yaml")
        } else {
            format!("{key}.yaml")
        };
        files.push(OutFile {
            name: file,
            what: vec![format!("Service {}", ctx.scope(key))],
            text: emit::file(&header, &[doc]),
        });
    }
    let nets = network_docs(&mut ctx);
    push_docs(&mut files, "networks.yaml", "Network", &header, nets);
    let vols = volume_docs(&mut ctx);
    push_docs(&mut files, "volumes.yaml", "Volume", &header, vols);
    let name = opts.stack.clone().unwrap_or_else(|| opts.project.clone());
    let mut meta = Map::new();
    meta.set("name", &name);
    let mut spec = Map::new();
    spec.set("prune", false);
    let mut stack = Map::new();
    stack
        .set("apiVersion", steward_spec::API_VERSION)
        .set("kind", "Stack")
        .set("metadata", meta)
        .set("spec", spec);
    files.push(OutFile {
        name: "stack.yaml".into(),
        what: vec![format!("Stack {name}")],
        text: emit::file(&header, &[stack]),
    });
    let mut report = ctx.report;
    let mut seen = BTreeSet::new();
    report.to_provide.retain(|x| seen.insert(x.clone()));
    let mut seen = BTreeSet::new();
    report.notes.retain(|x| seen.insert(x.clone()));
    Imported { files, report }
}

fn push_docs(files: &mut Vec<OutFile>, file: &str, kind: &str, header: &str, docs: Vec<(String, Map)>) {
    if docs.is_empty() {
        return;
    }
    let what = docs.iter().map(|(n, _)| format!("{kind} {n}")).collect();
    let maps: Vec<Map> = docs.into_iter().map(|(_, m)| m).collect();
    files.push(OutFile {
        name: file.into(),
        what,
        text: emit::file(header, &maps),
    });
}

fn object_labels(ctx: &Ctx, l: &ListOrMap) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = l.pairs().into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    if let Some(s) = &ctx.opts.stack {
        labels.insert(STACK_NAMESPACE_LABEL.into(), s.clone());
    }
    labels
}

fn doc(kind: &str, name: &str, labels: &BTreeMap<String, String>, spec: Map) -> Map {
    let mut meta = Map::new();
    meta.set("name", name).nonempty("labels", labels);
    let mut d = Map::new();
    d.set("apiVersion", steward_spec::API_VERSION)
        .set("kind", kind)
        .set("metadata", meta)
        .set("spec", spec);
    d
}

fn scalar_map(m: &BTreeMap<String, Scalar>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}

/// `Network` documents of the networks services use (docker stack deploy creates no others).
fn network_docs(ctx: &mut Ctx) -> Vec<(String, Map)> {
    let mut out = Vec::new();
    for key in ctx.compose.networks.keys() {
        let def = ctx.compose.networks[key].as_ref();
        let external = def.and_then(|d| d.external.as_ref()).is_some_and(|e| e.is_external());
        if !external && !ctx.used_networks.contains(key) {
            ctx.report.notes.push(format!(
                "network {key} is used by no service: not imported (docker stack deploy does not create it either)"
            ));
        }
        if external {
            let (name, _) = ctx.network_name(key);
            ctx.report
                .to_provide
                .push(format!("existing network {name} (external)"));
        }
    }
    for key in ctx.used_networks.clone() {
        let empty = NetworkDef::default();
        let def = ctx
            .compose
            .networks
            .get(&key)
            .and_then(Option::as_ref)
            .unwrap_or(&empty);
        let (name, _) = ctx.network_name(&key);
        let mut spec = Map::new();
        spec.set(
            "driver",
            def.driver.clone().unwrap_or_else(|| DEFAULT_NETWORK_DRIVER.into()),
        );
        if def.attachable {
            spec.set("attachable", true);
        }
        if def.internal {
            spec.set("internal", true);
        }
        spec.nonempty("driverOpts", &scalar_map(&def.driver_opts));
        if ctx.opts.stack.is_some() {
            spec.set("adopt", true);
        }
        for (k, v) in &def.other {
            ctx.report
                .unsupported
                .push(format!("network {key}: {k}: {v} (steward cannot express it)"));
        }
        let labels = object_labels(ctx, &def.labels);
        out.push((name.clone(), doc("Network", &name, &labels, spec)));
    }
    out
}

/// `Volume` documents of the named volumes services mount.
fn volume_docs(ctx: &mut Ctx) -> Vec<(String, Map)> {
    let mut out = Vec::new();
    for (key, def) in &ctx.compose.volumes {
        let external = def
            .as_ref()
            .and_then(|d| d.external.as_ref())
            .is_some_and(|e| e.is_external());
        if external {
            let name = def.as_ref().and_then(|d| d.name.clone()).unwrap_or_else(|| key.clone());
            ctx.report.to_provide.push(format!(
                "existing volume {name} (external) on every node that runs its tasks"
            ));
            continue;
        }
        if !ctx.used_volumes.contains(key) {
            ctx.report
                .notes
                .push(format!("volume {key} is mounted by no service: not imported"));
            continue;
        }
        let empty = VolumeDef::default();
        let def = def.as_ref().unwrap_or(&empty);
        let name = def.name.clone().unwrap_or_else(|| ctx.scope(key));
        let mut spec = Map::new();
        spec.opt("driver", def.driver.clone());
        spec.nonempty(
            "driverOpts",
            &def.driver_opts.as_ref().map(scalar_map).unwrap_or_default(),
        );
        for (k, v) in &def.other {
            ctx.report
                .unsupported
                .push(format!("volume {key}: {k}: {v} (steward cannot express it)"));
        }
        let labels = object_labels(ctx, &def.labels);
        out.push((name.clone(), doc("Volume", &name, &labels, spec)));
    }
    out
}
