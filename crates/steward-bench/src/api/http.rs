//! A minimal HTTP/1.1 client over one kept-alive TCP connection, for timing the controller's
//! API. Written here rather than taken from a client library so that what is timed is the
//! request on the wire and the server's answer, not a client's pool or decoder.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest wait for one response; a slower answer is a failure, not a sample.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    host: String,
    stream: BufReader<TcpStream>,
    body: Vec<u8>,
    line: String,
}

/// One answer: status, body length in bytes, and the time from writing the request to having
/// read the whole body.
pub struct Answer {
    pub status: u16,
    pub bytes: usize,
    pub took: Duration,
}

impl Conn {
    pub async fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            host: addr.to_string(),
            stream: BufReader::with_capacity(64 * 1024, stream),
            body: Vec::with_capacity(64 * 1024),
            line: String::new(),
        })
    }

    /// `GET path`, keeping the connection open.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        self.request("GET", path, &[], b"").await
    }

    /// The body of the last answer.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let t = Instant::now();
        let stream = self.stream.get_mut();
        stream.write_all(req.as_bytes()).await?;
        if !body.is_empty() {
            stream.write_all(body).await?;
        }
        let status = tokio::time::timeout(RESPONSE_TIMEOUT, self.read_response())
            .await
            .with_context(|| format!("{method} {path}: no complete answer within {RESPONSE_TIMEOUT:?}"))??;
        Ok(Answer {
            status,
            bytes: self.body.len(),
            took: t.elapsed(),
        })
    }

    async fn read_line(&mut self) -> anyhow::Result<&str> {
        self.line.clear();
        let n = self.stream.read_line(&mut self.line).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        Ok(self.line.trim_end_matches(['\r', '\n']))
    }

    async fn read_response(&mut self) -> anyhow::Result<u16> {
        let status: u16 = {
            let l = self.read_line().await?;
            l.split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("malformed status line {l:?}"))?
        };
        let mut length: Option<usize> = None;
        let mut chunked = false;
        loop {
            let l = self.read_line().await?;
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else { continue };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = Some(v.parse().context("content-length")?);
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
        self.body.clear();
        if chunked {
            loop {
                let size = {
                    let l = self.read_line().await?;
                    let hex = l.split(';').next().unwrap_or("").trim();
                    usize::from_str_radix(hex, 16).with_context(|| format!("bad chunk size {l:?}"))?
                };
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.read_line().await?.is_empty() {}
                    break;
                }
                let start = self.body.len();
                self.body.resize(start + size, 0);
                self.stream.read_exact(&mut self.body[start..]).await?;
                self.read_line().await?; // the CRLF after the chunk
            }
        } else if let Some(n) = length {
            self.body.resize(n, 0);
            self.stream.read_exact(&mut self.body).await?;
        } else {
            bail!("an answer without Content-Length or chunked encoding cannot be kept alive");
        }
        Ok(status)
    }
}
