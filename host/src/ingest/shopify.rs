//! Shopify webhooks in, Tidings order events out.
//!
//! In: the delivery headers ([`Delivery`]), the raw JSON body of a Shopify
//! REST Admin API webhook, and what the host already knows about the order
//! ([`Known`]: the snapshot from the last mapped webhook). Out: a
//! [`Mapped::Event`] to ingest, or [`Mapped::Ignored`] for bodies with
//! nothing to notify. Fails with [`MapError::Malformed`] when the body is not
//! JSON and [`MapError::Missing`] naming the Shopify field (e.g.
//! `line_items[0].price`) when a required one is absent or wrong.
//!
//! | Topic | Event kind |
//! |---|---|
//! | `orders/create` | `order_created` |
//! | `orders/paid` | `order_paid` |
//! | `orders/cancelled` | `order_cancelled` |
//! | `orders/fulfilled` | `shipment_created` (ignored when no new fulfillment) |
//! | `orders/partially_fulfilled` | `partially_shipped` (ignored when no new fulfillment) |
//! | `fulfillments/create` | `partially_shipped` if units remain to ship, else `shipment_created` |
//! | `fulfillments/update` | by `shipment_status` (see [`carrier_status`]); ignored when unchanged |
//! | `fulfillment_events/create` | by `status`, the same way |
//! | `refunds/create` | `items_cancelled` if a line has `restock_type: cancel`, else `refund_created` |
//! | `returns/request` | `return_requested` |
//! | `returns/approve` | `return_approved` |
//! | `returns/close` | `return_received` (Shopify closes a return once its items are back) |
//! | `returns/decline`, `returns/cancel`, `returns/reopen` | ignored, recorded on the order (see below) |
//! | anything else | ignored |
//!
//! Fulfillment, refund and return bodies do not carry the order: they need
//! [`Known`]. For an order Tidings has not seen yet (Shopify does not
//! guarantee delivery order) they map to [`Mapped::Held`]: the host keeps
//! the delivery and maps it again, in [`held_order`], once the order's
//! snapshot arrives. Every required field is checked before holding, so a
//! held delivery is not rejected later.
//!
//! A declined, cancelled or reopened return has no event kind, and the
//! nearest ones (`return_requested`, `return_approved`) would have a rule
//! send the wrong message; those topics are checked, recorded on the order's
//! audit trail with the return and the decline reason, and not notified.
//! Unmapped
//! topics (notably `orders/updated`, which fires on every change) return no
//! order snapshot: remembering it would make the specific topics that follow
//! look like duplicates.
//!
//! Shopify sends no customer timezone; it is guessed from the shipping (else
//! billing) country, see [`timezone_for`].

use std::collections::{BTreeMap, HashMap};

use tidings_sdk::types::{
    Channel, Customer, EventKind, LineItem, LineStatus, Money, Order, OrderEvent, Shipment,
    ShipmentItem, ShipmentStatus, Timestamp,
};

pub use super::platform::{MapError, Mapped, is_behind, progress};
use super::platform::{
    Node, add_units, check_currency, e164, locale_for, missing, move_units, parse_body, parse_time,
    pending_units, refund_attributes, split_tags, timezone_for, upsert_shipment, verify_hmac_b64,
};

/// The `source` of events mapped here.
pub const SOURCE: &str = "shopify";

/// Constant-time check of `X-Shopify-Hmac-Sha256`: the base64 HMAC-SHA256 of
/// the raw body keyed with the app's client secret.
pub fn verify_signature(secret: &[u8], body: &[u8], signature_b64: &str) -> bool {
    verify_hmac_b64(secret, body, signature_b64)
}

/// The delivery headers.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// `X-Shopify-Topic`, e.g. `orders/create`.
    pub topic: &'a str,
    /// `X-Shopify-Shop-Domain`, e.g. `bottega.myshopify.com`.
    pub shop_domain: Option<&'a str>,
    /// `X-Shopify-Event-Id`, else `X-Shopify-Webhook-Id`: the same on every
    /// retry of one delivery.
    pub event_id: Option<&'a str>,
    /// `X-Shopify-Triggered-At`: when the change happened.
    pub triggered_at: Option<&'a str>,
}

/// What the host already knows about the order: the `order` of the last
/// [`Mapped::Event`] (or [`Mapped::Ignored`] snapshot) for it.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// The last order snapshot.
    pub order: &'a Order,
}

/// The Shopify order id a body is about, so the host can look up [`Known`]
/// before mapping: `id` for `orders/*`, `order.id` for `returns/*`,
/// `order_id` otherwise.
pub fn order_id(topic: &str, body: &[u8]) -> Option<String> {
    let value = parse_body(body).ok()?;
    order_ref(topic, &Node::root(&value)).ok()
}

fn order_ref(topic: &str, root: &Node<'_>) -> Result<String, MapError> {
    if topic.starts_with("orders/") {
        return root.req_id("id");
    }
    root.child("order")
        .and_then(|o| o.id("id"))
        .or_else(|| root.id("order_id"))
        .filter(|id| id != "0")
        .ok_or_else(|| {
            let field = if topic.starts_with("returns/") {
                "order.id"
            } else {
                "order_id"
            };
            missing(field, "required, expected the order's id")
        })
}

/// Where a held delivery goes when its order arrives and the held ones are
/// mapped again: by `X-Shopify-Triggered-At` (when the change happened;
/// else `received_ms`, when Tidings got it), then fulfillments before their
/// carrier events, refunds and returns, so a tracking update does not
/// overtake the fulfillment it belongs to.
pub fn held_order(topic: &str, triggered_at: Option<&str>, received_ms: i64) -> (i64, u8) {
    let at = triggered_at
        .and_then(parse_time)
        .map_or(received_ms, |t| t.as_millisecond());
    let rank = match topic {
        "fulfillments/create" => 0,
        "fulfillments/update" => 1,
        "fulfillment_events/create" => 2,
        "refunds/create" => 3,
        "returns/request" => 4,
        "returns/approve" => 5,
        "returns/close" => 6,
        _ => 7,
    };
    (at, rank)
}

/// Map a Shopify webhook body to an order event.
pub fn map(
    delivery: &Delivery<'_>,
    body: &[u8],
    known: Option<Known<'_>>,
) -> Result<Mapped, MapError> {
    let value = parse_body(body)?;
    let root = Node::root(&value);
    let known = known.map(|k| k.order);
    match delivery.topic {
        "orders/create" => order_topic(delivery, &root, known, EventKind::OrderCreated),
        "orders/paid" => order_topic(delivery, &root, known, EventKind::OrderPaid),
        "orders/cancelled" => order_topic(delivery, &root, known, EventKind::OrderCancelled),
        "orders/fulfilled" => order_topic(delivery, &root, known, EventKind::ShipmentCreated),
        "orders/partially_fulfilled" => {
            order_topic(delivery, &root, known, EventKind::PartiallyShipped)
        }
        "fulfillments/create" | "fulfillments/update" => fulfillment(delivery, &root, known),
        "fulfillment_events/create" => fulfillment_event(delivery, &root, known),
        "refunds/create" => refund(delivery, &root, known),
        "returns/request" => return_topic(delivery, &root, known, EventKind::ReturnRequested),
        "returns/approve" => return_topic(delivery, &root, known, EventKind::ReturnApproved),
        "returns/close" => return_topic(delivery, &root, known, EventKind::ReturnReceived),
        "returns/decline" => return_update(&root, "declined"),
        "returns/cancel" => return_update(&root, "cancelled"),
        "returns/reopen" => return_update(&root, "reopened"),
        topic => Ok(ignored(format!("topic `{topic}` is not mapped"), None)),
    }
}

/// A carrier status (`shipment_status` of a fulfillment, `status` of a
/// fulfillment event) as a shipment status and the event kind it notifies.
///
/// `failure` (lost, returned to sender) notifies `delivery_attempt_failed`
/// with the shipment `failed`; `ready_for_pickup` notifies
/// `out_for_delivery` (the parcel waits for the customer; the event's
/// `shipment_status` attribute says which). Label and confirmation statuses
/// notify nothing.
pub fn carrier_status(status: &str) -> Option<(ShipmentStatus, Option<EventKind>)> {
    Some(match status {
        "label_printed" | "label_purchased" | "confirmed" => (ShipmentStatus::LabelCreated, None),
        "in_transit" | "carrier_picked_up" => (
            ShipmentStatus::InTransit,
            Some(EventKind::ShipmentInTransit),
        ),
        "out_for_delivery" | "ready_for_pickup" => (
            ShipmentStatus::OutForDelivery,
            Some(EventKind::OutForDelivery),
        ),
        "delivered" | "picked_up" => (ShipmentStatus::Delivered, Some(EventKind::Delivered)),
        "attempted_delivery" => (
            ShipmentStatus::AttemptFailed,
            Some(EventKind::DeliveryAttemptFailed),
        ),
        "delayed" => (ShipmentStatus::Delayed, Some(EventKind::DeliveryDelayed)),
        "failure" => (
            ShipmentStatus::Failed,
            Some(EventKind::DeliveryAttemptFailed),
        ),
        _ => return None,
    })
}

