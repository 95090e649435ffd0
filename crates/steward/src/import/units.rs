//! Compose's units (Go durations, Docker's memory sizes) read the way `docker stack deploy`
//! reads them, and written in steward's spelling.

/// Go's `time.ParseDuration`: `1m30s`, `1.5s`, `500ms`, `10us`, `0`. In nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 30s, 1m30s, 500ms)");
    let t = s.trim();
    if t == "0" {
        return Ok(0);
    }
    let mut rest = t;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += num * mult;
        rest = &rest[unit_len..];
    }
    Ok(total.round() as i64)
}

/// steward's spelling of a duration: `1m30s`, `500ms`, `0s`.
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut left = ns;
    for (unit, size) in [
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if left >= size {
            out.push_str(&format!("{}{unit}", left / size));
            left %= size;
        }
    }
    out
}

/// Docker's `units.RAMInBytes`: `512m`, `1g`, `64MiB`, `1.5g`, a plain number of bytes. Its
/// `k`, `m`, `g` are binary (1024-based), unlike steward's `K`, `M`, `G`.
pub fn parse_docker_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?} (expected e.g. 512m, 1g or a number of bytes)");
    let t = s.trim();
    let num_len = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let num: f64 = t[..num_len].parse().map_err(|_| bad())?;
    let unit = t[num_len..].trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let exp = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return Err(bad()),
    };
    Ok((num * 1024f64.powi(exp)) as u64)
}

/// steward's spelling of a size: `64Mi` when exact, else the number of bytes.
pub fn format_bytes(b: u64) -> Option<String> {
    for (unit, size) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if b >= size && b.is_multiple_of(size) {
            return Some(format!("{}{unit}", b / size));
        }
    }
    (b > 0).then(|| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_go_duration("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_go_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("5 minutes").is_err());
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(1_500_000_000), "1s500ms");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(parse_docker_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_docker_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_docker_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_docker_bytes("1000").unwrap(), 1000);
        assert!(parse_docker_bytes("12 parsecs").is_err());
        assert_eq!(format_bytes(64 << 20).as_deref(), Some("64Mi"));
        assert_eq!(format_bytes(1000).as_deref(), Some("1000"));
    }
}
