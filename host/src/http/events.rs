//! `POST /v1/events` and `GET /v1/events`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller, MAX_EVENT_BYTES, Page, page_limit, rfc3339};
use crate::ingest;
use crate::store::EventRow;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(post_event).get(list_events))
        // Axum's own limit answers 413 before the handler (the router gives
        // it the JSON error shape); ours is the same number, so a body just
        // over it is refused either way, with the same answer.
        .layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
}

fn accepted(row: &EventRow, duplicate: bool) -> Json<Value> {
    Json(json!({
        "id": row.id,
        "event_id": row.external_id,
        "status": "accepted",
        "duplicate": duplicate,
        "received_at": rfc3339(row.received_at),
    }))
}

async fn post_event(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    if body.len() > MAX_EVENT_BYTES {
        return Err(ApiError::too_large(format!(
            "events are limited to {MAX_EVENT_BYTES} bytes"
        )));
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let event = ingest::parse(text)?;
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("invalid Idempotency-Key header"))
        })
        .transpose()?;
    if key.is_some_and(|k| k.is_empty() || k.len() > 256) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1-256 characters",
        ));
    }
    let (row, new) = ingest::accept(
        &state.pipeline.store,
        tenant_id,
        &event,
        key,
        &caller.key_id,
    )
    .await?;
    // Ids only: the body carries the customer's contact details.
    tracing::info!(
        tenant = tenant_id, event = %row.id, kind = event.kind.as_str(), duplicate = !new,
        "event accepted"
    );
    if new {
        state.pipeline.metrics.inc(
            "tidings_events_total",
            &[("tenant", tenant_id), ("kind", event.kind.as_str())],
        );
        state.wake.events.notify_one();
    }
    Ok((StatusCode::ACCEPTED, accepted(&row, !new)))
}

#[derive(Deserialize)]
struct ListQuery {
    order_id: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let limit = page_limit(q.limit);
    let rows = state
        .pipeline
        .store
        .events(
            tenant_id,
            q.order_id.as_deref(),
            q.cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let page = Page::new(rows, limit as usize, |r| r.id.clone());
    let mut items = Vec::new();
    for row in &page.items {
        let decisions = state.pipeline.store.decisions_for_event(&row.id).await?;
        items.push(json!({
            "id": row.id,
            "event_id": row.external_id,
            "kind": row.kind,
            "order_id": row.order_id,
            "occurred_at": rfc3339(row.occurred_at),
            "received_at": rfc3339(row.received_at),
            "status": row.status,
            "event": serde_json::from_str::<Value>(&row.body).unwrap_or(Value::Null),
            "decisions": decisions.iter().map(|d| json!({
                "id": d.id,
                "plugin": format!("{}@{}", d.plugin_name, d.plugin_version),
                "outcome": d.outcome,
                "fuel": d.fuel,
                "duration_us": d.duration_us,
                "detail": serde_json::from_str::<Value>(&d.detail).unwrap_or(Value::Null),
            })).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({ "items": items, "next": page.next })))
}
