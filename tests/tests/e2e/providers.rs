//! Real channels end to end through the service: SMS and WhatsApp to a
//! Twilio-compatible API, webhooks to a tenant's endpoint, channel fallback,
//! delivery status callbacks and bounces that suppress addresses, and
//! tenant URLs that must not reach inside the network — on both backends.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tidings_host::schedule::{LEASE, LEASED_AHEAD, PER_DESTINATION};
use tidings_host::store::{MessageFilter, MessageRow};
use tidings_sdk::testing::fixture;
use tidings_sdk::types::{EventKind, OrderEvent};
use tidings_tests::fake::{FakeHttp, Reply};
use tidings_tests::guests;
use tidings_tests::service::{Db, PUBLIC_URL, TestService};

on_both_backends!(
    sms_goes_to_the_provider_and_its_status_callback_settles_it,
    status_callbacks_with_bad_signatures_or_bodies_change_nothing,
    an_unreachable_number_is_suppressed_and_the_next_notice_falls_back_to_email,
    a_permanent_sms_failure_falls_back_to_email,
    whatsapp_uses_whatsapp_addresses,
    a_provider_outage_is_retried_and_other_channels_carry_on,
    webhooks_are_signed_and_a_hanging_endpoint_is_retried,
    a_tenant_webhook_into_the_private_network_is_refused,
    a_hard_bounce_suppresses_the_address,
    bounce_callbacks_are_authenticated_and_validated,
    channel_settings_are_checked_and_secrets_never_read_back,
    a_hanging_endpoint_of_one_tenant_does_not_hold_up_another,
    messages_held_for_a_hanging_endpoint_go_back_in_their_order,
);

