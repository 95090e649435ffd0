//! Prometheus's HTTP API: instant queries, whose answers gate rollouts.
//!
//! A failed query is an error, never a number: the caller must not read "unreachable" as
//! "healthy". An answer that carries no number (no series, or NaN) is returned as such, for
//! the caller to treat as inconclusive.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

/// A series' labels, `__name__` included when Prometheus keeps it.
pub type Labels = BTreeMap<String, String>;

/// The answer to an instant query.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    /// NaN stays NaN (e.g. `0/0`, a ratio over an idle service).
    Scalar(f64),
    /// Never empty: an empty vector is `Empty`.
    Vector(Vec<(Labels, f64)>),
    /// No series matched.
    Empty,
}

/// The scalar, or the value of the only sample of a vector; `None` when there is no single
/// number to compare (no sample, or several).
pub fn single_value(result: &QueryResult) -> Option<f64> {
    match result {
        QueryResult::Scalar(v) => Some(*v),
        QueryResult::Vector(samples) if samples.len() == 1 => Some(samples[0].1),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("invalid Prometheus URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot build the HTTP client for Prometheus")]
    Client {
        #[source]
        source: reqwest::Error,
    },
    /// Connection refused, reset, DNS failure and the like: nothing was answered.
    #[error("Prometheus at {base} unreachable")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Prometheus at {base} did not answer within {timeout:?}")]
    Timeout {
        base: String,
        timeout: Duration,
        #[source]
        source: reqwest::Error,
    },
    /// Prometheus answered with an error: `bad_data` (400) for invalid PromQL, `execution`
    /// (422), `timeout` (503) for a query that ran too long, ...
    #[error(
        "Prometheus refused query {query:?} with HTTP {status}{}: {message}",
        error_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default()
    )]
    Status {
        query: String,
        status: u16,
        error_type: Option<String>,
        message: String,
    },
    /// A successful status with a body that is not a usable answer.
    #[error("malformed answer from Prometheus to query {query:?}: {detail}")]
    Malformed { query: String, detail: String },
}

impl PrometheusError {
    /// The query itself is wrong (Prometheus's `bad_data`): retrying will not help.
    pub fn is_bad_query(&self) -> bool {
        matches!(self, PrometheusError::Status { error_type: Some(t), .. } if t == "bad_data")
    }
}

/// At most this much of a non-JSON error body is quoted in an error.
const MAX_QUOTED_BODY: usize = 200;

#[derive(Clone, Debug)]
pub struct Prometheus {
    /// Always ends with '/', so that API paths join below it rather than replacing its last segment.
    base: Url,
    client: reqwest::Client,
    timeout: Duration,
}

impl Prometheus {
    /// `base_url` is where Prometheus serves `/api/v1/...`, e.g. `http://127.0.0.1:9090` or
    /// `http://host/prometheus` behind a path prefix. `timeout` bounds each query end to end.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, PrometheusError> {
        let invalid = |reason: String| PrometheusError::InvalidUrl {
            url: base_url.to_string(),
            reason,
        };
        let mut base = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        // "localhost:9090" parses as scheme "localhost": catch it here, not as an odd request error.
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid("expected http://host[:port][/path]".into()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("a query string or fragment would be lost".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| PrometheusError::Client { source })?;
        Ok(Self { base, client, timeout })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// An instant query at the current time.
    pub async fn query(&self, promql: &str) -> Result<QueryResult, PrometheusError> {
        let mut url = self
            .base
            .join("api/v1/query")
            .expect("a fixed relative path joins any http URL");
        url.query_pairs_mut().append_pair("query", promql);
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                PrometheusError::Timeout {
                    base: self.base.to_string(),
                    timeout: self.timeout,
                    source,
                }
            } else {
                PrometheusError::Unreachable {
                    base: self.base.to_string(),
                    source,
                }
            }
        };
        let response = self.client.get(url).send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        let result = decode(promql, status, &body);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "prometheus query failed");
        }
        result
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar(Point),
    Vector(Vec<Sample>),
    // Kept only to name them in the error: a rollout gate compares single numbers.
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

/// `[unix_seconds, "value"]`: Prometheus sends values as strings so that NaN and ±Inf survive JSON.
type Point = (f64, String);

#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    metric: Labels,
    /// Absent for native-histogram samples, which carry `histogram` instead.
    value: Option<Point>,
}

