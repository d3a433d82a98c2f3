//! Standard output and error through the contract's `log`, so that a plugin
//! imports nothing but the contract.
//!
//! Rust's standard library on `wasm32-wasip2` reaches WASI for three things
//! every plugin links, used or not: writing to stdout and stderr (`print!`,
//! and the panic message), reading an environment variable (the panic
//! handler asks for `RUST_BACKTRACE`) and exiting. Those pull in fifteen WASI
//! interfaces, which the host must link into each fresh instance; on the
//! sample rule that was about a third of instantiating it.
//!
//! With the `stdio-log` feature (on by default) the SDK provides these C
//! functions itself, and the standard library's calls end here instead of in
//! WASI:
//!
//! - `write` and `writev` to stdout or stderr send each complete line to the
//!   plugin log (stdout at info level, stderr at warn level, where the host
//!   also looks for a panic message); lines are cut at 4 KiB, the host's
//!   default log budget for a whole decision. Any other descriptor is an
//!   error: a plugin opens no files.
//! - `getenv` finds nothing: a plugin has no environment.
//! - `_Exit` traps: a plugin has no process to end.
//!
//! What is still open at the end of a call (a line without its newline) is
//! logged when `decide` or `describe` returns. A plugin that uses other WASI
//! interfaces (files, clocks, random) still imports those, and the host
//! still virtualises them. Turn the feature off to keep the standard
//! library's own stdio.

/// The longest line sent to the log in one piece.
pub const MAX_LINE: usize = 4 << 10;

/// Which stream a write was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: info lines.
    Stdout,
    /// Standard error: warn lines.
    Stderr,
}

/// Bytes written to one stream, cut into lines.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Take `bytes` and hand every line they complete to `line` (without its
    /// `\n` or `\r\n`); a line longer than [`MAX_LINE`] is handed over in
    /// pieces of that size.
    pub fn write(&mut self, bytes: &[u8], mut line: impl FnMut(&str)) {
        for &byte in bytes {
            if byte == b'\n' {
                self.emit(&mut line);
            } else {
                self.pending.push(byte);
                if self.pending.len() == MAX_LINE {
                    self.emit(&mut line);
                }
            }
        }
    }

    /// Hand over what is pending, if anything.
    pub fn flush(&mut self, mut line: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            self.emit(&mut line);
        }
    }

    fn emit(&mut self, line: &mut impl FnMut(&str)) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        line(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod guest {
    //! The C functions themselves. A plugin is single-threaded, so the
    //! mutex is never contended; it only makes the buffers a safe static.
    #![allow(unsafe_code)]

    use std::sync::{Mutex, MutexGuard};

    use super::{Lines, Stream};
    use crate::log::{self, Level};

    static STDOUT: Mutex<Lines> = Mutex::new(Lines {
        pending: Vec::new(),
    });
    static STDERR: Mutex<Lines> = Mutex::new(Lines {
        pending: Vec::new(),
    });

    fn lines(stream: Stream) -> MutexGuard<'static, Lines> {
        let lines = match stream {
            Stream::Stdout => &STDOUT,
            Stream::Stderr => &STDERR,
        };
        // A panic while logging leaves the buffer usable.
        lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn level(stream: Stream) -> Level {
        match stream {
            Stream::Stdout => Level::Info,
            Stream::Stderr => Level::Warn,
        }
    }

    fn stream(fd: i32) -> Option<Stream> {
        match fd {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }

    /// Log what is still pending on both streams.
    pub fn flush() {
        for stream in [Stream::Stdout, Stream::Stderr] {
            lines(stream).flush(|line| log::write(level(stream), line));
        }
    }

    /// `ssize_t write(int fd, const void *buf, size_t len)`.
    ///
    /// # Safety
    /// `buf` points to `len` readable bytes, as C's `write` requires.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn write(fd: i32, buf: *const u8, len: usize) -> isize {
        let Some(stream) = stream(fd) else {
            return -1;
        };
        if len == 0 {
            // `buf` may be null then, which a slice must never be.
            return 0;
        }
        // SAFETY: the caller passes `len` readable bytes at `buf`.
        let bytes = unsafe { std::slice::from_raw_parts(buf, len) };
        lines(stream).write(bytes, |line| log::write(level(stream), line));
        isize::try_from(len).unwrap_or(isize::MAX)
    }

    /// One buffer of `writev`: C's `struct iovec`.
    #[repr(C)]
    pub struct IoVec {
        base: *const u8,
        len: usize,
    }

    /// `ssize_t writev(int fd, const struct iovec *iov, int count)`.
    ///
    /// # Safety
    /// `iov` points to `count` buffers, each as `write` requires.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn writev(fd: i32, iov: *const IoVec, count: i32) -> isize {
        let count = usize::try_from(count).unwrap_or(0);
        let mut written = 0isize;
        for i in 0..count {
            // SAFETY: the caller passes `count` buffers at `iov`.
            let buffer = unsafe { &*iov.add(i) };
            // SAFETY: each buffer has `len` readable bytes at `base`.
            match unsafe { write(fd, buffer.base, buffer.len) } {
                -1 => return -1,
                n => written = written.saturating_add(n),
            }
        }
        written
    }

    /// `char *getenv(const char *name)`: a plugin has no environment.
    #[unsafe(no_mangle)]
    pub extern "C" fn getenv(_name: *const u8) -> *mut u8 {
        std::ptr::null_mut()
    }

    /// `void _Exit(int status)`: a plugin has no process to end, so this traps.
    #[unsafe(no_mangle)]
    pub extern "C" fn _Exit(_status: i32) -> ! {
        std::arch::wasm32::unreachable()
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub use guest::flush;

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> (Vec<String>, Vec<String>) {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.write(chunk, |l| out.push(l.to_owned()));
        }
        let mut rest = Vec::new();
        lines.flush(|l| rest.push(l.to_owned()));
        (out, rest)
    }

    #[test]
    fn writes_are_cut_into_lines_across_calls() {
        let (lines, rest) = lines_of(&[b"hel", b"lo\nwor", b"ld\r\n\nlast"]);
        assert_eq!(lines, ["hello", "world", ""]);
        assert_eq!(rest, ["last"]);
    }

    #[test]
    fn nothing_pending_flushes_nothing() {
        let (lines, rest) = lines_of(&[b"done\n"]);
        assert_eq!(lines, ["done"]);
        assert!(rest.is_empty());
    }

    #[test]
    fn long_lines_are_sent_in_pieces() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let (lines, rest) = lines_of(&[&long, b"\n"]);
        let sizes: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 10]);
        assert!(rest.is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let (lines, _) = lines_of(&[b"caf\xc3\n", b"ok\n"]);
        assert_eq!(lines, ["caf\u{fffd}", "ok"]);
    }
}
