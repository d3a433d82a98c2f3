//! The per-decision sandbox: a virtual WASI for what Rust's std pulls in, and
//! the plugin log.
//!
//! Plugins are pure. The clock reads the decision's `now`, randomness is
//! seeded from the event id, stdout and stderr go to the plugin log, and
//! everything else is denied: no preopened directories, no environment or
//! arguments, no sockets or name lookups, and asking for a timer (sleep) traps.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::limits::MemoryMeter;
use crate::bindings::{self, LogLevel};

/// What lives in a decision's `Store`.
pub struct SandboxState {
    /// Built on the guest's first WASI call: most decisions make none, and
    /// building a context (boxed clocks, random sources, streams) is a
    /// measurable part of a decision.
    wasi: Option<WasiCtx>,
    virtual_wasi: VirtualWasi,
    table: ResourceTable,
    pub(super) memory: MemoryMeter,
    pub(super) log: PluginLog,
}

/// What the virtual WASI of one decision is made of.
struct VirtualWasi {
    now_ms: i64,
    seed: String,
}

impl SandboxState {
    /// A fresh sandbox for one decision: the clock reads `now_ms`, randomness
    /// is derived from `seed`, memory is limited to `memory_bytes` and the log
    /// to `log_bytes`.
    pub fn new(now_ms: i64, seed: &str, memory_bytes: usize, log_bytes: usize) -> Self {
        Self {
            wasi: None,
            virtual_wasi: VirtualWasi {
                now_ms,
                seed: seed.to_owned(),
            },
            table: ResourceTable::new(),
            memory: MemoryMeter::new(memory_bytes),
            log: PluginLog::new(log_bytes),
        }
    }
}

