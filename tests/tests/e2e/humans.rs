//! Humans in the loop: escalation ladders and approvals, with time moved by
//! the test's clock (never by sleeping), on SQLite and PostgreSQL.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tidings_sdk::testing::fixture;
use tidings_sdk::types::{EventKind, OrderEvent};
use tidings_tests::fake::FakeHttp;
use tidings_tests::guests;
use tidings_tests::service::{Db, TestService};

on_both_backends!(
    a_delayed_vip_order_climbs_the_ladder_until_an_agent_acknowledges,
    an_unacknowledged_ticket_is_breached_after_the_last_tier,
    a_held_refund_is_approved_with_an_edit_and_delivered_with_the_edited_text,
    a_refund_event_processed_again_after_a_crash_holds_one_message_with_one_ticket,
    a_rejected_message_is_never_sent,
    an_expired_approval_escalates_or_rejects_but_never_sends,
    an_approved_message_goes_through_policy_again,
    an_agent_of_one_tenant_cannot_see_or_act_on_another_tenants_tickets,
    a_worker_that_dies_after_claiming_a_ticket_loses_no_timer_and_the_tier_is_notified_once,
    two_plugins_escalating_one_order_to_one_queue_give_one_ticket_with_both_reasons,
    racing_escalations_of_one_order_and_queue_open_one_ticket,
    a_tenant_without_agent_templates_still_notifies_its_tiers_with_the_builtin_text,
    approval_expiry_counts_from_when_the_message_was_held_whatever_the_tiers,
    an_actions_sla_minutes_overrides_the_first_tiers_minutes,
);

fn event(kind: EventKind, order_id: &str) -> OrderEvent {
    let mut e = fixture(kind);
    e.id = format!("{order_id}_{kind}");
    e.order.id = order_id.to_owned();
    e
}

fn vip_delay(order_id: &str) -> OrderEvent {
    let mut e = event(EventKind::DeliveryDelayed, order_id);
    e.order.customer.tags.push("vip".into());
    e
}

/// The chat tool's incoming webhook of tier 2.
fn hook(chat: &FakeHttp) -> String {
    format!("{}/hooks/vip", chat.url())
}

fn ladder(chat: &FakeHttp) -> Value {
    json!({ "escalation": { "queues": { "vip-care": { "tiers": [
        { "minutes": 30, "emails": ["first-line@bottega.example"] },
        { "minutes": 60, "emails": ["manager@bottega.example"], "webhook_url": hook(chat) }
    ] } } } })
}

/// Agent notifications sent so far, as (recipient, channel).
async fn notified(service: &TestService, key: &str, order: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in service.messages(key, order).await {
        if m["customer_id"] == "agent" {
            let (_, detail) = service
                .call(
                    Method::GET,
                    &format!("/v1/messages/{}", m["id"].as_str().expect("id")),
                    Some(key),
                    None,
                )
                .await;
            assert_eq!(detail["status"], "sent", "{detail}");
            let to = detail["history"]
                .as_array()
                .expect("history")
                .iter()
                .find_map(|h| h["detail"]["to"].as_str().map(str::to_owned))
                .unwrap_or_default();
            out.push((to, m["channel"].as_str().unwrap_or("").to_owned()));
        }
    }
    out
}

