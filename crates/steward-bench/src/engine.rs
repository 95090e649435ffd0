//! A minimal, read-only Engine API client: `GET` over the unix socket with HTTP/1.0 (the engine
//! then answers without chunked encoding and closes the connection).
//!
//! Kept separate from steward's own client on purpose: the observations the bench makes (drift
//! restored? replicas back?) must not go through the code being measured, nor show up in its
//! call counters.

use std::path::PathBuf;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const API_PREFIX: &str = "/v1.41";

#[derive(Clone)]
pub struct Engine {
    socket: PathBuf,
}

impl Engine {
    /// `host` is a docker host string; only `unix://` sockets are supported here.
    pub fn new(host: &str) -> anyhow::Result<Self> {
        match host.strip_prefix("unix://") {
            Some(path) => Ok(Self {
                socket: PathBuf::from(path),
            }),
            None if host.starts_with('/') => Ok(Self {
                socket: PathBuf::from(host),
            }),
            None => bail!("the bench reads the engine through a unix socket; got docker host {host:?}"),
        }
    }

    /// `GET /v1.41{path}` and parse the JSON body. Errors on any non-2xx status.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.get_raw(path).await?;
        if !(200..300).contains(&status) {
            bail!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: invalid JSON"))
    }

    /// `GET /v1.41{path}`: HTTP status and body, whatever the status.
    pub async fn get_raw(&self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("cannot connect to {}", self.socket.display()))?;
        let req = format!("GET {API_PREFIX}{path} HTTP/1.0\r\nHost: docker\r\nAccept: application/json\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(8192);
        s.read_to_end(&mut buf).await?;
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("malformed HTTP response from the engine")?;
        let head = String::from_utf8_lossy(&buf[..split]);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status from the engine")?;
        Ok((status, buf[split + 4..].to_vec()))
    }

    /// Times `GET /distribution/{image}/json`: the registry lookup `docker stack deploy` asks the
    /// engine for, once per service, with the default `--resolve-image always`.
    pub async fn time_distribution(&self, image: &str) -> anyhow::Result<(u16, std::time::Duration)> {
        let t = std::time::Instant::now();
        let (status, _) = self.get_raw(&format!("/distribution/{image}/json")).await?;
        Ok((status, t.elapsed()))
    }

    /// `Spec.Mode.Replicated.Replicas` of one service.
    pub async fn spec_replicas(&self, service: &str) -> anyhow::Result<u64> {
        let v = self.get(&format!("/services/{}", encode(service))).await?;
        v.pointer("/Spec/Mode/Replicated/Replicas")
            .and_then(|r| r.as_u64())
            .with_context(|| format!("service {service} has no replicated mode"))
    }

    /// `UpdateStatus.State` and `.Message` of one service (`none` when Swarm reports no update
    /// status): what `docker service inspect` shows.
    pub async fn update_status(&self, service: &str) -> anyhow::Result<(String, String)> {
        let v = self.get(&format!("/services/{}", encode(service))).await?;
        let state = v
            .pointer("/UpdateStatus/State")
            .and_then(|s| s.as_str())
            .unwrap_or("none")
            .to_string();
        let message = v
            .pointer("/UpdateStatus/Message")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string();
        Ok((state, message))
    }

    /// (running, desired) task counts of the services matching `filters` (a JSON filter object),
    /// keyed by service name. Needs API 1.41 (`status=true`).
    pub async fn task_counts(&self, filters: &serde_json::Value) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let v = self
            .get(&format!(
                "/services?status=true&filters={}",
                encode(&filters.to_string())
            ))
            .await?;
        let list = v.as_array().context("service list is not an array")?;
        Ok(list
            .iter()
            .map(|s| {
                let name = s
                    .pointer("/Spec/Name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_string();
                let running = s
                    .pointer("/ServiceStatus/RunningTasks")
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0);
                let desired = s
                    .pointer("/ServiceStatus/DesiredTasks")
                    .and_then(|n| n.as_u64())
                    .unwrap_or(0);
                (name, running, desired)
            })
            .collect())
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_filters() {
        assert_eq!(
            super::encode(r#"{"name":["a b"]}"#),
            "%7B%22name%22%3A%5B%22a%20b%22%5D%7D"
        );
    }
}
