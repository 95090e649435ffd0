//! One Engine API read done without bollard's types: bollard spells the container spec's
//! healthcheck `HealthCheck` while the Engine (20.10) writes `Healthcheck`, so a service read
//! through bollard loses its healthcheck and every pass would see drift. The service list is
//! fetched as JSON here, the key fixed, then decoded into bollard's `Service`.

use std::path::PathBuf;
use std::time::Duration;

use bollard::models::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    pub(crate) fn parse(host: &str) -> Endpoint {
        if let Some(path) = host.strip_prefix("unix://") {
            Endpoint::Unix(path.into())
        } else if let Some(addr) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
            Endpoint::Tcp(addr.trim_end_matches('/').to_string())
        } else {
            Endpoint::Unix(host.into())
        }
    }
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
fn encode(s: &str) -> String {
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

async fn get(ep: &Endpoint, path: &str) -> Result<Vec<u8>, String> {
    // HTTP/1.0 and `Connection: close`: no chunked encoding, and the body ends at Content-Length
    // (read exactly, so a peer or proxy that keeps the connection open does not stall the read).
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nConnection: close\r\n\r\n");
    match ep {
        Endpoint::Unix(p) => {
            let mut s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| format!("{}: {e}", p.display()))?;
            s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
            read_response(&mut s).await
        }
        Endpoint::Tcp(a) => {
            let mut s = tokio::net::TcpStream::connect(a)
                .await
                .map_err(|e| format!("{a}: {e}"))?;
            s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
            read_response(&mut s).await
        }
    }
}

async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (split, length) = loop {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response headers".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (split, length);
        }
    };
    let body_start = split + 4;
    match length {
        Some(len) => {
            while buf.len() < body_start + len {
                let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed before the end of the response".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.truncate(body_start + len);
        }
        None => {
            s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        }
    }
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = buf[body_start..].to_vec();
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()));
    }
    Ok(body)
}

/// Why a raw read failed: the engine could not be reached (or answered an error), or its
/// answer could not be decoded.
#[derive(Debug)]
pub(crate) enum RawError {
    Unreachable(String),
    Undecodable(String),
}

/// `GET /v1.41/services?filters=...&status=true`, healthchecks kept.
pub(crate) async fn list_services(
    ep: &Endpoint,
    filters: &std::collections::HashMap<String, Vec<String>>,
    timeout: Duration,
) -> Result<Vec<Service>, RawError> {
    let filters = serde_json::to_string(filters).expect("filters serialize");
    let path = format!("/v1.41/services?status=true&filters={}", encode(&filters));
    let body = tokio::time::timeout(timeout, get(ep, &path))
        .await
        .map_err(|_| RawError::Unreachable(format!("no answer within {timeout:?}")))?
        .map_err(RawError::Unreachable)?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| RawError::Undecodable(format!("service list: {e}")))?;
    if let Some(list) = v.as_array_mut() {
        for s in list {
            if let Some(c) = s
                .pointer_mut("/Spec/TaskTemplate/ContainerSpec")
                .and_then(|c| c.as_object_mut())
            {
                if let Some(h) = c.remove("Healthcheck") {
                    c.insert("HealthCheck".into(), h);
                }
            }
        }
    }
    serde_json::from_value(v).map_err(|e| RawError::Undecodable(format!("service list: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            super::encode(r#"{"label":["a=b"]}"#),
            "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"
        );
    }
}
