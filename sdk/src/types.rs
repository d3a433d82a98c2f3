//! The data a plugin reads — order events and their context — in the JSON
//! form Tidings accepts (`tidings plugin run --event`, `POST /v1/events`).
//!
//! These types mirror `tidings:notify/types` in `wit/notify.wit`. JSON field
//! names and enum values are `snake_case`; timestamps are RFC 3339 strings;
//! money is minor units plus an ISO 4217 currency code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use jiff::{Span, Timestamp};

/// An amount of money in minor units (cents), never floating point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Amount in the currency's minor unit (e.g. 1999 = 19.99 EUR).
    pub minor: i64,
    /// ISO 4217 currency code, e.g. `"EUR"`.
    pub currency: String,
}

impl Money {
    /// An amount in minor units of `currency`.
    pub fn new(minor: i64, currency: &str) -> Self {
        Self {
            minor,
            currency: currency.to_owned(),
        }
    }
}

/// A channel a notification can be sent over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email, sent by the host over SMTP.
    Email,
    /// SMS through the tenant's SMS provider.
    Sms,
    /// WhatsApp through the tenant's WhatsApp provider.
    Whatsapp,
    /// A mobile push notification.
    Push,
    /// A signed JSON POST to a URL the merchant configured.
    Webhook,
}

/// Transactional or marketing: marketing needs the customer's opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// About an order the customer placed; sent unless opted out.
    #[default]
    Transactional,
    /// Promotional or feedback requests; needs the customer's opt-in.
    Marketing,
}

/// How urgent a notification or escalation is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Can wait.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Should go out or be seen soon.
    High,
    /// Needs attention now.
    Urgent,
}

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The customer placed the order.
    OrderCreated,
    /// Payment for the order was captured.
    OrderPaid,
    /// A payment attempt failed.
    PaymentFailed,
    /// The warehouse started preparing the order.
    OrderPreparing,
    /// A shipment was created (label printed, tracking known).
    ShipmentCreated,
    /// The carrier reports the shipment moving.
    ShipmentInTransit,
    /// The shipment is out for delivery today.
    OutForDelivery,
    /// The shipment was delivered.
    Delivered,
    /// The carrier reports a delay.
    DeliveryDelayed,
    /// The carrier tried to deliver and failed.
    DeliveryAttemptFailed,
    /// Some items shipped, others follow.
    PartiallyShipped,
    /// Some items are not in stock and will ship later.
    Backordered,
    /// The whole order was cancelled.
    OrderCancelled,
    /// Some items of the order were cancelled.
    ItemsCancelled,
    /// A refund was issued.
    RefundCreated,
    /// The customer asked to return items.
    ReturnRequested,
    /// The merchant approved a return.
    ReturnApproved,
    /// The returned items arrived back.
    ReturnReceived,
}

impl EventKind {
    /// Every event kind, in contract order.
    pub const ALL: [EventKind; 18] = [
        EventKind::OrderCreated,
        EventKind::OrderPaid,
        EventKind::PaymentFailed,
        EventKind::OrderPreparing,
        EventKind::ShipmentCreated,
        EventKind::ShipmentInTransit,
        EventKind::OutForDelivery,
        EventKind::Delivered,
        EventKind::DeliveryDelayed,
        EventKind::DeliveryAttemptFailed,
        EventKind::PartiallyShipped,
        EventKind::Backordered,
        EventKind::OrderCancelled,
        EventKind::ItemsCancelled,
        EventKind::RefundCreated,
        EventKind::ReturnRequested,
        EventKind::ReturnApproved,
        EventKind::ReturnReceived,
    ];

    /// The JSON name, e.g. `"order_created"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order_created",
            EventKind::OrderPaid => "order_paid",
            EventKind::PaymentFailed => "payment_failed",
            EventKind::OrderPreparing => "order_preparing",
            EventKind::ShipmentCreated => "shipment_created",
            EventKind::ShipmentInTransit => "shipment_in_transit",
            EventKind::OutForDelivery => "out_for_delivery",
            EventKind::Delivered => "delivered",
            EventKind::DeliveryDelayed => "delivery_delayed",
            EventKind::DeliveryAttemptFailed => "delivery_attempt_failed",
            EventKind::PartiallyShipped => "partially_shipped",
            EventKind::Backordered => "backordered",
            EventKind::OrderCancelled => "order_cancelled",
            EventKind::ItemsCancelled => "items_cancelled",
            EventKind::RefundCreated => "refund_created",
            EventKind::ReturnRequested => "return_requested",
            EventKind::ReturnApproved => "return_approved",
            EventKind::ReturnReceived => "return_received",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    /// Not shipped yet.
    #[default]
    Pending,
    /// Shipped.
    Fulfilled,
    /// Waiting for stock.
    Backordered,
    /// Cancelled before shipping.
    Cancelled,
    /// Returned by the customer.
    Returned,
    /// Refunded.
    Refunded,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    /// Stock keeping unit.
    pub sku: String,
    /// Product title as shown to the customer.
    pub title: String,
    /// Number of units.
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: Money,
    /// Where this line stands.
    #[serde(default)]
    pub status: LineStatus,
}

