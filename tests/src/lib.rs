//! Shared pieces of the end-to-end tests: the guest components (built by
//! `build.rs`) and a [`TestHost`] builder around the plugin runtime.

use std::path::PathBuf;
use std::sync::Arc;

use tidings_host::decide::{
    DecideError, Decision, EngineLimits, Limits, Plugin, Runtime, RuntimeConfig,
};
use tidings_sdk::types::{Context, EventKind, OrderEvent};

pub mod fake;
pub mod service;

/// Paths of the guest components.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The bundled sample events, `tests/fixtures/events/`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("events")
}

/// The sample event of `kind`.
pub fn event(kind: EventKind) -> OrderEvent {
    tidings_sdk::testing::fixture(kind)
}

/// Builds a runtime for a test.
#[derive(Debug, Default)]
pub struct TestHost {
    config: RuntimeConfig,
}

impl TestHost {
    /// Production defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Change the process-wide limits.
    pub fn engine_limits(mut self, change: impl FnOnce(&mut EngineLimits)) -> Self {
        change(&mut self.config.engine_limits);
        self
    }

    /// Change the default per-decision limits.
    pub fn limits(mut self, change: impl FnOnce(&mut Limits)) -> Self {
        change(&mut self.config.default_limits);
        self
    }

    /// Persist compiled components in `dir`.
    pub fn cache_dir(mut self, dir: PathBuf) -> Self {
        self.config.cache_dir = Some(dir);
        self
    }

    /// Start the runtime.
    pub fn build(self) -> Host {
        Host {
            runtime: Arc::new(Runtime::new(self.config).expect("the runtime starts")),
        }
    }
}

/// A started runtime with helpers.
#[derive(Debug, Clone)]
pub struct Host {
    /// The runtime under test.
    pub runtime: Arc<Runtime>,
}

impl Host {
    /// Load a component from a guest path.
    pub fn load(&self, path: &str) -> Plugin {
        let bytes = std::fs::read(path).expect("guest components are built by build.rs");
        self.runtime.load(&bytes).expect("the guest loads")
    }

    /// Decide on `event` with `config`, under the runtime's default limits.
    pub fn decide(
        &self,
        plugin: &Plugin,
        event: &OrderEvent,
        config: serde_json::Value,
    ) -> Result<Decision, DecideError> {
        let limits = self.runtime.default_limits().clone();
        self.decide_with(plugin, event, config, &limits)
    }

    /// Decide on `event` with `config` under `limits`.
    pub fn decide_with(
        &self,
        plugin: &Plugin,
        event: &OrderEvent,
        config: serde_json::Value,
        limits: &Limits,
    ) -> Result<Decision, DecideError> {
        let mut ctx = Context::new("test-shop", event.occurred_at);
        ctx.config = config;
        self.runtime.evaluate(plugin, event, &ctx, limits)
    }
}
