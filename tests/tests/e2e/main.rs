//! End-to-end tests: real components under the real runtime, and the CLI as a
//! process.

mod hostile;
mod humans;
mod plugins;
mod runner;
mod service;
mod webhooks;
