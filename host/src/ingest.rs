//! The `ingest` stage: turn a request body into a validated, normalised
//! order event and store it before acknowledging.
//!
//! In: the raw JSON body and an optional `Idempotency-Key`. Out: the stored
//! event and whether it is new (a retry returns the original). Fails with an
//! [`IngestError`]: malformed JSON, or an invalid field named by its path.

pub mod platform;
pub mod shopify;
pub mod woocommerce;

use tidings_sdk::types::{JsonError, OrderEvent};

use crate::store::{EventRow, NewEvent, Store, StoreError};

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON, but a field is missing or wrong.
    #[error("field `{field}`: {message}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Storing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<JsonError> for IngestError {
    fn from(e: JsonError) -> Self {
        if e.syntax {
            IngestError::Malformed(e.message)
        } else {
            IngestError::Invalid {
                field: e.path,
                message: e.message,
            }
        }
    }
}

/// Parse and check an event body.
pub fn parse(body: &str) -> Result<OrderEvent, IngestError> {
    let event = OrderEvent::from_json(body)?;
    validate(&event)?;
    Ok(event)
}

fn invalid(field: &str, message: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Checks beyond the JSON shape: ids present, currencies and timezones real.
pub fn validate(event: &OrderEvent) -> Result<(), IngestError> {
    let non_empty = |field: &str, value: &str| {
        if value.trim().is_empty() || value.len() > 256 {
            Err(invalid(field, "must be 1-256 characters"))
        } else {
            Ok(())
        }
    };
    non_empty("id", &event.id)?;
    non_empty("order.id", &event.order.id)?;
    non_empty("order.number", &event.order.number)?;
    non_empty("order.customer.id", &event.order.customer.id)?;
    currency("order.total.currency", &event.order.total.currency)?;
    for (i, item) in event.order.items.iter().enumerate() {
        currency(
            &format!("order.items[{i}].unit_price.currency"),
            &item.unit_price.currency,
        )?;
    }
    let customer = &event.order.customer;
    if jiff::tz::TimeZone::get(&customer.timezone).is_err() {
        return Err(invalid(
            "order.customer.timezone",
            format!(
                "`{}` is not an IANA timezone (e.g. Europe/Rome)",
                customer.timezone
            ),
        ));
    }
    let locale_ok = !customer.locale.is_empty()
        && customer.locale.len() <= 35
        && customer
            .locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !locale_ok {
        return Err(invalid(
            "order.customer.locale",
            format!("`{}` is not a locale (e.g. it-IT)", customer.locale),
        ));
    }
    if let Some(email) = &customer.email
        && !email.is_empty()
        && !email.contains('@')
    {
        return Err(invalid("order.customer.email", "is not an email address"));
    }
    if let Some(phone) = &customer.phone
        && !phone.is_empty()
        && !(phone.starts_with('+')
            && phone.len() > 6
            && phone[1..].chars().all(|c| c.is_ascii_digit()))
    {
        return Err(invalid(
            "order.customer.phone",
            "must be in E.164 form, e.g. +393471234567",
        ));
    }
    Ok(())
}

fn currency(field: &str, code: &str) -> Result<(), IngestError> {
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{code}` is not an ISO 4217 code (e.g. EUR)"),
        ))
    }
}

/// Store `event` for `tenant_id` under `idempotency_key` (default: the event
/// id), received from `actor` (a key id). Returns the stored row and whether
/// it is new.
pub async fn accept(
    store: &Store,
    tenant_id: &str,
    event: &OrderEvent,
    idempotency_key: Option<&str>,
    actor: &str,
) -> Result<(EventRow, bool), IngestError> {
    let body = serde_json::to_string(event).expect("events serialise");
    let key = idempotency_key.unwrap_or(&event.id);
    Ok(store
        .insert_event(&new_event(tenant_id, event, key, &body), actor)
        .await?)
}

/// The row that stores `event` (serialised as `body`) for `tenant_id`
/// under `idempotency_key`.
pub fn new_event<'a>(
    tenant_id: &'a str,
    event: &'a OrderEvent,
    idempotency_key: &'a str,
    body: &'a str,
) -> NewEvent<'a> {
    NewEvent {
        tenant_id,
        external_id: &event.id,
        idempotency_key,
        order_id: &event.order.id,
        kind: event.kind.as_str(),
        occurred_at: event.occurred_at.as_millisecond(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_sdk::testing::fixture_json;
    use tidings_sdk::types::EventKind;

    fn field_of(body: &str) -> String {
        match parse(body) {
            Err(IngestError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn every_sample_event_is_accepted() {
        for kind in EventKind::ALL {
            parse(fixture_json(kind)).expect("valid sample");
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let sample = fixture_json(EventKind::OrderCreated);
        assert_eq!(
            field_of(&sample.replace("Europe/Rome", "Mars/Olympus")),
            "order.customer.timezone"
        );
        assert_eq!(
            field_of(&sample.replacen("\"EUR\"", "\"euro\"", 1)),
            "order.total.currency"
        );
        assert_eq!(
            field_of(&sample.replace("+393471234567", "0347 123")),
            "order.customer.phone"
        );
        assert_eq!(
            field_of(&sample.replace("\"ord_1042\"", "\"\"")),
            "order.id"
        );
    }

    #[test]
    fn broken_json_is_malformed_not_invalid() {
        assert!(matches!(parse("{\"id\": "), Err(IngestError::Malformed(_))));
    }
}
