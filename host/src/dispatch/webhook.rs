//! Push and webhooks: JSON POSTs signed per Standard Webhooks.
//!
//! In: an [`Outbound`] message and the tenant's [`WebhookEndpoint`] (or, for
//! an agent notification, a bare URL in `to`, such as a chat tool's incoming
//! webhook). [`WebhookTransport::send`] POSTs
//! `{"type": "message.<channel>", "timestamp", "data": {…}}` with the
//! `webhook-id` (the message id, stable across retries: the receiver's
//! idempotency key), `webhook-timestamp` and, with an endpoint,
//! `webhook-signature` headers of the Standard Webhooks specification
//! (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>).
//! The URL always goes through the SSRF guard of [`HttpClient`]. Out: a
//! [`Receipt`] naming the URL (without its query) and the status, or a
//! [`DispatchError`]:
//!
//! | failure                                                  | class     |
//! |----------------------------------------------------------|-----------|
//! | no URL, a secret that does not parse                     | permanent |
//! | a URL the guard refuses (private address, not http(s))   | permanent |
//! | 3xx (not followed), 4xx other than 408/425/429           | permanent |
//! | 408, 425, 429, 5xx, connection failure, timeout          | transient |

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tidings_sdk::types::Channel;

use super::http::{HttpClient, classify_status, display_url};
use super::{DispatchError, Outbound, Receipt};

/// Where a tenant's push or webhook messages go, and the key they are
/// signed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// An `https://` (or, when the operator allows it, `http://`) URL.
    pub url: String,
    /// The signing secret, `whsec_` + base64 of the key bytes.
    pub secret: String,
}

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The shortest signing key accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// A signing secret that cannot be used. The messages never repeat it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSecretError {
    /// It does not start with `whsec_`.
    #[error("a webhook signing secret starts with `whsec_`, followed by the base64 of the key")]
    Prefix,
    /// What follows `whsec_` is not base64.
    #[error("the webhook signing secret after `whsec_` is not valid base64")]
    Base64,
    /// The key is too short to be safe.
    #[error("the webhook signing key is {0} bytes; it must be at least 16 (24 to 64 recommended)")]
    TooShort(usize),
}

/// Standard base64, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The key bytes of a `whsec_…` secret: base64 (padding optional), at least
/// [`MIN_SECRET_BYTES`]. Call it when a tenant configures an endpoint.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, WebhookSecretError> {
    let encoded = secret
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or(WebhookSecretError::Prefix)?;
    let key = BASE64
        .decode(encoded)
        .map_err(|_| WebhookSecretError::Base64)?;
    if key.len() < MIN_SECRET_BYTES {
        return Err(WebhookSecretError::TooShort(key.len()));
    }
    Ok(key)
}

