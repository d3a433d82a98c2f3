use serde_json::json;
use tidings_sdk::action::{Escalate, Timing};
use tidings_sdk::testing::{context, event, fixture};
use tidings_sdk::types::OpenEscalation;

use super::*;

fn decide(event: &OrderEvent) -> Vec<Action> {
    decide_with(event, &context().build())
}

fn decide_with(event: &OrderEvent, ctx: &Context) -> Vec<Action> {
    StandardLifecycle::decide(event, ctx).expect("the rule accepts this event")
}

fn notifications(actions: &[Action]) -> Vec<&Notify> {
    actions.iter().filter_map(Action::message).collect()
}

fn templates(actions: &[Action]) -> Vec<&str> {
    notifications(actions)
        .into_iter()
        .map(|n| n.template.as_str())
        .collect()
}

fn only_message(actions: &[Action], template: &str) -> Notify {
    let found: Vec<&Notify> = notifications(actions)
        .into_iter()
        .filter(|n| n.template == template)
        .collect();
    assert_eq!(found.len(), 1, "one `{template}` in {actions:#?}");
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

fn at(text: &str) -> Timestamp {
    text.parse().expect("valid timestamp")
}

fn config_error(config: serde_json::Value) -> RuleError {
    let ctx = context().config(config).build();
    StandardLifecycle::decide(&fixture(EventKind::OrderCreated), &ctx)
        .expect_err("the config is invalid")
}

#[test]
fn order_created_sends_one_confirmation_email_deduped_per_order() {
    let actions = decide(&fixture(EventKind::OrderCreated));
    assert_eq!(actions.len(), 1);
    let n = only_message(&actions, "order-confirmation");
    assert_eq!(n.channel, Channel::Email);
    assert_eq!(n.category, Category::Transactional);
    assert_eq!(n.timing, Timing::Now);
    assert_eq!(n.dedupe_key.as_deref(), Some("order-confirmation:ord_1042"));
}

#[test]
fn order_awaiting_payment_gets_instructions_and_a_cancellable_reminder() {
    let e = event(EventKind::OrderCreated)
        .order_attribute("payment_status", "Pending")
        .order_attribute("payment_method", "bank_transfer")
        .build();
    let actions = decide(&e);
    assert_eq!(
        templates(&actions),
        ["order-awaiting-payment", "payment-reminder"]
    );
    let instructions = only_message(&actions, "order-awaiting-payment");
    assert_eq!(instructions.data["payment_method"], "bank_transfer");
    let reminder = only_message(&actions, "payment-reminder");
    assert_eq!(
        reminder.timing,
        Timing::After {
            seconds: 48 * 3_600
        }
    );
    assert_eq!(
        reminder.cancel_key.as_deref(),
        Some("payment-reminder:ord_1042")
    );
}

#[test]
fn order_paid_after_awaiting_payment_confirms_payment_and_cancels_the_reminder() {
    let ctx = context()
        .sent(
            "order-awaiting-payment",
            Channel::Email,
            at("2026-11-20T09:15:01Z"),
        )
        .build();
    let actions = decide_with(&fixture(EventKind::OrderPaid), &ctx);
    assert_eq!(templates(&actions), ["payment-received"]);
    assert_eq!(cancel_keys(&actions), ["payment-reminder:ord_1042"]);
}

#[test]
fn order_paid_adds_nothing_when_payment_was_captured_at_checkout() {
    let ctx = context()
        .sent(
            "order-confirmation",
            Channel::Email,
            at("2026-11-20T09:15:01Z"),
        )
        .build();
    let actions = decide_with(&fixture(EventKind::OrderPaid), &ctx);
    assert!(templates(&actions).is_empty(), "{actions:#?}");
}

#[test]
fn order_paid_without_any_confirmation_yet_sends_the_confirmation_under_the_same_key() {
    let paid = decide(&fixture(EventKind::OrderPaid));
    let created = decide(&fixture(EventKind::OrderCreated));
    assert_eq!(
        only_message(&paid, "order-confirmation").dedupe_key,
        only_message(&created, "order-confirmation").dedupe_key
    );
}

#[test]
fn payment_failed_is_a_high_priority_notice_with_the_reason() {
    let e = event(EventKind::PaymentFailed)
        .attribute("retry_url", "https://shop.example.com/pay/1042")
        .build();
    let n = only_message(&decide(&e), "payment-failed");
    assert_eq!(n.priority, Priority::High);
    assert_eq!(n.data["reason"], "card_declined");
    assert_eq!(n.data["retry_url"], "https://shop.example.com/pay/1042");
}

#[test]
fn shipment_created_passes_tracking_url_number_and_carrier() {
    let actions = decide(&fixture(EventKind::ShipmentCreated));
    let n = only_message(&actions, "order-shipped");
    assert_eq!(n.channel, Channel::Email);
    assert_eq!(
        n.data["tracking_url"],
        "https://tracking.example.com/BRT123456789IT"
    );
    assert_eq!(n.data["tracking_number"], "BRT123456789IT");
    assert_eq!(n.data["carrier"], "BRT");
    assert_eq!(n.data["eta"], "2026-11-26T18:00:00Z");
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("order-shipped:ord_1042:ful_5501")
    );
}

