//! Commerce platform webhooks: `POST /v1/webhooks/shopify/{tenant}` and
//! `POST /v1/webhooks/woocommerce/{tenant}`, and `PUT /v1/integrations/{platform}`
//! where a merchant sets the webhook secret (never read back).
//!
//! A delivery is verified (HMAC-SHA256 of the raw body, constant time) before
//! anything is read or stored; a bad or missing signature is a 401. Mapped
//! events are validated like `POST /v1/events`. An event behind what the
//! order already reached (platforms retry and reorder) is recorded but does
//! not notify; unknown topics are acknowledged and recorded as ignored, so
//! the shop does not disable its subscription.
//!
//! Nothing acknowledged is lost. A delivery about an order Tidings has not
//! seen yet whose body does not carry the order (a Shopify fulfillment
//! arriving before `orders/create`) is held as received and answered 200;
//! when a delivery brings the order's snapshot, the held ones are mapped
//! again in order and their events stored after the order's, marked
//! `held_since`. Each delivery, with what it releases, is one transaction
//! serialised per order: the event, the order snapshot, the held deliveries
//! and the audit are stored together or not at all, so a retry never finds
//! an event stored without the snapshot it produced.

use std::collections::{BTreeMap, VecDeque};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_sdk::types::{EventKind, Order};

use super::{ApiError, AppState, Caller, parse_body, rfc3339};
use crate::ingest::platform::{MapError, Mapped, is_behind};
use crate::ingest::{self, shopify, woocommerce};
use crate::store::{AuditEntry, Store, new_id, now_ms};

/// Platform order bodies are larger than our own events.
const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// How long a delivery is held for an order that has not arrived. Shopify
/// retries for hours, not days; a delivery still held after a week is about
/// an order that will not come (placed before the shop was connected) and
/// is dropped, with an `expired` audit entry.
const HOLD_FOR_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// How long a handled delivery's id is remembered, to drop redeliveries.
const SEEN_FOR_MS: i64 = 30 * 24 * 60 * 60 * 1000;

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
    verify(
        &state.pipeline.store,
        &tenant_id,
        "shopify",
        header(&headers, "x-shopify-hmac-sha256"),
        |secret, signature| shopify::verify_signature(secret, &body, signature),
    )
    .await?;
    let topic = header(&headers, "x-shopify-topic")
        .ok_or_else(|| ApiError::bad_request("missing X-Shopify-Topic"))?;
    let delivery = Delivery::live(Platform::Shopify, topic, &headers, &body);
    process(&state, &tenant_id, Platform::Shopify, delivery).await
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
    let delivery = Delivery::live(Platform::WooCommerce, topic, &headers, &body);
    process(&state, &tenant_id, Platform::WooCommerce, delivery).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Shopify,
    WooCommerce,
}

impl Platform {
    fn as_str(self) -> &'static str {
        match self {
            Platform::Shopify => "shopify",
            Platform::WooCommerce => "woocommerce",
        }
    }

    /// The headers the mapping reads, kept with a held delivery.
    fn headers(self) -> &'static [&'static str] {
        match self {
            Platform::Shopify => &[
                "x-shopify-shop-domain",
                "x-shopify-event-id",
                "x-shopify-webhook-id",
                "x-shopify-triggered-at",
            ],
            Platform::WooCommerce => &["x-wc-webhook-delivery-id", "x-wc-webhook-source"],
        }
    }
}

/// A verified delivery as the mapping reads it: just received, or held
/// until its order arrived.
struct Delivery {
    topic: String,
    /// The headers of [`Platform::headers`] that were sent.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// The platform order the body is about, when it names one.
    order_id: Option<String>,
    /// When a held delivery was first received, ms.
    held_since: Option<i64>,
}

