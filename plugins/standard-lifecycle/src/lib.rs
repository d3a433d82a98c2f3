//! # standard-lifecycle
//!
//! The notification rules every shop gets by default: one clear message per
//! step of an order's life, a follow-up when a parcel is late, a feedback
//! request once everything has arrived, and a ticket in the `vip-care` queue
//! when a valuable order is delayed.
//!
//! ## What it does, event by event
//!
//! | event | actions |
//! |---|---|
//! | `order_created` | `order-confirmation`; when the order awaits payment (see below) `order-awaiting-payment` instead, plus a `payment-reminder` 48 hours later |
//! | `order_paid` | cancels the payment reminder; `payment-received` if the order was created awaiting payment, else `order-confirmation` if none was sent yet |
//! | `payment_failed` | `payment-failed` (high priority) |
//! | `shipment_created`, `partially_shipped` | `order-shipped`, or `order-partially-shipped` while other lines are still pending or backordered |
//! | `out_for_delivery` | `out-for-delivery`, by SMS when allowed (see below) |
//! | `delivered` | `order-delivered`; cancels the parcel's delay follow-up; once every parcel is delivered, a `feedback-request` (marketing) after `feedback_delay_days` |
//! | `delivery_delayed` | `delivery-delayed` apology; a `delay-followup` a day after the new ETA (3 days without one; between 1 and 14 days); a `vip-care` escalation for VIP orders |
//! | `delivery_attempt_failed` | `delivery-attempt-failed` (high priority), by SMS when allowed |
//! | `backordered` | `order-backordered` |
//! | `order_cancelled` | `order-cancelled`; cancels every pending payment reminder, delay follow-up and feedback request |
//! | `items_cancelled` | `items-cancelled` |
//! | `refund_created` | `refund-issued`; cancels the feedback request |
//! | `return_requested` | `return-requested`; cancels the feedback request |
//! | `return_approved` | `return-approved` |
//! | `return_received` | `return-received` |
//!
//! `order_preparing` and `shipment_in_transit` send nothing: customers do not
//! need a message for every scan, so they are left out of `handles()`.
//!
//! **Payment captured at creation or not.** An order awaits payment (bank
//! transfer, invoice, cash on delivery) when its `payment_status` attribute
//! (event attribute first, then order attribute) is `pending`; otherwise
//! payment is taken to be captured at checkout, and `order_paid` adds nothing
//! the confirmation did not already say. Which case applied is read back from
//! the history: `payment-received` goes out only after an
//! `order-awaiting-payment`.
//!
//! **Channels.** Everything goes by email, except `out-for-delivery` and
//! `delivery-attempt-failed`, which are time-critical: they go by SMS (falling
//! back to email) when `sms` is enabled, the customer consents to SMS and the
//! host has their phone number.
//!
//! **VIP.** An order is a VIP order when its total is above
//! `vip_threshold_minor` (in the order's own currency) or the customer carries
//! `vip_tag`. A delayed VIP order gets a high-priority delay notice and a
//! high-priority ticket in the `vip-care` queue, unless one is already open.
//!
//! ## Templates
//!
//! Every template name used, with the data keys it receives (each key only
//! when the value is known):
//!
//! - `order-confirmation`: none
//! - `order-awaiting-payment`: `payment_method`
//! - `payment-reminder`: `payment_method`
//! - `payment-received`: none
//! - `payment-failed`: `reason`, `retry_url`
//! - `order-shipped`: `shipment_id`, `carrier`, `tracking_number`, `tracking_url`, `eta`
//! - `order-partially-shipped`: as `order-shipped`, plus `shipped_items`, `pending_items`
//! - `out-for-delivery`: as `order-shipped`
//! - `order-delivered`: as `order-shipped`
//! - `feedback-request`: none
//! - `delivery-delayed`: as `order-shipped` (`eta` is the new one), plus `previous_eta`, `delay_reason`
//! - `delay-followup`: as `order-shipped`
//! - `delivery-attempt-failed`: as `order-shipped`, plus `next_attempt`
//! - `order-backordered`: `backordered_items`, `backordered_skus`, `expected_restock`
//! - `order-cancelled`: `reason`
//! - `items-cancelled`: `cancelled_items`, `cancelled_skus`, `reason`
//! - `refund-issued`: `refund_amount_minor`, `refund_currency`, `reason`
//! - `return-requested`: `return_items`, `return_skus`, `reason`
//! - `return-approved`: `return_items`, `return_skus`, `return_label_url`
//! - `return-received`: `return_items`, `return_skus`
//!
//! `*_items` are product titles joined with `, `; `*_skus` are SKUs joined
//! with `,`; times are RFC 3339.
//!
//! ## Keys
//!
//! Every notification's dedupe key is `<template>:<order id>`, followed by the
//! shipment id when the event is about a parcel and by what tells a genuinely
//! new occurrence apart from a repeat: the new ETA of a delay, the next attempt
//! of a failed delivery, the SKUs of a backorder, cancellation or return
//! (`return_id` when given), the refund's `refund_id` or amount. A repeated
//! event therefore never notifies twice, while a second delay with a new ETA
//! does.
//!
//! Cancel keys: `payment-reminder:<order id>`, `feedback:<order id>` and
//! `delay-followup:<order id>:<shipment id>` (`delay-followup:<order id>` for
//! a delay reported without a shipment). Follow-ups are keyed per parcel so
//! that one parcel's delivery does not withdraw another late parcel's
//! follow-up.
//!
//! ## Config
//!
//! All fields are optional; unknown fields are rejected with an
//! `invalid-config` rule error naming the field.
//!
//! ```json
//! {
//!   "vip_threshold_minor": 20000,
//!   "vip_tag": "vip",
//!   "feedback_delay_days": 3,
//!   "sms": true
//! }
//! ```
//!
//! - `vip_threshold_minor` (integer ≥ 0, default 20000): order total above
//!   which a delay is escalated, in minor units of the order's currency.
//! - `vip_tag` (non-empty string, default `"vip"`): customer tag marking a VIP.
//! - `feedback_delay_days` (1 to 60, default 3): days after the last delivery
//!   before the feedback request.
//! - `sms` (boolean, default true): allow SMS at all.

