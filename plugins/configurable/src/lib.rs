//! # configurable
//!
//! A reusable plugin whose whole behaviour comes from the merchant's JSON
//! config, so an agency can ship one plugin to many shops: for each event
//! kind, a list of messages to send; optionally, when to open a ticket for a
//! human; optionally, which refund notices an agent must approve first.
//!
//! **An empty config (`{}`) sends nothing**: no rules, no escalation, no
//! actions. The plugin never falls back to defaults; install
//! `standard-lifecycle` for those.
//!
//! ## Example
//!
//! ```json
//! {
//!   "rules": {
//!     "order_created": [
//!       { "channel": "email", "template": "order-confirmation" }
//!     ],
//!     "out_for_delivery": [
//!       { "channel": "sms", "template": "out-for-delivery", "fallback_channels": ["email"] }
//!     ],
//!     "delivered": [
//!       {
//!         "channel": "email", "template": "feedback-request",
//!         "delay_seconds": 259200, "marketing": true,
//!         "min_order_total_minor": 5000,
//!         "cancel_on": ["return_requested", "refund_created"],
//!         "data": { "coupon": "THANKS10" }
//!       },
//!       { "channel": "whatsapp", "template": "vip-thank-you", "required_tag": "vip",
//!         "fallback_channels": ["email"], "priority": "high" }
//!     ],
//!     "refund_created": [
//!       { "channel": "email", "template": "refund-issued" }
//!     ]
//!   },
//!   "escalation": {
//!     "queue": "vip-care", "priority": "high", "sla_minutes": 30,
//!     "event_kinds": ["delivery_delayed", "delivery_attempt_failed"],
//!     "total_above_minor": 20000, "customer_tags": ["vip"]
//!   },
//!   "refund_approval_threshold_minor": 50000
//! }
//! ```
//!
//! ## Config
//!
//! - `rules` (object, default `{}`): keys are event kinds (`order_created`,
//!   `delivered`, …, as in the event JSON); values are lists of rules, each
//!   one message. Every rule whose conditions hold is sent, in order.
//!   - `channel` (required): `email`, `sms`, `whatsapp`, `push` or `webhook`.
//!   - `template` (required): template name (letters, digits, `-`, `_`, `.`).
//!   - `delay_seconds` (optional, at most 90 days): send this long after the
//!     event instead of now.
//!   - `marketing` (default false): a marketing message, which the host only
//!     sends with the customer's opt-in for the channel.
//!   - `priority` (default `normal`): `low`, `normal`, `high` or `urgent`.
//!   - `min_order_total_minor` (optional): only when the order total is at
//!     least this, in minor units of the order's currency.
//!   - `required_tag` (optional): only when the customer carries this tag
//!     (case-insensitive).
//!   - `fallback_channels` (default `[]`): channels to try, in order, when the
//!     preferred one is not possible; none may repeat an earlier one.
//!   - `cancel_on` (default `[]`): event kinds, other than the rule's own,
//!     that withdraw the message while it is still pending (typically a
//!     delayed feedback request withdrawn by a return or refund).
//!   - `data` (default `{}`): fixed string template variables.
//! - `escalation` (optional): a ticket for a human.
//!   - `queue` (required) and `event_kinds` (required, at least one).
//!   - `total_above_minor` (optional) and `customer_tags` (default `[]`): a
//!     ticket is opened for an event of one of `event_kinds` when the order
//!     total is above `total_above_minor` *or* the customer carries one of
//!     `customer_tags`; when neither is given, for every such event.
//!   - `priority` (default `high`) and `sla_minutes` (optional, 1 to 10080).
//!   - No second ticket is opened while one is open in the queue for the order.
//! - `refund_approval_threshold_minor` (optional): `refund_created` messages
//!   are held for an agent's approval when the refund (event attributes
//!   `refund_amount_minor`, `refund_currency`) is above this amount, or has
//!   no readable amount.
//!
//! A config that is not valid — an unknown field, a wrong type, an unknown
//! event kind or channel, a missing `channel`/`template`/`queue`, a value out
//! of range, or rules that would let one event produce more than the host's
//! 32 actions — is rejected with an `invalid-config` rule error naming the
//! field, e.g. ``config field `rules.delivered[0].channel`: unknown variant
//! `fax`, expected one of `email`, …``. `describe()` gives the same rules as a
//! JSON Schema.
//!
//! ## What every message carries
//!
//! Template data: every attribute of the event, then, when the event is about
//! a parcel, `shipment_id`, `carrier`, `tracking_number`, `tracking_url` and
//! `eta` (when known), then the rule's `data`, which wins on a clash.
//!
//! Dedupe key: `<template>:<order id>:<event kind>:<channel>`, then the
//! shipment id when the event is about a parcel, then what tells a new
//! occurrence from a repeat (the new ETA of a delay, the next attempt of a
//! failed delivery, the SKUs of a backorder, cancellation or return, the
//! `refund_id` or amount of a refund). Cancel key of a rule with `cancel_on`:
//! `<template>:<order id>:<event kind>:<channel>`.

