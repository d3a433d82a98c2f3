//! The merchant's config for `configurable`: parsed with serde (which names
//! the offending field), then checked for what serde cannot express (known
//! event kinds as map keys, ranges, non-empty names), and described by a
//! JSON Schema built from the same lists of event kinds and channels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidings_sdk::prelude::*;

/// The checked config: rules per event kind, an optional escalation, an
/// optional refund approval threshold. `{}` means no actions at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Notification rules for each event kind, in the order given.
    pub rules: BTreeMap<EventKind, Vec<NotifyRule>>,
    /// When to open a ticket for a human.
    pub escalation: Option<EscalationRule>,
    /// Refund notices above this amount (minor units) wait for approval.
    pub refund_approval_threshold_minor: Option<i64>,
}

/// The config as written, before its map keys are checked.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    rules: BTreeMap<String, Vec<NotifyRule>>,
    escalation: Option<EscalationRule>,
    refund_approval_threshold_minor: Option<i64>,
}

/// One message to send when an event of the rule's kind arrives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRule {
    /// Preferred channel.
    pub channel: Channel,
    /// Template name.
    pub template: String,
    /// Send this many seconds after the event instead of now.
    #[serde(default)]
    pub delay_seconds: Option<u64>,
    /// A marketing message: sent only with the customer's opt-in.
    #[serde(default)]
    pub marketing: bool,
    /// Message priority (default normal).
    #[serde(default)]
    pub priority: Priority,
    /// Only for orders whose total is at least this (minor units).
    #[serde(default)]
    pub min_order_total_minor: Option<i64>,
    /// Only for customers with this tag (case-insensitive).
    #[serde(default)]
    pub required_tag: Option<String>,
    /// Channels to try, in order, when the preferred one is not possible.
    #[serde(default)]
    pub fallback_channels: Vec<Channel>,
    /// Event kinds that withdraw this message while it is still pending.
    #[serde(default)]
    pub cancel_on: Vec<EventKind>,
    /// Fixed template variables, e.g. a coupon code.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// When to bring in a human.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationRule {
    /// Queue for the ticket.
    pub queue: String,
    /// Ticket priority (default high).
    #[serde(default = "high")]
    pub priority: Priority,
    /// Event kinds that may escalate.
    pub event_kinds: Vec<EventKind>,
    /// Escalate when the order total is above this (minor units).
    #[serde(default)]
    pub total_above_minor: Option<i64>,
    /// Escalate when the customer carries one of these tags.
    #[serde(default)]
    pub customer_tags: Vec<String>,
    /// Minutes before an unacknowledged ticket moves up a tier.
    #[serde(default)]
    pub sla_minutes: Option<u32>,
}

fn high() -> Priority {
    Priority::High
}

/// Longest delay a rule may ask for: 90 days, in seconds.
pub const MAX_DELAY_SECONDS: u64 = 90 * 86_400;

/// Most actions the host accepts from one decision.
pub const MAX_ACTIONS: usize = 32;

/// Longest SLA an escalation may ask for: one week, in minutes.
pub const MAX_SLA_MINUTES: u32 = 7 * 24 * 60;

/// Every channel, in contract order.
pub const CHANNELS: [Channel; 5] = [
    Channel::Email,
    Channel::Sms,
    Channel::Whatsapp,
    Channel::Push,
    Channel::Webhook,
];

/// The JSON name of `channel`.
pub fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Sms => "sms",
        Channel::Whatsapp => "whatsapp",
        Channel::Push => "push",
        Channel::Webhook => "webhook",
    }
}

