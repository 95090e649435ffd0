//! One Compose service → one `Service` document, mirroring what `docker stack deploy` writes
//! (docker/cli `cli/compose/convert/service.go`) when adopting a deployed stack.

use std::collections::BTreeMap;
use std::path::Path;

use super::compose::*;
use super::convert::{Ctx, STACK_IMAGE_LABEL, STACK_NAMESPACE_LABEL};
use super::emit::{Map, Node};
use super::units::*;

/// Env variable names whose values are treated as secrets (become `valueFrom`).
const SECRET_WORDS: [&str; 6] = ["PASSWORD", "SECRET", "TOKEN", "PRIVATE_KEY", "API_KEY", "PASSWD"];

/// Service keys `docker stack deploy` ignores as well (docker/cli `types.UnsupportedProperties`
/// and `DeprecatedProperties`), so nothing running depends on them.
const IGNORED_BY_STACK_DEPLOY: [&str; 17] = [
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "security_opt",
    "shm_size",
    "userns_mode",
    "container_name",
    "expose",
];

pub fn is_secret_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    !up.ends_with("_FILE") && SECRET_WORDS.iter().any(|w| up.contains(w))
}

/// The `Service` document of compose service `key`, or `None` when it cannot be expressed (the
/// reason is in the report).
pub fn service_doc(ctx: &mut Ctx, key: &str, s: &Service) -> Option<Map> {
    let name = ctx.scope(key);
    let Some(image) = s.image.clone() else {
        ctx.unsupported(
            key,
            "image",
            "no image (build only): steward deploys images; build and push it, then set spec.image; service skipped",
        );
        return None;
    };
    let global = match s.deploy.mode.as_deref() {
        None | Some("replicated") => false,
        Some("global") => true,
        Some(other) => {
            ctx.unsupported(
                key,
                "deploy.mode",
                &format!("mode {other:?} (jobs run to completion; steward manages services only); service skipped"),
            );
            return None;
        }
    };
    list_other(ctx, key, "", &s.other);

    let mut meta_labels = labels(&s.deploy.labels);
    let mut container_labels = labels(&s.labels);
    if let Some(stack) = ctx.opts.stack.clone() {
        meta_labels.insert(STACK_NAMESPACE_LABEL.into(), stack.clone());
        meta_labels.insert(STACK_IMAGE_LABEL.into(), image.clone());
        container_labels.insert(STACK_NAMESPACE_LABEL.into(), stack);
    }
    let mut metadata = Map::new();
    metadata.set("name", &name).nonempty("labels", &meta_labels);

    let mut spec = Map::new();
    spec.set("image", &image);
    if global {
        spec.set("mode", "global");
        if s.deploy.replicas.is_some() {
            ctx.unsupported(
                key,
                "deploy.replicas",
                "replicas of a global service (ignored by Swarm too)",
            );
        }
    } else {
        // docker stack deploy leaves replicas unset when the file does; Swarm then runs 1.
        spec.set("replicas", s.deploy.replicas.unwrap_or(1));
    }
    if ctx.opts.stack.is_some() {
        spec.set("adopt", true);
    }
    spec.opt("command", words(ctx, key, "entrypoint", s.entrypoint.as_ref()));
    spec.opt("args", words(ctx, key, "command", s.command.as_ref()));
    spec.nonempty("env", env(ctx, key, s));
    spec.nonempty("ports", ports(ctx, key, &s.ports));
    resources(ctx, key, &s.deploy.resources, &mut spec);
    if let Some(u) = &s.deploy.update_config {
        spec.set("update", policy(ctx, key, "deploy.update_config", u));
    }
    if let Some(u) = &s.deploy.rollback_config {
        spec.set("rollback", policy(ctx, key, "deploy.rollback_config", u));
    }
    spec.opt("restartPolicy", restart(ctx, key, s));
    placement(ctx, key, &s.deploy.placement, &mut spec);
    if let Some(m) = s.deploy.endpoint_mode.as_deref().filter(|m| *m != "vip") {
        ctx.unsupported(
            key,
            "deploy.endpoint_mode",
            &format!("{m} (steward services use Swarm's default, vip)"),
        );
    }
    list_other(ctx, key, "deploy.", &s.deploy.other);
    spec.nonempty("dependsOn", depends_on(ctx, key, s.depends_on.as_ref()));
    spec.nonempty("networks", ctx.service_networks(key, s.networks.as_ref()));
    spec.nonempty("mounts", mounts(ctx, key, s));
    spec.nonempty("secrets", ctx.file_refs(key, "secrets", &s.secrets));
    spec.nonempty("configs", ctx.file_refs(key, "configs", &s.configs));
    spec.opt(
        "healthcheck",
        s.healthcheck.as_ref().and_then(|h| healthcheck(ctx, key, h)),
    );
    spec.opt(
        "stopGracePeriod",
        duration(ctx, key, "stop_grace_period", s.stop_grace_period.as_deref()),
    );
    spec.opt("stopSignal", s.stop_signal.clone());
    spec.opt("user", s.user.as_ref().map(Scalar::to_string));
    spec.opt("workingDir", s.working_dir.clone());
    spec.opt("hostname", s.hostname.clone());
    spec.opt("init", s.init);
    spec.nonempty("labels", &container_labels);
    spec.opt("logging", logging(ctx, key, s.logging.as_ref()));
    spec.nonempty("ulimits", ulimits(&s.ulimits));
    spec.nonempty("capAdd", s.cap_add.clone());
    spec.nonempty("capDrop", s.cap_drop.clone());

    let mut doc = Map::new();
    doc.set("apiVersion", steward_spec::API_VERSION)
        .set("kind", "Service")
        .set("metadata", metadata)
        .set("spec", spec);
    Some(doc)
}