mod config;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

pub use config::{
    CHANNELS, Config, EscalationRule, MAX_ACTIONS, MAX_DELAY_SECONDS, MAX_SLA_MINUTES, NotifyRule,
    channel_name, schema,
};

use tidings_sdk::prelude::*;

/// The config-driven rule.
pub struct Configurable;

impl Rule for Configurable {
    fn decide(event: &OrderEvent, ctx: &Context) -> Result<Vec<Action>, RuleError> {
        let config = Config::from_context(ctx)?;
        Ok(actions(event, ctx, &config))
    }

    fn config_schema() -> String {
        schema().to_string()
    }
}

register_rule!(Configurable);

/// What `config` asks for on `event`: cancels first, then messages, then the
/// escalation.
fn actions(event: &OrderEvent, ctx: &Context, config: &Config) -> Vec<Action> {
    let mut actions = Vec::new();

    let mut withdrawn = BTreeSet::new();
    for (kind, rules) in &config.rules {
        for rule in rules.iter().filter(|r| r.cancel_on.contains(&event.kind)) {
            let key = cancel_key(*kind, rule, &event.order);
            if withdrawn.insert(key.clone()) {
                actions.push(cancel(key));
            }
        }
    }

    let hold = approval_reason(event, config);
    let rules = config.rules.get(&event.kind).into_iter().flatten();
    for rule in rules.filter(|rule| applies(rule, event)) {
        actions.push(message(rule, event, hold.clone()));
    }

    if let Some(escalation) = &config.escalation
        && let Some(reason) = escalation_reason(escalation, event)
        && !ctx.has_open_escalation(&escalation.queue)
    {
        let mut ticket = escalate(&escalation.queue, escalation.priority, reason);
        if let Some(minutes) = escalation.sla_minutes {
            ticket = ticket.sla_minutes(minutes);
        }
        actions.push(ticket);
    }
    actions
}

/// Whether the rule's conditions hold for this order.
fn applies(rule: &NotifyRule, event: &OrderEvent) -> bool {
    let order = &event.order;
    let total_ok = rule
        .min_order_total_minor
        .is_none_or(|minimum| order.total.minor >= minimum);
    let tag_ok = rule
        .required_tag
        .as_deref()
        .is_none_or(|tag| order.customer.has_tag(tag));
    total_ok && tag_ok
}

