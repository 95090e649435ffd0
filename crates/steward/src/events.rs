//! `steward events`: reconcile events from the store, or followed live from a controller's
//! server-sent-event stream.

use std::time::Duration;

use anyhow::Context;
use steward_plan::status::EventRecord;
use steward_store::EventFilter;
use time::OffsetDateTime;

use crate::commands::{ago, api_get, open_store, runtime};
use crate::output::{table, Format};
use crate::Cli;

pub(crate) fn event_rows(evs: &[EventRecord]) -> Vec<Vec<String>> {
    evs.iter()
        .map(|e| {
            vec![
                ago(e.last_seen),
                e.type_.as_str().to_string(),
                e.reason.clone(),
                e.object.clone(),
                e.count.to_string(),
                e.message.clone(),
            ]
        })
        .collect()
}

pub(crate) const EVENT_HEADER: [&str; 6] = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"];

pub(crate) fn events(
    cli: &Cli,
    since: Option<Duration>,
    follow: bool,
    output: Format,
    server: Option<&str>,
) -> anyhow::Result<u8> {
    let print = |evs: &[EventRecord], header: bool| match output {
        Format::Json => {
            for e in evs {
                println!("{}", serde_json::to_string(e).expect("json"));
            }
        }
        _ => {
            let t = table(&EVENT_HEADER, &event_rows(evs));
            if header {
                print!("{t}");
            } else {
                print!("{}", t.split_once('\n').map_or("", |x| x.1));
            }
        }
    };
    if let Some(server) = server {
        let query = since.map_or_else(String::new, |d| format!("?since={}s", d.as_secs().max(1)));
        let evs: Vec<EventRecord> = serde_json::from_value(api_get(server, &format!("/api/v1/events{query}"))?)?;
        print(&evs, true);
        if follow {
            follow_stream(server, |e| print(&[e], false))?;
        }
        return Ok(0);
    }
    let store = open_store(cli)?;
    let filter = EventFilter {
        since: since.map(|d| OffsetDateTime::now_utc() - d),
        ..Default::default()
    };
    let evs = store.events(&filter)?;
    print(&evs, true);
    if !follow {
        return Ok(0);
    }
    use std::io::Write;
    let mut seq = store.latest_event_seq()?;
    loop {
        std::io::stdout().flush().ok();
        std::thread::sleep(Duration::from_millis(500));
        let (changed, new_seq) = store.events_changed_since(seq)?;
        seq = new_seq;
        if !changed.is_empty() {
            print(&changed, false);
        }
    }
}

/// Prints events from a controller's server-sent-event stream until it ends.
fn follow_stream(server: &str, mut on_event: impl FnMut(EventRecord)) -> anyhow::Result<()> {
    use std::io::Write;
    let url = format!("{}/api/v1/events/stream", server.trim_end_matches('/'));
    runtime()?.block_on(async {
        let mut r = reqwest::get(&url)
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        anyhow::ensure!(r.status().is_success(), "{url} answered {}", r.status());
        let mut buf = String::new();
        while let Some(chunk) = r.chunk().await.with_context(|| format!("reading {url}"))? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                if let Some(data) = line.trim_end().strip_prefix("data:") {
                    if let Ok(e) = serde_json::from_str::<EventRecord>(data.trim()) {
                        on_event(e);
                        std::io::stdout().flush().ok();
                    }
                }
            }
        }
        Ok(())
    })
}
