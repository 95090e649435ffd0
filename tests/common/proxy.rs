//! A TCP proxy to the Docker socket that a test can cut and restore, to make the engine
//! unreachable for one controller without touching the engine other tests share.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct DockerProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl DockerProxy {
    pub fn start(socket: &str) -> DockerProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, conns2, socket) = (up.clone(), conns.clone(), socket.to_string());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = UnixStream::connect(&socket) else {
                    continue;
                };
                conns2.lock().unwrap().push(client.try_clone().unwrap());
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c2, mut s2) = (client, server);
                thread::spawn(move || {
                    let _ = io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(Shutdown::Both);
                });
                thread::spawn(move || {
                    let _ = io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Both);
                });
            }
        });
        DockerProxy { port, up, conns }
    }

    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Refuses new connections and cuts the open ones (including the event stream).
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
