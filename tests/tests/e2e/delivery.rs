//! Retries with backoff, dead letters and manual replay, against a transport
//! that really fails (the outbox cannot be written), on both backends.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tidings_sdk::testing::fixture;
use tidings_sdk::types::EventKind;
use tidings_tests::guests;
use tidings_tests::service::{Db, TestService};

on_both_backends!(
    a_transient_failure_is_retried_with_backoff_until_it_succeeds,
    exhausted_retries_become_a_dead_letter_that_can_be_replayed,
    a_permanent_failure_is_dead_at_once,
    an_event_processed_again_after_a_crash_schedules_nothing_twice,
    a_plugin_that_no_longer_loads_is_a_fault_and_the_other_plugins_still_decide,
    a_restarted_service_decides_with_stored_plugins_from_the_compiled_cache,
    messages_due_at_once_go_to_the_running_message_worker_as_they_are_stored,
);

async fn shop(service: &TestService, settings: Value) -> String {
    let (_, key) = service.tenant("Shop", settings).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    key
}

/// Post an `order_created` for `order_id`, run the workers, and return the
/// event as `GET /v1/events` lists it, with its decisions.
async fn order_created_processed(service: &TestService, key: &str, order_id: &str) -> Value {
    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = order_id.into();
    service.post_event(key, &e).await;
    service.run_workers().await;
    let (_, events) = service
        .call(
            Method::GET,
            &format!("/v1/events?order_id={order_id}"),
            Some(key),
            None,
        )
        .await;
    events["items"][0].clone()
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

async fn an_event_processed_again_after_a_crash_schedules_nothing_twice(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, json!({})).await;
    let mut e = fixture(EventKind::OrderCreated);
    e.order.id = "ord_again".into();
    service.post_event(&key, &e).await;
    service.process_events().await;
    let first = service.messages(&key, "ord_again").await;
    assert!(!first.is_empty());

    // The worker died after scheduling but before marking the event
    // processed: its lease runs out and the event is taken again.
    sqlx::query("UPDATE events SET status = 'received', lease_until = NULL")
        .execute(service.state.pipeline.store.pool())
        .await
        .expect("reset");
    service.process_events().await;
    service.deliver().await;
    let again = service.messages(&key, "ord_again").await;
    let ids = |ms: &[Value]| ms.iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first), "the same messages, none added");
    let (decisions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM decisions")
        .fetch_one(service.state.pipeline.store.pool())
        .await
        .expect("count");
    assert_eq!(decisions, 1, "one decision per event and plugin");
    let sent = std::fs::read_dir(&service.outbox).expect("outbox").count();
    assert_eq!(sent, first.len());
    // Counted for the messages created, not for each attempt at the event.
    let (_, metrics) = service.call(Method::GET, "/metrics", None, None).await;
    let verdicts: f64 = metrics
        .as_str()
        .expect("text")
        .lines()
        .filter(|line| line.starts_with("tidings_policy_verdicts_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        verdicts,
        first.len() as f64,
        "one policy verdict per message"
    );
}

async fn a_plugin_that_no_longer_loads_is_a_fault_and_the_other_plugins_still_decide(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, json!({})).await;
    let broken = service
        .install(&key, guests::VIP_CONCIERGE, json!({}))
        .await;
    // The stored component is damaged (and so is its recorded sha256, or
    // the compiled artifact in the cache would still load without reading
    // the bytes); a fresh process has not loaded it.
    let pool = service.state.pipeline.store.pool();
    sqlx::query("UPDATE plugin_components SET component = $1 WHERE plugin_id = $2")
        .bind(b"\0asm garbage".to_vec())
        .bind(&broken)
        .execute(pool)
        .await
        .expect("damage the component");
    sqlx::query("UPDATE plugins SET sha256 = $1 WHERE id = $2")
        .bind("0".repeat(64))
        .bind(&broken)
        .execute(pool)
        .await
        .expect("damage its sha256");
    let fresh = service.reopen().await;
    let event = order_created_processed(&fresh, &key, "ord_unloadable").await;
    assert_eq!(event["status"], "processed", "{event}");
    assert_eq!(
        fresh.messages(&key, "ord_unloadable").await[0]["status"],
        "sent",
        "standard-lifecycle still decided"
    );
    let (_, tickets) = fresh
        .call(
            Method::GET,
            "/v1/escalations?queue=plugin-faults",
            Some(&key),
            None,
        )
        .await;
    let items = tickets["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{tickets}");
    assert!(
        items[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("could not be loaded"),
        "{tickets}"
    );
}

/// A fresh process links a stored plugin from the compiled cache and takes
/// its name and version from what `describe()` said at upload; a plugin
/// whose stored description is unreadable is asked again.
async fn a_restarted_service_decides_with_stored_plugins_from_the_compiled_cache(db: Db) {
    let service = TestService::new(db).await;
    let key = shop(&service, json!({})).await;
    let unreadable = service
        .install(&key, guests::VIP_CONCIERGE, json!({}))
        .await;
    sqlx::query("UPDATE plugins SET info = $1 WHERE id = $2")
        .bind("not json")
        .bind(&unreadable)
        .execute(service.state.pipeline.store.pool())
        .await
        .expect("damage the description");
    let fresh = service.reopen().await;
    let event = order_created_processed(&fresh, &key, "ord_restarted").await;
    assert_eq!(event["status"], "processed", "{event}");
    let mut decided: Vec<(&str, &str)> = event["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            (
                d["plugin"].as_str().expect("plugin"),
                d["outcome"].as_str().expect("outcome"),
            )
        })
        .collect();
    decided.sort();
    assert_eq!(
        decided,
        [
            ("standard-lifecycle@0.1.0", "actions"),
            ("vip-concierge@0.1.0", "actions")
        ],
        "{event}"
    );
    assert_eq!(
        fresh.messages(&key, "ord_restarted").await[0]["status"],
        "sent"
    );
}

