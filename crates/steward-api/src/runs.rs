//! `GET /api/v1/runs`: schedule runs, newest first.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use crate::{blocking, ApiError, AppState};

/// Without `limit`, a listing is capped here; a run's logs are never part of a listing (64 KiB
/// each), so a page stays small.
const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 5000;

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    schedule: Option<String>,
    limit: Option<String>,
}

/// Runs newest first, each as `steward runs -o json` prints it: `schedule`, `id`,
/// `scheduledAt`, `startedAt`, `finishedAt`, `outcome`, `exitCode`, `trigger`, `attempt`, `job`,
/// `message`, `durationSeconds`.
pub async fn list(State(s): State<AppState>, Query(q): Query<RunsQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = crate::events::parse_limit(q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let store = s.api.store.clone();
    let schedule = q.schedule.filter(|x| !x.is_empty());
    let runs = blocking(move || store.runs(schedule.as_deref(), Some(limit))).await?;
    Ok(Json(serde_json::Value::Array(
        runs.iter().map(steward_schedule::Run::listing_json).collect(),
    )))
}
