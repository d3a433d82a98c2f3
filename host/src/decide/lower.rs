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

use super::arena::{Arena, List, Str};
use crate::bindings::{convert::Conv, types as wit};

/// `order-event`, without the customer's contact details: a plugin learns
/// whether an address exists (`has-email`, `has-phone`), never the address.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct OrderEvent<'a> {
    id: Str<'a>,
    kind: wit::EventKind,
    #[component(name = "occurred-at")]
    occurred_at: i64,
    order: Order<'a>,
    shipment: Option<Shipment<'a>>,
    source: Str<'a>,
    attributes: List<'a, Attribute<'a>>,
}

impl<'a> OrderEvent<'a> {
    pub fn new(event: &'a st::OrderEvent, arena: &'a Arena) -> Self {
        Self {
            id: arena.str(&event.id),
            kind: event.kind.conv(),
            occurred_at: event.occurred_at.as_millisecond(),
            order: Order::new(&event.order, arena),
            shipment: event
                .shipment
                .as_ref()
                .map(|shipment| Shipment::new(shipment, arena)),
            source: arena.str(&event.source),
            attributes: Attribute::list(&event.attributes, arena),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Order<'a> {
    id: Str<'a>,
    number: Str<'a>,
    #[component(name = "created-at")]
    created_at: i64,
    total: Money<'a>,
    items: List<'a, LineItem<'a>>,
    shipments: List<'a, Shipment<'a>>,
    customer: Customer<'a>,
    tags: List<'a, Str<'a>>,
    attributes: List<'a, Attribute<'a>>,
}

impl<'a> Order<'a> {
    fn new(order: &'a st::Order, arena: &'a Arena) -> Self {
        Self {
            id: arena.str(&order.id),
            number: arena.str(&order.number),
            created_at: order.created_at.as_millisecond(),
            total: Money::new(&order.total, arena),
            items: arena.list(order.items.iter().map(|item| LineItem::new(item, arena))),
            shipments: arena.list(
                order
                    .shipments
                    .iter()
                    .map(|shipment| Shipment::new(shipment, arena)),
            ),
            customer: Customer::new(&order.customer, arena),
            tags: arena.list(order.tags.iter().map(|tag| arena.str(tag))),
            attributes: Attribute::list(&order.attributes, arena),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Money<'a> {
    minor: i64,
    currency: Str<'a>,
}

impl<'a> Money<'a> {
    fn new(money: &'a st::Money, arena: &'a Arena) -> Self {
        Self {
            minor: money.minor,
            currency: arena.str(&money.currency),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct LineItem<'a> {
    sku: Str<'a>,
    title: Str<'a>,
    quantity: u32,
    #[component(name = "unit-price")]
    unit_price: Money<'a>,
    status: wit::LineStatus,
}

impl<'a> LineItem<'a> {
    fn new(item: &'a st::LineItem, arena: &'a Arena) -> Self {
        Self {
            sku: arena.str(&item.sku),
            title: arena.str(&item.title),
            quantity: item.quantity,
            unit_price: Money::new(&item.unit_price, arena),
            status: item.status.conv(),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Shipment<'a> {
    id: Str<'a>,
    carrier: Option<Str<'a>>,
    #[component(name = "tracking-number")]
    tracking_number: Option<Str<'a>>,
    #[component(name = "tracking-url")]
    tracking_url: Option<Str<'a>>,
    eta: Option<i64>,
    status: wit::ShipmentStatus,
    items: List<'a, ShipmentItem<'a>>,
}

impl<'a> Shipment<'a> {
    fn new(shipment: &'a st::Shipment, arena: &'a Arena) -> Self {
        Self {
            id: arena.str(&shipment.id),
            carrier: shipment.carrier.as_deref().map(|c| arena.str(c)),
            tracking_number: shipment.tracking_number.as_deref().map(|n| arena.str(n)),
            tracking_url: shipment.tracking_url.as_deref().map(|u| arena.str(u)),
            eta: shipment.eta.map(|eta| eta.as_millisecond()),
            status: shipment.status.conv(),
            items: arena.list(shipment.items.iter().map(|item| ShipmentItem {
                sku: arena.str(&item.sku),
                quantity: item.quantity,
            })),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ShipmentItem<'a> {
    sku: Str<'a>,
    quantity: u32,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Customer<'a> {
    id: Str<'a>,
    #[component(name = "first-name")]
    first_name: Option<Str<'a>>,
    locale: Str<'a>,
    timezone: Str<'a>,
    #[component(name = "has-email")]
    has_email: bool,
    #[component(name = "has-phone")]
    has_phone: bool,
    tags: List<'a, Str<'a>>,
    #[component(name = "orders-count")]
    orders_count: u32,
    consents: List<'a, wit::Channel>,
    #[component(name = "channel-opt-outs")]
    channel_opt_outs: List<'a, wit::Channel>,
}

impl<'a> Customer<'a> {
    fn new(customer: &'a st::Customer, arena: &'a Arena) -> Self {
        let given = |address: &Option<String>| address.as_deref().is_some_and(|a| !a.is_empty());
        Self {
            id: arena.str(&customer.id),
            first_name: customer.first_name.as_deref().map(|n| arena.str(n)),
            locale: arena.str(&customer.locale),
            timezone: arena.str(&customer.timezone),
            has_email: customer.has_email || given(&customer.email),
            has_phone: customer.has_phone || given(&customer.phone),
            tags: arena.list(customer.tags.iter().map(|tag| arena.str(tag))),
            orders_count: customer.orders_count,
            consents: arena.list(customer.consents.iter().map(|c| c.conv())),
            channel_opt_outs: arena.list(customer.channel_opt_outs.iter().map(|c| c.conv())),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Attribute<'a> {
    key: Str<'a>,
    value: Str<'a>,
}

impl<'a> Attribute<'a> {
    fn list(
        attributes: &'a std::collections::BTreeMap<String, String>,
        arena: &'a Arena,
    ) -> List<'a, Self> {
        arena.list(attributes.iter().map(|(key, value)| Self {
            key: arena.str(key),
            value: arena.str(value),
        }))
    }
}

/// `context`. The config is the one value the caller builds: the SDK holds
/// it as JSON, the contract passes it as JSON text.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Context<'a> {
    tenant: Str<'a>,
    now: i64,
    config: Str<'a>,
    history: List<'a, SentNotification<'a>>,
    #[component(name = "open-escalations")]
    open_escalations: List<'a, OpenEscalation<'a>>,
}

impl<'a> Context<'a> {
    pub fn new(ctx: &'a st::Context, config: &'a str, arena: &'a Arena) -> Self {
        Self {
            tenant: arena.str(&ctx.tenant),
            now: ctx.now.as_millisecond(),
            config: arena.str(config),
            history: arena.list(ctx.history.iter().map(|sent| SentNotification {
                template: arena.str(&sent.template),
                channel: sent.channel.conv(),
                at: sent.at.as_millisecond(),
            })),
            open_escalations: arena.list(ctx.open_escalations.iter().map(|open| OpenEscalation {
                queue: arena.str(&open.queue),
                priority: open.priority.conv(),
                opened_at: open.opened_at.as_millisecond(),
            })),
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct SentNotification<'a> {
    template: Str<'a>,
    channel: wit::Channel,
    at: i64,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct OpenEscalation<'a> {
    queue: Str<'a>,
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
        let arena = Arena::new(true);
        let given = customer(Some("giulia@example.com"), Some(""));
        let lowered = Customer::new(&given, &arena);
        assert!(lowered.has_email, "a non-empty email means has-email");
        assert!(!lowered.has_phone, "an empty phone is no phone");
        assert_eq!(*lowered.tags, ["vip"]);

        let flagged = st::Customer {
            has_phone: true,
            ..customer(None, None)
        };
        let lowered = Customer::new(&flagged, &arena);
        assert!(!lowered.has_email);
        assert!(
            lowered.has_phone,
            "the flag alone counts, as the shop sent it"
        );
    }
}