impl Delivery {
    fn live(platform: Platform, topic: &str, headers: &HeaderMap, body: &[u8]) -> Self {
        let order_id = match platform {
            Platform::Shopify => shopify::order_id(topic, body),
            Platform::WooCommerce => woocommerce::order_id(body),
        };
        Delivery {
            topic: topic.to_owned(),
            headers: platform
                .headers()
                .iter()
                .filter_map(|name| Some(((*name).to_owned(), header(headers, name)?.to_owned())))
                .collect(),
            body: body.to_vec(),
            order_id,
            held_since: None,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn shopify(&self) -> shopify::Delivery<'_> {
        shopify::Delivery {
            topic: &self.topic,
            shop_domain: self.header("x-shopify-shop-domain"),
            event_id: self
                .header("x-shopify-event-id")
                .or_else(|| self.header("x-shopify-webhook-id")),
            triggered_at: self.header("x-shopify-triggered-at"),
        }
    }

    fn woocommerce(&self) -> woocommerce::Delivery<'_> {
        woocommerce::Delivery {
            topic: &self.topic,
            delivery_id: self.header("x-wc-webhook-delivery-id"),
            source: self.header("x-wc-webhook-source"),
        }
    }

    /// What the delivery is known by across the platform's retries, when
    /// its headers carry an id.
    fn key(&self, platform: Platform) -> Option<String> {
        match platform {
            Platform::Shopify => shopify::delivery_key(&self.shopify()),
            Platform::WooCommerce => woocommerce::delivery_key(&self.woocommerce()),
        }
    }

    fn map(&self, platform: Platform, known: Option<&Known>) -> Result<Mapped, MapError> {
        match platform {
            Platform::Shopify => {
                let known = known.map(|k| shopify::Known { order: &k.order });
                shopify::map(&self.shopify(), &self.body, known)
            }
            Platform::WooCommerce => {
                let known = known.map(|k| woocommerce::Known {
                    order: &k.order,
                    status: k.status.as_deref().unwrap_or(""),
                });
                woocommerce::map(&self.woocommerce(), &self.body, known)
            }
        }
    }

    /// Where this held delivery goes among the others released with it.
    fn replay_order(&self, platform: Platform) -> (i64, u8) {
        let received = self.held_since.unwrap_or(0);
        match platform {
            Platform::Shopify => {
                shopify::held_order(&self.topic, self.header("x-shopify-triggered-at"), received)
            }
            Platform::WooCommerce => (received, 0),
        }
    }
}

/// The order as Tidings last saw it.
struct Known {
    order: Order,
    status: Option<String>,
}

/// An `ingest` audit entry about a delivery; one held until its order
/// arrived says so, and since when.
fn entry<'a>(
    tenant_id: &'a str,
    actor: &'a str,
    order_id: Option<&'a str>,
    event_id: Option<&'a str>,
    action: &'a str,
    mut detail: Value,
    held_since: Option<i64>,
) -> AuditEntry<'a> {
    if let Some(since) = held_since {
        detail["held"] = json!({ "since": rfc3339(since), "note": "held until the order arrived" });
    }
    AuditEntry {
        tenant_id,
        order_id,
        event_id,
        message_id: None,
        stage: "ingest",
        action,
        actor,
        detail,
    }
}

/// A new event id that sorts after `previous`: the events released with
/// their order are listed and processed after it, even within one
/// millisecond (ids sort by creation time, then randomness).
fn next_event_id(previous: Option<&str>) -> String {
    let id = new_id("evt");
    match previous {
        Some(previous) if id.as_str() <= previous => format!("{previous}0"),
        _ => id,
    }
}

