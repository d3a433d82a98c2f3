//! WooCommerce webhooks in, Tidings order events out.
//!
//! In: the delivery headers ([`Delivery`]), the raw body of an
//! `order.created` / `order.updated` webhook (the REST v3 order object), and
//! what the host knows about the order ([`Known`]: the last snapshot and the
//! last WooCommerce status seen). Out: a [`Mapped::Event`] for a status
//! transition worth notifying, else [`Mapped::Ignored`] (still carrying the
//! snapshot and status to remember). Fails with [`MapError::Malformed`] when
//! the body is not JSON and [`MapError::Missing`] naming the WooCommerce
//! field (e.g. `line_items[0].quantity`) when a required one is wrong.
//!
//! WooCommerce sends the whole order on every save, so the event comes from
//! the status transition against the last status seen:
//!
//! | Last seen → now | Event kind |
//! |---|---|
//! | (none) → `pending` | `order_created`, `payment_status=pending` |
//! | (none) → `on-hold` | `order_created`, `payment_status=pending` (awaiting e.g. a bank transfer) |
//! | (none) → `processing` | `order_created`, `payment_status=paid` |
//! | `pending`/`on-hold`/`failed` → `processing` | `order_paid` |
//! | any → `completed` | `shipment_created` (WooCommerce's "completed" means shipped; tracking from Shipment Tracking meta when present) |
//! | any → `cancelled` | `order_cancelled` |
//! | any → `refunded` | `refund_created` for the order total |
//! | any → `failed` | `payment_failed` |
//! | same status | `refund_created` if the refunds grew, `shipment_created` if a new tracking number appeared, else ignored |
//! | anything else (`→ pending`, `→ on-hold`, `completed → processing`, `checkout-draft`, custom statuses) | ignored |
//!
//! WooCommerce orders carry no customer locale, timezone or marketing
//! consent. The locale comes from WPML's `wpml_language` meta (or `_locale`),
//! else the billing country (IT → it-IT, see [`locale_for`]), else `en`; the
//! timezone from the billing country when it has a single zone, else `UTC`;
//! consents stay empty. Guests (`customer_id` 0) are identified by their
//! billing email.

use std::collections::BTreeMap;

use serde_json::Value;
use tidings_sdk::types::{
    Customer, EventKind, LineItem, LineStatus, Money, Order, OrderEvent, Shipment, ShipmentStatus,
};

pub use super::platform::{MapError, Mapped, is_behind, progress};
use super::platform::{
    Node, check_currency, e164, locale_for, parse_body, refund_attributes, timezone_for,
    verify_hmac_b64,
};

/// The `source` of events mapped here.
pub const SOURCE: &str = "woocommerce";

/// Meta key under which the WooCommerce Shipment Tracking extension keeps
/// its tracking items.
pub const TRACKING_META_KEY: &str = "_wc_shipment_tracking_items";

/// Order attribute holding the refunded total in minor units, so a later
/// partial refund is noticed.
const REFUNDED_MINOR: &str = "refunded_minor";

/// Constant-time check of `X-WC-Webhook-Signature`: the base64 HMAC-SHA256
/// of the raw body keyed with the webhook's secret.
pub fn verify_signature(secret: &[u8], body: &[u8], signature_b64: &str) -> bool {
    verify_hmac_b64(secret, body, signature_b64)
}

