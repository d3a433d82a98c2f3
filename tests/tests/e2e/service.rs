//! The service end to end — HTTP API, pipeline, workers, file transport —
//! with the same behavioural tests on SQLite and on PostgreSQL.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tidings_sdk::testing::fixture;
use tidings_sdk::types::{EventKind, OrderEvent};
use tidings_tests::guests;
use tidings_tests::service::{Db, OPERATOR_KEY, TestService};

on_both_backends!(
    a_lifecycle_becomes_rendered_emails_and_an_audit_trail,
    a_retried_event_is_stored_once,
    bad_requests_get_precise_errors,
    a_merchant_never_sees_another_tenants_data,
    a_plugin_fault_escalates_and_keeps_the_event,
    quiet_hours_defer_instead_of_dropping,
    a_cancel_recorded_before_a_late_message_still_cancels_it,
    a_restart_loses_nothing_and_sends_nothing_twice,
    dry_run_sends_nothing_and_replay_shows_what_would_change,
    two_plugins_asking_for_the_same_notice_send_it_once,
    templates_are_validated_and_previewed,
    metrics_and_health_are_served,
    plugins_upload_as_raw_bytes_or_multipart_within_the_size_limit,
    sandbox_limits_are_set_by_the_operator_only,
);

/// The sample event of `kind` for `order_id`.
fn event(kind: EventKind, order_id: &str) -> OrderEvent {
    let mut e = fixture(kind);
    e.id = format!("{order_id}_{kind}");
    e.order.id = order_id.to_owned();
    e
}

async fn shop(service: &TestService) -> (String, String) {
    let (tenant, key) = service
        .tenant("Bottega", json!({ "shop": { "name": "Bottega", "url": "https://bottega.example", "support_email": "help@bottega.example" } }))
        .await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    (tenant, key)
}

fn statuses(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m["template"].as_str().unwrap_or("").to_owned(),
                m["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn a_lifecycle_becomes_rendered_emails_and_an_audit_trail(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = shop(&service).await;
    for kind in [
        EventKind::OrderCreated,
        EventKind::ShipmentCreated,
        EventKind::DeliveryDelayed,
        EventKind::Delivered,
    ] {
        let (status, body) = service.post_event(&key, &event(kind, "ord_1")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        service.run_workers().await;
    }
    let messages = service.messages(&key, "ord_1").await;
    let got = statuses(&messages);
    for expected in [
        ("order-confirmation", "sent"),
        ("order-shipped", "sent"),
        ("delivery-delayed", "sent"),
        ("delay-followup", "cancelled"),
        ("order-delivered", "sent"),
        ("feedback-request", "scheduled"),
    ] {
        assert!(
            got.contains(&(expected.0.into(), expected.1.into())),
            "missing {expected:?} in {got:?}"
        );
    }

    // The email went out in Italian, with both parts, as one .eml per message.
    let shipped = messages
        .iter()
        .find(|m| m["template"] == "order-shipped")
        .expect("shipped");
    let (_, detail) = service
        .call(
            Method::GET,
            &format!("/v1/messages/{}", shipped["id"].as_str().expect("id")),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(detail["rendered"]["locale"], "it");
    assert_eq!(detail["attempts"][0]["outcome"], "sent");
    let eml = std::fs::read_to_string(
        service
            .outbox
            .join(format!("{}.eml", shipped["id"].as_str().expect("id"))),
    )
    .expect("one .eml per message");
    assert!(eml.contains("To: giulia.rossi@example.com"), "{eml}");
    assert!(
        eml.contains("multipart/alternative") && eml.contains("text/html"),
        "{eml}"
    );
    assert!(eml.contains("BRT123456789IT"), "{eml}");

    // The audit trail shows every stage, in order.
    let (_, audit) = service
        .call(
            Method::GET,
            "/v1/audit?order_id=ord_1&limit=500",
            Some(&key),
            None,
        )
        .await;
    let stages: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|a| a["stage"].as_str())
        .collect();
    let first = |s: &str| {
        stages
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("no {s} in {stages:?}"))
    };
    assert!(first("ingest") < first("decide"));
    assert!(first("decide") < first("policy"));
    assert!(first("policy") < first("render"));
    assert!(first("render") < first("dispatch"));
    let decided = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["stage"] == "decide")
        .expect("a decision");
    assert_eq!(decided["detail"]["plugin"]["name"], "standard-lifecycle");
    assert!(decided["detail"]["usage"]["fuel"].as_u64().expect("fuel") > 0);
}

