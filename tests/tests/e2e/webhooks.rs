//! Shopify and WooCommerce webhooks through the HTTP API, signed as the
//! platforms sign them, on SQLite and PostgreSQL.

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tidings_host::store::Backend;
use tidings_tests::guests;
use tidings_tests::service::{Db, TestService};

on_both_backends!(
    shopify_deliveries_are_verified_mapped_and_notified,
    shopify_bad_signatures_duplicates_and_unknown_topics,
    shopify_webhook_id_dedupes_when_the_event_id_is_absent,
    shopify_events_behind_the_order_are_recorded_but_not_notified,
    shopify_fulfillment_before_its_order_is_held_then_released_in_order,
    shopify_a_failed_snapshot_write_stores_nothing_so_the_retry_is_new,
    shopify_declined_returns_are_recorded_on_the_order_not_notified,
    woocommerce_status_transitions_become_events,
    woocommerce_redeliveries_bad_bodies_and_bad_signatures,
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
    shopify_with(
        service,
        tenant,
        &[
            ("x-shopify-topic", topic),
            ("x-shopify-hmac-sha256", signature.as_str()),
            ("x-shopify-event-id", event_id),
        ],
        body,
    )
    .await
}

/// A Shopify delivery with the usual shop headers and `headers`.
async fn shopify_with(
    service: &TestService,
    tenant: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, Value) {
    let mut all = vec![
        ("content-type", "application/json"),
        ("x-shopify-shop-domain", "bottega-verde.myshopify.com"),
        ("x-shopify-triggered-at", "2026-11-24T10:00:00.000000000Z"),
    ];
    all.extend_from_slice(headers);
    service
        .call_raw(
            Method::POST,
            &format!("/v1/webhooks/shopify/{tenant}"),
            None,
            &all,
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
    list(service, key, "/v1/events?limit=500").await
}

/// A list endpoint's items, oldest first.
async fn list(service: &TestService, key: &str, path: &str) -> Vec<Value> {
    let (status, list) = service.call(Method::GET, path, Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    if path.starts_with("/v1/events") {
        // Events are listed newest first.
        items.reverse();
    }
    items
}

/// The audit trail of `order` written by the webhook ingest, oldest first.
async fn ingest_audit(service: &TestService, key: &str, order: &str) -> Vec<Value> {
    list(
        service,
        key,
        &format!("/v1/audit?order_id={order}&limit=500"),
    )
    .await
    .into_iter()
    .filter(|a| a["stage"] == "ingest")
    .collect()
}

const SHOPIFY_ORDER: &str = "5791234567890";

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
    // The first parcel carries two of the four lines: the rest is to follow.
    assert_eq!(shipped["kind"], "partially_shipped", "{shipped}");
    assert_eq!(shipped["shipment"]["id"], "4567000001", "{shipped}");
    assert_eq!(shipped["shipment"]["tracking_number"], "BRT123456789IT");
    assert_eq!(shipped["shipment"]["carrier"], "BRT");
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
    let (_, trail) = service
        .call(Method::GET, "/v1/audit?limit=500", Some(&key), None)
        .await;
    let recorded: Vec<&Value> = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["action"] == "ignored")
        .collect();
    assert_eq!(recorded.len(), 1, "{trail}");
    assert_eq!(recorded[0]["stage"], "ingest");
    assert_eq!(recorded[0]["actor"], "webhook:shopify");
    assert_eq!(recorded[0]["order_id"], Value::Null);
    assert_eq!(recorded[0]["detail"]["topic"], "products/update");
    assert_eq!(
        recorded[0]["detail"]["reason"],
        "topic `products/update` is not mapped"
    );

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

async fn shopify_webhook_id_dedupes_when_the_event_id_is_absent(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    let body = fixture("shopify/orders_create.json");
    let signature = sign(SHOPIFY_SECRET, &body);
    let headers = [
        ("x-shopify-topic", "orders/create"),
        ("x-shopify-hmac-sha256", signature.as_str()),
        ("x-shopify-webhook-id", "wh-7f3e1c2a"),
    ];
    let (first, body_first) = shopify_with(&service, &tenant, &headers, &body).await;
    assert_eq!(first, StatusCode::ACCEPTED, "{body_first}");
    let (again, dup) = shopify_with(&service, &tenant, &headers, &body).await;
    assert_eq!(again, StatusCode::OK, "{dup}");
    assert_eq!(dup["duplicate"], true, "{dup}");
    assert_eq!(dup["id"], body_first["id"]);
    let stored = events(&service, &key).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["event_id"], "shopify:orders/create:wh-7f3e1c2a");
}