/// Whether this is the unsigned ping WooCommerce sends when a webhook is
/// created or activated: a form body `webhook_id=<n>`.
pub fn is_ping(content_type: Option<&str>, body: &[u8]) -> bool {
    let form = content_type.is_none_or(|ct| {
        ct.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let Ok(body) = std::str::from_utf8(body) else {
        return false;
    };
    form && body
        .trim()
        .strip_prefix("webhook_id=")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// The delivery headers.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// `X-WC-Webhook-Topic`, e.g. `order.updated`.
    pub topic: &'a str,
    /// `X-WC-Webhook-Delivery-ID`.
    pub delivery_id: Option<&'a str>,
    /// `X-WC-Webhook-Source`: the shop's URL.
    pub source: Option<&'a str>,
}

/// What the host already knows about the order from earlier webhooks.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// The last order snapshot (from [`Mapped::Event`] or [`Mapped::Ignored`]).
    pub order: &'a Order,
    /// The last WooCommerce status seen (`platform_status`), e.g. `pending`.
    pub status: &'a str,
}

/// What a delivery is known by across redeliveries, when it carries an
/// `X-WC-Webhook-Delivery-ID`; also the idempotency key of its event.
pub fn delivery_key(delivery: &Delivery<'_>) -> Option<String> {
    delivery
        .delivery_id
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| format!("woocommerce:{d}"))
}

/// The WooCommerce order id a body is about, so the host can look up
/// [`Known`] before mapping.
pub fn order_id(body: &[u8]) -> Option<String> {
    let value = parse_body(body).ok()?;
    Node::root(&value).id("id")
}

/// Map a WooCommerce webhook body to an order event.
pub fn map(
    delivery: &Delivery<'_>,
    body: &[u8],
    known: Option<Known<'_>>,
) -> Result<Mapped, MapError> {
    let value = parse_body(body)?;
    let root = Node::root(&value);
    if !matches!(delivery.topic, "order.created" | "order.updated") {
        return Ok(Mapped::Ignored {
            reason: format!("topic `{}` is not mapped", delivery.topic),
            order: None,
            platform_status: None,
        });
    }
    let status = root.req_str("status")?.to_owned();
    let mut order = order_from(&root, &status, delivery.source)?;
    let refunded = refunded_minor(&root, &order.total.currency)?;
    order
        .attributes
        .insert(REFUNDED_MINOR.to_owned(), refunded.to_string());

    let previous = known.map(|k| k.status);
    let ignore = |reason: String, order: Order| Mapped::Ignored {
        reason,
        order: Some(order),
        platform_status: Some(status.clone()),
    };
    let mut attributes = BTreeMap::new();
    let mut shipment = None;
    let kind = match (previous, status.as_str()) {
        (Some(before), now) if before == now => {
            let known = known.map(|k| k.order);
            let refunded_before = known
                .and_then(|k| k.attributes.get(REFUNDED_MINOR))
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0);
            let new_tracking = order
                .shipments
                .iter()
                .rfind(|s| known.is_none_or(|k| !k.shipments.iter().any(|o| o.id == s.id)));
            if refunded > refunded_before {
                let amount = Money::new(refunded - refunded_before, &order.total.currency);
                refund_attributes(&mut attributes, &amount);
                refund_reason(&root, &mut attributes);
                EventKind::RefundCreated
            } else if let Some(new) = new_tracking.filter(|_| now != "cancelled") {
                shipment = Some(new.clone());
                EventKind::ShipmentCreated
            } else {
                return Ok(ignore(format!("status is still `{now}`"), order));
            }
        }
        (None, "pending" | "on-hold" | "processing") => EventKind::OrderCreated,
        (Some("pending" | "on-hold" | "failed"), "processing") => EventKind::OrderPaid,
        (_, "completed") => {
            shipment = order.shipments.last().cloned();
            EventKind::ShipmentCreated
        }
        (_, "cancelled") => EventKind::OrderCancelled,
        (_, "refunded") => {
            refund_attributes(&mut attributes, &order.total);
            refund_reason(&root, &mut attributes);
            EventKind::RefundCreated
        }
        (_, "failed") => EventKind::PaymentFailed,
        (before, now) => {
            return Ok(ignore(
                format!(
                    "status `{}` → `{now}` has nothing to notify",
                    before.unwrap_or("none")
                ),
                order,
            ));
        }
    };
    if let Some(before) = previous.filter(|b| *b != status) {
        attributes.insert("previous_status".to_owned(), before.to_owned());
    }

    let modified = root.str("date_modified_gmt").unwrap_or_default();
    let id = delivery_key(delivery).unwrap_or_else(|| {
        format!(
            "woocommerce:{}:{}:{status}:{modified}",
            delivery.topic, order.id
        )
    });
    let occurred_at = root.time("date_modified_gmt").unwrap_or(order.created_at);
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
    Ok(Mapped::Event {
        event,
        idempotency_key: id,
        platform_status: Some(status),
    })
}