/// The `webhook-signature` header value: `v1,` + base64 of HMAC-SHA256,
/// keyed with the secret's key bytes, over `{id}.{timestamp}.{body}`.
pub fn sign(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookSecretError> {
    let key = parse_secret(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Sends push and webhook messages as signed JSON POSTs.
#[derive(Debug, Clone)]
pub struct WebhookTransport {
    client: HttpClient,
}

impl WebhookTransport {
    /// A transport posting through `client`.
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }

    /// POST `message` to `endpoint`, signed with its secret; without an
    /// endpoint, unsigned to the URL in `message.to` (an agent
    /// notification). `now_unix` is the `webhook-timestamp`.
    pub async fn send(
        &self,
        endpoint: Option<&WebhookEndpoint>,
        message: &Outbound<'_>,
        now_unix: i64,
    ) -> Result<Receipt, DispatchError> {
        let url = match (endpoint, message.to) {
            (Some(endpoint), _) => endpoint.url.as_str(),
            (None, Some(to)) if !to.trim().is_empty() => to.trim(),
            (None, _) => {
                return Err(DispatchError::permanent(format!(
                    "no webhook endpoint is configured for {} messages",
                    channel_name(message.channel)
                )));
            }
        };
        let body = payload(message, now_unix, endpoint.is_none())?;
        let mut headers = vec![
            ("webhook-id".to_owned(), message.id.to_owned()),
            ("webhook-timestamp".to_owned(), now_unix.to_string()),
        ];
        if let Some(endpoint) = endpoint {
            let signature = sign(&endpoint.secret, message.id, now_unix, &body).map_err(|e| {
                DispatchError::permanent(format!("the webhook endpoint cannot sign: {e}"))
            })?;
            headers.push(("webhook-signature".to_owned(), signature));
        }
        let shown = display_url(url);
        let reply = self
            .client
            .post(url, true, "application/json", headers, body)
            .await?;
        classify_status(&format!("webhook {shown}"), &reply)?;
        Ok(Receipt {
            transport_id: format!("webhook {shown} {}", reply.status),
            provider_id: None,
        })
    }
}

/// The JSON body. A bare URL is usually a chat tool's incoming webhook,
/// which shows a top-level `text` (Slack, Mattermost, Google Chat), so
/// that is added there.
fn payload(
    message: &Outbound<'_>,
    now_unix: i64,
    bare_url: bool,
) -> Result<Vec<u8>, DispatchError> {
    let timestamp = jiff::Timestamp::from_second(now_unix).map_err(|e| {
        DispatchError::permanent(format!("invalid webhook timestamp {now_unix}: {e}"))
    })?;
    let rendered = message.rendered;
    let channel = channel_name(message.channel);
    let mut body = serde_json::json!({
        "type": format!("message.{channel}"),
        "timestamp": timestamp.to_string(),
        "data": {
            "message_id": message.id,
            "tenant_id": message.tenant_id,
            "channel": channel,
            "customer_id": message.customer_id,
            "template": rendered.template,
            "locale": rendered.locale,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
        },
    });
    if bare_url {
        body["text"] = serde_json::Value::String(rendered.text.clone());
    }
    Ok(serde_json::to_vec(&body).expect("a JSON value serialises"))
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "email",
        Channel::Sms => "sms",
        Channel::Whatsapp => "whatsapp",
        Channel::Push => "push",
        Channel::Webhook => "webhook",
    }
}

#[cfg(test)]
mod tests {
    use tidings_sdk::types::Category;

    use super::*;
    use crate::render::Rendered;

    /// The test vector of the Standard Webhooks reference libraries.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        assert_eq!(
            sign(
                SPEC_SECRET,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned())
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_at_least_16_bytes() {
        assert_eq!(parse_secret(SPEC_SECRET).map(|key| key.len()), Ok(24));
        // Padding is optional.
        assert_eq!(
            parse_secret("whsec_AAAAAAAAAAAAAAAAAAAAAA").map(|k| k.len()),
            Ok(16)
        );
        assert_eq!(
            parse_secret("whsec_AAAAAAAAAAAAAAAAAAAAAA==").map(|k| k.len()),
            Ok(16)
        );
        assert_eq!(
            parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(WebhookSecretError::Prefix)
        );
        assert_eq!(
            parse_secret("whsec_not base64!"),
            Err(WebhookSecretError::Base64)
        );
        assert_eq!(
            parse_secret("whsec_c2hvcnQ="),
            Err(WebhookSecretError::TooShort(5))
        );
        assert_eq!(
            sign("whsec_", "id", 0, b""),
            Err(WebhookSecretError::TooShort(0))
        );
        let message = WebhookSecretError::Base64.to_string();
        assert!(!message.contains("not base64!"), "{message}");
    }

    fn rendered() -> Rendered {
        Rendered {
            template: "order-shipped".into(),
            channel: Channel::Push,
            locale: "it".into(),
            subject: None,
            text: "Il tuo ordine è partito".into(),
            html: None,
        }
    }

    fn outbound<'a>(to: Option<&'a str>, rendered: &'a Rendered) -> Outbound<'a> {
        Outbound {
            id: "msg_1",
            tenant_id: "t_shop",
            channel: Channel::Push,
            to,
            customer_id: "c_ada",
            from: "",
            reply_to: "",
            category: Category::Transactional,
            rendered,
            dkim: None,
            twilio: None,
            endpoint: None,
        }
    }

    #[test]
    fn the_payload_has_type_timestamp_and_the_rendered_message() {
        let content = rendered();
        let body = payload(&outbound(None, &content), 1767225600, false).expect("payload");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "message.push",
                "timestamp": "2026-01-01T00:00:00Z",
                "data": {
                    "message_id": "msg_1",
                    "tenant_id": "t_shop",
                    "channel": "push",
                    "customer_id": "c_ada",
                    "template": "order-shipped",
                    "locale": "it",
                    "subject": null,
                    "text": "Il tuo ordine è partito",
                    "html": null,
                },
            })
        );
        let bare = payload(&outbound(None, &content), 1767225600, true).expect("payload");
        let json: serde_json::Value = serde_json::from_slice(&bare).expect("JSON");
        assert_eq!(json["text"], "Il tuo ordine è partito");
    }

    #[tokio::test]
    async fn a_message_without_endpoint_or_url_is_refused_for_good() {
        let content = rendered();
        let transport = WebhookTransport::new(HttpClient::new(Default::default()));
        for to in [None, Some(""), Some("  ")] {
            let error = transport
                .send(None, &outbound(to, &content), 0)
                .await
                .expect_err("no URL");
            assert!(!error.is_transient(), "{error}");
        }
        let endpoint = WebhookEndpoint {
            url: "https://hooks.example.com/x".into(),
            secret: "secret".into(),
        };
        let error = transport
            .send(Some(&endpoint), &outbound(None, &content), 0)
            .await
            .expect_err("bad secret");
        assert!(!error.is_transient(), "{error}");
        assert!(error.to_string().contains("whsec_"), "{error}");
    }
}