async fn shopify_fulfillment_before_its_order_is_held_then_released_in_order(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    // The carrier's delivery scan and the fulfillment both overtake the order,
    // the scan first.
    let (status, body) = shopify(
        &service,
        &tenant,
        "fulfillment_events/create",
        "ev-3",
        &fixture("shopify/fulfillment_events_create_delivered.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "held", "{body}");
    let fulfillment = fixture("shopify/fulfillments_create_first.json");
    let (status, body) = shopify(
        &service,
        &tenant,
        "fulfillments/create",
        "ev-2",
        &fulfillment,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "held", "{body}");
    assert_eq!(body["duplicate"], false);
    // Shopify retries before the order arrives: held once.
    let (status, body) = shopify(
        &service,
        &tenant,
        "fulfillments/create",
        "ev-2",
        &fulfillment,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["status"], &body["duplicate"], &body["was"]),
        (&json!("duplicate"), &json!(true), &json!("held")),
        "{body}"
    );
    assert!(events(&service, &key).await.is_empty(), "no event yet");
    let trail = ingest_audit(&service, &key, SHOPIFY_ORDER).await;
    let held: Vec<&Value> = trail.iter().filter(|a| a["action"] == "held").collect();
    assert_eq!(held.len(), 2, "{trail:?}");
    assert_eq!(held[1]["detail"]["topic"], "fulfillments/create");
    assert_eq!(held[1]["detail"]["note"], "held until the order arrives");
    assert_eq!(
        held[1]["detail"]["reason"],
        "fulfillment 4567000001 is for an order Tidings has not seen yet"
    );

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
    assert_eq!(body["status"], "accepted");
    let released = body["released"].as_array().expect("released");
    assert_eq!(
        released
            .iter()
            .map(|r| (r["topic"].as_str(), r["status"].as_str()))
            .collect::<Vec<_>>(),
        [
            (Some("fulfillments/create"), Some("accepted")),
            (Some("fulfillment_events/create"), Some("accepted")),
        ],
        "{body}"
    );

    let stored = list(
        &service,
        &key,
        &format!("/v1/events?order_id={SHOPIFY_ORDER}&limit=500"),
    )
    .await;
    let kinds: Vec<&str> = stored
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["order_created", "partially_shipped", "delivered"]);
    let created = &stored[0]["event"];
    assert_eq!(created["attributes"].get("held_since"), None);
    let shipped = &stored[1]["event"];
    assert_eq!(shipped["id"], "shopify:fulfillments/create:ev-2");
    assert!(shipped["attributes"]["held_since"].is_string(), "{shipped}");
    assert_eq!(shipped["shipment"]["tracking_number"], "BRT123456789IT");
    assert_eq!(shipped["shipment"]["carrier"], "BRT");
    assert_eq!(
        shipped["order"]["items"][0],
        json!({"sku": "TEE-ORG-M", "title": "Organic cotton T-shirt - M", "quantity": 2,
               "unit_price": {"minor": 2900, "currency": "EUR"}, "status": "fulfilled"})
    );
    let delivered = &stored[2]["event"];
    assert_eq!(delivered["shipment"]["id"], "4567000001");
    assert_eq!(delivered["shipment"]["status"], "delivered");
    assert_eq!(
        delivered["shipment"]["tracking_number"], "BRT123456789IT",
        "the scan is mapped after the fulfillment it belongs to"
    );
    let trail = ingest_audit(&service, &key, SHOPIFY_ORDER).await;
    let received: Vec<&Value> = trail.iter().filter(|a| a["action"] == "received").collect();
    assert_eq!(received.len(), 3, "{trail:?}");
    assert_eq!(received[0]["detail"].get("held"), None);
    for entry in &received[1..] {
        assert_eq!(
            entry["detail"]["held"]["note"], "held until the order arrived",
            "{entry}"
        );
    }

    // Every event goes through the pipeline, the order's first.
    service.run_workers().await;
    let stored = events(&service, &key).await;
    assert!(
        stored.iter().all(|e| e["status"] == "processed"),
        "{stored:?}"
    );
    let messages = service.messages(&key, SHOPIFY_ORDER).await;
    assert_eq!(
        messages.first().map(|m| &m["template"]),
        Some(&json!("order-confirmation")),
        "{messages:?}"
    );

    // A retry after the release finds the event already stored.
    let (status, body) = shopify(
        &service,
        &tenant,
        "fulfillments/create",
        "ev-2",
        &fulfillment,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], true, "{body}");
    assert_eq!(events(&service, &key).await.len(), 3);
}