#[test]
fn shipment_without_a_tracking_link_is_announced_without_one() {
    let e = event(EventKind::ShipmentCreated)
        .map(|e| {
            if let Some(s) = e.shipment.as_mut() {
                s.tracking_url = None;
                s.tracking_number = None;
            }
        })
        .build();
    let n = only_message(&decide(&e), "order-shipped");
    assert!(!n.data.contains_key("tracking_url"));
    assert_eq!(n.data["carrier"], "BRT");
}

#[test]
fn partial_shipment_lists_what_shipped_and_what_is_still_to_come() {
    let n = only_message(
        &decide(&fixture(EventKind::PartiallyShipped)),
        "order-partially-shipped",
    );
    assert_eq!(
        n.data["shipped_items"],
        "Organic cotton T-shirt (M), Stoneware mug"
    );
    assert_eq!(n.data["pending_items"], "Oak desk lamp");
    assert_eq!(n.data["tracking_number"], "BRT123456789IT");
}

#[test]
fn shipment_created_while_lines_are_pending_is_the_same_partial_notice() {
    let partial = fixture(EventKind::PartiallyShipped);
    let created = event(EventKind::ShipmentCreated)
        .map(|e| {
            e.order = partial.order.clone();
            e.shipment = partial.shipment.clone();
        })
        .build();
    assert_eq!(decide(&created), decide(&partial));
}

#[test]
fn out_for_delivery_goes_by_sms_with_email_fallback_when_the_customer_consents() {
    let e = event(EventKind::OutForDelivery)
        .consents(&[Channel::Email, Channel::Sms])
        .build();
    let n = only_message(&decide(&e), "out-for-delivery");
    assert_eq!(n.channel, Channel::Sms);
    assert_eq!(n.fallback_channels, [Channel::Email]);
    assert_eq!(n.category, Category::Transactional);
    assert_eq!(
        n.data["tracking_url"],
        "https://tracking.example.com/BRT123456789IT"
    );
}

#[test]
fn out_for_delivery_goes_by_email_without_sms_consent() {
    let n = only_message(
        &decide(&fixture(EventKind::OutForDelivery)),
        "out-for-delivery",
    );
    assert_eq!(n.channel, Channel::Email);
    assert!(n.fallback_channels.is_empty());
}

#[test]
fn out_for_delivery_goes_by_email_when_sms_is_disabled_in_config() {
    let e = event(EventKind::OutForDelivery)
        .consents(&[Channel::Sms])
        .build();
    let ctx = context().config(json!({"sms": false})).build();
    let n = only_message(&decide_with(&e, &ctx), "out-for-delivery");
    assert_eq!(n.channel, Channel::Email);
}

#[test]
fn out_for_delivery_goes_by_email_when_the_host_has_no_phone_number() {
    let e = event(EventKind::OutForDelivery)
        .consents(&[Channel::Sms])
        .without_phone()
        .build();
    let n = only_message(&decide(&e), "out-for-delivery");
    assert_eq!(n.channel, Channel::Email);
}

#[test]
fn delivered_cancels_the_delay_followup_and_schedules_a_marketing_feedback_request() {
    let actions = decide(&fixture(EventKind::Delivered));
    assert_eq!(templates(&actions), ["order-delivered", "feedback-request"]);
    assert_eq!(cancel_keys(&actions), ["delay-followup:ord_1042:ful_5501"]);
    let feedback = only_message(&actions, "feedback-request");
    assert_eq!(feedback.channel, Channel::Email);
    assert_eq!(feedback.category, Category::Marketing);
    assert_eq!(
        feedback.timing,
        Timing::After {
            seconds: 3 * 86_400
        }
    );
    assert_eq!(feedback.cancel_key.as_deref(), Some("feedback:ord_1042"));
    assert_eq!(
        feedback.dedupe_key.as_deref(),
        Some("feedback-request:ord_1042")
    );
}

