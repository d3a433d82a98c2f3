//! Tickets and approvals, for agents (and merchants):
//! `GET /v1/escalations`, `GET /v1/escalations/{id}`,
//! `POST /v1/escalations/{id}/ack|comment|resolve`, `GET /v1/approvals`,
//! `POST /v1/approvals/{id}/approve|reject`. Every step is audited with the
//! key that did it.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::messages::{audit_json, message_json};
use super::{ApiError, AppState, Caller, parse_body, rfc3339};
use crate::escalation::{self, Edits, EscalationError};
use crate::store::{EscalationFilter, EscalationRow, MessageFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/escalations", get(list))
        .route("/v1/escalations/{id}", get(show))
        .route("/v1/escalations/{id}/ack", post(ack))
        .route("/v1/escalations/{id}/resolve", post(resolve))
        .route("/v1/escalations/{id}/comment", post(comment))
        .route("/v1/approvals", get(approvals))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/reject", post(reject))
}

impl From<EscalationError> for ApiError {
    fn from(err: EscalationError) -> Self {
        match err {
            EscalationError::NotFound(what) => ApiError::not_found(what),
            EscalationError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            EscalationError::Invalid { field, message } => ApiError::invalid(field, message),
            EscalationError::Pipeline(e) => e.into(),
        }
    }
}

fn ticket_json(e: &EscalationRow) -> Value {
    json!({
        "id": e.id,
        "order_id": e.order_id,
        "event_id": e.event_id,
        "decision_id": e.decision_id,
        "message_id": e.message_id,
        "queue": e.queue,
        "priority": e.priority,
        "reason": e.reason,
        "sla_minutes": e.sla_minutes,
        "status": e.status,
        "tier": e.tier + 1,
        "next_tier_at": e.next_at.map(rfc3339),
        "expires_at": e.expires_at.map(rfc3339),
        "breached": e.breached != 0,
        "created_at": rfc3339(e.created_at),
        "updated_at": rfc3339(e.updated_at),
    })
}

#[derive(Deserialize)]
struct ListQuery {
    order_id: Option<String>,
    queue: Option<String>,
    priority: Option<String>,
    status: Option<String>,
    breached: Option<bool>,
    open: Option<bool>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let filter = EscalationFilter {
        order_id: q.order_id.as_deref(),
        queue: q.queue.as_deref(),
        priority: q.priority.as_deref(),
        status: q.status.as_deref(),
        breached: q.breached,
        open_only: q.open.unwrap_or(false),
    };
    let rows = state
        .pipeline
        .store
        .escalations_filtered(tenant_id, &filter)
        .await?;
    Ok(Json(
        json!({ "items": rows.iter().map(ticket_json).collect::<Vec<_>>(), "next": null }),
    ))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let store = &state.pipeline.store;
    let ticket = store
        .escalation(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("ticket"))?;
    let notes = store.notes(&id).await?;
    let trail = store
        .audit_trail(tenant_id, Some(&ticket.order_id), 0, 500)
        .await?;
    let mut out = ticket_json(&ticket);
    out["notes"] =
        json!(notes
        .iter()
        .map(|n| json!({ "id": n.id, "author": n.author, "body": n.body, "at": rfc3339(n.at) }))
        .collect::<Vec<_>>());
    out["history"] = json!(
        trail
            .iter()
            .filter(|a| a.stage == "escalation" && a.detail.contains(&id))
            .map(audit_json)
            .collect::<Vec<_>>()
    );
    Ok(Json(out))
}

async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let ticket = escalation::set_status(
        &state.pipeline,
        tenant_id,
        &id,
        "acknowledged",
        &caller.key_id,
    )
    .await?;
    Ok(Json(ticket_json(&ticket)))
}

async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let ticket =
        escalation::set_status(&state.pipeline, tenant_id, &id, "resolved", &caller.key_id).await?;
    Ok(Json(ticket_json(&ticket)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    body: String,
}

async fn comment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let body: CommentBody = parse_body(&body)?;
    let note =
        escalation::comment(&state.pipeline, tenant_id, &id, &body.body, &caller.key_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": note.id, "author": note.author, "body": note.body, "at": rfc3339(note.at) }),
        ),
    ))
}

async fn approvals(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let filter = MessageFilter {
        status: Some("held"),
        ..MessageFilter::default()
    };
    let rows = state
        .pipeline
        .store
        .messages(tenant_id, &filter, 500)
        .await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|m| {
            let mut item = message_json(m);
            item["reason"] = json!(m.status_reason);
            item["rendered"] = m
                .rendered
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or(Value::Null);
            item
        })
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let edits: Edits = if body.is_empty() {
        Edits::default()
    } else {
        parse_body(&body)?
    };
    escalation::approve(&state.pipeline, tenant_id, &id, &edits, &caller.key_id).await?;
    let m = state
        .pipeline
        .store
        .message(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(message_json(&m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
}

async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.agent_tenant()?;
    let body: RejectBody = parse_body(&body)?;
    escalation::reject(
        &state.pipeline,
        tenant_id,
        &id,
        &body.reason,
        &caller.key_id,
    )
    .await?;
    let m = state
        .pipeline
        .store
        .message(tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(message_json(&m)))
}
