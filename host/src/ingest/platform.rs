//! What the Shopify and WooCommerce webhook mappings share: the result and
//! error types, HMAC checks, money and time parsing, the country defaults
//! (timezone, locale, dialing code) and line-item bookkeeping.
//!
//! In: pieces of a platform's JSON body. Out: Tidings values (minor units,
//! timestamps, E.164 phones, IANA zones). Fails with a [`MapError`] naming
//! the platform field (`line_items[0].price`) that is missing or wrong.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tidings_sdk::types::{
    EventKind, LineItem, LineStatus, Money, Order, OrderEvent, Shipment, ShipmentStatus, Timestamp,
};

/// What a webhook body turned into.
// One value per webhook, moved once into the pipeline: keeping `event`
// unboxed makes matching on it plain, and its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// An order event to ingest.
    Event {
        /// The event; it passes [`crate::ingest::validate`].
        event: OrderEvent,
        /// Dedupe key: the platform's delivery/event id when the headers carry
        /// one, else derived from the body (topic, order id, update time).
        idempotency_key: String,
        /// What the host stores as the order's last platform status
        /// (WooCommerce: the order status; Shopify: `financial/fulfillment`).
        platform_status: Option<String>,
    },
    /// About an order Tidings has not seen yet, and the body does not carry
    /// the order (a Shopify fulfillment, refund or return): the host keeps
    /// the verified delivery and maps it again once the order arrives.
    Held {
        /// The platform order the delivery is about.
        order_id: String,
        /// Dedupe key, the idempotency key the event will have.
        key: String,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Acknowledged, but nothing to notify.
    Ignored {
        /// Why, for the audit trail.
        reason: String,
        /// The order snapshot the body carried, for the host to remember.
        order: Option<Order>,
        /// The platform status to remember, when known.
        platform_status: Option<String>,
    },
}

/// Why a webhook body could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Not JSON (answer 400).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON, but a required field is missing or wrong (answer 422).
    #[error("field `{field}`: {message}")]
    Missing {
        /// Path of the platform field, e.g. `line_items[0].price`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Progress of an order along the delivery path, for "an event older than
/// what the order already reached is recorded but does not notify".
///
/// Kinds at the same level (a delay and an in-transit scan) do not overtake
/// each other. `None` for kinds off the linear path: cancellations, refunds
/// and returns always count.
pub fn progress(kind: EventKind) -> Option<u8> {
    Some(match kind {
        EventKind::OrderCreated => 0,
        EventKind::PaymentFailed => 1,
        EventKind::OrderPaid => 2,
        EventKind::OrderPreparing | EventKind::Backordered => 3,
        EventKind::PartiallyShipped => 4,
        EventKind::ShipmentCreated => 5,
        EventKind::ShipmentInTransit | EventKind::DeliveryDelayed => 6,
        EventKind::OutForDelivery | EventKind::DeliveryAttemptFailed => 7,
        EventKind::Delivered => 8,
        EventKind::OrderCancelled
        | EventKind::ItemsCancelled
        | EventKind::RefundCreated
        | EventKind::ReturnRequested
        | EventKind::ReturnApproved
        | EventKind::ReturnReceived => return None,
    })
}

/// The [`progress`] level a shipment in `status` stands for; `None` for a
/// failed (lost, returned) shipment, which nothing overtakes.
pub fn shipment_progress(status: ShipmentStatus) -> Option<u8> {
    match status {
        ShipmentStatus::LabelCreated => progress(EventKind::ShipmentCreated),
        ShipmentStatus::InTransit => progress(EventKind::ShipmentInTransit),
        ShipmentStatus::Delayed => progress(EventKind::DeliveryDelayed),
        ShipmentStatus::OutForDelivery => progress(EventKind::OutForDelivery),
        ShipmentStatus::AttemptFailed => progress(EventKind::DeliveryAttemptFailed),
        ShipmentStatus::Delivered => progress(EventKind::Delivered),
        ShipmentStatus::Failed => None,
    }
}

/// The furthest [`progress`] level `order` has reached, read from its
/// snapshot: payment status, shipments and fulfilled lines.
pub fn reached(order: &Order) -> u8 {
    let paid = order.attributes.get("payment_status").map(String::as_str) == Some("paid");
    let mut level = if paid {
        progress(EventKind::OrderPaid)
    } else {
        progress(EventKind::OrderCreated)
    }
    .unwrap_or(0);
    if order
        .items
        .iter()
        .any(|i| i.status == LineStatus::Fulfilled)
    {
        level = level.max(progress(EventKind::PartiallyShipped).unwrap_or(0));
    }
    for shipment in &order.shipments {
        level = level.max(shipment_progress(shipment.status).unwrap_or(0));
    }
    level
}

/// Whether `event` is behind what `previous` (the order as the host knew it
/// before this event) already reached, so it is recorded but not notified.
///
/// A shipment event is compared with that same shipment only, so the second
/// parcel of a split shipment is not held back by the first one's delivery.
/// Order-level kinds (created, paid, payment failed, preparing) are compared
/// with the whole order. Kinds without a [`progress`] are never behind.
pub fn is_behind(previous: &Order, event: &OrderEvent) -> bool {
    let Some(level) = progress(event.kind) else {
        return false;
    };
    match &event.shipment {
        Some(shipment) => previous
            .shipments
            .iter()
            .find(|s| s.id == shipment.id)
            .and_then(|s| shipment_progress(s.status))
            .is_some_and(|known| level < known),
        None => match event.kind {
            EventKind::OrderCreated
            | EventKind::PaymentFailed
            | EventKind::OrderPaid
            | EventKind::OrderPreparing
            | EventKind::Backordered => level < reached(previous),
            _ => false,
        },
    }
}

/// Constant-time check of a base64 HMAC-SHA256 of `body` keyed with `secret`.
pub(crate) fn verify_hmac_b64(secret: &[u8], body: &[u8], signature_b64: &str) -> bool {
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature).is_ok()
}

