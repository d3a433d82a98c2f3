//! A tenant's settings: shop details for templates and email, the policy,
//! sandbox limits, and what happens when a plugin fails.

use serde::{Deserialize, Serialize};

use crate::decide::Limits;
use crate::policy::PolicyConfig;
use crate::render::ShopInfo;

/// Everything a tenant can configure, stored as JSON on the tenant. Every
/// field has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Shop name, URL and support address, shown in templates.
    pub shop: Shop,
    /// Sender identity for email.
    pub email: EmailSettings,
    /// Consent, quiet hours, dedupe and frequency caps.
    pub policy: PolicyConfig,
    /// Sandbox limits for this tenant's decisions.
    pub limits: Limits,
    /// What to do when a plugin faults or returns a rule error.
    pub on_plugin_failure: FailureFallback,
    /// Escalation queues (tiers of agents) and approvals.
    pub escalation: EscalationSettings,
    /// How hand-offs to transports are retried.
    pub delivery: DeliverySettings,
}

/// Delivery settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

/// Exponential backoff with jitter for transient failures; permanent ones
/// and exhausted retries become dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay after the first failure, seconds; doubles each time.
    pub base_secs: u64,
    /// Longest delay, seconds.
    pub cap_secs: u64,
    /// Random spread of each delay, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 8 attempts over about 30 minutes: 15 s, 30 s, 1, 2, 4, 8, 10 min (±20 %).
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_secs: 15,
            cap_secs: 600,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed + 1`, after `failed` failures;
    /// `random` in `[0, 1)` places it within the jitter.
    pub fn delay(&self, failed: u32, random: f64) -> std::time::Duration {
        let exponent = failed.saturating_sub(1).min(30);
        let base = self
            .base_secs
            .saturating_mul(1u64 << exponent)
            .min(self.cap_secs) as f64;
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - spread + 2.0 * spread * random.clamp(0.0, 1.0);
        std::time::Duration::from_secs_f64((base * factor).max(0.0))
    }
}

/// Escalation queues and the approval rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EscalationSettings {
    /// Queues by name, each a ladder of tiers. A queue without settings has
    /// no tiers: its tickets wait in the API, and breach after the action's
    /// `sla_minutes` if it gave one.
    pub queues: std::collections::BTreeMap<String, QueueSettings>,
    /// Messages held for approval.
    pub approval: ApprovalSettings,
}

/// A queue's ladder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Tier 1 first; each is notified when the one before it ran out of time.
    pub tiers: Vec<Tier>,
}

/// One tier of agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Minutes this tier has to acknowledge before the next tier is notified
    /// (for tier 1, the action's `sla_minutes` wins when given).
    pub minutes: u32,
    /// Agents' email addresses.
    #[serde(default)]
    pub emails: Vec<String>,
    /// A chat tool's incoming webhook, or any URL taking a JSON POST.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// What happens to held messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalSettings {
    /// The queue whose tiers review held messages.
    pub queue: String,
    /// Minutes from when a message is held until it expires, whatever the
    /// queue's tiers: they are notified by their own minutes, and expiry is
    /// a separate deadline on which `on_expiry` applies.
    pub expire_minutes: u32,
    /// What expiry does; a held message is never sent unapproved.
    pub on_expiry: ExpiryAction,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            queue: "approvals".into(),
            expire_minutes: 24 * 60,
            on_expiry: ExpiryAction::Escalate,
        }
    }
}

/// What an expired approval does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryAction {
    /// Notify the approval queue's next tier at once, then go on by its
    /// minutes (at the last tier: breached); the message stays held. An
    /// acknowledged ticket is not escalated.
    #[default]
    Escalate,
    /// Reject the message.
    Reject,
}

/// The shop as customers know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shop {
    /// Shop name.
    pub name: String,
    /// Home page.
    pub url: String,
    /// Customer support address.
    pub support_email: String,
}

impl Default for Shop {
    fn default() -> Self {
        Self {
            name: "Our shop".into(),
            url: "https://shop.example.com".into(),
            support_email: "support@shop.example.com".into(),
        }
    }
}

impl Shop {
    /// As templates see it.
    pub fn info(&self) -> ShopInfo {
        ShopInfo {
            name: self.name.clone(),
            url: self.url.clone(),
            support_email: self.support_email.clone(),
        }
    }
}

/// Email sender settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailSettings {
    /// `From:` address, e.g. `Bottega <orders@bottega.example>`; default:
    /// the shop name at `no-reply@` the support address's domain.
    pub from: Option<String>,
    /// `Reply-To:` address; default: the support address.
    pub reply_to: Option<String>,
}

/// The fallback when a plugin fails; never a silent drop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureFallback {
    /// Open a ticket in the `plugin-faults` queue with the event attached.
    #[default]
    Escalate,
    /// Only record the failure (audit log, decision, metrics).
    Record,
}

impl TenantSettings {
    /// Parse settings JSON, naming the offending field.
    pub fn from_json(text: &str) -> Result<Self, tidings_sdk::types::JsonError> {
        tidings_sdk::types::from_json(text)
    }

    /// The `From:` address for email.
    pub fn email_from(&self) -> String {
        self.email.from.clone().unwrap_or_else(|| {
            let domain = self
                .shop
                .support_email
                .split_once('@')
                .map_or("localhost", |(_, d)| d);
            format!(
                "{} <no-reply@{domain}>",
                self.shop.name.replace(['<', '>', '"'], "")
            )
        })
    }

    /// The `Reply-To:` address for email.
    pub fn email_reply_to(&self) -> String {
        self.email
            .reply_to
            .clone()
            .unwrap_or_else(|| self.shop.support_email.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_settings_take_every_default() {
        let s = TenantSettings::from_json("{}").expect("valid");
        assert_eq!(s, TenantSettings::default());
        assert_eq!(s.email_from(), "Our shop <no-reply@shop.example.com>");
    }

    #[test]
    fn default_retries_are_eight_attempts_over_about_half_an_hour() {
        let retry = RetryPolicy::default();
        let delays: Vec<u64> = (1..retry.max_attempts)
            .map(|n| retry.delay(n, 0.5).as_secs())
            .collect();
        assert_eq!(delays, [15, 30, 60, 120, 240, 480, 600]);
        let total: u64 = delays.iter().sum();
        assert!((25 * 60..=35 * 60).contains(&total), "{total} s");
        // Jitter stays within ±20 %.
        assert_eq!(retry.delay(3, 0.0).as_secs(), 48);
        assert_eq!(retry.delay(3, 1.0).as_secs(), 72);
    }

    #[test]
    fn a_wrong_setting_is_named() {
        let err =
            TenantSettings::from_json(r#"{"limits": {"fuel": "lots"}}"#).expect_err("invalid");
        assert_eq!(err.path, "limits.fuel");
    }
}
