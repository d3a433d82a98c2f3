//! # vip-concierge
//!
//! Notification rules for shops that run a concierge desk: every customer is
//! kept informed, VIPs hear from the shop on WhatsApp first and with priority,
//! a human is brought in (with an SLA) when a VIP's delivery goes wrong or an
//! order looks risky, and large refunds are checked by an agent before the
//! customer is told. It is a complete rule set, installed instead of
//! `standard-lifecycle`, and shares its template names so the same templates
//! serve both.
//!
//! ## Who is a VIP
//!
//! An order is a VIP order when the customer carries `vip_tag` or the order
//! total is above `vip_threshold_minor` (in the order's own currency).
//!
//! ## Channels and priority
//!
//! VIPs are messaged on WhatsApp, falling back to email, when `whatsapp` is
//! enabled and the host has their phone number (and they did not opt out of
//! WhatsApp); everyone else by email. Messages are high priority for VIP
//! orders and for time-critical events (`payment_failed`,
//! `delivery_attempt_failed`), normal otherwise.
//!
//! Escalations are urgent when the order is high-risk or its total is above
//! `urgent_threshold_minor`, high otherwise. A new ticket is only opened when
//! none is open in that queue for the order.
//!
//! ## What it does, event by event
//!
//! | event | actions |
//! |---|---|
//! | `order_created` | `order-confirmation`; for a high-risk order (order attribute `risk_level` = `high`) a ticket in `risk_queue` with `risk_sla_minutes` |
//! | `payment_failed` | `payment-failed` |
//! | `order_preparing` | `order-preparing`, for VIP orders only |
//! | `shipment_created` | `order-shipped` |
//! | `partially_shipped` | `order-partially-shipped` |
//! | `out_for_delivery` | `out-for-delivery` |
//! | `delivered` | `order-delivered` |
//! | `delivery_delayed` | `delivery-delayed`; for VIP orders a ticket in `queue` with `sla_minutes` |
//! | `delivery_attempt_failed` | `delivery-attempt-failed`; for VIP orders a ticket in `queue` with `sla_minutes` |
//! | `backordered` | `order-backordered` |
//! | `order_cancelled` | `order-cancelled` |
//! | `items_cancelled` | `items-cancelled` |
//! | `refund_created` | `refund-issued`, held for approval when the refund is above `refund_approval_threshold_minor`, its amount is missing or unreadable, or the order is high-risk |
//! | `return_requested` | `return-requested` |
//! | `return_approved` | `return-approved` |
//! | `return_received` | `return-received` |
//!
//! `order_paid` (the confirmation already went out at creation) and
//! `shipment_in_transit` send nothing and are left out of `handles()`.
//!
//! ## Templates
//!
//! `order-confirmation`, `payment-failed`, `order-preparing`,
//! `order-shipped`, `order-partially-shipped`, `out-for-delivery`,
//! `order-delivered`, `delivery-delayed`, `delivery-attempt-failed`,
//! `order-backordered`, `order-cancelled`, `items-cancelled`,
//! `refund-issued`, `return-requested`, `return-approved`,
//! `return-received`.
//!
//! Each receives, as template data:
//! - `vip`: `"true"` or `"false"`, so one template can change its tone;
//! - every attribute of the event as it arrived (for example
//!   `refund_amount_minor`, `refund_currency`, `reason`, `delay_reason`,
//!   `previous_eta`, `next_attempt`, `return_label_url`, `expected_restock`);
//!   order attributes such as `risk_level` are never passed on;
//! - when the event is about a parcel: `shipment_id`, `carrier`,
//!   `tracking_number`, `tracking_url`, `eta` (each when known).
//!
//! ## Keys
//!
//! Dedupe keys are `<template>:<order id>`, then the shipment id when the
//! event is about a parcel, then what tells a new occurrence from a repeat:
//! the new ETA of a delay, the next attempt of a failed delivery, the SKUs of
//! a backorder, cancellation or return (`return_id` when given), the
//! `refund_id` or amount of a refund. This plugin schedules nothing for later,
//! so it uses no cancel keys.
//!
//! ## Config
//!
//! All fields are optional; unknown fields are rejected with an
//! `invalid-config` rule error naming the field.
//!
//! ```json
//! {
//!   "vip_tag": "vip",
//!   "vip_threshold_minor": 50000,
//!   "urgent_threshold_minor": 200000,
//!   "refund_approval_threshold_minor": 25000,
//!   "queue": "vip-care",
//!   "sla_minutes": 30,
//!   "risk_queue": "risk-review",
//!   "risk_sla_minutes": 60,
//!   "whatsapp": true
//! }
//! ```
//!
//! - `vip_tag` (non-empty string, default `"vip"`): customer tag marking a VIP.
//! - `vip_threshold_minor` (integer ≥ 0, default 50000): order total above
//!   which an order is a VIP order.
//! - `urgent_threshold_minor` (integer ≥ 0, default 200000): order total
//!   above which escalations are urgent.
//! - `refund_approval_threshold_minor` (integer ≥ 0, default 25000): refund
//!   amount above which the notice is held for approval.
//! - `queue` (non-empty string, default `"vip-care"`) and `sla_minutes`
//!   (1 to 10080, default 30): where VIP delivery tickets go and how fast
//!   they must be acknowledged.
//! - `risk_queue` (non-empty string, default `"risk-review"`) and
//!   `risk_sla_minutes` (1 to 10080, default 60): the same for high-risk
//!   orders.
//! - `whatsapp` (boolean, default true): message VIPs on WhatsApp first.

