//! The `decide` stage: run a tenant's plugin on one order event, in a fresh
//! sandbox, under limits.
//!
//! In: a loaded [`Plugin`], the event, the [`Context`] and the tenant's
//! [`Limits`]. Out: a [`Decision`] (the plugin's actions or its own
//! `rule-error`, plus what it consumed and logged). Fails with a
//! [`DecideError`] naming the plugin and the [`Fault`]: a trap, a timeout,
//! running out of fuel, a memory limit, output too large or invalid, an
//! instantiation error. Loading a component fails with a [`LoadError`]
//! (malformed, a core module, too large, another contract version).
//!
//! One [`Runtime`] per process holds the engine (pooling allocator, fuel,
//! epoch interruption), the linker, the compiled-component cache and the
//! admission semaphores. Each decision gets its own `Store`.

mod arena;
pub mod cache;
mod fault;
pub mod limits;
mod lower;
pub mod sandbox;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tidings_sdk::action::{Action, RuleError};
use tidings_sdk::types::{Context, OrderEvent, PluginInfo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, ComponentExportIndex, Instance, InstancePre, Linker, TypedFunc,
};
use wasmtime::{Engine, Store, Trap};

use crate::bindings::{CONTRACT_VERSION, PLUGIN_INTERFACE, RulePre, convert::Conv, types as wit};
use cache::{ArtifactCache, Compiled};
pub use fault::{DecideError, Fault, LoadError, RuntimeError};
pub use limits::{EngineLimits, InvalidLimit, Limits};
use limits::{EpochTicker, MemoryLimitExceeded};
use sandbox::SandboxState;
pub use sandbox::{LogLine, Source};

/// Dirty pages of a pooled memory or table reset in place (and kept mapped)
/// when a decision ends; past this the rest is decommitted. A typical rule
/// dirties a few dozen pages.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// A plugin as the host names it in faults and audit: name and version from
/// `describe()`, and the component's sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginRef {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
}

impl std::fmt::Display for PluginRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// A validated, compiled, pre-instantiated plugin. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    id: PluginRef,
    info: PluginInfo,
    size: usize,
    contract: semver::Version,
    imports: Vec<String>,
    pre: RulePre<SandboxState>,
    /// The `decide` export, found and type-checked once, at load.
    decide: ComponentExportIndex,
    /// It declares the SDK's bump allocator: `decide`'s strings and lists go
    /// into one allocation ([`arena`]).
    bump_alloc: bool,
}

/// The contract's `decide`: `func(event, context) -> result<list<action>, rule-error>`,
/// its arguments borrowed from the SDK's types.
type DecideFn<'a> = TypedFunc<
    (lower::OrderEvent<'a>, lower::Context<'a>),
    (Result<Vec<wit::Action>, wit::RuleError>,),
>;

impl PluginInner {
    /// `decide` of `instance`, an instance of this plugin's component.
    #[allow(unsafe_code)]
    fn decide_func<'a>(
        &self,
        store: &mut Store<SandboxState>,
        instance: &Instance,
    ) -> Result<DecideFn<'a>, Fault> {
        let func =
            instance
                .get_func(&mut *store, self.decide)
                .ok_or_else(|| Fault::Instantiation {
                    message: "the instance lacks the `decide` export".into(),
                })?;
        // SAFETY: `self.decide` is the `decide` export of the component
        // behind `self.pre`; `decide_export` type-checked it against exactly
        // `DecideFn`'s parameters and results when the plugin was loaded, and
        // every instance of a component has its component's export types.
        // (The generated `RulePre::instantiate` would check it again on every
        // instantiation, a walk of the whole event type each decision.)
        Ok(unsafe { DecideFn::new_unchecked(func) })
    }
}

