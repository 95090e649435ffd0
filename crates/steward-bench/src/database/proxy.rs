//! A counting TCP proxy in front of a PostgreSQL server: it forwards bytes unchanged and reads
//! the client's side of the wire protocol (v3) to count what a client asks of the server.
//!
//! - **statements**: `Execute` (extended protocol) and `Query` (simple protocol) messages;
//! - **round trips**: the exchanges the client waits for: the startup (one with trust auth), an
//!   `SSLRequest`/`GSSENCRequest` answered with one byte, a simple `Query`, and each group of
//!   extended-protocol messages ended by `Sync` that does work (`Parse`, `Bind`, `Describe`,
//!   `Execute`). A group of `Close` + `Sync` alone is what rust-postgres sends when a statement
//!   is dropped, without waiting for the answer: counted apart (`unwaited`);
//! - **parses**: `Parse` messages (statements prepared on the server);
//! - bytes each way. The TCP handshake of a new connection is not a protocol message: a new
//!   connection costs one more round trip before the startup.
//!
//! Timings are never taken through the proxy (it adds a hop); only counts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub connections: u64,
    pub round_trips: u64,
    pub statements: u64,
    pub parses: u64,
    pub unwaited: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, b: Counts) -> Counts {
        Counts {
            connections: self.connections - b.connections,
            round_trips: self.round_trips - b.round_trips,
            statements: self.statements - b.statements,
            parses: self.parses - b.parses,
            unwaited: self.unwaited - b.unwaited,
            bytes_up: self.bytes_up - b.bytes_up,
            bytes_down: self.bytes_down - b.bytes_down,
        }
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, b: Counts) -> Counts {
        Counts {
            connections: self.connections + b.connections,
            round_trips: self.round_trips + b.round_trips,
            statements: self.statements + b.statements,
            parses: self.parses + b.parses,
            unwaited: self.unwaited + b.unwaited,
            bytes_up: self.bytes_up + b.bytes_up,
            bytes_down: self.bytes_down + b.bytes_down,
        }
    }
}

/// A proxy listening on 127.0.0.1 (an ephemeral port) for the life of the process.
pub struct Proxy {
    pub port: u16,
    counts: Arc<Mutex<Counts>>,
}

impl Proxy {
    pub fn start(upstream: (String, u16)) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let c = counts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let c = c.clone();
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, &c);
                });
            }
        });
        Ok(Proxy { port, counts })
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }
}

fn add(c: &Mutex<Counts>, f: impl FnOnce(&mut Counts)) {
    f(&mut c.lock().unwrap());
}

fn serve(client: TcpStream, upstream: &(String, u16), c: &Arc<Mutex<Counts>>) -> io::Result<()> {
    let server = TcpStream::connect((upstream.0.as_str(), upstream.1))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    add(c, |c| c.connections += 1);
    let (mut down_from, mut down_to) = (server.try_clone()?, client.try_clone()?);
    let cd = c.clone();
    let down = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match down_from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    add(&cd, |c| c.bytes_down += n as u64);
                    if down_to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = down_to.shutdown(Shutdown::Write);
    });
    let r = upstream_side(client, &server, c);
    let _ = server.shutdown(Shutdown::Write);
    let _ = down.join();
    r
}

/// Reads the client's messages, counts them, forwards them.
fn upstream_side(mut client: TcpStream, server: &TcpStream, c: &Mutex<Counts>) -> io::Result<()> {
    let mut server = server;
    // Startup phase: untyped messages (length, then a 4-byte code).
    loop {
        let mut len = [0u8; 4];
        client.read_exact(&mut len)?;
        let n = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; n.saturating_sub(4)];
        client.read_exact(&mut body)?;
        server.write_all(&len)?;
        server.write_all(&body)?;
        add(c, |c| {
            c.bytes_up += n as u64;
            c.round_trips += 1;
        });
        let code = body.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        // SSLRequest / GSSENCRequest: the server answers one byte ('N' here), then the startup.
        if !matches!(code, Some(80877103 | 80877104)) {
            break;
        }
    }
    let (mut work, mut close) = (false, false);
    loop {
        let mut head = [0u8; 5];
        match client.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; n.saturating_sub(4)];
        client.read_exact(&mut body)?;
        server.write_all(&head)?;
        server.write_all(&body)?;
        let t = head[0];
        add(c, |c| {
            c.bytes_up += 1 + n as u64;
            match t {
                b'P' => {
                    c.parses += 1;
                    work = true;
                }
                b'B' | b'D' => work = true,
                b'E' => {
                    c.statements += 1;
                    work = true;
                }
                b'C' => close = true,
                b'Q' => {
                    c.statements += 1;
                    c.round_trips += 1;
                }
                // A password or SASL message of the startup: the server answers it.
                b'p' => c.round_trips += 1,
                b'S' => {
                    if work {
                        c.round_trips += 1;
                    } else if close {
                        c.unwaited += 1;
                    }
                    (work, close) = (false, false);
                }
                _ => {}
            }
        });
        if t == b'X' {
            return Ok(());
        }
    }
}