/// The carrier's view of a shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// Label created, not yet picked up.
    #[default]
    LabelCreated,
    /// Moving through the carrier's network.
    InTransit,
    /// On the van today.
    OutForDelivery,
    /// Handed to the customer.
    Delivered,
    /// Late compared with the promised date.
    Delayed,
    /// A delivery attempt failed.
    AttemptFailed,
    /// Lost, damaged or sent back.
    Failed,
}

/// A quantity of one order line inside a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipmentItem {
    /// The order line's SKU.
    pub sku: String,
    /// Units of that line in this shipment.
    pub quantity: u32,
}

/// A parcel on its way to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shipment {
    /// The shop's shipment (fulfillment) id.
    pub id: String,
    /// Carrier name, e.g. `"DHL"`.
    #[serde(default)]
    pub carrier: Option<String>,
    /// Carrier tracking number.
    #[serde(default)]
    pub tracking_number: Option<String>,
    /// Link the customer can follow.
    #[serde(default)]
    pub tracking_url: Option<String>,
    /// Estimated delivery time, when the carrier gives one.
    #[serde(default)]
    pub eta: Option<Timestamp>,
    /// Current carrier status.
    #[serde(default)]
    pub status: ShipmentStatus,
    /// What is in the parcel.
    #[serde(default)]
    pub items: Vec<ShipmentItem>,
}

/// The customer.
///
/// In the JSON an event arrives in, `email` and `phone` carry the addresses.
/// The host keeps them to itself: inside a plugin they are always `None`, and
/// `has_email` / `has_phone` say whether the host has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// The shop's customer id.
    pub id: String,
    /// First name for greetings.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Email address; host side only (never passed to a plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number in E.164 form; host side only (never passed to a plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// BCP 47 locale, e.g. `"it-IT"`.
    pub locale: String,
    /// IANA timezone, e.g. `"Europe/Rome"`.
    pub timezone: String,
    /// The host has an email address for this customer.
    #[serde(default)]
    pub has_email: bool,
    /// The host has a phone number for this customer.
    #[serde(default)]
    pub has_phone: bool,
    /// The shop's customer tags, e.g. `"vip"`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Orders placed so far, this one included.
    #[serde(default)]
    pub orders_count: u32,
    /// Channels on which the customer opted in to marketing messages.
    #[serde(default)]
    pub consents: Vec<Channel>,
    /// Channels the customer opted out of entirely.
    #[serde(default)]
    pub channel_opt_outs: Vec<Channel>,
}

impl Customer {
    /// Whether the customer carries `tag` (case-insensitive).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }

    /// Whether the customer opted in to marketing on `channel`.
    pub fn consents_to(&self, channel: Channel) -> bool {
        self.consents.contains(&channel)
    }

    /// Whether a message on `channel` could reach this customer at all: the
    /// host has an address for it and the customer did not opt out.
    pub fn reachable_on(&self, channel: Channel) -> bool {
        let has_address = match channel {
            Channel::Email => self.has_email,
            Channel::Sms | Channel::Whatsapp => self.has_phone,
            Channel::Push | Channel::Webhook => true,
        };
        has_address && !self.channel_opt_outs.contains(&channel)
    }
}