/// Lists the keys no typed field took, with the reason they are not imported.
pub fn list_other(ctx: &mut Ctx, key: &str, prefix: &str, other: &Other) {
    for (k, v) in other {
        if k.starts_with("x-") {
            continue;
        }
        let why = if prefix.is_empty() && IGNORED_BY_STACK_DEPLOY.contains(&k.as_str()) {
            "ignored by docker stack deploy too"
        } else {
            "steward cannot express it"
        };
        let value = serde_json::to_string(v).unwrap_or_default();
        let value = if value.chars().count() > 60 {
            format!("{}…", value.chars().take(57).collect::<String>())
        } else {
            value
        };
        ctx.unsupported(key, &format!("{prefix}{k}"), &format!("{value} ({why})"));
    }
}

fn labels(l: &ListOrMap) -> BTreeMap<String, String> {
    l.pairs().into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()
}

fn words(ctx: &mut Ctx, key: &str, field: &str, v: Option<&StrOrList>) -> Option<Vec<String>> {
    match v? {
        StrOrList::List(l) => Some(l.iter().map(Scalar::to_string).collect()),
        StrOrList::Str(s) => match shlex::split(s) {
            Some(w) => Some(w),
            None => {
                ctx.unsupported(key, field, &format!("{s:?}: unbalanced quotes; not imported"));
                None
            }
        },
    }
}

fn env(ctx: &mut Ctx, key: &str, s: &Service) -> Vec<Node> {
    let mut vars: BTreeMap<String, Option<String>> = BTreeMap::new();
    let files: Vec<String> = match &s.env_file {
        None => vec![],
        Some(StrOrList::Str(f)) => vec![f.clone()],
        Some(StrOrList::List(l)) => l.iter().map(Scalar::to_string).collect(),
    };
    for f in files {
        match ctx.read_relative(&f) {
            Ok(text) => vars.extend(parse_env_file(&text)),
            Err(e) => ctx.unsupported(key, "env_file", &format!("{f}: {e}; its variables are not imported")),
        }
    }
    vars.extend(s.environment.pairs());
    let mut out = Vec::new();
    for (name, value) in vars {
        let mut e = Map::new();
        e.set("name", &name);
        if is_secret_name(&name) {
            let mut from = Map::new();
            from.set("env", &name);
            e.set("valueFrom", from);
            if ctx.opts.stack.is_some() {
                // docker stack deploy put the value itself into the environment; keeping it
                // there is what makes the adopted service unchanged.
                e.set("expose", "env");
                ctx.secret(format!(
                    "env {name}: export the value {key} runs with (service {key}, environment; `expose: env` keeps it in the environment as docker stack deploy did — drop it to move the value into a Swarm secret)"
                ));
            } else {
                ctx.secret(format!("env {name} (service {key}, environment)"));
            }
        } else {
            // A variable without a value takes the shell's at deploy time, as in Compose.
            let v = value.or_else(|| (ctx.vars)(&name));
            if v.is_none() {
                ctx.note(format!(
                    "service {key}: environment {name} has no value and is not set here; imported as an empty string"
                ));
            }
            e.set("value", v.unwrap_or_default());
        }
        out.push(Node::Map(e));
    }
    out
}