mod config;
#[cfg(test)]
mod tests;

pub use config::{CONFIG_SCHEMA, Config};

use tidings_sdk::prelude::*;

/// The default lifecycle rules.
pub struct StandardLifecycle;

/// Every template this plugin may ask for.
pub const TEMPLATES: [&str; 20] = [
    "order-confirmation",
    "order-awaiting-payment",
    "payment-reminder",
    "payment-received",
    "payment-failed",
    "order-shipped",
    "order-partially-shipped",
    "out-for-delivery",
    "order-delivered",
    "feedback-request",
    "delivery-delayed",
    "delay-followup",
    "delivery-attempt-failed",
    "order-backordered",
    "order-cancelled",
    "items-cancelled",
    "refund-issued",
    "return-requested",
    "return-approved",
    "return-received",
];

/// Queue for delayed VIP orders.
pub const VIP_QUEUE: &str = "vip-care";

/// How long an order may await payment before the customer is reminded.
const PAYMENT_REMINDER_HOURS: i64 = 48;

impl Rule for StandardLifecycle {
    fn decide(event: &OrderEvent, ctx: &Context) -> Result<Vec<Action>, RuleError> {
        let config = Config::from_context(ctx)?;
        Ok(Decision { event, ctx, config }.actions())
    }

    fn handles() -> Vec<EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(|kind| {
                !matches!(
                    kind,
                    EventKind::OrderPreparing | EventKind::ShipmentInTransit
                )
            })
            .collect()
    }

    fn config_schema() -> String {
        CONFIG_SCHEMA.to_owned()
    }
}

register_rule!(StandardLifecycle);

/// One event being decided, with what the rules need at hand.
struct Decision<'a> {
    event: &'a OrderEvent,
    ctx: &'a Context,
    config: Config,
}