/// The rule's message for `event`, sent or, with `hold`, held for approval.
fn message(rule: &NotifyRule, event: &OrderEvent, hold: Option<String>) -> Action {
    let mut action = match hold {
        Some(reason) => hold_for_approval(rule.channel, &rule.template, reason),
        None => notify(rule.channel, &rule.template),
    };
    for channel in &rule.fallback_channels {
        action = action.fallback(*channel);
    }
    action = action
        .priority(rule.priority)
        .dedupe(dedupe_key(event.kind, rule, event));
    if rule.marketing {
        action = action.marketing();
    }
    if let Some(seconds) = rule.delay_seconds {
        // Checked against MAX_DELAY_SECONDS, far inside `Span`'s range.
        let seconds = i64::try_from(seconds.min(MAX_DELAY_SECONDS)).unwrap_or_default();
        action = action.after(Span::new().seconds(seconds));
    }
    if !rule.cancel_on.is_empty() {
        action = action.cancel_key(cancel_key(event.kind, rule, &event.order));
    }
    for (key, value) in &event.attributes {
        action = action.with(key, value);
    }
    if let Some(shipment) = &event.shipment {
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
    for (key, value) in &rule.data {
        action = action.with(key, value);
    }
    action
}

/// `<template>:<order id>:<kind>:<channel>[:<shipment id>][:<occurrence>]`.
fn dedupe_key(kind: EventKind, rule: &NotifyRule, event: &OrderEvent) -> String {
    let mut key = cancel_key(kind, rule, &event.order);
    let shipment = event.shipment.as_ref().map(|s| s.id.clone());
    for part in [shipment, occurrence(event)].into_iter().flatten() {
        if !part.is_empty() {
            key.push(':');
            key.push_str(&part);
        }
    }
    key
}

/// `<template>:<order id>:<kind>:<channel>`: one key per rule and order, so
/// any later event can withdraw it.
fn cancel_key(kind: EventKind, rule: &NotifyRule, order: &Order) -> String {
    format!(
        "{}:{}:{kind}:{}",
        rule.template,
        order.id,
        channel_name(rule.channel)
    )
}

/// What tells this occurrence of an event kind apart from a repeat.
fn occurrence(event: &OrderEvent) -> Option<String> {
    let attr = |key: &str| event.attributes.get(key).cloned();
    match event.kind {
        EventKind::DeliveryDelayed => event.shipment.as_ref()?.eta.map(|eta| eta.to_string()),
        EventKind::DeliveryAttemptFailed => attr("next_attempt"),
        EventKind::Backordered => attr("backordered_skus"),
        EventKind::ItemsCancelled => attr("cancelled_skus"),
        EventKind::RefundCreated => attr("refund_id").or_else(|| {
            refund_amount(event).map(|money| format!("{}{}", money.minor, money.currency))
        }),
        EventKind::ReturnRequested | EventKind::ReturnApproved | EventKind::ReturnReceived => {
            attr("return_id").or_else(|| attr("return_skus"))
        }
        _ => None,
    }
}

/// Why a refund notice must wait for an agent, if it must.
fn approval_reason(event: &OrderEvent, config: &Config) -> Option<String> {
    let threshold = config.refund_approval_threshold_minor?;
    if event.kind != EventKind::RefundCreated {
        return None;
    }
    let number = &event.order.number;
    match refund_amount(event) {
        None => Some(format!(
            "Refund on order {number} has no readable amount; check it before the customer is told"
        )),
        Some(amount) if amount.minor > threshold => Some(format!(
            "Refund of {} on order {number} is above the {} approval threshold",
            format_money(&amount),
            format_money(&Money::new(threshold, &amount.currency))
        )),
        Some(_) => None,
    }
}

/// Why this event calls for a ticket, if it does.
fn escalation_reason(rule: &EscalationRule, event: &OrderEvent) -> Option<String> {
    if !rule.event_kinds.contains(&event.kind) {
        return None;
    }
    let order = &event.order;
    let mut why = Vec::new();
    if let Some(limit) = rule.total_above_minor
        && order.total.minor > limit
    {
        why.push(format!(
            "total {} is above {}",
            format_money(&order.total),
            format_money(&Money::new(limit, &order.total.currency))
        ));
    }
    if let Some(tag) = rule
        .customer_tags
        .iter()
        .find(|tag| order.customer.has_tag(tag))
    {
        why.push(format!("customer tagged `{tag}`"));
    }
    let unconditional = rule.total_above_minor.is_none() && rule.customer_tags.is_empty();
    if why.is_empty() && !unconditional {
        return None;
    }
    let what = event.kind.as_str().replace('_', " ");
    let mut reason = format!("Order {}: {what}", order.number);
    if !why.is_empty() {
        reason.push_str(&format!(" ({})", why.join("; ")));
    }
    Some(reason)
}

/// The refund from `refund_amount_minor` / `refund_currency` (the order's
/// currency when absent); `None` when missing or not an integer.
fn refund_amount(event: &OrderEvent) -> Option<Money> {
    let minor = event
        .attributes
        .get("refund_amount_minor")?
        .trim()
        .parse()
        .ok()?;
    let currency = event
        .attributes
        .get("refund_currency")
        .map_or(&event.order.total.currency, |c| c);
    Some(Money::new(minor, currency))
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