#[test]
fn feedback_delay_comes_from_config() {
    let ctx = context().config(json!({"feedback_delay_days": 7})).build();
    let actions = decide_with(&fixture(EventKind::Delivered), &ctx);
    assert_eq!(
        only_message(&actions, "feedback-request").timing,
        Timing::After {
            seconds: 7 * 86_400
        }
    );
}

#[test]
fn first_parcel_of_a_split_order_is_not_asked_for_feedback_yet() {
    let e = event(EventKind::Delivered)
        .map(|e| {
            if let Some(lamp) = e.order.items.iter_mut().find(|l| l.sku == "LAMP-OAK") {
                lamp.status = LineStatus::Pending;
            }
        })
        .build();
    assert_eq!(templates(&decide(&e)), ["order-delivered"]);
}

#[test]
fn parcel_delivered_while_another_is_in_transit_is_not_asked_for_feedback_yet() {
    let e = event(EventKind::Delivered)
        .map(|e| {
            let mut second = e.order.shipments[0].clone();
            second.id = "ful_5502".to_owned();
            second.status = ShipmentStatus::InTransit;
            e.order.shipments.push(second);
        })
        .build();
    assert_eq!(templates(&decide(&e)), ["order-delivered"]);
}

#[test]
fn delivery_delayed_apologises_and_schedules_a_cancellable_followup() {
    let actions = decide(&fixture(EventKind::DeliveryDelayed));
    assert_eq!(templates(&actions), ["delivery-delayed", "delay-followup"]);
    let apology = only_message(&actions, "delivery-delayed");
    assert_eq!(apology.priority, Priority::Normal);
    assert_eq!(apology.data["eta"], "2026-11-29T18:00:00Z");
    assert_eq!(apology.data["previous_eta"], "2026-11-26T18:00:00Z");
    assert_eq!(apology.data["delay_reason"], "weather");
    let followup = only_message(&actions, "delay-followup");
    assert_eq!(
        followup.cancel_key.as_deref(),
        Some("delay-followup:ord_1042:ful_5501")
    );
    assert!(escalations(&actions).is_empty());
}

#[test]
fn delay_followup_is_due_a_day_after_the_new_eta() {
    // now 2026-11-23T10:00Z, new ETA 2026-11-29T18:00Z: 152 hours, plus 24.
    let actions = decide(&fixture(EventKind::DeliveryDelayed));
    assert_eq!(
        only_message(&actions, "delay-followup").timing,
        Timing::After {
            seconds: 176 * 3_600
        }
    );
}

#[test]
fn delay_followup_without_an_eta_is_due_in_three_days() {
    let e = event(EventKind::DeliveryDelayed)
        .map(|e| {
            if let Some(s) = e.shipment.as_mut() {
                s.eta = None;
            }
        })
        .build();
    assert_eq!(
        only_message(&decide(&e), "delay-followup").timing,
        Timing::After {
            seconds: 72 * 3_600
        }
    );
}

#[test]
fn delay_followup_for_an_eta_already_passed_is_due_in_a_day() {
    let ctx = context().now(at("2026-12-20T10:00:00Z")).build();
    let actions = decide_with(&fixture(EventKind::DeliveryDelayed), &ctx);
    assert_eq!(
        only_message(&actions, "delay-followup").timing,
        Timing::After {
            seconds: 24 * 3_600
        }
    );
}

#[test]
fn delivered_cancels_exactly_the_followup_the_delay_scheduled() {
    let delayed = decide(&fixture(EventKind::DeliveryDelayed));
    let delivered = decide(&fixture(EventKind::Delivered));
    assert_eq!(
        only_message(&delayed, "delay-followup")
            .cancel_key
            .as_deref(),
        cancel_keys(&delivered).first().copied()
    );
}

#[test]
fn delivery_delayed_escalates_orders_above_the_vip_threshold() {
    let e = event(EventKind::DeliveryDelayed)
        .total(45_000, "EUR")
        .build();
    let actions = decide(&e);
    let tickets = escalations(&actions);
    assert_eq!(tickets.len(), 1);
    assert_eq!(tickets[0].queue, "vip-care");
    assert_eq!(tickets[0].priority, Priority::High);
    assert!(
        tickets[0].reason.contains("450.00 EUR is above 200.00 EUR"),
        "{}",
        tickets[0].reason
    );
    assert!(tickets[0].reason.contains("#1042"));
    assert_eq!(
        only_message(&actions, "delivery-delayed").priority,
        Priority::High
    );
}

