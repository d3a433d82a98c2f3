//! The transport every worker hands messages to: it picks the real channel
//! for each message.
//!
//! - email: the operator's SMTP relay (`--smtp-url`), else the file outbox;
//! - SMS and WhatsApp: the tenant's provider account through the
//!   Twilio-compatible API, else the file outbox;
//! - push and webhook: a signed POST to the tenant's endpoint (or, for agent
//!   notifications, to the tier's URL), else the file outbox.
//!
//! The file outbox keeps the embedded default working with no setup: a demo
//! or a test sees every message as a file.

use std::sync::Arc;

use tidings_sdk::types::Channel;

use super::file::FileTransport;
use super::twilio::TwilioTransport;
use super::webhook::WebhookTransport;
use super::{Outbound, SendFuture, Transport};

/// Routes each message to its channel's transport.
pub struct Dispatcher {
    email: Arc<dyn Transport>,
    file: FileTransport,
    twilio: TwilioTransport,
    webhook: WebhookTransport,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// `email` takes email (SMTP, or the same directory as `file`); `file`
    /// takes what has no provider configured.
    pub fn new(
        email: Arc<dyn Transport>,
        file: FileTransport,
        twilio: TwilioTransport,
        webhook: WebhookTransport,
    ) -> Self {
        Self {
            email,
            file,
            twilio,
            webhook,
        }
    }
}

impl Transport for Dispatcher {
    fn send<'a>(&'a self, message: &'a Outbound<'a>) -> SendFuture<'a> {
        match message.channel {
            Channel::Email => self.email.send(message),
            Channel::Sms | Channel::Whatsapp => match message.twilio {
                Some(account) => Box::pin(self.twilio.send(account, message)),
                None => self.file.send(message),
            },
            Channel::Push | Channel::Webhook => {
                if message.endpoint.is_some() || message.to.is_some() {
                    let now = jiff::Timestamp::now().as_second();
                    Box::pin(self.webhook.send(message.endpoint, message, now))
                } else {
                    self.file.send(message)
                }
            }
        }
    }
}
