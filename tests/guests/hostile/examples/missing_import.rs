//! A real plugin (the SDK's exports) that also imports an interface the host
//! does not provide, `hostile:probe/secrets`, and calls it in `decide`. The
//! host must refuse it at load time with a link error, never at the first
//! decision.

use tidings_sdk::prelude::*;

// The generated bindings are the component's ABI glue, unsafe by nature.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package hostile:probe;

            interface secrets {
                /// What a sandbox must never hand out.
                steal: func() -> string;
            }

            world missing-import {
                import secrets;
            }
        ",
    });
}

struct MissingImport;

impl Rule for MissingImport {
    fn decide(_event: &OrderEvent, _ctx: &Context) -> Result<Vec<Action>, RuleError> {
        let loot = bindings::hostile::probe::secrets::steal();
        Ok(vec![
            notify(Channel::Email, "order-confirmation").with("loot", loot),
        ])
    }
}

register_rule!(MissingImport);