/// Turns an HTTP status and body from `/api/v1/query` into a result or the matching error.
fn decode(query: &str, status: u16, body: &[u8]) -> Result<QueryResult, PrometheusError> {
    let malformed = |detail: String| PrometheusError::Malformed {
        query: query.to_string(),
        detail,
    };
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if (200..300).contains(&status) => {
            return Err(malformed(format!("not a Prometheus API response ({e})")));
        }
        // An error page from something in front of Prometheus (a proxy, a load balancer).
        Err(_) => {
            return Err(PrometheusError::Status {
                query: query.to_string(),
                status,
                error_type: None,
                message: quote_body(body),
            });
        }
    };
    if envelope.status != "success" || !(200..300).contains(&status) {
        return Err(PrometheusError::Status {
            query: query.to_string(),
            status,
            error_type: envelope.error_type,
            message: envelope
                .error
                .unwrap_or_else(|| format!("status {:?}", envelope.status)),
        });
    }
    for w in &envelope.warnings {
        tracing::debug!(query, warning = %w, "prometheus warning");
    }
    match envelope.data {
        None => Err(malformed("success without data".into())),
        Some(Data::Scalar((_, v))) => Ok(QueryResult::Scalar(parse_value(&v).map_err(malformed)?)),
        Some(Data::Vector(samples)) if samples.is_empty() => Ok(QueryResult::Empty),
        Some(Data::Vector(samples)) => {
            let mut out = Vec::with_capacity(samples.len());
            for s in samples {
                let Some((_, v)) = s.value else {
                    return Err(malformed(format!(
                        "series {:?} has no plain value (a native histogram?)",
                        s.metric
                    )));
                };
                out.push((s.metric, parse_value(&v).map_err(malformed)?));
            }
            Ok(QueryResult::Vector(out))
        }
        Some(Data::Matrix(_)) => Err(malformed(
            "a range vector (matrix) is not an instant value; wrap the selector in a function such as rate()".into(),
        )),
        Some(Data::String(_)) => Err(malformed("a string result is not a number".into())),
    }
}

/// Prometheus writes "NaN", "+Inf" and "-Inf", which Rust's float parser accepts as they are.
fn parse_value(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .map_err(|_| format!("sample value {v:?} is not a number"))
}

fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut end = text.len().min(MAX_QUOTED_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}…", &text[..end])
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<QueryResult, PrometheusError> {
        decode("q", 200, body.as_bytes())
    }

    #[test]
    fn special_values_survive() {
        for (text, check) in [
            ("NaN", f64::is_nan as fn(f64) -> bool),
            ("+Inf", |v| v == f64::INFINITY),
            ("-Inf", |v| v == f64::NEG_INFINITY),
            ("0.25", |v| v == 0.25),
            ("1e-3", |v| v == 0.001),
        ] {
            let body = format!(r#"{{"status":"success","data":{{"resultType":"scalar","result":[1.5,"{text}"]}}}}"#);
            let Ok(QueryResult::Scalar(v)) = ok(&body) else {
                panic!("{text}: not a scalar")
            };
            assert!(check(v), "{text} -> {v}");
        }
    }

    #[test]
    fn vectors_keep_labels_and_empty_is_empty() {
        let r = ok(r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"path":"/","status":"200"},"value":[1,"3"]}]}}"#)
        .unwrap();
        let labels: Labels = [("path".into(), "/".into()), ("status".into(), "200".into())].into();
        assert_eq!(r, QueryResult::Vector(vec![(labels, 3.0)]));
        assert_eq!(single_value(&r), Some(3.0));
        let empty = ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#).unwrap();
        assert_eq!(empty, QueryResult::Empty);
        assert_eq!(single_value(&empty), None);
    }

    #[test]
    fn several_samples_have_no_single_value() {
        let two = QueryResult::Vector(vec![(Labels::new(), 1.0), (Labels::new(), 2.0)]);
        assert_eq!(single_value(&two), None);
        assert_eq!(
            single_value(&QueryResult::Scalar(f64::NAN)).map(f64::is_nan),
            Some(true)
        );
    }

    #[test]
    fn error_bodies_become_status_errors() {
        let e = decode(
            "sum(",
            400,
            br#"{"status":"error","errorType":"bad_data","error":"parse error: unclosed left parenthesis"}"#,
        )
        .unwrap_err();
        assert!(e.is_bad_query(), "{e:?}");
        assert_eq!(
            e.to_string(),
            r#"Prometheus refused query "sum(" with HTTP 400 (bad_data): parse error: unclosed left parenthesis"#
        );
        let e = decode("up", 502, b"<html>Bad Gateway</html>").unwrap_err();
        assert!(
            matches!(&e, PrometheusError::Status { status: 502, error_type: None, message, .. } if message.contains("Bad Gateway")),
            "{e:?}"
        );
        assert!(!e.is_bad_query());
    }

    #[test]
    fn malformed_answers_are_reported() {
        for body in [
            "not json",
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"many"]}}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}}"#,
        ] {
            assert!(matches!(ok(body), Err(PrometheusError::Malformed { .. })), "{body}");
        }
    }

    #[test]
    fn base_urls_are_checked_and_keep_their_path() {
        let p = Prometheus::new("http://127.0.0.1:9090/prom", Duration::from_secs(1)).unwrap();
        assert_eq!(
            p.base().join("api/v1/query").unwrap().as_str(),
            "http://127.0.0.1:9090/prom/api/v1/query"
        );
        for bad in ["localhost:9090", "127.0.0.1:9090", "ftp://h/", "http://h/?x=1", ""] {
            assert!(
                matches!(
                    Prometheus::new(bad, Duration::from_secs(1)),
                    Err(PrometheusError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }
}
