//! `GET /api/v1/events` and its live form, `GET /api/v1/events/stream`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;
use steward_plan::status::EventRecord;
use steward_store::{EventFilter, Store};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{blocking, ApiError, AppState};

/// How often a stream looks for new or folded events: a change shows up within this, and an
/// idle stream costs one indexed query per tick.
const POLL: Duration = Duration::from_millis(250);
/// Comment lines on an idle stream, so proxies and browsers do not time the connection out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Without `limit`, a listing is capped here so one request cannot serialise the whole table.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    since: Option<String>,
    object: Option<String>,
    limit: Option<String>,
}

/// A listing's `limit` parameter: `default` when absent or empty, else a number from 1 to `max`.
pub fn parse_limit(limit: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit {
        None | Some("") => Ok(default),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(format!(
                "limit: expected a number from 1 to {max}"
            ))),
        },
    }
}

/// Events oldest first. `since` is an RFC 3339 time or a duration back from now (`10m`);
/// `object` is `Kind/name`; `limit` keeps the newest N (default 1000, at most 10000).
pub async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Vec<EventRecord>>, ApiError> {
    let filter = EventFilter {
        since: q
            .since
            .as_deref()
            .map(|t| parse_since(t, OffsetDateTime::now_utc()))
            .transpose()?,
        object: q.object.filter(|o| !o.is_empty()),
        limit: Some(parse_limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?),
    };
    let store = s.api.store.clone();
    Ok(Json(blocking(move || store.events(&filter)).await?))
}

fn parse_since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, ApiError> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let bad = || {
        ApiError::BadRequest("since: expected an RFC 3339 time (2025-05-01T12:00:00Z) or a duration (10m, 2h)".into())
    };
    let d = humantime::parse_duration(text).map_err(|_| bad())?;
    let d = time::Duration::try_from(d).map_err(|_| bad())?;
    now.checked_sub(d).ok_or_else(bad)
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    after: Option<String>,
}

/// Server-sent events: every event recorded or folded after the stream starts, one JSON
/// object per `data:` line, with the store's change number as the event id. A client that
/// reconnects with `Last-Event-ID` (browsers do) or asks `?after=N` resumes after change N and
/// misses nothing; without either the stream starts at the newest change.
pub async fn stream(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.after.as_deref())
        .filter(|v| !v.trim().is_empty());
    let seq = match resume {
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::BadRequest("after / Last-Event-ID: expected a change number".into()))?,
        None => {
            let store = s.api.store.clone();
            blocking(move || store.latest_event_seq()).await?
        }
    };
    let follow = Follow {
        store: s.api.store.clone(),
        seq,
        pending: VecDeque::new(),
        interval: tokio::time::interval(POLL),
        stop: s.stop.clone(),
        failing: false,
    };
    Ok(Sse::new(futures_util::stream::unfold(follow, Follow::next)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

struct Follow {
    store: Arc<Store>,
    seq: i64,
    pending: VecDeque<Event>,
    interval: tokio::time::Interval,
    stop: watch::Receiver<bool>,
    /// The last poll failed; logged once per failing spell, not every tick.
    failing: bool,
}

impl Follow {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            tokio::select! {
                () = stopped(self.stop.clone()) => return None,
                _ = self.interval.tick() => {}
            }
            let store = self.store.clone();
            let seq = self.seq;
            match blocking(move || store.events_changed_since(seq)).await {
                Ok((records, max_seq)) => {
                    self.failing = false;
                    self.seq = max_seq;
                    let n = records.len();
                    for (i, r) in records.into_iter().enumerate() {
                        let ev = Event::default().json_data(&r).expect("an event record serializes");
                        // One poll returns one change number for the batch, so only its last
                        // event carries it: a client cut off midway resumes at the previous
                        // batch and sees the rest again rather than losing it.
                        let ev = if i + 1 == n { ev.id(max_seq.to_string()) } else { ev };
                        self.pending.push_back(ev);
                    }
                }
                Err(e) => {
                    if !self.failing {
                        tracing::warn!(error = %e, "event stream cannot read the store; retrying");
                    }
                    self.failing = true;
                }
            }
        }
    }
}

/// Resolves when the server shuts down; never, when there is no server to stop.
async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|&s| s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_durations() {
        let now = OffsetDateTime::parse("2025-05-01T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(
            parse_since("2025-05-01T11:00:00Z", now).unwrap(),
            now - time::Duration::hours(1)
        );
        assert_eq!(
            parse_since("2025-05-01T13:00:00+02:00", now).unwrap(),
            now - time::Duration::hours(1)
        );
        assert_eq!(parse_since("10m", now).unwrap(), now - time::Duration::minutes(10));
        assert_eq!(parse_since("1h 30m", now).unwrap(), now - time::Duration::minutes(90));
        for bad in ["", "yesterday", "10", "2025-05-01"] {
            assert!(matches!(parse_since(bad, now), Err(ApiError::BadRequest(_))), "{bad:?}");
        }
    }
}
