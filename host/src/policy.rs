//! The policy stage: the host's rules on whether, when and over which channel a
//! message may go out. A plugin cannot bypass them.
//!
//! In: one [`Notify`] a plugin asked for, the moment it is due (`send_at`), the
//! [`Facts`] the pipeline looked up for it (the host-side customer, the tenant's
//! suppression list, cancel and dedupe keys, the customer's recent marketing)
//! and the tenant's [`PolicyConfig`]. Out: a [`Verdict`]: send on a channel at a
//! time, defer past quiet hours, or suppress with a [`Reason`], together with
//! every channel that was tried and skipped, for the audit log.
//!
//! [`check`] is pure (no I/O, no clock of its own) and cannot fail: a
//! suppression is a verdict, not an error. Only reading a tenant's settings can
//! fail, with a [`PolicyError`].
//!
//! The checks, in order:
//! 1. the message: cancelled, duplicate, over the marketing frequency cap;
//! 2. the channels, preferred first, then the fallbacks: an address, no
//!    opt-out, not on the suppression list, marketing consent. The first channel
//!    that passes is used;
//! 3. quiet hours on that channel, in the customer's timezone: the message is
//!    deferred to the end of the window, never dropped, and no fallback channel
//!    is tried instead.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::civil::{DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::de::value::StrDeserializer;
use serde::{Deserialize, Serialize};
use tidings_sdk::action::Notify;
use tidings_sdk::types::{Category, Channel, Customer, JsonError};

/// Why policy settings could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A time of day was not `HH:MM` between `00:00` and `23:59`.
    #[error("invalid time of day {0:?}: expected HH:MM between 00:00 and 23:59")]
    InvalidTime(String),
    /// The tenant's policy JSON did not match [`PolicyConfig`].
    #[error("invalid policy config: {0}")]
    Config(#[from] JsonError),
}

/// Per-tenant policy settings.
///
/// In JSON every field is optional and takes its default when absent; unknown
/// fields are rejected. A `quiet_hours` map, when given, replaces the default
/// map as a whole: channels missing from it have no quiet hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Quiet hours per channel in the customer's timezone. Default: sms,
    /// whatsapp and push 21:00–08:00; email and webhook none.
    #[serde(deserialize_with = "by_channel_name")]
    pub quiet_hours: BTreeMap<Channel, QuietHours>,
    /// Dedupe window in seconds (default 86_400, one day): a message is a
    /// duplicate when one with the same dedupe key was accepted less than this
    /// long before the decision time. 0 turns dedupe off.
    pub dedupe_window_secs: u64,
    /// Marketing frequency cap: at most `max` marketing messages per customer
    /// per `window_secs` (default 3 per 7 days).
    pub marketing_cap: FrequencyCap,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let night = QuietHours {
            start: LocalTime::NINE_PM,
            end: LocalTime::EIGHT_AM,
        };
        Self {
            quiet_hours: [Channel::Sms, Channel::Whatsapp, Channel::Push]
                .into_iter()
                .map(|channel| (channel, night))
                .collect(),
            dedupe_window_secs: 86_400,
            marketing_cap: FrequencyCap::default(),
        }
    }
}

impl PolicyConfig {
    /// Parse a tenant's policy settings from JSON, naming the offending field
    /// on failure.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        Ok(tidings_sdk::types::from_json(text)?)
    }

    /// Where the marketing cap window starts for a decision at `now`: the
    /// pipeline counts the customer's marketing messages accepted since then
    /// into [`Facts::marketing_sent_in_window`].
    pub fn marketing_window_start(&self, now: Timestamp) -> Timestamp {
        now.checked_sub(seconds(self.marketing_cap.window_secs))
            .unwrap_or(Timestamp::MIN)
    }
}

/// Read a map keyed by channel through string keys, so that an error inside
/// an entry names its channel (`quiet_hours.sms.start`, not `quiet_hours.?.start`).
fn by_channel_name<'de, D, T>(deserializer: D) -> Result<BTreeMap<Channel, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    BTreeMap::<String, T>::deserialize(deserializer)?
        .into_iter()
        .map(|(name, value)| {
            let channel = Channel::deserialize(StrDeserializer::<D::Error>::new(&name))?;
            Ok((channel, value))
        })
        .collect()
}

/// A daily window, in local wall-clock time, during which a channel stays quiet.
///
/// `start` is inside the window and `end` is not. A window whose `start` is
/// later than its `end` wraps midnight (`21:00`–`08:00`); `start == end` means
/// no quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// When the quiet hours begin, e.g. `"21:00"`.
    pub start: LocalTime,
    /// When they end, e.g. `"08:00"`.
    pub end: LocalTime,
}

impl QuietHours {
    /// If `at` falls inside these quiet hours in `tz`, the instant they end.
    ///
    /// The end is the first instant after `at` at which the wall clock in `tz`
    /// reads `end` on the right day; when a daylight-saving jump skips that
    /// time, the instant of the jump. `None` when `at` is outside the window
    /// (or, at the far end of the representable calendar, the end has no
    /// instant).
    pub fn until(&self, at: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = tz.to_datetime(at);
        let (start, end, time) = (self.start.0, self.end.0, local.time());
        let end_date = match start.cmp(&end) {
            Ordering::Less if start <= time && time < end => local.date(),
            // Wrapping midnight: before midnight the window ends tomorrow.
            Ordering::Greater if time >= start => local.date().tomorrow().ok()?,
            Ordering::Greater if time < end => local.date(),
            _ => return None,
        };
        first_instant_reading(tz, end_date.to_datetime(end), at)
    }
}

/// A time of day, to the minute, written `"HH:MM"` (24-hour clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(Time);