const TOKEN: &str = "tw_auth_token_0123456789";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A shop whose `configurable` plugin sends `order-confirmation` on
/// `channel` (falling back to `fallbacks`) for every new order, with no
/// quiet hours so the test does not depend on the time of day.
async fn shop(service: &TestService, channel: &str, fallbacks: &[&str]) -> (String, String) {
    let (tenant, key) = service
        .tenant("Shop", json!({ "policy": { "quiet_hours": {} } }))
        .await;
    let config = json!({ "rules": { "order_created": [
        { "channel": channel, "template": "order-confirmation", "fallback_channels": fallbacks }
    ] } });
    service.install(&key, guests::CONFIGURABLE, config).await;
    service.default_templates(&key).await;
    for channel in ["sms", "whatsapp", "webhook", "push"] {
        let (status, body) = service
            .call(
                Method::PUT,
                &format!("/v1/templates/order-confirmation/{channel}/en"),
                Some(&key),
                Some(json!({ "text": "{{ shop.name }}: order {{ order.number }} confirmed." })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    (tenant, key)
}

async fn configure(service: &TestService, key: &str, channel: &str, config: Value) {
    let (status, body) = service
        .call(
            Method::PUT,
            &format!("/v1/channels/{channel}"),
            Some(key),
            Some(config),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn twilio(account: &str) -> Value {
    json!({ "account_sid": account, "auth_token": TOKEN, "from": "+15005550006" })
}

fn order(id: &str) -> OrderEvent {
    let mut e = fixture(EventKind::OrderCreated);
    e.id = format!("evt_{id}");
    e.order.id = id.into();
    e
}

async fn only_message(service: &TestService, key: &str, order: &str) -> Value {
    let messages = service.messages(key, order).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let id = messages[0]["id"].as_str().expect("id").to_owned();
    let (status, m) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    m
}

/// Twilio's request signature over `url` and the form `params`
/// (<https://www.twilio.com/docs/usage/webhooks/webhooks-security>),
/// computed here independently of the host's code.
fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TOKEN.as_bytes()).expect("key");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn form(params: &[(&str, &str)]) -> Vec<u8> {
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.replace('+', "%2B").replace(' ', "+").replace(':', "%3A")
            )
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

async fn status_callback(
    service: &TestService,
    tenant: &str,
    params: &[(&str, &str)],
    signature: Option<String>,
) -> (StatusCode, Value) {
    let path = format!("/v1/callbacks/twilio/{tenant}");
    let signature =
        signature.unwrap_or_else(|| twilio_signature(&format!("{PUBLIC_URL}{path}"), params));
    service
        .call_raw(
            Method::POST,
            &path,
            None,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", &signature),
            ],
            form(params),
        )
        .await
}

async fn sms_goes_to_the_provider_and_its_status_callback_settles_it(db: Db) {
    let provider = FakeHttp::start().await;
    let mut service = TestService::new(db).await;
    service.delivery.twilio_api_base = provider.url();
    let (tenant, key) = shop(&service, "sms", &[]).await;
    configure(&service, &key, "sms", twilio("AC_shop")).await;

    service.post_event(&key, &order("ord_sms")).await;
    service.run_workers().await;

    let requests = provider.received();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.uri, "/2010-04-01/Accounts/AC_shop/Messages.json");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("AC_shop:{TOKEN}"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(request.field("To").as_deref(), Some("+393471234567"));
    assert_eq!(request.field("From").as_deref(), Some("+15005550006"));
    assert_eq!(
        request.field("Body").as_deref(),
        Some("Our shop: order #1042 confirmed.")
    );
    assert_eq!(
        request.field("StatusCallback"),
        Some(format!("{PUBLIC_URL}/v1/callbacks/twilio/{tenant}"))
    );

    let m = only_message(&service, &key, "ord_sms").await;
    assert_eq!(m["status"], "sent", "{m}");
    let sid = m["provider_id"]
        .as_str()
        .expect("the provider's SID is kept")
        .to_owned();
    assert!(sid.starts_with("SM"), "{sid}");

    // Progress first, then the final word; a late `sent` cannot undo it.
    for status in ["sent", "delivered", "sent"] {
        let (code, body) = status_callback(
            &service,
            &tenant,
            &[
                ("MessageSid", &sid),
                ("MessageStatus", status),
                ("AccountSid", "AC_shop"),
            ],
            None,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    let m = only_message(&service, &key, "ord_sms").await;
    assert_eq!(m["status"], "delivered", "{m}");
    let outcomes: Vec<&str> = m["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["sent", "delivered"]);
}

async fn status_callbacks_with_bad_signatures_or_bodies_change_nothing(db: Db) {
    let provider = FakeHttp::start().await;
    let mut service = TestService::new(db).await;
    service.delivery.twilio_api_base = provider.url();
    let (tenant, key) = shop(&service, "sms", &[]).await;
    configure(&service, &key, "sms", twilio("AC_shop")).await;
    service.post_event(&key, &order("ord_sig")).await;
    service.run_workers().await;
    let sid = only_message(&service, &key, "ord_sig").await["provider_id"]
        .as_str()
        .expect("sid")
        .to_owned();
    let params = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30005"),
    ];

    // Signed with another token, signed over other params, or not signed.
    let forged = {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"not the token").expect("key");
        mac.update(b"anything");
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let (status, body) = status_callback(&service, &tenant, &params, Some(forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let other_params = twilio_signature(
        &format!("{PUBLIC_URL}/v1/callbacks/twilio/{tenant}"),
        &[("MessageSid", &sid), ("MessageStatus", "delivered")],
    );
    let (status, _) = status_callback(&service, &tenant, &params, Some(other_params)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = service
        .call_raw(
            Method::POST,
            &format!("/v1/callbacks/twilio/{tenant}"),
            None,
            &[],
            form(&params),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Another tenant's path with this tenant's signature.
    let (other_tenant, _) = service.tenant("Other", json!({})).await;
    let (status, _) = status_callback(&service, &other_tenant, &params, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Correctly signed but malformed: not a form, or no status.
    let path = format!("/v1/callbacks/twilio/{tenant}");
    let url = format!("{PUBLIC_URL}{path}");
    let (status, body) = service
        .call_raw(
            Method::POST,
            &path,
            None,
            &[("x-twilio-signature", &twilio_signature(&url, &[]))],
            b"%zz".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let no_status = [("MessageSid", sid.as_str())];
    let (status, body) = status_callback(&service, &tenant, &no_status, None).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("MessageStatus"))
    );
    let unknown = [("MessageSid", "SMnope"), ("MessageStatus", "delivered")];
    let (status, _) = status_callback(&service, &tenant, &unknown, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let m = only_message(&service, &key, "ord_sig").await;
    assert_eq!(m["status"], "sent", "nothing changed: {m}");
    let (_, suppressed_probe) = service
        .call(
            Method::GET,
            "/v1/messages?status=undelivered",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        suppressed_probe["items"].as_array().expect("items").len(),
        0
    );
}

async fn an_unreachable_number_is_suppressed_and_the_next_notice_falls_back_to_email(db: Db) {
    let provider = FakeHttp::start().await;
    let mut service = TestService::new(db).await;
    service.delivery.twilio_api_base = provider.url();
    let (tenant, key) = shop(&service, "sms", &["email"]).await;
    configure(&service, &key, "sms", twilio("AC_shop")).await;
    service.post_event(&key, &order("ord_u1")).await;
    service.run_workers().await;
    let sid = only_message(&service, &key, "ord_u1").await["provider_id"]
        .as_str()
        .expect("sid")
        .to_owned();
    let (status, body) = status_callback(
        &service,
        &tenant,
        &[
            ("MessageSid", &sid),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30005"),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["suppressed"].clone()),
        (StatusCode::OK, json!(true)),
        "{body}"
    );
    let m = only_message(&service, &key, "ord_u1").await;
    assert_eq!(m["status"], "undelivered");
    assert!(
        m["status_reason"]
            .as_str()
            .expect("reason")
            .contains("30005"),
        "{m}"
    );

    // The same customer's next order: policy skips the suppressed number.
    service.post_event(&key, &order("ord_u2")).await;
    service.run_workers().await;
    let next = only_message(&service, &key, "ord_u2").await;
    assert_eq!(
        (next["channel"].clone(), next["status"].clone()),
        (json!("email"), json!("sent")),
        "{next}"
    );
    assert_eq!(provider.received().len(), 1, "no second SMS");
}

async fn a_permanent_sms_failure_falls_back_to_email(db: Db) {
    let provider = FakeHttp::start().await;
    provider.reply(Reply::new(
        400,
        json!({ "code": 21211, "message": "The 'To' number +393471234567 is not a valid phone number.", "status": 400 }),
    ));
    let mut service = TestService::new(db).await;
    service.delivery.twilio_api_base = provider.url();
    let (_, key) = shop(&service, "sms", &["email"]).await;
    configure(&service, &key, "sms", twilio("AC_shop")).await;
    service.post_event(&key, &order("ord_fb")).await;
    service.run_workers().await;

    let m = only_message(&service, &key, "ord_fb").await;
    assert_eq!(
        (m["channel"].clone(), m["status"].clone()),
        (json!("email"), json!("sent")),
        "{m}"
    );
    let attempts = m["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{m}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(
        attempts[0]["detail"]
            .as_str()
            .expect("detail")
            .contains("21211"),
        "{m}"
    );
    assert_eq!(attempts[1]["outcome"], "sent");
    let id = m["id"].as_str().expect("id");
    assert!(
        service.outbox.join(format!("{id}.eml")).exists(),
        "the email is in the outbox"
    );
    let (_, audit) = service
        .call(Method::GET, "/v1/audit?order_id=ord_fb", Some(&key), None)
        .await;
    assert!(
        audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["action"] == "fallback" && a["detail"]["to"] == "email"),
        "{audit}"
    );
}

async fn whatsapp_uses_whatsapp_addresses(db: Db) {
    let provider = FakeHttp::start().await;
    let mut service = TestService::new(db).await;
    service.delivery.twilio_api_base = provider.url();
    let (_, key) = shop(&service, "whatsapp", &[]).await;
    configure(
        &service,
        &key,
        "whatsapp",
        json!({ "account_sid": "AC_wa", "auth_token": TOKEN, "from": "whatsapp:+14155238886" }),
    )
    .await;
    service.post_event(&key, &order("ord_wa")).await;
    service.run_workers().await;
    let requests = provider.received();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].uri, "/2010-04-01/Accounts/AC_wa/Messages.json");
    assert_eq!(
        requests[0].field("To").as_deref(),
        Some("whatsapp:+393471234567")
    );
    assert_eq!(
        requests[0].field("From").as_deref(),
        Some("whatsapp:+14155238886")
    );
    assert_eq!(
        only_message(&service, &key, "ord_wa").await["status"],
        "sent"
    );
}

async fn a_provider_outage_is_retried_and_other_channels_carry_on(db: Db) {
    let provider = FakeHttp::start().await;
    provider.reply(Reply::new(
        503,
        json!({ "code": 20500, "message": "Service unavailable" }),
    ));
    let mut service = TestService::new(db).await;
    service.delivery.twilio_api_base = provider.url();
    let (_, sms_shop) = shop(&service, "sms", &[]).await;
    configure(&service, &sms_shop, "sms", twilio("AC_down")).await;
    let (_, email_shop) = shop(&service, "email", &[]).await;
    service.post_event(&sms_shop, &order("ord_down")).await;
    service.post_event(&email_shop, &order("ord_up")).await;
    service.run_workers().await;

    let down = only_message(&service, &sms_shop, "ord_down").await;
    assert_eq!(down["status"], "scheduled", "a 503 is retried: {down}");
    assert!(
        down["status_reason"]
            .as_str()
            .expect("reason")
            .contains("503"),
        "{down}"
    );
    assert_eq!(
        only_message(&service, &email_shop, "ord_up").await["status"],
        "sent"
    );

    // 429 is transient too; then the provider recovers.
    provider.reply(Reply::new(
        429,
        json!({ "code": 20429, "message": "Too Many Requests" }),
    ));
    service.advance_clock(1);
    service.deliver().await;
    let again = only_message(&service, &sms_shop, "ord_down").await;
    assert_eq!(
        (
            again["status"].clone(),
            again["attempts"].as_array().map(Vec::len)
        ),
        (json!("scheduled"), Some(2)),
        "{again}"
    );
    provider.reply(Reply::new(
        201,
        json!({ "sid": "SMrecovered", "status": "queued" }),
    ));
    service.advance_clock(2);
    service.deliver().await;
    let sent = only_message(&service, &sms_shop, "ord_down").await;
    assert_eq!(
        (sent["status"].clone(), sent["provider_id"].clone()),
        (json!("sent"), json!("SMrecovered"))
    );
}

fn standard_webhooks_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(WEBHOOK_SECRET.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn webhooks_are_signed_and_a_hanging_endpoint_is_retried(db: Db) {
    let endpoint = FakeHttp::start().await;
    endpoint.reply(Reply::new(204, json!(null)));
    let mut service = TestService::new(db).await;
    service.delivery.http_timeout = Duration::from_millis(500);
    let (_, key) = shop(&service, "webhook", &[]).await;
    configure(
        &service,
        &key,
        "webhook",
        json!({ "url": format!("{}/hooks/orders", endpoint.url()), "secret": WEBHOOK_SECRET }),
    )
    .await;
    service.post_event(&key, &order("ord_wh")).await;
    service.run_workers().await;

    let m = only_message(&service, &key, "ord_wh").await;
    assert_eq!(m["status"], "sent", "{m}");
    let requests = endpoint.received();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.uri, "/hooks/orders");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r.header("webhook-id").expect("webhook-id");
    assert_eq!(
        id,
        m["id"].as_str().expect("id"),
        "the message id is the idempotency key"
    );
    let timestamp = r.header("webhook-timestamp").expect("webhook-timestamp");
    let signature = r.header("webhook-signature").expect("webhook-signature");
    assert!(
        signature
            .split(' ')
            .any(|s| s == standard_webhooks_signature(id, timestamp, &r.body)),
        "{signature}"
    );
    let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(body["data"]["text"], "Our shop: order #1042 confirmed.");
    assert_eq!(body["data"]["message_id"], json!(id));

    // Now the endpoint hangs past the timeout: transient, retried later.
    endpoint.reply(Reply {
        delay: Duration::from_secs(5),
        ..Reply::new(200, json!({}))
    });
    service.post_event(&key, &order("ord_hang")).await;
    let started = std::time::Instant::now();
    service.run_workers().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout cut the request short"
    );
    let hung = only_message(&service, &key, "ord_hang").await;
    assert_eq!(hung["status"], "scheduled", "{hung}");
    assert!(
        hung["status_reason"]
            .as_str()
            .expect("reason")
            .contains("no reply within"),
        "{hung}"
    );
}

async fn a_tenant_webhook_into_the_private_network_is_refused(db: Db) {
    let endpoint = FakeHttp::start().await;
    let mut service = TestService::new(db).await;
    service.delivery.allow_private_destinations = false;
    let (_, key) = shop(&service, "webhook", &[]).await;
    configure(
        &service,
        &key,
        "webhook",
        json!({ "url": format!("{}/internal", endpoint.url()), "secret": WEBHOOK_SECRET }),
    )
    .await;
    service.post_event(&key, &order("ord_ssrf")).await;
    service.run_workers().await;
    let m = only_message(&service, &key, "ord_ssrf").await;
    assert_eq!(m["status"], "dead", "refused at once, not retried: {m}");
    assert!(
        m["status_reason"]
            .as_str()
            .expect("reason")
            .contains("loopback"),
        "{m}"
    );
    assert!(endpoint.received().is_empty(), "no connection was made");
}

fn bounce_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"bounce-secret-0123456789").expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn bounce(
    service: &TestService,
    tenant: &str,
    body: &Value,
    signature: Option<&str>,
) -> (StatusCode, Value) {
    let bytes = body.to_string().into_bytes();
    let signature = signature.map_or_else(|| bounce_signature(&bytes), str::to_owned);
    service
        .call_raw(
            Method::POST,
            &format!("/v1/callbacks/email/{tenant}"),
            None,
            &[
                ("content-type", "application/json"),
                ("x-tidings-signature", &signature),
            ],
            bytes,
        )
        .await
}

async fn a_hard_bounce_suppresses_the_address(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service, "email", &[]).await;
    configure(
        &service,
        &key,
        "email",
        json!({ "bounce_secret": "bounce-secret-0123456789" }),
    )
    .await;
    service.post_event(&key, &order("ord_b1")).await;
    service.run_workers().await;
    let sent = only_message(&service, &key, "ord_b1").await;
    let header_id = format!("<{}@tidings>", sent["id"].as_str().expect("id"));

    let report = json!({ "type": "bounce", "bounce_type": "hard", "recipient": "Giulia.Rossi@example.com",
                         "message_id": header_id, "diagnostic": "550 5.1.1 user unknown" });
    let (status, body) = bounce(&service, &tenant, &report, None).await;
    assert_eq!(
        (status, body["suppressed"].clone()),
        (StatusCode::OK, json!(true)),
        "{body}"
    );
    let m = only_message(&service, &key, "ord_b1").await;
    assert_eq!(m["status"], "bounced");
    assert!(
        m["status_reason"]
            .as_str()
            .expect("reason")
            .contains("user unknown")
    );

    // A soft bounce is noted, not suppressed; the hard one already was.
    let soft = json!({ "type": "bounce", "bounce_type": "soft", "recipient": "other@example.com" });
    let (status, body) = bounce(&service, &tenant, &soft, None).await;
    assert_eq!(
        (status, body["suppressed"].clone()),
        (StatusCode::OK, json!(false))
    );

    service.post_event(&key, &order("ord_b2")).await;
    service.run_workers().await;
    let next = only_message(&service, &key, "ord_b2").await;
    assert_eq!(next["status"], "suppressed", "{next}");
}

async fn bounce_callbacks_are_authenticated_and_validated(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key) = shop(&service, "email", &[]).await;
    let report = json!({ "type": "complaint", "recipient": "giulia.rossi@example.com" });
    // No secret configured yet: nobody can report.
    let (status, _) = bounce(&service, &tenant, &report, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    configure(
        &service,
        &key,
        "email",
        json!({ "bounce_secret": "bounce-secret-0123456789" }),
    )
    .await;
    let (status, _) = bounce(&service, &tenant, &report, Some("sha256=00")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = bounce(&service, &tenant, &report, Some("nonsense")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let malformed = b"{\"type\":".to_vec();
    let signature = bounce_signature(&malformed);
    let (status, _) = service
        .call_raw(
            Method::POST,
            &format!("/v1/callbacks/email/{tenant}"),
            None,
            &[("x-tidings-signature", &signature)],
            malformed,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = bounce(
        &service,
        &tenant,
        &json!({ "type": "bounce", "recipient": "a@b.example" }),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("bounce_type"))
    );
    let (status, body) = bounce(
        &service,
        &tenant,
        &json!({ "type": "bounce", "bounce_type": "hard" }),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Nothing was suppressed by the rejected calls; the valid one works.
    service.post_event(&key, &order("ord_c1")).await;
    service.run_workers().await;
    assert_eq!(
        only_message(&service, &key, "ord_c1").await["status"],
        "sent"
    );
    let (status, _) = bounce(&service, &tenant, &report, None).await;
    assert_eq!(status, StatusCode::OK);
    service.post_event(&key, &order("ord_c2")).await;
    service.run_workers().await;
    assert_eq!(
        only_message(&service, &key, "ord_c2").await["status"],
        "suppressed"
    );
}

async fn channel_settings_are_checked_and_secrets_never_read_back(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = shop(&service, "email", &[]).await;
    let put = |channel: &'static str, body: Value| {
        let service = &service;
        let key = key.clone();
        async move {
            service
                .call(
                    Method::PUT,
                    &format!("/v1/channels/{channel}"),
                    Some(&key),
                    Some(body),
                )
                .await
        }
    };
    let (status, body) = put(
        "sms",
        json!({ "account_sid": "AC1", "auth_token": "", "from": "+1" }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("auth_token"))
    );
    let (status, body) = put(
        "webhook",
        json!({ "url": "ftp://x", "secret": WEBHOOK_SECRET }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("url"))
    );
    let (status, body) = put(
        "webhook",
        json!({ "url": "https://hooks.example.com", "secret": "plain" }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("secret"))
    );
    let (status, body) = put("email", json!({ "dkim": { "domain": "shop.example", "selector": "s1", "private_key": "not a key" } })).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("dkim.private_key"))
    );
    let (status, _) = put(
        "sms",
        json!({ "account_sid": "AC1", "auth_token": TOKEN, "from": "+1", "extra": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = service
        .call(
            Method::PUT,
            "/v1/channels/pigeon",
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    put("sms", twilio("AC_read")).await;
    put(
        "webhook",
        json!({ "url": "https://hooks.example.com/x", "secret": WEBHOOK_SECRET }),
    )
    .await;
    let (status, list) = service
        .call(Method::GET, "/v1/channels", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(
        !text.contains(TOKEN) && !text.contains(WEBHOOK_SECRET),
        "{text}"
    );
    assert!(
        text.contains("AC_read") && text.contains("hooks.example.com"),
        "{text}"
    );

    // Another tenant sees none of it.
    let (_, other) = service.tenant("Other", json!({})).await;
    let (_, theirs) = service
        .call(Method::GET, "/v1/channels", Some(&other), None)
        .await;
    assert_eq!(theirs["items"], json!([]));
    let (status, _) = service
        .call(Method::DELETE, "/v1/channels/sms", Some(&other), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = service
        .call(Method::DELETE, "/v1/channels/sms", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// A tenant whose webhook endpoint hangs, with more messages due than its
/// destination may have in flight and leased ahead, another tenant that
/// sends email, and the real message worker, as `tidings serve` runs it.
struct Hanging {
    service: TestService,
    endpoint: FakeHttp,
    slow: (String, String),
    quick: String,
    worker: tokio::task::JoinHandle<()>,
}

/// How many orders the hanging tenant's shop posts.
const SLOW_ORDERS: usize = PER_DESTINATION + LEASED_AHEAD + 4;

impl Hanging {
    /// Once the endpoint holds as many requests as the destination's places.
    async fn start(db: Db) -> Self {
        let endpoint = FakeHttp::start().await;
        endpoint.reply(Reply {
            delay: Duration::from_secs(20),
            ..Reply::new(200, json!({}))
        });
        let mut service = TestService::new(db).await;
        service.delivery.http_timeout = Duration::from_secs(15);
        let slow = shop(&service, "webhook", &[]).await;
        configure(
            &service,
            &slow.1,
            "webhook",
            json!({ "url": format!("{}/hang", endpoint.url()), "secret": WEBHOOK_SECRET }),
        )
        .await;
        let (_, quick) = shop(&service, "email", &[]).await;
        // All of them stored before the worker starts, so that its first
        // lease finds them all and takes its fill at once, oldest first;
        // started earlier, it could lease while some were still being
        // stored, and then hold more than half and lease no more.
        for n in 0..SLOW_ORDERS {
            service
                .post_event(&slow.1, &order(&format!("ord_slow{n}")))
                .await;
        }
        service.process_events().await;
        let pipeline = service.state.pipeline.clone();
        let transport: std::sync::Arc<dyn tidings_host::dispatch::Transport> = std::sync::Arc::new(
            service
                .delivery
                .dispatcher(&service.outbox)
                .expect("dispatcher"),
        );
        let worker = tokio::spawn(tidings_host::schedule::run_message_worker(
            pipeline,
            transport,
            service.state.wake.clone(),
            "test-worker".into(),
        ));
        let hanging = &endpoint;
        wait_for("the hanging endpoint to hold its places", || async move {
            hanging.received().len() >= PER_DESTINATION
        })
        .await;
        Hanging {
            service,
            endpoint,
            slow,
            quick,
            worker,
        }
    }

    /// The hanging tenant's messages by order, oldest order first.
    async fn slow_messages(&self) -> Vec<MessageRow> {
        let mut messages = Vec::new();
        for n in 0..SLOW_ORDERS {
            let order_id = format!("ord_slow{n}");
            let filter = MessageFilter {
                order_id: Some(&order_id),
                ..MessageFilter::default()
            };
            let found = self
                .service
                .state
                .pipeline
                .store
                .messages(&self.slow.0, &filter, 10)
                .await
                .expect("messages");
            assert_eq!(found.len(), 1, "ord_slow{n}: {found:?}");
            messages.extend(found);
        }
        messages
    }
}

/// Poll `done` every 20 ms until it holds; fail after 10 s.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, done: impl Fn() -> F) {
    let started = std::time::Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(messages: &[MessageRow], status: &str) -> usize {
    messages.iter().filter(|m| m.status == status).count()
}

async fn a_hanging_endpoint_of_one_tenant_does_not_hold_up_another(db: Db) {
    let h = &Hanging::start(db).await;
    // Tenant A's requests are hanging now; tenant B's email goes out anyway.
    h.service.post_event(&h.quick, &order("ord_quick")).await;
    h.service.process_events().await;
    wait_for("the other tenant's email", || async move {
        only_message(&h.service, &h.quick, "ord_quick").await["status"] == "sent"
    })
    .await;
    // Only as many of A's as its destination may take and hold ahead were
    // leased, and only those in flight were sent; the rest wait in the
    // table, not in the worker.
    let messages = h.slow_messages().await;
    let leased = PER_DESTINATION + LEASED_AHEAD;
    assert_eq!(
        (count(&messages, "sending"), count(&messages, "scheduled")),
        (leased, SLOW_ORDERS - leased),
        "{messages:?}"
    );
    assert_eq!(h.endpoint.received().len(), PER_DESTINATION);
    h.worker.abort();
}

async fn messages_held_for_a_hanging_endpoint_go_back_in_their_order(db: Db) {
    let h = &Hanging::start(db).await;
    let leased = PER_DESTINATION + LEASED_AHEAD;
    wait_for("the messages leased ahead", || async move {
        count(&h.slow_messages().await, "sending") == leased
    })
    .await;
    // Half the lease passes with the endpoint still hanging: the messages
    // held ahead go back to the table and are leased again, oldest first,
    // so the newest four still wait behind them (they used to be leased
    // past them while the held ones waited out their lease).
    h.service.advance_clock_secs(LEASE.as_secs() as i64 / 2 + 1);
    let since = h.service.state.pipeline.now().as_millisecond();
    wait_for("the held messages to be leased again", || async move {
        let messages = h.slow_messages().await;
        let again = messages
            .iter()
            .filter(|m| m.status == "sending" && m.updated_at >= since)
            .count();
        again == LEASED_AHEAD || messages[leased..].iter().any(|m| m.status != "scheduled")
    })
    .await;
    let after = h.slow_messages().await;
    assert!(
        after[leased..].iter().all(|m| m.status == "scheduled"),
        "newer messages were leased before older ones: {:?}",
        after[leased..]
            .iter()
            .map(|m| (&m.id, &m.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(count(&after, "sending"), leased, "{after:?}");
    assert_eq!(h.endpoint.received().len(), PER_DESTINATION);
    h.worker.abort();
}
