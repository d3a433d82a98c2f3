//! What a plugin asks the host to do, and the builders to say it briefly.
//!
//! ```
//! use tidings_sdk::prelude::*;
//!
//! let actions = vec![
//!     notify(Channel::Email, "order-shipped").dedupe("shipped:1042"),
//!     notify(Channel::Email, "feedback-request")
//!         .after(Span::new().days(3))
//!         .marketing()
//!         .cancel_key("feedback:1042"),
//!     escalate("vip-care", Priority::High, "VIP order delayed").sla_minutes(30),
//! ];
//! assert_eq!(actions.len(), 3);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Category, Channel, Priority, Span, Timestamp};

/// When a notification should go out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Timing {
    /// As soon as policy allows.
    #[default]
    Now,
    /// This many seconds after the event's processing time.
    After {
        /// Delay in seconds.
        seconds: u64,
    },
    /// At this moment (in the past means now).
    At {
        /// When to send.
        at: Timestamp,
    },
}

/// A message for the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Preferred channel.
    pub channel: Channel,
    /// Template name, e.g. `"order-shipped"`.
    pub template: String,
    /// Locale to render in; the customer's locale when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// When to send.
    #[serde(default)]
    pub timing: Timing,
    /// Transactional or marketing.
    #[serde(default)]
    pub category: Category,
    /// Urgency.
    #[serde(default)]
    pub priority: Priority,
    /// Messages with the same key are sent once (per dedupe window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// A later `cancel` with this key withdraws the message if still pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_key: Option<String>,
    /// Channels to try, in order, when the preferred one is not possible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_channels: Vec<Channel>,
    /// Extra template variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// A ticket for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalate {
    /// Queue name, e.g. `"vip-care"`.
    pub queue: String,
    /// Ticket priority.
    pub priority: Priority,
    /// Why a human is needed, shown to the agent.
    pub reason: String,
    /// Minutes before the ticket moves to the next tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_minutes: Option<u32>,
}

/// What the plugin wants the host to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send a notification (subject to the host's policy).
    Notify(Notify),
    /// Open an escalation ticket.
    Escalate(Escalate),
    /// Render a message and hold it until an agent approves it.
    HoldForApproval {
        /// The message to hold.
        notify: Notify,
        /// Why approval is needed, shown to the agent.
        reason: String,
    },
    /// Withdraw pending messages with this cancel key.
    Cancel {
        /// The key given to [`Action::cancel_key`] earlier.
        cancel_key: String,
    },
}

/// A plugin's own, expected failure (bad config, unusable event).
///
/// Faults — traps, timeouts, running out of fuel — are detected by the host
/// and are never a `RuleError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleError {
    /// Short machine-readable code, e.g. `"invalid-config"`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl RuleError {
    /// A rule error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RuleError {}

/// Send `template` to the customer on `channel`, now, as a transactional,
/// normal-priority message. Refine with the builder methods on [`Action`].
pub fn notify(channel: Channel, template: &str) -> Action {
    Action::Notify(message(channel, template))
}

/// Open a ticket in `queue` for a human.
pub fn escalate(queue: &str, priority: Priority, reason: impl Into<String>) -> Action {
    Action::Escalate(Escalate {
        queue: queue.to_owned(),
        priority,
        reason: reason.into(),
        sla_minutes: None,
    })
}

/// Render `template` for `channel` and hold it until an agent approves it.
/// The builder methods on [`Action`] refine the held message.
pub fn hold_for_approval(channel: Channel, template: &str, reason: impl Into<String>) -> Action {
    Action::HoldForApproval {
        notify: message(channel, template),
        reason: reason.into(),
    }
}

/// Withdraw pending messages that were given `cancel_key`.
pub fn cancel(cancel_key: impl Into<String>) -> Action {
    Action::Cancel {
        cancel_key: cancel_key.into(),
    }
}

fn message(channel: Channel, template: &str) -> Notify {
    Notify {
        channel,
        template: template.to_owned(),
        locale: None,
        timing: Timing::Now,
        category: Category::Transactional,
        priority: Priority::Normal,
        dedupe_key: None,
        cancel_key: None,
        fallback_channels: Vec::new(),
        data: BTreeMap::new(),
    }
}

