//! The merchant's config for `standard-lifecycle`: four optional fields,
//! validated after parsing, and the JSON Schema that describes them.

use serde::Deserialize;
use tidings_sdk::prelude::*;

/// What a merchant may tune. Every field is optional; `{}` gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Orders whose total is above this many minor units of the order's own
    /// currency get a `vip-care` escalation when delayed (default 20000).
    pub vip_threshold_minor: i64,
    /// Customers with this tag (case-insensitive) count as VIPs whatever the
    /// order total (default `"vip"`).
    pub vip_tag: String,
    /// Days after delivery to ask for feedback (default 3, 1 to 60).
    pub feedback_delay_days: u32,
    /// Whether SMS may be used at all (default true). Even when allowed, SMS
    /// is only used for customers who consented to it.
    pub sms: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vip_threshold_minor: 20_000,
            vip_tag: "vip".to_owned(),
            feedback_delay_days: 3,
            sms: true,
        }
    }
}

/// Longest feedback delay a merchant may configure, in days.
const MAX_FEEDBACK_DELAY_DAYS: u32 = 60;

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
        if self.vip_threshold_minor < 0 {
            return Err(invalid(
                "vip_threshold_minor",
                format!("must not be negative, got {}", self.vip_threshold_minor),
            ));
        }
        if self.vip_tag.trim().is_empty() {
            return Err(invalid("vip_tag", "must not be empty"));
        }
        if !(1..=MAX_FEEDBACK_DELAY_DAYS).contains(&self.feedback_delay_days) {
            return Err(invalid(
                "feedback_delay_days",
                format!(
                    "must be between 1 and {MAX_FEEDBACK_DELAY_DAYS}, got {}",
                    self.feedback_delay_days
                ),
            ));
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
  "title": "standard-lifecycle config",
  "description": "Tunes the default notification rules. Every field is optional.",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "vip_threshold_minor": {
      "description": "Orders whose total is above this amount, in minor units of the order's currency, are escalated to the vip-care queue when delayed.",
      "type": "integer",
      "minimum": 0,
      "default": 20000
    },
    "vip_tag": {
      "description": "Customer tag (case-insensitive) that marks a VIP.",
      "type": "string",
      "minLength": 1,
      "pattern": "\\S",
      "default": "vip"
    },
    "feedback_delay_days": {
      "description": "Days after delivery to send the feedback request.",
      "type": "integer",
      "minimum": 1,
      "maximum": 60,
      "default": 3
    },
    "sms": {
      "description": "Allow SMS for out-for-delivery and failed-delivery notices, to customers who consented to SMS.",
      "type": "boolean",
      "default": true
    }
  }
}"#;
