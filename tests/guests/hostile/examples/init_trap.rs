//! A plugin whose initialisation traps. The core module exports
//! `_initialize`, which the component calls while it is instantiated, before
//! any export; it hits `unreachable`. Every instantiation fails, so the host
//! must report an instantiation fault (already at load, when it instantiates
//! the plugin to call `describe()`).

use tidings_sdk::prelude::*;

struct InitTrap;

impl Rule for InitTrap {
    fn decide(_event: &OrderEvent, _ctx: &Context) -> Result<Vec<Action>, RuleError> {
        Ok(vec![notify(Channel::Email, "order-confirmation")])
    }
}

register_rule!(InitTrap);

/// Run by the component at instantiation (the WASI reactor convention).
// Exporting a symbol by its exact name needs `no_mangle`, an unsafe attribute.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
}
