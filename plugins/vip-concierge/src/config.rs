//! The merchant's config for `vip-concierge`: who counts as a VIP, where
//! tickets go and how fast, which refunds need approval; validated after
//! parsing, and the JSON Schema that describes it.

use serde::Deserialize;
use tidings_sdk::prelude::*;

/// What a merchant may tune. Every field is optional; `{}` gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Customers with this tag (case-insensitive) are VIPs (default `"vip"`).
    pub vip_tag: String,
    /// Orders whose total is above this many minor units of the order's
    /// currency are VIP orders whoever placed them (default 50000).
    pub vip_threshold_minor: i64,
    /// Escalations about orders whose total is above this are urgent
    /// (default 200000).
    pub urgent_threshold_minor: i64,
    /// Refunds above this many minor units wait for an agent's approval
    /// before the customer is told (default 25000).
    pub refund_approval_threshold_minor: i64,
    /// Queue for VIP delivery problems (default `"vip-care"`).
    pub queue: String,
    /// Minutes before an unacknowledged VIP ticket moves up a tier (default 30).
    pub sla_minutes: u32,
    /// Queue for high-risk orders (default `"risk-review"`).
    pub risk_queue: String,
    /// Minutes before an unacknowledged risk ticket moves up a tier (default 60).
    pub risk_sla_minutes: u32,
    /// Whether VIPs are messaged on WhatsApp first (default true).
    pub whatsapp: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vip_tag: "vip".to_owned(),
            vip_threshold_minor: 50_000,
            urgent_threshold_minor: 200_000,
            refund_approval_threshold_minor: 25_000,
            queue: "vip-care".to_owned(),
            sla_minutes: 30,
            risk_queue: "risk-review".to_owned(),
            risk_sla_minutes: 60,
            whatsapp: true,
        }
    }
}

/// Longest SLA a merchant may configure: one week.
const MAX_SLA_MINUTES: u32 = 7 * 24 * 60;

impl Config {
    /// The config in `ctx`, parsed and checked; an `invalid-config` rule
    /// error naming the field otherwise.
    pub fn from_context(ctx: &Context) -> Result<Self, RuleError> {
        // Serde would also read a struct from a JSON array, field by field.
        if !ctx.config.is_object() {
            return Err(invalid(".", "must be a JSON object"));
        }
        let config: Config = ctx.config()?;
        config.validate()
    }

    fn validate(self) -> Result<Self, RuleError> {
        for (field, value) in [
            ("vip_threshold_minor", self.vip_threshold_minor),
            ("urgent_threshold_minor", self.urgent_threshold_minor),
            (
                "refund_approval_threshold_minor",
                self.refund_approval_threshold_minor,
            ),
        ] {
            if value < 0 {
                return Err(invalid(field, format!("must not be negative, got {value}")));
            }
        }
        for (field, value) in [
            ("vip_tag", &self.vip_tag),
            ("queue", &self.queue),
            ("risk_queue", &self.risk_queue),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        for (field, value) in [
            ("sla_minutes", self.sla_minutes),
            ("risk_sla_minutes", self.risk_sla_minutes),
        ] {
            if !(1..=MAX_SLA_MINUTES).contains(&value) {
                return Err(invalid(
                    field,
                    format!("must be between 1 and {MAX_SLA_MINUTES}, got {value}"),
                ));
            }
        }
        Ok(self)
    }
}

/// An `invalid-config` error worded like the SDK's own parse errors.
fn invalid(field: &str, problem: impl std::fmt::Display) -> RuleError {
    RuleError::new(
        "invalid-config",
        format!("config field `{field}`: {problem}"),
    )
}

/// JSON Schema (draft 2020-12) of [`Config`], as returned by `describe()`.
pub const CONFIG_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "vip-concierge config",
  "description": "Who counts as a VIP, where tickets go and how fast, which refunds need approval. Every field is optional.",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "vip_tag": {
      "description": "Customer tag (case-insensitive) that marks a VIP.",
      "type": "string",
      "minLength": 1,
      "pattern": "\\S",
      "default": "vip"
    },
    "vip_threshold_minor": {
      "description": "Orders whose total is above this amount, in minor units of the order's currency, are VIP orders.",
      "type": "integer",
      "minimum": 0,
      "default": 50000
    },
    "urgent_threshold_minor": {
      "description": "Escalations about orders whose total is above this amount are urgent rather than high priority.",
      "type": "integer",
      "minimum": 0,
      "default": 200000
    },
    "refund_approval_threshold_minor": {
      "description": "Refund notices for amounts above this, in minor units, wait for an agent's approval.",
      "type": "integer",
      "minimum": 0,
      "default": 25000
    },
    "queue": {
      "description": "Escalation queue for VIP delivery problems.",
      "type": "string",
      "minLength": 1,
      "pattern": "\\S",
      "default": "vip-care"
    },
    "sla_minutes": {
      "description": "Minutes before an unacknowledged VIP ticket moves to the next tier.",
      "type": "integer",
      "minimum": 1,
      "maximum": 10080,
      "default": 30
    },
    "risk_queue": {
      "description": "Escalation queue for high-risk orders.",
      "type": "string",
      "minLength": 1,
      "pattern": "\\S",
      "default": "risk-review"
    },
    "risk_sla_minutes": {
      "description": "Minutes before an unacknowledged risk ticket moves to the next tier.",
      "type": "integer",
      "minimum": 1,
      "maximum": 10080,
      "default": 60
    },
    "whatsapp": {
      "description": "Message VIPs on WhatsApp first (with email as fallback) when the host has their phone number.",
      "type": "boolean",
      "default": true
    }
  }
}"#;
