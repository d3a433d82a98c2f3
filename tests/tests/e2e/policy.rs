//! The host's policy end to end, on both backends: consent for marketing,
//! opt-outs, dedupe across events and the marketing frequency cap — each
//! verdict visible on the message with its reason.

use axum::http::Method;
use serde_json::{Value, json};
use tidings_sdk::testing::fixture;
use tidings_sdk::types::{Channel, EventKind, OrderEvent};
use tidings_tests::guests;
use tidings_tests::service::{Db, TestService};

on_both_backends!(
    marketing_needs_the_customers_opt_in_for_the_channel,
    transactional_mail_respects_a_channel_opt_out,
    a_repeated_event_for_an_order_notifies_once,
    marketing_is_capped_per_customer,
    a_plugin_is_told_what_the_order_was_sent_before,
);

/// A shop whose `configurable` plugin sends `order-confirmation` by email
/// for every paid order, as marketing when `marketing`.
async fn shop(service: &TestService, marketing: bool, settings: Value) -> String {
    let (_, key) = service.tenant("Shop", settings).await;
    let config = json!({ "rules": { "order_paid": [
        { "channel": "email", "template": "order-confirmation", "marketing": marketing }
    ] } });
    service.install(&key, guests::CONFIGURABLE, config).await;
    service.default_templates(&key).await;
    key
}

fn paid(order: &str, event: &str) -> OrderEvent {
    let mut e = fixture(EventKind::OrderPaid);
    e.id = event.into();
    e.order.id = order.into();
    e
}

async fn statuses(service: &TestService, key: &str, order: &str) -> Vec<(String, String)> {
    service
        .messages(key, order)
        .await
        .iter()
        .map(|m| {
            (
                m["status"].as_str().unwrap_or_default().to_owned(),
                m["status_reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn marketing_needs_the_customers_opt_in_for_the_channel(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, true, json!({})).await;
    let consenting = paid("ord_yes", "evt_yes");
    assert!(consenting.order.customer.consents.contains(&Channel::Email));
    let mut refusing = paid("ord_no", "evt_no");
    refusing.order.customer.consents.clear();
    service.post_event(&key, &consenting).await;
    service.post_event(&key, &refusing).await;
    service.run_workers().await;
    assert_eq!(statuses(&service, &key, "ord_yes").await[0].0, "sent");
    let no = statuses(&service, &key, "ord_no").await;
    assert_eq!(no[0].0, "suppressed");
    assert!(
        no[0].1.contains("not opted in to marketing on email"),
        "{no:?}"
    );
    // The verdict is in the audit trail with its reason.
    let (_, audit) = service
        .call(Method::GET, "/v1/audit?order_id=ord_no", Some(&key), None)
        .await;
    assert!(
        audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["stage"] == "policy" && a["action"] == "suppress"),
        "{audit}"
    );
}

async fn transactional_mail_respects_a_channel_opt_out(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, false, json!({})).await;
    let mut opted_out = paid("ord_out", "evt_out");
    opted_out
        .order
        .customer
        .channel_opt_outs
        .push(Channel::Email);
    let mut no_consent_needed = paid("ord_kept", "evt_kept");
    no_consent_needed.order.customer.consents.clear();
    service.post_event(&key, &opted_out).await;
    service.post_event(&key, &no_consent_needed).await;
    service.run_workers().await;
    let out = statuses(&service, &key, "ord_out").await;
    assert_eq!(out[0].0, "suppressed");
    assert!(out[0].1.contains("opted out of email"), "{out:?}");
    assert_eq!(
        statuses(&service, &key, "ord_kept").await[0].0,
        "sent",
        "transactional needs no opt-in"
    );
}

async fn a_repeated_event_for_an_order_notifies_once(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, false, json!({})).await;
    // The shop sends `paid` twice under different event ids (a retry of its
    // own, not of the HTTP request): one notice.
    service.post_event(&key, &paid("ord_twice", "evt_a")).await;
    service.run_workers().await;
    service.post_event(&key, &paid("ord_twice", "evt_b")).await;
    service.run_workers().await;
    let both = statuses(&service, &key, "ord_twice").await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(
        both.iter().filter(|(s, _)| s == "sent").count(),
        1,
        "{both:?}"
    );
    let duplicate = both
        .iter()
        .find(|(s, _)| s == "suppressed")
        .expect("one suppressed");
    assert!(duplicate.1.contains("already accepted"), "{both:?}");
    // After the dedupe window, the same key sends again.
    service.advance_clock(25 * 60);
    service.post_event(&key, &paid("ord_twice", "evt_c")).await;
    service.run_workers().await;
    let all = statuses(&service, &key, "ord_twice").await;
    assert_eq!(
        all.iter().filter(|(s, _)| s == "sent").count(),
        2,
        "{all:?}"
    );
}

async fn marketing_is_capped_per_customer(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(
        &service,
        true,
        json!({ "policy": { "marketing_cap": { "max": 2, "window_secs": 604800 } } }),
    )
    .await;
    for n in 0..3 {
        service
            .post_event(&key, &paid(&format!("ord_cap{n}"), &format!("evt_cap{n}")))
            .await;
        service.run_workers().await;
    }
    assert_eq!(statuses(&service, &key, "ord_cap0").await[0].0, "sent");
    assert_eq!(statuses(&service, &key, "ord_cap1").await[0].0, "sent");
    let third = statuses(&service, &key, "ord_cap2").await;
    assert_eq!(third[0].0, "suppressed");
    assert!(third[0].1.contains("frequency cap"), "{third:?}");
}

/// The history a plugin gets comes from the store: `standard-lifecycle`
/// thanks for a payment only after it told the customer the order awaits it.
async fn a_plugin_is_told_what_the_order_was_sent_before(db: Db) {
    let service = TestService::new(db).await;
    let (_, key) = service.tenant("Shop", json!({})).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    let mut created = fixture(EventKind::OrderCreated);
    created.id = "evt_created".into();
    created.order.id = "ord_transfer".into();
    created
        .order
        .attributes
        .insert("payment_status".into(), "pending".into());
    let mut payment = created.clone();
    payment.kind = EventKind::OrderPaid;
    payment.id = "evt_paid".into();
    payment.order.attributes.clear();

    service.post_event(&key, &created).await;
    service.run_workers().await;
    service.post_event(&key, &payment).await;
    service.run_workers().await;
    let templates: Vec<String> = service
        .messages(&key, "ord_transfer")
        .await
        .iter()
        .filter(|m| m["status"] == "sent")
        .map(|m| m["template"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        templates.iter().any(|t| t == "order-awaiting-payment"),
        "{templates:?}"
    );
    assert!(
        templates.iter().any(|t| t == "payment-received"),
        "the second decision saw the first message in its history: {templates:?}"
    );
}