/// With the workers running, as `tidings serve` runs them, a message due at
/// once is stored leased to the message worker and handed to it: delivered
/// once, without a lease from the table, and counted in the metrics.
async fn messages_due_at_once_go_to_the_running_message_worker_as_they_are_stored(db: Db) {
    use std::sync::Arc;
    use tidings_host::dispatch::Transport;
    use tidings_host::dispatch::file::FileTransport;
    use tidings_host::schedule::{run_event_worker, run_message_worker};

    let service = TestService::new(db).await;
    let key = shop(&service, json!({})).await;
    let pipeline = service.state.pipeline.clone();
    let transport: Arc<dyn Transport> = Arc::new(FileTransport::new(service.outbox.clone()));
    let workers = [
        tokio::spawn(run_event_worker(pipeline.clone(), pipeline.wake.clone())),
        tokio::spawn(run_message_worker(
            pipeline.clone(),
            transport,
            pipeline.wake.clone(),
            "handoff-test".into(),
        )),
    ];
    const ORDERS: usize = 5;
    for n in 0..ORDERS {
        let mut e = fixture(EventKind::OrderCreated);
        e.id = format!("evt_handoff_{n}");
        e.order.id = format!("ord_handoff_{n}");
        service.post_event(&key, &e).await;
    }
    let started = std::time::Instant::now();
    let mut sent = Vec::new();
    while sent.len() < ORDERS {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "only {} of {ORDERS} messages were sent",
            sent.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        sent.clear();
        for n in 0..ORDERS {
            let order = format!("ord_handoff_{n}");
            if let Some(m) = service.messages(&key, &order).await.first()
                && m["status"] == "sent"
            {
                sent.push(m["id"].as_str().expect("an id").to_owned());
            }
        }
    }
    for worker in &workers {
        worker.abort();
    }
    // Each went to the worker as it was stored, unless the worker happened
    // to be leasing from the table right then (it looks there at start and
    // every poll): such a message waits in the table for the next lease.
    let metrics = pipeline.metrics.render();
    let handed: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tidings_messages_handed_over_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (1..=ORDERS).contains(&handed),
        "{handed} of {ORDERS} handed over:\n{metrics}"
    );
    for id in &sent {
        let (_, message) = service
            .call(Method::GET, &format!("/v1/messages/{id}"), Some(&key), None)
            .await;
        assert_eq!(
            message["attempts"].as_array().map(Vec::len),
            Some(1),
            "delivered once: {message}"
        );
        assert!(
            service.outbox.join(format!("{id}.eml")).is_file(),
            "{id} is in the outbox"
        );
    }
}
