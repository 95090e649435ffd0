//! `POST /api/v1/webhooks/git`: a push to the desired state's repository makes the controller
//! fetch and reconcile at once instead of at its next resync.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use steward_controller::Wake;

use crate::auth::{hmac_sha256_hex, secret_eq};
use crate::{wake, ApiError, AppState};

/// Which forge sent the request, as told by its signature header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    GitHub,
    Gitea,
    GitLab,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::GitHub => "github",
            Source::Gitea => "gitea",
            Source::GitLab => "gitlab",
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Authenticates the request and says who sent it. Only the first signature header found
/// counts; a request carrying a valid one of another kind beside a bad one is refused.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<Source, ApiError> {
    if let Some(sig) = header(headers, "x-hub-signature-256") {
        let ok = sig
            .strip_prefix("sha256=")
            .is_some_and(|hex| hmac_sha256_hex(secret, body, hex));
        // Gitea sends GitHub's header as well as its own; reporting it as Gitea is only cosmetic.
        let source = if headers.contains_key("x-gitea-event") {
            Source::Gitea
        } else {
            Source::GitHub
        };
        return ok
            .then_some(source)
            .ok_or(ApiError::Unauthorized("X-Hub-Signature-256 does not match the body"));
    }
    if let Some(sig) = header(headers, "x-gitea-signature") {
        return hmac_sha256_hex(secret, body, sig)
            .then_some(Source::Gitea)
            .ok_or(ApiError::Unauthorized("X-Gitea-Signature does not match the body"));
    }
    if let Some(token) = header(headers, "x-gitlab-token") {
        // GitLab does not sign the body: it sends the configured secret itself, so this is a
        // shared-token check (constant time), and the body's integrity rests on TLS alone.
        return secret_eq(token.as_bytes(), secret.as_bytes())
            .then_some(Source::GitLab)
            .ok_or(ApiError::Unauthorized("X-Gitlab-Token is wrong"));
    }
    Err(ApiError::Unauthorized(
        "no signature: expected X-Hub-Signature-256 (GitHub), X-Gitea-Signature (Gitea) or X-Gitlab-Token (GitLab)",
    ))
}

/// What the forge says the delivery is about; `None` when it does not say (a hand-made call),
/// which is taken as a push.
fn event_kind(headers: &HeaderMap) -> Option<&str> {
    ["x-github-event", "x-gitea-event", "x-gitlab-event"]
        .iter()
        .find_map(|h| header(headers, h))
}

fn is_push(kind: &str) -> bool {
    matches!(kind, "push" | "Push Hook" | "Tag Push Hook")
}

pub async fn git(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let Some(secret) = s.api.webhook_secret.as_deref().filter(|t| !t.is_empty()) else {
        return Err(ApiError::Forbidden(
            "STEWARD_WEBHOOK_SECRET is unset: webhooks are disabled until the controller is started with a secret",
        ));
    };
    let source = verify(secret, &headers, &body).inspect_err(|e| {
        tracing::warn!(reason = %e, "git webhook rejected");
    })?;
    match event_kind(&headers) {
        // Sent once when the hook is created: answer so the forge shows it as working.
        Some("ping") => {
            return Ok(Json(json!({ "accepted": false, "source": source.as_str(), "pong": true })).into_response())
        }
        Some(kind) if !is_push(kind) => {
            return Ok(Json(json!({ "accepted": false, "source": source.as_str(), "ignored": kind })).into_response())
        }
        _ => {}
    }
    let payload: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("push payload is not JSON: {e}")))?;
    let git_ref = payload["ref"].as_str().unwrap_or_default();
    let commit = ["after", "checkout_sha"]
        .iter()
        .filter_map(|k| payload[*k].as_str())
        .find(|c| !c.is_empty())
        .unwrap_or_default();
    let branch = git_ref.strip_prefix("refs/heads/");
    wake(&s.api.wake, Wake::Fetch)?;
    tracing::info!(source = source.as_str(), git_ref, commit, "git push received; fetching");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": true,
            "source": source.as_str(),
            "ref": git_ref,
            "branch": branch,
            "commit": commit,
        })),
    )
        .into_response())
}
