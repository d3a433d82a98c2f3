//! The `standard-lifecycle` rule as an Extism plugin, the way Extism plugins
//! are usually written: one exported function taking and returning JSON.
//!
//! In: `{"event": <order event>, "context": <context>}`. Out: the rule's
//! result as serde writes it, `{"Ok": [<action>, …]}` or `{"Err": <rule error>}`.

use extism_pdk::{FnResult, Json, plugin_fn};
use serde::Deserialize;
use standard_lifecycle::StandardLifecycle;
use tidings_sdk::Rule;
use tidings_sdk::action::{Action, RuleError};
use tidings_sdk::types::{Context, OrderEvent};

#[derive(Deserialize)]
struct Input {
    event: OrderEvent,
    context: Context,
}

/// Decide on one event.
#[plugin_fn]
pub fn decide(Json(input): Json<Input>) -> FnResult<Json<Result<Vec<Action>, RuleError>>> {
    Ok(Json(StandardLifecycle::decide(
        &input.event,
        &input.context,
    )))
}
