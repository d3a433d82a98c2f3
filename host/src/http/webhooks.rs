//! Commerce platform webhooks: `POST /v1/webhooks/shopify/{tenant}` and
//! `POST /v1/webhooks/woocommerce/{tenant}`, and `PUT /v1/integrations/{platform}`
//! where a merchant sets the webhook secret (never read back).
//!
//! A delivery is verified (HMAC-SHA256 of the raw body, constant time) before
//! anything is read or stored; a bad or missing signature is a 401. Mapped
//! events go through the same ingest as `POST /v1/events`. An event behind
//! what the order already reached (platforms retry and reorder) is recorded
//! but does not notify; unknown topics are acknowledged and recorded as
//! ignored, so the shop does not disable its subscription.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_sdk::types::{Order, OrderEvent};

use super::{ApiError, AppState, Caller, parse_body, rfc3339};
use crate::ingest::platform::{MapError, Mapped, is_behind};
use crate::ingest::{self, shopify, woocommerce};
use crate::store::{AuditEntry, Store};

/// Platform order bodies are larger than our own events.
const MAX_WEBHOOK_BYTES: usize = 1 << 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/shopify/{tenant}", post(shopify_webhook))
        .route(
            "/v1/webhooks/woocommerce/{tenant}",
            post(woocommerce_webhook),
        )
        .route("/v1/integrations", get(list_integrations))
        .route("/v1/integrations/{platform}", put(set_secret))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
}

const PLATFORMS: [&str; 2] = ["shopify", "woocommerce"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    secret: String,
}

async fn set_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(platform): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    if !PLATFORMS.contains(&platform.as_str()) {
        return Err(ApiError::not_found("platform"));
    }
    let body: SecretBody = parse_body(&body)?;
    if body.secret.trim().len() < 8 {
        return Err(ApiError::invalid("secret", "must be at least 8 characters"));
    }
    state
        .pipeline
        .store
        .set_integration_secret(tenant_id, &platform, body.secret.trim())
        .await?;
    Ok(Json(json!({
        "platform": platform,
        "configured": true,
        "webhook_url": format!("/v1/webhooks/{platform}/{tenant_id}"),
    })))
}

