//! The `dispatch` stage: hand a rendered message to the transport of its
//! channel.
//!
//! In: an [`Outbound`] message (rendered, addressed). Out: a [`Receipt`] from
//! the transport, or a [`DispatchError`] that says whether it is transient
//! (worth retrying) or permanent. The embedded default is the
//! [`file::FileTransport`]: one `.eml` per email under `./outbox/`, and one
//! JSON file per message for the other channels.

pub mod email;
pub mod file;
pub mod http;
pub mod router;
pub mod twilio;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use tidings_sdk::types::{Category, Channel};

use crate::render::Rendered;

/// A message ready to go.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    /// Message id; also the idempotency key towards the transport.
    pub id: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Channel.
    pub channel: Channel,
    /// Recipient address (email or phone); none for push and webhook.
    pub to: Option<&'a str>,
    /// Customer id (for push and webhook payloads).
    pub customer_id: &'a str,
    /// `From:` for email.
    pub from: &'a str,
    /// `Reply-To:` for email.
    pub reply_to: &'a str,
    /// Transactional or marketing (marketing email gets `List-Unsubscribe`).
    pub category: Category,
    /// The rendered content.
    pub rendered: &'a Rendered,
    /// The tenant's DKIM key, when email is to be signed.
    pub dkim: Option<&'a email::DkimConfig>,
    /// The tenant's provider account, for SMS and WhatsApp.
    pub twilio: Option<&'a twilio::TwilioAccount>,
    /// The tenant's endpoint, for push and webhook messages to the customer
    /// (agent notifications carry their URL in `to`).
    pub endpoint: Option<&'a webhook::WebhookEndpoint>,
}

/// A tenant's channel settings (`PUT /v1/channels/{channel}`): provider
/// accounts, endpoints and keys. Secrets in here are never read back through
/// the API. A channel without settings is handed to the embedded file
/// transport (email: the operator's SMTP relay when one is configured).
#[derive(Debug, Clone, Default)]
pub struct ChannelSettings {
    /// DKIM signing and the bounce-callback secret.
    pub email: Option<EmailChannel>,
    /// The SMS provider account.
    pub sms: Option<twilio::TwilioAccount>,
    /// The WhatsApp provider account.
    pub whatsapp: Option<twilio::TwilioAccount>,
    /// The push gateway.
    pub push: Option<webhook::WebhookEndpoint>,
    /// The customer-event webhook.
    pub webhook: Option<webhook::WebhookEndpoint>,
}

/// A tenant's email settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailChannel {
    /// Sign outgoing email with this key.
    pub dkim: Option<email::DkimConfig>,
    /// The secret that authenticates bounce and complaint callbacks
    /// (`X-Tidings-Signature: sha256=<hex HMAC of the body>`).
    pub bounce_secret: Option<String>,
}

impl ChannelSettings {
    /// A tenant's settings from its stored (channel, config JSON, updated)
    /// rows. They were checked when set; a row that no longer parses is left
    /// out, and logged (that channel then goes to the outbox).
    pub fn from_stored(tenant_id: &str, rows: &[(String, String, i64)]) -> Self {
        let mut out = Self::default();
        for (channel, config, _) in rows {
            if let Err(err) = out.set(channel, config) {
                tracing::error!(tenant = tenant_id, channel = %channel, error = %err, "stored channel settings are unusable");
            }
        }
        out
    }

