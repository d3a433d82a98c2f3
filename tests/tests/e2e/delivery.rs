//! Retries with backoff, dead letters and manual replay, against a transport
//! that really fails (the outbox cannot be written), on both backends.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tidings_sdk::testing::fixture;
use tidings_sdk::types::EventKind;
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
    a_transient_failure_is_retried_with_backoff_until_it_succeeds,
    exhausted_retries_become_a_dead_letter_that_can_be_replayed,
    a_permanent_failure_is_dead_at_once,
);

async fn shop(service: &TestService, settings: Value) -> String {
    let (_, key) = service.tenant("Shop", settings).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    key
}

fn block_outbox(service: &TestService) {
    // A plain file where the outbox directory should be: every hand-off fails
    // with an I/O error, which is transient.
    std::fs::create_dir_all(service.outbox.parent().expect("parent")).expect("dir");
    std::fs::write(&service.outbox, b"not a directory").expect("block");
}

fn unblock_outbox(service: &TestService) {
    std::fs::remove_file(&service.outbox).expect("unblock");
}

async fn message(service: &TestService, key: &str, order: &str) -> Value {
    let messages = service.messages(key, order).await;
    let id = messages[0]["id"].as_str().expect("a message").to_owned();
    service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(key), None)
        .await
        .1
}

async fn a_transient_failure_is_retried_with_backoff_until_it_succeeds(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, json!({})).await;
    block_outbox(&service);
    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = "ord_t".into();
    service.post_event(&key, &e).await;
    service.run_workers().await;
    let first = message(&service, &key, "ord_t").await;
    assert_eq!(first["status"], "scheduled", "{first}");
    assert_eq!(first["attempts"].as_array().map(Vec::len), Some(1));
    assert!(
        first["status_reason"]
            .as_str()
            .expect("reason")
            .starts_with("retrying after: dispatch")
    );
    let next: jiff::Timestamp = first["send_at"]
        .as_str()
        .expect("send_at")
        .parse()
        .expect("time");
    let wait = next.as_millisecond() - service.state.pipeline.now().as_millisecond();
    assert!(
        (11_000..=19_000).contains(&wait),
        "first retry ~15 s later, got {wait} ms"
    );

    // Not due yet: nothing happens.
    service.deliver().await;
    assert_eq!(
        message(&service, &key, "ord_t").await["attempts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    service.advance_clock(1);
    service.deliver().await;
    assert_eq!(
        message(&service, &key, "ord_t").await["attempts"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    unblock_outbox(&service);
    service.advance_clock(2);
    service.deliver().await;
    let done = message(&service, &key, "ord_t").await;
    assert_eq!(done["status"], "sent", "{done}");
    let outcomes: Vec<&str> = done["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "sent"]);
}

async fn exhausted_retries_become_a_dead_letter_that_can_be_replayed(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(
        &service,
        json!({ "delivery": { "retry": { "max_attempts": 2 } } }),
    )
    .await;
    block_outbox(&service);
    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = "ord_d".into();
    service.post_event(&key, &e).await;
    service.run_workers().await;
    service.advance_clock(1);
    service.deliver().await;
    let dead = message(&service, &key, "ord_d").await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["attempts"].as_array().expect("attempts").len(), 2);
    let (_, tickets) = service
        .call(
            Method::GET,
            "/v1/escalations?queue=delivery-failures",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        tickets["items"].as_array().expect("items").len(),
        1,
        "{tickets}"
    );
    let (_, dead_list) = service
        .call(Method::GET, "/v1/messages?status=dead", Some(&key), None)
        .await;
    assert_eq!(dead_list["items"].as_array().expect("items").len(), 1);

    unblock_outbox(&service);
    let id = dead["id"].as_str().expect("id");
    let (status, retried) = service
        .call(
            Method::POST,
            &format!("/v1/messages/{id}/retry"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (status, retried["status"].clone()),
        (StatusCode::OK, json!("scheduled"))
    );
    service.deliver().await;
    assert_eq!(message(&service, &key, "ord_d").await["status"], "sent");
}

async fn a_permanent_failure_is_dead_at_once(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, json!({})).await;
    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = "ord_p".into();
    e.order.customer.email = Some("giulia@@example..com".into());
    service.post_event(&key, &e).await;
    service.run_workers().await;
    let dead = message(&service, &key, "ord_p").await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert!(
        dead["status_reason"]
            .as_str()
            .expect("reason")
            .contains("invalid To address"),
        "{dead}"
    );
    assert_eq!(dead["attempts"].as_array().expect("attempts").len(), 1);
}