impl LocalTime {
    const NINE_PM: LocalTime = LocalTime(Time::constant(21, 0, 0, 0));
    const EIGHT_AM: LocalTime = LocalTime(Time::constant(8, 0, 0, 0));

    /// The time `hour:minute`; fails unless `hour < 24` and `minute < 60`.
    pub fn new(hour: u8, minute: u8) -> Result<Self, PolicyError> {
        let invalid = || PolicyError::InvalidTime(format!("{hour:02}:{minute:02}"));
        let hour = i8::try_from(hour).map_err(|_| invalid())?;
        let minute = i8::try_from(minute).map_err(|_| invalid())?;
        Time::new(hour, minute, 0, 0)
            .map(LocalTime)
            .map_err(|_| invalid())
    }

    /// The hour, 0–23.
    pub fn hour(self) -> u8 {
        self.0.hour().unsigned_abs()
    }

    /// The minute, 0–59.
    pub fn minute(self) -> u8 {
        self.0.minute().unsigned_abs()
    }
}

impl FromStr for LocalTime {
    type Err = PolicyError;

    /// Parse `"H:MM"` or `"HH:MM"`.
    fn from_str(text: &str) -> Result<Self, PolicyError> {
        let invalid = || PolicyError::InvalidTime(text.to_owned());
        let (hour, minute) = text.split_once(':').ok_or_else(invalid)?;
        let digits = |part: &str, len: std::ops::RangeInclusive<usize>| {
            len.contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(hour, 1..=2) || !digits(minute, 2..=2) {
            return Err(invalid());
        }
        let hour = hour.parse().map_err(|_| invalid())?;
        let minute = minute.parse().map_err(|_| invalid())?;
        LocalTime::new(hour, minute).map_err(|_| invalid())
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

impl Serialize for LocalTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// At most `max` messages per customer per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrequencyCap {
    /// How many messages the window allows (0: none).
    pub max: u32,
    /// The window's length in seconds, counted back from the decision time.
    pub window_secs: u64,
}

impl Default for FrequencyCap {
    fn default() -> Self {
        Self {
            max: 3,
            window_secs: 7 * 86_400,
        }
    }
}

/// What the pipeline looked up for one message.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The host-side customer, with `email` and `phone` when known.
    pub customer: &'a Customer,
    /// Channels whose address for this customer is on the tenant's
    /// suppression list (bounces, complaints).
    pub suppressed: &'a [Channel],
    /// The message's cancel key was cancelled, before or after the message
    /// arrived. Ignored for a message without a cancel key.
    pub cancelled: bool,
    /// When a message with the same dedupe key was last accepted, if ever.
    pub last_with_dedupe_key: Option<Timestamp>,
    /// Marketing messages accepted for this customer since
    /// [`PolicyConfig::marketing_window_start`].
    pub marketing_sent_in_window: u32,
    /// The decision time.
    pub now: Timestamp,
}

/// The policy's answer for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Send, defer or suppress.
    pub outcome: Outcome,
    /// Every channel tried and why it was not used, in the order tried.
    pub skipped: Vec<(Channel, Reason)>,
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// Send on `channel` at `at`: `send_at`, or the decision time when
    /// `send_at` has already passed.
    Send {
        /// The channel to use.
        channel: Channel,
        /// When to send.
        at: Timestamp,
    },
    /// Send on `channel`, but not before `until`: the message is due inside
    /// the channel's quiet hours.
    Defer {
        /// The channel to use.
        channel: Channel,
        /// When the quiet hours end.
        until: Timestamp,
        /// Always [`Reason::QuietHours`].
        reason: Reason,
    },
    /// Do not send at all.
    Suppress(Reason),
}

/// Why a message was suppressed or deferred, or why a channel was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// A marketing message on a channel the customer did not opt in to.
    NoConsent {
        /// The channel.
        channel: Channel,
    },
    /// The customer opted out of the channel.
    OptedOut {
        /// The channel.
        channel: Channel,
    },
    /// The host has no address for the customer on the channel.
    NoAddress {
        /// The channel.
        channel: Channel,
    },
    /// The customer's address on the channel is on the suppression list.
    Suppressed {
        /// The channel.
        channel: Channel,
    },
    /// The message is due inside the channel's quiet hours.
    QuietHours {
        /// The channel.
        channel: Channel,
        /// The IANA timezone the quiet hours were applied in (`"UTC"` when the
        /// customer's is unknown).
        timezone: String,
        /// When the quiet hours end.
        until: Timestamp,
    },
    /// A message with the same dedupe key was accepted within the window.
    Duplicate {
        /// The dedupe key.
        dedupe_key: String,
        /// When the earlier message was accepted.
        previous: Timestamp,
    },
    /// The message's cancel key was cancelled.
    Cancelled {
        /// The cancel key.
        cancel_key: String,
    },
    /// The customer already had the maximum of marketing messages in the
    /// cap window.
    FrequencyCap {
        /// Marketing messages in the window.
        sent: u32,
        /// The cap.
        max: u32,
    },
}

