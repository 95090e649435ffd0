//! Notifications: Warning events reach webhooks (generic and Slack-compatible), with retries,
//! and a receiver that hangs never slows a reconcile.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steward_e2e::*;

/// A webhook receiver on 127.0.0.1: answers 500 to the first `fail_first` requests, then 200;
/// with `hang`, never answers. Records request bodies.
fn receiver(fail_first: usize, hang: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = bodies.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then Content-Length bytes of body.
            let body = loop {
                let Ok(k) = c.read(&mut chunk) else { break None };
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break Some(rest[..len].to_string());
                    }
                }
            };
            if let Some(b) = body {
                seen.lock().unwrap().push(b);
            }
            if hang {
                // Hold the connection open without answering.
                std::mem::forget(c);
                continue;
            }
            n += 1;
            let status = if n <= fail_first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

#[test]
fn warnings_reach_webhooks_with_retries_and_a_hanging_receiver_blocks_nothing() {
    if !require_swarm("warnings_reach_webhooks_with_retries_and_a_hanging_receiver_blocks_nothing") {
        return;
    }
    let mut w = World::new("notify");
    let web = w.svc("web");
    let (generic, generic_bodies) = receiver(1, false);
    let (slack, slack_bodies) = receiver(0, false);
    let (hang, _) = receiver(0, true);
    w.write(
        "app.yaml",
        &format!(
            "{}{}",
            w.stack_doc(false),
            w.service_doc("web", "taxcollector-demo:v1", 1, "")
        ),
    );
    let (hang_url, generic_url, slack_url) = (
        format!("http://127.0.0.1:{hang}/hang"),
        format!("http://127.0.0.1:{generic}/hook"),
        format!("http://127.0.0.1:{slack}/slack"),
    );
    // The hanging receiver comes first: it must delay neither the reconcile nor the others.
    w.spawn_run(&[
        "--notify",
        &hang_url,
        "--notify",
        &generic_url,
        "--notify-slack",
        &slack_url,
    ]);
    wait_for("web running", Duration::from_secs(60), || {
        (running(&web) == Some((1, 1))).then_some(())
    });

    docker_ok(&["service", "scale", "-d", &format!("{web}=3")]);
    let t0 = Instant::now();
    wait_for("drift corrected", Duration::from_secs(10), || {
        (replicas(&web) == Some(1)).then_some(())
    });
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "a hanging webhook held up the reconcile: {:?}",
        t0.elapsed()
    );

    // The generic receiver refused the first delivery: the retry brings it.
    let body = wait_for("generic payload after a retry", Duration::from_secs(20), || {
        let b = generic_bodies.lock().unwrap();
        let drift: Vec<&String> = b.iter().filter(|x| x.contains("DriftCorrected")).collect();
        (drift.len() >= 2).then(|| drift[1].clone())
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "Warning");
    assert_eq!(v["reason"], "DriftCorrected");
    assert_eq!(v["object"], format!("Service/{web}"));
    assert_eq!(v["stack"], w.stack.as_str());
    assert!(v["message"].as_str().unwrap().contains("replicas: 3 → 1"));

    let text = wait_for("slack payload", Duration::from_secs(20), || {
        slack_bodies
            .lock()
            .unwrap()
            .iter()
            .find(|x| x.contains("DriftCorrected"))
            .cloned()
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["text"].as_str().unwrap().contains("*DriftCorrected*"), "{v}");

    // Normal events are not sent without --notify-all.
    assert!(!generic_bodies.lock().unwrap().iter().any(|b| b.contains("\"Created\"")));
}