async fn a_retried_event_is_stored_once(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = service.tenant("Shop", json!({})).await;
    let e = event(EventKind::OrderCreated, "ord_2");
    let (first_status, first) = service.post_event(&key, &e).await;
    let (second_status, second) = service.post_event(&key, &e).await;
    assert_eq!(
        (first_status, second_status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        (first["duplicate"].clone(), second["duplicate"].clone()),
        (json!(false), json!(true))
    );

    // The Idempotency-Key header wins over the event id.
    let body = serde_json::to_vec(&event(EventKind::OrderPaid, "ord_2")).expect("json");
    let headers = [
        ("idempotency-key", "retry-42"),
        ("content-type", "application/json"),
    ];
    let (_, a) = service
        .call_raw(
            Method::POST,
            "/v1/events",
            Some(&key),
            &headers,
            body.clone(),
        )
        .await;
    let mut other = event(EventKind::OrderPaid, "ord_2");
    other.id = "a-different-id".into();
    let (_, b) = service
        .call_raw(
            Method::POST,
            "/v1/events",
            Some(&key),
            &headers,
            serde_json::to_vec(&other).expect("json"),
        )
        .await;
    assert_eq!(a["id"], b["id"]);
    let (_, list) = service
        .call(Method::GET, "/v1/events?order_id=ord_2", Some(&key), None)
        .await;
    assert_eq!(list["items"].as_array().expect("items").len(), 2);
}

async fn bad_requests_get_precise_errors(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = service.tenant("Shop", json!({})).await;
    let post = |body: Vec<u8>, key: Option<String>| {
        let service = &service;
        async move {
            service
                .call_raw(Method::POST, "/v1/events", key.as_deref(), &[], body)
                .await
        }
    };
    let (status, body) = post(b"{\"id\": ".to_vec(), Some(key.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let mut wrong = serde_json::to_value(event(EventKind::OrderCreated, "o")).expect("json");
    wrong["order"]["total"]["minor"] = json!("lots");
    let (status, body) = post(wrong.to_string().into_bytes(), Some(key.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "order.total.minor");

    let mut wrong = serde_json::to_value(event(EventKind::OrderCreated, "o")).expect("json");
    wrong["order"]["customer"]["timezone"] = json!("Mars/Olympus");
    let (status, body) = post(wrong.to_string().into_bytes(), Some(key.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "order.customer.timezone");

    let mut huge = serde_json::to_value(event(EventKind::OrderCreated, "o")).expect("json");
    huge["attributes"]["blob"] = json!("x".repeat(300 << 10));
    let (status, body) = post(huge.to_string().into_bytes(), Some(key.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        body["error"]["code"], "too_large",
        "413 is JSON too: {body}"
    );
    assert!(body["error"]["message"].as_str().is_some(), "{body}");

    let valid = serde_json::to_vec(&event(EventKind::OrderCreated, "o")).expect("json");
    assert_eq!(post(valid.clone(), None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(valid.clone(), Some("tdg_nope".into())).await.0,
        StatusCode::UNAUTHORIZED
    );
    let agent = service.key(&tenant, "agent").await;
    assert_eq!(
        post(valid.clone(), Some(agent)).await.0,
        StatusCode::FORBIDDEN
    );
    // Merchants cannot create tenants.
    let (status, _) = service
        .call(
            Method::POST,
            "/v1/tenants",
            Some(&key),
            Some(json!({"name": "x", "timezone": "UTC", "default_locale": "en"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing malformed was stored.
    let (_, list) = service
        .call(Method::GET, "/v1/events", Some(&key), None)
        .await;
    assert_eq!(list["items"].as_array().expect("items").len(), 0);
    // 5xx-free error bodies carry a code and a message.
    let (status, body) = service
        .call(Method::GET, "/v1/messages/msg_missing", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

async fn a_merchant_never_sees_another_tenants_data(db: Db) {
    let service = TestService::new(db).await;
    let (_, key_a) = service.tenant("A", json!({})).await;
    let (tenant_b, key_b) = shop(&service).await;
    let plugin_b = service.upload(&key_b, guests::VIP_CONCIERGE).await;
    service
        .post_event(&key_b, &event(EventKind::OrderCreated, "ord_b"))
        .await;
    service.run_workers().await;
    let b_messages = service.messages(&key_b, "ord_b").await;
    let message_b = b_messages[0]["id"]
        .as_str()
        .expect("B has a message")
        .to_owned();

    for path in [
        "/v1/events".to_owned(),
        "/v1/events?order_id=ord_b".to_owned(),
        "/v1/messages".to_owned(),
        "/v1/messages?order_id=ord_b".to_owned(),
        "/v1/audit?order_id=ord_b".to_owned(),
        "/v1/templates".to_owned(),
        "/v1/escalations".to_owned(),
    ] {
        let (status, body) = service.call(Method::GET, &path, Some(&key_a), None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            body["items"],
            json!([]),
            "A sees B's data at {path}: {body}"
        );
    }
    let (_, plugins) = service
        .call(Method::GET, "/v1/plugins", Some(&key_a), None)
        .await;
    assert_eq!(plugins["items"], json!([]), "A sees B's plugins");
    for (method, path) in [
        (Method::GET, format!("/v1/messages/{message_b}")),
        (Method::POST, format!("/v1/messages/{message_b}/retry")),
        (Method::GET, format!("/v1/plugins/{plugin_b}")),
        (Method::POST, format!("/v1/plugins/{plugin_b}/install")),
    ] {
        let (status, _) = service
            .call(method.clone(), &path, Some(&key_a), Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let dry_run = json!({ "event": event(EventKind::OrderCreated, "x") });
    let (status, _) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin_b}/dry-run"),
            Some(&key_a),
            Some(dry_run),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin_b}/replay"),
            Some(&key_a),
            Some(json!({ "order_id": "ord_b" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A merchant key cannot pick another tenant with X-Tenant-Id either.
    let (_, body) = service
        .call_raw(
            Method::GET,
            "/v1/messages",
            Some(&key_a),
            &[("x-tenant-id", tenant_b.as_str())],
            Vec::new(),
        )
        .await;
    assert_eq!(body["items"], json!([]));
    // The same order id in A is A's own.
    service
        .post_event(&key_a, &event(EventKind::OrderCreated, "ord_b"))
        .await;
    let (_, events_b) = service
        .call(Method::GET, "/v1/events?order_id=ord_b", Some(&key_b), None)
        .await;
    assert_eq!(events_b["items"].as_array().expect("items").len(), 1);

    // A template of the same name in A is A's own: B's list and rendering
    // do not change.
    let (_, b_templates_before) = service
        .call(Method::GET, "/v1/templates", Some(&key_b), None)
        .await;
    let preview = |key: String, locale: &'static str| {
        let service = &service;
        async move {
            service
                .call(
                    Method::POST,
                    "/v1/templates/preview",
                    Some(&key),
                    Some(json!({
                        "template": "order-confirmation",
                        "channel": "email",
                        "locale": locale,
                        "event": event(EventKind::OrderCreated, "ord_b"),
                    })),
                )
                .await
        }
    };
    let (status, b_rendered_before) = preview(key_b.clone(), "en").await;
    assert_eq!(status, StatusCode::OK, "{b_rendered_before}");
    // A has no templates yet: previewing B's template fails for A.
    let (status, body) = preview(key_a.clone(), "en").await;
    assert!(status.is_client_error(), "{status}: {body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(
        !body
            .to_string()
            .contains(b_rendered_before["subject"].as_str().expect("B's subject")),
        "A's failed preview shows B's template: {body}"
    );
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/templates/order-confirmation/email/en",
            Some(&key_a),
            Some(json!({
                "subject": "A's own confirmation {{ order.id }}",
                "text": "A's text",
                "html": null
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, b_templates_after) = service
        .call(Method::GET, "/v1/templates", Some(&key_b), None)
        .await;
    assert_eq!(
        b_templates_after, b_templates_before,
        "A's PUT changed B's templates"
    );
    let (_, b_rendered_after) = preview(key_b.clone(), "en").await;
    assert_eq!(
        b_rendered_after, b_rendered_before,
        "A's PUT changed B's rendering"
    );
    let (status, a_rendered) = preview(key_a.clone(), "en").await;
    assert_eq!(status, StatusCode::OK, "{a_rendered}");
    assert_eq!(a_rendered["subject"], "A's own confirmation ord_b");
    let (_, a_templates) = service
        .call(Method::GET, "/v1/templates", Some(&key_a), None)
        .await;
    assert_eq!(
        a_templates["items"].as_array().expect("items").len(),
        1,
        "A sees only its own template: {a_templates}"
    );

    // Settings are each tenant's own, to read and to write.
    let (status, a_settings) = service
        .call(Method::GET, "/v1/settings", Some(&key_a), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{a_settings}");
    assert_eq!(a_settings["name"], "A");
    assert_ne!(a_settings["id"], json!(tenant_b));
    assert_ne!(a_settings["settings"]["shop"]["name"], "Bottega");
    let (_, b_settings_before) = service
        .call(Method::GET, "/v1/settings", Some(&key_b), None)
        .await;
    let (status, body) = service
        .call_raw(
            Method::PUT,
            "/v1/settings",
            Some(&key_a),
            &[("x-tenant-id", tenant_b.as_str())],
            json!({ "shop": { "name": "A renamed" } })
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "A", "A's PUT lands on A: {body}");
    let (_, b_settings_after) = service
        .call(Method::GET, "/v1/settings", Some(&key_b), None)
        .await;
    assert_eq!(
        b_settings_after, b_settings_before,
        "A's PUT changed B's settings"
    );

    // Integrations too.
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/integrations/shopify",
            Some(&key_a),
            Some(json!({ "secret": "a-shopify-secret" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, b_integrations) = service
        .call(Method::GET, "/v1/integrations", Some(&key_b), None)
        .await;
    assert_eq!(b_integrations["items"], json!([]), "B sees A's integration");
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/integrations/woocommerce",
            Some(&key_b),
            Some(json!({ "secret": "b-woocommerce-secret" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, a_integrations) = service
        .call(Method::GET, "/v1/integrations", Some(&key_a), None)
        .await;
    let platforms: Vec<&str> = a_integrations["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["platform"].as_str())
        .collect();
    assert_eq!(platforms, ["shopify"], "{a_integrations}");
    assert!(
        !a_integrations.to_string().contains(&tenant_b),
        "A's integrations mention B: {a_integrations}"
    );
    assert!(
        !a_integrations.to_string().contains("a-shopify-secret"),
        "secrets are never read back"
    );
}

async fn a_plugin_fault_escalates_and_keeps_the_event(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = service.tenant("Shop", json!({})).await;
    service
        .install(&key, guests::HOSTILE, json!({ "attack": "infinite-loop" }))
        .await;
    service
        .post_event(&key, &event(EventKind::OrderCreated, "ord_f"))
        .await;
    service.run_workers().await;
    let (_, events) = service
        .call(Method::GET, "/v1/events?order_id=ord_f", Some(&key), None)
        .await;
    let stored = &events["items"][0];
    assert_eq!(stored["status"], "processed");
    assert_eq!(stored["decisions"][0]["outcome"], "fault");
    assert_eq!(
        stored["decisions"][0]["detail"]["fault"]["kind"],
        "out_of_fuel"
    );
    let (_, tickets) = service
        .call(
            Method::GET,
            "/v1/escalations?order_id=ord_f",
            Some(&key),
            None,
        )
        .await;
    let ticket = &tickets["items"][0];
    assert_eq!(ticket["queue"], "plugin-faults");
    assert_eq!(ticket["event_id"], stored["id"]);
    assert!(
        ticket["reason"]
            .as_str()
            .expect("reason")
            .contains("hostile-guest@0.1.0")
    );
}

async fn quiet_hours_defer_instead_of_dropping(db: Db) {
    let service = TestService::new(db).await;
    // Email quiet for two hours from the current hour in Rome (the
    // customer's timezone): the confirmation waits for the window's end.
    let now_rome = jiff::Timestamp::now()
        .in_tz("Europe/Rome")
        .expect("a known timezone");
    let hour = i64::from(now_rome.hour());
    let window_end = now_rome
        .start_of_day()
        .expect("a day")
        .timestamp()
        .checked_add(jiff::SignedDuration::from_hours(hour + 2))
        .expect("in range");
    let quiet =
        json!({ "start": format!("{hour:02}:00"), "end": format!("{:02}:00", (hour + 2) % 24) });
    let settings = json!({ "policy": { "quiet_hours": { "email": quiet } } });
    let (_, key) = service.tenant("Night shop", settings).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service
        .post_event(&key, &event(EventKind::OrderCreated, "ord_q"))
        .await;
    service.run_workers().await;
    let messages = service.messages(&key, "ord_q").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["status"], "scheduled");
    let reason = messages[0]["status_reason"].as_str().expect("reason");
    assert!(
        reason.contains("quiet hours for email in Europe/Rome"),
        "{reason}"
    );
    let send_at: jiff::Timestamp = messages[0]["send_at"]
        .as_str()
        .expect("send_at")
        .parse()
        .expect("time");
    assert_eq!(send_at, window_end, "deferred to the end of the window");
}

async fn a_cancel_recorded_before_a_late_message_still_cancels_it(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = shop(&service).await;
    // Delivered arrives first (cancelling the delay follow-up), the delay report after it.
    service
        .post_event(&key, &event(EventKind::Delivered, "ord_c"))
        .await;
    service.run_workers().await;
    service
        .post_event(&key, &event(EventKind::DeliveryDelayed, "ord_c"))
        .await;
    service.run_workers().await;
    let messages = service.messages(&key, "ord_c").await;
    let followup = messages
        .iter()
        .find(|m| m["template"] == "delay-followup")
        .expect("a follow-up was asked for");
    assert_eq!(followup["status"], "suppressed", "{followup}");
    assert!(
        followup["status_reason"]
            .as_str()
            .expect("reason")
            .contains("cancel"),
        "{followup}"
    );
}

async fn a_restart_loses_nothing_and_sends_nothing_twice(db: Db) {
    let first = TestService::new(db).await;
    let (_, key) = shop(&first).await;
    // Accepted while no worker runs...
    first
        .post_event(&key, &event(EventKind::OrderCreated, "ord_r"))
        .await;
    first
        .post_event(&key, &event(EventKind::ShipmentCreated, "ord_r"))
        .await;
    // ...the process dies mid-dispatch: its leases are left behind, expired.
    first.process_events().await;
    let leased = first
        .state
        .pipeline
        .store
        .lease_due_messages(
            "dead-worker",
            jiff::Timestamp::now().as_millisecond(),
            10,
            -1,
        )
        .await
        .expect("lease");
    assert_eq!(leased.len(), 2);

    let second = first.reopen().await;
    second.run_workers().await;
    second.run_workers().await;
    let messages = second.messages(&key, "ord_r").await;
    assert_eq!(
        statuses(&messages),
        [
            ("order-confirmation".into(), "sent".into()),
            ("order-shipped".into(), "sent".into())
        ]
    );
    for m in &messages {
        assert_eq!(m["attempts"], 1, "sent exactly once: {m}");
    }
    let emails = std::fs::read_dir(&second.outbox).expect("outbox").count();
    assert_eq!(emails, 2);
}

async fn dry_run_sends_nothing_and_replay_shows_what_would_change(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = shop(&service).await;
    let (_, plugins) = service
        .call(Method::GET, "/v1/plugins", Some(&key), None)
        .await;
    let plugin = plugins["items"][0]["id"]
        .as_str()
        .expect("plugin")
        .to_owned();
    for kind in [EventKind::OrderCreated, EventKind::DeliveryDelayed] {
        service.post_event(&key, &event(kind, "ord_d")).await;
    }
    service.run_workers().await;
    let before = service.messages(&key, "ord_d").await.len();

    let (status, dry) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin}/dry-run"),
            Some(&key),
            Some(json!({ "event": event(EventKind::ShipmentCreated, "ord_d") })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["outcome"]["actions"][0]["template"], "order-shipped");
    assert_eq!(dry["policy"][0]["verdict"]["outcome"]["type"], "send");
    assert!(dry["usage"]["fuel"].as_u64().expect("fuel") > 0);
    assert_eq!(
        service.messages(&key, "ord_d").await.len(),
        before,
        "a dry run sends nothing"
    );

    // With a lower VIP threshold the delay would have been escalated.
    let (status, replay) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin}/replay"),
            Some(&key),
            Some(json!({ "order_id": "ord_d", "config": { "vip_threshold_minor": 100 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay["events"], 2);
    assert_eq!(replay["changed"], 1);
    let delayed = replay["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == "delivery_delayed")
        .expect("delay");
    let added = delayed["added"].as_array().expect("added");
    assert!(
        added
            .iter()
            .any(|a| a["type"] == "escalate" && a["queue"] == "vip-care"),
        "{delayed}"
    );
    let created = replay["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["kind"] == "order_created")
        .expect("created");
    assert_eq!(created["same"], true);

    // Install validates the config against the plugin's schema.
    let (status, body) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin}/install"),
            Some(&key),
            Some(json!({ "config": { "vip_threshold_minor": "high" } })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "config.vip_threshold_minor");

    // So does a dry run given a config, with the schema compiled before
    // (each process compiles a plugin's schema once).
    let (status, body) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin}/dry-run"),
            Some(&key),
            Some(json!({
                "event": event(EventKind::OrderCreated, "ord_x"),
                "config": { "vip_threshold_minor": "high" }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "config.vip_threshold_minor");
}

async fn two_plugins_asking_for_the_same_notice_send_it_once(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = shop(&service).await;
    service
        .install(&key, guests::VIP_CONCIERGE, json!({}))
        .await;
    service
        .post_event(&key, &event(EventKind::OrderCreated, "ord_m"))
        .await;
    service.run_workers().await;
    let messages = service.messages(&key, "ord_m").await;
    let confirmations: Vec<_> = messages
        .iter()
        .filter(|m| m["template"] == "order-confirmation")
        .collect();
    assert_eq!(confirmations.len(), 1, "{messages:?}");
    let (_, events) = service
        .call(Method::GET, "/v1/events?order_id=ord_m", Some(&key), None)
        .await;
    assert_eq!(
        events["items"][0]["decisions"]
            .as_array()
            .expect("decisions")
            .len(),
        2
    );
}

async fn templates_are_validated_and_previewed(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = shop(&service).await;
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/templates/broken/email/en",
            Some(&key),
            Some(json!({ "subject": "Hi", "text": "{% if %}", "html": null })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "text");

    let (status, preview) = service
        .call(
            Method::POST,
            "/v1/templates/preview",
            Some(&key),
            Some(json!({
                "template": "order-shipped",
                "channel": "email",
                "event": event(EventKind::ShipmentCreated, "ord_p"),
                "data": { "tracking_url": "https://t.example/<script>", "carrier": "BRT" }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["locale"], "it");
    let html = preview["html"].as_str().expect("html");
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;"),
        "{html}"
    );

    // A missing template is a visible failure, never a silent drop.
    let (_, key2) = service.tenant("No templates", json!({})).await;
    service
        .install(&key2, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service
        .post_event(&key2, &event(EventKind::OrderCreated, "ord_t"))
        .await;
    service.run_workers().await;
    let messages = service.messages(&key2, "ord_t").await;
    assert_eq!(messages[0]["status"], "failed");
    assert!(
        messages[0]["status_reason"]
            .as_str()
            .expect("reason")
            .contains("no template `order-confirmation`")
    );
}

async fn metrics_and_health_are_served(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service).await;
    service
        .post_event(&key, &event(EventKind::OrderCreated, "ord_x"))
        .await;
    service.run_workers().await;
    let (status, health) = service.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, health["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    let (status, text) = service.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("text");
    assert!(
        text.contains(&format!(
            "tidings_events_total{{tenant=\"{tenant}\",kind=\"order_created\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains("tidings_decision_fuel_bucket"), "{text}");
    assert!(
        text.contains(&format!(
            "tidings_messages_total{{tenant=\"{tenant}\",channel=\"email\",status=\"sent\"}} 1"
        )),
        "{text}"
    );
    let _ = OPERATOR_KEY;
}

async fn plugins_upload_as_raw_bytes_or_multipart_within_the_size_limit(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = service.tenant("Agency client", json!({})).await;
    let bytes = std::fs::read(guests::CONFIGURABLE).expect("built");
    let boundary = "tidings-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"configurable.wasm\"\r\n\
         Content-Type: application/wasm\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let (status, plugin) = service
        .call_raw(
            Method::POST,
            "/v1/plugins",
            Some(&key),
            &[("content-type", content_type.as_str())],
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plugin}");
    assert_eq!(plugin["name"], "configurable");
    assert_eq!(plugin["size"], bytes.len());
    assert!(plugin["describe"]["config_schema"].is_object());

    // The same version again is a conflict, not a silent overwrite.
    let (status, _) = service
        .call_raw(
            Method::POST,
            "/v1/plugins",
            Some(&key),
            &[("content-type", "application/wasm")],
            bytes.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let mut oversized = bytes;
    oversized.resize(3 << 20, 0);
    let (status, body) = service
        .call_raw(
            Method::POST,
            "/v1/plugins",
            Some(&key),
            &[("content-type", "application/wasm")],
            oversized,
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, body) = service
        .call_raw(
            Method::POST,
            "/v1/plugins",
            Some(&key),
            &[("content-type", "application/wasm")],
            b"\0asm\x01\0\0\0".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("not a component"),
        "{body}"
    );
}

async fn sandbox_limits_are_set_by_the_operator_only(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = service.tenant("Shop", json!({})).await;
    let plugin = service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    let limits = |body: &Value| body["settings"]["limits"].clone();
    let (_, before) = service
        .call(Method::GET, "/v1/settings", Some(&key), None)
        .await;
    assert_eq!(limits(&before)["fuel"], 10_000_000);

    // A merchant cannot raise (or change at all) its own limits...
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/settings",
            Some(&key),
            Some(json!({ "limits": { "fuel": 1_000_000_000_u64, "wall_clock_ms": 1000 } })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("settings.limits"),
        "{body}"
    );
    let (_, after) = service
        .call(Method::GET, "/v1/settings", Some(&key), None)
        .await;
    assert_eq!(limits(&after), limits(&before), "the limits are unchanged");
    // ...nor use the operator's route.
    let (status, _) = service
        .call(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/limits"),
            Some(&key),
            Some(json!({ "fuel": 1_000_000_000_u64 })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Sending the limits back unchanged is fine.
    let mut unchanged = before["settings"].clone();
    unchanged["shop"]["name"] = json!("Shop, renamed");
    let (status, body) = service
        .call(Method::PUT, "/v1/settings", Some(&key), Some(unchanged))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The operator's limits are checked against what the engine enforces.
    for (body, field) in [
        (json!({ "fuel": 2_000_000_000_u64 }), "fuel"),
        (json!({ "wall_clock_ms": 60_000 }), "wall_clock_ms"),
        (json!({ "memory_bytes": 1_u64 << 30 }), "memory_bytes"),
        (json!({ "fuel": "lots" }), "fuel"),
    ] {
        let (status, answer) = service
            .call(
                Method::PUT,
                &format!("/v1/tenants/{tenant}/limits"),
                Some(OPERATOR_KEY),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = service
        .call_raw(
            Method::PUT,
            "/v1/settings",
            Some(OPERATOR_KEY),
            &[("x-tenant-id", tenant.as_str())],
            json!({ "limits": { "memory_bytes": 1_u64 << 30 } })
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "settings.limits.memory_bytes");
    let (status, answer) = service
        .call(
            Method::POST,
            "/v1/tenants",
            Some(OPERATOR_KEY),
            Some(json!({
                "name": "Greedy", "timezone": "UTC", "default_locale": "en",
                "settings": { "limits": { "fuel": 5_000_000_000_u64 } }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "settings.limits.fuel");
    let (status, answer) = service
        .call(
            Method::PUT,
            "/v1/tenants/ten_missing/limits",
            Some(OPERATOR_KEY),
            Some(json!({ "fuel": 1000 })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    // An event decided before the change runs with the default limits (the
    // pipeline keeps the settings it parsed while their text is unchanged)...
    service
        .post_event(&key, &event(EventKind::OrderCreated, "ord_before"))
        .await;
    service.run_workers().await;
    let (_, events) = service
        .call(
            Method::GET,
            "/v1/events?order_id=ord_before",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        events["items"][0]["decisions"][0]["outcome"], "actions",
        "{events}"
    );

    // ...then the operator lowers this tenant's fuel...
    let (status, answer) = service
        .call(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/limits"),
            Some(OPERATOR_KEY),
            Some(json!({ "fuel": 1000 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(limits(&answer)["fuel"], 1000);
    assert_eq!(
        answer["settings"]["shop"]["name"], "Shop, renamed",
        "other settings stay"
    );
    // ...a merchant's later PUT without limits keeps them...
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/settings",
            Some(&key),
            Some(json!({ "shop": { "name": "Shop" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(limits(&body)["fuel"], 1000);
    // ...and the tenant's decisions now run out of fuel.
    let (status, dry) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin}/dry-run"),
            Some(&key),
            Some(json!({ "event": event(EventKind::OrderCreated, "ord_l") })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["outcome"]["fault"]["kind"], "out_of_fuel", "{dry}");
    assert_eq!(dry["outcome"]["fault"]["limit"], 1000, "{dry}");
    service
        .post_event(&key, &event(EventKind::OrderCreated, "ord_l"))
        .await;
    service.run_workers().await;
    let (_, events) = service
        .call(Method::GET, "/v1/events?order_id=ord_l", Some(&key), None)
        .await;
    let decision = &events["items"][0]["decisions"][0];
    assert_eq!(decision["outcome"], "fault", "{events}");
    assert_eq!(
        decision["detail"]["fault"]["kind"], "out_of_fuel",
        "{events}"
    );

    // The operator can also set them through the tenant's settings.
    let (status, answer) = service
        .call_raw(
            Method::PUT,
            "/v1/settings",
            Some(OPERATOR_KEY),
            &[("x-tenant-id", tenant.as_str())],
            json!({ "limits": { "fuel": 20_000_000 } })
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(limits(&answer)["fuel"], 20_000_000);
    let (_, dry) = service
        .call(
            Method::POST,
            &format!("/v1/plugins/{plugin}/dry-run"),
            Some(&key),
            Some(json!({ "event": event(EventKind::OrderCreated, "ord_l2") })),
        )
        .await;
    assert!(dry["outcome"]["actions"].is_array(), "{dry}");
}