async fn list_integrations(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let rows = state.pipeline.store.integrations(tenant_id).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|(platform, at)| {
            json!({
                "platform": platform,
                "configured": true,
                "webhook_url": format!("/v1/webhooks/{platform}/{tenant_id}"),
                "updated_at": rfc3339(*at),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The tenant's secret for `platform`, checked against the signature.
async fn verify(
    store: &Store,
    tenant_id: &str,
    platform: &str,
    signature: Option<&str>,
    check: impl Fn(&[u8], &str) -> bool,
) -> Result<(), ApiError> {
    if store.tenant(tenant_id).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let secret = store
        .integration_secret(tenant_id, platform)
        .await?
        .ok_or_else(|| {
            unauthorized(&format!(
                "no {platform} secret is configured for this tenant"
            ))
        })?;
    let signature = signature.ok_or_else(|| unauthorized("missing webhook signature"))?;
    if check(secret.as_bytes(), signature) {
        Ok(())
    } else {
        Err(unauthorized("invalid webhook signature"))
    }
}

fn map_error(err: MapError) -> ApiError {
    match err {
        MapError::Malformed(message) => ApiError::bad_request(format!("malformed JSON: {message}")),
        MapError::Missing { field, message } => ApiError::invalid(field, message),
    }
}

async fn shopify_webhook(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let store = &state.pipeline.store;
    verify(
        store,
        &tenant_id,
        "shopify",
        header(&headers, "x-shopify-hmac-sha256"),
        |secret, signature| shopify::verify_signature(secret, &body, signature),
    )
    .await?;
    let topic = header(&headers, "x-shopify-topic")
        .ok_or_else(|| ApiError::bad_request("missing X-Shopify-Topic"))?;
    let delivery = shopify::Delivery {
        topic,
        shop_domain: header(&headers, "x-shopify-shop-domain"),
        event_id: header(&headers, "x-shopify-event-id")
            .or_else(|| header(&headers, "x-shopify-webhook-id")),
        triggered_at: header(&headers, "x-shopify-triggered-at"),
    };
    let order_id = shopify::order_id(topic, &body);
    let known = match &order_id {
        Some(id) => store.platform_order(&tenant_id, "shopify", id).await?,
        None => None,
    };
    let known_order: Option<Order> = known
        .as_ref()
        .and_then(|k| serde_json::from_str(&k.snapshot).ok());
    let mapped = shopify::map(
        &delivery,
        &body,
        known_order.as_ref().map(|order| shopify::Known { order }),
    )
    .map_err(map_error)?;
    handle(
        &state,
        &tenant_id,
        "shopify",
        topic,
        order_id,
        known_order,
        mapped,
    )
    .await
}

async fn woocommerce_webhook(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let store = &state.pipeline.store;
    if woocommerce::is_ping(header(&headers, "content-type"), &body) {
        if store.tenant(&tenant_id).await?.is_none() {
            return Err(ApiError::not_found("tenant"));
        }
        return Ok((
            StatusCode::OK,
            Json(json!({ "status": "ok", "ping": true })),
        ));
    }
    verify(
        store,
        &tenant_id,
        "woocommerce",
        header(&headers, "x-wc-webhook-signature"),
        |secret, signature| woocommerce::verify_signature(secret, &body, signature),
    )
    .await?;
    let topic = header(&headers, "x-wc-webhook-topic")
        .ok_or_else(|| ApiError::bad_request("missing X-WC-Webhook-Topic"))?;
    let delivery = woocommerce::Delivery {
        topic,
        delivery_id: header(&headers, "x-wc-webhook-delivery-id"),
        source: header(&headers, "x-wc-webhook-source"),
    };
    let order_id = woocommerce::order_id(&body);
    let known = match &order_id {
        Some(id) => store.platform_order(&tenant_id, "woocommerce", id).await?,
        None => None,
    };
    let known_order: Option<Order> = known
        .as_ref()
        .and_then(|k| serde_json::from_str(&k.snapshot).ok());
    let known_arg = match (&known_order, &known) {
        (Some(order), Some(row)) => Some(woocommerce::Known {
            order,
            status: row.platform_status.as_deref().unwrap_or(""),
        }),
        _ => None,
    };
    let mapped = woocommerce::map(&delivery, &body, known_arg).map_err(map_error)?;
    handle(
        &state,
        &tenant_id,
        "woocommerce",
        topic,
        order_id,
        known_order,
        mapped,
    )
    .await
}

/// Ingest what a delivery mapped to, remembering the order's latest state.
async fn handle(
    state: &AppState,
    tenant_id: &str,
    platform: &str,
    topic: &str,
    order_id: Option<String>,
    known: Option<Order>,
    mapped: Mapped,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let store = &state.pipeline.store;
    let actor = format!("webhook:{platform}");
    match mapped {
        Mapped::Ignored {
            reason,
            order,
            platform_status,
        } => {
            let order_key = order.as_ref().map(|o| o.id.clone()).or(order_id);
            if let (Some(order), Some(key)) = (&order, &order_key) {
                let snapshot = serde_json::to_string(order).expect("orders serialise");
                store
                    .set_platform_order(
                        tenant_id,
                        platform,
                        key,
                        platform_status.as_deref(),
                        &snapshot,
                    )
                    .await?;
            }
            store
                .audit(AuditEntry {
                    tenant_id,
                    order_id: order_key.as_deref(),
                    event_id: None,
                    message_id: None,
                    stage: "ingest",
                    action: "ignored",
                    actor: &actor,
                    detail: json!({ "topic": topic, "reason": reason }),
                })
                .await?;
            Ok((
                StatusCode::OK,
                Json(json!({ "status": "ignored", "reason": reason })),
            ))
        }
        Mapped::Event {
            event,
            idempotency_key,
            platform_status,
        } => {
            ingest::validate(&event)?;
            let behind = known
                .as_ref()
                .is_some_and(|previous| is_behind(previous, &event));
            let (row, new) =
                ingest::accept(store, tenant_id, &event, Some(&idempotency_key)).await?;
            if !new {
                return Ok((
                    StatusCode::OK,
                    Json(json!({ "id": row.id, "status": "duplicate", "duplicate": true })),
                ));
            }
            if behind {
                store.finish_event(&row.id, "ignored").await?;
                state
                    .pipeline
                    .audit(&row, None, "ingest", "stale", &actor, json!({ "topic": topic, "kind": event.kind,
                        "reason": "older than what the order already reached; recorded, not notified" }))
                    .await?;
                return Ok((
                    StatusCode::OK,
                    Json(json!({ "id": row.id, "status": "recorded", "notify": false })),
                ));
            }
            remember(
                store,
                tenant_id,
                platform,
                &event,
                platform_status.as_deref(),
            )
            .await?;
            state.pipeline.metrics.inc(
                "tidings_events_total",
                &[("tenant", tenant_id), ("kind", event.kind.as_str())],
            );
            state
                .pipeline
                .audit(
                    &row,
                    None,
                    "ingest",
                    "received",
                    &actor,
                    json!({ "topic": topic, "kind": event.kind, "event_id": event.id }),
                )
                .await?;
            state.wake.events.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "id": row.id, "status": "accepted", "duplicate": false })),
            ))
        }
    }
}

async fn remember(
    store: &Store,
    tenant_id: &str,
    platform: &str,
    event: &OrderEvent,
    platform_status: Option<&str>,
) -> Result<(), ApiError> {
    let snapshot = serde_json::to_string(&event.order).expect("orders serialise");
    store
        .set_platform_order(
            tenant_id,
            platform,
            &event.order.id,
            platform_status,
            &snapshot,
        )
        .await?;
    Ok(())
}
