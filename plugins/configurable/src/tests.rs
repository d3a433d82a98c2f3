use serde_json::{Value, json};
use tidings_sdk::action::{Escalate, Timing};
use tidings_sdk::testing::{context, event, fixture};
use tidings_sdk::types::OpenEscalation;

use super::*;

fn decide(event: &OrderEvent, config: Value) -> Vec<Action> {
    let ctx = context().config(config).build();
    Configurable::decide(event, &ctx).expect("the config is valid")
}

fn config_error(config: Value) -> RuleError {
    let ctx = context().config(config).build();
    Configurable::decide(&fixture(EventKind::OrderCreated), &ctx)
        .expect_err("the config is invalid")
}

/// Asserts the config is rejected with a message naming `field`.
fn assert_rejects(config: Value, field: &str) -> String {
    let err = config_error(config);
    assert_eq!(err.code, "invalid-config", "{err}");
    assert!(
        err.message.contains(&format!("config field `{field}`")),
        "expected `{field}` in: {}",
        err.message
    );
    err.message
}

fn messages(actions: &[Action]) -> Vec<&Notify> {
    actions.iter().filter_map(Action::message).collect()
}

fn only_message(actions: &[Action]) -> Notify {
    let found = messages(actions);
    assert_eq!(found.len(), 1, "one message in {actions:#?}");
    found[0].clone()
}

fn cancel_keys(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { cancel_key } => Some(cancel_key.as_str()),
            _ => None,
        })
        .collect()
}

