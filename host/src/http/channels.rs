//! A tenant's channels and what providers report back.
//!
//! - `PUT /v1/channels/{channel}` (merchant): provider account, endpoint or
//!   keys of `email`, `sms`, `whatsapp`, `push` or `webhook`, checked before
//!   they are stored; `GET /v1/channels` shows them without their secrets;
//!   `DELETE /v1/channels/{channel}`.
//! - `POST /v1/callbacks/twilio/{tenant}`: Twilio status callbacks
//!   (form-encoded), authenticated by `X-Twilio-Signature` with the tenant's
//!   auth token. `delivered`, `undelivered` and `failed` settle the message;
//!   a failure that says the number is gone or unsubscribed suppresses it.
//! - `POST /v1/callbacks/email/{tenant}`: bounces and complaints (JSON),
//!   authenticated by `X-Tidings-Signature: sha256=<hex HMAC-SHA256 of the
//!   body>` with the tenant's `bounce_secret`. A hard bounce or a complaint
//!   suppresses the address.
//!
//! A callback with a bad signature is a 401 and changes nothing.

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{ApiError, AppState, Caller, parse_body, rfc3339};
use crate::dispatch::{ChannelSettings, ChannelSettingsError, twilio};
use crate::store::{AuditEntry, MessageRow};

/// Channels a tenant can configure.
const CHANNELS: [&str; 5] = ["email", "sms", "whatsapp", "push", "webhook"];