impl Reason {
    /// A short machine-readable code, e.g. `"opted_out"` (also the `code` tag
    /// of the JSON form).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NoConsent { .. } => "no_consent",
            Reason::OptedOut { .. } => "opted_out",
            Reason::NoAddress { .. } => "no_address",
            Reason::Suppressed { .. } => "suppressed",
            Reason::QuietHours { .. } => "quiet_hours",
            Reason::Duplicate { .. } => "duplicate",
            Reason::Cancelled { .. } => "cancelled",
            Reason::FrequencyCap { .. } => "frequency_cap",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoConsent { channel } => write!(
                f,
                "customer has not opted in to marketing on {}",
                channel_name(*channel)
            ),
            Reason::OptedOut { channel } => {
                write!(f, "customer opted out of {}", channel_name(*channel))
            }
            Reason::NoAddress { channel } => match channel {
                Channel::Email => f.write_str("customer has no email address"),
                Channel::Sms | Channel::Whatsapp => write!(
                    f,
                    "customer has no phone number for {}",
                    channel_name(*channel)
                ),
                Channel::Push | Channel::Webhook => {
                    write!(f, "customer has no address for {}", channel_name(*channel))
                }
            },
            Reason::Suppressed { channel } => write!(
                f,
                "customer's {} address is on the suppression list",
                channel_name(*channel)
            ),
            Reason::QuietHours {
                channel,
                timezone,
                until,
            } => write!(
                f,
                "quiet hours for {} in {timezone} until {until}",
                channel_name(*channel)
            ),
            Reason::Duplicate {
                dedupe_key,
                previous,
            } => write!(
                f,
                "a message with dedupe key {dedupe_key:?} was already accepted at {previous}"
            ),
            Reason::Cancelled { cancel_key } => {
                write!(f, "cancel key {cancel_key:?} was cancelled")
            }
            Reason::FrequencyCap { sent, max } => write!(
                f,
                "marketing frequency cap reached: {sent} sent in the window, at most {max} allowed"
            ),
        }
    }
}

/// Decide whether, when and over which channel `message` may be sent.
///
/// Message-level checks come first (cancelled, duplicate, marketing cap) and
/// suppress without trying any channel. Then `message.channel` and its
/// `fallback_channels` are tried in order, repeats ignored; the first one with
/// an address, no opt-out, no suppression and (for marketing) consent is used.
/// When none qualifies the message is suppressed with the *preferred*
/// channel's reason, since that is the channel the plugin asked for; the other
/// channels' reasons are in [`Verdict::skipped`].
///
/// Quiet hours are checked for the chosen channel at `send_at` (or at
/// `facts.now` if `send_at` has passed) in the customer's timezone, or in UTC
/// when the customer's timezone is unknown. Inside them the message is deferred
/// to their end on the same channel; fallback channels are not tried instead.
pub fn check(
    message: &Notify,
    send_at: Timestamp,
    facts: &Facts<'_>,
    config: &PolicyConfig,
) -> Verdict {
    if let Some(reason) = message_refusal(message, facts, config) {
        return Verdict {
            outcome: Outcome::Suppress(reason),
            skipped: Vec::new(),
        };
    }
    let mut skipped = Vec::new();
    for channel in channels_in_order(message) {
        match channel_refusal(channel, message.category, facts) {
            Some(reason) => skipped.push((channel, reason)),
            None => {
                let at = send_at.max(facts.now);
                return Verdict {
                    outcome: send_or_defer(channel, at, facts.customer, config),
                    skipped,
                };
            }
        }
    }
    let (_, preferred) = skipped
        .first()
        .expect("the preferred channel is always tried, so a refused message skipped it");
    Verdict {
        outcome: Outcome::Suppress(preferred.clone()),
        skipped,
    }
}

fn message_refusal(message: &Notify, facts: &Facts<'_>, config: &PolicyConfig) -> Option<Reason> {
    if facts.cancelled
        && let Some(cancel_key) = &message.cancel_key
    {
        return Some(Reason::Cancelled {
            cancel_key: cancel_key.clone(),
        });
    }
    if let (Some(dedupe_key), Some(previous)) = (&message.dedupe_key, facts.last_with_dedupe_key)
        && config.dedupe_window_secs > 0
        && facts.now.duration_since(previous) < seconds(config.dedupe_window_secs)
    {
        return Some(Reason::Duplicate {
            dedupe_key: dedupe_key.clone(),
            previous,
        });
    }
    let cap = config.marketing_cap;
    if message.category == Category::Marketing && facts.marketing_sent_in_window >= cap.max {
        return Some(Reason::FrequencyCap {
            sent: facts.marketing_sent_in_window,
            max: cap.max,
        });
    }
    None
}

fn channels_in_order(message: &Notify) -> Vec<Channel> {
    let mut channels = vec![message.channel];
    for &channel in &message.fallback_channels {
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    channels
}

fn channel_refusal(channel: Channel, category: Category, facts: &Facts<'_>) -> Option<Reason> {
    let customer = facts.customer;
    if !has_address(customer, channel) {
        Some(Reason::NoAddress { channel })
    } else if customer.channel_opt_outs.contains(&channel) {
        Some(Reason::OptedOut { channel })
    } else if facts.suppressed.contains(&channel) {
        Some(Reason::Suppressed { channel })
    } else if category == Category::Marketing && !customer.consents_to(channel) {
        Some(Reason::NoConsent { channel })
    } else {
        None
    }
}

fn has_address(customer: &Customer, channel: Channel) -> bool {
    let present =
        |address: &Option<String>| address.as_deref().is_some_and(|a| !a.trim().is_empty());
    match channel {
        Channel::Email => customer.has_email || present(&customer.email),
        Channel::Sms | Channel::Whatsapp => customer.has_phone || present(&customer.phone),
        Channel::Push | Channel::Webhook => true,
    }
}

fn send_or_defer(
    channel: Channel,
    at: Timestamp,
    customer: &Customer,
    config: &PolicyConfig,
) -> Outcome {
    let Some(quiet_hours) = config.quiet_hours.get(&channel) else {
        return Outcome::Send { channel, at };
    };
    let (tz, timezone) = customer_timezone(customer);
    match quiet_hours.until(at, &tz) {
        Some(until) => Outcome::Defer {
            channel,
            until,
            reason: Reason::QuietHours {
                channel,
                timezone,
                until,
            },
        },
        None => Outcome::Send { channel, at },
    }
}

/// The customer's timezone and its name; UTC when the name is not a known
/// IANA zone, so a bad profile still gets (UTC) quiet hours rather than none.
fn customer_timezone(customer: &Customer) -> (TimeZone, String) {
    match TimeZone::get(&customer.timezone) {
        Ok(tz) => {
            let name = tz.iana_name().unwrap_or(&customer.timezone).to_owned();
            (tz, name)
        }
        Err(_) => (TimeZone::UTC, "UTC".to_owned()),
    }
}

/// The first instant after `after` at which the wall clock in `tz` reads
/// `local`; when a forward jump skips `local`, the instant of the jump (the
/// first moment the clock reads a later time).
fn first_instant_reading(tz: &TimeZone, local: DateTime, after: Timestamp) -> Option<Timestamp> {
    let candidates = match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => [offset.to_timestamp(local).ok(), None],
        AmbiguousOffset::Gap { after: new, .. } => {
            // With the new offset, `local` maps to an instant before the jump.
            let before_jump = new.to_timestamp(local).ok()?;
            let jump = tz.following(before_jump).next().map(|t| t.timestamp());
            [jump, None]
        }
        // A repeated hour: the first reading, unless it is already past.
        AmbiguousOffset::Fold { before, after: new } => [
            before.to_timestamp(local).ok(),
            new.to_timestamp(local).ok(),
        ],
    };
    candidates.into_iter().flatten().find(|&t| t > after)
}