fn ignored(reason: String, order: Option<Order>) -> Mapped {
    let platform_status = order.as_ref().map(status_summary);
    Mapped::Ignored {
        reason,
        order,
        platform_status,
    }
}

/// `financial_status/fulfillment_status`, e.g. `paid/partial`.
fn status_summary(order: &Order) -> String {
    let get = |key: &str| {
        order
            .attributes
            .get(key)
            .map_or("unknown", String::as_str)
            .to_owned()
    };
    format!("{}/{}", get("financial_status"), get("fulfillment_status"))
}

/// What a delivery is known by across Shopify's retries, when its headers
/// carry an event (or webhook) id: the topic and that id, also the
/// idempotency key of the event it maps to.
pub fn delivery_key(delivery: &Delivery<'_>) -> Option<String> {
    delivery
        .event_id
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| format!("shopify:{}:{id}", delivery.topic))
}

/// The idempotency key: the [`delivery_key`], else (no id header) the
/// topic and `resource`, what changed.
fn key(delivery: &Delivery<'_>, resource: &str) -> String {
    delivery_key(delivery).unwrap_or_else(|| format!("shopify:{}:{resource}", delivery.topic))
}

/// Keep a delivery about an order Tidings has not seen yet.
fn held(
    delivery: &Delivery<'_>,
    root: &Node<'_>,
    resource: &str,
    what: String,
) -> Result<Mapped, MapError> {
    Ok(Mapped::Held {
        order_id: order_ref(delivery.topic, root)?,
        key: key(delivery, resource),
        reason: format!("{what} is for an order Tidings has not seen yet"),
    })
}

/// Build the event. `resource` identifies what changed, for a derived
/// idempotency key when the headers carry no event id.
fn event(
    delivery: &Delivery<'_>,
    kind: EventKind,
    order: Order,
    shipment: Option<Shipment>,
    attributes: BTreeMap<String, String>,
    resource: &str,
    when: Option<Timestamp>,
) -> Mapped {
    let id = key(delivery, resource);
    let occurred_at = delivery
        .triggered_at
        .and_then(parse_time)
        .or(when)
        .unwrap_or(order.created_at);
    let platform_status = Some(status_summary(&order));
    let mut event = OrderEvent {
        id: id.clone(),
        kind,
        occurred_at,
        order,
        shipment,
        source: SOURCE.to_owned(),
        attributes,
    };
    event.normalize();
    Mapped::Event {
        event,
        idempotency_key: id,
        platform_status,
    }
}

fn order_topic(
    delivery: &Delivery<'_>,
    root: &Node<'_>,
    known: Option<&Order>,
    kind: EventKind,
) -> Result<Mapped, MapError> {
    let order = order_from(root, delivery.shop_domain)?;
    let mut attributes = BTreeMap::new();
    let mut shipment = None;
    if matches!(
        kind,
        EventKind::ShipmentCreated | EventKind::PartiallyShipped
    ) {
        // Shopify also sends `fulfillments/create` for the same fulfillment;
        // whichever arrives second finds the shipment known and is ignored.
        let is_new =
            |s: &&Shipment| known.is_none_or(|k| !k.shipments.iter().any(|o| o.id == s.id));
        match order.shipments.iter().rfind(is_new) {
            Some(new) => shipment = Some(new.clone()),
            None if known.is_some() => {
                return Ok(ignored(
                    "no fulfillment Tidings has not already seen".to_owned(),
                    Some(order),
                ));
            }
            None => shipment = order.shipments.last().cloned(),
        }
    }
    if kind == EventKind::OrderCancelled {
        if let Some(reason) = root.str("cancel_reason") {
            attributes.insert("reason".to_owned(), reason.to_owned());
        }
        let refunded = refund_amount(&root.items("refunds"), &order.total.currency)?;
        if refunded.minor > 0 {
            refund_attributes(&mut attributes, &refunded);
        }
    }
    let when = match kind {
        EventKind::OrderCreated => root.time("created_at"),
        EventKind::OrderCancelled => root.time("cancelled_at"),
        _ => None,
    }
    .or_else(|| root.time("updated_at"));
    let resource = format!(
        "{}:{}",
        order.id,
        root.str("updated_at").unwrap_or_default()
    );
    Ok(event(
        delivery, kind, order, shipment, attributes, &resource, when,
    ))
}

/// Units of one line removed by refunds, by what happened to them.
#[derive(Debug, Clone, Copy, Default)]
struct Removed {
    cancelled: u32,
    returned: u32,
    refunded: u32,
}

/// A line's SKU, or `line-<id>` when the product has none, so later
/// fulfillments and refunds find the same line.
fn sku_of(line: &Node<'_>) -> String {
    match (line.str("sku"), line.id("id")) {
        (Some(sku), _) => sku.to_owned(),
        (None, Some(id)) => format!("line-{id}"),
        (None, None) => "unknown".to_owned(),
    }
}

fn order_from(root: &Node<'_>, shop_domain: Option<&str>) -> Result<Order, MapError> {
    let id = root.req_id("id")?;
    let shop_money = root.dig(&["total_price_set", "shop_money"]);
    let currency = match (root.str("currency"), &shop_money) {
        (Some(code), _) => check_currency(&root.path_of("currency"), code)?,
        (None, Some(money)) => check_currency(
            &money.path_of("currency_code"),
            money.req_str("currency_code")?,
        )?,
        (None, None) => return Err(missing("currency", "required, expected an ISO 4217 code")),
    };
    let total = match (root.minor("total_price", &currency), &shop_money) {
        (Some(total), _) => total?,
        (None, Some(money)) => money.req_minor("amount", &currency)?,
        (None, None) => {
            return Err(missing(
                "total_price",
                "required, expected a decimal amount",
            ));
        }
    };
    let number = root
        .str("name")
        .map(str::to_owned)
        .or_else(|| root.id("order_number").map(|n| format!("#{n}")))
        .ok_or_else(|| missing("name", "required, expected the order name (e.g. #1042)"))?;
    let created_at = root.req_time("created_at")?;
    let cancelled = root.str("cancelled_at").is_some();

    let mut removed: HashMap<String, Removed> = HashMap::new();
    for refund in root.items("refunds") {
        for line in refund.items("refund_line_items") {
            let Some(line_id) = line
                .id("line_item_id")
                .or_else(|| line.child("line_item").and_then(|l| l.id("id")))
            else {
                continue;
            };
            let quantity = line.u32("quantity").unwrap_or(0);
            let entry = removed.entry(line_id).or_default();
            match line.str("restock_type") {
                Some("cancel") => entry.cancelled += quantity,
                Some("return") => entry.returned += quantity,
                _ => entry.refunded += quantity,
            }
        }
    }
    let mut shipped: HashMap<String, u32> = HashMap::new();
    let fulfillments: Vec<_> = root
        .items("fulfillments")
        .into_iter()
        .filter(|f| !matches!(f.str("status"), Some("cancelled" | "error" | "failure")))
        .collect();
    for fulfillment in &fulfillments {
        for line in fulfillment.items("line_items") {
            if let Some(line_id) = line.id("id") {
                *shipped.entry(line_id).or_default() += line.u32("quantity").unwrap_or(0);
            }
        }
    }

    let mut items = Vec::new();
    for line in root.items("line_items") {
        let quantity = line.req_u32("quantity")?;
        let price = match (
            line.minor("price", &currency),
            line.dig(&["price_set", "shop_money"]),
        ) {
            (Some(price), _) => price?,
            (None, Some(money)) => money.req_minor("amount", &currency)?,
            (None, None) => {
                return Err(missing(
                    &line.path_of("price"),
                    "required, expected a decimal amount",
                ));
            }
        };
        let sku = sku_of(&line);
        let template = LineItem {
            title: line
                .str("name")
                .or_else(|| line.str("title"))
                .unwrap_or(&sku)
                .to_owned(),
            sku,
            quantity,
            unit_price: Money::new(price, &currency),
            status: LineStatus::Pending,
        };
        let line_id = line.id("id").unwrap_or_default();
        let units = line_units(
            &line,
            quantity,
            removed.get(&line_id).copied().unwrap_or_default(),
            shipped.get(&line_id).copied().unwrap_or(0),
            cancelled,
        );
        if units.iter().all(|(_, n)| *n == 0) {
            items.push(template);
        } else {
            for (status, n) in units {
                add_units(&mut items, &template, status, n);
            }
        }
    }

    let shipments = fulfillments
        .iter()
        .map(shipment_from)
        .collect::<Result<Vec<_>, _>>()?;

    let financial = root.str("financial_status").unwrap_or("pending");
    let mut attributes = BTreeMap::new();
    for note in root.items("note_attributes") {
        if let (Some(name), Some(value)) = (note.str("name"), note.text("value")) {
            attributes.insert(name.to_owned(), value);
        }
    }
    attributes.insert("financial_status".to_owned(), financial.to_owned());
    attributes.insert(
        "fulfillment_status".to_owned(),
        root.str("fulfillment_status")
            .unwrap_or("unfulfilled")
            .to_owned(),
    );
    let paid = matches!(financial, "paid" | "partially_refunded" | "refunded");
    attributes.insert(
        "payment_status".to_owned(),
        if paid { "paid" } else { "pending" }.to_owned(),
    );
    if let Some(domain) = shop_domain {
        attributes.insert("shop_domain".to_owned(), domain.to_owned());
    }
    if let Some(reason) = root.str("cancel_reason").filter(|_| cancelled) {
        attributes.insert("cancel_reason".to_owned(), reason.to_owned());
    }
    let refund_ids: Vec<String> = root
        .items("refunds")
        .iter()
        .filter_map(|r| r.id("id"))
        .collect();
    if !refund_ids.is_empty() {
        attributes.insert(REFUND_IDS.to_owned(), refund_ids.join(","));
    }

    Ok(Order {
        customer: customer_from(root, &id),
        id,
        number,
        created_at,
        total: Money::new(total, &currency),
        items,
        shipments,
        tags: split_tags(root.str("tags")),
        attributes,
    })
}