    /// Parse and check `config` (JSON) as the settings of `channel`, naming
    /// the offending field; replaces what was set for that channel.
    pub fn set(&mut self, channel: &str, config: &str) -> Result<(), ChannelSettingsError> {
        let invalid =
            |field: String, message: String| ChannelSettingsError::Invalid { field, message };
        let parse_err = |e: tidings_sdk::types::JsonError| invalid(e.path, e.message);
        match channel {
            "email" => {
                let email: EmailChannel =
                    tidings_sdk::types::from_json(config).map_err(parse_err)?;
                if let Some(dkim) = &email.dkim {
                    dkim.check()
                        .map_err(|m| invalid("dkim.private_key".into(), m))?;
                }
                if let Some(secret) = &email.bounce_secret
                    && secret.len() < 16
                {
                    return Err(invalid(
                        "bounce_secret".into(),
                        "must be at least 16 characters".into(),
                    ));
                }
                self.email = Some(email);
            }
            "sms" | "whatsapp" => {
                let account: twilio::TwilioAccount =
                    tidings_sdk::types::from_json(config).map_err(parse_err)?;
                for (field, value) in [
                    ("account_sid", &account.account_sid),
                    ("auth_token", &account.auth_token),
                    ("from", &account.from),
                ] {
                    if value.trim().is_empty() {
                        return Err(invalid(field.into(), "must not be empty".into()));
                    }
                }
                match channel {
                    "sms" => self.sms = Some(account),
                    _ => self.whatsapp = Some(account),
                }
            }
            "push" | "webhook" => {
                let endpoint: webhook::WebhookEndpoint =
                    tidings_sdk::types::from_json(config).map_err(parse_err)?;
                if !(endpoint.url.starts_with("https://") || endpoint.url.starts_with("http://")) {
                    return Err(invalid(
                        "url".into(),
                        "must be an http:// or https:// URL".into(),
                    ));
                }
                webhook::parse_secret(&endpoint.secret)
                    .map_err(|e| invalid("secret".into(), e.to_string()))?;
                match channel {
                    "push" => self.push = Some(endpoint),
                    _ => self.webhook = Some(endpoint),
                }
            }
            other => return Err(ChannelSettingsError::UnknownChannel(other.to_owned())),
        }
        Ok(())
    }

    /// What the API shows of one channel's settings: everything but the
    /// secrets, and the names of the secrets that are set.
    pub fn public_view(&self, channel: &str) -> Option<serde_json::Value> {
        use serde_json::json;
        Some(match channel {
            "email" => {
                let email = self.email.as_ref()?;
                let secrets: Vec<&str> = [
                    email.dkim.as_ref().map(|_| "dkim.private_key"),
                    email.bounce_secret.as_ref().map(|_| "bounce_secret"),
                ]
                .into_iter()
                .flatten()
                .collect();
                json!({
                    "dkim": email.dkim.as_ref().map(|d| json!({ "domain": d.domain, "selector": d.selector })),
                    "secrets_set": secrets,
                })
            }
            "sms" | "whatsapp" => {
                let account = self.twilio(parse_channel(channel)?)?;
                json!({ "account_sid": account.account_sid, "from": account.from, "secrets_set": ["auth_token"] })
            }
            "push" | "webhook" => {
                let endpoint = self.endpoint(parse_channel(channel)?)?;
                json!({ "url": endpoint.url, "secrets_set": ["secret"] })
            }
            _ => return None,
        })
    }

    /// The provider account for `channel` (SMS or WhatsApp).
    pub fn twilio(&self, channel: Channel) -> Option<&twilio::TwilioAccount> {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Whatsapp => self.whatsapp.as_ref(),
            _ => None,
        }
    }

    /// The endpoint for `channel` (push or webhook).
    pub fn endpoint(&self, channel: Channel) -> Option<&webhook::WebhookEndpoint> {
        match channel {
            Channel::Push => self.push.as_ref(),
            Channel::Webhook => self.webhook.as_ref(),
            _ => None,
        }
    }
}

fn parse_channel(name: &str) -> Option<Channel> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// Channel settings that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelSettingsError {
    /// Not one of email, sms, whatsapp, push, webhook.
    #[error("unknown channel `{0}`: expected email, sms, whatsapp, push or webhook")]
    UnknownChannel(String),
    /// A field is missing or wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as a JSON path.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// What the transport said.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    /// Where or under which id the transport took it.
    pub transport_id: String,
    /// The provider's id for the message (Twilio's `SM…` SID), which its
    /// status callbacks name.
    pub provider_id: Option<String>,
}

/// A failed hand-off.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DispatchError {
    transient: bool,
    message: String,
}

impl DispatchError {
    /// A failure that may go away (connection refused, 4xx SMTP, 429/5xx HTTP).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            message: message.into(),
        }
    }

    /// A failure retrying will not fix (bad address, rejected content).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            message: message.into(),
        }
    }

    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The future a transport returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Receipt, DispatchError>> + Send + 'a>>;

/// A way to deliver messages of one or more channels.
pub trait Transport: Send + Sync {
    /// Hand `message` over. Must be idempotent per message id where the
    /// transport allows it.
    fn send<'a>(&'a self, message: &'a Outbound<'a>) -> SendFuture<'a>;
}