/// Find the `decide` export of the plugin interface (version `contract`) and
/// check its type against [`DecideFn`].
fn decide_export(
    pre: &InstancePre<SandboxState>,
    contract: &semver::Version,
) -> Result<ComponentExportIndex, LoadError> {
    let component = pre.component();
    let interface = component
        .get_export_index(None, format!("{PLUGIN_INTERFACE}@{contract}"))
        .ok_or(LoadError::NotAPlugin)?;
    let Some((ComponentItem::ComponentFunc(func), index)) =
        component.get_export(Some(&interface), "decide")
    else {
        return Err(LoadError::Invalid(
            "the plugin interface has no `decide` function".into(),
        ));
    };
    func.typecheck::<
        (lower::OrderEvent<'_>, lower::Context<'_>),
        (Result<Vec<wit::Action>, wit::RuleError>,),
    >(&pre.instance_type())
    .map_err(|e| LoadError::Invalid(format!("type-checking `decide`: {e:#}")))?;
    Ok(index)
}

impl Plugin {
    /// Name, version and hash.
    pub fn id(&self) -> &PluginRef {
        &self.inner.id
    }

    /// What `describe()` returned.
    pub fn info(&self) -> &PluginInfo {
        &self.inner.info
    }

    /// Component size in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The contract version the plugin was built against.
    pub fn contract_version(&self) -> &semver::Version {
        &self.inner.contract
    }

    /// The interfaces the component imports, e.g. `tidings:notify/host@0.1.0`
    /// and any WASI it uses (which the host virtualises). A plugin built
    /// with the SDK's defaults and no WASI of its own imports only the
    /// contract, and each of its fresh instances is cheaper to link.
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// Whether the component declares the SDK's bump allocator, so that the
    /// strings and lists of `decide`'s arguments are copied into one
    /// allocation in the guest instead of one each (the SDK's default; see
    /// `tidings_sdk::alloc`).
    pub fn bump_alloc(&self) -> bool {
        self.inner.bump_alloc
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// What a decision consumed, measured against the limits in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Wasm instructions executed (fuel consumed).
    pub fuel: u64,
    /// Largest linear memory reached, in bytes.
    pub peak_memory_bytes: usize,
    /// Wall time from store creation to result, in microseconds.
    pub wall_time_us: u64,
    /// The actions as JSON, in bytes (0 when the plugin did not return actions).
    pub output_bytes: usize,
}

/// The outcome of running a plugin on one event.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Which plugin decided.
    pub plugin: PluginRef,
    /// The plugin's actions, or its own `rule-error`.
    pub outcome: Result<Vec<Action>, RuleError>,
    /// What it consumed.
    pub usage: Usage,
    /// What it logged (bounded).
    pub log: Vec<LogLine>,
    /// Log bytes dropped past the limit.
    pub log_truncated_bytes: usize,
}

/// The plugin runtime: one per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<SandboxState>,
    engine_limits: EngineLimits,
    default_limits: Limits,
    cache: ArtifactCache,
    global: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    load_lock: Mutex<()>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("engine_limits", &self.engine_limits)
            .field("default_limits", &self.default_limits)
            .finish_non_exhaustive()
    }
}

