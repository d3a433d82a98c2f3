//! The `dispatch` stage: hand a rendered message to the transport of its
//! channel.
//!
//! In: an [`Outbound`] message (rendered, addressed). Out: a [`Receipt`] from
//! the transport, or a [`DispatchError`] that says whether it is transient
//! (worth retrying) or permanent. The embedded default is the
//! [`file::FileTransport`]: one `.eml` per email under `./outbox/`, and one
//! JSON file per message for the other channels.

pub mod file;

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
}

/// What the transport said.
#[derive(Debug, Clone, Serialize)]
pub struct Receipt {
    /// Where or under which id the transport took it.
    pub transport_id: String,
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