fn refund_reason(root: &Node<'_>, attributes: &mut BTreeMap<String, String>) {
    // WooCommerce lists refunds newest first.
    if let Some(reason) = root.items("refunds").iter().find_map(|r| r.str("reason")) {
        attributes.insert("reason".to_owned(), reason.to_owned());
    }
}

/// The sum of the order's refunds (`refunds[].total`, sent negative).
fn refunded_minor(root: &Node<'_>, currency: &str) -> Result<i64, MapError> {
    root.items("refunds")
        .iter()
        .map(|r| r.req_minor("total", currency).map(i64::abs))
        .sum()
}

/// The value of the order meta `key`.
fn meta<'a>(root: &Node<'a>, key: &str) -> Option<Node<'a>> {
    root.items("meta_data")
        .into_iter()
        .find(|m| m.str("key") == Some(key))
}

fn order_from(root: &Node<'_>, status: &str, source: Option<&str>) -> Result<Order, MapError> {
    let id = root.req_id("id")?;
    let number = root.id("number").unwrap_or_else(|| id.clone());
    let currency = check_currency(&root.path_of("currency"), root.req_str("currency")?)?;
    let total = root.req_minor("total", &currency)?;
    let created_at = match root.time("date_created_gmt") {
        Some(at) => at,
        None => root.req_time("date_created")?,
    };
    let line_status = match status {
        "completed" => LineStatus::Fulfilled,
        "cancelled" => LineStatus::Cancelled,
        "refunded" => LineStatus::Refunded,
        _ => LineStatus::Pending,
    };
    let items = root
        .items("line_items")
        .iter()
        .map(|line| line_from(line, &currency, line_status))
        .collect::<Result<Vec<_>, _>>()?;

    let payment_status = match status {
        "processing" | "completed" | "refunded" => "paid",
        _ if root.str("date_paid_gmt").is_some() => "paid",
        _ => "pending",
    };
    let mut attributes = BTreeMap::from([
        ("woocommerce_status".to_owned(), status.to_owned()),
        ("payment_status".to_owned(), payment_status.to_owned()),
    ]);
    if let Some(method) = root.str("payment_method_title") {
        attributes.insert("payment_method".to_owned(), method.to_owned());
    }
    if let Some(source) = source {
        attributes.insert("shop_url".to_owned(), source.to_owned());
    }
    Ok(Order {
        customer: customer_from(root),
        id,
        number: format!("#{number}"),
        created_at,
        total: Money::new(total, &currency),
        items,
        shipments: tracking(root),
        tags: Vec::new(),
        attributes,
    })
}

/// One order line. The unit price is what the customer paid per unit
/// before discounts, tax included: `(subtotal + subtotal_tax) / quantity`;
/// WooCommerce's own `price` excludes tax and is used only when the
/// subtotals are absent.
fn line_from(line: &Node<'_>, currency: &str, status: LineStatus) -> Result<LineItem, MapError> {
    let quantity = line.req_u32("quantity")?;
    let subtotal = line.minor("subtotal", currency).transpose()?;
    let subtotal_tax = line.minor("subtotal_tax", currency).transpose()?;
    let unit_price = match (subtotal, subtotal_tax) {
        (Some(net), Some(tax)) if quantity > 0 => {
            let gross = net + tax;
            let q = i64::from(quantity);
            // Round half away from zero without floats.
            (2 * gross + q) / (2 * q)
        }
        _ => line.req_minor("price", currency)?,
    };
    let sku = match (
        line.str("sku"),
        line.id("variation_id"),
        line.id("product_id"),
    ) {
        (Some(sku), _, _) => sku.to_owned(),
        (None, Some(variation), _) if variation != "0" => format!("variation-{variation}"),
        (None, _, Some(product)) if product != "0" => format!("product-{product}"),
        _ => format!("line-{}", line.id("id").unwrap_or_default()),
    };
    Ok(LineItem {
        title: line.str("name").unwrap_or(&sku).to_owned(),
        sku,
        quantity,
        unit_price: Money::new(unit_price, currency),
        status,
    })
}

