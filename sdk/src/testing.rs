//! Test helpers: the sample events shipped with Tidings and builders to vary them.
//!
//! ```
//! use tidings_sdk::prelude::*;
//! use tidings_sdk::testing;
//!
//! let event = testing::event(EventKind::DeliveryDelayed)
//!     .total(45_000, "EUR")
//!     .customer_tag("vip")
//!     .build();
//! let ctx = testing::context().config(serde_json::json!({"threshold": 100})).build();
//! assert!(event.order.customer.has_tag("VIP"));
//! assert_eq!(ctx.config["threshold"], 100);
//! ```

use crate::types::{Channel, Context, EventKind, OrderEvent, SentNotification, Timestamp};

/// The JSON text of the sample event of `kind` (`tests/fixtures/events/`).
pub fn fixture_json(kind: EventKind) -> &'static str {
    match kind {
        EventKind::OrderCreated => include_str!("../../tests/fixtures/events/order_created.json"),
        EventKind::OrderPaid => include_str!("../../tests/fixtures/events/order_paid.json"),
        EventKind::PaymentFailed => include_str!("../../tests/fixtures/events/payment_failed.json"),
        EventKind::OrderPreparing => {
            include_str!("../../tests/fixtures/events/order_preparing.json")
        }
        EventKind::ShipmentCreated => {
            include_str!("../../tests/fixtures/events/shipment_created.json")
        }
        EventKind::ShipmentInTransit => {
            include_str!("../../tests/fixtures/events/shipment_in_transit.json")
        }
        EventKind::OutForDelivery => {
            include_str!("../../tests/fixtures/events/out_for_delivery.json")
        }
        EventKind::Delivered => include_str!("../../tests/fixtures/events/delivered.json"),
        EventKind::DeliveryDelayed => {
            include_str!("../../tests/fixtures/events/delivery_delayed.json")
        }
        EventKind::DeliveryAttemptFailed => {
            include_str!("../../tests/fixtures/events/delivery_attempt_failed.json")
        }
        EventKind::PartiallyShipped => {
            include_str!("../../tests/fixtures/events/partially_shipped.json")
        }
        EventKind::Backordered => include_str!("../../tests/fixtures/events/backordered.json"),
        EventKind::OrderCancelled => {
            include_str!("../../tests/fixtures/events/order_cancelled.json")
        }
        EventKind::ItemsCancelled => {
            include_str!("../../tests/fixtures/events/items_cancelled.json")
        }
        EventKind::RefundCreated => include_str!("../../tests/fixtures/events/refund_created.json"),
        EventKind::ReturnRequested => {
            include_str!("../../tests/fixtures/events/return_requested.json")
        }
        EventKind::ReturnApproved => {
            include_str!("../../tests/fixtures/events/return_approved.json")
        }
        EventKind::ReturnReceived => {
            include_str!("../../tests/fixtures/events/return_received.json")
        }
    }
}

/// The sample event of `kind`: order #1042 of Giulia (it-IT, Europe/Rome),
/// 135.00 EUR, three lines, shipped with BRT where the kind implies it.
pub fn fixture(kind: EventKind) -> OrderEvent {
    OrderEvent::from_json(fixture_json(kind)).expect("bundled fixtures are valid")
}

/// Start from the sample event of `kind` and change what the test is about.
pub fn event(kind: EventKind) -> EventBuilder {
    EventBuilder {
        event: fixture(kind),
    }
}

/// A context for tenant `demo-shop` at 2026-11-23T10:00:00Z, empty config, no history.
pub fn context() -> ContextBuilder {
    ContextBuilder {
        context: Context::new(
            "demo-shop",
            "2026-11-23T10:00:00Z".parse().expect("valid timestamp"),
        ),
    }
}

/// Builds a variant of a sample event.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event: OrderEvent,
}

impl EventBuilder {
    /// Set the event id.
    pub fn id(mut self, id: &str) -> Self {
        self.event.id = id.to_owned();
        self
    }

    /// Set the order total.
    pub fn total(mut self, minor: i64, currency: &str) -> Self {
        self.event.order.total = crate::types::Money::new(minor, currency);
        self
    }

    /// Add a customer tag (e.g. `"vip"`).
    pub fn customer_tag(mut self, tag: &str) -> Self {
        self.event.order.customer.tags.push(tag.to_owned());
        self
    }

    /// Set the customer's locale and timezone.
    pub fn customer_locale(mut self, locale: &str, timezone: &str) -> Self {
        self.event.order.customer.locale = locale.to_owned();
        self.event.order.customer.timezone = timezone.to_owned();
        self
    }

    /// Set the channels on which the customer consents to marketing.
    pub fn consents(mut self, channels: &[Channel]) -> Self {
        self.event.order.customer.consents = channels.to_vec();
        self
    }

    /// Set the channels the customer opted out of.
    pub fn opt_outs(mut self, channels: &[Channel]) -> Self {
        self.event.order.customer.channel_opt_outs = channels.to_vec();
        self
    }

    /// Remove the customer's phone number.
    pub fn without_phone(mut self) -> Self {
        self.event.order.customer.phone = None;
        self.event.order.customer.has_phone = false;
        self
    }

    /// Set an event attribute.
    pub fn attribute(mut self, key: &str, value: &str) -> Self {
        self.event
            .attributes
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Set an order attribute.
    pub fn order_attribute(mut self, key: &str, value: &str) -> Self {
        self.event
            .order
            .attributes
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Change anything else.
    pub fn map(mut self, change: impl FnOnce(&mut OrderEvent)) -> Self {
        change(&mut self.event);
        self
    }

    /// The event, as a plugin would receive it (no contact details).
    pub fn build(self) -> OrderEvent {
        self.event.without_contact_details()
    }
}

/// Builds a decision context.
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    context: Context,
}

impl ContextBuilder {
    /// Set the processing time.
    pub fn now(mut self, now: Timestamp) -> Self {
        self.context.now = now;
        self
    }

    /// Set the merchant config.
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.context.config = config;
        self
    }

    /// Record that `template` was already sent on `channel` at `at`.
    pub fn sent(mut self, template: &str, channel: Channel, at: Timestamp) -> Self {
        self.context.history.push(SentNotification {
            template: template.to_owned(),
            channel,
            at,
        });
        self
    }

    /// The context.
    pub fn build(self) -> Context {
        self.context
    }
}

impl From<ContextBuilder> for Context {
    fn from(builder: ContextBuilder) -> Self {
        builder.build()
    }
}

impl std::ops::Deref for ContextBuilder {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_has_a_valid_fixture_of_that_kind() {
        for kind in EventKind::ALL {
            let event = fixture(kind);
            assert_eq!(event.kind, kind);
            assert!(event.order.customer.has_email && event.order.customer.has_phone);
        }
    }

    #[test]
    fn built_events_carry_no_contact_details() {
        let event = event(EventKind::OrderCreated).build();
        assert_eq!(event.order.customer.email, None);
        assert!(event.order.customer.has_email);
    }

    #[test]
    fn a_wrong_field_is_named_with_its_path() {
        let text =
            fixture_json(EventKind::OrderPaid).replace("\"minor\": 13500", "\"minor\": \"lots\"");
        let err = OrderEvent::from_json(&text).expect_err("a string is not an amount");
        assert_eq!(err.path, "order.total.minor");
    }
}
