//! The bundled plugins under the real runtime and limits.

use serde_json::json;
use tidings_sdk::action::Action;
use tidings_sdk::types::{Channel, EventKind};
use tidings_tests::{TestHost, event, guests};

#[test]
fn every_bundled_plugin_decides_every_sample_event_within_limits() {
    let host = TestHost::new().build();
    for path in [
        guests::STANDARD_LIFECYCLE,
        guests::VIP_CONCIERGE,
        guests::CONFIGURABLE,
    ] {
        let plugin = host.load(path);
        for kind in EventKind::ALL {
            let decision = host
                .decide(&plugin, &event(kind), json!({}))
                .unwrap_or_else(|e| panic!("{} on {kind}: {e}", plugin.id()));
            assert!(
                decision.outcome.is_ok(),
                "{} on {kind}: {:?}",
                plugin.id(),
                decision.outcome
            );
            assert!(
                decision.usage.fuel < 2_000_000,
                "{} on {kind} used {} fuel",
                plugin.id(),
                decision.usage.fuel
            );
        }
    }
}

#[test]
fn standard_lifecycle_sends_the_shipping_notice_with_tracking() {
    let host = TestHost::new().build();
    let plugin = host.load(guests::STANDARD_LIFECYCLE);
    let decision = host
        .decide(&plugin, &event(EventKind::ShipmentCreated), json!({}))
        .expect("decides");
    let actions = decision.outcome.expect("actions");
    let notice = actions
        .iter()
        .find_map(|a| a.message().filter(|n| n.template == "order-shipped"))
        .expect("a shipping notice");
    assert_eq!(notice.channel, Channel::Email);
    assert_eq!(
        notice.data["tracking_url"],
        "https://tracking.example.com/BRT123456789IT"
    );
    assert!(notice.dedupe_key.is_some());
}

#[test]
fn standard_lifecycle_escalates_a_delayed_vip_order() {
    let host = TestHost::new().build();
    let plugin = host.load(guests::STANDARD_LIFECYCLE);
    let vip = tidings_sdk::testing::event(EventKind::DeliveryDelayed)
        .customer_tag("vip")
        .build();
    let actions = host
        .decide(&plugin, &vip, json!({}))
        .expect("decides")
        .outcome
        .expect("actions");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Escalate(e) if e.queue == "vip-care")),
        "{actions:?}"
    );
}

#[test]
fn configurable_rejects_an_invalid_config_with_a_rule_error() {
    let host = TestHost::new().build();
    let plugin = host.load(guests::CONFIGURABLE);
    let decision = host
        .decide(
            &plugin,
            &event(EventKind::OrderCreated),
            json!({"no_such_setting": true}),
        )
        .expect("a rule error is not a fault");
    let err = decision.outcome.expect_err("invalid config");
    assert_eq!(err.code, "invalid-config");
}