#[test]
fn an_order_total_equal_to_the_threshold_is_not_vip() {
    let e = event(EventKind::DeliveryDelayed)
        .total(20_000, "EUR")
        .build();
    assert!(escalations(&decide(&e)).is_empty());
}

#[test]
fn delivery_delayed_escalates_customers_tagged_vip_whatever_the_total() {
    let e = event(EventKind::DeliveryDelayed)
        .total(1_000, "EUR")
        .customer_tag("VIP")
        .build();
    let actions = decide(&e);
    let tickets = escalations(&actions);
    assert_eq!(tickets.len(), 1);
    assert!(tickets[0].reason.contains("customer tagged `vip`"));
}

#[test]
fn vip_threshold_and_tag_come_from_config() {
    let ctx = context()
        .config(json!({"vip_threshold_minor": 10_000, "vip_tag": "gold"}))
        .build();
    let rich = event(EventKind::DeliveryDelayed)
        .total(12_000, "EUR")
        .build();
    assert_eq!(escalations(&decide_with(&rich, &ctx)).len(), 1);
    let gold = event(EventKind::DeliveryDelayed)
        .total(100, "EUR")
        .customer_tag("gold")
        .build();
    assert_eq!(escalations(&decide_with(&gold, &ctx)).len(), 1);
    let vip = event(EventKind::DeliveryDelayed)
        .total(100, "EUR")
        .customer_tag("vip")
        .build();
    assert!(escalations(&decide_with(&vip, &ctx)).is_empty());
}

#[test]
fn delivery_delayed_does_not_open_a_second_ticket_while_one_is_open() {
    let e = event(EventKind::DeliveryDelayed)
        .customer_tag("vip")
        .build();
    // `ContextBuilder` cannot add open escalations, so set the field.
    let mut ctx = context().build();
    ctx.open_escalations.push(OpenEscalation {
        queue: "vip-care".to_owned(),
        priority: Priority::High,
        opened_at: at("2026-11-22T10:00:00Z"),
    });
    let actions = decide_with(&e, &ctx);
    assert!(escalations(&actions).is_empty());
    assert_eq!(templates(&actions), ["delivery-delayed", "delay-followup"]);
}

#[test]
fn a_new_eta_is_a_new_delay_notice_but_a_repeated_one_is_not() {
    let first = decide(&fixture(EventKind::DeliveryDelayed));
    let repeat = decide(&event(EventKind::DeliveryDelayed).id("evt_other").build());
    let later = decide(
        &event(EventKind::DeliveryDelayed)
            .map(|e| {
                if let Some(s) = e.shipment.as_mut() {
                    s.eta = Some(at("2026-12-02T18:00:00Z"));
                }
            })
            .build(),
    );
    let key = |actions: &[Action]| only_message(actions, "delivery-delayed").dedupe_key;
    assert_eq!(key(&first), key(&repeat));
    assert_ne!(key(&first), key(&later));
    assert_eq!(
        key(&first).as_deref(),
        Some("delivery-delayed:ord_1042:ful_5501:2026-11-29T18:00:00Z")
    );
    // One follow-up per parcel, however often it is delayed.
    let followup = |actions: &[Action]| only_message(actions, "delay-followup").dedupe_key;
    assert_eq!(followup(&first), followup(&later));
}

#[test]
fn delivery_attempt_failed_says_when_the_next_attempt_is() {
    let actions = decide(&fixture(EventKind::DeliveryAttemptFailed));
    let n = only_message(&actions, "delivery-attempt-failed");
    assert_eq!(n.priority, Priority::High);
    assert_eq!(n.data["next_attempt"], "2026-11-25T09:00:00Z");
    assert_eq!(
        n.data["tracking_url"],
        "https://tracking.example.com/BRT123456789IT"
    );
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("delivery-attempt-failed:ord_1042:ful_5501:2026-11-25T09:00:00Z")
    );
}

#[test]
fn delivery_attempt_failed_goes_by_sms_when_the_customer_consents() {
    let e = event(EventKind::DeliveryAttemptFailed)
        .consents(&[Channel::Sms])
        .build();
    let n = only_message(&decide(&e), "delivery-attempt-failed");
    assert_eq!(n.channel, Channel::Sms);
    assert_eq!(n.fallback_channels, [Channel::Email]);
}