/// Order attribute listing the refunds already reflected in the lines, so a
/// retried `refunds/create` does not move units twice.
const REFUND_IDS: &str = "shopify_refund_ids";

/// How the units of one line stand: shipped, waiting, cancelled, returned,
/// refunded. Shipped units come from the order's fulfillments (less those
/// returned); when the order is cancelled nothing is left waiting.
fn line_units(
    line: &Node<'_>,
    quantity: u32,
    removed: Removed,
    shipped: u32,
    order_cancelled: bool,
) -> [(LineStatus, u32); 5] {
    let remaining =
        quantity.saturating_sub(removed.cancelled + removed.returned + removed.refunded);
    let fulfilled = match line.str("fulfillment_status") {
        Some("fulfilled") => remaining,
        status => {
            if shipped > 0 {
                shipped.saturating_sub(removed.returned)
            } else if status == Some("partial") {
                remaining.saturating_sub(line.u32("fulfillable_quantity").unwrap_or(remaining))
            } else {
                0
            }
        }
    }
    .min(remaining);
    let mut pending = remaining - fulfilled;
    let mut cancelled = removed.cancelled;
    if order_cancelled {
        cancelled += pending;
        pending = 0;
    }
    [
        (LineStatus::Fulfilled, fulfilled),
        (LineStatus::Pending, pending),
        (LineStatus::Cancelled, cancelled),
        (LineStatus::Returned, removed.returned),
        (LineStatus::Refunded, removed.refunded),
    ]
}

fn shipment_from(fulfillment: &Node<'_>) -> Result<Shipment, MapError> {
    Ok(Shipment {
        id: fulfillment.req_id("id")?,
        carrier: fulfillment.str("tracking_company").map(str::to_owned),
        tracking_number: fulfillment
            .str("tracking_number")
            .or_else(|| fulfillment.first_str("tracking_numbers"))
            .map(str::to_owned),
        tracking_url: fulfillment
            .str("tracking_url")
            .or_else(|| fulfillment.first_str("tracking_urls"))
            .map(str::to_owned),
        eta: fulfillment.time("estimated_delivery_at"),
        status: fulfillment
            .str("shipment_status")
            .and_then(carrier_status)
            .map_or(ShipmentStatus::LabelCreated, |(status, _)| status),
        items: fulfillment
            .items("line_items")
            .iter()
            .map(|line| ShipmentItem {
                sku: sku_of(line),
                quantity: line.u32("quantity").unwrap_or(0),
            })
            .collect(),
    })
}

fn customer_from(root: &Node<'_>, order_id: &str) -> Customer {
    let customer = root.child("customer");
    let addresses = [
        root.child("shipping_address"),
        root.child("billing_address"),
        customer.as_ref().and_then(|c| c.child("default_address")),
    ];
    let country = addresses
        .iter()
        .flatten()
        .find_map(|a| a.str("country_code"));
    let email = [root.str("email"), root.str("contact_email")]
        .into_iter()
        .chain([customer.as_ref().and_then(|c| c.str("email"))])
        .flatten()
        .find(|e| e.contains('@'))
        .map(str::to_owned);
    let phone = [
        customer.as_ref().and_then(|c| c.str("phone")),
        root.str("phone"),
    ]
    .into_iter()
    .chain(
        addresses
            .iter()
            .map(|a| a.as_ref().and_then(|a| a.str("phone"))),
    )
    .flatten()
    .find_map(|p| e164(p, country));
    let id = customer
        .as_ref()
        .and_then(|c| c.id("id"))
        .or_else(|| {
            email
                .as_ref()
                .map(|e| format!("guest:{}", e.to_lowercase()))
        })
        .unwrap_or_else(|| format!("order:{order_id}"));
    let first_name = customer
        .as_ref()
        .and_then(|c| c.str("first_name"))
        .or_else(|| addresses.iter().flatten().find_map(|a| a.str("first_name")))
        .map(str::to_owned);
    let subscribed = |key: &str| {
        customer
            .as_ref()
            .and_then(|c| c.child(key))
            .map(|consent| consent.str("state") == Some("subscribed"))
    };
    let mut consents = Vec::new();
    // `buyer_accepts_marketing` is the older, email-only form of consent.
    if subscribed("email_marketing_consent")
        .unwrap_or_else(|| root.bool("buyer_accepts_marketing") == Some(true))
    {
        consents.push(Channel::Email);
    }
    if subscribed("sms_marketing_consent") == Some(true) {
        consents.push(Channel::Sms);
    }
    Customer {
        id,
        first_name,
        has_email: email.is_some(),
        has_phone: phone.is_some(),
        email,
        phone,
        locale: locale_for(root.str("customer_locale"), country),
        timezone: timezone_for(country),
        tags: split_tags(customer.as_ref().and_then(|c| c.str("tags"))),
        orders_count: customer
            .as_ref()
            .and_then(|c| c.u32("orders_count"))
            .unwrap_or(0),
        consents,
        channel_opt_outs: Vec::new(),
    }
}

/// Units remain to ship: `partially_shipped`, else `shipment_created`.
fn shipped_kind(order: &Order) -> EventKind {
    if pending_units(&order.items) > 0 {
        EventKind::PartiallyShipped
    } else {
        EventKind::ShipmentCreated
    }
}

fn set_fulfillment_status(order: &mut Order) {
    let status = if pending_units(&order.items) > 0 {
        "partial"
    } else {
        "fulfilled"
    };
    order
        .attributes
        .insert("fulfillment_status".to_owned(), status.to_owned());
}