async fn shopify_a_failed_snapshot_write_stores_nothing_so_the_retry_is_new(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    let store = &service.state.pipeline.store;
    let body = fixture("shopify/orders_create.json");
    // Reading the order snapshot works, writing it fails: the event is
    // stored first in the same transaction, so it must not survive.
    let (refuse, allow): (&[&str], &[&str]) = match store.backend() {
        Backend::Sqlite => (
            &[
                "CREATE TRIGGER refuse_snapshots BEFORE INSERT ON platform_orders
               BEGIN SELECT RAISE(ABORT, 'snapshot write refused'); END",
            ],
            &["DROP TRIGGER refuse_snapshots"],
        ),
        Backend::Postgres => (
            &[
                "CREATE FUNCTION refuse_snapshots() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'snapshot write refused'; END $$",
                "CREATE TRIGGER refuse_snapshots BEFORE INSERT ON platform_orders
                 FOR EACH ROW EXECUTE FUNCTION refuse_snapshots()",
            ],
            &["DROP TRIGGER refuse_snapshots ON platform_orders"],
        ),
    };
    for sql in refuse {
        sqlx::query(sql)
            .execute(store.pool())
            .await
            .expect("refuse");
    }
    let (status, _) = shopify(&service, &tenant, "orders/create", "ev-1", &body, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        events(&service, &key).await.is_empty(),
        "nothing half-stored"
    );
    assert!(
        ingest_audit(&service, &key, SHOPIFY_ORDER).await.is_empty(),
        "nor audited"
    );
    for sql in allow {
        sqlx::query(sql).execute(store.pool()).await.expect("allow");
    }

    // Shopify retries: the retry is a new event, and the snapshot is there
    // for what follows (the fulfillment is not held).
    let (status, first) = shopify(&service, &tenant, "orders/create", "ev-1", &body, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["duplicate"], false);
    let (status, shipped) = shopify(
        &service,
        &tenant,
        "fulfillments/create",
        "ev-2",
        &fixture("shopify/fulfillments_create_first.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{shipped}");
    let kinds: Vec<String> = events(&service, &key)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, ["order_created", "partially_shipped"]);
}

async fn shopify_declined_returns_are_recorded_on_the_order_not_notified(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    let (status, _) = shopify(
        &service,
        &tenant,
        "orders/create",
        "ev-1",
        &fixture("shopify/orders_create.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = shopify(
        &service,
        &tenant,
        "returns/request",
        "ev-2",
        &fixture("shopify/returns_request.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = shopify(
        &service,
        &tenant,
        "returns/decline",
        "ev-3",
        &fixture("shopify/returns_decline.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ignored", "{body}");
    let kinds: Vec<String> = events(&service, &key)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["order_created", "return_requested"],
        "no event for the decline"
    );
    let trail = ingest_audit(&service, &key, SHOPIFY_ORDER).await;
    let declined = trail.last().expect("audited");
    assert_eq!(declined["action"], "ignored");
    assert_eq!(declined["detail"]["topic"], "returns/decline");
    assert_eq!(
        declined["detail"]["reason"],
        "return #1042-R1 (9854321) declined: recorded, not notified (no event kind for it); \
         reason: return_period_ended — Il reso è oltre i 30 giorni previsti"
    );
}

async fn woocommerce_redeliveries_bad_bodies_and_bad_signatures(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    let pending = fixture("woocommerce/order_pending.json");
    let (status, first) = woo(&service, &tenant, "d-1", &pending).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    // WooCommerce redelivers with the same delivery id.
    let (status, again) = woo(&service, &tenant, "d-1", &pending).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(events(&service, &key).await.len(), 1);

    let (status, err) = woo(&service, &tenant, "d-2", b"{\"id\": 2087, ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "bad_request");

    let mut missing: Value = serde_json::from_slice(&pending).expect("json");
    missing["id"] = json!(2099);
    missing["line_items"][1]["quantity"] = Value::Null;
    let missing = serde_json::to_vec(&missing).expect("json");
    let (status, err) = woo(&service, &tenant, "d-3", &missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "line_items[1].quantity", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("line_items[1].quantity")),
        "{err}"
    );

    let refunded = fixture("woocommerce/order_refunded.json");
    let (status, _) = service
        .call_raw(
            Method::POST,
            &format!("/v1/webhooks/woocommerce/{tenant}"),
            None,
            &[
                ("content-type", "application/json"),
                ("x-wc-webhook-topic", "order.updated"),
                ("x-wc-webhook-delivery-id", "d-4"),
                ("x-wc-webhook-signature", &sign("not the secret", &refunded)),
            ],
            refunded,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let stored = events(&service, &key).await;
    assert_eq!(stored.len(), 1, "nothing stored: {stored:?}");
    let order = stored[0]["order_id"].as_str().expect("order id").to_owned();
    assert!(
        ingest_audit(&service, &key, &order)
            .await
            .iter()
            .all(|a| a["action"] == "received"),
        "nothing audited for the rejected deliveries"
    );
    // Nor was the order's last status: paying it is still pending → processing.
    let (status, paid) = woo(
        &service,
        &tenant,
        "d-5",
        &fixture("woocommerce/order_processing.json"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{paid}");
    let stored = events(&service, &key).await;
    assert_eq!(stored[1]["kind"], "order_paid");
    assert_eq!(
        stored[1]["event"]["attributes"]["previous_status"],
        "pending"
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

    let stored = events(&service, &key).await;
    let kinds: Vec<&str> = stored
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    // WooCommerce's `completed` means the order was shipped, not delivered.
    assert_eq!(kinds, ["order_created", "order_paid", "shipment_created"]);
    let shipped = &stored[2]["event"];
    assert_eq!(shipped["attributes"]["previous_status"], "processing");
    assert_eq!(shipped["source"], "woocommerce");

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
