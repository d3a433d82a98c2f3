use serde_json::json;
use tidings_sdk::action::Escalate;
use tidings_sdk::testing::{context, event, fixture};
use tidings_sdk::types::OpenEscalation;

use super::*;

fn decide(event: &OrderEvent) -> Vec<Action> {
    decide_with(event, &context().build())
}

fn decide_with(event: &OrderEvent, ctx: &Context) -> Vec<Action> {
    VipConcierge::decide(event, ctx).expect("the rule accepts this event")
}

/// The single customer message among `actions`, sent or held.
fn message(actions: &[Action]) -> Notify {
    let found: Vec<&Notify> = actions.iter().filter_map(Action::message).collect();
    assert_eq!(found.len(), 1, "one message in {actions:#?}");
    found[0].clone()
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

/// The reason the message is held for approval, if it is.
fn held_reason(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|a| match a {
        Action::HoldForApproval { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

fn with_open_ticket(queue: &str) -> Context {
    // `ContextBuilder` cannot add open escalations, so set the field.
    let mut ctx = context().build();
    ctx.open_escalations.push(OpenEscalation {
        queue: queue.to_owned(),
        priority: Priority::High,
        opened_at: "2026-11-22T10:00:00Z".parse().expect("valid timestamp"),
    });
    ctx
}

fn vip(kind: EventKind) -> OrderEvent {
    event(kind).customer_tag("vip").build()
}

fn config_error(config: serde_json::Value) -> RuleError {
    let ctx = context().config(config).build();
    VipConcierge::decide(&fixture(EventKind::OrderCreated), &ctx)
        .expect_err("the config is invalid")
}

#[test]
fn regular_customers_are_emailed_at_normal_priority() {
    let actions = decide(&fixture(EventKind::OrderCreated));
    assert_eq!(actions.len(), 1);
    let n = message(&actions);
    assert_eq!(n.template, "order-confirmation");
    assert_eq!(n.channel, Channel::Email);
    assert!(n.fallback_channels.is_empty());
    assert_eq!(n.priority, Priority::Normal);
    assert_eq!(n.data["vip"], "false");
    assert_eq!(n.dedupe_key.as_deref(), Some("order-confirmation:ord_1042"));
}

#[test]
fn vips_are_messaged_on_whatsapp_first_with_email_as_fallback() {
    let n = message(&decide(&vip(EventKind::ShipmentCreated)));
    assert_eq!(n.template, "order-shipped");
    assert_eq!(n.channel, Channel::Whatsapp);
    assert_eq!(n.fallback_channels, [Channel::Email]);
    assert_eq!(n.priority, Priority::High);
    assert_eq!(n.data["vip"], "true");
}

#[test]
fn an_order_above_the_vip_threshold_is_vip_whoever_placed_it() {
    let e = event(EventKind::ShipmentCreated)
        .total(50_001, "EUR")
        .build();
    assert_eq!(message(&decide(&e)).channel, Channel::Whatsapp);
    let at_threshold = event(EventKind::ShipmentCreated)
        .total(50_000, "EUR")
        .build();
    assert_eq!(message(&decide(&at_threshold)).channel, Channel::Email);
}

#[test]
fn vips_without_a_phone_number_are_emailed() {
    let e = event(EventKind::ShipmentCreated)
        .customer_tag("vip")
        .without_phone()
        .build();
    let n = message(&decide(&e));
    assert_eq!(n.channel, Channel::Email);
    assert_eq!(n.priority, Priority::High);
}

#[test]
fn vips_who_opted_out_of_whatsapp_are_emailed() {
    let e = event(EventKind::ShipmentCreated)
        .customer_tag("vip")
        .opt_outs(&[Channel::Whatsapp])
        .build();
    assert_eq!(message(&decide(&e)).channel, Channel::Email);
}

#[test]
fn whatsapp_can_be_switched_off_in_config() {
    let ctx = context().config(json!({"whatsapp": false})).build();
    let n = message(&decide_with(&vip(EventKind::ShipmentCreated), &ctx));
    assert_eq!(n.channel, Channel::Email);
}

#[test]
fn vip_tag_and_threshold_come_from_config() {
    let ctx = context()
        .config(json!({"vip_tag": "gold", "vip_threshold_minor": 10_000}))
        .build();
    let gold = event(EventKind::ShipmentCreated)
        .total(100, "EUR")
        .customer_tag("Gold")
        .build();
    assert_eq!(
        message(&decide_with(&gold, &ctx)).channel,
        Channel::Whatsapp
    );
    let rich = event(EventKind::ShipmentCreated)
        .total(10_001, "EUR")
        .build();
    assert_eq!(
        message(&decide_with(&rich, &ctx)).channel,
        Channel::Whatsapp
    );
    let tagged_vip = event(EventKind::ShipmentCreated)
        .total(100, "EUR")
        .customer_tag("vip")
        .build();
    assert_eq!(
        message(&decide_with(&tagged_vip, &ctx)).channel,
        Channel::Email
    );
}

#[test]
fn shipping_messages_carry_tracking_details() {
    let n = message(&decide(&fixture(EventKind::ShipmentCreated)));
    assert_eq!(n.data["shipment_id"], "ful_5501");
    assert_eq!(n.data["carrier"], "BRT");
    assert_eq!(n.data["tracking_number"], "BRT123456789IT");
    assert_eq!(
        n.data["tracking_url"],
        "https://tracking.example.com/BRT123456789IT"
    );
    assert_eq!(n.data["eta"], "2026-11-26T18:00:00Z");
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("order-shipped:ord_1042:ful_5501")
    );
}

#[test]
fn event_attributes_reach_the_template_but_order_attributes_do_not() {
    let n = message(&decide(&fixture(EventKind::ReturnApproved)));
    assert_eq!(
        n.data["return_label_url"],
        "https://returns.example.com/label/R-88"
    );
    assert_eq!(n.data["return_skus"], "LAMP-OAK");
    assert!(!n.data.contains_key("risk_level"));
}

#[test]
fn time_critical_messages_are_high_priority_for_everyone() {
    for kind in [EventKind::PaymentFailed, EventKind::DeliveryAttemptFailed] {
        assert_eq!(
            message(&decide(&fixture(kind))).priority,
            Priority::High,
            "{kind}"
        );
    }
}

#[test]
fn order_preparing_is_announced_to_vips_only() {
    assert!(decide(&fixture(EventKind::OrderPreparing)).is_empty());
    let n = message(&decide(&vip(EventKind::OrderPreparing)));
    assert_eq!(n.template, "order-preparing");
    assert_eq!(n.channel, Channel::Whatsapp);
}

#[test]
fn high_risk_orders_open_an_urgent_risk_review_ticket_with_its_sla() {
    let e = event(EventKind::OrderCreated)
        .order_attribute("risk_level", "High")
        .build();
    let actions = decide(&e);
    assert_eq!(message(&actions).template, "order-confirmation");
    let tickets = escalations(&actions);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].queue, "risk-review");
    assert_eq!(tickets[0].priority, Priority::Urgent);
    assert_eq!(tickets[0].sla_minutes, Some(60));
    assert!(tickets[0].reason.contains("#1042"), "{}", tickets[0].reason);
    assert!(
        tickets[0].reason.contains("135.00 EUR"),
        "{}",
        tickets[0].reason
    );
}

#[test]
fn low_risk_orders_open_no_ticket() {
    assert!(escalations(&decide(&fixture(EventKind::OrderCreated))).is_empty());
}

#[test]
fn risk_queue_and_sla_come_from_config() {
    let e = event(EventKind::OrderCreated)
        .order_attribute("risk_level", "high")
        .build();
    let ctx = context()
        .config(json!({"risk_queue": "fraud", "risk_sla_minutes": 15}))
        .build();
    let actions = decide_with(&e, &ctx);
    let tickets = escalations(&actions);
    assert_eq!(tickets[0].queue, "fraud");
    assert_eq!(tickets[0].sla_minutes, Some(15));
}

#[test]
fn a_vip_delay_opens_a_high_priority_ticket_with_the_sla() {
    let actions = decide(&vip(EventKind::DeliveryDelayed));
    let n = message(&actions);
    assert_eq!(n.template, "delivery-delayed");
    assert_eq!(n.data["delay_reason"], "weather");
    let tickets = escalations(&actions);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].queue, "vip-care");
    assert_eq!(tickets[0].priority, Priority::High);
    assert_eq!(tickets[0].sla_minutes, Some(30));
    assert!(
        tickets[0].reason.contains("new ETA 2026-11-29T18:00:00Z"),
        "{}",
        tickets[0].reason
    );
    assert!(
        tickets[0].reason.contains("weather"),
        "{}",
        tickets[0].reason
    );
}