fn fulfillment(
    delivery: &Delivery<'_>,
    root: &Node<'_>,
    known: Option<&Order>,
) -> Result<Mapped, MapError> {
    let shipment = shipment_from(root)?;
    let resource = format!(
        "{}:{}",
        shipment.id,
        root.str("updated_at").unwrap_or_default()
    );
    let Some(known) = known else {
        let what = format!("fulfillment {}", shipment.id);
        return held(delivery, root, &resource, what);
    };
    let mut order = known.clone();
    let previous = known.shipments.iter().find(|s| s.id == shipment.id);
    if let Some(status @ ("cancelled" | "error" | "failure")) = root.str("status") {
        if let Some(previous) = previous {
            for item in &previous.items {
                move_units(
                    &mut order.items,
                    &item.sku,
                    &[LineStatus::Fulfilled],
                    LineStatus::Pending,
                    item.quantity,
                );
            }
        }
        order.shipments.retain(|s| s.id != shipment.id);
        set_fulfillment_status(&mut order);
        return Ok(ignored(
            format!("fulfillment {} is {status}", shipment.id),
            Some(order),
        ));
    }
    let is_create = delivery.topic == "fulfillments/create";
    if is_create && previous.is_some() {
        return Ok(ignored(
            format!("fulfillment {} is already known", shipment.id),
            Some(order),
        ));
    }
    if previous.is_none() {
        for item in &shipment.items {
            move_units(
                &mut order.items,
                &item.sku,
                &[LineStatus::Pending],
                LineStatus::Fulfilled,
                item.quantity,
            );
        }
    }
    let carrier = root.str("shipment_status");
    let new_status = carrier.and_then(carrier_status);
    let previous_status = previous.map(|s| s.status);
    let shipment = upsert_shipment(&mut order, shipment);
    set_fulfillment_status(&mut order);
    let kind = match new_status {
        _ if is_create => shipped_kind(&order),
        Some((status, Some(kind))) if previous_status != Some(status) => kind,
        _ if previous.is_none() => shipped_kind(&order),
        _ => {
            return Ok(ignored(
                format!(
                    "fulfillment {} has no new carrier status ({})",
                    shipment.id,
                    carrier.unwrap_or("none")
                ),
                Some(order),
            ));
        }
    };
    let mut attributes = BTreeMap::new();
    if let Some(carrier) = carrier {
        attributes.insert("shipment_status".to_owned(), carrier.to_owned());
    }
    let when = root.time("updated_at").or_else(|| root.time("created_at"));
    Ok(event(
        delivery,
        kind,
        order,
        Some(shipment),
        attributes,
        &resource,
        when,
    ))
}

fn fulfillment_event(
    delivery: &Delivery<'_>,
    root: &Node<'_>,
    known: Option<&Order>,
) -> Result<Mapped, MapError> {
    let event_id = root.req_id("id")?;
    let fulfillment_id = root.req_id("fulfillment_id")?;
    let raw = root.req_str("status")?;
    let Some(known) = known else {
        let what = format!("fulfillment event {event_id}");
        return held(delivery, root, &event_id, what);
    };
    let mut order = known.clone();
    let Some((status, kind)) = carrier_status(raw) else {
        return Ok(ignored(
            format!("fulfillment event status `{raw}` is not mapped"),
            Some(order),
        ));
    };
    let previous_status = known
        .shipments
        .iter()
        .find(|s| s.id == fulfillment_id)
        .map(|s| s.status);
    let shipment = upsert_shipment(
        &mut order,
        Shipment {
            id: fulfillment_id,
            carrier: None,
            tracking_number: None,
            tracking_url: None,
            eta: root.time("estimated_delivery_at"),
            status,
            items: Vec::new(),
        },
    );
    let Some(kind) = kind.filter(|_| previous_status != Some(status)) else {
        return Ok(ignored(
            format!("shipment {} is already `{raw}`", shipment.id),
            Some(order),
        ));
    };
    let mut attributes = BTreeMap::from([("shipment_status".to_owned(), raw.to_owned())]);
    if let Some(message) = root.str("message") {
        attributes.insert("carrier_message".to_owned(), message.to_owned());
    }
    let when = root.time("happened_at").or_else(|| root.time("created_at"));
    Ok(event(
        delivery,
        kind,
        order,
        Some(shipment),
        attributes,
        &event_id,
        when,
    ))
}

