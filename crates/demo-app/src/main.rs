//! `demo-app`: a tiny, dependency-free HTTP/1.1 server used as the workload in
//! steward's end-to-end tests and demos.
//!
//! Configuration (environment):
//! - `DEMO_VERSION` (default `dev`): reported by `/`, `/version`, the health
//!   endpoint and `demo_build_info`.
//! - `DEMO_MODE`: `ok` (default), `broken` (exit 1 at start) or `unhealthy`
//!   (health endpoint answers 500).
//! - `PORT` (default 8080); the server binds `0.0.0.0`.
//!
//! `demo-app --healthcheck` probes `127.0.0.1:$PORT/api/v1/health/` and exits 0
//! on HTTP 200, 1 otherwise.
//!
//! Every response carries `Connection: close`; one thread per connection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEFAULT_PORT: u16 = 8080;
/// Upper bound on the request head (request line + headers) we accept.
const MAX_HEAD_BYTES: u64 = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Broken,
    Unhealthy,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, String> {
        match s.trim() {
            "" | "ok" => Ok(Mode::Ok),
            "broken" => Ok(Mode::Broken),
            "unhealthy" => Ok(Mode::Unhealthy),
            other => Err(format!(
                "invalid DEMO_MODE {other:?} (expected ok, broken or unhealthy)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    version: String,
    mode: Mode,
    port: u16,
}

impl Config {
    /// Builds the configuration from a variable lookup (the process
    /// environment in production, a map in tests).
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let version = get("DEMO_VERSION")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "dev".to_string());
        let mode = Mode::parse(&get("DEMO_MODE").unwrap_or_default())?;
        let port = match get("PORT").filter(|p| !p.trim().is_empty()) {
            None => DEFAULT_PORT,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid PORT {p:?} (expected 1-65535)"))?,
        };
        Ok(Config { version, mode, port })
    }

    fn from_env() -> Result<Config, String> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }
}

// ---------------------------------------------------------------------------
// HTTP parsing
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct RequestLine {
    method: String,
    /// Request target with any query string / fragment removed.
    path: String,
}