/// Map and store a verified delivery, and the deliveries it releases, in one
/// transaction; answer for the delivery (202 when it is an event to notify,
/// else 200), listing what it released.
async fn process(
    state: &AppState,
    tenant_id: &str,
    platform: Platform,
    delivery: Delivery,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let actor = format!("webhook:{}", platform.as_str());
    let mut tx = state
        .pipeline
        .store
        .begin_platform(tenant_id, platform.as_str(), delivery.order_id.as_deref())
        .await?;
    let delivery_key = delivery.key(platform);
    if let Some(key) = &delivery_key
        && let Some((event_id, outcome)) = tx.seen(key).await?
    {
        // Dropped before mapping: against today's snapshot, an old body
        // could map to something else, or overwrite it with an older state.
        return Ok((
            StatusCode::OK,
            Json(
                json!({ "id": event_id, "status": "duplicate", "duplicate": true, "was": outcome }),
            ),
        ));
    }
    let mut known = match &delivery.order_id {
        Some(id) => tx.order(id).await?.and_then(|row| {
            Some(Known {
                order: serde_json::from_str(&row.snapshot).ok()?,
                status: row.platform_status,
            })
        }),
        None => None,
    };
    let mapped = delivery.map(platform, known.as_ref()).map_err(map_error)?;
    let now = now_ms();
    let mut last_id: Option<String> = None;
    let mut accepted: Vec<EventKind> = Vec::new();
    let mut answer = None;
    let mut released = Vec::new();
    let mut queue: VecDeque<Delivery> = VecDeque::new();
    let mut work = Some((delivery, Ok::<_, MapError>(mapped)));
    while let Some((delivery, mapped)) = work.take() {
        let had_order = known.is_some();
        let topic = delivery.topic.as_str();
        let held = delivery.held_since;
        let outcome = match mapped {
            Err(err) => {
                // Only a held delivery gets here: a live one answers 400/422.
                let detail = json!({ "topic": topic, "error": err.to_string() });
                tx.audit(entry(
                    tenant_id,
                    &actor,
                    delivery.order_id.as_deref(),
                    None,
                    "rejected",
                    detail,
                    held,
                ))
                .await?;
                json!({ "topic": topic, "status": "rejected" })
            }
            Ok(Mapped::Held {
                order_id,
                key,
                reason,
            }) => {
                let body = std::str::from_utf8(&delivery.body)
                    .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
                let headers = serde_json::to_string(&delivery.headers).expect("headers serialise");
                let new = tx.hold(&order_id, &key, topic, &headers, body).await?;
                if new {
                    let detail = json!({ "topic": topic, "reason": reason,
                        "note": "held until the order arrives" });
                    tx.audit(entry(
                        tenant_id,
                        &actor,
                        Some(&order_id),
                        None,
                        "held",
                        detail,
                        held,
                    ))
                    .await?;
                }
                for old in tx.expire_pending(now - HOLD_FOR_MS).await? {
                    let detail = json!({ "topic": old.topic, "held_since": rfc3339(old.received_at),
                        "reason": "held for 7 days and the order never arrived; dropped" });
                    tx.audit(entry(
                        tenant_id,
                        &actor,
                        Some(&old.order_id),
                        None,
                        "expired",
                        detail,
                        None,
                    ))
                    .await?;
                }
                json!({ "topic": topic, "status": "held", "duplicate": !new, "reason": reason })
            }
            Ok(Mapped::Ignored {
                reason,
                order,
                platform_status,
            }) => {
                let order_key = order
                    .as_ref()
                    .map(|o| o.id.clone())
                    .or_else(|| delivery.order_id.clone());
                if let (Some(order), Some(key)) = (order, &order_key) {
                    let snapshot = serde_json::to_string(&order).expect("orders serialise");
                    tx.set_order(key, platform_status.as_deref(), &snapshot)
                        .await?;
                    let status = platform_status.or_else(|| known.take().and_then(|k| k.status));
                    known = Some(Known { order, status });
                }
                let detail = json!({ "topic": topic, "reason": reason });
                tx.audit(entry(
                    tenant_id,
                    &actor,
                    order_key.as_deref(),
                    None,
                    "ignored",
                    detail,
                    held,
                ))
                .await?;
                json!({ "topic": topic, "status": "ignored", "reason": reason })
            }
            Ok(Mapped::Event {
                mut event,
                idempotency_key,
                platform_status,
            }) => match ingest::validate(&event) {
                Err(err) if delivery.held_since.is_none() => return Err(err.into()),
                Err(err) => {
                    let detail = json!({ "topic": topic, "error": err.to_string() });
                    tx.audit(entry(
                        tenant_id,
                        &actor,
                        delivery.order_id.as_deref(),
                        None,
                        "rejected",
                        detail,
                        held,
                    ))
                    .await?;
                    json!({ "topic": topic, "status": "rejected" })
                }
                Ok(()) => {
                    if let Some(since) = delivery.held_since {
                        event
                            .attributes
                            .insert("held_since".to_owned(), rfc3339(since));
                    }
                    let behind = known
                        .as_ref()
                        .is_some_and(|previous| is_behind(&previous.order, &event));
                    let id = next_event_id(last_id.as_deref());
                    let body = serde_json::to_string(&event).expect("events serialise");
                    let new_event = ingest::new_event(tenant_id, &event, &idempotency_key, &body);
                    let status = if behind { "ignored" } else { "received" };
                    let (row, new) = tx.insert_event(&new_event, &id, status, now).await?;
                    if new {
                        last_id = Some(id);
                    }
                    let detail = json!({ "topic": topic, "kind": event.kind,
                        "event_id": event.id });
                    if !new {
                        json!({ "topic": topic, "id": row.id, "status": "duplicate", "duplicate": true })
                    } else if behind {
                        let mut detail = detail;
                        detail["reason"] = json!(
                            "older than what the order already reached; recorded, not notified"
                        );
                        tx.audit(entry(
                            tenant_id,
                            &actor,
                            Some(&row.order_id),
                            Some(&row.id),
                            "stale",
                            detail,
                            held,
                        ))
                        .await?;
                        json!({ "topic": topic, "id": row.id, "status": "recorded", "notify": false })
                    } else {
                        let snapshot =
                            serde_json::to_string(&event.order).expect("orders serialise");
                        tx.set_order(&event.order.id, platform_status.as_deref(), &snapshot)
                            .await?;
                        tx.audit(entry(
                            tenant_id,
                            &actor,
                            Some(&row.order_id),
                            Some(&row.id),
                            "received",
                            detail,
                            held,
                        ))
                        .await?;
                        accepted.push(event.kind);
                        let status =
                            platform_status.or_else(|| known.take().and_then(|k| k.status));
                        known = Some(Known {
                            order: event.order,
                            status,
                        });
                        json!({ "topic": topic, "id": row.id, "status": "accepted", "duplicate": false })
                    }
                }
            },
        };
        if delivery.held_since.is_none() {
            answer = Some(outcome);
        } else {
            released.push(outcome);
        }
        if let (false, Some(order)) = (had_order, &known) {
            // The order just arrived: release what was held for it.
            let mut held: Vec<Delivery> = tx
                .take_pending(&order.order.id)
                .await?
                .into_iter()
                .map(|row| Delivery {
                    topic: row.topic,
                    headers: serde_json::from_str(&row.headers).unwrap_or_default(),
                    body: row.body.into_bytes(),
                    order_id: Some(row.order_id),
                    held_since: Some(row.received_at),
                })
                .collect();
            held.sort_by_key(|d| d.replay_order(platform));
            queue.extend(held);
        }
        if let Some(next) = queue.pop_front() {
            let mapped = next.map(platform, known.as_ref());
            work = Some((next, mapped));
        }
    }
    let mut answer = answer.expect("the delivery itself is handled first");
    if let Some(key) = &delivery_key {
        let outcome = answer["status"].as_str().unwrap_or("handled");
        tx.mark_seen(key, answer["id"].as_str(), outcome, now - SEEN_FOR_MS)
            .await?;
    }
    tx.commit().await?;

    for kind in &accepted {
        state.pipeline.metrics.inc(
            "tidings_events_total",
            &[("tenant", tenant_id), ("kind", kind.as_str())],
        );
    }
    if !accepted.is_empty() {
        state.wake.events.notify_one();
    }
    let status = if answer["status"] == "accepted" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    if let Some(answer) = answer.as_object_mut() {
        answer.remove("topic");
        if !released.is_empty() {
            answer.insert("released".to_owned(), Value::Array(released));
        }
    }
    Ok((status, Json(answer)))
}
