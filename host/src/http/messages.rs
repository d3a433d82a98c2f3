//! `GET /v1/messages`, `GET /v1/messages/{id}`, `POST /v1/messages/{id}/retry`,
//! `GET /v1/audit`.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller, Page, page_limit, rfc3339};
use crate::store::{MessageFilter, MessageRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", get(list))
        .route("/v1/messages/{id}", get(show))
        .route("/v1/messages/{id}/retry", post(retry))
        .route("/v1/audit", get(audit))
}

pub(super) fn message_json(m: &MessageRow) -> Value {
    json!({
        "id": m.id,
        "event_id": m.event_id,
        "decision_id": m.decision_id,
        "order_id": m.order_id,
        "customer_id": m.customer_id,
        "channel": m.channel,
        "template": m.template,
        "locale": m.locale,
        "category": m.category,
        "priority": m.priority,
        "dedupe_key": m.dedupe_key,
        "cancel_key": m.cancel_key,
        "data": serde_json::from_str::<Value>(&m.data).unwrap_or(Value::Null),
        "status": m.status,
        "status_reason": m.status_reason,
        "send_at": rfc3339(m.send_at),
        "attempts": m.attempts,
        "fallback_channels": serde_json::from_str::<Value>(&m.fallback_channels).unwrap_or(Value::Null),
        "provider_id": m.provider_id,
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    order_id: Option<String>,
    status: Option<String>,
    channel: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let limit = page_limit(q.limit);
    let filter = MessageFilter {
        order_id: q.order_id.as_deref(),
        status: q.status.as_deref(),
        channel: q.channel.as_deref(),
        before: q.cursor.as_deref(),
    };
    let rows = state
        .pipeline
        .store
        .messages(tenant_id, &filter, limit + 1)
        .await?;
    let page = Page::new(rows, limit as usize, |m| m.id.clone());
    Ok(Json(
        json!({ "items": page.items.iter().map(message_json).collect::<Vec<_>>(), "next": page.next }),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let m = state
        .pipeline
        .store
        .message(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let attempts = state.pipeline.store.attempts(&m.id).await?;
    let history = state.pipeline.store.message_audit(tenant_id, &m.id).await?;
    let mut out = message_json(&m);
    out["rendered"] = m
        .rendered
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    out["attempts"] = json!(attempts
        .iter()
        .map(|a| json!({ "attempt": a.attempt, "at": rfc3339(a.at), "outcome": a.outcome, "detail": a.detail }))
        .collect::<Vec<_>>());
    out["history"] = json!(history.iter().map(audit_json).collect::<Vec<_>>());
    Ok(Json(out))
}

async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let store = &state.pipeline.store;
    let m = store
        .message(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    if !matches!(m.status.as_str(), "failed" | "dead") {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            format!(
                "only failed messages can be retried; this one is {}",
                m.status
            ),
        ));
    }
    store.reschedule(&m.id).await?;
    store
        .audit(crate::store::AuditEntry {
            tenant_id,
            order_id: Some(&m.order_id),
            event_id: Some(&m.event_id),
            message_id: Some(&m.id),
            stage: "schedule",
            action: "retry",
            actor: &caller.key_id,
            detail: json!({ "previous_status": m.status }),
        })
        .await?;
    state.pipeline.wake_messages();
    let m = store
        .message(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(message_json(&m)))
}

pub(super) fn audit_json(a: &crate::store::AuditRow) -> Value {
    json!({
        "seq": a.seq,
        "at": rfc3339(a.at),
        "stage": a.stage,
        "action": a.action,
        "actor": a.actor,
        "order_id": a.order_id,
        "event_id": a.event_id,
        "message_id": a.message_id,
        "detail": serde_json::from_str::<Value>(&a.detail).unwrap_or(Value::Null),
    })
}

#[derive(Deserialize)]
struct AuditQuery {
    order_id: Option<String>,
    cursor: Option<i64>,
    limit: Option<i64>,
}

async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let limit = page_limit(q.limit);
    let rows = state
        .pipeline
        .store
        .audit_trail(
            tenant_id,
            q.order_id.as_deref(),
            q.cursor.unwrap_or(0),
            limit + 1,
        )
        .await?;
    let page = Page::new(rows, limit as usize, |a| a.seq.to_string());
    Ok(Json(
        json!({ "items": page.items.iter().map(audit_json).collect::<Vec<_>>(), "next": page.next }),
    ))
}