mod config;
#[cfg(test)]
mod tests;

pub use config::{CONFIG_SCHEMA, Config};

use tidings_sdk::prelude::*;

/// The concierge rules.
pub struct VipConcierge;

/// Every template this plugin may ask for.
pub const TEMPLATES: [&str; 16] = [
    "order-confirmation",
    "payment-failed",
    "order-preparing",
    "order-shipped",
    "order-partially-shipped",
    "out-for-delivery",
    "order-delivered",
    "delivery-delayed",
    "delivery-attempt-failed",
    "order-backordered",
    "order-cancelled",
    "items-cancelled",
    "refund-issued",
    "return-requested",
    "return-approved",
    "return-received",
];

impl Rule for VipConcierge {
    fn decide(event: &OrderEvent, ctx: &Context) -> Result<Vec<Action>, RuleError> {
        let config = Config::from_context(ctx)?;
        let decision = Decision {
            event,
            ctx,
            vip: is_vip(event, &config),
            high_risk: is_high_risk(&event.order),
            config,
        };
        Ok(decision.actions())
    }

    fn handles() -> Vec<EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(|kind| template(*kind).is_some())
            .collect()
    }

    fn config_schema() -> String {
        CONFIG_SCHEMA.to_owned()
    }
}

register_rule!(VipConcierge);

/// The template for an event of `kind`, if the customer hears about it.
fn template(kind: EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::OrderCreated => "order-confirmation",
        EventKind::PaymentFailed => "payment-failed",
        EventKind::OrderPreparing => "order-preparing",
        EventKind::ShipmentCreated => "order-shipped",
        EventKind::PartiallyShipped => "order-partially-shipped",
        EventKind::OutForDelivery => "out-for-delivery",
        EventKind::Delivered => "order-delivered",
        EventKind::DeliveryDelayed => "delivery-delayed",
        EventKind::DeliveryAttemptFailed => "delivery-attempt-failed",
        EventKind::Backordered => "order-backordered",
        EventKind::OrderCancelled => "order-cancelled",
        EventKind::ItemsCancelled => "items-cancelled",
        EventKind::RefundCreated => "refund-issued",
        EventKind::ReturnRequested => "return-requested",
        EventKind::ReturnApproved => "return-approved",
        EventKind::ReturnReceived => "return-received",
        EventKind::OrderPaid | EventKind::ShipmentInTransit => return None,
    })
}