fn escalations(actions: &[Action]) -> Vec<&Escalate> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Escalate(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn held_reason(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|a| match a {
        Action::HoldForApproval { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

/// The JSON example in the crate docs.
fn documented_example() -> Value {
    let docs = include_str!("lib.rs");
    let start = docs
        .find("//! ```json\n")
        .expect("the docs have a JSON example")
        + 12;
    let end = start + docs[start..].find("//! ```\n").expect("the example ends");
    let text: String = docs[start..end]
        .lines()
        .map(|line| line.trim_start_matches("//!").trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&text).expect("the documented example is JSON")
}

fn one_rule(kind: &str, rule: Value) -> Value {
    json!({ "rules": { kind: [rule] } })
}

#[test]
fn an_empty_config_yields_no_actions_for_any_event() {
    for kind in EventKind::ALL {
        assert!(decide(&fixture(kind), json!({})).is_empty(), "{kind}");
    }
}

#[test]
fn empty_sections_yield_no_actions_either() {
    let config = json!({ "rules": {}, "escalation": null });
    for kind in EventKind::ALL {
        assert!(decide(&fixture(kind), config.clone()).is_empty(), "{kind}");
    }
}

#[test]
fn a_rule_sends_its_template_on_its_channel_now_as_transactional() {
    let config = one_rule(
        "order_created",
        json!({"channel": "email", "template": "order-confirmation"}),
    );
    let actions = decide(&fixture(EventKind::OrderCreated), config);
    assert_eq!(actions.len(), 1);
    let n = only_message(&actions);
    assert_eq!(n.channel, Channel::Email);
    assert_eq!(n.template, "order-confirmation");
    assert_eq!(n.timing, Timing::Now);
    assert_eq!(n.category, Category::Transactional);
    assert_eq!(n.priority, Priority::Normal);
    assert!(n.cancel_key.is_none());
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("order-confirmation:ord_1042:order_created:email")
    );
}

#[test]
fn rules_only_fire_for_their_own_event_kind() {
    let config = one_rule(
        "order_created",
        json!({"channel": "email", "template": "order-confirmation"}),
    );
    for kind in EventKind::ALL
        .into_iter()
        .filter(|k| *k != EventKind::OrderCreated)
    {
        assert!(decide(&fixture(kind), config.clone()).is_empty(), "{kind}");
    }
}

#[test]
fn every_rule_of_the_kind_is_sent_in_order() {
    let config = json!({"rules": {"shipment_created": [
        {"channel": "email", "template": "order-shipped"},
        {"channel": "push", "template": "order-shipped-push"},
        {"channel": "webhook", "template": "erp-shipped"},
    ]}});
    let actions = decide(&fixture(EventKind::ShipmentCreated), config);
    let sent: Vec<(Channel, &str)> = messages(&actions)
        .into_iter()
        .map(|n| (n.channel, n.template.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            (Channel::Email, "order-shipped"),
            (Channel::Push, "order-shipped-push"),
            (Channel::Webhook, "erp-shipped"),
        ]
    );
}

#[test]
fn delay_marketing_priority_and_fallbacks_shape_the_message() {
    let config = one_rule(
        "delivered",
        json!({
            "channel": "sms", "template": "feedback-request",
            "delay_seconds": 259_200, "marketing": true, "priority": "low",
            "fallback_channels": ["whatsapp", "email"],
        }),
    );
    let n = only_message(&decide(&fixture(EventKind::Delivered), config));
    assert_eq!(n.timing, Timing::After { seconds: 259_200 });
    assert_eq!(n.category, Category::Marketing);
    assert_eq!(n.priority, Priority::Low);
    assert_eq!(n.fallback_channels, [Channel::Whatsapp, Channel::Email]);
}

#[test]
fn min_order_total_skips_smaller_orders() {
    let config = one_rule(
        "order_created",
        json!({"channel": "email", "template": "big-order", "min_order_total_minor": 13_500}),
    );
    let at_minimum = event(EventKind::OrderCreated).total(13_500, "EUR").build();
    assert_eq!(decide(&at_minimum, config.clone()).len(), 1);
    let below = event(EventKind::OrderCreated).total(13_499, "EUR").build();
    assert!(decide(&below, config).is_empty());
}

#[test]
fn required_tag_skips_customers_without_it() {
    let config = one_rule(
        "delivered",
        json!({"channel": "whatsapp", "template": "vip-thank-you", "required_tag": "vip"}),
    );
    assert!(decide(&fixture(EventKind::Delivered), config.clone()).is_empty());
    let vip = event(EventKind::Delivered).customer_tag("VIP").build();
    assert_eq!(
        only_message(&decide(&vip, config)).template,
        "vip-thank-you"
    );
}

#[test]
fn template_data_is_event_attributes_then_tracking_then_rule_data() {
    let config = one_rule(
        "delivery_delayed",
        json!({
            "channel": "email", "template": "delivery-delayed",
            "data": {"coupon": "SORRY5", "delay_reason": "a short delay"},
        }),
    );
    let n = only_message(&decide(&fixture(EventKind::DeliveryDelayed), config));
    assert_eq!(n.data["previous_eta"], "2026-11-26T18:00:00Z");
    assert_eq!(
        n.data["tracking_url"],
        "https://tracking.example.com/BRT123456789IT"
    );
    assert_eq!(n.data["tracking_number"], "BRT123456789IT");
    assert_eq!(n.data["carrier"], "BRT");
    assert_eq!(n.data["eta"], "2026-11-29T18:00:00Z");
    assert_eq!(n.data["shipment_id"], "ful_5501");
    assert_eq!(n.data["coupon"], "SORRY5");
    assert_eq!(n.data["delay_reason"], "a short delay");
    assert!(!n.data.contains_key("risk_level"));
}

#[test]
fn cancel_on_withdraws_the_pending_message_under_the_key_it_was_given() {
    let config = one_rule(
        "delivered",
        json!({
            "channel": "email", "template": "feedback-request", "delay_seconds": 259_200,
            "marketing": true, "cancel_on": ["return_requested", "refund_created"],
        }),
    );
    let scheduled = only_message(&decide(&fixture(EventKind::Delivered), config.clone()));
    assert_eq!(
        scheduled.cancel_key.as_deref(),
        Some("feedback-request:ord_1042:delivered:email")
    );
    for kind in [EventKind::ReturnRequested, EventKind::RefundCreated] {
        let actions = decide(&fixture(kind), config.clone());
        assert_eq!(
            cancel_keys(&actions),
            [scheduled.cancel_key.as_deref().unwrap_or_default()]
        );
        assert!(messages(&actions).is_empty());
    }
    assert!(decide(&fixture(EventKind::ReturnApproved), config).is_empty());
}

#[test]
fn cancels_come_before_the_new_event_own_messages_and_are_not_repeated() {
    let config = json!({"rules": {
        "delivery_delayed": [
            {"channel": "email", "template": "delay-followup", "delay_seconds": 172_800, "cancel_on": ["delivered"]},
            {"channel": "email", "template": "delay-followup", "delay_seconds": 345_600, "cancel_on": ["delivered"]},
        ],
        "delivered": [{"channel": "email", "template": "order-delivered"}],
    }});
    let actions = decide(&fixture(EventKind::Delivered), config);
    assert_eq!(actions.len(), 2, "{actions:#?}");
    assert!(
        matches!(&actions[0], Action::Cancel { cancel_key } if cancel_key == "delay-followup:ord_1042:delivery_delayed:email")
    );
    assert_eq!(only_message(&actions).template, "order-delivered");
}

#[test]
fn dedupe_keys_tell_channels_parcels_and_new_occurrences_apart_but_not_repeats() {
    let config = json!({"rules": {"delivery_delayed": [
        {"channel": "email", "template": "delivery-delayed"},
        {"channel": "sms", "template": "delivery-delayed"},
    ]}});
    let keys = |e: &OrderEvent| -> Vec<String> {
        messages(&decide(e, config.clone()))
            .into_iter()
            .filter_map(|n| n.dedupe_key.clone())
            .collect()
    };
    let first = keys(&fixture(EventKind::DeliveryDelayed));
    assert_eq!(
        first,
        [
            "delivery-delayed:ord_1042:delivery_delayed:email:ful_5501:2026-11-29T18:00:00Z",
            "delivery-delayed:ord_1042:delivery_delayed:sms:ful_5501:2026-11-29T18:00:00Z",
        ]
    );
    let repeat = keys(&event(EventKind::DeliveryDelayed).id("evt_again").build());
    assert_eq!(first, repeat);
    let later = keys(
        &event(EventKind::DeliveryDelayed)
            .map(|e| {
                if let Some(s) = e.shipment.as_mut() {
                    s.eta = Some("2026-12-02T18:00:00Z".parse().expect("valid timestamp"));
                }
            })
            .build(),
    );
    assert_ne!(first, later);
}

fn escalation_config(escalation: Value) -> Value {
    json!({ "escalation": escalation })
}

#[test]
fn an_order_above_the_total_escalates_with_priority_sla_and_a_reason() {
    let config = escalation_config(json!({
        "queue": "vip-care", "priority": "urgent", "sla_minutes": 30,
        "event_kinds": ["delivery_delayed"], "total_above_minor": 20_000,
    }));
    let e = event(EventKind::DeliveryDelayed)
        .total(45_000, "EUR")
        .build();
    let actions = decide(&e, config);
    let tickets = escalations(&actions);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].queue, "vip-care");
    assert_eq!(tickets[0].priority, Priority::Urgent);
    assert_eq!(tickets[0].sla_minutes, Some(30));
    assert_eq!(
        tickets[0].reason,
        "Order #1042: delivery delayed (total 450.00 EUR is above 200.00 EUR)"
    );
}

#[test]
fn a_tagged_customer_escalates_whatever_the_total() {
    let config = escalation_config(json!({
        "queue": "vip-care", "event_kinds": ["delivery_attempt_failed"],
        "total_above_minor": 1_000_000, "customer_tags": ["gold", "vip"],
    }));
    let e = event(EventKind::DeliveryAttemptFailed)
        .customer_tag("Vip")
        .build();
    let actions = decide(&e, config.clone());
    let tickets = escalations(&actions);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].priority, Priority::High);
    assert_eq!(tickets[0].sla_minutes, None);
    assert!(
        tickets[0].reason.contains("customer tagged `vip`"),
        "{}",
        tickets[0].reason
    );

    assert!(decide(&fixture(EventKind::DeliveryAttemptFailed), config).is_empty());
}

