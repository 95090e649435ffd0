//! Manifest text: a small ordered YAML tree, written in block style with keys in the order the
//! converter chose (apiVersion, kind, metadata, spec), which a serializer of maps would not keep.

use std::fmt::Write;

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Permission bits, written `0o440`.
    Octal(u32),
    List(Vec<Node>),
    Map(Map),
}

/// A mapping in insertion order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map(pub Vec<(String, Node)>);

impl Map {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&mut self, key: &str, value: impl Into<Node>) -> &mut Self {
        self.0.push((key.to_string(), value.into()));
        self
    }
    pub fn opt<T: Into<Node>>(&mut self, key: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.set(key, v);
        }
        self
    }
    /// Sets `key` unless `value` is an empty list or map.
    pub fn nonempty(&mut self, key: &str, value: impl Into<Node>) -> &mut Self {
        let v = value.into();
        let empty = match &v {
            Node::List(l) => l.is_empty(),
            Node::Map(m) => m.0.is_empty(),
            _ => false,
        };
        if !empty {
            self.0.push((key.to_string(), v));
        }
        self
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Map> for Node {
    fn from(m: Map) -> Self {
        Node::Map(m)
    }
}
impl From<String> for Node {
    fn from(s: String) -> Self {
        Node::Str(s)
    }
}
impl From<&str> for Node {
    fn from(s: &str) -> Self {
        Node::Str(s.to_string())
    }
}
impl From<&String> for Node {
    fn from(s: &String) -> Self {
        Node::Str(s.clone())
    }
}
impl From<bool> for Node {
    fn from(b: bool) -> Self {
        Node::Bool(b)
    }
}
impl From<i64> for Node {
    fn from(n: i64) -> Self {
        Node::Int(n)
    }
}
impl From<u64> for Node {
    fn from(n: u64) -> Self {
        Node::Int(n as i64)
    }
}
impl From<u32> for Node {
    fn from(n: u32) -> Self {
        Node::Int(i64::from(n))
    }
}
impl From<u16> for Node {
    fn from(n: u16) -> Self {
        Node::Int(i64::from(n))
    }
}
impl From<f64> for Node {
    fn from(n: f64) -> Self {
        Node::Float(n)
    }
}
impl<T: Into<Node>> From<Vec<T>> for Node {
    fn from(v: Vec<T>) -> Self {
        Node::List(v.into_iter().map(Into::into).collect())
    }
}
impl From<&std::collections::BTreeMap<String, String>> for Node {
    fn from(m: &std::collections::BTreeMap<String, String>) -> Self {
        Node::Map(Map(m.iter().map(|(k, v)| (k.clone(), Node::Str(v.clone()))).collect()))
    }
}

/// Lines of flow-style lists stay under this width; longer ones are written one item a line.
const FLOW_WIDTH: usize = 72;

/// One YAML file: a header comment, then the documents separated by `---`.
pub fn file(header: &str, docs: &[Map]) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        map_block(&mut out, d, 0);
    }
    out
}

fn map_block(out: &mut String, m: &Map, indent: usize) {
    let pad = " ".repeat(indent);
    for (k, v) in &m.0 {
        let key = scalar_str(k);
        match v {
            Node::Map(inner) if !inner.is_empty() => {
                let _ = writeln!(out, "{pad}{key}:");
                map_block(out, inner, indent + 2);
            }
            Node::List(items) if !items.is_empty() && flow(items).is_none() => {
                let _ = writeln!(out, "{pad}{key}:");
                list_block(out, items, indent + 2);
            }
            _ => {
                let _ = writeln!(out, "{pad}{key}: {}", inline(v).expect("scalar or flow"));
            }
        }
    }
}

fn list_block(out: &mut String, items: &[Node], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Node::Map(m) if !m.is_empty() => {
                // The first key goes on the dash line, the others under it.
                let mut text = String::new();
                map_block(&mut text, m, indent + 2);
                let body = text.strip_prefix(&" ".repeat(indent + 2)).unwrap_or(&text);
                let _ = write!(out, "{pad}- {body}");
            }
            Node::List(inner) if !inner.is_empty() && flow(inner).is_none() => {
                let _ = writeln!(out, "{pad}-");
                list_block(out, inner, indent + 2);
            }
            _ => {
                let _ = writeln!(out, "{pad}- {}", inline(item).expect("scalar or flow"));
            }
        }
    }
}

/// A scalar, an empty collection, or a short list of scalars in flow style.
fn inline(v: &Node) -> Option<String> {
    Some(match v {
        Node::Str(s) => scalar_str(s),
        Node::Int(n) => n.to_string(),
        Node::Float(f) => format!("{f:?}"),
        Node::Bool(b) => b.to_string(),
        Node::Octal(n) => format!("0o{n:o}"),
        Node::Map(m) if m.is_empty() => "{}".into(),
        Node::List(l) => flow(l)?,
        Node::Map(_) => return None,
    })
}

fn flow(items: &[Node]) -> Option<String> {
    let parts: Option<Vec<String>> = items
        .iter()
        .map(|i| match i {
            Node::List(_) | Node::Map(_) => None,
            other => inline(other),
        })
        .collect();
    let s = format!("[{}]", parts?.join(", "));
    (s.len() <= FLOW_WIDTH).then_some(s)
}

/// Plain when YAML reads it back as this same string; double-quoted (JSON escapes) otherwise.
fn scalar_str(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serializes")
    }
}

fn is_plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let safe_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@+=%~^".contains(c) || (c == ' ' && !s.ends_with(' ')));
    let looks_typed = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    ) || s.parse::<f64>().is_ok()
        || s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_digit() || "_:.+-oxe".contains(c));
    safe_chars
        && (first.is_ascii_alphanumeric()
            || first == '/'
            || first == '_'
            || first == '-' && s.len() > 1 && !s[1..].starts_with(' '))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !looks_typed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_yaml_would_retype() {
        for s in [
            "true", "no", "y", "8080", "0.5", "-1", "80:80", "", " x", "a: b", "-", "*a", "1e3", "0o444", "x:",
        ] {
            assert!(!is_plain(s), "{s:?} must be quoted");
        }
        for s in [
            "taxcollector-demo:v1",
            "node.role == manager",
            "/data",
            "CMD-SHELL",
            "30s",
            "a b",
            "--port",
        ] {
            assert!(is_plain(s), "{s:?} can be plain");
        }
    }

    #[test]
    fn writes_blocks_and_flow_lists() {
        let mut inner = Map::new();
        inner.set("name", "a").set("aliases", vec!["x", "y"]);
        let mut m = Map::new();
        m.set("list", vec![Node::Map(inner)])
            .set("args", vec!["--port", "80"])
            .set("empty", Map::new());
        assert_eq!(
            file("h", &[m]),
            "# h\nlist:\n  - name: a\n    aliases: [x, \"y\"]\nargs: [--port, \"80\"]\nempty: {}\n"
        );
    }
}
