//! The file transport: the embedded default. Email becomes one RFC 5322
//! `.eml` file per message (built with lettre), other channels one JSON file
//! each. Files are named by message id and written atomically, so a message
//! handed over twice is still one file.

use std::path::{Path, PathBuf};

use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use tidings_sdk::types::{Category, Channel};

use super::{DispatchError, Outbound, Receipt, SendFuture, Transport};

/// Writes messages under a directory.
#[derive(Debug, Clone)]
pub struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    /// Write into `dir` (created when the first message is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn write(&self, message: &Outbound<'_>) -> Result<Receipt, DispatchError> {
        let (path, bytes) = match message.channel {
            Channel::Email => (
                self.dir.join(format!("{}.eml", message.id)),
                email(message)?,
            ),
            other => {
                let name = serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned));
                let dir = self.dir.join(name.unwrap_or_else(|| "other".into()));
                (dir.join(format!("{}.json", message.id)), json(message))
            }
        };
        let dir = path.parent().unwrap_or(&self.dir).to_owned();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            DispatchError::transient(format!("cannot create {}: {e}", dir.display()))
        })?;
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, &bytes).await.map_err(|e| {
            DispatchError::transient(format!("cannot write {}: {e}", tmp.display()))
        })?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| {
            DispatchError::transient(format!("cannot write {}: {e}", path.display()))
        })?;
        Ok(Receipt {
            transport_id: path.display().to_string(),
        })
    }
}

impl Transport for FileTransport {
    fn send<'a>(&'a self, message: &'a Outbound<'a>) -> SendFuture<'a> {
        Box::pin(self.write(message))
    }
}

/// The email as RFC 5322 bytes: multipart text + HTML when there is HTML.
pub fn email(message: &Outbound<'_>) -> Result<Vec<u8>, DispatchError> {
    let mailbox = |what: &str, value: &str| -> Result<Mailbox, DispatchError> {
        value
            .parse()
            .map_err(|e| DispatchError::permanent(format!("invalid {what} address `{value}`: {e}")))
    };
    let to = message
        .to
        .ok_or_else(|| DispatchError::permanent("the customer has no email address"))?;
    let rendered = message.rendered;
    let mut builder = lettre::Message::builder()
        .from(mailbox("From", message.from)?)
        .reply_to(mailbox("Reply-To", message.reply_to)?)
        .to(mailbox("To", to)?)
        .subject(rendered.subject.clone().unwrap_or_default())
        .message_id(Some(format!("<{}@tidings>", message.id)));
    if message.category == Category::Marketing {
        builder = builder.header(ListUnsubscribe(format!(
            "<mailto:{}?subject=unsubscribe>",
            message.reply_to
        )));
    }
    let text = SinglePart::builder()
        .header(header::ContentType::TEXT_PLAIN)
        .body(rendered.text.clone());
    let email = match &rendered.html {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(header::ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    }
    .map_err(|e| DispatchError::permanent(format!("cannot build the email: {e}")))?;
    Ok(email.formatted())
}

fn json(message: &Outbound<'_>) -> Vec<u8> {
    let body = serde_json::json!({
        "id": message.id,
        "tenant_id": message.tenant_id,
        "channel": message.channel,
        "to": message.to,
        "customer_id": message.customer_id,
        "template": message.rendered.template,
        "locale": message.rendered.locale,
        "text": message.rendered.text,
    });
    serde_json::to_vec_pretty(&body).expect("JSON values serialise")
}

/// The `List-Unsubscribe` header (RFC 2369) for marketing email.
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl header::Header for ListUnsubscribe {
    fn name() -> header::HeaderName {
        header::HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> header::HeaderValue {
        header::HeaderValue::new(Self::name(), self.0.clone())
    }
}