#[test]
fn an_escalation_without_conditions_fires_for_every_listed_event() {
    let config = escalation_config(json!({"queue": "ops", "event_kinds": ["payment_failed"]}));
    let actions = decide(&fixture(EventKind::PaymentFailed), config.clone());
    assert_eq!(
        escalations(&actions)[0].reason,
        "Order #1042: payment failed"
    );
    assert!(decide(&fixture(EventKind::OrderCreated), config).is_empty());
}

#[test]
fn no_second_ticket_is_opened_while_one_is_open_in_the_queue() {
    let config = escalation_config(json!({"queue": "ops", "event_kinds": ["payment_failed"]}));
    let mut ctx = context().config(config).build();
    // `ContextBuilder` cannot add open escalations, so set the field.
    ctx.open_escalations.push(OpenEscalation {
        queue: "ops".to_owned(),
        priority: Priority::High,
        opened_at: "2026-11-22T10:00:00Z".parse().expect("valid timestamp"),
    });
    let actions =
        Configurable::decide(&fixture(EventKind::PaymentFailed), &ctx).expect("valid config");
    assert!(actions.is_empty());
}

fn refund_config() -> Value {
    json!({
        "rules": {"refund_created": [
            {"channel": "email", "template": "refund-issued"},
            {"channel": "webhook", "template": "erp-refund"},
        ]},
        "refund_approval_threshold_minor": 5_000,
    })
}

