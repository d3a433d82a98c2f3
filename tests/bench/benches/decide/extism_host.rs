//! The same rule as an Extism plugin (`tests/guests/extism-rule`), run by the
//! Extism Rust host SDK the usual way: JSON in, JSON out, one exported
//! function. Extism's defaults otherwise (no WASI: the guest needs none, no
//! fuel or memory limit, no disk cache).

use extism::convert::Json;
use extism::{CompiledPlugin, Plugin, PluginBuilder, UserData, ValType};
use serde::Serialize;
use tidings_sdk::types::{Context, OrderEvent};

use crate::Outcome;

#[derive(Serialize)]
struct Input<'a> {
    event: &'a OrderEvent,
    context: &'a Context,
}

fn builder(wasm: &[u8]) -> PluginBuilder<'_> {
    // The SDK's `log` import stays in the module (the rule only logs on a
    // malformed refund amount, which no sample event has); Extism cannot
    // leave an import unresolved, so it gets a no-op.
    PluginBuilder::new(wasm)
        .with_wasi(false)
        .with_cache_disabled()
        .with_function_in_namespace(
            "tidings:notify/host@0.1.0",
            "log",
            [ValType::I32, ValType::I32, ValType::I32],
            [],
            UserData::new(()),
            |_, _, _, _| Ok(()),
        )
}

/// One plugin instance, reused for every call (what Extism users usually do).
pub fn reused(wasm: &[u8]) -> Plugin {
    builder(wasm).build().expect("the Extism plugin loads")
}

/// Call `decide` on `plugin`.
pub fn call(plugin: &mut Plugin, event: &OrderEvent, ctx: &Context) -> Outcome {
    let event = event.without_contact_details();
    let Json(outcome) = plugin
        .call::<Json<Input>, Json<Outcome>>(
            "decide",
            Json(Input {
                event: &event,
                context: ctx,
            }),
        )
        .expect("the Extism call succeeds");
    outcome
}

/// A fresh plugin per call, created from a plugin compiled once.
pub struct Fresh {
    compiled: CompiledPlugin,
}

impl Fresh {
    pub fn new(wasm: &[u8]) -> Self {
        Self {
            compiled: builder(wasm).compile().expect("the Extism plugin compiles"),
        }
    }

    pub fn decide(&self, event: &OrderEvent, ctx: &Context) -> Outcome {
        let mut plugin =
            Plugin::new_from_compiled(&self.compiled).expect("an Extism plugin instance");
        call(&mut plugin, event, ctx)
    }
}