fn customer_from(root: &Node<'_>) -> Customer {
    let billing = root.child("billing");
    let shipping = root.child("shipping");
    let field = |key: &str| {
        billing
            .as_ref()
            .and_then(|b| b.str(key))
            .or_else(|| shipping.as_ref().and_then(|s| s.str(key)))
    };
    let country = field("country");
    let email = field("email")
        .filter(|e| e.contains('@'))
        .map(str::to_owned);
    let phone = field("phone").and_then(|p| e164(p, country));
    let id = root
        .id("customer_id")
        .filter(|id| id != "0")
        .or_else(|| {
            email
                .as_ref()
                .map(|e| format!("guest:{}", e.to_lowercase()))
        })
        .unwrap_or_else(|| format!("order:{}", root.id("id").unwrap_or_default()));
    let language = ["wpml_language", "_wpml_language", "_locale"]
        .iter()
        .find_map(|key| meta(root, key).and_then(|m| m.str("value").map(str::to_owned)));
    Customer {
        id,
        first_name: field("first_name").map(str::to_owned),
        has_email: email.is_some(),
        has_phone: phone.is_some(),
        email,
        phone,
        locale: locale_for(language.as_deref(), country),
        timezone: timezone_for(country),
        tags: Vec::new(),
        orders_count: 0,
        consents: Vec::new(),
        channel_opt_outs: Vec::new(),
    }
}

