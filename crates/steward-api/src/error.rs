use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why a request failed; each variant maps to one HTTP status, with `{"error": message}` as
/// the body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A missing or wrong credential. The message says which header was expected, never what
    /// was received.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The endpoint is disabled because no credential is configured.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Unavailable(String),
    #[error("reading the store")]
    Store(#[from] steward_store::StoreError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The error and its causes on one line, as the CLI prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = chain(&self);
        if status.is_server_error() {
            tracing::error!(error = %message, "API request failed");
        }
        let mut res = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"steward\""),
            );
        }
        res
    }
}