/// How to build a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Process-wide limits.
    pub engine_limits: EngineLimits,
    /// Per-decision limits for tenants without their own.
    pub default_limits: Limits,
    /// Directory for precompiled components (none: memory only).
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Runtime {
    /// Build the engine, linker, cache and ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine_limits = config.engine_limits;
        // One slot beyond the admitted decisions for `describe()` at load time,
        // which is serialised by `load_lock`: the pool can never run dry.
        let slots =
            u32::try_from(engine_limits.max_concurrent.saturating_add(1)).unwrap_or(u32::MAX);
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(8))
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            // Our limiter traps before the pool's own cap is reached, so a
            // memory hog gets a precise fault rather than a failed grow.
            .max_memory_size(engine_limits.max_memory_bytes.saturating_mul(2))
            .max_unused_warm_slots(slots);
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
            // Reset a freed slot by copying back only the pages the guest
            // dirtied (found with the PAGEMAP_SCAN ioctl, Linux 6.7+) and keep
            // them mapped, instead of `madvise`-ing them away: no TLB
            // shootdown on release and no page faults in the next decision.
            // Without the ioctl, keep-resident would `memset` the low
            // addresses of every memory, where a Rust guest has the unused
            // bottom of its stack, so it is left off.
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES);
        }

        let mut wasm = wasmtime::Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(engine_limits.stack_bytes)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut linker).map_err(|e| RuntimeError(format!("{e:#}")))?;
        let cache = ArtifactCache::new(&engine, config.cache_dir)
            .map_err(|e| RuntimeError(e.to_string()))?;
        let ticker = EpochTicker::start(&engine).map_err(|e| RuntimeError(e.to_string()))?;
        Ok(Self {
            global: Arc::new(Semaphore::new(engine_limits.max_concurrent)),
            engine,
            linker,
            engine_limits,
            default_limits: config.default_limits,
            cache,
            tenants: Mutex::new(HashMap::new()),
            load_lock: Mutex::new(()),
            _ticker: ticker,
        })
    }

    /// The limits decisions get unless a tenant has its own.
    pub fn default_limits(&self) -> &Limits {
        &self.default_limits
    }

    /// The process-wide limits.
    pub fn engine_limits(&self) -> &EngineLimits {
        &self.engine_limits
    }

    /// Validate, compile (or fetch from the cache), link and describe a
    /// component.
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let limit = self.engine_limits.component_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            Some([0, b'a', b's', b'm', _, _, 0, 0]) => return Err(LoadError::CoreModule),
            _ => return Err(LoadError::Malformed),
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let compiled = self.cache.get_or_compile(&sha256, bytes)?;
        self.link(compiled, sha256, bytes.len(), None)
    }

    /// Load a stored plugin from the compiled-component cache (memory or
    /// `cache_dir`) by the sha256 and size recorded when it was uploaded,
    /// without reading or hashing its bytes; `None` when it has not been
    /// compiled there (then [`Runtime::load`] its bytes). `described` is what
    /// its `describe()` returned then: given, the plugin is not instantiated
    /// to be asked again.
    pub fn load_compiled(
        &self,
        sha256: &str,
        size: usize,
        described: Option<PluginInfo>,
    ) -> Result<Option<Plugin>, LoadError> {
        let limit = self.engine_limits.component_bytes;
        if size > limit {
            return Err(LoadError::TooLarge { size, limit });
        }
        match self.cache.get(sha256) {
            Some(compiled) => self
                .link(compiled, sha256.to_owned(), size, described)
                .map(Some),
            None => Ok(None),
        }
    }

    /// Check `component`'s contract, link it and ask it to describe itself
    /// (unless it was `described` before).
    fn link(
        &self,
        Compiled {
            component,
            bump_alloc,
        }: Compiled,
        sha256: String,
        size: usize,
        described: Option<PluginInfo>,
    ) -> Result<Plugin, LoadError> {
        let contract = self.contract_version(&component)?;
        let imports = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let decide = decide_export(&instance_pre, &contract)?;
        let pre = RulePre::new(instance_pre).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;

        let info = match described {
            Some(info) => info,
            None => {
                let placeholder = PluginRef {
                    name: "(unnamed)".into(),
                    version: "0.0.0".into(),
                    sha256: sha256.clone(),
                };
                self.describe(&pre, &placeholder)?
            }
        };
        let id = PluginRef {
            name: info.name.clone(),
            version: info.version.clone(),
            sha256,
        };
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                id,
                info,
                size,
                contract,
                imports,
                pre,
                decide,
                bump_alloc,
            }),
        })
    }

    /// The contract version of the plugin interface `component` exports,
    /// checked against ours: same major (same minor for 0.x), not newer.
    fn contract_version(&self, component: &Component) -> Result<semver::Version, LoadError> {
        let ty = component.component_type();
        let exported = ty
            .exports(&self.engine)
            .filter_map(|(name, _)| {
                name.strip_prefix(PLUGIN_INTERFACE)?
                    .strip_prefix('@')
                    .map(str::to_owned)
            })
            .next()
            .ok_or(LoadError::NotAPlugin)?;
        let found = semver::Version::parse(&exported).map_err(|_| LoadError::NotAPlugin)?;
        let ours =
            semver::Version::parse(CONTRACT_VERSION).expect("CONTRACT_VERSION is valid semver");
        let compatible = found.major == ours.major
            && (ours.major != 0 || found.minor == ours.minor)
            && found <= ours;
        if !compatible {
            return Err(LoadError::UnsupportedContract {
                found: found.to_string(),
                supported: ours.to_string(),
            });
        }
        Ok(found)
    }

    fn describe(
        &self,
        pre: &RulePre<SandboxState>,
        id: &PluginRef,
    ) -> Result<PluginInfo, LoadError> {
        let limits = &self.default_limits;
        let _one_at_a_time = self.load_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut run = self.sandbox(limits, 0, "describe");
        let result = (|| {
            let rule = pre
                .instantiate(&mut run.store)
                .map_err(|e| instantiation_fault(&e))?;
            rule.tidings_notify_plugin()
                .call_describe(&mut run.store)
                .map_err(|e| classify(&e, &run.store, limits, &self.engine_limits))
        })();
        let info: PluginInfo = result.map_err(LoadError::Describe)?.conv();
        let invalid = |message: String| LoadError::Describe(Fault::InvalidOutput { message });
        if info.name.trim().is_empty() {
            return Err(invalid("plugin name is empty".into()));
        }
        semver::Version::parse(&info.version).map_err(|e| {
            invalid(format!(
                "plugin version `{}` is not semver: {e}",
                info.version
            ))
        })?;
        serde_json::from_str::<serde_json::Value>(&info.config_schema)
            .map_err(|e| invalid(format!("config schema of {id} is not JSON: {e}")))?;
        Ok(info)
    }

    fn sandbox(&self, limits: &Limits, now_ms: i64, seed: &str) -> Run {
        // The instance pool reserves only so much per memory; a larger limit
        // (settings are validated, but a CLI flag or an old row may not be)
        // would let a grow fail inside the pool instead of trapping precisely.
        let memory_bytes = limits.memory_bytes.min(self.engine_limits.max_memory_bytes);
        let state = SandboxState::new(now_ms, seed, memory_bytes, limits.max_log_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        store
            .set_fuel(limits.fuel)
            .expect("fuel is enabled in the engine config");
        store.set_epoch_deadline(limits.deadline_ticks());
        store.epoch_deadline_trap();
        Run {
            store,
            started: Instant::now(),
        }
    }

    /// Run `plugin` on `event` synchronously on this thread, in a fresh
    /// sandbox, under `limits`. No admission control: see [`Runtime::decide`].
    pub fn evaluate(
        &self,
        plugin: &Plugin,
        event: &OrderEvent,
        ctx: &Context,
        limits: &Limits,
    ) -> Result<Decision, DecideError> {
        let mut run = self.sandbox(limits, ctx.now.as_millisecond(), &event.id);
        let arena = arena::Arena::new(plugin.inner.bump_alloc);
        let config = ctx.config.to_string();
        let args = (
            lower::OrderEvent::new(event, &arena),
            lower::Context::new(ctx, &config, &arena),
        );

        let called = (|| {
            let instance = plugin
                .inner
                .pre
                .instance_pre()
                .instantiate(&mut run.store)
                .map_err(|e| instantiation_fault(&e))?;
            let decide = plugin.inner.decide_func(&mut run.store, &instance)?;
            decide
                .call(&mut run.store, args)
                .map(|(result,)| result)
                .map_err(|e| classify(&e, &run.store, limits, &self.engine_limits))
        })();

        let mut usage = run.usage(limits);
        let outcome = called.and_then(|result| match result {
            Ok(actions) => {
                let actions: Vec<Action> = actions.conv();
                usage.output_bytes = check_output(&actions, limits)?;
                Ok(Ok(actions))
            }
            Err(rule_error) => Ok(Err(rule_error.conv())),
        });
        let (log, log_truncated_bytes) = run.store.data().log.finish();
        match outcome {
            Ok(outcome) => Ok(Decision {
                plugin: plugin.id().clone(),
                outcome,
                usage,
                log,
                log_truncated_bytes,
            }),
            Err(fault) => Err(DecideError {
                plugin: plugin.id().clone(),
                fault,
                usage,
                log,
            }),
        }
    }

    /// Run a decision with admission control: waits for a slot for `tenant`
    /// and a global slot (backpressure, never a pool-exhaustion error), then
    /// evaluates. On a multi-threaded tokio runtime (the service) the
    /// decision runs on the calling worker, which tokio first hands its
    /// other tasks to another thread (`block_in_place`): two thread
    /// hand-offs cheaper than `spawn_blocking`, and the decision is bounded
    /// by the wall-clock limit. Elsewhere it goes to a blocking thread.
    pub async fn decide(
        self: &Arc<Self>,
        tenant: &str,
        plugin: &Plugin,
        event: &OrderEvent,
        ctx: &Context,
        limits: &Limits,
    ) -> Result<Decision, DecideError> {
        let permits = self.admit(tenant).await;
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let host_failed = |id: PluginRef, message: String| DecideError {
            plugin: id,
            fault: Fault::Trap {
                message: format!("host task failed: {message}"),
            },
            usage: Usage::default(),
            log: Vec::new(),
        };
        let result = if multi_thread {
            let _permits = permits;
            tokio::task::block_in_place(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.evaluate(plugin, event, ctx, limits)
                }))
            })
            .unwrap_or_else(|_| Err(host_failed(plugin.id().clone(), "panicked".into())))
        } else {
            let (runtime, plugin, event, ctx, limits) = (
                self.clone(),
                plugin.clone(),
                event.clone(),
                ctx.clone(),
                limits.clone(),
            );
            let id = plugin.id().clone();
            tokio::task::spawn_blocking(move || {
                let _permits = permits;
                runtime.evaluate(&plugin, &event, &ctx, &limits)
            })
            .await
            .unwrap_or_else(|join| Err(host_failed(id, join.to_string())))
        };
        let event_id = &event.id;
        // Ids and numbers only: the event's customer details never reach logs.
        match &result {
            Ok(d) => tracing::debug!(
                tenant, event = %event_id, plugin = %d.plugin, fuel = d.usage.fuel,
                wall_time_us = d.usage.wall_time_us, rule_error = d.outcome.is_err(), "decided"
            ),
            Err(e) => tracing::info!(
                tenant, event = %event_id, plugin = %e.plugin, fault = %e.fault, "plugin faulted"
            ),
        }
        result
    }

    /// Wait for a slot for `tenant`, then a global one. The tenant slot comes
    /// first so one busy tenant queues behind its own limit instead of taking
    /// every global slot.
    pub async fn admit(&self, tenant: &str) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let tenant_slots = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| {
                    Arc::new(Semaphore::new(self.engine_limits.max_concurrent_per_tenant))
                })
                .clone()
        };
        let tenant_permit = tenant_slots
            .acquire_owned()
            .await
            .expect("tenant semaphores are never closed");
        let global_permit = self
            .global
            .clone()
            .acquire_owned()
            .await
            .expect("the global semaphore is never closed");
        (tenant_permit, global_permit)
    }
}