/// Shipments from the Shipment Tracking extension's meta: one per tracking
/// item, carrier from `custom_tracking_provider` else `tracking_provider`,
/// link from `custom_tracking_link`. The extension does not say which lines
/// are in a parcel, so `items` stays empty.
fn tracking(root: &Node<'_>) -> Vec<Shipment> {
    let Some(meta) = meta(root, TRACKING_META_KEY) else {
        return Vec::new();
    };
    // Some setups store the list as a JSON string.
    let parsed;
    let value = match meta.raw("value") {
        Some(Value::String(text)) => {
            parsed = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
            &parsed
        }
        Some(value) => value,
        None => return Vec::new(),
    };
    let Some(items) = value.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(Node::root)
        .filter_map(|item| {
            let number = item.str("tracking_number")?;
            Some(Shipment {
                id: item.str("tracking_id").unwrap_or(number).to_owned(),
                carrier: item
                    .str("custom_tracking_provider")
                    .or_else(|| item.str("tracking_provider"))
                    .map(str::to_owned),
                tracking_number: Some(number.to_owned()),
                tracking_url: item.str("custom_tracking_link").map(str::to_owned),
                eta: None,
                status: ShipmentStatus::LabelCreated,
                items: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use serde_json::json;
    use sha2::Sha256;

    use super::*;
    use crate::ingest::validate;

    const PENDING: &str = include_str!("../../../tests/fixtures/woocommerce/order_pending.json");
    const PROCESSING: &str =
        include_str!("../../../tests/fixtures/woocommerce/order_processing.json");
    const COMPLETED: &str =
        include_str!("../../../tests/fixtures/woocommerce/order_completed.json");
    const REFUNDED: &str = include_str!("../../../tests/fixtures/woocommerce/order_refunded.json");
    const ON_HOLD_CZ: &str =
        include_str!("../../../tests/fixtures/woocommerce/order_on_hold_guest_cz.json");

    fn delivery(topic: &str) -> Delivery<'_> {
        Delivery {
            topic,
            delivery_id: Some("9f2c6e0a1b7d4c3e8f5a2b1c0d9e8f7a"),
            source: Some("https://bottega.example.it/"),
        }
    }

    fn mapped(body: &str, known: Option<(&Order, &str)>) -> Mapped {
        map(
            &delivery("order.updated"),
            body.as_bytes(),
            known.map(|(order, status)| Known { order, status }),
        )
        .expect("the body maps")
    }

    fn event(body: &str, known: Option<(&Order, &str)>) -> OrderEvent {
        match mapped(body, known) {
            Mapped::Event { event, .. } => {
                validate(&event).expect("the event passes ingest validation");
                event
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn with_status(body: &str, status: &str) -> String {
        let mut value: Value = serde_json::from_str(body).expect("fixture");
        value["status"] = json!(status);
        value.to_string()
    }

    fn snapshot(body: &str) -> Order {
        event(body, None).order
    }

    fn lines(order: &Order) -> Vec<(&str, u32, i64, LineStatus)> {
        order
            .items
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity, l.unit_price.minor, l.status))
            .collect()
    }

    #[test]
    fn signature_check_accepts_woocommerce_hmac_and_rejects_anything_else() {
        let body = PROCESSING.as_bytes();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"wc-secret").expect("any key length");
        mac.update(body);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert!(verify_signature(b"wc-secret", body, &signature));
        assert!(!verify_signature(
            b"wc-secret",
            PENDING.as_bytes(),
            &signature
        ));
        assert!(!verify_signature(b"other-secret", body, &signature));
        assert!(!verify_signature(b"wc-secret", body, "%%%"));
    }

    #[test]
    fn the_creation_ping_is_recognised_and_orders_are_not() {
        let form = Some("application/x-www-form-urlencoded");
        assert!(is_ping(form, b"webhook_id=17"));
        assert!(is_ping(None, b"webhook_id=17"));
        assert!(is_ping(
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"webhook_id=3\n"
        ));
        assert!(!is_ping(Some("application/json"), b"webhook_id=17"));
        assert!(!is_ping(form, b"webhook_id="));
        assert!(!is_ping(form, b"webhook_id=17&x=1"));
        assert!(!is_ping(Some("application/json"), PENDING.as_bytes()));
    }

    #[test]
    fn a_new_pending_order_is_order_created_awaiting_payment() {
        let Mapped::Event {
            event,
            idempotency_key,
            platform_status,
        } = mapped(PENDING, None)
        else {
            panic!("expected an event");
        };
        validate(&event).expect("valid");
        assert_eq!(event.kind, EventKind::OrderCreated);
        assert_eq!(event.id, "woocommerce:9f2c6e0a1b7d4c3e8f5a2b1c0d9e8f7a");
        assert_eq!(idempotency_key, event.id);
        assert_eq!(platform_status.as_deref(), Some("pending"));
        assert_eq!(event.source, "woocommerce");
        assert_eq!(event.occurred_at.to_string(), "2026-11-20T09:12:46Z");

        let order = &event.order;
        assert_eq!(order.id, "2087");
        assert_eq!(order.number, "#2087");
        assert_eq!(order.created_at.to_string(), "2026-11-20T09:12:44Z");
        assert_eq!(order.total, Money::new(8379, "EUR"));
        assert_eq!(
            lines(order),
            [
                ("OLIO-750", 2, 2500, LineStatus::Pending),
                ("PASTA-PAC", 3, 426, LineStatus::Pending),
                ("product-140", 1, 1500, LineStatus::Pending),
            ]
        );
        assert_eq!(order.items[0].title, "Olio extravergine 750ml");
        assert!(order.shipments.is_empty());
        assert_eq!(order.attributes["payment_status"], "pending");
        assert_eq!(order.attributes["woocommerce_status"], "pending");
        assert_eq!(order.attributes["payment_method"], "Bonifico bancario");
        assert_eq!(order.attributes["shop_url"], "https://bottega.example.it/");

        let customer = &order.customer;
        assert_eq!(customer.id, "41");
        assert_eq!(customer.first_name.as_deref(), Some("Marco"));
        assert_eq!(customer.email.as_deref(), Some("marco.bianchi@example.it"));
        assert_eq!(customer.phone.as_deref(), Some("+393477654321"));
        assert_eq!(customer.locale, "it-IT");
        assert_eq!(customer.timezone, "Europe/Rome");
        assert!(customer.consents.is_empty());
    }

    #[test]
    fn status_transitions_decide_the_event_kind() {
        use EventKind::*;
        let cases: [(Option<&str>, &str, Option<EventKind>); 17] = [
            (None, "pending", Some(OrderCreated)),
            (None, "on-hold", Some(OrderCreated)),
            (None, "processing", Some(OrderCreated)),
            (Some("pending"), "processing", Some(OrderPaid)),
            (Some("on-hold"), "processing", Some(OrderPaid)),
            (Some("failed"), "processing", Some(OrderPaid)),
            (Some("processing"), "processing", None),
            (Some("pending"), "on-hold", None),
            (Some("on-hold"), "pending", None),
            (Some("completed"), "processing", None),
            (Some("processing"), "completed", Some(ShipmentCreated)),
            (None, "completed", Some(ShipmentCreated)),
            (Some("processing"), "cancelled", Some(OrderCancelled)),
            (Some("pending"), "cancelled", Some(OrderCancelled)),
            (Some("completed"), "refunded", Some(RefundCreated)),
            (Some("pending"), "failed", Some(PaymentFailed)),
            (Some("pending"), "checkout-draft", None),
        ];
        let known = snapshot(PENDING);
        for (before, now, expected) in cases {
            let body = with_status(PROCESSING, now);
            let got = match mapped(&body, before.map(|b| (&known, b))) {
                Mapped::Event {
                    event,
                    platform_status,
                    ..
                } => {
                    validate(&event).expect("valid");
                    assert_eq!(platform_status.as_deref(), Some(now));
                    Some(event.kind)
                }
                Mapped::Ignored {
                    order,
                    platform_status,
                    ..
                } => {
                    assert!(order.is_some(), "the snapshot is kept");
                    assert_eq!(platform_status.as_deref(), Some(now));
                    None
                }
                Mapped::Held { .. } => panic!("a WooCommerce body carries its order"),
            };
            assert_eq!(got, expected, "{before:?} → {now}");
        }
    }

    #[test]
    fn payment_marks_the_order_paid() {
        let known = snapshot(PENDING);
        let paid = event(PROCESSING, Some((&known, "pending")));
        assert_eq!(paid.kind, EventKind::OrderPaid);
        assert_eq!(paid.order.attributes["payment_status"], "paid");
        assert_eq!(paid.attributes["previous_status"], "pending");
        assert_eq!(paid.occurred_at.to_string(), "2026-11-21T08:03:10Z");
        assert!(!is_behind(&known, &paid));
        let first_seen = event(PROCESSING, None);
        assert_eq!(first_seen.kind, EventKind::OrderCreated);
        assert_eq!(first_seen.order.attributes["payment_status"], "paid");
    }

    #[test]
    fn completed_orders_ship_with_shipment_tracking_items() {
        let known = snapshot(PROCESSING);
        let shipped = event(COMPLETED, Some((&known, "processing")));
        assert_eq!(shipped.kind, EventKind::ShipmentCreated);
        assert!(
            lines(&shipped.order)
                .iter()
                .all(|(_, _, _, status)| *status == LineStatus::Fulfilled)
        );
        let tracking: Vec<_> = shipped
            .order
            .shipments
            .iter()
            .map(|s| {
                (
                    s.carrier.as_deref(),
                    s.tracking_number.as_deref(),
                    s.tracking_url.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            tracking,
            [
                (
                    Some("Poste Italiane"),
                    Some("RR123456789IT"),
                    Some(
                        "https://www.poste.it/cerca/index.html#/risultati-spedizioni/RR123456789IT"
                    )
                ),
                (Some("dhl"), Some("JD014600006281730000"), None),
            ]
        );
        let shipment = shipped.shipment.expect("latest tracking item");
        assert_eq!(shipment.id, "f0e1d2c3b4a5968778695a4b3c2d1e0f");
        assert_eq!(shipment.status, ShipmentStatus::LabelCreated);
    }

    #[test]
    fn completed_without_tracking_still_counts_as_shipped() {
        let known = snapshot(PROCESSING);
        let shipped = event(
            &with_status(PROCESSING, "completed"),
            Some((&known, "processing")),
        );
        assert_eq!(shipped.kind, EventKind::ShipmentCreated);
        assert_eq!(shipped.shipment, None);
        assert!(!is_behind(&known, &shipped));
    }

    #[test]
    fn tracking_added_after_completion_notifies_the_new_parcel() {
        let completed_untracked = with_status(PROCESSING, "completed");
        let known = snapshot(&completed_untracked);
        let tracked = event(COMPLETED, Some((&known, "completed")));
        assert_eq!(tracked.kind, EventKind::ShipmentCreated);
        assert_eq!(
            tracked.shipment.and_then(|s| s.tracking_number).as_deref(),
            Some("JD014600006281730000")
        );
        let again = mapped(COMPLETED, Some((&tracked.order, "completed")));
        assert!(matches!(again, Mapped::Ignored { .. }), "{again:?}");
    }

    #[test]
    fn a_refunded_order_is_refund_created_for_the_total() {
        let known = snapshot(COMPLETED);
        let refund = event(REFUNDED, Some((&known, "completed")));
        assert_eq!(refund.kind, EventKind::RefundCreated);
        assert_eq!(refund.attributes["refund_amount_minor"], "8379");
        assert_eq!(refund.attributes["refund_currency"], "EUR");
        assert_eq!(refund.attributes["reason"], "Prodotto danneggiato");
        assert!(
            refund
                .order
                .items
                .iter()
                .all(|l| l.status == LineStatus::Refunded)
        );
        assert_eq!(refund.order.attributes["refunded_minor"], "8379");
    }

    #[test]
    fn a_partial_refund_without_status_change_is_refund_created_for_the_difference() {
        let known = snapshot(COMPLETED);
        let mut body: Value = serde_json::from_str(COMPLETED).expect("fixture");
        body["refunds"] = json!([{"id": 2201, "reason": "Bottiglia rotta", "total": "-25.00"}]);
        let refund = event(&body.to_string(), Some((&known, "completed")));
        assert_eq!(refund.kind, EventKind::RefundCreated);
        assert_eq!(refund.attributes["refund_amount_minor"], "2500");
        assert_eq!(refund.attributes["reason"], "Bottiglia rotta");

        body["refunds"] = json!([
            {"id": 2202, "reason": "", "total": "-4.26"},
            {"id": 2201, "reason": "Bottiglia rotta", "total": "-25.00"}
        ]);
        let second = event(&body.to_string(), Some((&refund.order, "completed")));
        assert_eq!(second.attributes["refund_amount_minor"], "426");
    }

    #[test]
    fn a_guest_paying_by_bank_transfer_is_created_on_hold() {
        let created = event(ON_HOLD_CZ, None);
        assert_eq!(created.kind, EventKind::OrderCreated);
        let order = &created.order;
        assert_eq!(order.total, Money::new(69_479, "CZK"));
        assert_eq!(lines(order), [("HRNEK-01", 2, 28_750, LineStatus::Pending)]);
        assert_eq!(order.attributes["payment_status"], "pending");
        let customer = &order.customer;
        assert_eq!(customer.id, "guest:tereza.novakova@example.cz");
        assert_eq!(customer.first_name.as_deref(), Some("Tereza"));
        assert_eq!(customer.phone.as_deref(), Some("+420601234567"));
        assert_eq!(customer.locale, "cs-CZ");
        assert_eq!(customer.timezone, "Europe/Prague");
        assert_eq!(created.occurred_at.to_string(), "2026-11-20T10:40:02Z");
    }

    #[test]
    fn unit_price_falls_back_to_the_numeric_price() {
        let mut body: Value = serde_json::from_str(PENDING).expect("fixture");
        for line in body["line_items"].as_array_mut().expect("lines") {
            line.as_object_mut().expect("line").remove("subtotal");
        }
        let created = event(&body.to_string(), None);
        assert_eq!(created.order.items[0].unit_price, Money::new(2049, "EUR"));
        assert_eq!(created.order.items[1].unit_price, Money::new(410, "EUR"));
    }

    #[test]
    fn without_a_delivery_id_the_key_is_derived_from_order_status_and_modification_time() {
        let delivery = Delivery {
            delivery_id: None,
            ..delivery("order.created")
        };
        let Ok(Mapped::Event {
            idempotency_key,
            event,
            ..
        }) = map(&delivery, PENDING.as_bytes(), None)
        else {
            panic!("expected an event");
        };
        assert_eq!(
            idempotency_key,
            "woocommerce:order.created:2087:pending:2026-11-20T09:12:46"
        );
        assert_eq!(event.id, idempotency_key);
    }

    #[test]
    fn other_topics_are_ignored() {
        let result = map(&delivery("product.updated"), br#"{"id": 5}"#, None);
        assert!(matches!(
            result,
            Ok(Mapped::Ignored {
                order: None,
                platform_status: None,
                ..
            })
        ));
    }

    #[test]
    fn a_body_that_is_not_json_is_malformed() {
        assert!(matches!(
            map(&delivery("order.updated"), b"webhook_id=17", None),
            Err(MapError::Malformed(_))
        ));
    }

    #[test]
    fn missing_or_wrong_required_fields_are_named() {
        let field_of = |edit: &dyn Fn(&mut Value)| {
            let mut body: Value = serde_json::from_str(PENDING).expect("fixture");
            edit(&mut body);
            match map(
                &delivery("order.updated"),
                body.to_string().as_bytes(),
                None,
            ) {
                Err(MapError::Missing { field, .. }) => field,
                other => panic!("expected a missing field, got {other:?}"),
            }
        };
        assert_eq!(field_of(&|b| b["status"] = Value::Null), "status");
        assert_eq!(field_of(&|b| b["id"] = json!(0)), "id");
        assert_eq!(field_of(&|b| b["currency"] = json!("€")), "currency");
        assert_eq!(field_of(&|b| b["total"] = json!("tbd")), "total");
        assert_eq!(
            field_of(&|b| b["line_items"][0]["quantity"] = Value::Null),
            "line_items[0].quantity"
        );
        assert_eq!(
            field_of(&|b| {
                b["date_created_gmt"] = Value::Null;
                b["date_created"] = json!("soon");
            }),
            "date_created"
        );
        assert_eq!(
            field_of(&|b| b["refunds"] = json!([{"id": 1, "total": "x"}])),
            "refunds[0].total"
        );
    }

    #[test]
    fn tracking_stored_as_a_json_string_is_read_too() {
        let mut body: Value = serde_json::from_str(COMPLETED).expect("fixture");
        let items = body["meta_data"][2]["value"].to_string();
        body["meta_data"][2]["value"] = json!(items);
        let order = snapshot(&body.to_string());
        assert_eq!(order.shipments.len(), 2);
    }

    #[test]
    fn order_id_is_read_before_mapping() {
        assert_eq!(order_id(PENDING.as_bytes()).as_deref(), Some("2087"));
        assert_eq!(order_id(b"webhook_id=1"), None);
    }
}