/// Parse a webhook body as a JSON object.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, MapError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| MapError::Malformed(e.to_string()))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(missing(".", "expected a JSON object"))
    }
}

pub(crate) fn missing(field: &str, message: impl Into<String>) -> MapError {
    MapError::Missing {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A JSON value together with its path, so errors name the platform field.
#[derive(Clone)]
pub(crate) struct Node<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Node<'a> {
    pub(crate) fn root(value: &'a Value) -> Self {
        Node {
            value,
            path: String::new(),
        }
    }

    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The field `key`, unless it is absent or `null`.
    pub(crate) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn child(&self, key: &str) -> Option<Node<'a>> {
        self.raw(key).map(|value| Node {
            value,
            path: self.path_of(key),
        })
    }

    /// The field at `keys`, one object level per key.
    pub(crate) fn dig(&self, keys: &[&str]) -> Option<Node<'a>> {
        keys.iter()
            .try_fold(self.clone(), |node, key| node.child(key))
    }

    /// The first non-empty string of the array `key`.
    pub(crate) fn first_str(&self, key: &str) -> Option<&'a str> {
        self.raw(key).and_then(Value::as_array).and_then(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .find(|s| !s.is_empty())
        })
    }

    /// The field `key` as text: strings as they are, other values as JSON.
    pub(crate) fn text(&self, key: &str) -> Option<String> {
        match self.raw(key)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// A non-empty string field.
    pub(crate) fn str(&self, key: &str) -> Option<&'a str> {
        self.raw(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    pub(crate) fn req_str(&self, key: &str) -> Result<&'a str, MapError> {
        self.str(key)
            .ok_or_else(|| missing(&self.path_of(key), "required, expected a non-empty string"))
    }

    /// An id given as a number or a non-empty string.
    pub(crate) fn id(&self, key: &str) -> Option<String> {
        match self.raw(key)? {
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        }
    }

    pub(crate) fn req_id(&self, key: &str) -> Result<String, MapError> {
        self.id(key)
            .filter(|id| id != "0")
            .ok_or_else(|| missing(&self.path_of(key), "required, expected an id"))
    }

    /// A non-negative count given as a number or a numeric string.
    pub(crate) fn u32(&self, key: &str) -> Option<u32> {
        match self.raw(key)? {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn req_u32(&self, key: &str) -> Result<u32, MapError> {
        self.u32(key).ok_or_else(|| {
            missing(
                &self.path_of(key),
                "required, expected a non-negative whole number",
            )
        })
    }

    pub(crate) fn bool(&self, key: &str) -> Option<bool> {
        self.raw(key).and_then(Value::as_bool)
    }

    /// A decimal amount given as a string (`"19.90"`) or a JSON number.
    pub(crate) fn decimal(&self, key: &str) -> Option<String> {
        match self.raw(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The decimal amount `key` in minor units of `currency`.
    pub(crate) fn minor(&self, key: &str, currency: &str) -> Option<Result<i64, MapError>> {
        self.decimal(key).map(|text| {
            to_minor(&text, currency).map_err(|message| missing(&self.path_of(key), message))
        })
    }

    pub(crate) fn req_minor(&self, key: &str, currency: &str) -> Result<i64, MapError> {
        self.minor(key, currency).unwrap_or_else(|| {
            Err(missing(
                &self.path_of(key),
                "required, expected a decimal amount",
            ))
        })
    }

    /// A timestamp field (RFC 3339, or a naive date-time read as UTC).
    pub(crate) fn time(&self, key: &str) -> Option<Timestamp> {
        self.str(key).and_then(parse_time)
    }

    pub(crate) fn req_time(&self, key: &str) -> Result<Timestamp, MapError> {
        let text = self.req_str(key)?;
        parse_time(text).ok_or_else(|| {
            missing(
                &self.path_of(key),
                format!("`{text}` is not a date-time (e.g. 2026-11-20T10:12:44+01:00)"),
            )
        })
    }

    /// The elements of the array `key` with their paths; empty when absent.
    pub(crate) fn items(&self, key: &str) -> Vec<Node<'a>> {
        let base = self.path_of(key);
        self.raw(key)
            .and_then(Value::as_array)
            .map(|array| {
                array
                    .iter()
                    .enumerate()
                    .map(|(i, value)| Node {
                        value,
                        path: format!("{base}[{i}]"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Digits after the decimal point in `currency`'s minor unit (ISO 4217).
pub fn minor_exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// A decimal amount (`"1234.50"`, `"-0.07"`, `"1500"`) in minor units of
/// `currency`, without floating point. Digits beyond the currency's minor
/// unit are rounded half away from zero (WooCommerce sends unrounded unit
/// prices such as `20.661157`).
pub fn to_minor(amount: &str, currency: &str) -> Result<i64, String> {
    let bad = || format!("`{amount}` is not a decimal amount in {currency}");
    let text = amount.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let exponent = minor_exponent(currency) as usize;
    let fraction = fraction.as_bytes();
    let mut minor: i64 = 0;
    let places = whole
        .bytes()
        .chain((0..exponent).map(|i| fraction.get(i).copied().unwrap_or(b'0')));
    for digit in places {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(digit - b'0')))
            .ok_or_else(|| format!("`{amount}` is too large"))?;
    }
    if fraction.get(exponent).is_some_and(|d| *d >= b'5') {
        minor = minor
            .checked_add(1)
            .ok_or_else(|| format!("`{amount}` is too large"))?;
    }
    Ok(if negative { -minor } else { minor })
}

/// A platform timestamp: RFC 3339 with an offset, or a naive date-time
/// (WooCommerce's `*_gmt` fields) read as UTC.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    text.parse::<Timestamp>().ok().or_else(|| {
        text.parse::<jiff::civil::DateTime>()
            .ok()
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
            .map(|zoned| zoned.timestamp())
    })
}

/// An ISO 4217 code as the platform sent it, checked.
pub(crate) fn check_currency(field: &str, code: &str) -> Result<String, MapError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err(missing(
            field,
            format!("`{code}` is not an ISO 4217 code (e.g. EUR)"),
        ))
    }
}

/// What Tidings assumes about a customer from their country when the
/// platform says nothing better.
struct Country {
    code: &'static str,
    /// The zone (nearly) all of the country uses; `None` for countries that
    /// span several zones (US, CA, AU, BR, MX, RU, ...).
    timezone: Option<&'static str>,
    /// The main locale; `None` where no single language dominates.
    locale: Option<&'static str>,
    /// Country calling code, and whether the national trunk prefix `0` is
    /// dropped when writing the number internationally.
    dial: Option<(&'static str, bool)>,
}

const fn country(
    code: &'static str,
    timezone: Option<&'static str>,
    locale: Option<&'static str>,
    dial: Option<(&'static str, bool)>,
) -> Country {
    Country {
        code,
        timezone,
        locale,
        dial,
    }
}

// Italian, Spanish, Czech, Polish, Greek, Danish, Norwegian and Portuguese
// numbers keep their leading 0 (there is no trunk prefix); the others drop it.
#[rustfmt::skip]
const COUNTRIES: &[Country] = &[
    country("AT", Some("Europe/Vienna"), Some("de-AT"), Some(("43", true))),
    country("BE", Some("Europe/Brussels"), None, Some(("32", true))),
    country("BG", Some("Europe/Sofia"), Some("bg-BG"), Some(("359", true))),
    country("CH", Some("Europe/Zurich"), None, Some(("41", true))),
    country("CZ", Some("Europe/Prague"), Some("cs-CZ"), Some(("420", false))),
    country("DE", Some("Europe/Berlin"), Some("de-DE"), Some(("49", true))),
    country("DK", Some("Europe/Copenhagen"), Some("da-DK"), Some(("45", false))),
    country("ES", Some("Europe/Madrid"), Some("es-ES"), Some(("34", false))),
    country("FI", Some("Europe/Helsinki"), Some("fi-FI"), Some(("358", true))),
    country("FR", Some("Europe/Paris"), Some("fr-FR"), Some(("33", true))),
    country("GB", Some("Europe/London"), Some("en-GB"), Some(("44", true))),
    country("GR", Some("Europe/Athens"), Some("el-GR"), Some(("30", false))),
    country("HR", Some("Europe/Zagreb"), Some("hr-HR"), Some(("385", true))),
    country("HU", Some("Europe/Budapest"), Some("hu-HU"), None),
    country("IE", Some("Europe/Dublin"), Some("en-IE"), Some(("353", true))),
    country("IT", Some("Europe/Rome"), Some("it-IT"), Some(("39", false))),
    country("JP", Some("Asia/Tokyo"), Some("ja-JP"), Some(("81", true))),
    country("KW", Some("Asia/Kuwait"), Some("ar-KW"), Some(("965", false))),
    country("LU", Some("Europe/Luxembourg"), None, Some(("352", false))),
    country("NL", Some("Europe/Amsterdam"), Some("nl-NL"), Some(("31", true))),
    country("NO", Some("Europe/Oslo"), Some("nb-NO"), Some(("47", false))),
    country("PL", Some("Europe/Warsaw"), Some("pl-PL"), Some(("48", false))),
    country("PT", Some("Europe/Lisbon"), Some("pt-PT"), Some(("351", false))),
    country("RO", Some("Europe/Bucharest"), Some("ro-RO"), Some(("40", true))),
    country("SE", Some("Europe/Stockholm"), Some("sv-SE"), Some(("46", true))),
    country("SI", Some("Europe/Ljubljana"), Some("sl-SI"), Some(("386", true))),
    country("SK", Some("Europe/Bratislava"), Some("sk-SK"), Some(("421", true))),
    country("US", None, Some("en-US"), Some(("1", false))),
];

fn lookup(code: Option<&str>) -> Option<&'static Country> {
    let code = code?.trim();
    COUNTRIES.iter().find(|c| c.code.eq_ignore_ascii_case(code))
}

/// The customer's timezone, guessed from their country: neither platform
/// sends one. A single-zone country gets its zone (IT → Europe/Rome); any
/// other country, or none, gets `UTC`.
pub fn timezone_for(country: Option<&str>) -> String {
    lookup(country)
        .and_then(|c| c.timezone)
        .unwrap_or("UTC")
        .to_owned()
}

/// The customer's locale: `given` (the platform's, e.g. Shopify's
/// `customer_locale`) when it is a locale, completed with the country when
/// it names only the country's own language (`it` + IT → `it-IT`); else the
/// country's main locale; else `en`.
pub fn locale_for(given: Option<&str>, country: Option<&str>) -> String {
    let from_country = lookup(country).and_then(|c| c.locale);
    if let Some(given) = given.and_then(clean_locale) {
        if !given.contains('-')
            && let Some(full) = from_country
            && full.split('-').next() == Some(given.as_str())
        {
            return full.to_owned();
        }
        return given;
    }
    from_country.unwrap_or("en").to_owned()
}

fn clean_locale(raw: &str) -> Option<String> {
    let locale = raw.trim().replace('_', "-");
    let language = locale.split('-').next().unwrap_or_default();
    let ok = (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_alphabetic())
        && locale.len() <= 35
        && locale
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(locale)
}

/// `raw` as an E.164 number (`+393471234567`), or `None` when it cannot be
/// made one. A number already in international form (`+…` or `00…`) is kept;
/// a national one is prefixed with the country's calling code, for the
/// countries Tidings knows.
pub fn e164(raw: &str, country: Option<&str>) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty()
        || !raw
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')' | '/' | '+'))
        || raw.rfind('+').is_some_and(|i| i > 0)
    {
        return None;
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let international = if raw.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else {
        let c = lookup(country)?;
        let (code, drop_zero) = c.dial?;
        let national = if c.code == "US" && digits.len() == 11 {
            digits.strip_prefix('1')?
        } else if drop_zero {
            digits.strip_prefix('0').unwrap_or(&digits)
        } else {
            &digits
        };
        format!("{code}{national}")
    };
    let ok = (8..=15).contains(&international.len()) && !international.starts_with('0');
    ok.then(|| format!("+{international}"))
}

/// Comma-separated tags (`"vip, wholesale"`) as a list.
pub(crate) fn split_tags(tags: Option<&str>) -> Vec<String> {
    tags.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Where a status sorts among the lines of one SKU: shipped first, then
/// waiting, then what left the order.
fn rank(status: LineStatus) -> u8 {
    match status {
        LineStatus::Fulfilled => 0,
        LineStatus::Pending => 1,
        LineStatus::Backordered => 2,
        LineStatus::Cancelled => 3,
        LineStatus::Returned => 4,
        LineStatus::Refunded => 5,
    }
}

/// Add `quantity` units of a line in `status`, merging with an existing
/// line of the same SKU and status, else next to the SKU's other lines.
pub(crate) fn add_units(
    items: &mut Vec<LineItem>,
    template: &LineItem,
    status: LineStatus,
    quantity: u32,
) {
    if quantity == 0 {
        return;
    }
    if let Some(line) = items
        .iter_mut()
        .find(|l| l.sku == template.sku && l.status == status)
    {
        line.quantity += quantity;
        return;
    }
    let same_sku = |l: &LineItem| l.sku == template.sku;
    let at = items
        .iter()
        .position(|l| same_sku(l) && rank(l.status) > rank(status))
        .or_else(|| items.iter().rposition(same_sku).map(|i| i + 1))
        .unwrap_or(items.len());
    items.insert(
        at,
        LineItem {
            status,
            quantity,
            ..template.clone()
        },
    );
}

/// Move up to `quantity` units of `sku` from lines in one of `from` (tried
/// in order) to `to`. Returns how many moved.
pub(crate) fn move_units(
    items: &mut Vec<LineItem>,
    sku: &str,
    from: &[LineStatus],
    to: LineStatus,
    quantity: u32,
) -> u32 {
    let mut left = quantity;
    let mut template = None;
    for status in from {
        for line in items
            .iter_mut()
            .filter(|l| l.sku == sku && l.status == *status)
        {
            let taken = line.quantity.min(left);
            line.quantity -= taken;
            left -= taken;
            template.get_or_insert_with(|| line.clone());
        }
    }
    let moved = quantity - left;
    if let Some(template) = template {
        add_units(items, &template, to, moved);
    }
    items.retain(|l| l.quantity > 0 || l.sku != sku);
    moved
}

/// Units of `order` still waiting to ship.
pub(crate) fn pending_units(items: &[LineItem]) -> u32 {
    items
        .iter()
        .filter(|l| l.status == LineStatus::Pending)
        .map(|l| l.quantity)
        .sum()
}

/// The shipment `shipment` merged into `order`'s list (replacing the one
/// with the same id), never moving its carrier status backwards: a late
/// `in_transit` does not undo `delivered` in the snapshot.
pub(crate) fn upsert_shipment(order: &mut Order, mut shipment: Shipment) -> Shipment {
    if let Some(known) = order.shipments.iter_mut().find(|s| s.id == shipment.id) {
        let newer = shipment_progress(shipment.status);
        let older = shipment_progress(known.status);
        if matches!((newer, older), (Some(n), Some(o)) if n < o) {
            shipment.status = known.status;
        }
        if shipment.items.is_empty() {
            shipment.items = known.items.clone();
        }
        shipment.carrier = shipment.carrier.or_else(|| known.carrier.clone());
        shipment.tracking_number = shipment
            .tracking_number
            .or_else(|| known.tracking_number.clone());
        shipment.tracking_url = shipment.tracking_url.or_else(|| known.tracking_url.clone());
        shipment.eta = shipment.eta.or(known.eta);
        *known = shipment.clone();
        shipment
    } else {
        order.shipments.push(shipment.clone());
        shipment
    }
}

/// A refund amount as event attributes.
pub(crate) fn refund_attributes(
    attributes: &mut std::collections::BTreeMap<String, String>,
    amount: &Money,
) {
    attributes.insert("refund_amount_minor".into(), amount.minor.to_string());
    attributes.insert("refund_currency".into(), amount.currency.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_amounts_become_minor_units_without_floats() {
        assert_eq!(to_minor("19.9", "EUR"), Ok(1990));
        assert_eq!(to_minor("1234.50", "EUR"), Ok(123_450));
        assert_eq!(to_minor("0.07", "EUR"), Ok(7));
        assert_eq!(to_minor("1500", "JPY"), Ok(1500));
        assert_eq!(to_minor("1500.00", "JPY"), Ok(1500));
        assert_eq!(to_minor("12.345", "KWD"), Ok(12_345));
        assert_eq!(to_minor("0.5", "KWD"), Ok(500));
        assert_eq!(to_minor("-10.00", "EUR"), Ok(-1000));
        assert_eq!(to_minor("25", "EUR"), Ok(2500));
        assert_eq!(to_minor(".5", "EUR"), Ok(50));
    }

    #[test]
    fn extra_decimals_round_half_away_from_zero() {
        assert_eq!(to_minor("20.661157", "EUR"), Ok(2066));
        assert_eq!(to_minor("20.665", "EUR"), Ok(2067));
        assert_eq!(to_minor("-20.665", "EUR"), Ok(-2067));
        assert_eq!(to_minor("1499.5", "JPY"), Ok(1500));
    }

    #[test]
    fn non_decimal_amounts_are_rejected() {
        for bad in ["", "abc", "1,50", "1e3", "12.3.4", "-", ".", "€5", "1 000"] {
            assert!(to_minor(bad, "EUR").is_err(), "{bad:?} accepted");
        }
        assert!(to_minor("99999999999999999999", "EUR").is_err());
    }

    #[test]
    fn timestamps_with_offsets_and_naive_gmt_times_both_parse() {
        assert_eq!(
            parse_time("2026-11-20T10:12:44+01:00").map(|t| t.to_string()),
            Some("2026-11-20T09:12:44Z".to_owned())
        );
        assert_eq!(
            parse_time("2026-11-20T09:12:44").map(|t| t.to_string()),
            Some("2026-11-20T09:12:44Z".to_owned())
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn national_phone_numbers_get_the_country_calling_code() {
        assert_eq!(
            e164("347 123 4567", Some("IT")).as_deref(),
            Some("+393471234567")
        );
        assert_eq!(
            e164("06 1234 5678", Some("FR")).as_deref(),
            Some("+33612345678")
        );
        assert_eq!(
            e164("0151 2345 6789", Some("DE")).as_deref(),
            Some("+4915123456789")
        );
        assert_eq!(
            e164("(555) 010-4477", Some("US")).as_deref(),
            Some("+15550104477")
        );
        assert_eq!(
            e164("+39 347 123 4567", None).as_deref(),
            Some("+393471234567")
        );
        assert_eq!(
            e164("0039 347 1234567", None).as_deref(),
            Some("+393471234567")
        );
    }

    #[test]
    fn phone_numbers_that_cannot_be_made_e164_are_dropped() {
        assert_eq!(e164("347 123 4567", None), None);
        assert_eq!(e164("347 123 4567", Some("BR")), None);
        assert_eq!(e164("call me", Some("IT")), None);
        assert_eq!(e164("123", Some("IT")), None);
        assert_eq!(e164("34+7", Some("IT")), None);
    }

    #[test]
    fn timezone_comes_from_single_zone_countries_else_utc() {
        assert_eq!(timezone_for(Some("IT")), "Europe/Rome");
        assert_eq!(timezone_for(Some("cz")), "Europe/Prague");
        assert_eq!(timezone_for(Some("US")), "UTC");
        assert_eq!(timezone_for(None), "UTC");
        for c in COUNTRIES {
            if let Some(zone) = c.timezone {
                assert!(jiff::tz::TimeZone::get(zone).is_ok(), "{zone}");
            }
        }
    }

    #[test]
    fn locale_prefers_the_platform_then_the_country_then_english() {
        assert_eq!(locale_for(Some("it"), Some("IT")), "it-IT");
        assert_eq!(locale_for(Some("en"), Some("IT")), "en");
        assert_eq!(locale_for(Some("pt_BR"), Some("IT")), "pt-BR");
        assert_eq!(locale_for(None, Some("CZ")), "cs-CZ");
        assert_eq!(locale_for(Some("not a locale!"), Some("RO")), "ro-RO");
        assert_eq!(locale_for(None, Some("BE")), "en");
        assert_eq!(locale_for(None, None), "en");
    }

    #[test]
    fn moving_units_splits_and_merges_lines_of_a_sku() {
        let line = LineItem {
            sku: "A".into(),
            title: "A".into(),
            quantity: 3,
            unit_price: Money::new(100, "EUR"),
            status: LineStatus::Pending,
        };
        let mut items = vec![line.clone()];
        assert_eq!(
            move_units(
                &mut items,
                "A",
                &[LineStatus::Pending],
                LineStatus::Fulfilled,
                2
            ),
            2
        );
        assert_eq!(
            items
                .iter()
                .map(|l| (l.quantity, l.status))
                .collect::<Vec<_>>(),
            [(2, LineStatus::Fulfilled), (1, LineStatus::Pending)]
        );
        assert_eq!(
            move_units(
                &mut items,
                "A",
                &[LineStatus::Pending],
                LineStatus::Fulfilled,
                5
            ),
            1
        );
        assert_eq!(items.len(), 1);
        assert_eq!(
            (items[0].quantity, items[0].status),
            (3, LineStatus::Fulfilled)
        );
    }
}