#[test]
fn a_vip_failed_delivery_attempt_opens_a_ticket() {
    let actions = decide(&vip(EventKind::DeliveryAttemptFailed));
    let tickets = escalations(&actions);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].queue, "vip-care");
    assert!(
        tickets[0]
            .reason
            .contains("next attempt 2026-11-25T09:00:00Z"),
        "{}",
        tickets[0].reason
    );
}

#[test]
fn delivery_problems_of_regular_customers_open_no_ticket() {
    for kind in [EventKind::DeliveryDelayed, EventKind::DeliveryAttemptFailed] {
        let actions = decide(&fixture(kind));
        assert_eq!(actions.len(), 1, "{kind}");
        assert!(escalations(&actions).is_empty(), "{kind}");
    }
}

#[test]
fn escalations_of_orders_above_the_urgent_threshold_are_urgent() {
    let e = event(EventKind::DeliveryDelayed)
        .total(250_000, "EUR")
        .build();
    let actions = decide(&e);
    assert_eq!(escalations(&actions)[0].priority, Priority::Urgent);
}

#[test]
fn vip_queue_and_sla_come_from_config() {
    let ctx = context()
        .config(json!({"queue": "concierge", "sla_minutes": 10}))
        .build();
    let actions = decide_with(&vip(EventKind::DeliveryDelayed), &ctx);
    let tickets = escalations(&actions);
    assert_eq!(tickets[0].queue, "concierge");
    assert_eq!(tickets[0].sla_minutes, Some(10));
}

