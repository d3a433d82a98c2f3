//! The event and context as `decide` receives them, borrowed from the SDK's
//! types.
//!
//! The bindings' own records (`crate::bindings::types`) own their strings, so
//! passing the event through them meant cloning it, converting it and freeing
//! it again: some sixty allocations a decision, before wasmtime copies each
//! string into the guest anyway. These mirrors borrow instead, so each string
//! is copied once, straight into the guest's memory.
//!
//! They mirror `tidings:notify/types` field for field. `decide_export`
//! type-checks them against the plugin's `decide` when a plugin is loaded, so
//! a mirror out of step with the WIT fails every load (and the tests), never
//! a decision.

use tidings_sdk::types as st;
use wasmtime::component::{ComponentType, Lower};

use crate::bindings::{convert::Conv, types as wit};

/// `order-event`, without the customer's contact details: a plugin learns
/// whether an address exists (`has-email`, `has-phone`), never the address.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct OrderEvent<'a> {
    id: &'a str,
    kind: wit::EventKind,
    #[component(name = "occurred-at")]
    occurred_at: i64,
    order: Order<'a>,
    shipment: Option<Shipment<'a>>,
    source: &'a str,
    attributes: Vec<Attribute<'a>>,
}

impl<'a> OrderEvent<'a> {
    pub fn new(event: &'a st::OrderEvent) -> Self {
        Self {
            id: &event.id,
            kind: event.kind.conv(),
            occurred_at: event.occurred_at.as_millisecond(),
            order: Order::new(&event.order),
            shipment: event.shipment.as_ref().map(Shipment::new),
            source: &event.source,
            attributes: Attribute::list(&event.attributes),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Order<'a> {
    id: &'a str,
    number: &'a str,
    #[component(name = "created-at")]
    created_at: i64,
    total: Money<'a>,
    items: Vec<LineItem<'a>>,
    shipments: Vec<Shipment<'a>>,
    customer: Customer<'a>,
    tags: &'a [String],
    attributes: Vec<Attribute<'a>>,
}

impl<'a> Order<'a> {
    fn new(order: &'a st::Order) -> Self {
        Self {
            id: &order.id,
            number: &order.number,
            created_at: order.created_at.as_millisecond(),
            total: Money::new(&order.total),
            items: order.items.iter().map(LineItem::new).collect(),
            shipments: order.shipments.iter().map(Shipment::new).collect(),
            customer: Customer::new(&order.customer),
            tags: &order.tags,
            attributes: Attribute::list(&order.attributes),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Money<'a> {
    minor: i64,
    currency: &'a str,
}

impl<'a> Money<'a> {
    fn new(money: &'a st::Money) -> Self {
        Self {
            minor: money.minor,
            currency: &money.currency,
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct LineItem<'a> {
    sku: &'a str,
    title: &'a str,
    quantity: u32,
    #[component(name = "unit-price")]
    unit_price: Money<'a>,
    status: wit::LineStatus,
}

impl<'a> LineItem<'a> {
    fn new(item: &'a st::LineItem) -> Self {
        Self {
            sku: &item.sku,
            title: &item.title,
            quantity: item.quantity,
            unit_price: Money::new(&item.unit_price),
            status: item.status.conv(),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Shipment<'a> {
    id: &'a str,
    carrier: Option<&'a str>,
    #[component(name = "tracking-number")]
    tracking_number: Option<&'a str>,
    #[component(name = "tracking-url")]
    tracking_url: Option<&'a str>,
    eta: Option<i64>,
    status: wit::ShipmentStatus,
    items: Vec<ShipmentItem<'a>>,
}

impl<'a> Shipment<'a> {
    fn new(shipment: &'a st::Shipment) -> Self {
        Self {
            id: &shipment.id,
            carrier: shipment.carrier.as_deref(),
            tracking_number: shipment.tracking_number.as_deref(),
            tracking_url: shipment.tracking_url.as_deref(),
            eta: shipment.eta.map(|eta| eta.as_millisecond()),
            status: shipment.status.conv(),
            items: shipment
                .items
                .iter()
                .map(|item| ShipmentItem {
                    sku: &item.sku,
                    quantity: item.quantity,
                })
                .collect(),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ShipmentItem<'a> {
    sku: &'a str,
    quantity: u32,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Customer<'a> {
    id: &'a str,
    #[component(name = "first-name")]
    first_name: Option<&'a str>,
    locale: &'a str,
    timezone: &'a str,
    #[component(name = "has-email")]
    has_email: bool,
    #[component(name = "has-phone")]
    has_phone: bool,
    tags: &'a [String],
    #[component(name = "orders-count")]
    orders_count: u32,
    consents: Vec<wit::Channel>,
    #[component(name = "channel-opt-outs")]
    channel_opt_outs: Vec<wit::Channel>,
}

impl<'a> Customer<'a> {
    fn new(customer: &'a st::Customer) -> Self {
        let given = |address: &Option<String>| address.as_deref().is_some_and(|a| !a.is_empty());
        Self {
            id: &customer.id,
            first_name: customer.first_name.as_deref(),
            locale: &customer.locale,
            timezone: &customer.timezone,
            has_email: customer.has_email || given(&customer.email),
            has_phone: customer.has_phone || given(&customer.phone),
            tags: &customer.tags,
            orders_count: customer.orders_count,
            consents: customer.consents.iter().map(|c| c.conv()).collect(),
            channel_opt_outs: customer.channel_opt_outs.iter().map(|c| c.conv()).collect(),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Attribute<'a> {
    key: &'a str,
    value: &'a str,
}

impl<'a> Attribute<'a> {
    fn list(attributes: &'a std::collections::BTreeMap<String, String>) -> Vec<Self> {
        attributes
            .iter()
            .map(|(key, value)| Self { key, value })
            .collect()
    }
}

/// `context`. The config is the one value built here: the SDK holds it as
/// JSON, the contract passes it as JSON text.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Context<'a> {
    tenant: &'a str,
    now: i64,
    config: String,
    history: Vec<SentNotification<'a>>,
    #[component(name = "open-escalations")]
    open_escalations: Vec<OpenEscalation<'a>>,
}

impl<'a> Context<'a> {
    pub fn new(ctx: &'a st::Context) -> Self {
        Self {
            tenant: &ctx.tenant,
            now: ctx.now.as_millisecond(),
            config: ctx.config.to_string(),
            history: ctx
                .history
                .iter()
                .map(|sent| SentNotification {
                    template: &sent.template,
                    channel: sent.channel.conv(),
                    at: sent.at.as_millisecond(),
                })
                .collect(),
            open_escalations: ctx
                .open_escalations
                .iter()
                .map(|open| OpenEscalation {
                    queue: &open.queue,
                    priority: open.priority.conv(),
                    opened_at: open.opened_at.as_millisecond(),
                })
                .collect(),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct SentNotification<'a> {
    template: &'a str,
    channel: wit::Channel,
    at: i64,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct OpenEscalation<'a> {
    queue: &'a str,
    priority: wit::Priority,
    #[component(name = "opened-at")]
    opened_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(email: Option<&str>, phone: Option<&str>) -> st::Customer {
        st::Customer {
            id: "cus_1".into(),
            first_name: Some("Giulia".into()),
            email: email.map(str::to_owned),
            phone: phone.map(str::to_owned),
            locale: "it".into(),
            timezone: "Europe/Rome".into(),
            has_email: false,
            has_phone: false,
            tags: vec!["vip".into()],
            orders_count: 3,
            consents: vec![st::Channel::Email],
            channel_opt_outs: Vec::new(),
        }
    }

    #[test]
    fn a_plugin_learns_that_an_address_exists_not_the_address() {
        let given = customer(Some("giulia@example.com"), Some(""));
        let lowered = Customer::new(&given);
        assert!(lowered.has_email, "a non-empty email means has-email");
        assert!(!lowered.has_phone, "an empty phone is no phone");
        assert_eq!(lowered.tags, ["vip"]);

        let flagged = st::Customer {
            has_phone: true,
            ..customer(None, None)
        };
        let lowered = Customer::new(&flagged);
        assert!(!lowered.has_email);
        assert!(
            lowered.has_phone,
            "the flag alone counts, as the shop sent it"
        );
    }
}