#[test]
fn refund_messages_above_the_approval_threshold_are_held() {
    let actions = decide(&fixture(EventKind::RefundCreated), refund_config());
    assert_eq!(actions.len(), 2);
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::HoldForApproval { .. }))
    );
    assert_eq!(
        held_reason(&actions),
        Some("Refund of 59.00 EUR on order #1042 is above the 50.00 EUR approval threshold")
    );
    assert_eq!(messages(&actions)[0].data["refund_amount_minor"], "5900");
}

#[test]
fn refund_messages_at_or_below_the_threshold_are_sent() {
    let e = event(EventKind::RefundCreated)
        .attribute("refund_amount_minor", "5000")
        .build();
    let actions = decide(&e, refund_config());
    assert!(held_reason(&actions).is_none());
    assert_eq!(messages(&actions).len(), 2);
}

#[test]
fn refund_messages_without_a_readable_amount_are_held() {
    let e = event(EventKind::RefundCreated)
        .attribute("refund_amount_minor", "59,00")
        .build();
    let reason = held_reason(&decide(&e, refund_config())).map(str::to_owned);
    assert!(reason.is_some_and(|r| r.contains("no readable amount")));
}

#[test]
fn without_a_threshold_refund_messages_are_sent() {
    let config = one_rule(
        "refund_created",
        json!({"channel": "email", "template": "refund-issued"}),
    );
    let e = event(EventKind::RefundCreated)
        .attribute("refund_amount_minor", "9999999")
        .build();
    assert!(held_reason(&decide(&e, config)).is_none());
}

#[test]
fn the_documented_example_works_as_described() {
    let config = documented_example();
    assert!(decide(&fixture(EventKind::OrderCreated), config.clone()).len() == 1);

    let vip = event(EventKind::Delivered).customer_tag("vip").build();
    let actions = decide(&vip, config.clone());
    let templates: Vec<&str> = messages(&actions)
        .iter()
        .map(|n| n.template.as_str())
        .collect();
    assert_eq!(templates, ["feedback-request", "vip-thank-you"]);
    assert_eq!(messages(&actions)[0].data["coupon"], "THANKS10");

    let delayed = event(EventKind::DeliveryDelayed)
        .customer_tag("vip")
        .build();
    assert_eq!(escalations(&decide(&delayed, config.clone())).len(), 1);

    let big_refund = event(EventKind::RefundCreated)
        .attribute("refund_amount_minor", "60000")
        .build();
    let actions = decide(&big_refund, config);
    assert!(held_reason(&actions).is_some());
    assert_eq!(
        cancel_keys(&actions),
        ["feedback-request:ord_1042:delivered:email"]
    );
}

#[test]
fn handles_every_event_kind_because_the_config_decides() {
    assert_eq!(Configurable::handles(), EventKind::ALL.to_vec());
}