/// The money refunded by `refunds`: successful `refund` transactions, in the
/// first transaction's currency (else `currency`).
fn refund_amount(refunds: &[Node<'_>], currency: &str) -> Result<Money, MapError> {
    let mut total: Option<Money> = None;
    for refund in refunds {
        for tx in refund.items("transactions") {
            let refund_kind = tx.str("kind").is_none_or(|k| k == "refund");
            let succeeded = tx.str("status").is_none_or(|s| s == "success");
            if !(refund_kind && succeeded) {
                continue;
            }
            let code = match tx.str("currency") {
                Some(code) => check_currency(&tx.path_of("currency"), code)?,
                None => currency.to_owned(),
            };
            let amount = tx.req_minor("amount", &code)?;
            let sum = total.get_or_insert_with(|| Money::new(0, &code));
            if sum.currency == code {
                sum.minor += amount;
            }
        }
    }
    Ok(total.unwrap_or_else(|| Money::new(0, currency)))
}

fn refund(
    delivery: &Delivery<'_>,
    root: &Node<'_>,
    known: Option<&Order>,
) -> Result<Mapped, MapError> {
    let refund_id = root.req_id("id")?;
    let mut lines = Vec::new();
    for line in root.items("refund_line_items") {
        let quantity = line.req_u32("quantity")?;
        let sku = match line.child("line_item") {
            Some(item) => sku_of(&item),
            None => format!("line-{}", line.req_id("line_item_id")?),
        };
        let restock = line.str("restock_type").unwrap_or("no_restock");
        lines.push((sku, quantity, restock));
    }
    let Some(known) = known else {
        // Checked before holding; without the order's currency, a
        // transaction without one is read with two decimals, which only
        // decides which amounts are well formed.
        refund_amount(std::slice::from_ref(root), "XXX")?;
        let what = format!("refund {refund_id}");
        return held(delivery, root, &refund_id, what);
    };
    let mut order = known.clone();
    let applied = order
        .attributes
        .get(REFUND_IDS)
        .is_some_and(|ids| ids.split(',').any(|id| id == refund_id));
    let mut cancelled_units = 0;
    for (sku, quantity, restock) in lines {
        if restock == "cancel" {
            cancelled_units += quantity;
        }
        if applied {
            continue;
        }
        let (from, to): (&[LineStatus], LineStatus) = match restock {
            "cancel" => (&[LineStatus::Pending], LineStatus::Cancelled),
            "return" => (
                &[LineStatus::Fulfilled, LineStatus::Pending],
                LineStatus::Returned,
            ),
            _ => (
                &[LineStatus::Pending, LineStatus::Fulfilled],
                LineStatus::Refunded,
            ),
        };
        move_units(&mut order.items, &sku, from, to, quantity);
    }
    if !applied {
        let ids = order.attributes.entry(REFUND_IDS.to_owned()).or_default();
        if !ids.is_empty() {
            ids.push(',');
        }
        ids.push_str(&refund_id);
    }
    let amount = refund_amount(std::slice::from_ref(root), &order.total.currency)?;
    let mut attributes = BTreeMap::from([("refund_id".to_owned(), refund_id.clone())]);
    refund_attributes(&mut attributes, &amount);
    if let Some(note) = root.str("note") {
        attributes.insert("reason".to_owned(), note.to_owned());
    }
    let kind = if cancelled_units > 0 {
        attributes.insert("cancelled_quantity".to_owned(), cancelled_units.to_string());
        EventKind::ItemsCancelled
    } else {
        EventKind::RefundCreated
    };
    let when = root
        .time("processed_at")
        .or_else(|| root.time("created_at"));
    Ok(event(
        delivery, kind, order, None, attributes, &refund_id, when,
    ))
}

fn return_topic(
    delivery: &Delivery<'_>,
    root: &Node<'_>,
    known: Option<&Order>,
    kind: EventKind,
) -> Result<Mapped, MapError> {
    let return_id = root.req_id("id")?;
    let resource = format!("{return_id}:{}", root.str("status").unwrap_or_default());
    let Some(known) = known else {
        let what = format!("return {return_id}");
        return held(delivery, root, &resource, what);
    };
    let lines = root.items("return_line_items");
    let mut attributes = BTreeMap::from([("return_id".to_owned(), return_id.clone())]);
    if let Some(name) = root.str("name") {
        attributes.insert("return_name".to_owned(), name.to_owned());
    }
    if let Some(status) = root.str("status") {
        attributes.insert("return_status".to_owned(), status.to_owned());
    }
    if !lines.is_empty() {
        let quantity: u32 = lines.iter().filter_map(|l| l.u32("quantity")).sum();
        attributes.insert("return_quantity".to_owned(), quantity.to_string());
    }
    if let Some(reason) = lines.iter().find_map(|l| l.str("return_reason")) {
        attributes.insert("reason".to_owned(), reason.to_owned());
    }
    let when = root.time("updated_at").or_else(|| root.time("created_at"));
    Ok(event(
        delivery,
        kind,
        known.clone(),
        None,
        attributes,
        &resource,
        when,
    ))
}

/// `returns/decline`, `returns/cancel`, `returns/reopen`: checked, then
/// recorded (ignored, with the return and the decline reason), not notified;
/// see the module docs.
fn return_update(root: &Node<'_>, what: &str) -> Result<Mapped, MapError> {
    let return_id = root.req_id("id")?;
    let name = match root.str("name") {
        Some(name) => format!("{name} ({return_id})"),
        None => return_id,
    };
    let mut reason = format!("return {name} {what}: recorded, not notified (no event kind for it)");
    let decline = root.child("decline");
    let because: Vec<&str> = [
        decline.as_ref().and_then(|d| d.str("reason")),
        decline.as_ref().and_then(|d| d.str("note")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !because.is_empty() {
        reason.push_str(&format!("; reason: {}", because.join(" — ")));
    }
    Ok(ignored(reason, None))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use serde_json::{Value, json};
    use sha2::Sha256;

    use super::*;
    use crate::ingest::validate;

    const ORDERS_CREATE: &str = include_str!("../../../tests/fixtures/shopify/orders_create.json");
    const ORDERS_PARTIALLY_FULFILLED: &str =
        include_str!("../../../tests/fixtures/shopify/orders_partially_fulfilled.json");
    const ORDERS_FULFILLED: &str =
        include_str!("../../../tests/fixtures/shopify/orders_fulfilled.json");
    const ORDERS_CANCELLED: &str =
        include_str!("../../../tests/fixtures/shopify/orders_cancelled.json");
    const FULFILLMENT_FIRST: &str =
        include_str!("../../../tests/fixtures/shopify/fulfillments_create_first.json");
    const FULFILLMENT_SECOND: &str =
        include_str!("../../../tests/fixtures/shopify/fulfillments_create_second.json");
    const FULFILLMENT_IN_TRANSIT: &str =
        include_str!("../../../tests/fixtures/shopify/fulfillments_update_in_transit.json");
    const EVENT_DELIVERED: &str =
        include_str!("../../../tests/fixtures/shopify/fulfillment_events_create_delivered.json");
    const EVENT_DELAYED: &str =
        include_str!("../../../tests/fixtures/shopify/fulfillment_events_create_delayed.json");
    const REFUND_CANCEL_LINE: &str =
        include_str!("../../../tests/fixtures/shopify/refunds_create_cancel_line.json");
    const REFUND_RETURN: &str =
        include_str!("../../../tests/fixtures/shopify/refunds_create_return.json");
    const RETURN_REQUEST: &str =
        include_str!("../../../tests/fixtures/shopify/returns_request.json");

    fn delivery(topic: &str) -> Delivery<'_> {
        Delivery {
            topic,
            shop_domain: Some("bottega-verde.myshopify.com"),
            event_id: Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
            triggered_at: None,
        }
    }

    fn mapped(topic: &str, body: &str, known: Option<&Order>) -> Mapped {
        map(
            &delivery(topic),
            body.as_bytes(),
            known.map(|order| Known { order }),
        )
        .expect("the body maps")
    }

    fn event(topic: &str, body: &str, known: Option<&Order>) -> OrderEvent {
        match mapped(topic, body, known) {
            Mapped::Event { event, .. } => {
                validate(&event).expect("the event passes ingest validation");
                event
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn ignored(topic: &str, body: &str, known: Option<&Order>) -> (String, Option<Order>) {
        match mapped(topic, body, known) {
            Mapped::Ignored { reason, order, .. } => (reason, order),
            other => panic!("expected ignored, got {other:?}"),
        }
    }

    fn lines(order: &Order) -> Vec<(&str, u32, LineStatus)> {
        order
            .items
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity, l.status))
            .collect()
    }

    fn field_of(topic: &str, body: &Value) -> String {
        match map(&delivery(topic), body.to_string().as_bytes(), None) {
            Err(MapError::Missing { field, .. }) => field,
            other => panic!("expected a missing field, got {other:?}"),
        }
    }

    /// The order after create, first fulfillment, cancelled towel and second
    /// fulfillment, as the host would have stored it.
    fn story() -> [OrderEvent; 4] {
        let created = event("orders/create", ORDERS_CREATE, None);
        let first = event(
            "fulfillments/create",
            FULFILLMENT_FIRST,
            Some(&created.order),
        );
        let cancelled = event("refunds/create", REFUND_CANCEL_LINE, Some(&first.order));
        let second = event(
            "fulfillments/create",
            FULFILLMENT_SECOND,
            Some(&cancelled.order),
        );
        [created, first, cancelled, second]
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signature_check_accepts_shopify_hmac_and_rejects_anything_else() {
        let body = ORDERS_CREATE.as_bytes();
        let signature = sign(b"shpss_app_secret", body);
        assert!(verify_signature(b"shpss_app_secret", body, &signature));
        let tampered = ORDERS_CREATE.replace("156.00", "1.00");
        assert!(!verify_signature(
            b"shpss_app_secret",
            tampered.as_bytes(),
            &signature
        ));
        assert!(!verify_signature(b"another_secret", body, &signature));
        assert!(!verify_signature(
            b"shpss_app_secret",
            body,
            "not base64 !!"
        ));
        assert!(!verify_signature(b"shpss_app_secret", body, ""));
        assert!(!verify_signature(
            b"shpss_app_secret",
            body,
            &signature[..20]
        ));
    }

    #[test]
    fn orders_create_maps_the_whole_order_field_by_field() {
        let mapped = mapped("orders/create", ORDERS_CREATE, None);
        let Mapped::Event {
            event,
            idempotency_key,
            platform_status,
        } = mapped
        else {
            panic!("expected an event");
        };
        validate(&event).expect("valid");
        assert_eq!(event.kind, EventKind::OrderCreated);
        assert_eq!(
            event.id,
            "shopify:orders/create:b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
        );
        assert_eq!(idempotency_key, event.id);
        assert_eq!(platform_status.as_deref(), Some("paid/unfulfilled"));
        assert_eq!(event.source, "shopify");
        assert_eq!(event.occurred_at.to_string(), "2026-11-20T09:12:44Z");
        assert_eq!(event.shipment, None);

        let order = &event.order;
        assert_eq!(order.id, "5791234567890");
        assert_eq!(order.number, "#1042");
        assert_eq!(order.created_at.to_string(), "2026-11-20T09:12:44Z");
        assert_eq!(order.total, Money::new(15_600, "EUR"));
        assert_eq!(
            lines(order),
            [
                ("TEE-ORG-M", 2, LineStatus::Pending),
                ("MUG-STONE", 1, LineStatus::Pending),
                ("LAMP-OAK", 1, LineStatus::Pending),
                ("TOWEL-LIN", 3, LineStatus::Pending),
            ]
        );
        assert_eq!(order.items[0].title, "Organic cotton T-shirt - M");
        assert_eq!(order.items[0].unit_price, Money::new(2900, "EUR"));
        assert_eq!(order.items[3].unit_price, Money::new(700, "EUR"));
        assert!(order.shipments.is_empty());
        assert_eq!(order.tags, ["gift", "priority"]);
        assert_eq!(order.attributes["gift_message"], "Buon compleanno!");
        assert_eq!(order.attributes["delivery_window"], "afternoon");
        assert_eq!(order.attributes["financial_status"], "paid");
        assert_eq!(order.attributes["fulfillment_status"], "unfulfilled");
        assert_eq!(order.attributes["payment_status"], "paid");
        assert_eq!(
            order.attributes["shop_domain"],
            "bottega-verde.myshopify.com"
        );

        let customer = &order.customer;
        assert_eq!(customer.id, "7208123456789");
        assert_eq!(customer.first_name.as_deref(), Some("Giulia"));
        assert_eq!(customer.email.as_deref(), Some("giulia.rossi@example.com"));
        assert_eq!(customer.phone.as_deref(), Some("+393471234567"));
        assert!(customer.has_email && customer.has_phone);
        assert_eq!(customer.locale, "it-IT");
        assert_eq!(customer.timezone, "Europe/Rome");
        assert_eq!(customer.tags, ["vip", "newsletter"]);
        assert_eq!(customer.orders_count, 3);
        assert_eq!(customer.consents, [Channel::Email]);
    }

    #[test]
    fn triggered_at_header_is_when_the_event_occurred() {
        let delivery = Delivery {
            triggered_at: Some("2026-11-20T09:12:50.123456789Z"),
            ..delivery("orders/paid")
        };
        let Ok(Mapped::Event { event, .. }) = map(&delivery, ORDERS_CREATE.as_bytes(), None) else {
            panic!("expected an event");
        };
        assert_eq!(event.kind, EventKind::OrderPaid);
        assert_eq!(
            event.occurred_at.to_string(),
            "2026-11-20T09:12:50.123456789Z"
        );
    }

    #[test]
    fn without_an_event_id_the_key_is_derived_from_topic_order_and_update_time() {
        let delivery = Delivery {
            event_id: None,
            ..delivery("orders/create")
        };
        let Ok(Mapped::Event {
            idempotency_key, ..
        }) = map(&delivery, ORDERS_CREATE.as_bytes(), None)
        else {
            panic!("expected an event");
        };
        assert_eq!(
            idempotency_key,
            "shopify:orders/create:5791234567890:2026-11-20T10:12:45+01:00"
        );
    }

    #[test]
    fn partially_fulfilled_order_keeps_unshipped_lines_pending() {
        let created = event("orders/create", ORDERS_CREATE, None);
        let event = event(
            "orders/partially_fulfilled",
            ORDERS_PARTIALLY_FULFILLED,
            Some(&created.order),
        );
        assert_eq!(event.kind, EventKind::PartiallyShipped);
        assert_eq!(
            lines(&event.order),
            [
                ("TEE-ORG-M", 2, LineStatus::Fulfilled),
                ("MUG-STONE", 1, LineStatus::Fulfilled),
                ("LAMP-OAK", 1, LineStatus::Pending),
                ("TOWEL-LIN", 3, LineStatus::Pending),
            ]
        );
        let shipment = event.shipment.expect("the new fulfillment");
        assert_eq!(shipment.id, "4567000001");
        assert_eq!(shipment.carrier.as_deref(), Some("BRT"));
        assert_eq!(shipment.tracking_number.as_deref(), Some("BRT123456789IT"));
        assert_eq!(
            shipment.tracking_url.as_deref(),
            Some("https://vas.brt.it/vas/sped_det_show.hsm?Nspediz=BRT123456789IT")
        );
        assert_eq!(shipment.status, ShipmentStatus::LabelCreated);
        assert_eq!(
            shipment.items,
            [
                ShipmentItem {
                    sku: "TEE-ORG-M".into(),
                    quantity: 2
                },
                ShipmentItem {
                    sku: "MUG-STONE".into(),
                    quantity: 1
                },
            ]
        );
        assert_eq!(event.order.attributes["fulfillment_status"], "partial");
    }

    #[test]
    fn first_fulfillment_of_part_of_the_order_is_partially_shipped() {
        let [created, first, ..] = story();
        assert_eq!(first.kind, EventKind::PartiallyShipped);
        assert_eq!(first.order.id, created.order.id);
        assert_eq!(
            lines(&first.order),
            [
                ("TEE-ORG-M", 2, LineStatus::Fulfilled),
                ("MUG-STONE", 1, LineStatus::Fulfilled),
                ("LAMP-OAK", 1, LineStatus::Pending),
                ("TOWEL-LIN", 3, LineStatus::Pending),
            ]
        );
        let shipment = first.shipment.expect("shipment");
        assert_eq!(shipment.tracking_number.as_deref(), Some("BRT123456789IT"));
        assert_eq!(first.order.shipments, [shipment]);
        assert_eq!(first.occurred_at.to_string(), "2026-11-21T08:30:00Z");
    }

    #[test]
    fn refund_that_cancels_one_line_is_items_cancelled() {
        let [_, _, cancelled, _] = story();
        assert_eq!(cancelled.kind, EventKind::ItemsCancelled);
        assert_eq!(
            lines(&cancelled.order),
            [
                ("TEE-ORG-M", 2, LineStatus::Fulfilled),
                ("MUG-STONE", 1, LineStatus::Fulfilled),
                ("LAMP-OAK", 1, LineStatus::Pending),
                ("TOWEL-LIN", 2, LineStatus::Pending),
                ("TOWEL-LIN", 1, LineStatus::Cancelled),
            ]
        );
        assert_eq!(cancelled.attributes["refund_amount_minor"], "700");
        assert_eq!(cancelled.attributes["refund_currency"], "EUR");
        assert_eq!(cancelled.attributes["reason"], "Out of stock");
        assert_eq!(cancelled.attributes["cancelled_quantity"], "1");
        assert_eq!(cancelled.attributes["refund_id"], "930001");
    }

    #[test]
    fn second_parcel_of_a_split_shipment_completes_the_order() {
        let [.., second] = story();
        assert_eq!(second.kind, EventKind::ShipmentCreated);
        assert_eq!(
            lines(&second.order),
            [
                ("TEE-ORG-M", 2, LineStatus::Fulfilled),
                ("MUG-STONE", 1, LineStatus::Fulfilled),
                ("LAMP-OAK", 1, LineStatus::Fulfilled),
                ("TOWEL-LIN", 2, LineStatus::Fulfilled),
                ("TOWEL-LIN", 1, LineStatus::Cancelled),
            ]
        );
        let tracking: Vec<_> = second
            .order
            .shipments
            .iter()
            .map(|s| {
                (
                    s.id.as_str(),
                    s.carrier.as_deref(),
                    s.tracking_number.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            tracking,
            [
                ("4567000001", Some("BRT"), Some("BRT123456789IT")),
                ("4567000002", Some("GLS"), Some("GLS9988776655")),
            ]
        );
        let shipment = second.shipment.expect("shipment");
        assert_eq!(shipment.id, "4567000002");
        assert_eq!(
            shipment.tracking_url.as_deref(),
            Some("https://gls-group.eu/track/GLS9988776655")
        );
        assert_eq!(second.order.attributes["fulfillment_status"], "fulfilled");
    }

    #[test]
    fn orders_fulfilled_after_its_fulfillments_were_seen_is_ignored() {
        let [.., second] = story();
        let (reason, order) = ignored("orders/fulfilled", ORDERS_FULFILLED, Some(&second.order));
        assert!(reason.contains("fulfillment"), "{reason}");
        assert_eq!(order.expect("snapshot").shipments.len(), 2);
    }

    #[test]
    fn orders_fulfilled_alone_carries_both_parcels_and_the_cancelled_line() {
        let event = event("orders/fulfilled", ORDERS_FULFILLED, None);
        assert_eq!(event.kind, EventKind::ShipmentCreated);
        assert_eq!(
            lines(&event.order),
            [
                ("TEE-ORG-M", 2, LineStatus::Fulfilled),
                ("MUG-STONE", 1, LineStatus::Fulfilled),
                ("LAMP-OAK", 1, LineStatus::Fulfilled),
                ("TOWEL-LIN", 2, LineStatus::Fulfilled),
                ("TOWEL-LIN", 1, LineStatus::Cancelled),
            ]
        );
        assert_eq!(event.order.shipments.len(), 2);
        assert_eq!(event.shipment.expect("latest parcel").id, "4567000002");
        assert_eq!(
            event.order.attributes["financial_status"],
            "partially_refunded"
        );
        assert_eq!(event.order.attributes["payment_status"], "paid");
        assert_eq!(event.order.attributes[REFUND_IDS], "930001");
    }

    #[test]
    fn fulfillment_created_twice_notifies_once() {
        let [_, first, ..] = story();
        let (reason, _) = ignored("fulfillments/create", FULFILLMENT_FIRST, Some(&first.order));
        assert!(reason.contains("already known"), "{reason}");
    }

    #[test]
    fn carrier_updates_follow_the_shipment_status() {
        let [.., second] = story();
        let transit = event(
            "fulfillments/update",
            FULFILLMENT_IN_TRANSIT,
            Some(&second.order),
        );
        assert_eq!(transit.kind, EventKind::ShipmentInTransit);
        assert_eq!(transit.attributes["shipment_status"], "in_transit");
        let shipment = transit.shipment.clone().expect("shipment");
        assert_eq!(shipment.status, ShipmentStatus::InTransit);
        assert_eq!(shipment.carrier.as_deref(), Some("BRT"));
        assert!(!is_behind(&second.order, &transit));

        let (reason, _) = ignored(
            "fulfillments/update",
            FULFILLMENT_IN_TRANSIT,
            Some(&transit.order),
        );
        assert!(reason.contains("no new carrier status"), "{reason}");

        let delivered = event(
            "fulfillment_events/create",
            EVENT_DELIVERED,
            Some(&transit.order),
        );
        assert_eq!(delivered.kind, EventKind::Delivered);
        assert_eq!(delivered.occurred_at.to_string(), "2026-11-24T10:47:00Z");
        assert_eq!(
            delivered.attributes["carrier_message"],
            "Consegnata al destinatario"
        );
        let shipment = delivered.shipment.clone().expect("shipment");
        assert_eq!(shipment.id, "4567000001");
        assert_eq!(shipment.status, ShipmentStatus::Delivered);
        assert_eq!(shipment.tracking_number.as_deref(), Some("BRT123456789IT"));
        assert_eq!(
            shipment.eta.map(|t| t.to_string()).as_deref(),
            Some("2026-11-24T17:00:00Z")
        );
        assert!(!is_behind(&transit.order, &delivered));
    }

    #[test]
    fn in_transit_after_delivered_is_recorded_but_behind() {
        let [.., second] = story();
        let delivered = event(
            "fulfillment_events/create",
            EVENT_DELIVERED,
            Some(&second.order),
        );
        let late = event(
            "fulfillments/update",
            FULFILLMENT_IN_TRANSIT,
            Some(&delivered.order),
        );
        assert_eq!(late.kind, EventKind::ShipmentInTransit);
        assert!(is_behind(&delivered.order, &late));
        assert_eq!(
            late.order.shipments[0].status,
            ShipmentStatus::Delivered,
            "the snapshot does not move backwards"
        );
    }

    #[test]
    fn a_delay_of_the_second_parcel_is_not_behind_the_first_parcels_delivery() {
        let [.., second] = story();
        let delivered = event(
            "fulfillment_events/create",
            EVENT_DELIVERED,
            Some(&second.order),
        );
        let delayed = event(
            "fulfillment_events/create",
            EVENT_DELAYED,
            Some(&delivered.order),
        );
        assert_eq!(delayed.kind, EventKind::DeliveryDelayed);
        let shipment = delayed.shipment.clone().expect("shipment");
        assert_eq!(shipment.id, "4567000002");
        assert_eq!(shipment.carrier.as_deref(), Some("GLS"));
        assert_eq!(
            shipment.eta.map(|t| t.to_string()).as_deref(),
            Some("2026-11-27T17:00:00Z")
        );
        assert!(!is_behind(&delivered.order, &delayed));
    }

    #[test]
    fn late_order_paid_after_shipping_is_behind() {
        let [.., second] = story();
        let paid = event("orders/paid", ORDERS_CREATE, Some(&second.order));
        assert!(is_behind(&second.order, &paid));
        let created = event("orders/create", ORDERS_CREATE, None);
        let paid = event("orders/paid", ORDERS_CREATE, Some(&created.order));
        let mut unpaid = created.order.clone();
        unpaid
            .attributes
            .insert("payment_status".into(), "pending".into());
        assert!(!is_behind(&unpaid, &paid));
    }

    #[test]
    fn refund_for_a_returned_item_is_refund_created() {
        let [.., second] = story();
        let refund = event("refunds/create", REFUND_RETURN, Some(&second.order));
        assert_eq!(refund.kind, EventKind::RefundCreated);
        assert_eq!(refund.attributes["refund_amount_minor"], "2900");
        assert_eq!(refund.attributes["refund_currency"], "EUR");
        assert_eq!(refund.attributes["reason"], "Wrong size");
        assert_eq!(
            lines(&refund.order)[..2],
            [
                ("TEE-ORG-M", 1, LineStatus::Fulfilled),
                ("TEE-ORG-M", 1, LineStatus::Returned),
            ]
        );
        assert_eq!(refund.order.attributes[REFUND_IDS], "930001,930002");
        assert!(!is_behind(&second.order, &refund));
    }

    #[test]
    fn a_retried_refund_does_not_move_units_twice() {
        let [_, _, cancelled, _] = story();
        let again = event("refunds/create", REFUND_CANCEL_LINE, Some(&cancelled.order));
        assert_eq!(again.kind, EventKind::ItemsCancelled);
        assert_eq!(again.order.items, cancelled.order.items);
    }

    #[test]
    fn return_request_is_return_requested_with_its_reason() {
        let [.., second] = story();
        let event = event("returns/request", RETURN_REQUEST, Some(&second.order));
        assert_eq!(event.kind, EventKind::ReturnRequested);
        assert_eq!(event.order, second.order);
        assert_eq!(event.attributes["return_id"], "9854321");
        assert_eq!(event.attributes["return_name"], "#1042-R1");
        assert_eq!(event.attributes["return_quantity"], "1");
        assert_eq!(event.attributes["reason"], "size_too_small");
        for (topic, kind) in [
            ("returns/approve", EventKind::ReturnApproved),
            ("returns/close", EventKind::ReturnReceived),
        ] {
            assert_eq!(
                self::event(topic, RETURN_REQUEST, Some(&second.order)).kind,
                kind
            );
        }
    }

    #[test]
    fn cancelled_yen_order_cancels_every_line_and_reports_the_refund() {
        let event = event("orders/cancelled", ORDERS_CANCELLED, None);
        assert_eq!(event.kind, EventKind::OrderCancelled);
        let order = &event.order;
        assert_eq!(order.number, "#1050");
        assert_eq!(order.total, Money::new(4500, "JPY"));
        assert_eq!(order.items[0].unit_price, Money::new(1500, "JPY"));
        assert_eq!(
            lines(order),
            [
                ("MATCHA-50", 2, LineStatus::Cancelled),
                ("WHISK-BAM", 1, LineStatus::Cancelled),
            ]
        );
        assert_eq!(event.attributes["reason"], "customer");
        assert_eq!(event.attributes["refund_amount_minor"], "4500");
        assert_eq!(event.attributes["refund_currency"], "JPY");
        assert_eq!(event.occurred_at.to_string(), "2026-11-20T05:00:00Z");
        assert_eq!(order.attributes["cancel_reason"], "customer");
        assert!(order.tags.is_empty());
        let customer = &order.customer;
        assert_eq!(customer.locale, "ja-JP");
        assert_eq!(customer.timezone, "Asia/Tokyo");
        assert_eq!(customer.phone.as_deref(), Some("+819012345678"));
        assert_eq!(customer.consents, [Channel::Sms]);
        assert!(customer.tags.is_empty());
    }

    const HELD: [(&str, &str); 6] = [
        ("fulfillments/create", FULFILLMENT_FIRST),
        ("fulfillments/update", FULFILLMENT_IN_TRANSIT),
        ("fulfillment_events/create", EVENT_DELIVERED),
        ("refunds/create", REFUND_RETURN),
        ("returns/request", RETURN_REQUEST),
        ("returns/close", RETURN_REQUEST),
    ];

    #[test]
    fn bodies_about_orders_never_seen_are_held_under_their_events_key() {
        for (topic, body) in HELD {
            match mapped(topic, body, None) {
                Mapped::Held {
                    order_id,
                    key,
                    reason,
                } => {
                    assert_eq!(order_id, "5791234567890", "{topic}");
                    assert_eq!(
                        key,
                        format!("shopify:{topic}:b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
                    );
                    assert!(reason.contains("has not seen yet"), "{topic}: {reason}");
                }
                other => panic!("{topic}: expected held, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_held_delivery_without_an_event_id_keeps_the_key_its_event_gets_later() {
        let created = event("orders/create", ORDERS_CREATE, None);
        for (topic, body) in HELD {
            let delivery = Delivery {
                event_id: None,
                ..delivery(topic)
            };
            let Ok(Mapped::Held { key, .. }) = map(&delivery, body.as_bytes(), None) else {
                panic!("{topic}: expected held");
            };
            match map(
                &delivery,
                body.as_bytes(),
                Some(Known {
                    order: &created.order,
                }),
            ) {
                Ok(Mapped::Event {
                    idempotency_key, ..
                }) => assert_eq!(key, idempotency_key, "{topic}"),
                Ok(Mapped::Ignored { .. }) => {}
                other => panic!("{topic}: expected an event, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_delivery_that_cannot_be_held_names_the_missing_field() {
        let mut refund: Value = serde_json::from_str(REFUND_RETURN).expect("fixture");
        refund["refund_line_items"][0]["quantity"] = Value::Null;
        assert_eq!(
            field_of("refunds/create", &refund),
            "refund_line_items[0].quantity"
        );
        let mut refund: Value = serde_json::from_str(REFUND_RETURN).expect("fixture");
        refund["transactions"][0]["amount"] = json!("29,00");
        assert_eq!(
            field_of("refunds/create", &refund),
            "transactions[0].amount"
        );
        let mut fulfillment: Value = serde_json::from_str(FULFILLMENT_FIRST).expect("fixture");
        fulfillment
            .as_object_mut()
            .expect("object")
            .remove("order_id");
        assert_eq!(field_of("fulfillments/create", &fulfillment), "order_id");
        let mut ret: Value = serde_json::from_str(RETURN_REQUEST).expect("fixture");
        ret["order"] = Value::Null;
        assert_eq!(field_of("returns/request", &ret), "order.id");
    }

    #[test]
    fn held_deliveries_replay_by_trigger_time_then_fulfillment_first() {
        let at = |topic, triggered| held_order(topic, triggered, 1_000);
        let mut held = [
            at("fulfillment_events/create", Some("2026-11-24T10:00:00Z")),
            at("refunds/create", Some("2026-11-24T09:00:00Z")),
            at("fulfillments/create", Some("2026-11-24T10:00:00Z")),
        ];
        held.sort();
        assert_eq!(
            held,
            [
                at("refunds/create", Some("2026-11-24T09:00:00Z")),
                at("fulfillments/create", Some("2026-11-24T10:00:00Z")),
                at("fulfillment_events/create", Some("2026-11-24T10:00:00Z")),
            ]
        );
        assert_eq!(at("returns/request", None), (1_000, 4));
    }

    #[test]
    fn declined_cancelled_and_reopened_returns_are_recorded_not_notified() {
        let mut declined: Value = serde_json::from_str(RETURN_REQUEST).expect("fixture");
        declined["status"] = json!("declined");
        declined["decline"] = json!({"reason": "final_sale", "note": "Articolo in saldo"});
        let [.., second] = story();
        for known in [None, Some(&second.order)] {
            let (reason, order) = ignored("returns/decline", &declined.to_string(), known);
            assert_eq!(
                reason,
                "return #1042-R1 (9854321) declined: recorded, not notified (no event kind for it); \
                 reason: final_sale — Articolo in saldo"
            );
            assert_eq!(order, None, "the snapshot is left as it is");
        }
        for (topic, what) in [
            ("returns/cancel", "cancelled"),
            ("returns/reopen", "reopened"),
        ] {
            let (reason, _) = ignored(topic, RETURN_REQUEST, Some(&second.order));
            assert!(
                reason.starts_with(&format!("return #1042-R1 (9854321) {what}: recorded")),
                "{reason}"
            );
        }
        assert_eq!(
            field_of("returns/decline", &json!({"status": "declined"})),
            "id"
        );
    }

    #[test]
    fn unknown_topics_are_ignored_without_a_snapshot() {
        let (reason, order) = ignored("orders/updated", ORDERS_CREATE, None);
        assert_eq!(reason, "topic `orders/updated` is not mapped");
        assert_eq!(order, None);
        let (_, order) = ignored("app/uninstalled", r#"{"id": 1}"#, None);
        assert_eq!(order, None);
    }

    #[test]
    fn a_body_that_is_not_json_is_malformed() {
        for body in ["{\"id\": ", "", "webhook_id=1"] {
            assert!(matches!(
                map(&delivery("orders/create"), body.as_bytes(), None),
                Err(MapError::Malformed(_))
            ));
        }
    }

    #[test]
    fn missing_or_wrong_required_fields_are_named() {
        let order: Value = serde_json::from_str(ORDERS_CREATE).expect("fixture");
        let mut no_price = order.clone();
        no_price["line_items"][1]["price"] = Value::Null;
        no_price["line_items"][1]["price_set"] = Value::Null;
        assert_eq!(field_of("orders/create", &no_price), "line_items[1].price");
        let mut bad_price = order.clone();
        bad_price["line_items"][0]["price"] = json!("29,00");
        assert_eq!(field_of("orders/create", &bad_price), "line_items[0].price");
        let mut no_id = order.clone();
        no_id.as_object_mut().expect("object").remove("id");
        assert_eq!(field_of("orders/paid", &no_id), "id");
        let mut bad_currency = order.clone();
        bad_currency["currency"] = json!("euro");
        assert_eq!(field_of("orders/create", &bad_currency), "currency");
        let mut no_quantity = order.clone();
        no_quantity["line_items"][2]["quantity"] = json!(-1);
        assert_eq!(
            field_of("orders/create", &no_quantity),
            "line_items[2].quantity"
        );
        let mut no_total = order;
        no_total["total_price"] = Value::Null;
        no_total["total_price_set"] = Value::Null;
        assert_eq!(field_of("orders/create", &no_total), "total_price");
        assert_eq!(
            field_of("fulfillment_events/create", &json!({"id": 5})),
            "fulfillment_id"
        );
        assert_eq!(field_of("orders/create", &json!([1, 2])), ".");
    }

    #[test]
    fn shop_money_is_used_when_the_plain_amounts_are_absent() {
        let mut order: Value = serde_json::from_str(ORDERS_CREATE).expect("fixture");
        order["total_price"] = Value::Null;
        order["currency"] = Value::Null;
        order["line_items"][0]["price"] = Value::Null;
        let event = event("orders/create", &order.to_string(), None);
        assert_eq!(event.order.total, Money::new(15_600, "EUR"));
        assert_eq!(event.order.items[0].unit_price, Money::new(2900, "EUR"));
    }

    #[test]
    fn guests_without_a_customer_record_are_known_by_email() {
        let mut order: Value = serde_json::from_str(ORDERS_CREATE).expect("fixture");
        order["customer"] = Value::Null;
        order["customer_locale"] = Value::Null;
        order["shipping_address"]["country_code"] = json!("FR");
        order["shipping_address"]["phone"] = json!("06 12 34 56 78");
        order["billing_address"]["phone"] = Value::Null;
        let event = event("orders/create", &order.to_string(), None);
        let customer = &event.order.customer;
        assert_eq!(customer.id, "guest:giulia.rossi@example.com");
        assert_eq!(customer.first_name.as_deref(), Some("Giulia"));
        assert_eq!(customer.phone.as_deref(), Some("+33612345678"));
        assert_eq!(customer.locale, "fr-FR");
        assert_eq!(customer.timezone, "Europe/Paris");
        assert_eq!(
            customer.consents,
            [Channel::Email],
            "buyer_accepts_marketing"
        );
        assert!(customer.tags.is_empty());
    }

    #[test]
    fn order_id_is_found_for_every_topic() {
        for (topic, body) in [
            ("orders/create", ORDERS_CREATE),
            ("fulfillments/create", FULFILLMENT_FIRST),
            ("fulfillment_events/create", EVENT_DELIVERED),
            ("refunds/create", REFUND_RETURN),
            ("returns/request", RETURN_REQUEST),
        ] {
            assert_eq!(
                order_id(topic, body.as_bytes()).as_deref(),
                Some("5791234567890"),
                "{topic}"
            );
        }
        assert_eq!(order_id("orders/create", b"nope"), None);
    }

    #[test]
    fn carrier_statuses_map_to_event_kinds() {
        let kind = |s| carrier_status(s).and_then(|(_, k)| k);
        assert_eq!(kind("in_transit"), Some(EventKind::ShipmentInTransit));
        assert_eq!(kind("out_for_delivery"), Some(EventKind::OutForDelivery));
        assert_eq!(kind("delivered"), Some(EventKind::Delivered));
        assert_eq!(
            kind("attempted_delivery"),
            Some(EventKind::DeliveryAttemptFailed)
        );
        assert_eq!(kind("delayed"), Some(EventKind::DeliveryDelayed));
        assert_eq!(kind("failure"), Some(EventKind::DeliveryAttemptFailed));
        assert_eq!(
            carrier_status("failure").map(|(s, _)| s),
            Some(ShipmentStatus::Failed)
        );
        assert_eq!(kind("label_printed"), None);
        assert_eq!(carrier_status("teleported"), None);
    }
}