/// Twilio errors that say the number will not take messages again: 21610
/// (the recipient replied STOP), 21614 (not a mobile number), 30005 (unknown
/// destination), 30006 (landline or unreachable carrier). See
/// <https://www.twilio.com/docs/api/errors>.
const SUPPRESSING_TWILIO_ERRORS: [&str; 4] = ["21610", "21614", "30005", "30006"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/channels", get(list))
        .route("/v1/channels/{channel}", put(set).delete(remove))
        .route("/v1/callbacks/twilio/{tenant}", post(twilio_status))
        .route("/v1/callbacks/email/{tenant}", post(email_report))
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let rows = state.pipeline.store.channel_settings(tenant_id).await?;
    let settings = ChannelSettings::from_stored(tenant_id, &rows);
    let items: Vec<Value> = rows
        .iter()
        .filter_map(|(channel, _, updated)| {
            let mut view = settings.public_view(channel)?;
            view["channel"] = json!(channel);
            view["updated_at"] = json!(rfc3339(*updated));
            Some(view)
        })
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    if !CHANNELS.contains(&channel.as_str()) {
        return Err(ApiError::not_found("channel"));
    }
    let value: Value = parse_body(&body)?;
    let config = value.to_string();
    let mut settings = ChannelSettings::default();
    settings.set(&channel, &config).map_err(|e| match e {
        ChannelSettingsError::Invalid { field, message } => ApiError::invalid(field, message),
        other => ApiError::bad_request(other.to_string()),
    })?;
    let store = &state.pipeline.store;
    store
        .set_channel_settings(tenant_id, &channel, &config)
        .await?;
    store
        .audit(AuditEntry {
            tenant_id,
            order_id: None,
            event_id: None,
            message_id: None,
            stage: "settings",
            action: "channel_set",
            actor: &caller.key_id,
            detail: json!({ "channel": channel }),
        })
        .await?;
    let mut view = settings.public_view(&channel).unwrap_or_else(|| json!({}));
    view["channel"] = json!(channel);
    if channel == "sms" || channel == "whatsapp" {
        view["status_callback_path"] = json!(format!("/v1/callbacks/twilio/{tenant_id}"));
    }
    if channel == "email" {
        view["bounce_callback_path"] = json!(format!("/v1/callbacks/email/{tenant_id}"));
    }
    Ok(Json(view))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    match state
        .pipeline
        .store
        .delete_channel_settings(tenant_id, &channel)
        .await?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("channel settings")),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The tenant named in a callback path, or 404 (the same for a tenant that
/// does not exist and one without the channel configured, so callers learn
/// nothing about other tenants).
async fn callback_settings(state: &AppState, tenant_id: &str) -> Result<ChannelSettings, ApiError> {
    if state.pipeline.store.tenant(tenant_id).await?.is_none() {
        return Err(unauthorized("callbacks for this tenant are not configured"));
    }
    Ok(state.pipeline.channel_settings(tenant_id).await?)
}

/// The URL Twilio signed: the service's public base URL (`--public-url`)
/// when configured, else what the request's `Host` names, plus the path and
/// query it called.
fn signed_url(state: &AppState, headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match &state.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

async fn twilio_status(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let settings = callback_settings(&state, &tenant_id).await?;
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| unauthorized("missing X-Twilio-Signature"))?;
    let params: Vec<(String, String)> = form_urlencoded(&body).ok_or_else(|| {
        ApiError::bad_request("the body is not application/x-www-form-urlencoded")
    })?;
    let url = signed_url(&state, &headers, &uri);
    let tokens = [settings.sms.as_ref(), settings.whatsapp.as_ref()];
    let valid = tokens
        .iter()
        .flatten()
        .any(|account| twilio::verify_signature(&account.auth_token, &url, &params, signature));
    if !valid {
        return Err(unauthorized("X-Twilio-Signature does not match"));
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let sid = field("MessageSid")
        .or_else(|| field("SmsSid"))
        .ok_or_else(|| ApiError::invalid("MessageSid", "is required"))?;
    let status = field("MessageStatus")
        .or_else(|| field("SmsStatus"))
        .ok_or_else(|| ApiError::invalid("MessageStatus", "is required"))?;
    let store = &state.pipeline.store;
    let message = store
        .message_by_provider_id(&tenant_id, sid)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let error_code = field("ErrorCode").filter(|c| !c.is_empty());
    let final_status = match status {
        "delivered" | "read" => Some("delivered"),
        "undelivered" => Some("undelivered"),
        "failed" => Some("failed"),
        // queued, accepted, sending, sent: progress, recorded in the audit.
        _ => None,
    };
    let detail = match error_code {
        Some(code) => format!("provider reported {status} (error {code})"),
        None => format!("provider reported {status}"),
    };
    let changed = match final_status {
        Some(final_status) => {
            store
                .report_delivery(&message, final_status, &detail)
                .await?
        }
        None => false,
    };
    if changed {
        count(&state, &message, final_status.unwrap_or_default());
    }
    let mut suppressed = false;
    if let Some(code) = error_code
        && SUPPRESSING_TWILIO_ERRORS.contains(&code)
        && let Some(address) = recipient(&state, &message).await?
    {
        store
            .suppress(
                &tenant_id,
                &message.channel,
                &address,
                &format!("provider error {code}"),
            )
            .await?;
        suppressed = true;
    }
    audit_report(
        &state,
        &message,
        status,
        json!({ "provider_status": status, "error_code": error_code, "changed": changed, "suppressed": suppressed }),
    )
    .await?;
    Ok(Json(
        json!({ "message_id": message.id, "status": final_status.unwrap_or(&message.status), "suppressed": suppressed }),
    ))
}

/// A bounce or complaint, as a mail provider's webhook or a bounce
/// processor reports it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailReport {
    /// `bounce` or `complaint`.
    #[serde(rename = "type")]
    kind: ReportKind,
    /// For bounces: `hard` (the address does not exist) or `soft` (full
    /// mailbox, try later).
    #[serde(default)]
    bounce_type: Option<BounceType>,
    /// The address that bounced or complained.
    recipient: String,
    /// The message: our id (`msg_…`) or its `Message-ID` header
    /// (`<msg_…@tidings>`).
    #[serde(default)]
    message_id: Option<String>,
    /// The receiving server's words, kept with the message.
    #[serde(default)]
    diagnostic: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReportKind {
    Bounce,
    Complaint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BounceType {
    Hard,
    Soft,
}

async fn email_report(
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let settings = callback_settings(&state, &tenant_id).await?;
    let secret = settings
        .email
        .as_ref()
        .and_then(|e| e.bounce_secret.as_deref())
        .ok_or_else(|| unauthorized("callbacks for this tenant are not configured"))?;
    let signature = headers
        .get("x-tidings-signature")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| unauthorized("missing or malformed X-Tidings-Signature (sha256=<hex>)"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(&body);
    if mac.verify_slice(&signature).is_err() {
        return Err(unauthorized("X-Tidings-Signature does not match"));
    }
    let report: EmailReport = parse_body(&body)?;
    if !report.recipient.contains('@') {
        return Err(ApiError::invalid("recipient", "must be an email address"));
    }
    if report.kind == ReportKind::Bounce && report.bounce_type.is_none() {
        return Err(ApiError::invalid(
            "bounce_type",
            "is required for a bounce: hard or soft",
        ));
    }
    let store = &state.pipeline.store;
    let message = match &report.message_id {
        Some(id) => {
            let id = id.trim().trim_start_matches('<').trim_end_matches('>');
            let id = id.split_once('@').map_or(id, |(id, _)| id);
            Some(
                store
                    .message(&tenant_id, id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("message"))?,
            )
        }
        None => None,
    };
    let (status, suppress) = match (report.kind, report.bounce_type) {
        (ReportKind::Complaint, _) => ("complained", true),
        (ReportKind::Bounce, Some(BounceType::Hard)) => ("bounced", true),
        (ReportKind::Bounce, _) => ("soft_bounced", false),
    };
    let detail = match &report.diagnostic {
        Some(d) => format!("{status}: {d}"),
        None => status.to_owned(),
    };
    let address = report.recipient.trim().to_lowercase();
    if suppress {
        store
            .suppress(&tenant_id, "email", &address, status)
            .await?;
    }
    if let Some(message) = &message {
        let changed = match suppress {
            true => store.report_delivery(message, status, &detail).await?,
            false => false,
        };
        if changed {
            count(&state, message, status);
        }
        audit_report(&state, message, status, json!({ "report": status, "changed": changed, "suppressed": suppress, "diagnostic": report.diagnostic })).await?;
    } else {
        store
            .audit(AuditEntry {
                tenant_id: &tenant_id,
                order_id: None,
                event_id: None,
                message_id: None,
                stage: "delivery",
                action: status,
                actor: "email-callback",
                detail: json!({ "suppressed": suppress, "diagnostic": report.diagnostic }),
            })
            .await?;
    }
    Ok(Json(json!({
        "message_id": message.as_ref().map(|m| m.id.clone()),
        "status": status,
        "suppressed": suppress,
    })))
}

fn count(state: &AppState, m: &MessageRow, status: &str) {
    state.pipeline.metrics.inc(
        "tidings_messages_total",
        &[
            ("tenant", &m.tenant_id),
            ("channel", &m.channel),
            ("status", status),
        ],
    );
}

/// The customer's address the message went to.
async fn recipient(state: &AppState, m: &MessageRow) -> Result<Option<String>, ApiError> {
    if let Some(r) = &m.recipient {
        return Ok(Some(r.clone()));
    }
    let Some(row) = state
        .pipeline
        .store
        .event(&m.tenant_id, &m.event_id)
        .await?
    else {
        return Ok(None);
    };
    let event: Option<tidings_sdk::types::OrderEvent> = serde_json::from_str(&row.body).ok();
    Ok(event.and_then(|e| match m.channel.as_str() {
        "email" => e.order.customer.email,
        _ => e.order.customer.phone,
    }))
}

async fn audit_report(
    state: &AppState,
    m: &MessageRow,
    action: &str,
    detail: Value,
) -> Result<(), ApiError> {
    state
        .pipeline
        .store
        .audit(AuditEntry {
            tenant_id: &m.tenant_id,
            order_id: Some(&m.order_id),
            event_id: Some(&m.event_id),
            message_id: Some(&m.id),
            stage: "delivery",
            action,
            actor: "provider-callback",
            detail,
        })
        .await?;
    Ok(())
}

/// `application/x-www-form-urlencoded` pairs, or `None` when malformed.
fn form_urlencoded(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode_component(k)?, decode_component(v)?))
        })
        .collect()
}

fn decode_component(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_plus_and_percent_escapes() {
        let pairs =
            form_urlencoded(b"To=%2B393471234567&Body=Ciao+Giulia%21&Empty=").expect("valid");
        assert_eq!(
            pairs,
            [
                ("To".to_owned(), "+393471234567".to_owned()),
                ("Body".to_owned(), "Ciao Giulia!".to_owned()),
                ("Empty".to_owned(), String::new()),
            ]
        );
        assert_eq!(form_urlencoded(b"a=%zz"), None);
        assert_eq!(form_urlencoded(b"a=%e2%82"), None);
    }
}