/// `KEY=VALUE` lines; `#` comments and blank lines skipped.
fn parse_env_file(text: &str) -> BTreeMap<String, Option<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.to_string())),
            None => (l.to_string(), None),
        })
        .collect()
}

fn ports(ctx: &mut Ctx, key: &str, ports: &[PortDef]) -> Vec<Node> {
    let mut out = Vec::new();
    for p in ports {
        match p {
            PortDef::Short(s) => match short_port(&s.to_string()) {
                Ok(list) => {
                    for (target, published, proto) in list {
                        let mut m = Map::new();
                        m.set("target", target).opt("published", published);
                        if proto != "tcp" {
                            m.set("protocol", proto.as_str());
                        }
                        out.push(Node::Map(m));
                    }
                }
                Err(why) => ctx.unsupported(key, "ports", &format!("{s}: {why}")),
            },
            PortDef::Long(l) => {
                let mut m = Map::new();
                m.set("target", l.target);
                if let Some(p) = &l.published {
                    match p.to_string().parse::<u16>() {
                        Ok(n) => {
                            m.set("published", n);
                        }
                        Err(_) => ctx.unsupported(
                            key,
                            "ports.published",
                            &format!("{p} (a range; steward publishes single ports)"),
                        ),
                    }
                }
                m.opt("protocol", l.protocol.clone().filter(|p| p != "tcp"));
                m.opt("mode", l.mode.clone().filter(|p| p != "ingress"));
                list_other(ctx, key, "ports.", &l.other);
                out.push(Node::Map(m));
            }
        }
    }
    out
}

/// `[IP:][PUBLISHED[-END]:]TARGET[-END][/PROTO]`, ranges expanded. IPs cannot be expressed.
fn short_port(s: &str) -> Result<Vec<(u16, Option<u16>, String)>, String> {
    let (spec, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [t] => (None, *t),
        [p, t] => (Some(*p), *t),
        [_, _, _] => return Err("binding to a host IP (steward publishes on every address)".into()),
        _ => return Err("not a port".into()),
    };
    let range = |r: &str| -> Result<(u16, u16), String> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let a: u16 = a.parse().map_err(|_| format!("{r:?} is not a port"))?;
        let b: u16 = b.parse().map_err(|_| format!("{r:?} is not a port"))?;
        Ok((a, b))
    };
    let (t0, t1) = range(target)?;
    let pub_range = published.filter(|p| !p.is_empty()).map(range).transpose()?;
    let n = t1.checked_sub(t0).ok_or("reversed range")?;
    if let Some((p0, p1)) = pub_range {
        if p1.checked_sub(p0) != Some(n) {
            return Err("published and target ranges differ in length".into());
        }
    }
    Ok((0..=n)
        .map(|i| (t0 + i, pub_range.map(|(p0, _)| p0 + i), proto.to_string()))
        .collect())
}

fn resources(ctx: &mut Ctx, key: &str, r: &ResourcesDef, spec: &mut Map) {
    let mut out = Map::new();
    for (field, a) in [("limits", &r.limits), ("reservations", &r.reservations)] {
        let Some(a) = a else { continue };
        let mut m = Map::new();
        if let Some(c) = &a.cpus {
            match c.to_string().parse::<f64>() {
                Ok(n) => {
                    m.set("cpus", n);
                }
                Err(_) => ctx.unsupported(
                    key,
                    &format!("deploy.resources.{field}.cpus"),
                    &format!("{c}: not a number"),
                ),
            }
        }
        if let Some(mem) = &a.memory {
            match parse_docker_bytes(&mem.to_string()).map(format_bytes) {
                Ok(Some(b)) => {
                    m.set("memory", b);
                }
                Ok(None) => {}
                Err(e) => ctx.unsupported(key, &format!("deploy.resources.{field}.memory"), &e),
            }
        }
        list_other(ctx, key, &format!("deploy.resources.{field}."), &a.other);
        out.nonempty(field, m);
    }
    list_other(ctx, key, "deploy.resources.", &r.other);
    spec.nonempty("resources", out);
}

