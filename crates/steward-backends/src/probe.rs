//! HTTP health probes. A probe never fails as a call: every outcome, a refused connection
//! included, is a `ProbeResult` that the caller can count and show.

use std::error::Error as _;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// One line for status and events: "HTTP 200", "HTTP 500 (expected 200)", "timeout after 1s",
    /// "connection refused", ...
    pub detail: String,
    pub elapsed: Duration,
}

/// GETs `url` and compares the status with `expect_status`. `timeout` bounds the whole probe,
/// connecting included. Only the status line and headers are waited for: a body that trickles
/// in must not make a healthy answer look like a timeout.
pub async fn http_probe(client: &reqwest::Client, url: &str, expect_status: u16, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let outcome = client.get(url).timeout(timeout).send().await;
    let elapsed = start.elapsed();
    match outcome {
        Ok(response) => {
            let status = response.status().as_u16();
            let ok = status == expect_status;
            ProbeResult {
                ok,
                status: Some(status),
                detail: if ok {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status} (expected {expect_status})")
                },
                elapsed,
            }
        }
        Err(e) => ProbeResult {
            ok: false,
            status: None,
            detail: describe(&e, timeout),
            elapsed,
        },
    }
}

/// The cause an operator acts on, rather than reqwest's "error sending request for url".
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timeout after {timeout:?}");
    }
    if e.is_builder() {
        return format!("invalid probe URL: {}", chain(e));
    }
    if let Some(io) = io_cause(e) {
        use std::io::ErrorKind::*;
        let what = match io.kind() {
            ConnectionRefused => "connection refused",
            ConnectionReset => "connection reset",
            ConnectionAborted => "connection aborted",
            UnexpectedEof => "connection closed before a response",
            HostUnreachable => "host unreachable",
            NetworkUnreachable => "network unreachable",
            TimedOut => "timed out connecting",
            _ => "",
        };
        if !what.is_empty() {
            return what.to_string();
        }
    }
    if e.is_connect() {
        return format!("connection failed: {}", chain(e));
    }
    format!("request failed: {}", chain(e))
}

fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = c.source();
    }
    None
}

/// reqwest's own message says only which URL failed; the reason is further down the chain.
fn chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_invalid_url_is_a_failed_probe_not_a_panic() {
        let client = reqwest::Client::new();
        let r = http_probe(&client, "not a url", 200, Duration::from_secs(1)).await;
        assert!(!r.ok);
        assert_eq!(r.status, None);
        assert!(r.detail.starts_with("invalid probe URL"), "{}", r.detail);
    }
}
