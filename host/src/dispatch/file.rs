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
        // Written here, on the async worker, rather than handed to a
        // blocking thread: a few KiB into the page cache take ~25–35 µs of
        // kernel time, and the hand-off to a blocking thread and back cost
        // more than that in wake-ups (BENCHMARKS.md, 2026-12-07).
        write_atomically(&path, &bytes)?;
        Ok(Receipt {
            transport_id,
            provider_id: None,
        })
    }
}

/// Write `bytes` to `path` so that it appears whole or not at all, creating
/// the directory when it is not there (the first message, or someone
/// removed it meanwhile).
///
/// On Linux the file is written unnamed (`O_TMPFILE`) and then linked in
/// under its name: one directory entry made, against two made and one
/// removed for a temporary file renamed into place, which costs twice the
/// kernel time per message on ext4 (BENCHMARKS.md, 2026-12-07). Where that
/// is not possible (a file system without `O_TMPFILE`, no `/proc`, or a
/// message handed over twice whose file exists), a temporary file is
/// renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DispatchError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if write_unnamed(dir, path, bytes).is_ok() {
        return Ok(());
    }
    write_renamed(dir, path, bytes)
}

/// Write `bytes` into an unnamed file in `dir`, creating `dir` when it is
/// not there, then give the file the name `path`.
#[cfg(target_os = "linux")]
fn write_unnamed(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;

    use rustix::fs::{AtFlags, CWD, Mode, OFlags};

    let open = || {
        rustix::fs::open(
            dir,
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
    };
    let fd = match open() {
        Err(rustix::io::Errno::NOENT) => {
            std::fs::create_dir_all(dir)?;
            open()?
        }
        fd => fd?,
    };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    // The unnamed file is reached through its descriptor's link in /proc
    // (`AT_EMPTY_PATH` on the descriptor itself needs a capability). Only
    // the open is tried again after making the directory: without /proc
    // this fails, and the message is written once more, renamed.
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(CWD, proc_path.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn write_unnamed(_dir: &Path, _path: &Path, _bytes: &[u8]) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Write `bytes` to a temporary file beside `path`, then rename it over
/// `path`.
fn write_renamed(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), DispatchError> {
    let tmp = path.with_extension("tmp");
    let written = match std::fs::write(&tmp, bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dir(dir)?;
            std::fs::write(&tmp, bytes)
        }
        written => written,
    };
    written
        .map_err(|e| DispatchError::transient(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| DispatchError::transient(format!("cannot write {}: {e}", path.display())))
}

fn create_dir(dir: &Path) -> Result<(), DispatchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| DispatchError::transient(format!("cannot create {}: {e}", dir.display())))
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

    /// The file appears under its name only once it is whole; a name that
    /// is taken is not overwritten this way (the caller renames instead); a
    /// missing directory is made.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_unnamed_file_is_linked_in_whole_and_never_over_another() {
        let dir = std::env::temp_dir().join(crate::store::new_id("tidings-file-test"));
        std::fs::create_dir_all(&dir).expect("creatable");
        let path = dir.join("msg_1.eml");

        write_unnamed(&dir, &path, b"whole").expect("the temporary directory takes O_TMPFILE");
        assert_eq!(std::fs::read(&path).expect("linked in"), b"whole");
        let taken = write_unnamed(&dir, &path, b"again").expect_err("the name is taken");
        assert_eq!(taken.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("still there"), b"whole");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("listable")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["msg_1.eml"], "the unlinked second file is gone");

        // A missing directory is made, and only the open is tried again.
        let missing = dir.join("push").join("msg_2.json");
        write_unnamed(missing.parent().expect("a parent"), &missing, b"made")
            .expect("the directory is created");
        assert_eq!(std::fs::read(&missing).expect("linked in"), b"made");
        std::fs::remove_dir_all(&dir).expect("removable");
    }
}