#[test]
fn no_second_ticket_is_opened_while_one_is_open_in_that_queue() {
    let actions = decide_with(
        &vip(EventKind::DeliveryDelayed),
        &with_open_ticket("vip-care"),
    );
    assert!(escalations(&actions).is_empty());
    assert_eq!(message(&actions).template, "delivery-delayed");

    let actions = decide_with(
        &vip(EventKind::DeliveryDelayed),
        &with_open_ticket("risk-review"),
    );
    assert_eq!(escalations(&actions).len(), 1);
}

#[test]
fn a_small_refund_is_notified_directly_with_its_amount() {
    let actions = decide(&fixture(EventKind::RefundCreated));
    assert!(held_reason(&actions).is_none());
    let n = message(&actions);
    assert_eq!(n.template, "refund-issued");
    assert_eq!(n.data["refund_amount_minor"], "5900");
    assert_eq!(n.data["refund_currency"], "EUR");
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("refund-issued:ord_1042:ful_5501:5900EUR")
    );
}

#[test]
fn a_refund_above_the_threshold_is_held_for_approval() {
    let e = event(EventKind::RefundCreated)
        .attribute("refund_amount_minor", "30000")
        .build();
    let actions = decide(&e);
    assert!(matches!(actions[..], [Action::HoldForApproval { .. }]));
    let reason = held_reason(&actions).expect("held");
    assert!(
        reason.contains("300.00 EUR") && reason.contains("250.00 EUR"),
        "{reason}"
    );
    assert_eq!(message(&actions).template, "refund-issued");
}

#[test]
fn a_refund_equal_to_the_threshold_is_notified_directly() {
    let e = event(EventKind::RefundCreated)
        .attribute("refund_amount_minor", "25000")
        .build();
    assert!(held_reason(&decide(&e)).is_none());
}

#[test]
fn a_held_vip_refund_keeps_the_whatsapp_channel_and_fallback() {
    let e = event(EventKind::RefundCreated)
        .customer_tag("vip")
        .attribute("refund_amount_minor", "90000")
        .build();
    let actions = decide(&e);
    assert!(held_reason(&actions).is_some());
    let n = message(&actions);
    assert_eq!(n.channel, Channel::Whatsapp);
    assert_eq!(n.fallback_channels, [Channel::Email]);
}

#[test]
fn a_refund_without_a_readable_amount_is_held() {
    for amount in [None, Some("lots")] {
        let e = event(EventKind::RefundCreated)
            .map(|e| match amount {
                Some(text) => {
                    e.attributes
                        .insert("refund_amount_minor".to_owned(), text.to_owned());
                }
                None => {
                    e.attributes.remove("refund_amount_minor");
                }
            })
            .build();
        let actions = decide(&e);
        let reason = held_reason(&actions).expect("held");
        assert!(reason.contains("no readable amount"), "{reason}");
    }
}

#[test]
fn a_refund_on_a_high_risk_order_is_held_whatever_the_amount() {
    let e = event(EventKind::RefundCreated)
        .order_attribute("risk_level", "high")
        .build();
    let reason = held_reason(&decide(&e)).map(str::to_owned).expect("held");
    assert!(reason.contains("high-risk"), "{reason}");
}

#[test]
fn refund_approval_threshold_comes_from_config() {
    let ctx = context()
        .config(json!({"refund_approval_threshold_minor": 5_000}))
        .build();
    assert!(held_reason(&decide_with(&fixture(EventKind::RefundCreated), &ctx)).is_some());
}