/// Whether the customer carries the VIP tag or the total is above the threshold.
fn is_vip(event: &OrderEvent, config: &Config) -> bool {
    let order = &event.order;
    order.customer.has_tag(&config.vip_tag) || order.total.minor > config.vip_threshold_minor
}

/// Whether the shop rated the order high-risk (order attribute `risk_level`).
fn is_high_risk(order: &Order) -> bool {
    order
        .attributes
        .get("risk_level")
        .is_some_and(|level| level.trim().eq_ignore_ascii_case("high"))
}

/// One event being decided, with what the rules need at hand.
struct Decision<'a> {
    event: &'a OrderEvent,
    ctx: &'a Context,
    config: Config,
    vip: bool,
    high_risk: bool,
}

impl Decision<'_> {
    fn actions(&self) -> Vec<Action> {
        let Some(template) = template(self.event.kind) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        match self.event.kind {
            EventKind::OrderPreparing if !self.vip => {}
            EventKind::RefundCreated => actions.push(self.refund(template)),
            _ => actions.push(self.message(template, None)),
        }
        actions.extend(self.escalation());
        actions
    }

    /// The refund notice: held for an agent when large, unclear or risky.
    fn refund(&self, template: &str) -> Action {
        let order = &self.event.order;
        let amount = self.refund_amount();
        let threshold = Money::new(
            self.config.refund_approval_threshold_minor,
            amount
                .as_ref()
                .map_or(&order.total.currency, |m| &m.currency),
        );
        let hold = match &amount {
            None => Some(format!(
                "Refund on order {} has no readable amount; check it before the customer is told",
                order.number
            )),
            Some(amount) if amount.minor > threshold.minor => Some(format!(
                "Refund of {} on order {} is above the {} approval threshold",
                format_money(amount),
                order.number,
                format_money(&threshold)
            )),
            Some(amount) if self.high_risk => Some(format!(
                "Refund of {} on high-risk order {}",
                format_money(amount),
                order.number
            )),
            Some(_) => None,
        };
        self.message(template, hold)
    }

    /// The ticket this event calls for, if any.
    fn escalation(&self) -> Option<Action> {
        let order = &self.event.order;
        let (queue, sla, reason) = match self.event.kind {
            EventKind::OrderCreated if self.high_risk => (
                &self.config.risk_queue,
                self.config.risk_sla_minutes,
                format!(
                    "High-risk order {} ({}): review before it is fulfilled",
                    order.number,
                    format_money(&order.total)
                ),
            ),
            EventKind::DeliveryDelayed if self.vip => {
                let mut reason = format!("VIP order {} is delayed", order.number);
                if let Some(eta) = self.shipment().and_then(|s| s.eta) {
                    reason.push_str(&format!(" (new ETA {eta})"));
                }
                if let Some(why) = self.event.attributes.get("delay_reason") {
                    reason.push_str(&format!(", carrier reason: {why}"));
                }
                reason.push_str(&format!(
                    "; reach out to the customer ({})",
                    format_money(&order.total)
                ));
                (&self.config.queue, self.config.sla_minutes, reason)
            }
            EventKind::DeliveryAttemptFailed if self.vip => {
                let mut reason = format!("Delivery attempt failed for VIP order {}", order.number);
                if let Some(next) = self.event.attributes.get("next_attempt") {
                    reason.push_str(&format!(" (next attempt {next})"));
                }
                reason.push_str(&format!(
                    "; arrange redelivery with the customer ({})",
                    format_money(&order.total)
                ));
                (&self.config.queue, self.config.sla_minutes, reason)
            }
            _ => return None,
        };
        if self.ctx.has_open_escalation(queue) {
            return None;
        }
        Some(escalate(queue, self.escalation_priority(), reason).sla_minutes(sla))
    }

    /// The customer message, sent now or held for approval with `hold` as the reason.
    fn message(&self, template: &str, hold: Option<String>) -> Action {
        let customer = &self.event.order.customer;
        let whatsapp = self.vip && self.config.whatsapp && customer.reachable_on(Channel::Whatsapp);
        let channel = if whatsapp {
            Channel::Whatsapp
        } else {
            Channel::Email
        };
        let mut action = match hold {
            Some(reason) => hold_for_approval(channel, template, reason),
            None => notify(channel, template),
        };
        if whatsapp {
            action = action.fallback(Channel::Email);
        }
        action = action
            .priority(self.message_priority())
            .dedupe(self.dedupe_key(template))
            .with("vip", self.vip);
        for (key, value) in &self.event.attributes {
            action = action.with(key, value);
        }
        if let Some(shipment) = &self.event.shipment {
            action = action.with("shipment_id", &shipment.id);
            let known = [
                ("carrier", shipment.carrier.clone()),
                ("tracking_number", shipment.tracking_number.clone()),
                ("tracking_url", shipment.tracking_url.clone()),
                ("eta", shipment.eta.map(|eta| eta.to_string())),
            ];
            for (key, value) in known {
                if let Some(value) = value {
                    action = action.with(key, value);
                }
            }
        }
        action
    }

    fn message_priority(&self) -> Priority {
        let time_critical = matches!(
            self.event.kind,
            EventKind::PaymentFailed | EventKind::DeliveryAttemptFailed
        );
        if self.vip || time_critical {
            Priority::High
        } else {
            Priority::Normal
        }
    }

    fn escalation_priority(&self) -> Priority {
        if self.high_risk || self.event.order.total.minor > self.config.urgent_threshold_minor {
            Priority::Urgent
        } else {
            Priority::High
        }
    }

    /// `<template>:<order id>[:<shipment id>][:<occurrence>]`.
    fn dedupe_key(&self, template: &str) -> String {
        let mut key = format!("{template}:{}", self.event.order.id);
        let shipment = self.event.shipment.as_ref().map(|s| s.id.clone());
        for part in [shipment, self.occurrence()].into_iter().flatten() {
            if !part.is_empty() {
                key.push(':');
                key.push_str(&part);
            }
        }
        key
    }

    /// What tells this occurrence of an event kind apart from a repeat.
    fn occurrence(&self) -> Option<String> {
        let attr = |key: &str| self.event.attributes.get(key).cloned();
        match self.event.kind {
            EventKind::DeliveryDelayed => self.shipment()?.eta.map(|eta| eta.to_string()),
            EventKind::DeliveryAttemptFailed => attr("next_attempt"),
            EventKind::Backordered => attr("backordered_skus"),
            EventKind::ItemsCancelled => attr("cancelled_skus"),
            EventKind::RefundCreated => attr("refund_id").or_else(|| {
                self.refund_amount()
                    .map(|money| format!("{}{}", money.minor, money.currency))
            }),
            EventKind::ReturnRequested | EventKind::ReturnApproved | EventKind::ReturnReceived => {
                attr("return_id").or_else(|| attr("return_skus"))
            }
            _ => None,
        }
    }

    fn shipment(&self) -> Option<&Shipment> {
        self.event
            .shipment
            .as_ref()
            .or_else(|| self.event.order.shipments.last())
    }

    /// The refund from `refund_amount_minor` / `refund_currency` (the order's
    /// currency when absent); `None` when missing or not an integer.
    fn refund_amount(&self) -> Option<Money> {
        let attributes = &self.event.attributes;
        let minor = attributes.get("refund_amount_minor")?.trim().parse().ok()?;
        let currency = attributes
            .get("refund_currency")
            .map_or(&self.event.order.total.currency, |c| c);
        Some(Money::new(minor, currency))
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
