//! Sandbox limits: what a single decision may consume, and the machinery that
//! enforces the parts wasmtime does not enforce by itself (memory accounting,
//! the epoch ticker).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;

/// How often the epoch ticker advances the engine's epoch. The wall-clock
/// deadline is enforced with this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// What one decision may consume. Defaults follow DESIGN.md; operators can
/// set them per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wasm instructions (fuel) per decision.
    pub fuel: u64,
    /// Wall-clock time per decision, in milliseconds.
    pub wall_clock_ms: u64,
    /// Linear memory per memory, in bytes.
    pub memory_bytes: usize,
    /// Actions per decision.
    pub max_actions: usize,
    /// Size of the decision's actions as JSON, in bytes.
    pub max_output_bytes: usize,
    /// Plugin log (log calls, stdout, stderr) per decision, in bytes; longer
    /// logs are truncated, never failed.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000,
            wall_clock_ms: 50,
            memory_bytes: 16 << 20,
            max_actions: 32,
            max_output_bytes: 64 << 10,
            max_log_bytes: 4 << 10,
        }
    }
}

impl Limits {
    /// The wall-clock limit as a duration.
    pub fn wall_clock(&self) -> Duration {
        Duration::from_millis(self.wall_clock_ms)
    }

    /// Epoch ticks before the deadline trap fires: rounded up, plus one so a
    /// tick that lands just after the call starts does not shorten the budget.
    pub fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_millis().max(1) as u64;
        self.wall_clock_ms.div_ceil(tick) + 1
    }
}

/// The most fuel an operator may give one decision: about a second of guest
/// code, far past any sensible rule.
pub const MAX_FUEL: u64 = 1_000_000_000;
/// The longest wall-clock limit an operator may set, in milliseconds: a
/// decision holds a pooled instance and a worker thread for this long.
pub const MAX_WALL_CLOCK_MS: u64 = 1_000;
/// The most actions an operator may allow per decision.
pub const MAX_ACTIONS: usize = 1_000;
/// The largest decision output an operator may allow, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// The largest plugin log an operator may allow per decision, in bytes.
pub const MAX_LOG_BYTES: usize = 64 << 10;

/// A limit outside what the engine can enforce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct InvalidLimit {
    /// The offending field of [`Limits`], e.g. `fuel`.
    pub field: &'static str,
    /// What is wrong, with the allowed range.
    pub message: String,
}

impl Limits {
    /// Check every limit against what `engine` can enforce: each at least 1
    /// and at most its maximum (memory: the per-memory size the engine's
    /// instance pool reserves).
    pub fn validate(&self, engine: &EngineLimits) -> Result<(), InvalidLimit> {
        fn within<T: PartialOrd + std::fmt::Display + Copy>(
            field: &'static str,
            value: T,
            min: T,
            max: T,
        ) -> Result<(), InvalidLimit> {
            if value < min || value > max {
                return Err(InvalidLimit {
                    field,
                    message: format!("{value} is outside the allowed range {min}..={max}"),
                });
            }
            Ok(())
        }
        within("fuel", self.fuel, 1, MAX_FUEL)?;
        within("wall_clock_ms", self.wall_clock_ms, 1, MAX_WALL_CLOCK_MS)?;
        within(
            "memory_bytes",
            self.memory_bytes,
            1 << 16,
            engine.max_memory_bytes,
        )?;
        within("max_actions", self.max_actions, 1, MAX_ACTIONS)?;
        within(
            "max_output_bytes",
            self.max_output_bytes,
            1,
            MAX_OUTPUT_BYTES,
        )?;
        within("max_log_bytes", self.max_log_bytes, 0, MAX_LOG_BYTES)?;
        Ok(())
    }
}

/// Limits that hold for the whole process (they shape the engine), not per
/// tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Wasm stack per instance, in bytes.
    pub stack_bytes: usize,
    /// Largest component accepted, in bytes (checked at upload).
    pub component_bytes: usize,
    /// The largest memory any tenant may be allowed (sizes the pool slots).
    pub max_memory_bytes: usize,
    /// Decisions running at once across all tenants (sizes the instance pool).
    pub max_concurrent: usize,
    /// Decisions running at once for one tenant.
    pub max_concurrent_per_tenant: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            stack_bytes: 512 << 10,
            component_bytes: 2 << 20,
            max_memory_bytes: 16 << 20,
            max_concurrent: (cores * 4).max(8),
            max_concurrent_per_tenant: 4,
        }
    }
}

/// The guest tried to grow a memory past its limit. Carried as the trap's
/// error so the fault can be reported precisely.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the plugin asked for {desired} bytes, the limit is {limit} bytes")]
pub struct MemoryLimitExceeded {
    /// Bytes the guest asked for.
    pub desired: usize,
    /// The limit in force.
    pub limit: usize,
}

/// Per-store memory accounting: enforces the limit (trapping on a grow past
/// it) and records the peak for the report.
#[derive(Debug)]
pub struct MemoryMeter {
    limit: usize,
    peak: usize,
}

impl MemoryMeter {
    /// A meter that allows `limit` bytes per memory.
    pub fn new(limit: usize) -> Self {
        Self { limit, peak: 0 }
    }

    /// The largest memory size seen, in bytes.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl wasmtime::ResourceLimiter for MemoryMeter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.limit,
            }));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        4
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread,
/// so running guests hit their deadline. Stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Start ticking `engine`.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("tidings-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for EpochTicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochTicker").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_and_adds_a_tick() {
        let limits = Limits::default();
        assert_eq!(limits.deadline_ticks(), 51);
    }

    #[test]
    fn limits_are_validated_against_the_engine() {
        let engine = EngineLimits::default();
        assert_eq!(Limits::default().validate(&engine), Ok(()));
        let err = |change: fn(&mut Limits)| {
            let mut limits = Limits::default();
            change(&mut limits);
            limits.validate(&engine).expect_err("out of range").field
        };
        assert_eq!(err(|l| l.fuel = MAX_FUEL + 1), "fuel");
        assert_eq!(err(|l| l.fuel = 0), "fuel");
        assert_eq!(err(|l| l.wall_clock_ms = 60_000), "wall_clock_ms");
        assert_eq!(err(|l| l.memory_bytes = (16 << 20) + 1), "memory_bytes");
        assert_eq!(err(|l| l.max_actions = 0), "max_actions");
        assert_eq!(err(|l| l.max_output_bytes = 1 << 30), "max_output_bytes");
        assert_eq!(err(|l| l.max_log_bytes = 1 << 30), "max_log_bytes");
    }

    #[test]
    fn memory_meter_traps_past_the_limit_and_tracks_the_peak() {
        use wasmtime::ResourceLimiter;
        let mut meter = MemoryMeter::new(1 << 20);
        assert!(
            meter
                .memory_growing(0, 1 << 16, None)
                .expect("under the limit")
        );
        let err = meter
            .memory_growing(1 << 16, 2 << 20, None)
            .expect_err("past the limit");
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some());
        assert_eq!(meter.peak(), 1 << 16);
    }
}
