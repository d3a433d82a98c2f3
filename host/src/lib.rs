//! Tidings: a WebAssembly plugin host for e-commerce notification rules.
//!
//! Order events come in; a sandboxed Wasm plugin chosen by the merchant
//! decides which notifications to send, when, with which template, and
//! whether a human must step in. This crate is the host: the plugin runtime
//! ([`decide`]), the local runner ([`runner`]) and the `tidings` CLI ([`cli`]).

pub mod bindings;
pub mod cli;
pub mod decide;
pub mod policy;
pub mod render;
pub mod runner;
pub mod store;
