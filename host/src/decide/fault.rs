//! How a decision or a load fails: faults the host detects, kept apart from
//! the plugin's own `rule-error` (a [`super::Decision`] outcome).

use serde::Serialize;

use super::sandbox::LogLine;
use super::{PluginRef, Usage};
use crate::bindings::PLUGIN_INTERFACE;

/// A plugin failed in a way the host detected (never the plugin's own
/// `rule-error`, which is a [`Decision`] outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The guest trapped (panic, abort, unreachable, bad memory access...).
    #[error("trap: {message}")]
    Trap {
        /// What trapped, with the guest's panic message when there is one.
        message: String,
    },
    /// The guest overflowed its Wasm stack.
    #[error("stack overflow (limit {limit_bytes} bytes)")]
    StackOverflow {
        /// The stack limit.
        limit_bytes: usize,
    },
    /// The decision ran past its wall-clock limit.
    #[error("timeout: ran past the {limit_ms} ms wall-clock limit")]
    Timeout {
        /// The limit.
        limit_ms: u64,
    },
    /// The decision executed more instructions than its fuel.
    #[error("out of fuel: used all {limit} instructions")]
    OutOfFuel {
        /// The limit.
        limit: u64,
    },
    /// The guest grew its memory past the limit.
    #[error("memory limit: asked for {requested_bytes} bytes, the limit is {limit_bytes}")]
    MemoryLimit {
        /// What it asked for.
        requested_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// Too many actions, or actions too large.
    #[error("output too large: {what} is {actual}, the limit is {limit}")]
    OutputTooLarge {
        /// `actions` or `output bytes`.
        what: &'static str,
        /// What the plugin returned.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// The output is well-typed but unusable (e.g. an empty template name).
    #[error("invalid output: {message}")]
    InvalidOutput {
        /// What is wrong.
        message: String,
    },
    /// The component could not be instantiated.
    #[error("instantiation failed: {message}")]
    Instantiation {
        /// Why.
        message: String,
    },
}

/// A decision that failed with a fault, naming the plugin.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("plugin {plugin} failed: {fault}")]
pub struct DecideError {
    /// Which plugin.
    pub plugin: PluginRef,
    /// What went wrong.
    pub fault: Fault,
    /// What it consumed before failing.
    pub usage: Usage,
    /// What it logged before failing.
    pub log: Vec<LogLine>,
}

/// A component was rejected at load (upload) time.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Larger than the component size limit.
    #[error("component is {size} bytes, the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary (it does not start with the `\\0asm` magic)")]
    Malformed,
    /// A core module where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin with \
         `cargo build --target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// Failed validation or compilation.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// Does not export the plugin interface.
    #[error("the component does not export `{PLUGIN_INTERFACE}`; is it a Tidings plugin?")]
    NotAPlugin,
    /// Built against a contract version this host does not serve.
    #[error(
        "the plugin was built against tidings:notify@{found}, this host serves \
         tidings:notify@{supported} (rebuild it with a matching tidings-sdk)"
    )]
    UnsupportedContract {
        /// The plugin's contract version.
        found: String,
        /// The host's.
        supported: String,
    },
    /// Imports something the host does not provide.
    #[error("the component imports something the host does not provide: {0}")]
    Link(String),
    /// `describe()` faulted or returned something unusable.
    #[error("describe() failed: {0}")]
    Describe(Fault),
}

/// Errors setting up the runtime.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeError(pub(super) String);
