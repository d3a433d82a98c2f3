//! Write Tidings notification-rule plugins in Rust.
//!
//! A plugin decides, for each order event, which notifications to send, when,
//! with which template, and whether a human must step in. It is compiled to a
//! WebAssembly component (`cargo build --target wasm32-wasip2`) and run by the
//! Tidings host in a sandbox; the same code is unit-testable natively.
//!
//! ```
//! use tidings_sdk::prelude::*;
//!
//! struct Standard;
//!
//! impl Rule for Standard {
//!     fn decide(event: &OrderEvent, _ctx: &Context) -> Result<Vec<Action>, RuleError> {
//!         Ok(match event.kind {
//!             EventKind::ShipmentCreated => vec![notify(Channel::Email, "order-shipped")],
//!             EventKind::DeliveryDelayed if event.order.total.minor > 20_000 => {
//!                 vec![escalate("vip-care", Priority::High, "high-value order delayed")]
//!             }
//!             _ => vec![],
//!         })
//!     }
//! }
//!
//! register_rule!(Standard);
//!
//! let event = tidings_sdk::testing::fixture(EventKind::ShipmentCreated);
//! let ctx = tidings_sdk::testing::context();
//! assert_eq!(Standard::decide(&event, &ctx).unwrap().len(), 1);
//! ```
#![deny(missing_docs)]

pub mod action;
#[cfg(feature = "bump-alloc")]
pub mod alloc;
mod convert;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;
pub mod log;
#[cfg(feature = "stdio-log")]
pub mod stdio;
pub mod testing;
pub mod types;

pub use action::{Action, RuleError, cancel, escalate, hold_for_approval, notify};

/// Every plugin component built with the SDK (`wasm32-wasip2`) allocates
/// with [`alloc::Bump`] (see there why); turn off the `bump-alloc` feature
/// for Rust's default allocator. Other Wasm targets (such as the Extism
/// build of a rule in the benchmarks, whose instance lives across calls)
/// keep Rust's default.
#[cfg(all(target_arch = "wasm32", target_os = "wasi", feature = "bump-alloc"))]
#[global_allocator]
static ALLOCATOR: alloc::Bump<alloc::LinearMemory> = alloc::Bump::new(alloc::LinearMemory);

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::action::{
        Action, Escalate, Notify, RuleError, Timing, cancel, escalate, hold_for_approval, notify,
    };
    pub use crate::register_rule;
    pub use crate::types::{
        Category, Channel, Context, Customer, EventKind, LineItem, LineStatus, Money, Order,
        OrderEvent, PluginInfo, Priority, Shipment, ShipmentStatus, Span, Timestamp,
    };
    pub use crate::{Rule, log};
    pub use jiff::ToSpan;
}

/// A notification rule: the one trait a plugin implements.
///
/// Rules are pure: everything they may know arrives as arguments, and the same
/// event and context always give the same actions.
pub trait Rule {
    /// Decide what to do about `event`.
    fn decide(event: &types::OrderEvent, ctx: &types::Context) -> Result<Vec<Action>, RuleError>;

    /// The event kinds this rule acts on (default: all).
    fn handles() -> Vec<types::EventKind> {
        types::EventKind::ALL.to_vec()
    }

    /// JSON Schema (text) of the merchant config this rule accepts
    /// (default: any object).
    fn config_schema() -> String {
        r#"{"type": "object"}"#.to_owned()
    }
}

/// Export a [`Rule`] as the plugin's implementation of `tidings:notify/plugin`.
///
/// The plugin's name and version in `describe()` are the crate's package name
/// and version. On native targets this only checks that the type is a `Rule`,
/// so the same crate builds for unit tests.
#[macro_export]
macro_rules! register_rule {
    ($rule:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Export;

            impl $crate::guest::Guest for Export {
                fn decide(
                    event: $crate::guest::WitEvent,
                    context: $crate::guest::WitContext,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<$crate::guest::WitAction>,
                    $crate::guest::WitRuleError,
                > {
                    $crate::guest::decide::<$rule>(event, context)
                }

                fn describe() -> $crate::guest::WitPluginInfo {
                    $crate::guest::describe::<$rule>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                    )
                }
            }

    $crate::guest::export!(Export with_types_in $crate::guest::bindings);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_rule<R: $crate::Rule>() {}
            is_rule::<$rule>();
        };
    };
}

#[doc(hidden)]
pub mod __private {
    pub use jiff::Timestamp;
    pub use serde_json::{Value, from_str};
    pub use std::collections::BTreeMap;
}