#[test]
fn config_schema_is_a_closed_draft_2020_12_schema() {
    let schema: Value =
        serde_json::from_str(&Configurable::config_schema()).expect("schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["$defs"]["rule"]["required"],
        json!(["channel", "template"])
    );
    assert_eq!(
        schema["$defs"]["escalation"]["required"],
        json!(["queue", "event_kinds"])
    );
    assert_eq!(
        schema["$defs"]["rule"]["properties"]["delay_seconds"]["maximum"],
        MAX_DELAY_SECONDS
    );
}

#[test]
fn an_unknown_field_is_rejected_by_name() {
    assert_rejects(json!({"rule": {}}), "rule");
    let message = assert_rejects(
        one_rule(
            "delivered",
            json!({"channel": "email", "template": "t", "delay": 60}),
        ),
        "rules.delivered[0].delay",
    );
    assert!(message.contains("unknown field `delay`"), "{message}");
    assert_rejects(
        escalation_config(json!({"queue": "q", "event_kinds": ["delivered"], "tags": ["vip"]})),
        "escalation.tags",
    );
}

#[test]
fn a_wrong_type_is_rejected_by_name() {
    assert_rejects(
        one_rule(
            "delivered",
            json!({"channel": "email", "template": "t", "delay_seconds": "3d"}),
        ),
        "rules.delivered[0].delay_seconds",
    );
    assert_rejects(
        one_rule(
            "delivered",
            json!({"channel": "email", "template": "t", "marketing": "yes"}),
        ),
        "rules.delivered[0].marketing",
    );
    assert_rejects(
        json!({"rules": {"delivered": {"channel": "email"}}}),
        "rules.delivered",
    );
    assert_rejects(
        json!({"refund_approval_threshold_minor": "500"}),
        "refund_approval_threshold_minor",
    );
    for not_an_object in [json!([]), json!(null), json!("rules")] {
        assert_rejects(not_an_object, ".");
    }
}

#[test]
fn an_unknown_event_kind_is_rejected_by_name_with_the_known_ones() {
    let message = assert_rejects(
        json!({"rules": {"order_shipped": []}}),
        "rules.order_shipped",
    );
    assert!(
        message.contains("unknown event kind `order_shipped`"),
        "{message}"
    );
    assert!(message.contains("`shipment_created`"), "{message}");
    assert_rejects(
        one_rule(
            "delivered",
            json!({"channel": "email", "template": "t", "cancel_on": ["refunded"]}),
        ),
        "rules.delivered[0].cancel_on[0]",
    );
    assert_rejects(
        escalation_config(json!({"queue": "q", "event_kinds": ["delivered", "late"]})),
        "escalation.event_kinds[1]",
    );
}

#[test]
fn an_unknown_channel_or_priority_is_rejected_by_name() {
    let message = assert_rejects(
        one_rule("delivered", json!({"channel": "fax", "template": "t"})),
        "rules.delivered[0].channel",
    );
    assert!(message.contains("unknown variant `fax`"), "{message}");
    assert_rejects(
        one_rule(
            "delivered",
            json!({"channel": "email", "template": "t", "fallback_channels": ["pigeon"]}),
        ),
        "rules.delivered[0].fallback_channels[0]",
    );
    assert_rejects(
        one_rule(
            "delivered",
            json!({"channel": "email", "template": "t", "priority": "asap"}),
        ),
        "rules.delivered[0].priority",
    );
}

#[test]
fn a_missing_required_field_is_rejected_by_name() {
    let message = assert_rejects(
        one_rule("delivered", json!({"channel": "email"})),
        "rules.delivered[0]",
    );
    assert!(message.contains("missing field `template`"), "{message}");
    let message = assert_rejects(
        one_rule("delivered", json!({"template": "t"})),
        "rules.delivered[0]",
    );
    assert!(message.contains("missing field `channel`"), "{message}");
    let message = assert_rejects(
        escalation_config(json!({"event_kinds": ["delivered"]})),
        "escalation",
    );
    assert!(message.contains("missing field `queue`"), "{message}");
    let message = assert_rejects(escalation_config(json!({"queue": "q"})), "escalation");
    assert!(message.contains("missing field `event_kinds`"), "{message}");
}

