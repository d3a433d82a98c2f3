//! Tidings: a WebAssembly plugin host for e-commerce notification rules.
//!
//! Order events come in; a sandboxed Wasm plugin chosen by the merchant
//! decides which notifications to send, when, with which template, and
//! whether a human must step in; the host enforces policy, schedules, renders,
//! dispatches and records everything.
//!
//! ```text
//! ingest ─► decide (Wasm) ─► policy ─► schedule ─► render ─► dispatch
//! ```
//!
//! One module per stage; only [`pipeline`] knows their order.

pub mod bindings;
pub mod cli;
pub mod decide;
pub mod demo;
pub mod dispatch;
pub mod escalation;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod render;
pub mod runner;
pub mod schedule;
pub mod serve;
pub mod settings;
pub mod store;