#[test]
fn backorder_names_the_missing_items_and_the_restock_date() {
    let n = only_message(
        &decide(&fixture(EventKind::Backordered)),
        "order-backordered",
    );
    assert_eq!(n.data["backordered_items"], "Oak desk lamp");
    assert_eq!(n.data["backordered_skus"], "LAMP-OAK");
    assert_eq!(n.data["expected_restock"], "2026-12-04T00:00:00Z");
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("order-backordered:ord_1042:LAMP-OAK")
    );
}

#[test]
fn backorder_without_a_sku_attribute_reads_the_backordered_lines() {
    let e = event(EventKind::Backordered)
        .map(|e| {
            e.attributes.remove("backordered_skus");
        })
        .build();
    let n = only_message(&decide(&e), "order-backordered");
    assert_eq!(n.data["backordered_skus"], "LAMP-OAK");
}

#[test]
fn order_cancelled_notifies_and_withdraws_every_pending_followup() {
    let e = event(EventKind::OrderCancelled)
        .map(|e| {
            let shipped = fixture(EventKind::DeliveryDelayed);
            e.order.shipments = shipped.order.shipments;
        })
        .build();
    let actions = decide(&e);
    let n = only_message(&actions, "order-cancelled");
    assert_eq!(n.data["reason"], "customer_request");
    assert_eq!(
        cancel_keys(&actions),
        [
            "payment-reminder:ord_1042",
            "feedback:ord_1042",
            "delay-followup:ord_1042",
            "delay-followup:ord_1042:ful_5501",
        ]
    );
}

#[test]
fn items_cancelled_names_the_cancelled_items_and_why() {
    let n = only_message(
        &decide(&fixture(EventKind::ItemsCancelled)),
        "items-cancelled",
    );
    assert_eq!(n.data["cancelled_items"], "Stoneware mug");
    assert_eq!(n.data["cancelled_skus"], "MUG-STONE");
    assert_eq!(n.data["reason"], "out_of_stock");
}

#[test]
fn refund_carries_amount_and_currency_and_withdraws_the_feedback_request() {
    let actions = decide(&fixture(EventKind::RefundCreated));
    let n = only_message(&actions, "refund-issued");
    assert_eq!(n.data["refund_amount_minor"], "5900");
    assert_eq!(n.data["refund_currency"], "EUR");
    assert_eq!(n.data["reason"], "damaged");
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("refund-issued:ord_1042:5900EUR")
    );
    assert_eq!(cancel_keys(&actions), ["feedback:ord_1042"]);
}

#[test]
fn refund_id_tells_refunds_of_the_same_amount_apart() {
    let e = event(EventKind::RefundCreated)
        .attribute("refund_id", "re_77")
        .build();
    let n = only_message(&decide(&e), "refund-issued");
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("refund-issued:ord_1042:re_77")
    );
}

#[test]
fn refund_without_a_currency_is_in_the_order_currency() {
    let e = event(EventKind::RefundCreated)
        .total(13_500, "CHF")
        .map(|e| {
            e.attributes.remove("refund_currency");
        })
        .build();
    let n = only_message(&decide(&e), "refund-issued");
    assert_eq!(n.data["refund_currency"], "CHF");
}

#[test]
fn refund_with_an_unreadable_amount_is_still_notified_without_it() {
    let e = event(EventKind::RefundCreated)
        .attribute("refund_amount_minor", "59.00")
        .build();
    let n = only_message(&decide(&e), "refund-issued");
    assert!(!n.data.contains_key("refund_amount_minor"));
    assert!(!n.data.contains_key("refund_currency"));
}

#[test]
fn return_request_is_acknowledged_and_withdraws_the_feedback_request() {
    let actions = decide(&fixture(EventKind::ReturnRequested));
    let n = only_message(&actions, "return-requested");
    assert_eq!(n.data["return_items"], "Oak desk lamp");
    assert_eq!(n.data["return_skus"], "LAMP-OAK");
    assert_eq!(n.data["reason"], "damaged");
    assert_eq!(cancel_keys(&actions), ["feedback:ord_1042"]);
}