/// An order with everything needed to decide about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The shop's order id.
    pub id: String,
    /// The order number the customer sees, e.g. `"#1042"`.
    pub number: String,
    /// When the order was placed.
    pub created_at: Timestamp,
    /// Order total including tax and shipping.
    pub total: Money,
    /// Order lines.
    #[serde(default)]
    pub items: Vec<LineItem>,
    /// Shipments so far.
    #[serde(default)]
    pub shipments: Vec<Shipment>,
    /// Who ordered.
    pub customer: Customer,
    /// The shop's order tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Extra shop data (note attributes, risk level, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Something that happened to an order: the unit of work of Tidings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderEvent {
    /// Unique event id (used for dedupe and as the plugin's random seed).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When it happened at the source.
    pub occurred_at: Timestamp,
    /// The order as it is after the event.
    pub order: Order,
    /// The shipment the event is about, if any.
    #[serde(default)]
    pub shipment: Option<Shipment>,
    /// Where the event came from: `"api"`, `"shopify"`, `"woocommerce"`.
    #[serde(default = "default_source")]
    pub source: String,
    /// Extra event data (refund amount, reason, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_source() -> String {
    "api".to_owned()
}

/// Why an event's JSON was rejected: the path of the offending field and what
/// was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Dotted path to the field, e.g. `order.total.minor`; `.` for the document.
    pub path: String,
    /// What was wrong.
    pub message: String,
    /// The text is not JSON at all (as opposed to JSON with a wrong field).
    pub syntax: bool,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for JsonError {}

/// Deserialize JSON text, naming the offending field on failure.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| JsonError {
        path: err.path().to_string(),
        syntax: matches!(
            err.inner().classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        ),
        message: err.inner().to_string(),
    })
}

impl OrderEvent {
    /// Parse an event from its JSON form, naming the offending field on failure.
    ///
    /// Also normalises it: `has_email`/`has_phone` become true when an address
    /// is present.
    pub fn from_json(text: &str) -> Result<Self, JsonError> {
        let mut event: OrderEvent = from_json(text)?;
        event.normalize();
        Ok(event)
    }

    /// Derive `has_email`/`has_phone` from the addresses present.
    pub fn normalize(&mut self) {
        let customer = &mut self.order.customer;
        customer.has_email |= customer.email.as_deref().is_some_and(|e| !e.is_empty());
        customer.has_phone |= customer.phone.as_deref().is_some_and(|p| !p.is_empty());
    }

    /// The event as a plugin sees it: without the customer's addresses.
    pub fn without_contact_details(&self) -> Self {
        let mut event = self.clone();
        event.normalize();
        event.order.customer.email = None;
        event.order.customer.phone = None;
        event
    }
}

/// A notification already sent (or scheduled) for this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentNotification {
    /// Template name.
    pub template: String,
    /// Channel it went over.
    pub channel: Channel,
    /// When it was sent or is due.
    pub at: Timestamp,
}

/// An escalation ticket still open for this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenEscalation {
    /// Queue the ticket is in.
    pub queue: String,
    /// Its priority.
    pub priority: Priority,
    /// When it was opened.
    pub opened_at: Timestamp,
}

/// What the host knows beyond the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The tenant (shop) id.
    pub tenant: String,
    /// The event's processing time; also what the plugin's clock reads.
    pub now: Timestamp,
    /// The merchant's configuration for this plugin.
    #[serde(default = "empty_config")]
    pub config: serde_json::Value,
    /// Notifications already sent for this order.
    #[serde(default)]
    pub history: Vec<SentNotification>,
    /// Escalations still open for this order.
    #[serde(default)]
    pub open_escalations: Vec<OpenEscalation>,
}

fn empty_config() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl Context {
    /// A context for `tenant` at `now` with an empty config and no history.
    pub fn new(tenant: &str, now: Timestamp) -> Self {
        Self {
            tenant: tenant.to_owned(),
            now,
            config: empty_config(),
            history: Vec::new(),
            open_escalations: Vec::new(),
        }
    }

    /// The merchant's config as `T`; a mismatch is a `rule-error` with code
    /// `invalid-config` naming the field.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::RuleError> {
        serde_path_to_error::deserialize(&self.config).map_err(|err| {
            crate::RuleError::new(
                "invalid-config",
                format!("config field `{}`: {}", err.path(), err.inner()),
            )
        })
    }

    /// Whether `template` was already sent (or scheduled) for this order.
    pub fn already_sent(&self, template: &str) -> bool {
        self.history.iter().any(|n| n.template == template)
    }

    /// Whether an escalation is open for this order in `queue`.
    pub fn has_open_escalation(&self, queue: &str) -> bool {
        self.open_escalations.iter().any(|e| e.queue == queue)
    }
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Plugin name, e.g. `"standard-lifecycle"`.
    pub name: String,
    /// Plugin version (semver).
    pub version: String,
    /// Event kinds the plugin acts on.
    pub handles: Vec<EventKind>,
    /// JSON Schema (text) of the merchant config the plugin accepts.
    pub config_schema: String,
}