fn policy(ctx: &mut Ctx, key: &str, field: &str, u: &UpdateDef) -> Map {
    let mut m = Map::new();
    let adopting = ctx.opts.stack.is_some();
    // docker stack deploy writes parallelism 1 when unset, and a zero monitor (Swarm then uses
    // its default of 5 s, but reports 0): mirrored so the adopted service plans no change.
    if adopting || u.parallelism.is_some() {
        m.set("parallelism", u.parallelism.unwrap_or(1));
    }
    m.opt(
        "delay",
        duration(ctx, key, &format!("{field}.delay"), u.delay.as_deref()),
    );
    m.opt("failureAction", u.failure_action.clone());
    match duration(ctx, key, &format!("{field}.monitor"), u.monitor.as_deref()) {
        Some(d) => {
            m.set("monitor", d);
        }
        None if adopting => {
            m.set("monitor", "0s");
        }
        None => {}
    }
    m.opt("maxFailureRatio", u.max_failure_ratio);
    m.opt("order", u.order.clone());
    list_other(ctx, key, &format!("{field}."), &u.other);
    m
}

fn duration(ctx: &mut Ctx, key: &str, field: &str, v: Option<&str>) -> Option<String> {
    match parse_go_duration(v?) {
        Ok(ns) => Some(format_duration(ns)),
        Err(e) => {
            ctx.unsupported(key, field, &e);
            None
        }
    }
}

fn restart(ctx: &mut Ctx, key: &str, s: &Service) -> Option<Map> {
    let mut m = Map::new();
    if let Some(r) = &s.deploy.restart_policy {
        m.opt("condition", r.condition.clone());
        m.opt(
            "delay",
            duration(ctx, key, "deploy.restart_policy.delay", r.delay.as_deref()),
        );
        m.opt("maxAttempts", r.max_attempts);
        m.opt(
            "window",
            duration(ctx, key, "deploy.restart_policy.window", r.window.as_deref()),
        );
        list_other(ctx, key, "deploy.restart_policy.", &r.other);
        return Some(m);
    }
    // The legacy `restart:` key, as docker stack deploy reads it.
    let r = s.restart.as_deref()?;
    let (policy, count) = r.split_once(':').map_or((r, None), |(p, n)| (p, n.parse::<u64>().ok()));
    match policy {
        "always" | "unless-stopped" => {
            m.set("condition", "any");
        }
        "on-failure" => {
            m.set("condition", "on-failure");
        }
        "no" | "" => {
            ctx.note(format!("service {key}: `restart: no` is ignored by docker stack deploy (Swarm restarts on any exit); not imported — set restartPolicy.condition: none to keep exited containers down"));
            return None;
        }
        other => {
            ctx.unsupported(key, "restart", &format!("{other:?}: unknown policy"));
            return None;
        }
    }
    m.opt("maxAttempts", count.filter(|n| *n > 0));
    Some(m)
}

fn placement(ctx: &mut Ctx, key: &str, p: &PlacementDef, spec: &mut Map) {
    let mut m = Map::new();
    m.nonempty("constraints", p.constraints.clone());
    let prefs: Vec<Node> = p
        .preferences
        .iter()
        .map(|s| {
            let mut sp = Map::new();
            sp.set("spread", &s.spread);
            Node::Map(sp)
        })
        .collect();
    m.nonempty("preferences", prefs);
    m.opt("maxReplicasPerNode", p.max_replicas_per_node.filter(|n| *n > 0));
    list_other(ctx, key, "deploy.placement.", &p.other);
    spec.nonempty("placement", m);
}

fn depends_on(ctx: &mut Ctx, key: &str, d: Option<&DependsOn>) -> Vec<String> {
    let names: Vec<String> = match d {
        None => return vec![],
        Some(DependsOn::List(l)) => l.clone(),
        Some(DependsOn::Map(m)) => {
            for (dep, cond) in m {
                ctx.unsupported(
                    key,
                    &format!("depends_on.{dep}"),
                    &format!("{cond} (conditions; steward's dependsOn orders rollouts only)"),
                );
            }
            m.keys().cloned().collect()
        }
    };
    ctx.note(format!(
        "service {key}: depends_on became dependsOn (steward rolls those out first; docker stack deploy ignores depends_on)"
    ));
    names.iter().map(|n| ctx.scope(n)).collect()
}