#[test]
fn return_approval_carries_the_return_label() {
    let n = only_message(
        &decide(&fixture(EventKind::ReturnApproved)),
        "return-approved",
    );
    assert_eq!(
        n.data["return_label_url"],
        "https://returns.example.com/label/R-88"
    );
    assert_eq!(
        n.dedupe_key.as_deref(),
        Some("return-approved:ord_1042:LAMP-OAK")
    );
}

#[test]
fn return_received_is_acknowledged() {
    let actions = decide(&fixture(EventKind::ReturnReceived));
    assert_eq!(templates(&actions), ["return-received"]);
}

#[test]
fn preparing_and_in_transit_send_nothing_and_are_not_handled() {
    for kind in [EventKind::OrderPreparing, EventKind::ShipmentInTransit] {
        assert!(decide(&fixture(kind)).is_empty());
        assert!(!StandardLifecycle::handles().contains(&kind));
    }
}

#[test]
fn every_handled_kind_acts_on_its_sample_event() {
    for kind in StandardLifecycle::handles() {
        let ctx = context().build();
        assert!(!decide_with(&fixture(kind), &ctx).is_empty(), "{kind}");
    }
}

#[test]
fn every_notification_is_deduped_on_its_template_and_order() {
    for kind in EventKind::ALL {
        for n in notifications(&decide(&fixture(kind))) {
            let key = n.dedupe_key.as_deref().unwrap_or_default();
            assert!(
                key.starts_with(&format!("{}:ord_1042", n.template)),
                "{kind}: {key}"
            );
        }
    }
}

#[test]
fn the_same_event_twice_gives_the_same_actions() {
    for kind in EventKind::ALL {
        let again = event(kind).id("evt_redelivered").build();
        assert_eq!(decide(&fixture(kind)), decide(&again), "{kind}");
    }
}

#[test]
fn every_template_is_kebab_case_listed_and_documented() {
    let docs = include_str!("lib.rs");
    for template in TEMPLATES {
        assert!(
            template.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{template}"
        );
        assert!(
            docs.contains(&format!("//! - `{template}`:")),
            "{template} is not in the crate docs"
        );
    }
    let variants = [
        event(EventKind::OrderCreated)
            .order_attribute("payment_status", "pending")
            .build(),
        fixture(EventKind::PartiallyShipped),
    ];
    let samples = EventKind::ALL.into_iter().map(fixture).chain(variants);
    for sample in samples {
        for n in notifications(&decide(&sample)) {
            assert!(TEMPLATES.contains(&n.template.as_str()), "{}", n.template);
        }
    }
}

#[test]
fn an_empty_config_means_the_defaults() {
    let ctx = context().config(json!({})).build();
    assert_eq!(Config::from_context(&ctx), Ok(Config::default()));
}

#[test]
fn an_unknown_config_field_is_invalid_config_naming_it() {
    let err = config_error(json!({"vip_treshold_minor": 100}));
    assert_eq!(err.code, "invalid-config");
    assert!(
        err.message.contains("`vip_treshold_minor`"),
        "{}",
        err.message
    );
}

#[test]
fn a_config_field_of_the_wrong_type_is_invalid_config_naming_it() {
    let err = config_error(json!({"sms": "yes"}));
    assert_eq!(err.code, "invalid-config");
    assert!(err.message.contains("`sms`"), "{}", err.message);
}

#[test]
fn out_of_range_config_values_are_invalid_config_naming_the_field() {
    for (config, field) in [
        (json!({"vip_threshold_minor": -1}), "vip_threshold_minor"),
        (json!({"vip_tag": "  "}), "vip_tag"),
        (json!({"feedback_delay_days": 0}), "feedback_delay_days"),
        (json!({"feedback_delay_days": 61}), "feedback_delay_days"),
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
        serde_json::from_str(&StandardLifecycle::config_schema()).expect("schema is JSON");
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
    assert_eq!(format_money(&Money::new(5, "EUR")), "0.05 EUR");
    assert_eq!(format_money(&Money::new(-1_250, "USD")), "-12.50 USD");
    assert_eq!(format_money(&Money::new(45_000, "JPY")), "45000 JPY");
    assert_eq!(format_money(&Money::new(1_500, "KWD")), "1.500 KWD");
}

#[test]
fn a_config_that_is_not_an_object_is_invalid_config() {
    for config in [json!([]), json!(null), json!("vip"), json!(3)] {
        let err = config_error(config);
        assert_eq!(err.code, "invalid-config");
        assert!(err.message.contains("config field `.`"), "{}", err.message);
    }
}
