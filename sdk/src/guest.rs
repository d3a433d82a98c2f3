//! The glue between a [`Rule`](crate::Rule) and the component's WIT exports.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rule",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "tidings_sdk::guest::bindings",
    });
}

pub use bindings::export;
pub use bindings::exports::tidings::notify::plugin::Guest;
use bindings::tidings::notify::{host, types as w};

pub use w::{
    Action as WitAction, Context as WitContext, OrderEvent as WitEvent,
    PluginInfo as WitPluginInfo, RuleError as WitRuleError,
};

mod convert {
    use super::w;
    crate::__wit_conversions!();
}
use convert::Conv;

/// Run `R::decide` on WIT arguments.
pub fn decide<R: crate::Rule>(
    event: WitEvent,
    context: WitContext,
) -> Result<Vec<WitAction>, WitRuleError> {
    let event: crate::types::OrderEvent = event.conv();
    let context: crate::types::Context = context.conv();
    let decided = R::decide(&event, &context)
        .map(Conv::conv)
        .map_err(Conv::conv);
    flush_stdio();
    // Freeing the event and context would walk every string, list and map
    // only to hand memory back to an instance that is thrown away after the
    // call (Tidings runs each decision in a fresh one), and the SDK's bump
    // allocator would reclaim little of it anyway.
    std::mem::forget((event, context));
    decided
}

/// Build `describe()`'s answer for `R`.
pub fn describe<R: crate::Rule>(name: &str, version: &str) -> WitPluginInfo {
    let info = crate::types::PluginInfo {
        name: name.to_owned(),
        version: version.to_owned(),
        handles: R::handles(),
        config_schema: R::config_schema(),
    }
    .conv();
    flush_stdio();
    info
}

/// Log a last line printed without its newline (see [`crate::stdio`]).
fn flush_stdio() {
    #[cfg(all(target_os = "wasi", feature = "stdio-log"))]
    crate::stdio::flush();
}

/// Send a line to the host's plugin log.
pub fn log(level: crate::log::Level, message: &str) {
    use crate::log::Level;
    let level = match level {
        Level::Debug => host::LogLevel::Debug,
        Level::Info => host::LogLevel::Info,
        Level::Warn => host::LogLevel::Warn,
        Level::Error => host::LogLevel::Error,
    };
    host::log(level, message);
}
