//! The file transport: the embedded default. Email becomes one RFC 5322
//! `.eml` file per message (built with lettre), other channels one JSON file
//! each. Files are named by message id and written atomically, so a message
//! handed over twice is still one file.

use std::path::{Path, PathBuf};

use tidings_sdk::types::Channel;

use super::email::build_email;
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
        let transport_id = path.display().to_string();
        // One hand-off to a blocking thread for the file operations.
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| DispatchError::transient(format!("the file writer failed: {e}")))??;
        Ok(Receipt {
            transport_id,
            provider_id: None,
        })
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, creating
/// the directory when it is not there (the first message, or someone removed
/// it meanwhile).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DispatchError> {
    let tmp = path.with_extension("tmp");
    let written = match std::fs::write(&tmp, bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(|e| {
                DispatchError::transient(format!("cannot create {}: {e}", dir.display()))
            })?;
            std::fs::write(&tmp, bytes)
        }
        written => written,
    };
    written
        .map_err(|e| DispatchError::transient(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| DispatchError::transient(format!("cannot write {}: {e}", path.display())))
}

impl Transport for FileTransport {
    fn send<'a>(&'a self, message: &'a Outbound<'a>) -> SendFuture<'a> {
        Box::pin(self.write(message))
    }
}

/// The email as RFC 5322 bytes: multipart text + HTML when there is HTML,
/// DKIM-signed when the message carries a key (see [`build_email`]).
pub fn email(message: &Outbound<'_>) -> Result<Vec<u8>, DispatchError> {
    Ok(build_email(message)?.formatted())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_create_the_directory_and_replace_a_message_handed_over_twice() {
        let root = std::env::temp_dir().join(crate::store::new_id("tidings-file-test"));
        let path = root.join("sms").join("msg_1.json");

        write_atomically(&path, b"first").expect("the directory is created");
        write_atomically(&path, b"again").expect("a second hand-over replaces the file");
        assert_eq!(std::fs::read(&path).expect("written"), b"again");

        // Removed while the service runs: created again.
        std::fs::remove_dir_all(&root).expect("removable");
        write_atomically(&path, b"later").expect("the directory is created again");
        assert_eq!(std::fs::read(&path).expect("written"), b"later");
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("a parent"))
            .expect("listable")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["msg_1.json"], "no temporary file is left");
        std::fs::remove_dir_all(&root).expect("removable");
    }
}