/// Builder methods. Those that shape a message apply to `notify` and
/// `hold_for_approval` actions and leave other actions unchanged; `sla_minutes`
/// applies to `escalate`.
impl Action {
    /// The message of a `notify` or `hold-for-approval` action.
    pub fn message(&self) -> Option<&Notify> {
        match self {
            Action::Notify(n) | Action::HoldForApproval { notify: n, .. } => Some(n),
            _ => None,
        }
    }

    fn with_message(mut self, change: impl FnOnce(&mut Notify)) -> Self {
        if let Action::Notify(n) | Action::HoldForApproval { notify: n, .. } = &mut self {
            change(n);
        }
        self
    }

    /// Send after `delay` (measured from the event's processing time).
    /// Calendar units (days and larger) count as 24-hour days.
    pub fn after(self, delay: Span) -> Self {
        let seconds = span_seconds(delay);
        self.with_message(|n| n.timing = Timing::After { seconds })
    }

    /// Send at `at`.
    pub fn at(self, at: Timestamp) -> Self {
        self.with_message(|n| n.timing = Timing::At { at })
    }

    /// Mark as marketing: sent only with the customer's opt-in for the channel.
    pub fn marketing(self) -> Self {
        self.with_message(|n| n.category = Category::Marketing)
    }

    /// Set the priority of the message or ticket.
    pub fn priority(mut self, priority: Priority) -> Self {
        if let Action::Escalate(e) = &mut self {
            e.priority = priority;
        }
        self.with_message(|n| n.priority = priority)
    }

    /// Render in `locale` instead of the customer's.
    pub fn locale(self, locale: &str) -> Self {
        self.with_message(|n| n.locale = Some(locale.to_owned()))
    }

    /// Send once per `key` within the host's dedupe window.
    pub fn dedupe(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.with_message(|n| n.dedupe_key = Some(key))
    }

    /// Let a later [`cancel`] with `key` withdraw this message while pending.
    pub fn cancel_key(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.with_message(|n| n.cancel_key = Some(key))
    }

    /// Try `channel` next when the channels before it are not possible.
    pub fn fallback(self, channel: Channel) -> Self {
        self.with_message(|n| n.fallback_channels.push(channel))
    }

    /// Add a template variable.
    pub fn with(self, key: &str, value: impl ToString) -> Self {
        let value = value.to_string();
        self.with_message(|n| {
            n.data.insert(key.to_owned(), value);
        })
    }

    /// Move an escalation to the next tier after `minutes` without an ack.
    pub fn sla_minutes(mut self, minutes: u32) -> Self {
        if let Action::Escalate(e) = &mut self {
            e.sla_minutes = Some(minutes);
        }
        self
    }
}

fn span_seconds(span: Span) -> u64 {
    let days = i64::from(span.get_years()) * 365
        + i64::from(span.get_months()) * 30
        + i64::from(span.get_weeks()) * 7
        + i64::from(span.get_days());
    let seconds = days * 86_400
        + i64::from(span.get_hours()) * 3_600
        + span.get_minutes() * 60
        + span.get_seconds();
    u64::try_from(seconds).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::ToSpan;

    #[test]
    fn builders_shape_the_message_of_notify_and_held_actions() {
        let a = notify(Channel::Sms, "out-for-delivery")
            .after(2.hours().minutes(30))
            .marketing()
            .dedupe("d")
            .cancel_key("c")
            .fallback(Channel::Email)
            .with("eta", "today");
        let n = a.message().expect("a notify action has a message");
        assert_eq!(n.timing, Timing::After { seconds: 9_000 });
        assert_eq!(n.category, Category::Marketing);
        assert_eq!(n.dedupe_key.as_deref(), Some("d"));
        assert_eq!(n.cancel_key.as_deref(), Some("c"));
        assert_eq!(n.fallback_channels, vec![Channel::Email]);
        assert_eq!(n.data["eta"], "today");

        let held = hold_for_approval(Channel::Email, "refund", "big").with("amount", 700);
        assert_eq!(
            held.message().map(|n| n.data["amount"].as_str()),
            Some("700")
        );
    }

    #[test]
    fn days_count_as_24_hours() {
        let a = notify(Channel::Email, "feedback").after(3.days());
        assert_eq!(
            a.message().map(|n| n.timing.clone()),
            Some(Timing::After { seconds: 259_200 })
        );
    }

    #[test]
    fn actions_serialise_with_a_type_tag() {
        let json = serde_json::to_value(cancel("delay:1")).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!({"type": "cancel", "cancel_key": "delay:1"})
        );
    }
}
