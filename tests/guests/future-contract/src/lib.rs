//! A plugin built against `tidings:notify@1.0.0`, a major version of the
//! contract the host does not serve.
//!
//! It uses `wit-bindgen` directly on a copy of the contract whose only change
//! is the package version, so its export is `tidings:notify/plugin@1.0.0`.
//! The host should refuse it at load time with a clear "unsupported contract
//! version" error rather than fail at the first call. Should it ever run,
//! `decide` returns no actions and `describe` names it `future-contract`
//! 1.0.0.

// The generated bindings are the component's ABI glue, unsafe by nature;
// the plugin's own code below stays safe.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "rule",
    });

    use super::FutureContract;
    export!(FutureContract);
}

use bindings::exports::tidings::notify::plugin::Guest;
use bindings::tidings::notify::types::{
    Action, Context, EventKind, OrderEvent, PluginInfo, RuleError,
};

struct FutureContract;

impl Guest for FutureContract {
    fn decide(_event: OrderEvent, _context: Context) -> Result<Vec<Action>, RuleError> {
        Ok(Vec::new())
    }

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "future-contract".to_owned(),
            version: "1.0.0".to_owned(),
            handles: vec![EventKind::OrderCreated],
            config_schema: r#"{"type": "object"}"#.to_owned(),
        }
    }
}
