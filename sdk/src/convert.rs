//! Conversions between the SDK's types and WIT bindings of `tidings:notify/types`.
//!
//! Host (wasmtime `bindgen!`) and guest (`wit_bindgen::generate!`) bindings
//! name their types and fields identically, so one macro serves both sides.
//! Invoke it in a module where `w` names the bindings' `types` module.

/// Generate `Conv` impls between `$crate::types` and the WIT bindings module
/// `w` in scope at the call site. Not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_conversions {
    () => {
        use $crate::__private::{BTreeMap, Timestamp, Value};
        use $crate::{action as sa, types as st};

        /// A conversion between mirror types.
        pub trait Conv<T> {
            /// Convert.
            fn conv(self) -> T;
        }

        $crate::__conv_same!(String, bool, u32, u64, i64);

        impl<A: Conv<B>, B> Conv<Vec<B>> for Vec<A> {
            fn conv(self) -> Vec<B> {
                self.into_iter().map(Conv::conv).collect()
            }
        }
        impl<A: Conv<B>, B> Conv<Option<B>> for Option<A> {
            fn conv(self) -> Option<B> {
                self.map(Conv::conv)
            }
        }
        impl Conv<i64> for Timestamp {
            fn conv(self) -> i64 {
                self.as_millisecond()
            }
        }
        impl Conv<Timestamp> for i64 {
            fn conv(self) -> Timestamp {
                // Out-of-range instants are clamped rather than failing a decision.
                Timestamp::from_millisecond(self).unwrap_or(if self < 0 {
                    Timestamp::MIN
                } else {
                    Timestamp::MAX
                })
            }
        }
        impl Conv<Vec<w::Attribute>> for BTreeMap<String, String> {
            fn conv(self) -> Vec<w::Attribute> {
                self.into_iter()
                    .map(|(key, value)| w::Attribute { key, value })
                    .collect()
            }
        }
        impl Conv<BTreeMap<String, String>> for Vec<w::Attribute> {
            fn conv(self) -> BTreeMap<String, String> {
                self.into_iter().map(|a| (a.key, a.value)).collect()
            }
        }

        $crate::__conv_enums! {
            st::Channel => Channel { Email, Sms, Whatsapp, Push, Webhook }
            st::Category => Category { Transactional, Marketing }
            st::Priority => Priority { Low, Normal, High, Urgent }
            st::LineStatus => LineStatus { Pending, Fulfilled, Backordered, Cancelled, Returned, Refunded }
            st::ShipmentStatus => ShipmentStatus {
                LabelCreated, InTransit, OutForDelivery, Delivered, Delayed, AttemptFailed, Failed
            }
            st::EventKind => EventKind {
                OrderCreated, OrderPaid, PaymentFailed, OrderPreparing, ShipmentCreated,
                ShipmentInTransit, OutForDelivery, Delivered, DeliveryDelayed,
                DeliveryAttemptFailed, PartiallyShipped, Backordered, OrderCancelled,
                ItemsCancelled, RefundCreated, ReturnRequested, ReturnApproved, ReturnReceived
            }
        }

        $crate::__conv_records! {
            Money => Money { minor, currency }
            LineItem => LineItem { sku, title, quantity, unit_price, status }
            ShipmentItem => ShipmentItem { sku, quantity }
            Shipment => Shipment { id, carrier, tracking_number, tracking_url, eta, status, items }
            Order => Order { id, number, created_at, total, items, shipments, customer, tags, attributes }
            OrderEvent => OrderEvent { id, kind, occurred_at, order, shipment, source, attributes }
            SentNotification => SentNotification { template, channel, at }
            OpenEscalation => OpenEscalation { queue, priority, opened_at }
            PluginInfo => PluginInfo { name, version, handles, config_schema }
        }

        impl Conv<w::Customer> for st::Customer {
            fn conv(self) -> w::Customer {
                w::Customer {
                    has_email: self.has_email || self.email.is_some(),
                    has_phone: self.has_phone || self.phone.is_some(),
                    id: self.id,
                    first_name: self.first_name,
                    locale: self.locale,
                    timezone: self.timezone,
                    tags: self.tags,
                    orders_count: self.orders_count,
                    consents: self.consents.conv(),
                    channel_opt_outs: self.channel_opt_outs.conv(),
                }
            }
        }
        impl Conv<st::Customer> for w::Customer {
            fn conv(self) -> st::Customer {
                st::Customer {
                    id: self.id,
                    first_name: self.first_name,
                    email: None,
                    phone: None,
                    locale: self.locale,
                    timezone: self.timezone,
                    has_email: self.has_email,
                    has_phone: self.has_phone,
                    tags: self.tags,
                    orders_count: self.orders_count,
                    consents: self.consents.conv(),
                    channel_opt_outs: self.channel_opt_outs.conv(),
                }
            }
        }

        impl Conv<w::Context> for st::Context {
            fn conv(self) -> w::Context {
                w::Context {
                    tenant: self.tenant,
                    now: self.now.conv(),
                    config: self.config.to_string(),
                    history: self.history.conv(),
                    open_escalations: self.open_escalations.conv(),
                }
            }
        }
        impl Conv<st::Context> for w::Context {
            fn conv(self) -> st::Context {
                st::Context {
                    tenant: self.tenant,
                    now: self.now.conv(),
                    // The host validated the config as JSON; anything else reads as null.
                    config: $crate::__private::from_str(&self.config).unwrap_or(Value::Null),
                    history: self.history.conv(),
                    open_escalations: self.open_escalations.conv(),
                }
            }
        }

        impl Conv<w::Timing> for sa::Timing {
            fn conv(self) -> w::Timing {
                match self {
                    sa::Timing::Now => w::Timing::Now,
                    sa::Timing::After { seconds } => w::Timing::After(seconds),
                    sa::Timing::At { at } => w::Timing::At(at.conv()),
                }
            }
        }
        impl Conv<sa::Timing> for w::Timing {
            fn conv(self) -> sa::Timing {
                match self {
                    w::Timing::Now => sa::Timing::Now,
                    w::Timing::After(seconds) => sa::Timing::After { seconds },
                    w::Timing::At(at) => sa::Timing::At { at: at.conv() },
                }
            }
        }

        impl Conv<w::Notify> for sa::Notify {
            fn conv(self) -> w::Notify {
                w::Notify {
                    channel: self.channel.conv(),
                    template: self.template,
                    locale: self.locale,
                    timing: self.timing.conv(),
                    category: self.category.conv(),
                    priority: self.priority.conv(),
                    dedupe_key: self.dedupe_key,
                    cancel_key: self.cancel_key,
                    fallback_channels: self.fallback_channels.conv(),
                    data: self.data.conv(),
                }
            }
        }
        impl Conv<sa::Notify> for w::Notify {
            fn conv(self) -> sa::Notify {
                sa::Notify {
                    channel: self.channel.conv(),
                    template: self.template,
                    locale: self.locale,
                    timing: self.timing.conv(),
                    category: self.category.conv(),
                    priority: self.priority.conv(),
                    dedupe_key: self.dedupe_key,
                    cancel_key: self.cancel_key,
                    fallback_channels: self.fallback_channels.conv(),
                    data: self.data.conv(),
                }
            }
        }

        impl Conv<w::Action> for sa::Action {
            fn conv(self) -> w::Action {
                match self {
                    sa::Action::Notify(n) => w::Action::Notify(n.conv()),
                    sa::Action::Escalate(e) => w::Action::Escalate(w::Escalate {
                        queue: e.queue,
                        priority: e.priority.conv(),
                        reason: e.reason,
                        sla_minutes: e.sla_minutes,
                    }),
                    sa::Action::HoldForApproval { notify, reason } => {
                        w::Action::HoldForApproval(w::HoldForApproval {
                            notify: notify.conv(),
                            reason,
                        })
                    }
                    sa::Action::Cancel { cancel_key } => w::Action::Cancel(cancel_key),
                }
            }
        }
        impl Conv<sa::Action> for w::Action {
            fn conv(self) -> sa::Action {
                match self {
                    w::Action::Notify(n) => sa::Action::Notify(n.conv()),
                    w::Action::Escalate(e) => sa::Action::Escalate(sa::Escalate {
                        queue: e.queue,
                        priority: e.priority.conv(),
                        reason: e.reason,
                        sla_minutes: e.sla_minutes,
                    }),
                    w::Action::HoldForApproval(h) => sa::Action::HoldForApproval {
                        notify: h.notify.conv(),
                        reason: h.reason,
                    },
                    w::Action::Cancel(cancel_key) => sa::Action::Cancel { cancel_key },
                }
            }
        }

        impl Conv<w::RuleError> for sa::RuleError {
            fn conv(self) -> w::RuleError {
                w::RuleError {
                    code: self.code,
                    message: self.message,
                }
            }
        }
        impl Conv<sa::RuleError> for w::RuleError {
            fn conv(self) -> sa::RuleError {
                sa::RuleError {
                    code: self.code,
                    message: self.message,
                }
            }
        }
    };
}

/// Identity conversions. Not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conv_same {
    ($($t:ty),*) => {$(impl Conv<$t> for $t { fn conv(self) -> $t { self } })*};
}

/// Conversions between mirror enums. Not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conv_enums {
    ($($sdk:path => $wit:ident { $($v:ident),* $(,)? })*) => {$(
        impl Conv<w::$wit> for $sdk {
            fn conv(self) -> w::$wit {
                use $sdk as S;
                match self { $(S::$v => w::$wit::$v),* }
            }
        }
        impl Conv<$sdk> for w::$wit {
            fn conv(self) -> $sdk {
                use $sdk as S;
                match self { $(w::$wit::$v => S::$v),* }
            }
        }
    )*};
}

/// Conversions between records whose fields match one to one. Not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conv_records {
    ($($sdk:ident => $wit:ident { $($f:ident),* $(,)? })*) => {$(
        impl Conv<w::$wit> for st::$sdk {
            fn conv(self) -> w::$wit {
                w::$wit { $($f: self.$f.conv()),* }
            }
        }
        impl Conv<st::$sdk> for w::$wit {
            fn conv(self) -> st::$sdk {
                st::$sdk { $($f: self.$f.conv()),* }
            }
        }
    )*};
}