impl Decision<'_> {
    fn actions(&self) -> Vec<Action> {
        match self.event.kind {
            EventKind::OrderCreated => self.order_created(),
            EventKind::OrderPaid => self.order_paid(),
            EventKind::PaymentFailed => vec![
                self.email("payment-failed", &[])
                    .priority(Priority::High)
                    .with_some("reason", self.attr("reason"))
                    .with_some("retry_url", self.attr("retry_url")),
            ],
            EventKind::ShipmentCreated | EventKind::PartiallyShipped => vec![self.shipped()],
            EventKind::OutForDelivery => {
                vec![self.tracked(self.time_critical("out-for-delivery", &[self.shipment_id()]))]
            }
            EventKind::Delivered => self.delivered(),
            EventKind::DeliveryDelayed => self.delivery_delayed(),
            EventKind::DeliveryAttemptFailed => {
                let next_attempt = self.attr("next_attempt");
                let parts = [self.shipment_id(), next_attempt.unwrap_or_default()];
                vec![
                    self.tracked(self.time_critical("delivery-attempt-failed", &parts))
                        .priority(Priority::High)
                        .with_some("next_attempt", next_attempt),
                ]
            }
            EventKind::Backordered => {
                let skus = self.skus("backordered_skus", LineStatus::Backordered);
                vec![
                    self.email("order-backordered", &[&skus.join(",")])
                        .with_some("backordered_items", self.titles(&skus))
                        .with_some("backordered_skus", joined(&skus))
                        .with_some("expected_restock", self.attr("expected_restock")),
                ]
            }
            EventKind::OrderCancelled => self.order_cancelled(),
            EventKind::ItemsCancelled => {
                let skus = self.skus("cancelled_skus", LineStatus::Cancelled);
                vec![
                    self.email("items-cancelled", &[&skus.join(",")])
                        .with_some("cancelled_items", self.titles(&skus))
                        .with_some("cancelled_skus", joined(&skus))
                        .with_some("reason", self.attr("reason")),
                ]
            }
            EventKind::RefundCreated => self.refund_created(),
            EventKind::ReturnRequested => vec![
                self.return_notice("return-requested")
                    .with_some("reason", self.attr("reason")),
                cancel(self.order_key("feedback")),
            ],
            EventKind::ReturnApproved => vec![
                self.return_notice("return-approved")
                    .with_some("return_label_url", self.attr("return_label_url")),
            ],
            EventKind::ReturnReceived => vec![self.return_notice("return-received")],
            EventKind::OrderPreparing | EventKind::ShipmentInTransit => Vec::new(),
        }
    }

    fn order_created(&self) -> Vec<Action> {
        if !self.awaits_payment() {
            return vec![self.email("order-confirmation", &[])];
        }
        let method = self.attr("payment_method");
        vec![
            self.email("order-awaiting-payment", &[])
                .with_some("payment_method", method),
            self.email("payment-reminder", &[])
                .with_some("payment_method", method)
                .after(PAYMENT_REMINDER_HOURS.hours())
                .cancel_key(self.order_key("payment-reminder")),
        ]
    }

    fn order_paid(&self) -> Vec<Action> {
        let mut actions = vec![cancel(self.order_key("payment-reminder"))];
        if self.ctx.already_sent("order-awaiting-payment") {
            actions.push(self.email("payment-received", &[]));
        } else if !self.ctx.already_sent("order-confirmation") {
            // Covers shops whose platform reports only paid orders; the
            // dedupe key is the one `order_created` uses, so a confirmation
            // still in flight is not sent twice.
            actions.push(self.email("order-confirmation", &[]));
        }
        actions
    }

    fn shipped(&self) -> Action {
        let pending: Vec<&str> = self
            .event
            .order
            .items
            .iter()
            .filter(|line| matches!(line.status, LineStatus::Pending | LineStatus::Backordered))
            .map(|line| line.sku.as_str())
            .collect();
        let partial = self.event.kind == EventKind::PartiallyShipped || !pending.is_empty();
        if !partial {
            return self.tracked(self.email("order-shipped", &[self.shipment_id()]));
        }
        let shipped: Vec<&str> = self
            .shipment()
            .map(|s| s.items.iter().map(|item| item.sku.as_str()).collect())
            .unwrap_or_default();
        self.tracked(self.email("order-partially-shipped", &[self.shipment_id()]))
            .with_some("shipped_items", self.titles(&shipped))
            .with_some("pending_items", self.titles(&pending))
    }

    fn delivered(&self) -> Vec<Action> {
        let mut actions = vec![
            self.tracked(self.email("order-delivered", &[self.shipment_id()])),
            cancel(self.delay_followup_key(self.shipment_id())),
        ];
        if self.fully_delivered() {
            let days = i64::from(self.config.feedback_delay_days);
            actions.push(
                self.email("feedback-request", &[])
                    .marketing()
                    .after(days.days())
                    .cancel_key(self.order_key("feedback")),
            );
        }
        actions
    }

    fn delivery_delayed(&self) -> Vec<Action> {
        let eta = self
            .shipment()
            .and_then(|s| s.eta)
            .map(|eta| eta.to_string());
        let vip = self.vip_reasons();
        let priority = if vip.is_empty() {
            Priority::Normal
        } else {
            Priority::High
        };
        let mut actions = vec![
            self.tracked(self.email(
                "delivery-delayed",
                &[self.shipment_id(), eta.as_deref().unwrap_or_default()],
            ))
            .priority(priority)
            .with_some("previous_eta", self.attr("previous_eta"))
            .with_some("delay_reason", self.attr("delay_reason")),
            self.tracked(self.email("delay-followup", &[self.shipment_id()]))
                .after(self.followup_delay())
                .cancel_key(self.delay_followup_key(self.shipment_id())),
        ];
        if !vip.is_empty() && !self.ctx.has_open_escalation(VIP_QUEUE) {
            let order = &self.event.order;
            let mut reason = format!("Order {} is delayed", order.number);
            if let Some(eta) = &eta {
                reason.push_str(&format!(" (new ETA {eta})"));
            }
            if let Some(why) = self.attr("delay_reason") {
                reason.push_str(&format!(", carrier reason: {why}"));
            }
            reason.push_str(&format!("; VIP order: {}", vip.join(", ")));
            actions.push(escalate(VIP_QUEUE, Priority::High, reason));
        }
        actions
    }

    fn order_cancelled(&self) -> Vec<Action> {
        let mut actions = vec![
            self.email("order-cancelled", &[])
                .with_some("reason", self.attr("reason")),
            cancel(self.order_key("payment-reminder")),
            cancel(self.order_key("feedback")),
            cancel(self.delay_followup_key("")),
        ];
        actions.extend(
            self.event
                .order
                .shipments
                .iter()
                .map(|s| cancel(self.delay_followup_key(&s.id))),
        );
        actions
    }

    fn refund_created(&self) -> Vec<Action> {
        let amount = self.refund_amount();
        let occurrence = match (self.attr("refund_id"), &amount) {
            (Some(id), _) => id.to_owned(),
            (None, Some(money)) => format!("{}{}", money.minor, money.currency),
            (None, None) => String::new(),
        };
        vec![
            self.email("refund-issued", &[&occurrence])
                .with_some("refund_amount_minor", amount.as_ref().map(|m| m.minor))
                .with_some("refund_currency", amount.as_ref().map(|m| &m.currency))
                .with_some("reason", self.attr("reason")),
            cancel(self.order_key("feedback")),
        ]
    }

    fn return_notice(&self, template: &str) -> Action {
        let skus = self.attr_list("return_skus");
        let occurrence = self
            .attr("return_id")
            .map_or_else(|| skus.join(","), str::to_owned);
        self.email(template, &[&occurrence])
            .with_some("return_items", self.titles(&skus))
            .with_some("return_skus", joined(&skus))
    }

    /// An email about this order, deduped on `template`, the order and `parts`.
    fn email(&self, template: &str, parts: &[&str]) -> Action {
        notify(Channel::Email, template).dedupe(self.dedupe_key(template, parts))
    }

    /// By SMS (falling back to email) when allowed, by email otherwise.
    fn time_critical(&self, template: &str, parts: &[&str]) -> Action {
        let customer = &self.event.order.customer;
        let sms = self.config.sms
            && customer.consents_to(Channel::Sms)
            && customer.reachable_on(Channel::Sms);
        if sms {
            notify(Channel::Sms, template)
                .fallback(Channel::Email)
                .dedupe(self.dedupe_key(template, parts))
        } else {
            self.email(template, parts)
        }
    }

    /// `action` with the tracking details of the event's parcel.
    fn tracked(&self, action: Action) -> Action {
        let Some(shipment) = self.shipment() else {
            return action;
        };
        action
            .with("shipment_id", &shipment.id)
            .with_some("carrier", shipment.carrier.as_ref())
            .with_some("tracking_number", shipment.tracking_number.as_ref())
            .with_some("tracking_url", shipment.tracking_url.as_ref())
            .with_some("eta", shipment.eta)
    }

    fn dedupe_key(&self, template: &str, parts: &[&str]) -> String {
        let mut key = format!("{template}:{}", self.event.order.id);
        for part in parts.iter().filter(|part| !part.is_empty()) {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// `<purpose>:<order id>`, the cancel key of an order-wide follow-up.
    fn order_key(&self, purpose: &str) -> String {
        format!("{purpose}:{}", self.event.order.id)
    }

    fn delay_followup_key(&self, shipment_id: &str) -> String {
        if shipment_id.is_empty() {
            self.order_key("delay-followup")
        } else {
            format!("delay-followup:{}:{shipment_id}", self.event.order.id)
        }
    }

    /// The parcel the event is about: the event's, or the order's latest.
    fn shipment(&self) -> Option<&Shipment> {
        self.event
            .shipment
            .as_ref()
            .or_else(|| self.event.order.shipments.last())
    }

    fn shipment_id(&self) -> &str {
        self.shipment().map_or("", |s| s.id.as_str())
    }

    /// A day after the parcel's new ETA, between one and fourteen days away;
    /// three days when the carrier gave no ETA.
    fn followup_delay(&self) -> Span {
        let hours = match self.shipment().and_then(|s| s.eta) {
            Some(eta) => (eta.as_second() - self.ctx.now.as_second()) / 3_600 + 24,
            None => 72,
        };
        hours.clamp(24, 14 * 24).hours()
    }

    /// Every line settled and every parcel delivered (this one included).
    fn fully_delivered(&self) -> bool {
        let order = &self.event.order;
        let this = self.event.shipment.as_ref().map(|s| s.id.as_str());
        let lines_settled = order
            .items
            .iter()
            .all(|line| !matches!(line.status, LineStatus::Pending | LineStatus::Backordered));
        let parcels_delivered = order
            .shipments
            .iter()
            .all(|s| s.status == ShipmentStatus::Delivered || Some(s.id.as_str()) == this);
        lines_settled && parcels_delivered
    }

    fn awaits_payment(&self) -> bool {
        self.attr("payment_status")
            .is_some_and(|status| status.eq_ignore_ascii_case("pending"))
    }

    /// Why this is a VIP order, in words for the agent; empty when it is not.
    fn vip_reasons(&self) -> Vec<String> {
        let order = &self.event.order;
        let mut reasons = Vec::new();
        if order.total.minor > self.config.vip_threshold_minor {
            let threshold = Money::new(self.config.vip_threshold_minor, &order.total.currency);
            reasons.push(format!(
                "total {} is above {}",
                format_money(&order.total),
                format_money(&threshold)
            ));
        }
        if order.customer.has_tag(&self.config.vip_tag) {
            reasons.push(format!("customer tagged `{}`", self.config.vip_tag));
        }
        reasons
    }

    /// The refund from `refund_amount_minor` / `refund_currency` (the order's
    /// currency when absent); `None` when there is no usable amount.
    fn refund_amount(&self) -> Option<Money> {
        let text = self.attr("refund_amount_minor")?;
        match text.parse::<i64>() {
            Ok(minor) => {
                let currency = self
                    .attr("refund_currency")
                    .unwrap_or(&self.event.order.total.currency);
                Some(Money::new(minor, currency))
            }
            Err(_) => {
                log::warn(&format!(
                    "ignoring refund_amount_minor {text:?}: not an integer"
                ));
                None
            }
        }
    }

    /// A non-blank attribute of the event, or else of the order.
    fn attr(&self, key: &str) -> Option<&str> {
        [&self.event.attributes, &self.event.order.attributes]
            .into_iter()
            .find_map(|attributes| attributes.get(key))
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// A comma-separated attribute as a list.
    fn attr_list(&self, key: &str) -> Vec<&str> {
        self.attr(key)
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|sku| !sku.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SKUs named by the attribute `key`, or else the lines in `status`.
    fn skus(&self, key: &str, status: LineStatus) -> Vec<&str> {
        let named = self.attr_list(key);
        if !named.is_empty() {
            return named;
        }
        self.event
            .order
            .items
            .iter()
            .filter(|line| line.status == status)
            .map(|line| line.sku.as_str())
            .collect()
    }

    /// Product titles of `skus` (the SKU itself when not in the order).
    fn titles(&self, skus: &[&str]) -> Option<String> {
        let titles: Vec<&str> = skus
            .iter()
            .map(|sku| {
                self.event
                    .order
                    .items
                    .iter()
                    .find(|line| line.sku == *sku)
                    .map_or(*sku, |line| line.title.as_str())
            })
            .collect();
        (!titles.is_empty()).then(|| titles.join(", "))
    }
}

fn joined(skus: &[&str]) -> Option<String> {
    (!skus.is_empty()).then(|| skus.join(","))
}

/// `Action::with` for values that may be missing.
trait WithSome: Sized {
    /// Add the template variable `key` when `value` is present.
    fn with_some(self, key: &str, value: Option<impl ToString>) -> Self;
}

impl WithSome for Action {
    fn with_some(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }
}

/// `money` for people, e.g. `450.00 EUR`, with the currency's ISO 4217
/// number of decimals.
fn format_money(money: &Money) -> String {
    let decimals: u32 = match money.currency.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if money.minor < 0 { "-" } else { "" };
    let amount = money.minor.unsigned_abs();
    let scale = 10_u64.pow(decimals);
    let (units, cents) = (amount / scale, amount % scale);
    if decimals == 0 {
        format!("{sign}{units} {}", money.currency)
    } else {
        let width = decimals as usize;
        format!("{sign}{units}.{cents:0width$} {}", money.currency)
    }
}
