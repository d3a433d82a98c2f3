//! The HTTP API (`/v1`, JSON): application state, authentication, errors,
//! and the router assembled from one module per area.

mod auth;
mod channels;
mod escalations;
mod events;
mod messages;
mod plugins;
mod templates;
mod tenants;
mod webhooks;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

pub use auth::{Caller, Scope, hash_key, new_key};
pub use plugins::ConfigSchemas;

use crate::ingest::IngestError;
use crate::pipeline::{Pipeline, PipelineError};
use crate::schedule::Wakeups;
use crate::store::StoreError;

/// Everything handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline (store, runtime, metrics).
    pub pipeline: Pipeline,
    /// Wakes the workers when work arrives.
    pub wake: Arc<Wakeups>,
    /// sha256 of the operator key, if one is configured.
    pub operator_key_hash: Option<[u8; 32]>,
    /// The service's public base URL (`--public-url`), which providers
    /// call back and sign.
    pub public_url: Option<String>,
    /// Plugins' config schemas, compiled once.
    pub config_schemas: Arc<ConfigSchemas>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Largest accepted event body.
pub const MAX_EVENT_BYTES: usize = 256 << 10;

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(tenants::router())
        .merge(events::router())
        .merge(plugins::router())
        .merge(templates::router())
        .merge(messages::router())
        .merge(escalations::router())
        .merge(webhooks::router())
        .merge(channels::router())
        .layer(axum::middleware::map_response(json_too_large))
        .with_state(state)
}

/// Axum's body limits answer 413 in plain text before a handler runs; give
/// those the API's JSON error shape too.
async fn json_too_large(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    ApiError::too_large("the request body is larger than this endpoint accepts").into_response()
}

async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match sqlx::query("SELECT 1")
        .execute(state.pipeline.store.pool())
        .await
    {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
                .into_response()
        }
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.pipeline.metrics.render(),
    )
        .into_response()
}

/// An API error: status, machine-readable code, message, and the field at
/// fault when there is one. 5xx bodies say only "internal error".
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 422 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: format!("field `{field}`: {}", message.into()),
            field: Some(field),
        }
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 500, logging the cause once.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            other => Self::internal(other),
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(err: PipelineError) -> Self {
        Self::internal(err)
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Malformed(message) => {
                Self::bad_request(format!("malformed JSON: {message}"))
            }
            IngestError::Invalid { field, message } => Self::invalid(field, message),
            IngestError::Store(e) => e.into(),
        }
    }
}

/// A page of a list: `{"items": [...], "next": cursor or null}`.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of at most `limit` items from `rows` (fetched with `limit + 1`),
    /// with the cursor taken from the last item kept.
    pub fn new(mut rows: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more { rows.last().map(cursor) } else { None };
        Self { items: rows, next }
    }
}

/// Page size from a `limit` query parameter: default 50, at most 500.
pub fn page_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(50).clamp(1, 500)
}

/// Milliseconds to RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Parse a JSON body, naming the offending field (422) or calling it
/// malformed (400).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    tidings_sdk::types::from_json(text).map_err(|e| {
        if e.syntax {
            ApiError::bad_request(format!("malformed JSON: {}", e.message))
        } else {
            ApiError::invalid(e.path, e.message)
        }
    })
}
