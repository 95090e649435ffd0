//! Validated scalar values. Each rejects bad input while deserializing, so the YAML reader
//! reports the error at the value's own line and column.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! string_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A Swarm service name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

/// Swarm rejects service names longer than 63 characters (they become DNS labels).
const MAX_NAME_LEN: usize = 63;

impl ResourceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if s.is_empty() || s.len() > MAX_NAME_LEN || !first_ok || !rest_ok {
            return Err(format!(
                "invalid name {s:?}: expected 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
            ));
        }
        Ok(Self(s))
    }
}

impl From<ResourceName> for String {
    fn from(n: ResourceName) -> String {
        n.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_schema!(ResourceName, "ResourceName", {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
});

/// A container image reference: `[host[:port]/]path[:tag][@algorithm:hex]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef(String);

impl ImageRef {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match check_image(&s) {
            Ok(()) => Ok(Self(s)),
            Err(why) => Err(format!(
                "invalid image reference {s:?}: {why} (expected [host[:port]/]name[:tag][@sha256:digest])"
            )),
        }
    }
}

fn check_image(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > 255 {
        return Err("longer than 255 characters");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or("digest must be algorithm:hex")?;
        let algo_ok = !algo.is_empty()
            && algo
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("malformed digest");
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err("malformed tag");
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    // The first component is a registry host when it has a '.', a ':' or is "localhost".
    if components.len() > 1 {
        let host = components[0];
        if host.contains('.') || host.contains(':') || host == "localhost" {
            let (h, port) = match host.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host, None),
            };
            if h.is_empty() || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                return Err("malformed registry host");
            }
            if port.is_some_and(|p| p.parse::<u16>().is_err()) {
                return Err("malformed registry port");
            }
            components.remove(0);
        }
    }
    for c in components {
        let ok = !c.is_empty()
            && c.chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars()
                .last()
                .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch));
        if !ok {
            return Err("repository names are lowercase letters, digits and separators");
        }
    }
    Ok(())
}

impl From<ImageRef> for String {
    fn from(n: ImageRef) -> String {
        n.0
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_schema!(ImageRef, "ImageRef", {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": "[host[:port]/]name[:tag][@sha256:digest]"
});

/// A replica count, 0 to [`Replicas::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u64")]
pub struct Replicas(u32);

impl Replicas {
    /// Far above anything one Swarm runs per service here; a larger number is a typo.
    pub const MAX: u32 = 1000;
    pub fn get(self) -> u32 {
        self.0
    }
    pub fn new(n: u32) -> Option<Self> {
        (n <= Self::MAX).then_some(Self(n))
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Self(1)
    }
}

impl TryFrom<i64> for Replicas {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        if (0..=i64::from(Self::MAX)).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(format!("replicas must be between 0 and {}, got {n}", Self::MAX))
        }
    }
}

impl From<Replicas> for u64 {
    fn from(r: Replicas) -> u64 {
        u64::from(r.0)
    }
}

impl JsonSchema for Replicas {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Replicas")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 0, "maximum": 1000, "default": 1})
    }
}

/// A duration written as text: `30s`, `5m`, `1h30m`, `250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
    pub fn as_nanos_i64(self) -> i64 {
        i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// Parses a duration like `30s` or `1h30m`; a bare number is refused because its unit would be a guess.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (expected e.g. 30s, 5m, 1h30m)"))
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m or 1h30m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                parse_duration(s).map(Duration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
                if n == 0 {
                    Ok(Duration::ZERO)
                } else {
                    Err(E::custom(format!(
                        "invalid duration {n}: a unit is required (e.g. {n}s)"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
                Err(E::custom(format!("invalid duration {n}: expected e.g. 30s")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
                Err(E::custom(format!("invalid duration {n}: expected e.g. 30s")))
            }
        }
        d.deserialize_any(V)
    }
}

string_schema!(Duration, "Duration", {
    "type": "string",
    "pattern": "^([0-9]+(ns|us|ms|s|m|h|d) *)+$",
    "description": "A duration such as 30s, 5m, 1h30m or 250ms"
});

/// A CPU count such as `0.5` or `2` (Swarm stores nano-CPUs).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Cpus(f64);

impl Cpus {
    pub fn nano_cpus(self) -> i64 {
        (self.0 * 1e9).round() as i64
    }
}

impl TryFrom<f64> for Cpus {
    type Error = String;
    fn try_from(n: f64) -> Result<Self, String> {
        // 1 nano-CPU is Swarm's resolution; 1024 CPUs is beyond any node.
        if n.is_finite() && (1e-9..=1024.0).contains(&n) {
            Ok(Self(n))
        } else {
            Err(format!("cpus must be between 0.000000001 and 1024, got {n}"))
        }
    }
}

impl From<Cpus> for f64 {
    fn from(c: Cpus) -> f64 {
        c.0
    }
}

impl JsonSchema for Cpus {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Cpus")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "exclusiveMinimum": 0, "maximum": 1024})
    }
}

/// A memory amount: bytes, or a number with `K`, `M`, `G`, `T` (powers of 1000) or `Ki`, `Mi`,
/// `Gi`, `Ti` (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid memory size {s:?}: expected e.g. 512Mi, 1Gi or 256M"))?;
        let mult: u64 = match unit {
            "" => 1,
            "K" | "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid memory unit {unit:?} in {s:?}: expected one of K, M, G, T, Ki, Mi, Gi, Ti"
                ))
            }
        };
        let bytes = n
            .checked_mul(mult)
            .ok_or_else(|| format!("memory size {s:?} is too large"))?;
        if bytes == 0 {
            return Err("memory size must be greater than 0".into());
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
        for (u, m) in UNITS {
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{u}", self.0 / m);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a memory size such as 512Mi")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                ByteSize::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                Err(E::custom(format!("memory size must be positive, got {n}")))
            }
        }
        d.deserialize_any(V)
    }
}

string_schema!(ByteSize, "ByteSize", {
    "type": ["string", "integer"],
    "pattern": "^[0-9]+(K|k|M|G|T|Ki|Mi|Gi|Ti)?$",
    "minimum": 1
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images() {
        for ok in [
            "taxcollector:v2.1.0",
            "nginx",
            "library/nginx:1.25",
            "localhost:5000/team/app:1",
            "registry.example/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(ImageRef::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Tax:v1",
            "tax:",
            "tax:v1 ",
            "a//b",
            "tax@sha256:xyz",
            "-tax",
            "tax:-v1",
        ] {
            assert!(ImageRef::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("512Mi").unwrap().bytes(), 512 << 20);
        assert_eq!(ByteSize::parse("1G").unwrap().bytes(), 1_000_000_000);
        assert_eq!(ByteSize::parse("512Mi").unwrap().to_string(), "512Mi");
        assert!(ByteSize::parse("12XB").is_err());
        assert!(ByteSize::parse("0").is_err());
    }

    #[test]
    fn names() {
        assert!(ResourceName::try_from("taxcollector-web".to_string()).is_ok());
        assert!(ResourceName::try_from("-web".to_string()).is_err());
        assert!(ResourceName::try_from("a".repeat(64)).is_err());
        assert!(ResourceName::try_from("web service".to_string()).is_err());
    }
}