impl Config {
    /// The config in `ctx`, parsed and checked; an `invalid-config` rule
    /// error naming the field otherwise.
    pub fn from_context(ctx: &Context) -> Result<Self, RuleError> {
        // Serde would also read a struct from a JSON array, field by field.
        if !ctx.config.is_object() {
            return Err(invalid(".", "must be a JSON object"));
        }
        let raw: RawConfig = ctx.config()?;
        let mut rules = BTreeMap::new();
        for (key, list) in raw.rules {
            let kind = EventKind::ALL
                .into_iter()
                .find(|kind| kind.as_str() == key)
                .ok_or_else(|| {
                    invalid(
                        &format!("rules.{key}"),
                        format!(
                            "unknown event kind `{key}`, expected one of {}",
                            kind_names()
                        ),
                    )
                })?;
            for (index, rule) in list.iter().enumerate() {
                rule.check(kind, &format!("rules.{key}[{index}]"))?;
            }
            rules.insert(kind, list);
        }
        if let Some(escalation) = &raw.escalation {
            escalation.check()?;
        }
        if let Some(threshold) = raw.refund_approval_threshold_minor {
            non_negative("refund_approval_threshold_minor", threshold)?;
        }
        let config = Config {
            rules,
            escalation: raw.escalation,
            refund_approval_threshold_minor: raw.refund_approval_threshold_minor,
        };
        config.check_action_limit()?;
        Ok(config)
    }

    /// The most actions an event of `kind` can produce: its rules, the
    /// cancels of rules it withdraws, and one escalation.
    pub fn max_actions(&self, kind: EventKind) -> usize {
        let rules = self.rules.get(&kind).map_or(0, Vec::len);
        let cancels = self
            .rules
            .values()
            .flatten()
            .filter(|rule| rule.cancel_on.contains(&kind))
            .count();
        let escalation = self
            .escalation
            .as_ref()
            .is_some_and(|e| e.event_kinds.contains(&kind));
        rules + cancels + usize::from(escalation)
    }