struct Run {
    store: Store<SandboxState>,
    started: Instant,
}

impl Run {
    fn usage(&self, limits: &Limits) -> Usage {
        let remaining = self.store.get_fuel().unwrap_or(0);
        Usage {
            fuel: limits.fuel.saturating_sub(remaining),
            peak_memory_bytes: self.store.data().memory.peak(),
            wall_time_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            output_bytes: 0,
        }
    }
}

fn instantiation_fault(err: &wasmtime::Error) -> Fault {
    if let Some(mem) = err.downcast_ref::<MemoryLimitExceeded>() {
        return Fault::MemoryLimit {
            requested_bytes: mem.desired,
            limit_bytes: mem.limit,
        };
    }
    Fault::Instantiation {
        message: format!("{err:#}"),
    }
}

/// Turn an error from a guest call into the fault it stands for.
fn classify(
    err: &wasmtime::Error,
    store: &Store<SandboxState>,
    limits: &Limits,
    engine_limits: &EngineLimits,
) -> Fault {
    if let Some(mem) = err.downcast_ref::<MemoryLimitExceeded>() {
        return Fault::MemoryLimit {
            requested_bytes: mem.desired,
            limit_bytes: mem.limit,
        };
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Fault::OutOfFuel { limit: limits.fuel },
        Some(Trap::Interrupt) => Fault::Timeout {
            limit_ms: limits.wall_clock_ms,
        },
        Some(Trap::StackOverflow) => Fault::StackOverflow {
            limit_bytes: engine_limits.stack_bytes,
        },
        Some(trap) => {
            let message = match store.data().log.panic_message() {
                Some(panic) => format!("{trap}; the plugin {panic}"),
                None => trap.to_string(),
            };
            Fault::Trap { message }
        }
        None => Fault::Trap {
            message: format!("{err:#}"),
        },
    }
}

