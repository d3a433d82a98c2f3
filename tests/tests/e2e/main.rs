//! End-to-end tests: real components under the real runtime, and the CLI as a
//! process.

mod channels;
mod delivery;
mod hostile;
mod humans;
mod logs;
mod plugins;
mod policy;
mod providers;
mod runner;
mod service;
mod smtp;
mod webhooks;
mod workers;