fn seconds(secs: u64) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Sms => "sms",
        Channel::Whatsapp => "whatsapp",
        Channel::Push => "push",
        Channel::Webhook => "webhook",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_sdk::action::Action;
    use tidings_sdk::testing;
    use tidings_sdk::types::EventKind;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    /// Giulia as the host sees her: Europe/Rome, email and phone known,
    /// marketing consent on email only.
    fn giulia() -> Customer {
        testing::fixture(EventKind::OrderCreated).order.customer
    }

    fn in_timezone(timezone: &str) -> Customer {
        Customer {
            timezone: timezone.to_owned(),
            ..giulia()
        }
    }

    fn facts(customer: &Customer, now: Timestamp) -> Facts<'_> {
        Facts {
            customer,
            suppressed: &[],
            cancelled: false,
            last_with_dedupe_key: None,
            marketing_sent_in_window: 0,
            now,
        }
    }

    fn message(action: Action) -> Notify {
        action.message().expect("a notify action").clone()
    }

    fn sms() -> Notify {
        message(tidings_sdk::notify(Channel::Sms, "out-for-delivery"))
    }

    fn email() -> Notify {
        message(tidings_sdk::notify(Channel::Email, "order-shipped"))
    }

    /// Check `message` due now, at `now`, with the default config.
    fn check_now(message: &Notify, facts: &Facts<'_>) -> Verdict {
        check(message, facts.now, facts, &PolicyConfig::default())
    }

    fn sent(channel: Channel, at: Timestamp) -> Outcome {
        Outcome::Send { channel, at }
    }

    fn deferred(channel: Channel, timezone: &str, until: Timestamp) -> Outcome {
        Outcome::Defer {
            channel,
            until,
            reason: Reason::QuietHours {
                channel,
                timezone: timezone.to_owned(),
                until,
            },
        }
    }

    fn quiet(start: &str, end: &str) -> QuietHours {
        QuietHours {
            start: start.parse().expect("valid time"),
            end: end.parse().expect("valid time"),
        }
    }

    fn config_with_sms_quiet_hours(window: QuietHours) -> PolicyConfig {
        PolicyConfig {
            quiet_hours: BTreeMap::from([(Channel::Sms, window)]),
            ..PolicyConfig::default()
        }
    }

    // A weekday morning in Rome (11:00 CET), outside every default quiet hour.
    const DAYTIME: &str = "2026-11-23T10:00:00Z";

    #[test]
    fn quiet_hours_defer_sms_until_morning_in_customer_timezone() {
        let rome = in_timezone("Europe/Rome");
        let prague = in_timezone("Europe/Prague");
        let cases = [
            // 23:30 CET → 08:00 CET the next morning.
            (
                &rome,
                "2026-11-23T22:30:00Z",
                "2026-11-24T07:00:00Z",
                "Europe/Rome",
            ),
            // 05:00 CET, after midnight → 08:00 CET the same morning.
            (
                &prague,
                "2026-11-24T04:00:00Z",
                "2026-11-24T07:00:00Z",
                "Europe/Prague",
            ),
            // 23:30 CET the night clocks spring forward → 08:00 CEST (UTC+2).
            (
                &rome,
                "2026-03-28T22:30:00Z",
                "2026-03-29T06:00:00Z",
                "Europe/Rome",
            ),
            // 22:00 CEST the night clocks fall back → 08:00 CET (UTC+1).
            (
                &prague,
                "2026-10-24T20:00:00Z",
                "2026-10-25T07:00:00Z",
                "Europe/Prague",
            ),
        ];
        for (customer, at, until, timezone) in cases {
            let verdict = check_now(&sms(), &facts(customer, ts(at)));
            assert_eq!(
                verdict.outcome,
                deferred(Channel::Sms, timezone, ts(until)),
                "{at} in {timezone}"
            );
            assert!(verdict.skipped.is_empty());
        }

        let verdict = check_now(&sms(), &facts(&rome, ts(DAYTIME)));
        assert_eq!(verdict.outcome, sent(Channel::Sms, ts(DAYTIME)));
    }

    #[test]
    fn quiet_hours_include_their_start_and_exclude_their_end() {
        let rome = giulia();
        // 21:00 CET is quiet.
        let verdict = check_now(&sms(), &facts(&rome, ts("2026-11-23T20:00:00Z")));
        assert_eq!(
            verdict.outcome,
            deferred(Channel::Sms, "Europe/Rome", ts("2026-11-24T07:00:00Z"))
        );
        // 08:00 CET is not, and neither is 20:59.
        for at in ["2026-11-24T07:00:00Z", "2026-11-23T19:59:00Z"] {
            let verdict = check_now(&sms(), &facts(&rome, ts(at)));
            assert_eq!(verdict.outcome, sent(Channel::Sms, ts(at)));
        }
    }

    #[test]
    fn quiet_hours_ending_in_a_skipped_hour_end_when_the_clocks_jump() {
        // Rome skips 02:00–03:00 on 2026-03-29; 02:30 never happens, so the
        // window ends at the jump, 03:00 CEST.
        let config = config_with_sms_quiet_hours(quiet("22:00", "02:30"));
        let customer = giulia();
        let at = ts("2026-03-28T22:00:00Z");
        let verdict = check(&sms(), at, &facts(&customer, at), &config);
        assert_eq!(
            verdict.outcome,
            deferred(Channel::Sms, "Europe/Rome", ts("2026-03-29T01:00:00Z"))
        );
    }

    #[test]
    fn quiet_hours_ending_in_a_repeated_hour_never_end_in_the_past() {
        // Rome lives 02:00–03:00 twice on 2026-10-25 (CEST, then CET).
        let config = config_with_sms_quiet_hours(quiet("01:00", "02:30"));
        let customer = giulia();
        let cases = [
            // 02:15 CEST → the first 02:30.
            ("2026-10-25T00:15:00Z", "2026-10-25T00:30:00Z"),
            // 02:15 CET, after the first 02:30 has passed → the second 02:30.
            ("2026-10-25T01:15:00Z", "2026-10-25T01:30:00Z"),
        ];
        for (at, until) in cases {
            let verdict = check(&sms(), ts(at), &facts(&customer, ts(at)), &config);
            assert_eq!(
                verdict.outcome,
                deferred(Channel::Sms, "Europe/Rome", ts(until)),
                "{at}"
            );
        }
    }

    #[test]
    fn quiet_hours_defer_instead_of_falling_back_to_another_channel() {
        let customer = giulia();
        let night = ts("2026-11-23T22:30:00Z");
        let message = message(tidings_sdk::notify(Channel::Sms, "t").fallback(Channel::Email));
        let verdict = check_now(&message, &facts(&customer, night));
        assert_eq!(
            verdict.outcome,
            deferred(Channel::Sms, "Europe/Rome", ts("2026-11-24T07:00:00Z"))
        );
        assert!(verdict.skipped.is_empty());
    }

    #[test]
    fn quiet_hours_apply_to_the_fallback_channel_that_is_used() {
        let customer = Customer {
            channel_opt_outs: vec![Channel::Email],
            ..giulia()
        };
        let night = ts("2026-11-23T22:30:00Z");
        let message = message(tidings_sdk::notify(Channel::Email, "t").fallback(Channel::Sms));
        let verdict = check_now(&message, &facts(&customer, night));
        assert_eq!(
            verdict.outcome,
            deferred(Channel::Sms, "Europe/Rome", ts("2026-11-24T07:00:00Z"))
        );
        assert_eq!(
            verdict.skipped,
            vec![(
                Channel::Email,
                Reason::OptedOut {
                    channel: Channel::Email
                }
            )]
        );
    }

    #[test]
    fn email_has_no_quiet_hours_by_default() {
        let customer = giulia();
        let night = ts("2026-11-23T22:30:00Z");
        let verdict = check_now(&email(), &facts(&customer, night));
        assert_eq!(verdict.outcome, sent(Channel::Email, night));

        let webhook = message(tidings_sdk::notify(Channel::Webhook, "t"));
        let verdict = check_now(&webhook, &facts(&customer, night));
        assert_eq!(verdict.outcome, sent(Channel::Webhook, night));

        for channel in [Channel::Sms, Channel::Whatsapp, Channel::Push] {
            assert_eq!(
                PolicyConfig::default().quiet_hours.get(&channel),
                Some(&quiet("21:00", "08:00"))
            );
        }
    }

    #[test]
    fn marketing_needs_consent_for_the_channel() {
        // Giulia opted in to marketing on email only.
        let customer = giulia();
        let now = ts(DAYTIME);
        let promo = message(tidings_sdk::notify(Channel::Sms, "promo").marketing());
        let verdict = check_now(&promo, &facts(&customer, now));
        let no_consent = Reason::NoConsent {
            channel: Channel::Sms,
        };
        assert_eq!(verdict.outcome, Outcome::Suppress(no_consent.clone()));
        assert_eq!(verdict.skipped, vec![(Channel::Sms, no_consent.clone())]);

        let promo = message(
            tidings_sdk::notify(Channel::Sms, "promo")
                .marketing()
                .fallback(Channel::Email),
        );
        let verdict = check_now(&promo, &facts(&customer, now));
        assert_eq!(verdict.outcome, sent(Channel::Email, now));
        assert_eq!(verdict.skipped, vec![(Channel::Sms, no_consent)]);
    }

    #[test]
    fn transactional_is_sent_without_consent() {
        let customer = Customer {
            consents: Vec::new(),
            ..giulia()
        };
        let now = ts(DAYTIME);
        for channel in [Channel::Email, Channel::Sms, Channel::Whatsapp] {
            let message = message(tidings_sdk::notify(channel, "order-shipped"));
            let verdict = check_now(&message, &facts(&customer, now));
            assert_eq!(verdict.outcome, sent(channel, now));
        }
    }

    #[test]
    fn opted_out_channel_falls_back_to_the_next_channel() {
        let customer = Customer {
            channel_opt_outs: vec![Channel::Sms],
            ..giulia()
        };
        let now = ts(DAYTIME);
        let message = message(tidings_sdk::notify(Channel::Sms, "t").fallback(Channel::Email));
        let verdict = check_now(&message, &facts(&customer, now));
        assert_eq!(verdict.outcome, sent(Channel::Email, now));
        assert_eq!(
            verdict.skipped,
            vec![(
                Channel::Sms,
                Reason::OptedOut {
                    channel: Channel::Sms
                }
            )]
        );
    }

    #[test]
    fn no_phone_falls_back_to_email() {
        let customer = Customer {
            phone: None,
            has_phone: false,
            ..giulia()
        };
        let now = ts(DAYTIME);
        let message = message(
            tidings_sdk::notify(Channel::Sms, "t")
                .fallback(Channel::Whatsapp)
                .fallback(Channel::Email),
        );
        let verdict = check_now(&message, &facts(&customer, now));
        assert_eq!(verdict.outcome, sent(Channel::Email, now));
        assert_eq!(
            verdict.skipped,
            vec![
                (
                    Channel::Sms,
                    Reason::NoAddress {
                        channel: Channel::Sms
                    }
                ),
                (
                    Channel::Whatsapp,
                    Reason::NoAddress {
                        channel: Channel::Whatsapp
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_known_address_counts_even_without_the_has_flag() {
        let customer = Customer {
            has_phone: false,
            has_email: false,
            ..giulia()
        };
        let now = ts(DAYTIME);
        assert_eq!(
            check_now(&sms(), &facts(&customer, now)).outcome,
            sent(Channel::Sms, now)
        );
        assert_eq!(
            check_now(&email(), &facts(&customer, now)).outcome,
            sent(Channel::Email, now)
        );
    }

    #[test]
    fn suppressed_address_is_not_used() {
        let customer = giulia();
        let now = ts(DAYTIME);
        let message = message(tidings_sdk::notify(Channel::Email, "t").fallback(Channel::Sms));
        let facts = Facts {
            suppressed: &[Channel::Email],
            ..facts(&customer, now)
        };
        let verdict = check_now(&message, &facts);
        assert_eq!(verdict.outcome, sent(Channel::Sms, now));
        assert_eq!(
            verdict.skipped,
            vec![(
                Channel::Email,
                Reason::Suppressed {
                    channel: Channel::Email
                }
            )]
        );
    }

    #[test]
    fn all_channels_impossible_suppresses_with_the_preferred_channels_reason() {
        let customer = Customer {
            phone: None,
            has_phone: false,
            channel_opt_outs: vec![Channel::Email],
            ..giulia()
        };
        let message = message(
            tidings_sdk::notify(Channel::Sms, "t")
                .fallback(Channel::Email)
                .fallback(Channel::Sms)
                .fallback(Channel::Whatsapp)
                .fallback(Channel::Email),
        );
        let verdict = check_now(&message, &facts(&customer, ts(DAYTIME)));
        let no_phone = Reason::NoAddress {
            channel: Channel::Sms,
        };
        assert_eq!(verdict.outcome, Outcome::Suppress(no_phone.clone()));
        assert_eq!(
            verdict.skipped,
            vec![
                (Channel::Sms, no_phone),
                (
                    Channel::Email,
                    Reason::OptedOut {
                        channel: Channel::Email
                    }
                ),
                (
                    Channel::Whatsapp,
                    Reason::NoAddress {
                        channel: Channel::Whatsapp
                    }
                ),
            ]
        );
    }

    #[test]
    fn duplicate_within_window_is_suppressed_and_outside_window_is_sent() {
        let customer = giulia();
        let now = ts(DAYTIME);
        let message = message(tidings_sdk::notify(Channel::Email, "t").dedupe("shipped:1042"));
        let an_hour_ago = ts("2026-11-23T09:00:00Z");
        let facts_with = |previous| Facts {
            last_with_dedupe_key: Some(previous),
            ..facts(&customer, now)
        };

        let verdict = check_now(&message, &facts_with(an_hour_ago));
        assert_eq!(
            verdict.outcome,
            Outcome::Suppress(Reason::Duplicate {
                dedupe_key: "shipped:1042".to_owned(),
                previous: an_hour_ago,
            })
        );
        assert!(verdict.skipped.is_empty());

        // Exactly one window ago is outside the window.
        let a_day_ago = ts("2026-11-22T10:00:00Z");
        let verdict = check_now(&message, &facts_with(a_day_ago));
        assert_eq!(verdict.outcome, sent(Channel::Email, now));

        // Without a dedupe key there is nothing to be a duplicate of.
        let verdict = check_now(&email(), &facts_with(an_hour_ago));
        assert_eq!(verdict.outcome, sent(Channel::Email, now));

        // A zero window turns dedupe off.
        let config = PolicyConfig {
            dedupe_window_secs: 0,
            ..PolicyConfig::default()
        };
        let verdict = check(&message, now, &facts_with(an_hour_ago), &config);
        assert_eq!(verdict.outcome, sent(Channel::Email, now));
    }

    #[test]
    fn cancelled_message_is_suppressed() {
        let customer = giulia();
        let now = ts(DAYTIME);
        let message = message(
            tidings_sdk::notify(Channel::Email, "feedback")
                .cancel_key("feedback:1042")
                .dedupe("feedback:1042"),
        );
        let facts = Facts {
            cancelled: true,
            last_with_dedupe_key: Some(now),
            ..facts(&customer, now)
        };
        let verdict = check_now(&message, &facts);
        assert_eq!(
            verdict.outcome,
            Outcome::Suppress(Reason::Cancelled {
                cancel_key: "feedback:1042".to_owned()
            })
        );

        let not_cancelled = Facts {
            cancelled: false,
            last_with_dedupe_key: None,
            ..facts
        };
        assert_eq!(
            check_now(&message, &not_cancelled).outcome,
            sent(Channel::Email, now)
        );
    }

    #[test]
    fn frequency_cap_applies_only_to_marketing() {
        let customer = giulia();
        let now = ts(DAYTIME);
        let promo = message(tidings_sdk::notify(Channel::Email, "promo").marketing());
        let with_sent = |count| Facts {
            marketing_sent_in_window: count,
            ..facts(&customer, now)
        };

        assert_eq!(
            check_now(&promo, &with_sent(3)).outcome,
            Outcome::Suppress(Reason::FrequencyCap { sent: 3, max: 3 })
        );
        assert_eq!(
            check_now(&promo, &with_sent(2)).outcome,
            sent(Channel::Email, now)
        );
        assert_eq!(
            check_now(&email(), &with_sent(10)).outcome,
            sent(Channel::Email, now)
        );
    }

    #[test]
    fn marketing_window_starts_one_cap_window_before_now() {
        let config = PolicyConfig::default();
        assert_eq!(
            config.marketing_window_start(ts(DAYTIME)),
            ts("2026-11-16T10:00:00Z")
        );
    }

    #[test]
    fn window_not_wrapping_midnight() {
        let config = config_with_sms_quiet_hours(quiet("12:00", "14:00"));
        let customer = giulia();
        // 13:00 CET → 14:00 CET the same day.
        let lunch = ts("2026-11-23T12:00:00Z");
        let verdict = check(&sms(), lunch, &facts(&customer, lunch), &config);
        assert_eq!(
            verdict.outcome,
            deferred(Channel::Sms, "Europe/Rome", ts("2026-11-23T13:00:00Z"))
        );
        // 11:59, 14:00 and 23:30 CET are outside.
        for at in [
            "2026-11-23T10:59:00Z",
            "2026-11-23T13:00:00Z",
            "2026-11-23T22:30:00Z",
        ] {
            let verdict = check(&sms(), ts(at), &facts(&customer, ts(at)), &config);
            assert_eq!(verdict.outcome, sent(Channel::Sms, ts(at)), "{at}");
        }
    }

    #[test]
    fn equal_start_and_end_means_no_quiet_hours() {
        let config = config_with_sms_quiet_hours(quiet("21:00", "21:00"));
        let customer = giulia();
        for at in ["2026-11-23T20:00:00Z", "2026-11-23T22:30:00Z", DAYTIME] {
            let verdict = check(&sms(), ts(at), &facts(&customer, ts(at)), &config);
            assert_eq!(verdict.outcome, sent(Channel::Sms, ts(at)), "{at}");
        }
    }

    #[test]
    fn unknown_timezone_is_treated_as_utc() {
        for timezone in ["Mars/Olympus_Mons", ""] {
            let customer = in_timezone(timezone);
            // 22:30 UTC is quiet; the window ends at 08:00 UTC.
            let verdict = check_now(&sms(), &facts(&customer, ts("2026-11-23T22:30:00Z")));
            assert_eq!(
                verdict.outcome,
                deferred(Channel::Sms, "UTC", ts("2026-11-24T08:00:00Z")),
                "{timezone:?}"
            );
            // 10:00 UTC is not.
            let verdict = check_now(&sms(), &facts(&customer, ts(DAYTIME)));
            assert_eq!(verdict.outcome, sent(Channel::Sms, ts(DAYTIME)));
        }
    }

    #[test]
    fn a_send_time_already_past_is_checked_at_the_decision_time() {
        let customer = giulia();
        let afternoon = ts("2026-11-23T15:00:00Z");
        let night = ts("2026-11-23T22:30:00Z");
        let verdict = check(
            &sms(),
            afternoon,
            &facts(&customer, night),
            &PolicyConfig::default(),
        );
        assert_eq!(
            verdict.outcome,
            deferred(Channel::Sms, "Europe/Rome", ts("2026-11-24T07:00:00Z"))
        );

        let evening = ts("2026-11-23T17:00:00Z");
        let verdict = check(
            &email(),
            afternoon,
            &facts(&customer, evening),
            &PolicyConfig::default(),
        );
        assert_eq!(verdict.outcome, sent(Channel::Email, evening));
    }

    #[test]
    fn a_future_send_time_is_checked_when_it_is_due() {
        let customer = giulia();
        let now = ts(DAYTIME);
        let tonight = ts("2026-11-23T22:30:00Z");
        let verdict = check(
            &sms(),
            tonight,
            &facts(&customer, now),
            &PolicyConfig::default(),
        );
        assert_eq!(
            verdict.outcome,
            deferred(Channel::Sms, "Europe/Rome", ts("2026-11-24T07:00:00Z"))
        );
    }

    #[test]
    fn config_parses_from_json_with_defaults_and_rejects_unknown_fields() {
        assert_eq!(PolicyConfig::from_json("{}"), Ok(PolicyConfig::default()));

        let config = PolicyConfig::from_json(
            r#"{
                "quiet_hours": {"email": {"start": "22:00", "end": "7:00"}},
                "marketing_cap": {"max": 5}
            }"#,
        )
        .expect("valid config");
        assert_eq!(
            config.quiet_hours,
            BTreeMap::from([(Channel::Email, quiet("22:00", "07:00"))])
        );
        assert_eq!(config.dedupe_window_secs, 86_400);
        assert_eq!(
            config.marketing_cap,
            FrequencyCap {
                max: 5,
                window_secs: 604_800
            }
        );

        let cases = [
            (r#"{"quiet_hour": {}}"#, "quiet_hour"),
            (
                r#"{"marketing_cap": {"max": 1, "per": "week"}}"#,
                "marketing_cap.per",
            ),
            (
                r#"{"quiet_hours": {"sms": {"start": "21:00", "end": "08:00", "days": []}}}"#,
                "quiet_hours.sms.days",
            ),
            (
                r#"{"quiet_hours": {"sms": {"start": "25:00", "end": "08:00"}}}"#,
                "quiet_hours.sms.start",
            ),
            (
                r#"{"quiet_hours": {"fax": {"start": "21:00", "end": "08:00"}}}"#,
                "quiet_hours",
            ),
        ];
        for (text, path) in cases {
            match PolicyConfig::from_json(text) {
                Err(PolicyError::Config(err)) => assert_eq!(err.path, path, "{text}"),
                other => panic!("{text} gave {other:?}"),
            }
        }
    }

    #[test]
    fn config_round_trips_through_json_with_times_as_hh_mm() {
        let json = serde_json::to_value(PolicyConfig::default()).expect("serialisable");
        assert_eq!(
            json["quiet_hours"]["sms"],
            serde_json::json!({"start": "21:00", "end": "08:00"})
        );
        let text = json.to_string();
        assert_eq!(PolicyConfig::from_json(&text), Ok(PolicyConfig::default()));
    }

    #[test]
    fn local_times_are_hours_and_minutes_of_one_day() {
        for text in ["00:00", "8:05", "23:59"] {
            assert!(text.parse::<LocalTime>().is_ok(), "{text}");
        }
        for text in [
            "24:00", "12:60", "12", "12:5", "-1:00", "12:00:00", " 12:00", "ab:cd", "",
        ] {
            assert_eq!(
                text.parse::<LocalTime>(),
                Err(PolicyError::InvalidTime(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(
            LocalTime::new(7, 30).map(|t| t.to_string()),
            Ok("07:30".to_owned())
        );
        assert!(LocalTime::new(200, 0).is_err());
    }

    #[test]
    fn reasons_have_a_code_and_a_sentence() {
        let until = ts("2026-11-24T07:00:00Z");
        let cases = [
            (
                Reason::NoConsent {
                    channel: Channel::Sms,
                },
                "no_consent",
                "customer has not opted in to marketing on sms",
            ),
            (
                Reason::OptedOut {
                    channel: Channel::Sms,
                },
                "opted_out",
                "customer opted out of sms",
            ),
            (
                Reason::NoAddress {
                    channel: Channel::Whatsapp,
                },
                "no_address",
                "customer has no phone number for whatsapp",
            ),
            (
                Reason::NoAddress {
                    channel: Channel::Email,
                },
                "no_address",
                "customer has no email address",
            ),
            (
                Reason::Suppressed {
                    channel: Channel::Email,
                },
                "suppressed",
                "customer's email address is on the suppression list",
            ),
            (
                Reason::QuietHours {
                    channel: Channel::Sms,
                    timezone: "Europe/Rome".to_owned(),
                    until,
                },
                "quiet_hours",
                "quiet hours for sms in Europe/Rome until 2026-11-24T07:00:00Z",
            ),
            (
                Reason::Duplicate {
                    dedupe_key: "shipped:1042".to_owned(),
                    previous: until,
                },
                "duplicate",
                "a message with dedupe key \"shipped:1042\" was already accepted at 2026-11-24T07:00:00Z",
            ),
            (
                Reason::Cancelled {
                    cancel_key: "feedback:1042".to_owned(),
                },
                "cancelled",
                "cancel key \"feedback:1042\" was cancelled",
            ),
            (
                Reason::FrequencyCap { sent: 3, max: 3 },
                "frequency_cap",
                "marketing frequency cap reached: 3 sent in the window, at most 3 allowed",
            ),
        ];
        for (reason, code, sentence) in cases {
            assert_eq!(reason.code(), code);
            assert_eq!(reason.to_string(), sentence);
            let json = serde_json::to_value(&reason).expect("serialisable");
            assert_eq!(json["code"], code);
        }
    }

    #[test]
    fn verdicts_serialise_with_snake_case_tags_and_read_back() {
        let customer = Customer {
            channel_opt_outs: vec![Channel::Email],
            ..giulia()
        };
        let message = message(tidings_sdk::notify(Channel::Email, "t").fallback(Channel::Sms));
        let verdict = check_now(&message, &facts(&customer, ts("2026-11-23T22:30:00Z")));
        let json = serde_json::to_value(&verdict).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!({
                "outcome": {
                    "type": "defer",
                    "channel": "sms",
                    "until": "2026-11-24T07:00:00Z",
                    "reason": {
                        "code": "quiet_hours",
                        "channel": "sms",
                        "timezone": "Europe/Rome",
                        "until": "2026-11-24T07:00:00Z"
                    }
                },
                "skipped": [["email", {"code": "opted_out", "channel": "email"}]]
            })
        );
        let back: Verdict = serde_json::from_value(json).expect("deserialisable");
        assert_eq!(back, verdict);

        let suppressed = Outcome::Suppress(Reason::FrequencyCap { sent: 3, max: 3 });
        let json = serde_json::to_value(&suppressed).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!({"type": "suppress", "code": "frequency_cap", "sent": 3, "max": 3})
        );
        let back: Outcome = serde_json::from_value(json).expect("deserialisable");
        assert_eq!(back, suppressed);
    }
}