/// Parses an HTTP/1.x request line such as `GET /version HTTP/1.1`.
fn parse_request_line(line: &str) -> Result<RequestLine, &'static str> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut parts = line.split(' ');
    let (method, target, proto) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(p), None) => (m, t, p),
        _ => return Err("malformed request line"),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("invalid method");
    }
    if !target.starts_with('/') {
        return Err("invalid request target");
    }
    if !matches!(proto, "HTTP/1.0" | "HTTP/1.1") {
        return Err("unsupported protocol version");
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    Ok(RequestLine {
        method: method.to_string(),
        path: path.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Responses and routing
// ---------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    extra_headers: Vec<(&'static str, &'static str)>,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            extra_headers: Vec::new(),
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    fn to_bytes(&self, include_body: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.extra_headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if include_body {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Escapes a string for inclusion inside a JSON string literal.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
fn label_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Known routes; anything else is reported as `other` in metrics to keep the
/// label cardinality bounded.
const ROUTES: &[&str] = &["/", "/version", "/metrics", "/api/v1/health/"];

fn canonical_path(path: &str) -> Option<&'static str> {
    let path = if path == "/api/v1/health" {
        "/api/v1/health/"
    } else {
        path
    };
    ROUTES.iter().copied().find(|r| *r == path)
}

struct App {
    config: Config,
    metrics: Metrics,
}

impl App {
    fn new(config: Config) -> App {
        App {
            config,
            metrics: Metrics::default(),
        }
    }

    /// Produces the response for a parsed request and records it in metrics.
    fn handle(&self, req: &RequestLine) -> Response {
        let route = canonical_path(&req.path);
        let resp = match route {
            None => Response::text(404, "not found\n"),
            Some(_) if req.method != "GET" && req.method != "HEAD" => {
                let mut r = Response::text(405, "method not allowed\n");
                r.extra_headers.push(("Allow", "GET, HEAD"));
                r
            }
            Some(route) => self.route(route),
        };
        self.metrics.record(route.unwrap_or("other"), resp.status);
        resp
    }

    fn route(&self, route: &str) -> Response {
        let version = &self.config.version;
        match route {
            "/" => Response::text(200, format!("taxcollector demo {version}\n")),
            "/version" => Response::text(200, format!("{version}\n")),
            "/metrics" => Response::new(200, "text/plain; version=0.0.4", self.metrics.render(version)),
            "/api/v1/health/" => {
                let (status, word) = match self.config.mode {
                    Mode::Unhealthy => (500, "error"),
                    Mode::Ok | Mode::Broken => (200, "ok"),
                };
                Response::new(
                    status,
                    "application/json",
                    format!("{{\"status\":\"{word}\",\"version\":\"{}\"}}", json_escape(version)),
                )
            }
            _ => Response::text(404, "not found\n"),
        }
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl Metrics {
    fn record(&self, path: &str, status: u16) {
        // A poisoned lock only means another thread panicked mid-increment;
        // the counters are still usable.
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((path.to_string(), status)).or_insert(0) += 1;
    }

    fn render(&self, version: &str) -> String {
        let mut out = String::new();
        out.push_str("# HELP demo_http_requests_total Total HTTP requests handled.\n");
        out.push_str("# TYPE demo_http_requests_total counter\n");
        {
            let map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            for ((path, status), count) in map.iter() {
                let _ = writeln!(
                    out,
                    "demo_http_requests_total{{path=\"{}\",status=\"{status}\"}} {count}",
                    label_escape(path)
                );
            }
        }
        out.push_str("# HELP demo_build_info Build information.\n");
        out.push_str("# TYPE demo_build_info gauge\n");
        let _ = writeln!(out, "demo_build_info{{version=\"{}\"}} 1", label_escape(version));
        out
    }
}

// ---------------------------------------------------------------------------
// Connection handling
// ---------------------------------------------------------------------------

/// Reads one request head from `stream` and writes one response.
fn serve_connection(app: &App, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD_BYTES));
    let mut writer = stream;

    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(()); // client closed without sending anything
    }
    let parsed = parse_request_line(&line);

    // Drain the headers up to the blank line; we do not need any of them.
    let mut complete = line.ends_with('\n');
    while complete {
        let mut header = String::new();
        let n = reader.read_line(&mut header)?;
        if n == 0 || !header.ends_with('\n') {
            complete = false;
            break;
        }
        if header == "\r\n" || header == "\n" {
            break;
        }
    }

    let (resp, include_body) = match parsed {
        _ if !complete => {
            app.metrics.record("invalid", 431);
            (Response::text(431, "request head too large or truncated\n"), true)
        }
        Err(msg) => {
            app.metrics.record("invalid", 400);
            (Response::text(400, format!("bad request: {msg}\n")), true)
        }
        Ok(req) => {
            let head = req.method == "HEAD";
            (app.handle(&req), !head)
        }
    };
    writer.write_all(&resp.to_bytes(include_body))?;
    writer.flush()?;
    let _ = writer.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn run_server(app: Arc<App>) -> ExitCode {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, app.config.port));
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-app: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "demo-app: version={} mode={:?} listening on {addr}",
        app.config.version, app.config.mode
    );
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let app = Arc::clone(&app);
                let spawned = std::thread::Builder::new().name("conn".into()).spawn(move || {
                    if let Err(e) = serve_connection(&app, stream) {
                        eprintln!("demo-app: connection error: {e}");
                    }
                });
                if let Err(e) = spawned {
                    eprintln!("demo-app: cannot spawn connection thread: {e}");
                }
            }
            Err(e) => eprintln!("demo-app: accept failed: {e}"),
        }
    }
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------
// Health check client (`--healthcheck`)
// ---------------------------------------------------------------------------