impl VirtualWasi {
    fn build(&self, log: &PluginLog) -> WasiCtx {
        let digest: [u8; 32] = Sha256::digest(self.seed.as_bytes()).into();
        let mut insecure_seed = [0u8; 16];
        insecure_seed.copy_from_slice(&digest[..16]);
        let mut wasi = WasiCtxBuilder::new();
        wasi.wall_clock(FixedWallClock(self.now_ms))
            .secure_random(wasmtime_wasi::Deterministic::new(digest.to_vec()))
            .insecure_random(wasmtime_wasi::Deterministic::new(
                digest.iter().rev().copied().collect(),
            ))
            .insecure_random_seed(u128::from_le_bytes(insecure_seed))
            .max_random_size(64 << 10)
            .stdout(LogStream {
                log: log.clone(),
                source: Source::Stdout,
            })
            .stderr(LogStream {
                log: log.clone(),
                source: Source::Stderr,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        wasi.build()
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let Self {
            wasi,
            virtual_wasi,
            table,
            log,
            ..
        } = self;
        WasiCtxView {
            ctx: wasi.get_or_insert_with(|| virtual_wasi.build(log)),
            table,
        }
    }
}

impl bindings::tidings::notify::host::Host for SandboxState {
    fn log(&mut self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        self.log.log(level, &message);
    }
}

impl bindings::tidings::notify::types::Host for SandboxState {}

/// Add everything a plugin may import to `linker`: the contract's `host`
/// interface and the virtual WASI.
pub fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    bindings::Rule::add_to_linker::<_, wasmtime::component::HasSelf<SandboxState>>(linker, |s| s)?;
    deny_blocking(linker)
}

/// A pure plugin has nothing to wait for. Sleeping would hold a worker thread
/// beyond the deadline (epoch interruption only fires in guest code), so the
/// monotonic clock reads zero and asking it for a timer traps.
fn deny_blocking(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    type DynPollable = wasmtime_wasi::p2::DynPollable;
    linker.allow_shadowing(true);
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap("now", |_, (): ()| Ok((0u64,)))?;
    clock.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
    for timer in ["subscribe-instant", "subscribe-duration"] {
        clock.func_wrap(
            timer,
            |_, (_when,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
                Err(wasmtime::Error::msg(BLOCKING_DENIED))
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The trap message when a plugin tries to sleep or set a timer.
pub const BLOCKING_DENIED: &str = "plugins may not sleep or wait: decisions are pure and bounded";

struct FixedWallClock(i64);

impl wasmtime_wasi::HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
    }
}

/// Where a plugin log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The contract's `log` import.
    Log,
    /// The guest's standard output.
    Stdout,
    /// The guest's standard error (panic messages land here).
    Stderr,
}

/// One line of the plugin log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// Where it came from.
    pub source: Source,
    /// The text.
    pub message: String,
}

/// The decision's log, bounded in bytes: past the budget lines are dropped
/// and counted, never failed.
#[derive(Clone, Default)]
pub struct PluginLog(Arc<Mutex<LogBuffer>>);

#[derive(Default)]
struct LogBuffer {
    budget: usize,
    used: usize,
    lines: Vec<LogLine>,
    truncated_bytes: usize,
    /// The tail of stderr and of warn and error lines from `log` (where the
    /// SDK sends a plugin's stderr), kept apart so a panic message survives
    /// a flooded log.
    stderr_tail: String,
    /// Partial lines from stdout/stderr, waiting for their newline.
    pending: [String; 2],
}

const STDERR_TAIL: usize = 1024;

impl PluginLog {
    fn new(budget: usize) -> Self {
        Self(Arc::new(Mutex::new(LogBuffer {
            budget,
            ..LogBuffer::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, LogBuffer> {
        // A poisoned log only means a panic elsewhere mid-push; the text is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A line from the contract's `log` import. Plugins built with the SDK
    /// send their standard error here, one line at a time at warn level, so
    /// warn and error lines are also kept where a panic message is looked for.
    fn log(&self, level: &'static str, message: &str) {
        let mut buf = self.lock();
        if matches!(level, "warn" | "error") {
            buf.keep_tail(message);
            buf.keep_tail("\n");
        }
        buf.push(level, Source::Log, message);
    }

    fn write(&self, source: Source, bytes: &[u8]) {
        let mut buf = self.lock();
        let text = String::from_utf8_lossy(bytes);
        if source == Source::Stderr {
            buf.keep_tail(&text);
        }
        let slot = usize::from(source == Source::Stderr);
        buf.pending[slot].push_str(&text);
        while let Some(end) = buf.pending[slot].find('\n') {
            let line: String = buf.pending[slot].drain(..=end).collect();
            buf.push_stream_line(source, line.trim_end_matches(['\n', '\r']));
        }
    }

    /// The lines kept, and how many bytes were dropped past the budget.
    pub fn finish(&self) -> (Vec<LogLine>, usize) {
        let mut buf = self.lock();
        for (slot, source) in [(0, Source::Stdout), (1, Source::Stderr)] {
            let rest = std::mem::take(&mut buf.pending[slot]);
            if !rest.is_empty() {
                buf.push_stream_line(source, &rest);
            }
        }
        (std::mem::take(&mut buf.lines), buf.truncated_bytes)
    }

    /// The guest's panic message, if its stderr holds one.
    pub fn panic_message(&self) -> Option<String> {
        let buf = self.lock();
        let at = buf.stderr_tail.find("panicked at ")?;
        let text = buf.stderr_tail[at..].trim_end();
        Some(text.replace('\n', " "))
    }
}

impl LogBuffer {
    /// Append to the stderr tail, dropping its start past [`STDERR_TAIL`].
    fn keep_tail(&mut self, text: &str) {
        self.stderr_tail.push_str(text);
        if self.stderr_tail.len() > STDERR_TAIL {
            let mut cut = self.stderr_tail.len() - STDERR_TAIL;
            while !self.stderr_tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.stderr_tail.drain(..cut);
        }
    }

    fn push(&mut self, level: &'static str, source: Source, message: &str) {
        let remaining = self.budget.saturating_sub(self.used);
        if remaining == 0 {
            self.truncated_bytes += message.len();
            return;
        }
        let mut keep = message.len().min(remaining);
        while !message.is_char_boundary(keep) {
            keep -= 1;
        }
        self.truncated_bytes += message.len() - keep;
        self.used += keep.max(1);
        self.lines.push(LogLine {
            level,
            source,
            message: message[..keep].to_owned(),
        });
    }

    fn push_stream_line(&mut self, source: Source, line: &str) {
        let level = if source == Source::Stderr {
            "warn"
        } else {
            "info"
        };
        self.push(level, source, line);
    }
}

/// stdout or stderr of a guest, feeding the plugin log.
#[derive(Clone)]
struct LogStream {
    log: PluginLog,
    source: Source,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.write(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable: the log truncates rather than pushing back.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.write(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_truncated_at_the_budget_not_failed() {
        let log = PluginLog::new(10);
        log.log("info", "0123456789abcdef");
        log.log("info", "more");
        let (lines, dropped) = log.finish();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].message, "0123456789");
        assert_eq!(dropped, 10);
    }

    #[test]
    fn stream_output_is_split_into_lines_and_panics_are_found() {
        let log = PluginLog::new(4096);
        log.write(Source::Stdout, b"hello\nwor");
        log.write(Source::Stdout, b"ld\n");
        log.write(
            Source::Stderr,
            b"\nthread 'main' panicked at src/lib.rs:1:1:\nboom\n",
        );
        let panic = log.panic_message().expect("a panic on stderr");
        assert_eq!(panic, "panicked at src/lib.rs:1:1: boom");
        let (lines, _) = log.finish();
        let stdout: Vec<_> = lines
            .iter()
            .filter(|l| l.source == Source::Stdout)
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(stdout, ["hello", "world"]);
    }

    #[test]
    fn a_panic_logged_through_the_contract_is_found() {
        // How a plugin built with the SDK reports a panic: its stderr, line
        // by line, as warn lines of the `log` import.
        let log = PluginLog::new(4096);
        log.log("info", "thinking");
        log.log("warn", "");
        log.log("warn", "thread '<unnamed>' panicked at src/lib.rs:1:1:");
        log.log("warn", "boom");
        let panic = log.panic_message().expect("a panic in the log");
        assert_eq!(panic, "panicked at src/lib.rs:1:1: boom");
    }

    #[test]
    fn info_lines_are_not_searched_for_panics() {
        let log = PluginLog::new(4096);
        log.log("info", "the customer panicked at checkout");
        assert_eq!(log.panic_message(), None);
    }
}