fn mounts(ctx: &mut Ctx, key: &str, s: &Service) -> Vec<Node> {
    let mut out = Vec::new();
    for v in &s.volumes {
        if let Some(m) = ctx.mount(key, v) {
            out.push(Node::Map(m));
        }
    }
    let tmpfs: Vec<String> = match &s.tmpfs {
        None => vec![],
        Some(StrOrList::Str(t)) => vec![t.clone()],
        Some(StrOrList::List(l)) => l.iter().map(Scalar::to_string).collect(),
    };
    for t in tmpfs {
        if ctx.opts.stack.is_some() {
            ctx.unsupported(
                key,
                "tmpfs",
                &format!("{t} (ignored by docker stack deploy, so not running; add a tmpfs mount to have it)"),
            );
            continue;
        }
        let (target, opts) = t.split_once(':').unwrap_or((&t, ""));
        let mut m = Map::new();
        m.set("type", "tmpfs").set("target", target);
        if !opts.is_empty() {
            ctx.unsupported(key, "tmpfs", &format!("{t}: options {opts:?}"));
        }
        out.push(Node::Map(m));
    }
    out
}

fn healthcheck(ctx: &mut Ctx, key: &str, h: &Healthcheck) -> Option<Map> {
    let mut m = Map::new();
    if h.disable {
        m.set("test", vec!["NONE"]);
        return Some(m);
    }
    let test: Vec<String> = match h.test.as_ref() {
        None => {
            ctx.unsupported(
                key,
                "healthcheck",
                "no test (only timings; the image's test is kept by Docker but steward needs the test)",
            );
            return None;
        }
        Some(StrOrList::Str(s)) => vec!["CMD-SHELL".into(), s.clone()],
        Some(StrOrList::List(l)) => l.iter().map(Scalar::to_string).collect(),
    };
    m.set("test", test);
    m.opt(
        "interval",
        duration(ctx, key, "healthcheck.interval", h.interval.as_deref()),
    );
    m.opt(
        "timeout",
        duration(ctx, key, "healthcheck.timeout", h.timeout.as_deref()),
    );
    m.opt("retries", h.retries);
    m.opt(
        "startPeriod",
        duration(ctx, key, "healthcheck.start_period", h.start_period.as_deref()),
    );
    list_other(ctx, key, "healthcheck.", &h.other);
    Some(m)
}

fn logging(ctx: &mut Ctx, key: &str, l: Option<&LoggingDef>) -> Option<Map> {
    let l = l?;
    let Some(driver) = &l.driver else {
        ctx.unsupported(
            key,
            "logging.options",
            "options without a driver (steward needs the driver's name)",
        );
        return None;
    };
    let opts: BTreeMap<String, String> = l
        .options
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().map(Scalar::to_string).unwrap_or_default()))
        .collect();
    let mut m = Map::new();
    m.set("driver", driver).nonempty("options", &opts);
    Some(m)
}

fn ulimits(u: &BTreeMap<String, UlimitDef>) -> Map {
    let mut m = Map::new();
    for (name, v) in u {
        match v {
            UlimitDef::Single(n) => m.set(name, *n),
            UlimitDef::Pair { soft, hard } => {
                let mut p = Map::new();
                p.set("soft", *soft).set("hard", *hard);
                m.set(name, p)
            }
        };
    }
    m
}

/// A bind mount's source as docker stack deploy resolves it: relative to the Compose file's
/// directory, `~` to the home directory.
pub fn bind_source(dir: &Path, src: &str, home: Option<String>) -> String {
    if let (Some(rest), Some(h)) = (src.strip_prefix('~'), home) {
        return format!("{h}{rest}");
    }
    if src.starts_with('/') {
        return src.to_string();
    }
    let mut p = dir.to_path_buf();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                p.pop();
            }
            x => p.push(x),
        }
    }
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ports() {
        assert_eq!(short_port("8080:80").unwrap(), vec![(80, Some(8080), "tcp".into())]);
        assert_eq!(short_port("53/udp").unwrap(), vec![(53, None, "udp".into())]);
        assert_eq!(short_port("9000-9001:90-91").unwrap().len(), 2);
        assert!(short_port("127.0.0.1:80:80").is_err());
    }

    #[test]
    fn secret_names() {
        assert!(is_secret_name("DB_PASSWORD"));
        assert!(is_secret_name("github_token"));
        assert!(!is_secret_name("DB_PASSWORD_FILE"));
        assert!(!is_secret_name("DB_HOST"));
    }

    #[test]
    fn bind_sources_resolve_like_compose() {
        let d = Path::new("/srv/app");
        assert_eq!(bind_source(d, "./data", None), "/srv/app/data");
        assert_eq!(bind_source(d, "../x", None), "/srv/x");
        assert_eq!(bind_source(d, "~/y", Some("/root".into())), "/root/y");
        assert_eq!(bind_source(d, "/abs", None), "/abs");
    }
}
