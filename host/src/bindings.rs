//! The host's one `bindgen!` of the plugin contract (`wit/notify.wit`), and
//! conversions between its types and the SDK's JSON types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "rule",
});

pub use tidings::notify::host::{Host, LogLevel};
pub use tidings::notify::types;

/// `Conv` between `tidings_sdk::types` and these bindings (generated once, in the SDK).
pub mod convert {
    use super::types as w;
    tidings_sdk::__wit_conversions!();
}

/// The contract version this host serves.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// The interface every plugin exports, without its version.
pub const PLUGIN_INTERFACE: &str = "tidings:notify/plugin";
