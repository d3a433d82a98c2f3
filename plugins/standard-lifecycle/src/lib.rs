//! placeholder
use tidings_sdk::prelude::*;

/// The rule.
pub struct Standard;

impl Rule for Standard {
    fn decide(event: &OrderEvent, _ctx: &Context) -> Result<Vec<Action>, RuleError> {
        log::info(&format!("deciding {}", event.kind));
        Ok(match event.kind {
            EventKind::ShipmentCreated => vec![notify(Channel::Email, "order-shipped")],
            _ => vec![],
        })
    }
}

register_rule!(Standard);