async fn ticket(service: &TestService, key: &str, order: &str) -> Value {
    let (status, list) = service
        .call(
            Method::GET,
            &format!("/v1/escalations?order_id={order}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["items"][0].clone()
}

/// The order's ticket in `queue`.
async fn ticket_in(service: &TestService, key: &str, order: &str, queue: &str) -> Value {
    let (status, list) = service
        .call(
            Method::GET,
            &format!("/v1/escalations?order_id={order}&queue={queue}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one {queue} ticket for {order}: {list}");
    items[0].clone()
}

/// The agent emails in the outbox sent to `to`.
fn emails_to(service: &TestService, to: &str) -> Vec<String> {
    std::fs::read_dir(&service.outbox)
        .map(|dir| {
            dir.flatten()
                .filter_map(|f| std::fs::read_to_string(f.path()).ok())
                .filter(|text| text.contains(&format!("To: {to}")))
                .collect()
        })
        .unwrap_or_default()
}

async fn step(service: &TestService) {
    service.run_workers().await;
    service.run_escalations().await;
    service.deliver().await;
}

async fn a_delayed_vip_order_climbs_the_ladder_until_an_agent_acknowledges(db: Db) {
    let service = TestService::new(db).await;
    let chat = FakeHttp::start().await;
    let (tenant, key) = service.tenant("Bottega", ladder(&chat)).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    service.agent_templates(&key).await;
    let agent = service.key(&tenant, "agent").await;

    service.post_event(&key, &vip_delay("ord_vip")).await;
    step(&service).await;
    let opened = ticket(&service, &agent, "ord_vip").await;
    assert_eq!(
        (opened["queue"].clone(), opened["tier"].clone()),
        (json!("vip-care"), json!(1))
    );
    assert_eq!(
        notified(&service, &key, "ord_vip").await,
        [("first-line@bottega.example".into(), "email".into())]
    );
    let eml = std::fs::read_dir(&service.outbox)
        .expect("outbox")
        .flatten()
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .find(|text| text.contains("To: first-line@bottega.example"))
        .expect("the first tier got an email");
    assert!(eml.contains("vip-care"), "{eml}");

    // 29 minutes: still tier 1's turn.
    service.advance_clock(29);
    step(&service).await;
    assert_eq!(notified(&service, &key, "ord_vip").await.len(), 1);
    // 31 minutes: tier 2 (email and chat webhook) is notified.
    service.advance_clock(2);
    step(&service).await;
    let sent = notified(&service, &key, "ord_vip").await;
    assert!(
        sent.contains(&("manager@bottega.example".into(), "email".into())),
        "{sent:?}"
    );
    assert!(sent.contains(&(hook(&chat), "webhook".into())), "{sent:?}");
    assert_eq!(ticket(&service, &agent, "ord_vip").await["tier"], 2);

    // An agent acknowledges: the ladder stops, nothing breaches later.
    let id = opened["id"].as_str().expect("id");
    let (status, acked) = service
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/ack"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{acked}");
    assert_eq!(acked["status"], "acknowledged");
    let (status, _) = service
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/comment"),
            Some(&agent),
            Some(json!({ "body": "Called the carrier." })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    service.advance_clock(600);
    step(&service).await;
    let after = ticket(&service, &agent, "ord_vip").await;
    assert_eq!(after["breached"], false);
    assert_eq!(notified(&service, &key, "ord_vip").await.len(), 3);
    let (status, resolved) = service
        .call(
            Method::POST,
            &format!("/v1/escalations/{id}/resolve"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(
        (status, resolved["status"].clone()),
        (StatusCode::OK, json!("resolved"))
    );

    // Every step is in the audit log with who did it.
    let (_, shown) = service
        .call(
            Method::GET,
            &format!("/v1/escalations/{id}"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(shown["notes"][0]["body"], "Called the carrier.");
    let (_, audit) = service
        .call(
            Method::GET,
            "/v1/audit?order_id=ord_vip&limit=500",
            Some(&key),
            None,
        )
        .await;
    let steps: Vec<(String, String)> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["stage"] == "escalation")
        .map(|a| {
            (
                a["action"].as_str().unwrap_or("").to_owned(),
                a["actor"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for action in [
        "opened",
        "notified",
        "escalated",
        "acknowledged",
        "commented",
        "resolved",
    ] {
        assert!(
            steps.iter().any(|(a, _)| a == action),
            "no {action} in {steps:?}"
        );
    }
    assert!(
        steps
            .iter()
            .any(|(a, actor)| a == "acknowledged" && actor.starts_with("key_")),
        "{steps:?}"
    );
}

async fn an_unacknowledged_ticket_is_breached_after_the_last_tier(db: Db) {
    let service = TestService::new(db).await;
    let chat = FakeHttp::start().await;
    let (tenant, key) = service.tenant("Bottega", ladder(&chat)).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    service.agent_templates(&key).await;
    let agent = service.key(&tenant, "agent").await;
    service.post_event(&key, &vip_delay("ord_b")).await;
    step(&service).await;
    service.advance_clock(31);
    step(&service).await;
    service.advance_clock(59);
    step(&service).await;
    assert_eq!(ticket(&service, &agent, "ord_b").await["breached"], false);
    service.advance_clock(2);
    step(&service).await;
    let (_, breached) = service
        .call(
            Method::GET,
            "/v1/escalations?breached=true",
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(
        breached["items"].as_array().expect("items").len(),
        1,
        "{breached}"
    );
    assert_eq!(breached["items"][0]["tier"], 2);
    let (_, high) = service
        .call(
            Method::GET,
            "/v1/escalations?queue=vip-care&priority=high&status=open",
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(high["items"].as_array().expect("items").len(), 1);
}

/// A shop whose refunds above 10.00 need an agent's yes.
async fn approval_shop(service: &TestService, approval: Value) -> (String, String, String) {
    let settings = json!({ "escalation": { "approval": approval, "queues": { "approvals": { "tiers": [
        { "minutes": 120, "emails": ["refunds@bottega.example"] },
        { "minutes": 240, "emails": ["finance@bottega.example"] }
    ] } } } });
    let (tenant, key) = service.tenant("Bottega", settings).await;
    service
        .install(
            &key,
            guests::VIP_CONCIERGE,
            json!({ "refund_approval_threshold_minor": 1000 }),
        )
        .await;
    service.default_templates(&key).await;
    service.agent_templates(&key).await;
    let agent = service.key(&tenant, "agent").await;
    (tenant, key, agent)
}

async fn message_status(service: &TestService, key: &str, id: &str) -> String {
    let (_, m) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(key), None)
        .await;
    m["status"].as_str().unwrap_or("").to_owned()
}

async fn held(service: &TestService, agent: &str) -> Vec<Value> {
    let (status, list) = service
        .call(Method::GET, "/v1/approvals", Some(agent), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn a_held_refund_is_approved_with_an_edit_and_delivered_with_the_edited_text(db: Db) {
    let service = TestService::new(db).await;
    let (_, key, agent) = approval_shop(&service, json!({})).await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_r"))
        .await;
    step(&service).await;

    let waiting = held(&service, &agent).await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let message = &waiting[0];
    assert_eq!(message["template"], "refund-issued");
    assert!(
        message["rendered"]["text"]
            .as_str()
            .expect("rendered for the agent")
            .contains("#1042")
    );
    assert!(!message["reason"].as_str().expect("reason").is_empty());
    assert!(
        notified(&service, &key, "ord_r")
            .await
            .contains(&("refunds@bottega.example".into(), "email".into()))
    );

    let id = message["id"].as_str().expect("id");
    let edited = "Ciao Giulia,\n\nabbiamo rimborsato 59,00 € <subito>.\n\nA presto!";
    let (status, approved) = service
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(&agent),
            Some(json!({ "subject": "Rimborso per l'ordine #1042", "text": edited })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "scheduled");
    step(&service).await;

    let (_, sent) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(sent["rendered"]["text"], edited);
    let eml = std::fs::read_to_string(service.outbox.join(format!("{id}.eml"))).expect("delivered");
    assert!(eml.contains("abbiamo rimborsato"), "{eml}");
    let html = sent["rendered"]["html"].as_str().expect("html part");
    assert!(
        html.contains("&lt;subito&gt;") && !html.contains("<subito>"),
        "the edit is escaped in HTML: {html}"
    );
    assert!(eml.contains("text/html"), "{eml}");
    assert!(held(&service, &agent).await.is_empty());
    let (_, tickets) = service
        .call(
            Method::GET,
            "/v1/escalations?queue=approvals",
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(tickets["items"][0]["status"], "resolved");
}

async fn a_refund_event_processed_again_after_a_crash_holds_one_message_with_one_ticket(db: Db) {
    let service = TestService::new(db).await;
    let (_, key, agent) = approval_shop(&service, json!({})).await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_again"))
        .await;
    step(&service).await;
    let first = held(&service, &agent).await;
    assert_eq!(first.len(), 1, "{first:?}");

    // The worker died after holding the message but before marking the
    // event processed: its lease runs out and the event is taken again.
    sqlx::query("UPDATE events SET status = 'received', lease_until = NULL")
        .execute(service.state.pipeline.store.pool())
        .await
        .expect("reset");
    step(&service).await;
    let again = held(&service, &agent).await;
    assert_eq!(again.len(), 1, "one held message: {again:?}");
    assert_eq!(again[0]["id"], first[0]["id"]);
    ticket_in(&service, &agent, "ord_again", "approvals").await;
    assert_eq!(
        notified(&service, &key, "ord_again").await,
        vec![("refunds@bottega.example".to_owned(), "email".to_owned())],
        "tier 1 is told once"
    );
    let (_, trail) = service
        .call(
            Method::GET,
            &format!("/v1/messages/{}", first[0]["id"].as_str().expect("id")),
            Some(&key),
            None,
        )
        .await;
    let holds = trail["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["action"] == "held")
        .count();
    assert_eq!(holds, 1, "{trail}");
}

async fn a_rejected_message_is_never_sent(db: Db) {
    let service = TestService::new(db).await;
    let (_, key, agent) = approval_shop(&service, json!({})).await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_x"))
        .await;
    step(&service).await;
    let id = held(&service, &agent).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _) = service
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/reject"),
            Some(&agent),
            Some(json!({ "reason": "" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a rejection needs a reason"
    );
    let (status, rejected) = service
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/reject"),
            Some(&agent),
            Some(json!({ "reason": "refund was reversed" })),
        )
        .await;
    assert_eq!(
        (status, rejected["status"].clone()),
        (StatusCode::OK, json!("rejected"))
    );
    let (status, _) = service
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a rejected message cannot be approved"
    );
    service.advance_clock(24 * 60);
    step(&service).await;
    let (_, after) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(after["status"], "rejected");
    assert!(!service.outbox.join(format!("{id}.eml")).exists());
}

async fn an_expired_approval_escalates_or_rejects_but_never_sends(db: Db) {
    // Default: expiry moves the approval up the queue's tiers, still held.
    let service = TestService::new(db).await;
    let (_, key, agent) = approval_shop(&service, json!({})).await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_e"))
        .await;
    step(&service).await;
    let id = held(&service, &agent).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    service.advance_clock(121);
    step(&service).await;
    assert!(
        notified(&service, &key, "ord_e")
            .await
            .contains(&("finance@bottega.example".into(), "email".into()))
    );
    service.advance_clock(241);
    step(&service).await;
    let (_, message) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(message["status"], "held", "never sent unapproved");
    let (_, tickets) = service
        .call(
            Method::GET,
            "/v1/escalations?queue=approvals&breached=true",
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(tickets["items"].as_array().expect("items").len(), 1);

    // Configured to reject on expiry.
    let service = TestService::new(db).await;
    let (_, key, agent) = approval_shop(&service, json!({ "on_expiry": "reject" })).await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_e2"))
        .await;
    step(&service).await;
    let id = held(&service, &agent).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The tiers move on by their own minutes; the message expires 24 h
    // (the default `expire_minutes`) after it was held.
    service.advance_clock(121);
    step(&service).await;
    let (_, message) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(message["status"], "held", "{message}");
    service.advance_clock(24 * 60 - 121 + 1);
    step(&service).await;
    let (_, message) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(message["status"], "rejected", "{message}");
    assert_eq!(message["status_reason"], "approval expired");
    assert!(!service.outbox.join(format!("{id}.eml")).exists());
}

async fn an_approved_message_goes_through_policy_again(db: Db) {
    let service = TestService::new(db).await;
    let (tenant, key, agent) = approval_shop(&service, json!({})).await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_p"))
        .await;
    step(&service).await;
    let id = held(&service, &agent).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Meanwhile the customer's address bounced.
    service
        .state
        .pipeline
        .store
        .suppress(&tenant, "email", "giulia.rossi@example.com", "hard bounce")
        .await
        .expect("suppress");
    let (status, _) = service
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}/approve"),
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    step(&service).await;
    let (_, message) = service
        .call(Method::GET, &format!("/v1/messages/{id}"), Some(&key), None)
        .await;
    assert_eq!(message["status"], "suppressed", "{message}");
    assert!(!service.outbox.join(format!("{id}.eml")).exists());
}

async fn an_agent_of_one_tenant_cannot_see_or_act_on_another_tenants_tickets(db: Db) {
    let service = TestService::new(db).await;
    let (_, key_b, agent_b) = approval_shop(&service, json!({})).await;
    service.post_event(&key_b, &vip_delay("ord_b")).await;
    service
        .post_event(&key_b, &event(EventKind::RefundCreated, "ord_b2"))
        .await;
    step(&service).await;
    let message_b = held(&service, &agent_b).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, tickets_b) = service
        .call(Method::GET, "/v1/escalations", Some(&agent_b), None)
        .await;
    let ticket_b = tickets_b["items"][0]["id"]
        .as_str()
        .expect("B has a ticket")
        .to_owned();

    let (tenant_a, _) = service.tenant("A", json!({})).await;
    let agent_a = service.key(&tenant_a, "agent").await;
    let (_, list) = service
        .call(Method::GET, "/v1/escalations", Some(&agent_a), None)
        .await;
    assert_eq!(list["items"], json!([]));
    assert!(held(&service, &agent_a).await.is_empty());
    for (method, path, body) in [
        (Method::GET, format!("/v1/escalations/{ticket_b}"), None),
        (
            Method::POST,
            format!("/v1/escalations/{ticket_b}/ack"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/escalations/{ticket_b}/resolve"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/escalations/{ticket_b}/comment"),
            Some(json!({ "body": "hi" })),
        ),
        (
            Method::POST,
            format!("/v1/approvals/{message_b}/approve"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/approvals/{message_b}/reject"),
            Some(json!({ "reason": "no" })),
        ),
    ] {
        let (status, _) = service
            .call(method.clone(), &path, Some(&agent_a), body)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    // Agents reach only escalations and approvals.
    let (status, _) = service
        .call(Method::GET, "/v1/messages", Some(&agent_b), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, still) = service
        .call(
            Method::GET,
            &format!("/v1/escalations/{ticket_b}"),
            Some(&agent_b),
            None,
        )
        .await;
    assert_eq!(still["status"], "open");
}

async fn a_worker_that_dies_after_claiming_a_ticket_loses_no_timer_and_the_tier_is_notified_once(
    db: Db,
) {
    let service = TestService::new(db).await;
    let chat = FakeHttp::start().await;
    let (tenant, key) = service.tenant("Bottega", ladder(&chat)).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    service.agent_templates(&key).await;
    let agent = service.key(&tenant, "agent").await;
    service.post_event(&key, &vip_delay("ord_crash")).await;
    step(&service).await;
    let opened = ticket(&service, &agent, "ord_crash").await;
    assert!(
        opened["next_tier_at"].is_string(),
        "opened with its timer set: {opened}"
    );
    assert_eq!(notified(&service, &key, "ord_crash").await.len(), 1);

    // Tier 1's time runs out; a worker claims the ticket and dies before it
    // notifies tier 2 or re-arms the timer.
    service.advance_clock(31);
    let store = &service.state.pipeline.store;
    let now = service.state.pipeline.now().as_millisecond();
    let claimed = store
        .claim_due_escalations(now, now + tidings_host::escalation::CLAIM_LEASE_MS, 100)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    drop(claimed);

    // While the dead worker's lease runs, nobody else takes the ticket.
    assert_eq!(service.run_escalations().await, 0);
    step(&service).await;
    assert_eq!(notified(&service, &key, "ord_crash").await.len(), 1);
    let leased = ticket(&service, &agent, "ord_crash").await;
    assert_eq!(leased["tier"], 1);
    assert!(
        leased["next_tier_at"].is_string(),
        "the timer survived: {leased}"
    );

    // After the lease the ticket is due again, and tier 2 is notified once.
    service.advance_clock(2);
    step(&service).await;
    let sent = notified(&service, &key, "ord_crash").await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(
        sent.iter()
            .filter(|(to, _)| to == "manager@bottega.example")
            .count(),
        1,
        "{sent:?}"
    );
    assert_eq!(
        sent.iter().filter(|(to, _)| *to == hook(&chat)).count(),
        1,
        "{sent:?}"
    );
    assert_eq!(ticket(&service, &agent, "ord_crash").await["tier"], 2);
    service.advance_clock(1);
    step(&service).await;
    assert_eq!(notified(&service, &key, "ord_crash").await.len(), 3);
    assert_eq!(chat.received().len(), 1, "the chat tool got one POST");
    assert_eq!(emails_to(&service, "manager@bottega.example").len(), 1);
}

async fn two_plugins_escalating_one_order_to_one_queue_give_one_ticket_with_both_reasons(db: Db) {
    let service = TestService::new(db).await;
    let chat = FakeHttp::start().await;
    let (tenant, key) = service.tenant("Bottega", ladder(&chat)).await;
    // standard-lifecycle escalates a VIP delay to `vip-care` as high; this
    // configurable install escalates the same event to the same queue as
    // urgent. Both decide on the same event, so both ask for a ticket.
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service
        .install(
            &key,
            guests::CONFIGURABLE,
            json!({ "escalation": {
                "queue": "vip-care", "priority": "urgent",
                "event_kinds": ["delivery_delayed"], "customer_tags": ["vip"]
            } }),
        )
        .await;
    service.default_templates(&key).await;
    service.agent_templates(&key).await;
    let agent = service.key(&tenant, "agent").await;
    service.post_event(&key, &vip_delay("ord_m")).await;
    step(&service).await;

    let merged = ticket_in(&service, &agent, "ord_m", "vip-care").await;
    assert_eq!(merged["priority"], "urgent", "{merged}");
    let reason = merged["reason"].as_str().expect("reason");
    assert!(
        reason.contains("is delayed") && reason.contains("customer tagged `vip`"),
        "both reasons: {reason}"
    );
    assert_eq!(reason.lines().count(), 2, "{reason}");
    // Tier 1 is told once, about the ticket.
    assert_eq!(
        notified(&service, &key, "ord_m").await,
        [("first-line@bottega.example".into(), "email".into())]
    );
    let (_, audit) = service
        .call(
            Method::GET,
            "/v1/audit?order_id=ord_m&limit=500",
            Some(&key),
            None,
        )
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["stage"] == "escalation")
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert_eq!(
        (
            actions.iter().filter(|a| **a == "opened").count(),
            actions.iter().filter(|a| **a == "merged").count()
        ),
        (1, 1),
        "{actions:?}"
    );
}

async fn racing_escalations_of_one_order_and_queue_open_one_ticket(db: Db) {
    let service = TestService::new(db).await;
    let chat = FakeHttp::start().await;
    let (tenant, key) = service.tenant("Bottega", ladder(&chat)).await;
    service.agent_templates(&key).await;
    let agent = service.key(&tenant, "agent").await;
    let (_, accepted) = service.post_event(&key, &vip_delay("ord_race")).await;
    let pipeline = service.state.pipeline.clone();
    let row = pipeline
        .store
        .event(&tenant, accepted["id"].as_str().expect("event id"))
        .await
        .expect("read")
        .expect("the event is stored");
    let (_, settings) = pipeline.tenant(&tenant).await.expect("tenant");
    let priorities = [
        "normal", "high", "low", "urgent", "normal", "high", "low", "normal",
    ];
    let racers: Vec<_> = priorities
        .into_iter()
        .enumerate()
        .map(|(i, priority)| {
            let (pipeline, row, settings) = (pipeline.clone(), row.clone(), settings.clone());
            tokio::spawn(async move {
                let reason = format!("reason {i}");
                tidings_host::escalation::open(
                    &pipeline,
                    &row,
                    &settings,
                    &tidings_host::escalation::Opening {
                        queue: "vip-care",
                        priority,
                        reason: &reason,
                        sla_minutes: None,
                        decision_id: None,
                        message_id: None,
                    },
                )
                .await
                .expect("open")
            })
        })
        .collect();
    let mut ids = Vec::new();
    for racer in racers {
        ids.push(racer.await.expect("the task ran"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every racer got the same ticket: {ids:?}");

    let only = ticket_in(&service, &agent, "ord_race", "vip-care").await;
    assert_eq!(only["id"], ids[0].as_str());
    assert_eq!(only["priority"], "urgent");
    let reason = only["reason"].as_str().expect("reason");
    for i in 0..priorities.len() {
        assert!(reason.contains(&format!("reason {i}")), "{reason}");
    }
    service.deliver().await;
    assert_eq!(
        notified(&service, &key, "ord_race").await,
        [("first-line@bottega.example".into(), "email".into())]
    );
}

async fn a_tenant_without_agent_templates_still_notifies_its_tiers_with_the_builtin_text(db: Db) {
    let service = TestService::new(db).await;
    let chat = FakeHttp::start().await;
    let (_, key) = service.tenant("Bottega", ladder(&chat)).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service.default_templates(&key).await;
    service.post_event(&key, &vip_delay("ord_t")).await;
    step(&service).await;
    assert_eq!(
        notified(&service, &key, "ord_t").await,
        [("first-line@bottega.example".into(), "email".into())]
    );
    let first = emails_to(&service, "first-line@bottega.example");
    assert_eq!(first.len(), 1);
    assert!(
        first[0].contains("needs attention") && first[0].contains("vip-care"),
        "the built-in notice: {}",
        first[0]
    );

    // The tenant's own template wins once it has one.
    let (status, body) = service
        .call(
            Method::PUT,
            "/v1/templates/escalation-notice/email/en",
            Some(&key),
            Some(json!({
                "subject": "Bottega desk: ticket {{ data.ticket_id }}",
                "text": "Please look at order {{ order.number }} ({{ data.queue }}).",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    service.advance_clock(31);
    step(&service).await;
    let sent = notified(&service, &key, "ord_t").await;
    assert!(
        sent.contains(&(hook(&chat), "webhook".into())),
        "the webhook gets the built-in text: {sent:?}"
    );
    let posted = chat.received();
    assert_eq!(posted.len(), 1);
    let body = String::from_utf8_lossy(&posted[0].body);
    assert!(body.contains("ack: POST /v1/escalations/"), "{body}");
    let manager = emails_to(&service, "manager@bottega.example");
    assert_eq!(manager.len(), 1);
    assert!(
        manager[0].contains("Bottega desk: ticket") && !manager[0].contains("needs attention"),
        "{}",
        manager[0]
    );
}

async fn approval_expiry_counts_from_when_the_message_was_held_whatever_the_tiers(db: Db) {
    // Rejected after `expire_minutes`, while the tiers (120, 240 minutes)
    // are notified by their own minutes.
    let service = TestService::new(db).await;
    let (_, key, agent) = approval_shop(
        &service,
        json!({ "expire_minutes": 300, "on_expiry": "reject" }),
    )
    .await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_x1"))
        .await;
    step(&service).await;
    let id = held(&service, &agent).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    service.advance_clock(121);
    step(&service).await;
    assert!(
        notified(&service, &key, "ord_x1")
            .await
            .contains(&("finance@bottega.example".into(), "email".into())),
        "tier 2 after tier 1's 120 minutes"
    );
    assert_eq!(message_status(&service, &key, &id).await, "held");
    service.advance_clock(178);
    step(&service).await;
    assert_eq!(
        message_status(&service, &key, &id).await,
        "held",
        "299 minutes"
    );
    service.advance_clock(2);
    step(&service).await;
    assert_eq!(
        message_status(&service, &key, &id).await,
        "rejected",
        "301 minutes"
    );
    let closed = ticket_in(&service, &agent, "ord_x1", "approvals").await;
    assert_eq!(closed["status"], "resolved");
    assert!(!service.outbox.join(format!("{id}.eml")).exists());

    // Escalated at expiry, before tier 1's time ran out; then the ladder
    // goes on by tier 2's own minutes.
    let service = TestService::new(db).await;
    let (_, key, agent) = approval_shop(&service, json!({ "expire_minutes": 60 })).await;
    service
        .post_event(&key, &event(EventKind::RefundCreated, "ord_x2"))
        .await;
    step(&service).await;
    let id = held(&service, &agent).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let opened = ticket_in(&service, &agent, "ord_x2", "approvals").await;
    assert!(opened["expires_at"].is_string(), "{opened}");
    service.advance_clock(59);
    step(&service).await;
    assert_eq!(notified(&service, &key, "ord_x2").await.len(), 1);
    service.advance_clock(2);
    step(&service).await;
    assert_eq!(
        notified(&service, &key, "ord_x2").await,
        [
            ("refunds@bottega.example".into(), "email".into()),
            ("finance@bottega.example".into(), "email".into())
        ],
        "expiry at 60 minutes escalates to tier 2"
    );
    let escalated = ticket_in(&service, &agent, "ord_x2", "approvals").await;
    assert_eq!(
        (escalated["tier"].clone(), escalated["breached"].clone()),
        (json!(2), json!(false))
    );
    assert!(escalated["expires_at"].is_null(), "{escalated}");
    // Tier 1's own 120 minutes pass: nothing more.
    service.advance_clock(60);
    step(&service).await;
    assert_eq!(notified(&service, &key, "ord_x2").await.len(), 2);
    // Tier 2 has 240 minutes from when it was notified (61).
    service.advance_clock(178);
    step(&service).await;
    assert_eq!(
        ticket_in(&service, &agent, "ord_x2", "approvals").await["breached"],
        false,
        "299 minutes"
    );
    service.advance_clock(3);
    step(&service).await;
    assert_eq!(
        ticket_in(&service, &agent, "ord_x2", "approvals").await["breached"],
        true,
        "302 minutes"
    );
    assert_eq!(
        message_status(&service, &key, &id).await,
        "held",
        "never sent unapproved"
    );
}

async fn an_actions_sla_minutes_overrides_the_first_tiers_minutes(db: Db) {
    let service = TestService::new(db).await;
    let chat = FakeHttp::start().await;
    let (tenant, key) = service.tenant("Bottega", ladder(&chat)).await;
    // vip-concierge escalates VIP delays with its `sla_minutes`; the queue's
    // tier 1 has 30 minutes.
    service
        .install(&key, guests::VIP_CONCIERGE, json!({ "sla_minutes": 10 }))
        .await;
    service.default_templates(&key).await;
    service.agent_templates(&key).await;
    let agent = service.key(&tenant, "agent").await;
    service.post_event(&key, &vip_delay("ord_sla")).await;
    step(&service).await;
    let opened = ticket_in(&service, &agent, "ord_sla", "vip-care").await;
    assert_eq!(opened["sla_minutes"], 10, "{opened}");
    assert_eq!(notified(&service, &key, "ord_sla").await.len(), 1);

    service.advance_clock(9);
    step(&service).await;
    assert_eq!(notified(&service, &key, "ord_sla").await.len(), 1);
    service.advance_clock(2);
    step(&service).await;
    let sent = notified(&service, &key, "ord_sla").await;
    assert!(
        sent.contains(&("manager@bottega.example".into(), "email".into())),
        "tier 2 after the action's 10 minutes, not tier 1's 30: {sent:?}"
    );
    // Tier 2 keeps its own 60 minutes.
    service.advance_clock(58);
    step(&service).await;
    assert_eq!(
        ticket_in(&service, &agent, "ord_sla", "vip-care").await["breached"],
        false
    );
    service.advance_clock(3);
    step(&service).await;
    assert_eq!(
        ticket_in(&service, &agent, "ord_sla", "vip-care").await["breached"],
        true
    );
}
