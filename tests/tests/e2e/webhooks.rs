//! Shopify and WooCommerce webhooks through the HTTP API, signed as the
//! platforms sign them, on SQLite and PostgreSQL.

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tidings_tests::guests;
use tidings_tests::service::{Db, TestService};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    shopify_deliveries_are_verified_mapped_and_notified,
    shopify_bad_signatures_duplicates_and_unknown_topics,
    shopify_events_behind_the_order_are_recorded_but_not_notified,
    woocommerce_status_transitions_become_events,
    secrets_are_set_through_the_api_and_never_read_back,
);

const SHOPIFY_SECRET: &str = "shpss_0123456789abcdef";
const WOO_SECRET: &str = "wc-secret-0123456789";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(tidings_tests::fixtures_dir().join("..").join(path)).expect("fixture")
}

async fn shop(service: &TestService) -> (String, String) {
    let (tenant, key) = service.tenant("Platform shop", json!({})).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    for (platform, secret) in [("shopify", SHOPIFY_SECRET), ("woocommerce", WOO_SECRET)] {
        let (status, body) = service
            .call(
                Method::PUT,
                &format!("/v1/integrations/{platform}"),
                Some(&key),
                Some(json!({ "secret": secret })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    (tenant, key)
}

async fn shopify(
    service: &TestService,
    tenant: &str,
    topic: &str,
    event_id: &str,
    body: &[u8],
    signature: Option<String>,
) -> (StatusCode, Value) {
    let signature = signature.unwrap_or_else(|| sign(SHOPIFY_SECRET, body));
    let headers = [
        ("content-type", "application/json"),
        ("x-shopify-topic", topic),
        ("x-shopify-hmac-sha256", signature.as_str()),
        ("x-shopify-shop-domain", "bottega-verde.myshopify.com"),
        ("x-shopify-event-id", event_id),
        ("x-shopify-triggered-at", "2026-11-24T10:00:00.000000000Z"),
    ];
    service
        .call_raw(
            Method::POST,
            &format!("/v1/webhooks/shopify/{tenant}"),
            None,
            &headers,
            body.to_vec(),
        )
        .await
}

async fn woo(
    service: &TestService,
    tenant: &str,
    delivery: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    let signature = sign(WOO_SECRET, body);
    let headers = [
        ("content-type", "application/json"),
        ("x-wc-webhook-topic", "order.updated"),
        ("x-wc-webhook-signature", signature.as_str()),
        ("x-wc-webhook-delivery-id", delivery),
        ("x-wc-webhook-source", "https://negozio.example/"),
    ];
    service
        .call_raw(
            Method::POST,
            &format!("/v1/webhooks/woocommerce/{tenant}"),
            None,
            &headers,
            body.to_vec(),
        )
        .await
}

async fn events(service: &TestService, key: &str) -> Vec<Value> {
    let (_, list) = service
        .call(Method::GET, "/v1/events?limit=500", Some(key), None)
        .await;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.reverse();
    items
}

async fn shopify_deliveries_are_verified_mapped_and_notified(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    let (status, body) = shopify(
        &service,
        &tenant,
        "orders/create",
        "ev-1",
        &fixture("shopify/orders_create.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = shopify(
        &service,
        &tenant,
        "fulfillments/create",
        "ev-2",
        &fixture("shopify/fulfillments_create_first.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    service.run_workers().await;

    let stored = events(&service, &key).await;
    assert_eq!(stored.len(), 2);
    let created = &stored[0]["event"];
    assert_eq!(created["kind"], "order_created");
    assert_eq!(created["source"], "shopify");
    assert_eq!(created["order"]["id"], "5791234567890");
    assert!(created["order"]["items"].as_array().expect("items").len() >= 2);
    let shipped = &stored[1]["event"];
    assert!(
        matches!(
            shipped["kind"].as_str(),
            Some("shipment_created" | "partially_shipped")
        ),
        "{shipped}"
    );
    assert!(
        shipped["shipment"]["tracking_number"].is_string(),
        "{shipped}"
    );
    // The customer was notified in their language through the normal pipeline.
    let order = created["order"]["id"].as_str().expect("order id");
    let messages = service.messages(&key, order).await;
    assert!(
        messages
            .iter()
            .any(|m| m["template"] == "order-confirmation" && m["status"] == "sent"),
        "{messages:?}"
    );
}

async fn shopify_bad_signatures_duplicates_and_unknown_topics(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    let body = fixture("shopify/orders_create.json");

    let (status, _) = shopify(
        &service,
        &tenant,
        "orders/create",
        "ev-1",
        &body,
        Some(sign("wrong secret", &body)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, _) = shopify(
        &service,
        &tenant,
        "orders/create",
        "ev-1",
        &tampered,
        Some(sign(SHOPIFY_SECRET, &body)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = service
        .call_raw(
            Method::POST,
            &format!("/v1/webhooks/shopify/{tenant}"),
            None,
            &[("x-shopify-topic", "orders/create")],
            body.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a missing signature");
    assert!(
        events(&service, &key).await.is_empty(),
        "nothing stored without a valid signature"
    );

    let (first, _) = shopify(&service, &tenant, "orders/create", "ev-1", &body, None).await;
    let (again, dup) = shopify(&service, &tenant, "orders/create", "ev-1", &body, None).await;
    assert_eq!((first, again), (StatusCode::ACCEPTED, StatusCode::OK));
    assert_eq!(dup["duplicate"], true);
    assert_eq!(events(&service, &key).await.len(), 1);

    let (status, ignored) = shopify(
        &service,
        &tenant,
        "products/update",
        "ev-9",
        br#"{"id": 1}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ignored["status"], "ignored");

    let (status, _) = shopify(
        &service,
        &tenant,
        "orders/create",
        "ev-3",
        b"{not json",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut missing: Value = serde_json::from_slice(&body).expect("json");
    missing["id"] = json!(5791234500001_u64);
    missing["line_items"][1]["price"] = Value::Null;
    missing["line_items"][1]["price_set"] = Value::Null;
    let missing = serde_json::to_vec(&missing).expect("json");
    let (status, err) = shopify(&service, &tenant, "orders/create", "ev-4", &missing, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "line_items[1].price", "{err}");
}

async fn shopify_events_behind_the_order_are_recorded_but_not_notified(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    for (topic, id, file) in [
        ("orders/create", "ev-1", "shopify/orders_create.json"),
        (
            "fulfillments/create",
            "ev-2",
            "shopify/fulfillments_create_first.json",
        ),
        (
            "fulfillment_events/create",
            "ev-3",
            "shopify/fulfillment_events_create_delivered.json",
        ),
    ] {
        let (status, body) = shopify(&service, &tenant, topic, id, &fixture(file), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{topic}: {body}");
    }
    // A retried in-transit update arrives after the delivery.
    let (status, body) = shopify(
        &service,
        &tenant,
        "fulfillments/update",
        "ev-4",
        &fixture("shopify/fulfillments_update_in_transit.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["notify"], false);
    service.run_workers().await;
    let stored = events(&service, &key).await;
    let stale = stored.last().expect("recorded");
    assert_eq!(stale["status"], "ignored");
    assert_eq!(
        stale["decisions"],
        json!([]),
        "a stale event is not decided on"
    );
}

async fn woocommerce_status_transitions_become_events(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    // The unsigned ping sent when the webhook is created.
    let (status, _) = service
        .call_raw(
            Method::POST,
            &format!("/v1/webhooks/woocommerce/{tenant}"),
            None,
            &[("content-type", "application/x-www-form-urlencoded")],
            b"webhook_id=17".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = woo(
        &service,
        &tenant,
        "d-1",
        &fixture("woocommerce/order_pending.json"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = woo(
        &service,
        &tenant,
        "d-2",
        &fixture("woocommerce/order_processing.json"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The same status again is not an event.
    let (status, body) = woo(
        &service,
        &tenant,
        "d-3",
        &fixture("woocommerce/order_processing.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ignored");
    let (status, body) = woo(
        &service,
        &tenant,
        "d-4",
        &fixture("woocommerce/order_completed.json"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    service.run_workers().await;

    let kinds: Vec<String> = events(&service, &key)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds[0], "order_created");
    assert_eq!(kinds[1], "order_paid");
    assert!(
        matches!(kinds[2].as_str(), "shipment_created" | "delivered"),
        "{kinds:?}"
    );

    let (status, _) = service
        .call_raw(
            Method::POST,
            &format!("/v1/webhooks/woocommerce/{tenant}"),
            None,
            &[
                ("x-wc-webhook-topic", "order.updated"),
                ("x-wc-webhook-signature", "bm9wZQ=="),
            ],
            fixture("woocommerce/order_refunded.json"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn secrets_are_set_through_the_api_and_never_read_back(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    let (status, list) = service
        .call(Method::GET, "/v1/integrations", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(
        !text.contains(SHOPIFY_SECRET) && !text.contains(WOO_SECRET),
        "{text}"
    );
    assert_eq!(list["items"].as_array().expect("items").len(), 2);
    assert_eq!(
        list["items"][0]["webhook_url"],
        format!("/v1/webhooks/shopify/{tenant}")
    );
    let (status, _) = service
        .call(
            Method::PUT,
            "/v1/integrations/magento",
            Some(&key),
            Some(json!({ "secret": "whatever-secret" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another tenant's secret does not verify this tenant's webhooks.
    let (other, _) = service.tenant("Other", json!({})).await;
    let body = fixture("shopify/orders_create.json");
    let (status, _) = shopify(&service, &other, "orders/create", "ev-x", &body, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