#[test]
fn values_serde_accepts_but_the_rules_do_not_are_rejected_by_name() {
    let rule = |extra: Value| {
        let mut rule = json!({"channel": "email", "template": "t"});
        if let (Some(rule), Some(extra)) = (rule.as_object_mut(), extra.as_object()) {
            rule.extend(extra.clone());
        }
        one_rule("delivered", rule)
    };
    assert_rejects(rule(json!({"template": ""})), "rules.delivered[0].template");
    assert_rejects(
        rule(json!({"template": "order confirmation"})),
        "rules.delivered[0].template",
    );
    assert_rejects(
        rule(json!({"delay_seconds": MAX_DELAY_SECONDS + 1})),
        "rules.delivered[0].delay_seconds",
    );
    assert_rejects(
        rule(json!({"min_order_total_minor": -1})),
        "rules.delivered[0].min_order_total_minor",
    );
    assert_rejects(
        rule(json!({"required_tag": " "})),
        "rules.delivered[0].required_tag",
    );
    assert_rejects(
        rule(json!({"fallback_channels": ["email"]})),
        "rules.delivered[0].fallback_channels[0]",
    );
    assert_rejects(
        rule(json!({"fallback_channels": ["sms", "sms"]})),
        "rules.delivered[0].fallback_channels[1]",
    );
    assert_rejects(
        rule(json!({"cancel_on": ["delivered"]})),
        "rules.delivered[0].cancel_on[0]",
    );
    assert_rejects(
        json!({"refund_approval_threshold_minor": -1}),
        "refund_approval_threshold_minor",
    );

    let escalation = |extra: Value| {
        let mut escalation = json!({"queue": "q", "event_kinds": ["delivered"]});
        if let (Some(escalation), Some(extra)) = (escalation.as_object_mut(), extra.as_object()) {
            escalation.extend(extra.clone());
        }
        escalation_config(escalation)
    };
    assert_rejects(escalation(json!({"queue": ""})), "escalation.queue");
    assert_rejects(
        escalation(json!({"event_kinds": []})),
        "escalation.event_kinds",
    );
    assert_rejects(
        escalation(json!({"total_above_minor": -1})),
        "escalation.total_above_minor",
    );
    assert_rejects(
        escalation(json!({"customer_tags": ["vip", ""]})),
        "escalation.customer_tags[1]",
    );
    assert_rejects(
        escalation(json!({"sla_minutes": 0})),
        "escalation.sla_minutes",
    );
    assert_rejects(
        escalation(json!({"sla_minutes": MAX_SLA_MINUTES + 1})),
        "escalation.sla_minutes",
    );
}

#[test]
fn rules_that_could_exceed_the_host_action_limit_are_rejected() {
    let rules: Vec<Value> = (0..=MAX_ACTIONS)
        .map(|i| json!({"channel": "email", "template": format!("t{i}")}))
        .collect();
    let message = assert_rejects(json!({"rules": {"delivered": rules}}), "rules.delivered");
    assert!(message.contains("33 actions"), "{message}");

    let rules: Vec<Value> = (0..MAX_ACTIONS)
        .map(|i| json!({"channel": "email", "template": format!("t{i}")}))
        .collect();
    let config = json!({"rules": {"delivered": rules}});
    assert_eq!(
        decide(&fixture(EventKind::Delivered), config.clone()).len(),
        MAX_ACTIONS
    );

    let mut with_escalation = config;
    with_escalation["escalation"] = json!({"queue": "q", "event_kinds": ["delivered"]});
    assert_rejects(with_escalation, "rules.delivered");
}

#[test]
fn money_is_formatted_with_the_currency_decimals() {
    assert_eq!(format_money(&Money::new(45_000, "EUR")), "450.00 EUR");
    assert_eq!(format_money(&Money::new(45_000, "JPY")), "45000 JPY");
    assert_eq!(format_money(&Money::new(1_500, "BHD")), "1.500 BHD");
}