/// Extracts the status code from an HTTP status line (`HTTP/1.1 200 OK`).
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn healthcheck(port: u16) -> Result<u16, String> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&addr, HEALTHCHECK_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(HEALTHCHECK_TIMEOUT))
        .and_then(|_| stream.set_write_timeout(Some(HEALTHCHECK_TIMEOUT)))
        .map_err(|e| format!("socket setup: {e}"))?;
    stream
        .write_all(b"GET /api/v1/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send request: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream.take(1024))
        .read_line(&mut line)
        .map_err(|e| format!("read response: {e}"))?;
    parse_status_line(&line).ok_or_else(|| format!("malformed status line {line:?}"))
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

mod term {
    use std::os::raw::c_int;

    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;

    // Declarations of two C library functions; std already links the C
    // library, so no extra crate is needed.
    extern "C" {
        /// signal(2). The handler is passed as a plain function pointer; the
        /// previous disposition it returns is ignored.
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        /// _exit(2): terminates immediately and is async-signal-safe.
        fn _exit(status: c_int) -> !;
    }

    extern "C" fn on_terminate(_signum: c_int) {
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { _exit(0) }
    }

    /// Exits promptly on SIGTERM/SIGINT. Needed because, as PID 1 in a
    /// container, the kernel ignores signals whose disposition is default.
    pub fn install() {
        // SAFETY: `on_terminate` has the C handler signature and only calls
        // an async-signal-safe function; signal(2) is called with valid
        // signal numbers before any other thread exists.
        unsafe {
            signal(SIGTERM, on_terminate);
            signal(SIGINT, on_terminate);
        }
    }
}

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

fn migrate(fail: bool) -> ExitCode {
    let version = std::env::var("DEMO_VERSION").unwrap_or_else(|_| "dev".into());
    println!("Operations to perform: apply all migrations for version {version}");
    println!("Applying taxes.0041_add_vehicle_index... OK");
    if fail {
        eprintln!("Applying taxes.0042_split_payments... FAILED: column \"amount\" contains null values");
        return ExitCode::FAILURE;
    }
    println!("Applying taxes.0042_split_payments... OK");
    ExitCode::SUCCESS
}

/// `demo-app task NAME [--sleep SECS] [--exit CODE]` stands in for the operations guide's
/// maintenance scripts (`backup_database.sh`, `cleanup_logs.sh`, ...): it prints what it does,
/// takes `--sleep` seconds, and exits with `--exit` (default 0).
fn task(args: &[String]) -> ExitCode {
    let mut name = "task".to_string();
    let mut sleep = 0.0f64;
    let mut code = 0u8;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sleep" => sleep = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0),
            "--exit" => code = it.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            other => name = other.to_string(),
        }
    }
    // The wall time it started, for measuring how late a scheduled run really began.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    println!(
        "{name}: starting at {:.3} (pid {})",
        now.as_secs_f64(),
        std::process::id()
    );
    if sleep > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(sleep));
    }
    if code == 0 {
        println!("{name}: done");
    } else {
        eprintln!("{name}: failed with exit code {code}");
    }
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("task") {
        return task(&args[1..]);
    }
    // `cat FILE`: the image has no shell; tests read a mounted secret or config with it
    // (`docker exec <container> /demo-app cat /run/secrets/DB_PASSWORD`).
    if let (Some("cat"), Some(path)) = (args.first().map(String::as_str), args.get(1)) {
        return match std::fs::read(path) {
            Ok(bytes) => {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(&bytes);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("demo-app: cat {path}: {e}");
                ExitCode::from(1)
            }
        };
    }
    // `migrate` stands in for `python manage.py migrate`, the pre-deploy job of the operations
    // guide: it prints what it applies and exits 0, or fails like a broken migration.
    if args.first().map(String::as_str) == Some("migrate") {
        return migrate(args.iter().skip(1).any(|a| a == "--fail"));
    }
    let healthcheck_mode = match args.as_slice() {
        [] => false,
        [flag] if flag == "--healthcheck" => true,
        _ => {
            eprintln!("usage: demo-app [--healthcheck | migrate [--fail] | task NAME [--sleep SECS] [--exit CODE] | cat FILE]");
            return ExitCode::from(2);
        }
    };

    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-app: {e}");
            return ExitCode::from(2);
        }
    };

    if healthcheck_mode {
        return match healthcheck(config.port) {
            Ok(200) => ExitCode::SUCCESS,
            Ok(status) => {
                eprintln!("demo-app: healthcheck: HTTP {status}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("demo-app: healthcheck: {e}");
                ExitCode::FAILURE
            }
        };
    }

    if config.mode == Mode::Broken {
        eprintln!(
            "demo-app: version={} DEMO_MODE=broken: refusing to start",
            config.version
        );
        return ExitCode::FAILURE;
    }

    term::install();
    run_server(Arc::new(App::new(config)))
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: Mode) -> Config {
        Config {
            version: "v1".into(),
            mode,
            port: DEFAULT_PORT,
        }
    }

    fn get(app: &App, path: &str) -> Response {
        app.handle(&parse_request_line(&format!("GET {path} HTTP/1.1\r\n")).unwrap())
    }

    #[test]
    fn parses_valid_request_lines() {
        assert_eq!(
            parse_request_line("GET /api/v1/health/ HTTP/1.1\r\n"),
            Ok(RequestLine {
                method: "GET".into(),
                path: "/api/v1/health/".into()
            })
        );
        assert_eq!(
            parse_request_line("HEAD /metrics?x=1 HTTP/1.0\n").unwrap().path,
            "/metrics"
        );
        assert_eq!(parse_request_line("GET /#frag HTTP/1.1").unwrap().path, "/");
    }

    #[test]
    fn rejects_malformed_request_lines() {
        for bad in [
            "",
            "\r\n",
            "GET\r\n",
            "GET /\r\n",
            "GET / HTTP/1.1 extra\r\n",
            "get / HTTP/1.1\r\n",
            "GET  / HTTP/1.1\r\n",
            "GET example.com HTTP/1.1\r\n",
            "GET / HTTP/2.0\r\n",
            "GET / FTP/1.0\r\n",
        ] {
            assert!(parse_request_line(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn health_ok_mode() {
        let app = App::new(config(Mode::Ok));
        let r = get(&app, "/api/v1/health/");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.body, r#"{"status":"ok","version":"v1"}"#);
        // Trailing slash is optional.
        assert_eq!(get(&app, "/api/v1/health").status, 200);
    }

    #[test]
    fn health_unhealthy_mode() {
        let app = App::new(config(Mode::Unhealthy));
        let r = get(&app, "/api/v1/health/");
        assert_eq!(r.status, 500);
        assert_eq!(r.body, r#"{"status":"error","version":"v1"}"#);
        // Other endpoints keep working.
        assert_eq!(get(&app, "/version").status, 200);
    }

    #[test]
    fn health_broken_mode_if_ever_served() {
        // Broken mode exits before serving; the handler itself stays healthy.
        let app = App::new(config(Mode::Broken));
        assert_eq!(get(&app, "/api/v1/health/").status, 200);
    }

    #[test]
    fn root_and_version() {
        let app = App::new(config(Mode::Ok));
        let r = get(&app, "/");
        assert_eq!(r.status, 200);
        assert!(r.body.contains("v1"));
        let r = get(&app, "/version");
        assert_eq!((r.status, r.body.as_str()), (200, "v1\n"));
    }

    #[test]
    fn unknown_path_and_method() {
        let app = App::new(config(Mode::Ok));
        assert_eq!(get(&app, "/nope").status, 404);
        let post = parse_request_line("POST /version HTTP/1.1").unwrap();
        let r = app.handle(&post);
        assert_eq!(r.status, 405);
        assert!(r.extra_headers.contains(&("Allow", "GET, HEAD")));
    }

    #[test]
    fn metrics_count_requests() {
        let app = App::new(config(Mode::Unhealthy));
        get(&app, "/api/v1/health/");
        get(&app, "/api/v1/health/");
        get(&app, "/does-not-exist");
        let r = get(&app, "/metrics");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/plain; version=0.0.4");
        assert!(r
            .body
            .contains("demo_http_requests_total{path=\"/api/v1/health/\",status=\"500\"} 2\n"));
        assert!(r
            .body
            .contains("demo_http_requests_total{path=\"other\",status=\"404\"} 1\n"));
        assert!(r.body.contains("demo_build_info{version=\"v1\"} 1\n"));
        // The scrape itself shows up on the next scrape.
        let r = get(&app, "/metrics");
        assert!(r
            .body
            .contains("demo_http_requests_total{path=\"/metrics\",status=\"200\"} 1\n"));
    }

    #[test]
    fn escaping() {
        let app = App::new(Config {
            version: "a\"b\\c".into(),
            mode: Mode::Ok,
            port: DEFAULT_PORT,
        });
        assert_eq!(
            get(&app, "/api/v1/health/").body,
            r#"{"status":"ok","version":"a\"b\\c"}"#
        );
        assert!(get(&app, "/metrics")
            .body
            .contains(r#"demo_build_info{version="a\"b\\c"} 1"#));
    }

    #[test]
    fn response_serialization() {
        let r = Response::text(404, "not found\n");
        let full = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(full.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(full.contains("Content-Length: 10\r\n"));
        assert!(full.contains("Connection: close\r\n"));
        assert!(full.ends_with("\r\n\r\nnot found\n"));
        let head = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
        assert!(head.contains("Content-Length: 10\r\n"));
    }

    #[test]
    fn config_from_lookup() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string())
        };
        let c = Config::from_lookup(env(&[])).unwrap();
        assert_eq!((c.version.as_str(), c.mode, c.port), ("dev", Mode::Ok, 8080));
        let c = Config::from_lookup(env(&[
            ("DEMO_VERSION", "v2"),
            ("DEMO_MODE", "unhealthy"),
            ("PORT", "9000"),
        ]))
        .unwrap();
        assert_eq!((c.version.as_str(), c.mode, c.port), ("v2", Mode::Unhealthy, 9000));
        assert!(Config::from_lookup(env(&[("DEMO_MODE", "weird")])).is_err());
        assert!(Config::from_lookup(env(&[("PORT", "0")])).is_err());
        assert!(Config::from_lookup(env(&[("PORT", "http")])).is_err());
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 500 Internal Server Error"), Some(500));
        assert_eq!(parse_status_line("garbage"), None);
        assert_eq!(parse_status_line(""), None);
    }

    #[test]
    fn end_to_end_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Arc::new(App::new(config(Mode::Ok)));
        let server_app = Arc::clone(&app);
        std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = listener.accept().unwrap();
                serve_connection(&server_app, s).unwrap();
            }
        });
        assert_eq!(healthcheck(port), Ok(200));
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nv1\n"), "{out}");
    }
}