    /// Reject configs under which one event could exceed the host's limit on
    /// actions per decision, rather than fail on that event later.
    fn check_action_limit(&self) -> Result<(), RuleError> {
        for kind in EventKind::ALL {
            let most = self.max_actions(kind);
            if most > MAX_ACTIONS {
                return Err(invalid(
                    &format!("rules.{kind}"),
                    format!(
                        "a `{kind}` event could produce {most} actions (its rules, the rules it cancels \
                         and the escalation); the host accepts at most {MAX_ACTIONS}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl NotifyRule {
    fn check(&self, kind: EventKind, path: &str) -> Result<(), RuleError> {
        let field = |name: &str| format!("{path}.{name}");
        if !is_template_name(&self.template) {
            return Err(invalid(
                &field("template"),
                format!(
                    "`{}` is not a template name (letters, digits, `-`, `_`, `.`)",
                    self.template
                ),
            ));
        }
        if let Some(delay) = self.delay_seconds
            && delay > MAX_DELAY_SECONDS
        {
            return Err(invalid(
                &field("delay_seconds"),
                format!("must be at most {MAX_DELAY_SECONDS} (90 days), got {delay}"),
            ));
        }
        if let Some(minimum) = self.min_order_total_minor {
            non_negative(&field("min_order_total_minor"), minimum)?;
        }
        if self
            .required_tag
            .as_deref()
            .is_some_and(|tag| tag.trim().is_empty())
        {
            return Err(invalid(&field("required_tag"), "must not be empty"));
        }
        for (index, channel) in self.fallback_channels.iter().enumerate() {
            if *channel == self.channel || self.fallback_channels[..index].contains(channel) {
                return Err(invalid(
                    &format!("{path}.fallback_channels[{index}]"),
                    format!("`{}` is already tried before", channel_name(*channel)),
                ));
            }
        }
        if let Some(index) = self.cancel_on.iter().position(|k| *k == kind) {
            return Err(invalid(
                &format!("{path}.cancel_on[{index}]"),
                format!("a `{kind}` rule cannot be cancelled by `{kind}` itself"),
            ));
        }
        Ok(())
    }
}

impl EscalationRule {
    fn check(&self) -> Result<(), RuleError> {
        if self.queue.trim().is_empty() {
            return Err(invalid("escalation.queue", "must not be empty"));
        }
        if self.event_kinds.is_empty() {
            return Err(invalid(
                "escalation.event_kinds",
                "must list at least one event kind",
            ));
        }
        if let Some(total) = self.total_above_minor {
            non_negative("escalation.total_above_minor", total)?;
        }
        if let Some(index) = self.customer_tags.iter().position(|t| t.trim().is_empty()) {
            return Err(invalid(
                &format!("escalation.customer_tags[{index}]"),
                "must not be empty",
            ));
        }
        if let Some(minutes) = self.sla_minutes
            && !(1..=MAX_SLA_MINUTES).contains(&minutes)
        {
            return Err(invalid(
                "escalation.sla_minutes",
                format!("must be between 1 and {MAX_SLA_MINUTES}, got {minutes}"),
            ));
        }
        Ok(())
    }
}

fn is_template_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn non_negative(field: &str, value: i64) -> Result<(), RuleError> {
    if value < 0 {
        return Err(invalid(field, format!("must not be negative, got {value}")));
    }
    Ok(())
}

fn kind_names() -> String {
    EventKind::ALL
        .iter()
        .map(|kind| format!("`{kind}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An `invalid-config` error worded like the SDK's own parse errors.
fn invalid(field: &str, problem: impl std::fmt::Display) -> RuleError {
    RuleError::new(
        "invalid-config",
        format!("config field `{field}`: {problem}"),
    )
}

/// JSON Schema (draft 2020-12) of the config, as returned by `describe()`.
pub fn schema() -> Value {
    let kinds: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
    let channels: Vec<&str> = CHANNELS.iter().map(|c| channel_name(*c)).collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "configurable config",
        "description": "Notification rules per event kind, an optional escalation and an optional refund approval threshold. An empty object sends nothing.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "rules": {
                "description": "For each event kind, the messages to send, in order.",
                "type": "object",
                "propertyNames": { "$ref": "#/$defs/event_kind" },
                "additionalProperties": {
                    "type": "array",
                    "items": { "$ref": "#/$defs/rule" }
                },
                "default": {}
            },
            "escalation": { "$ref": "#/$defs/escalation" },
            "refund_approval_threshold_minor": {
                "description": "Refund notices for amounts above this, in minor units, or without a readable amount, are held for an agent's approval.",
                "type": "integer",
                "minimum": 0
            }
        },
        "$defs": {
            "event_kind": { "enum": kinds },
            "channel": { "enum": channels },
            "priority": { "enum": ["low", "normal", "high", "urgent"] },
            "rule": {
                "description": "One message to send when an event of this kind arrives.",
                "type": "object",
                "additionalProperties": false,
                "required": ["channel", "template"],
                "properties": {
                    "channel": {
                        "description": "Preferred channel.",
                        "$ref": "#/$defs/channel"
                    },
                    "template": {
                        "description": "Template name.",
                        "type": "string",
                        "pattern": "^[A-Za-z0-9._-]{1,100}$"
                    },
                    "delay_seconds": {
                        "description": "Send this many seconds after the event instead of now.",
                        "type": "integer",
                        "minimum": 0,
                        "maximum": MAX_DELAY_SECONDS
                    },
                    "marketing": {
                        "description": "A marketing message: sent only with the customer's opt-in for the channel.",
                        "type": "boolean",
                        "default": false
                    },
                    "priority": {
                        "description": "Message priority.",
                        "$ref": "#/$defs/priority",
                        "default": "normal"
                    },
                    "min_order_total_minor": {
                        "description": "Only for orders whose total is at least this, in minor units.",
                        "type": "integer",
                        "minimum": 0
                    },
                    "required_tag": {
                        "description": "Only for customers with this tag (case-insensitive).",
                        "type": "string",
                        "pattern": "\\S"
                    },
                    "fallback_channels": {
                        "description": "Channels to try, in order, when the preferred one is not possible.",
                        "type": "array",
                        "items": { "$ref": "#/$defs/channel" },
                        "uniqueItems": true,
                        "default": []
                    },
                    "cancel_on": {
                        "description": "Event kinds that withdraw this message while it is still pending (other than the rule's own kind).",
                        "type": "array",
                        "items": { "$ref": "#/$defs/event_kind" },
                        "uniqueItems": true,
                        "default": []
                    },
                    "data": {
                        "description": "Fixed template variables.",
                        "type": "object",
                        "additionalProperties": { "type": "string" },
                        "default": {}
                    }
                }
            },
            "escalation": {
                "description": "Open a ticket when an event of one of these kinds arrives and the order total is above total_above_minor or the customer carries one of customer_tags (always, when neither is given).",
                "type": "object",
                "additionalProperties": false,
                "required": ["queue", "event_kinds"],
                "properties": {
                    "queue": {
                        "description": "Queue for the ticket.",
                        "type": "string",
                        "pattern": "\\S"
                    },
                    "priority": {
                        "description": "Ticket priority.",
                        "$ref": "#/$defs/priority",
                        "default": "high"
                    },
                    "event_kinds": {
                        "description": "Event kinds that may escalate.",
                        "type": "array",
                        "items": { "$ref": "#/$defs/event_kind" },
                        "minItems": 1,
                        "uniqueItems": true
                    },
                    "total_above_minor": {
                        "description": "Escalate when the order total is above this, in minor units.",
                        "type": "integer",
                        "minimum": 0
                    },
                    "customer_tags": {
                        "description": "Escalate when the customer carries one of these tags (case-insensitive).",
                        "type": "array",
                        "items": { "type": "string", "pattern": "\\S" },
                        "default": []
                    },
                    "sla_minutes": {
                        "description": "Minutes before an unacknowledged ticket moves to the next tier.",
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_SLA_MINUTES
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names serde writes for `value`, sorted.
    fn fields(value: impl Serialize) -> Vec<String> {
        let value = serde_json::to_value(value).expect("serialisable");
        value
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The property names the schema gives at `pointer`, sorted.
    fn properties(pointer: &str) -> Vec<String> {
        let schema = schema();
        let properties = schema.pointer(pointer).and_then(Value::as_object);
        let mut names: Vec<String> = properties
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn schema_properties_are_exactly_the_config_fields() {
        let rule = NotifyRule {
            channel: Channel::Email,
            template: "t".to_owned(),
            delay_seconds: None,
            marketing: false,
            priority: Priority::Normal,
            min_order_total_minor: None,
            required_tag: None,
            fallback_channels: Vec::new(),
            cancel_on: Vec::new(),
            data: BTreeMap::new(),
        };
        let escalation = EscalationRule {
            queue: "q".to_owned(),
            priority: Priority::High,
            event_kinds: Vec::new(),
            total_above_minor: None,
            customer_tags: Vec::new(),
            sla_minutes: None,
        };
        assert_eq!(fields(RawConfig::default()), properties("/properties"));
        assert_eq!(fields(rule), properties("/$defs/rule/properties"));
        assert_eq!(
            fields(escalation),
            properties("/$defs/escalation/properties")
        );
    }

    #[test]
    fn schema_enums_are_the_sdk_names() {
        let schema = schema();
        let kinds: Vec<String> = EventKind::ALL
            .iter()
            .map(|kind| serde_json::to_value(kind).expect("serialisable"))
            .filter_map(|value| value.as_str().map(str::to_owned))
            .collect();
        assert_eq!(schema["$defs"]["event_kind"]["enum"], json!(kinds));
        for channel in CHANNELS {
            assert_eq!(
                serde_json::to_value(channel).expect("serialisable"),
                json!(channel_name(channel))
            );
        }
        for priority in [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Urgent,
        ] {
            let name = serde_json::to_value(priority).expect("serialisable");
            let listed = schema["$defs"]["priority"]["enum"]
                .as_array()
                .is_some_and(|names| names.contains(&name));
            assert!(listed, "{name}");
        }
    }
}