/// Enforce the action count and output size, and reject unusable actions.
fn check_output(actions: &[Action], limits: &Limits) -> Result<usize, Fault> {
    if actions.len() > limits.max_actions {
        return Err(Fault::OutputTooLarge {
            what: "actions",
            actual: actions.len(),
            limit: limits.max_actions,
        });
    }
    let mut counter = ByteCounter(0);
    let bytes = serde_json::to_writer(&mut counter, actions).map_or(usize::MAX, |()| counter.0);
    if bytes > limits.max_output_bytes {
        return Err(Fault::OutputTooLarge {
            what: "output bytes",
            actual: bytes,
            limit: limits.max_output_bytes,
        });
    }
    for (i, action) in actions.iter().enumerate() {
        validate_action(action).map_err(|message| Fault::InvalidOutput {
            message: format!("action {i}: {message}"),
        })?;
    }
    Ok(bytes)
}

/// Counts what is written to it: the size of the output as JSON, without
/// building the JSON.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn validate_action(action: &Action) -> Result<(), String> {
    let name = |what: &str, value: &str| -> Result<(), String> {
        let ok = !value.is_empty()
            && value.len() <= 128
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{what} `{value}` must be 1-128 characters of letters, digits, `-`, `_`, `.` or `/`"
            ))
        }
    };
    let key = |what: &str, value: &Option<String>| match value {
        Some(v) if v.is_empty() || v.len() > 256 => Err(format!("{what} must be 1-256 characters")),
        _ => Ok(()),
    };
    match action {
        Action::Notify(n) | Action::HoldForApproval { notify: n, .. } => {
            name("template", &n.template)?;
            key("dedupe_key", &n.dedupe_key)?;
            key("cancel_key", &n.cancel_key)?;
            if let Some(locale) = &n.locale {
                name("locale", locale)?;
            }
            if let Action::HoldForApproval { reason, .. } = action
                && reason.trim().is_empty()
            {
                return Err("hold_for_approval needs a reason".into());
            }
            Ok(())
        }
        Action::Escalate(e) => {
            name("queue", &e.queue)?;
            if e.reason.trim().is_empty() {
                return Err("escalate needs a reason".into());
            }
            Ok(())
        }
        Action::Cancel { cancel_key } => key("cancel_key", &Some(cancel_key.clone())),
    }
}