#[test]
fn a_second_delay_with_a_new_eta_is_a_new_message_but_a_repeat_is_not() {
    let key = |e: &OrderEvent| message(&decide(e)).dedupe_key;
    let first = fixture(EventKind::DeliveryDelayed);
    let repeat = event(EventKind::DeliveryDelayed).id("evt_again").build();
    let later = event(EventKind::DeliveryDelayed)
        .map(|e| {
            if let Some(s) = e.shipment.as_mut() {
                s.eta = Some("2026-12-02T18:00:00Z".parse().expect("valid timestamp"));
            }
        })
        .build();
    assert_eq!(key(&first), key(&repeat));
    assert_ne!(key(&first), key(&later));
}

#[test]
fn order_paid_and_in_transit_send_nothing_and_are_not_handled() {
    for kind in [EventKind::OrderPaid, EventKind::ShipmentInTransit] {
        assert!(decide(&vip(kind)).is_empty(), "{kind}");
        assert!(!VipConcierge::handles().contains(&kind), "{kind}");
    }
}

#[test]
fn every_handled_kind_messages_a_vip_with_a_deduped_listed_template() {
    for kind in VipConcierge::handles() {
        let n = message(&decide(&vip(kind)));
        assert!(
            TEMPLATES.contains(&n.template.as_str()),
            "{kind}: {}",
            n.template
        );
        let key = n.dedupe_key.unwrap_or_default();
        assert!(
            key.starts_with(&format!("{}:ord_1042", n.template)),
            "{kind}: {key}"
        );
    }
}

#[test]
fn every_template_is_kebab_case_and_documented() {
    let docs = include_str!("lib.rs");
    for template in TEMPLATES {
        assert!(
            template.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{template}"
        );
        assert!(
            docs.contains(&format!("`{template}`")),
            "{template} is not documented"
        );
    }
}

#[test]
fn an_empty_config_means_the_defaults() {
    let ctx = context().config(json!({})).build();
    assert_eq!(Config::from_context(&ctx), Ok(Config::default()));
}

#[test]
fn unknown_or_mistyped_config_fields_are_invalid_config_naming_them() {
    for (config, field) in [
        (json!({"sla": 30}), "sla"),
        (json!({"sla_minutes": "soon"}), "sla_minutes"),
        (json!({"whatsapp": 1}), "whatsapp"),
        (
            json!({"refund_approval_threshold_minor": 12.5}),
            "refund_approval_threshold_minor",
        ),
    ] {
        let err = config_error(config);
        assert_eq!(err.code, "invalid-config");
        assert!(
            err.message.contains(&format!("`{field}`")),
            "{}",
            err.message
        );
    }
}

#[test]
fn out_of_range_config_values_are_invalid_config_naming_the_field() {
    for (config, field) in [
        (json!({"vip_threshold_minor": -1}), "vip_threshold_minor"),
        (
            json!({"urgent_threshold_minor": -1}),
            "urgent_threshold_minor",
        ),
        (
            json!({"refund_approval_threshold_minor": -5}),
            "refund_approval_threshold_minor",
        ),
        (json!({"queue": ""}), "queue"),
        (json!({"risk_queue": " "}), "risk_queue"),
        (json!({"vip_tag": ""}), "vip_tag"),
        (json!({"sla_minutes": 0}), "sla_minutes"),
        (json!({"risk_sla_minutes": 10_081}), "risk_sla_minutes"),
    ] {
        let err = config_error(config);
        assert_eq!(err.code, "invalid-config");
        assert!(
            err.message.contains(&format!("`{field}`")),
            "{}",
            err.message
        );
    }
}

#[test]
fn config_schema_is_a_closed_object_whose_defaults_are_the_config_defaults() {
    let schema: serde_json::Value =
        serde_json::from_str(&VipConcierge::config_schema()).expect("schema is JSON");
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);
    let defaults: serde_json::Map<String, serde_json::Value> = schema["properties"]
        .as_object()
        .expect("properties")
        .iter()
        .map(|(field, spec)| (field.clone(), spec["default"].clone()))
        .collect();
    let ctx = context()
        .config(serde_json::Value::Object(defaults))
        .build();
    assert_eq!(Config::from_context(&ctx), Ok(Config::default()));
}

#[test]
fn money_is_formatted_with_the_currency_decimals() {
    assert_eq!(format_money(&Money::new(45_000, "EUR")), "450.00 EUR");
    assert_eq!(format_money(&Money::new(45_000, "JPY")), "45000 JPY");
    assert_eq!(format_money(&Money::new(-7, "USD")), "-0.07 USD");
}

#[test]
fn a_config_that_is_not_an_object_is_invalid_config() {
    for config in [json!([]), json!(null), json!(true)] {
        let err = config_error(config);
        assert_eq!(err.code, "invalid-config");
        assert!(err.message.contains("config field `.`"), "{}", err.message);
    }
}
