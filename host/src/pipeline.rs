//! The pipeline: the only module that knows the order of the stages.
//!
//! ```text
//! ingest ─► decide (Wasm) ─► policy ─► schedule ─► render ─► dispatch
//! ```
//!
//! [`Pipeline::process_event`] takes a stored event through `decide` (every
//! installed plugin), merges the actions, and applies them: notifications go
//! through `policy` and become scheduled, deferred or suppressed messages;
//! escalations become tickets; cancels withdraw pending messages durably.
//! The message worker in [`crate::schedule`] takes it from there. Every step
//! is written to the audit log.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tidings_sdk::action::{Action, Notify};
use tidings_sdk::types::{
    Category, Channel, Context, OpenEscalation, OrderEvent, SentNotification, Timestamp,
};

use crate::decide::{DecideError, Decision, LoadError, Plugin, Runtime};
use crate::metrics::Metrics;
use crate::policy::{self, Facts, Outcome};
use crate::render::TemplateCache;
use crate::schedule::{Handoff, Wakeups};
use crate::settings::{FailureFallback, TenantSettings};
use crate::store::{
    AuditEntry, Committed, Count, EscalationRow, EventRow, FactsQuery, HistoryRow, NewDecision,
    NewMessage, PluginDigest, PluginRow, Store, StoreError, TenantRow, Writes,
};

/// The queue the host itself uses when a plugin fails.
pub const PLUGIN_FAULTS_QUEUE: &str = "plugin-faults";

/// Pipeline failures (not plugin faults, which are recorded outcomes).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored document could not be read.
    #[error("corrupt {what}: {message}")]
    Corrupt {
        /// What.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A stored plugin no longer loads.
    #[error("plugin {id} cannot be loaded: {message}")]
    PluginUnavailable {
        /// Plugin id.
        id: String,
        /// Why.
        message: String,
    },
}

/// The time source of the pipeline; tests replace it to move time forward
/// without sleeping.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of the stages; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    /// Storage.
    pub store: Store,
    /// The plugin runtime.
    pub runtime: Arc<Runtime>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Wakes the workers when work arrives.
    pub wake: Arc<Wakeups>,
    /// Templates compiled for the message worker, reused across messages.
    pub templates: Arc<TemplateCache>,
    /// Messages due now, handed from the event worker to this process's
    /// message worker without a lease from the table.
    pub handoff: Arc<Handoff>,
    clock: Clock,
    lease: std::time::Duration,
    plugins: Arc<Mutex<HashMap<String, Plugin>>>,
    /// Each tenant's settings as last parsed, with the text they were
    /// parsed from: the stages read them for every event and message.
    settings: Arc<Mutex<HashMap<String, ParsedSettings>>>,
}

/// How many tenants' parsed settings a pipeline keeps.
const PARSED_SETTINGS_KEPT: usize = 4096;

/// A tenant's settings document and what it parses to.
struct ParsedSettings {
    text: String,
    settings: Arc<TenantSettings>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// Stored plugin `id` cannot be used, for `why`.
fn unavailable(id: &str, why: impl std::fmt::Display) -> PipelineError {
    PipelineError::PluginUnavailable {
        id: id.to_owned(),
        message: why.to_string(),
    }
}

/// The merged outcome of all plugins on one event.
struct Merged {
    actions: Vec<(String, Action)>,
}

impl Pipeline {
    /// A pipeline over `store` and `runtime`.
    pub fn new(store: Store, runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            runtime,
            metrics,
            wake: Arc::new(Wakeups::default()),
            templates: Arc::new(TemplateCache::default()),
            handoff: Arc::new(Handoff::default()),
            clock: Arc::new(Timestamp::now),
            lease: crate::schedule::LEASE,
            plugins: Arc::new(Mutex::new(HashMap::new())),
            settings: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Use `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Lease jobs for `lease` instead of [`crate::schedule::LEASE`]: how
    /// long a job a dead worker held waits before another takes it.
    pub fn with_lease(mut self, lease: std::time::Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a worker owns a leased job, in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// The pipeline's current time.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Tell the message worker that messages may be due in the table.
    pub fn wake_messages(&self) {
        self.handoff.look_in_table();
        self.wake.messages.notify_one();
    }

    /// The loaded plugin with this stored id (compiled once per process).
    pub async fn plugin(&self, id: &str) -> Result<Plugin, PipelineError> {
        if let Some(plugin) = self.loaded(id) {
            return Ok(plugin);
        }
        let digest = self
            .store
            .plugin_digest(id)
            .await?
            .ok_or_else(|| unavailable(id, "not stored"))?;
        self.load_stored(id, digest).await
    }

    /// The loaded plugin of a stored row the caller has read already (the
    /// dry run and replay have): a plugin not loaded yet is found from the
    /// row's digest, without reading it again.
    pub async fn plugin_of(&self, row: &PluginRow) -> Result<Plugin, PipelineError> {
        if let Some(plugin) = self.loaded(&row.id) {
            return Ok(plugin);
        }
        self.load_stored(&row.id, PluginDigest::from(row)).await
    }

    fn loaded(&self, id: &str) -> Option<Plugin> {
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Load stored plugin `id`, whose recorded digest is `digest`, and keep
    /// it for the next caller.
    async fn load_stored(&self, id: &str, digest: PluginDigest) -> Result<Plugin, PipelineError> {
        // Compiled before (at upload, or by another process sharing the
        // cache directory): linked from the artifact, bytes left unread, and
        // not asked to describe itself again (an unreadable record is asked).
        let size = usize::try_from(digest.size).unwrap_or(usize::MAX);
        let described = serde_json::from_str(&digest.info).ok();
        let compiled = self
            .load_blocking(id, move |r| {
                r.load_compiled(&digest.sha256, size, described)
            })
            .await?;
        let plugin = match compiled {
            Some(plugin) => plugin,
            None => {
                let bytes = self
                    .store
                    .plugin_component(id)
                    .await?
                    .ok_or_else(|| unavailable(id, "not stored"))?;
                self.load_blocking(id, move |r| r.load(&bytes)).await?
            }
        };
        self.remember_plugin(id, plugin.clone());
        Ok(plugin)
    }

    /// Run `load` with the runtime off the async scheduler (loading maps and
    /// deserializes, or compiles); its failure makes plugin `id`
    /// unavailable. On a multi-threaded runtime (the service) it runs on the
    /// calling worker, which first hands its other tasks to another thread
    /// (`block_in_place`, as decisions do): a load from the compiled cache
    /// is a few hundred µs, and a blocking-pool thread would add two thread
    /// hand-offs to every cold tenant's first decision. Elsewhere it goes to
    /// a blocking thread.
    async fn load_blocking<T: Send + 'static>(
        &self,
        id: &str,
        load: impl FnOnce(&Runtime) -> Result<T, LoadError> + Send + 'static,
    ) -> Result<T, PipelineError> {
        let runtime = self.runtime.clone();
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread;
        let loaded = if multi_thread {
            tokio::task::block_in_place(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&runtime)))
            })
            .map_err(|_| unavailable(id, "loading panicked"))?
        } else {
            tokio::task::spawn_blocking(move || load(&runtime))
                .await
                .map_err(|e| unavailable(id, e))?
        };
        loaded.map_err(|e| unavailable(id, e))
    }

    /// Remember an already loaded plugin under its stored id.
    pub fn remember_plugin(&self, id: &str, plugin: Plugin) {
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), plugin);
    }

    /// A tenant and its parsed settings.
    pub async fn tenant(
        &self,
        tenant_id: &str,
    ) -> Result<(TenantRow, Arc<TenantSettings>), PipelineError> {
        let tenant = self.store.tenant(tenant_id).await?;
        self.parse_tenant(tenant_id, tenant)
    }

    /// [`Pipeline::tenant`] as read at most [`crate::store::CACHE_TTL`]
    /// ago (at once after a write by this process): for the stages, which
    /// read it for every event and message.
    pub async fn tenant_cached(
        &self,
        tenant_id: &str,
    ) -> Result<(TenantRow, Arc<TenantSettings>), PipelineError> {
        let tenant = self.store.tenant_cached(tenant_id).await?;
        self.parse_tenant(tenant_id, tenant)
    }

    /// `tenant`'s settings, parsed again only when their text differs from
    /// what was parsed last for this tenant.
    fn parse_tenant(
        &self,
        tenant_id: &str,
        tenant: Option<TenantRow>,
    ) -> Result<(TenantRow, Arc<TenantSettings>), PipelineError> {
        let tenant = tenant.ok_or_else(|| PipelineError::Corrupt {
            what: "event",
            message: format!("unknown tenant {tenant_id}"),
        })?;
        let parsed = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(parsed) = parsed.get(tenant_id)
            && parsed.text == tenant.settings
        {
            let settings = parsed.settings.clone();
            return Ok((tenant, settings));
        }
        drop(parsed);
        let settings = Arc::new(TenantSettings::from_json(&tenant.settings).map_err(|e| {
            PipelineError::Corrupt {
                what: "tenant settings",
                message: e.to_string(),
            }
        })?);
        let mut parsed = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        if parsed.len() >= PARSED_SETTINGS_KEPT && !parsed.contains_key(tenant_id) {
            // Start again rather than grow with every tenant ever seen: a
            // tenant whose parse is dropped is parsed again when next read.
            parsed.clear();
        }
        parsed.insert(
            tenant_id.to_owned(),
            ParsedSettings {
                text: tenant.settings.clone(),
                settings: settings.clone(),
            },
        );
        Ok((tenant, settings))
    }

    /// A tenant's channel settings (provider accounts, endpoints, keys).
    pub async fn channel_settings(
        &self,
        tenant_id: &str,
    ) -> Result<crate::dispatch::ChannelSettings, PipelineError> {
        let rows = self.store.channel_settings_cached(tenant_id).await?;
        Ok(crate::dispatch::ChannelSettings::from_stored(
            tenant_id, &rows,
        ))
    }

    /// What a plugin is told about an order: notifications so far and open
    /// escalations, as of `before` (ms; `i64::MAX` for now).
    pub async fn order_context(
        &self,
        tenant_id: &str,
        order_id: &str,
        before: i64,
    ) -> Result<OrderContext, PipelineError> {
        let history = self.store.order_history(tenant_id, order_id).await?;
        let open = self
            .store
            .escalations(tenant_id, Some(order_id), true)
            .await?;
        Ok(OrderContext::from_rows(history, open, before))
    }

    /// [`Pipeline::order_context`], now, of the orders of `rows` (a leased
    /// batch, at most one event an order), read in two queries.
    pub async fn order_contexts(
        &self,
        rows: &[EventRow],
    ) -> Result<HashMap<(String, String), OrderContext>, PipelineError> {
        let orders: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.tenant_id.as_str(), r.order_id.as_str()))
            .collect();
        let (history, open) = self.store.order_contexts(&orders).await?;
        let mut by_order: HashMap<(String, String), (Vec<HistoryRow>, Vec<EscalationRow>)> =
            HashMap::new();
        for h in history {
            let key = (h.tenant_id.clone(), h.order_id.clone());
            by_order.entry(key).or_default().0.push(h);
        }
        for e in open {
            let key = (e.tenant_id.clone(), e.order_id.clone());
            by_order.entry(key).or_default().1.push(e);
        }
        Ok(by_order
            .into_iter()
            .map(|(key, (history, open))| (key, OrderContext::from_rows(history, open, i64::MAX)))
            .collect())
    }

    /// Take one stored event through decide, policy and scheduling; `context`
    /// is its order's, if already read.
    pub async fn process_event(
        &self,
        row: &EventRow,
        context: Option<OrderContext>,
    ) -> Result<(), PipelineError> {
        let event: OrderEvent =
            serde_json::from_str(&row.body).map_err(|e| PipelineError::Corrupt {
                what: "event body",
                message: e.to_string(),
            })?;
        let (tenant, settings) = self.tenant_cached(&row.tenant_id).await?;
        let now = self.now();
        // What this event changes is stored at the end, in one transaction
        // with the event's new status, unless an action must write earlier.
        let mut writes = Writes::default();
        let OrderContext {
            history,
            open_escalations,
        } = match context {
            Some(context) => context,
            None => {
                self.order_context(&tenant.id, &event.order.id, i64::MAX)
                    .await?
            }
        };
        // What every plugin is told, each with its own config.
        let base = Context {
            tenant: tenant.id.clone(),
            now,
            config: serde_json::Value::Null,
            history,
            open_escalations,
        };
        let merged = self
            .decide_all(row, &event, &tenant, &settings, &base, &mut writes)
            .await?;
        for (n, (decision_id, action)) in merged.actions.iter().enumerate() {
            // Derived from the event and the action's place in the merged
            // decision, so an event processed again after a crash finds the
            // messages the first attempt scheduled instead of doubling them;
            // ids sort like the events they came from.
            let message_id = format!("msg_{}{n:04x}", row.id.trim_start_matches("evt_"));
            let applied = self
                .apply(
                    row,
                    &event,
                    &settings,
                    decision_id,
                    &message_id,
                    action,
                    now,
                    &mut writes,
                )
                .await;
            if let Err(err) = applied {
                // Nothing of `writes` is stored: the places it reserved for
                // messages to hand over are free again.
                for (_, tenant, channel) in writes.leased_messages() {
                    self.handoff.release(tenant, channel);
                }
                return Err(err);
            }
        }
        writes.finish_event(&row.id, "processed");
        if self.commit(row, writes).await? == Committed::AlreadyFinished {
            tracing::warn!(event = %row.id, "event already processed by another worker; this attempt stored nothing");
        }
        Ok(())
    }

    /// Store what `writes` holds so far, before a step that writes on its
    /// own (tickets, cancellations), so the audit trail stays in order.
    async fn flush(&self, row: &EventRow, writes: &mut Writes) -> Result<(), PipelineError> {
        self.commit(row, std::mem::take(writes)).await?;
        Ok(())
    }

    /// Store `writes` about `row`, then count the messages they created and
    /// hand those created leased to the message worker.
    async fn commit(&self, row: &EventRow, writes: Writes) -> Result<Committed, PipelineError> {
        let reserved: Vec<(String, String, String)> = writes
            .leased_messages()
            .into_iter()
            .map(|(id, tenant, channel)| (id.to_owned(), tenant.to_owned(), channel.to_owned()))
            .collect();
        let stored = self.store.commit_counted(writes).await;
        // The places reserved for messages that are not handed over (not
        // stored, or stored by an earlier attempt) are free again.
        for (id, tenant, channel) in &reserved {
            let handed = stored
                .as_ref()
                .is_ok_and(|s| s.leased.iter().any(|(m, _)| m.id == *id));
            if !handed {
                self.handoff.release(tenant, channel);
            }
        }
        let stored = stored?;
        if !stored.leased.is_empty() {
            for _ in &stored.leased {
                self.metrics.inc("tidings_messages_handed_over_total", &[]);
            }
            self.handoff.hand(stored.leased, row);
            self.wake.messages.notify_one();
        }
        for count in &stored.counts {
            let labels: Vec<(&'static str, &str)> = count
                .labels
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            self.metrics.inc(count.name, &labels);
        }
        Ok(stored.committed)
    }

    async fn decide_all(
        &self,
        row: &EventRow,
        event: &OrderEvent,
        tenant: &TenantRow,
        settings: &TenantSettings,
        base: &Context,
        writes: &mut Writes,
    ) -> Result<Merged, PipelineError> {
        let mut merged = Merged {
            actions: Vec::new(),
        };
        let mut seen_dedupe = HashSet::new();
        for install in self.store.installs_cached(&tenant.id).await? {
            // One decision per event and installed plugin, whatever attempt.
            let decision_id =
                crate::store::derived_id("dec", row.received_at, &[&row.id, &install.plugin_id]);
            let plugin = match self.plugin(&install.plugin_id).await {
                Ok(plugin) => plugin,
                Err(PipelineError::PluginUnavailable { id, message }) => {
                    // A stored plugin that no longer loads is a fault of
                    // that plugin: recorded, the fallback applies, and the
                    // other plugins still decide.
                    let reason = format!("plugin {id} could not be loaded: {message}");
                    self.record_unavailable(row, &decision_id, &install.plugin_id, &reason, writes);
                    self.plugin_failed(row, settings, &decision_id, &reason, writes)
                        .await?;
                    continue;
                }
                Err(other) => return Err(other),
            };
            let config = serde_json::from_str(&install.config).unwrap_or(serde_json::Value::Null);
            let ctx = Context {
                config,
                ..base.clone()
            };
            let result = self
                .runtime
                .decide(&tenant.id, &plugin, event, &ctx, &settings.limits)
                .await;
            self.record_decision(row, &decision_id, &install.plugin_id, &result, writes);
            match result {
                Ok(Decision {
                    outcome: Ok(actions),
                    ..
                }) => {
                    for action in actions {
                        // Several plugins may ask for the same message: one dedupe key, one message.
                        if let Some(key) = action.message().and_then(|n| n.dedupe_key.clone())
                            && !seen_dedupe.insert(key)
                        {
                            continue;
                        }
                        merged.actions.push((decision_id.clone(), action));
                    }
                }
                Ok(Decision {
                    outcome: Err(rule_error),
                    plugin,
                    ..
                }) => {
                    let reason = format!("plugin {plugin} returned rule error {rule_error}");
                    self.plugin_failed(row, settings, &decision_id, &reason, writes)
                        .await?;
                }
                Err(err) => {
                    let reason = err.to_string();
                    self.plugin_failed(row, settings, &decision_id, &reason, writes)
                        .await?;
                }
            }
        }
        Ok(merged)
    }

    /// Record that an installed plugin could not be loaded for `row`.
    fn record_unavailable(
        &self,
        row: &EventRow,
        decision_id: &str,
        plugin_id: &str,
        reason: &str,
        writes: &mut Writes,
    ) {
        let detail = json!({ "fault": { "kind": "unavailable", "message": reason } });
        writes.decision(&NewDecision {
            id: decision_id,
            tenant_id: &row.tenant_id,
            event_id: &row.id,
            plugin_id,
            plugin_name: plugin_id,
            plugin_version: "",
            outcome: "fault",
            detail: &detail.to_string(),
            fuel: 0,
            duration_us: 0,
        });
        self.metrics.inc(
            "tidings_plugin_faults_total",
            &[
                ("tenant", &row.tenant_id),
                ("plugin", plugin_id),
                ("fault", "unavailable"),
            ],
        );
        let mut detail = detail;
        detail["decision_id"] = json!(decision_id);
        let actor = format!("plugin:{plugin_id}");
        writes.audit(audit_entry(row, None, "decide", "fault", &actor, detail));
    }

    fn record_decision(
        &self,
        row: &EventRow,
        id: &str,
        plugin_id: &str,
        result: &Result<Decision, DecideError>,
        writes: &mut Writes,
    ) {
        let (plugin, usage, outcome, detail) = match result {
            Ok(d) => match &d.outcome {
                Ok(actions) => (
                    &d.plugin,
                    &d.usage,
                    "actions",
                    json!({ "actions": actions, "log": d.log }),
                ),
                Err(e) => (
                    &d.plugin,
                    &d.usage,
                    "rule_error",
                    json!({ "rule_error": e, "log": d.log }),
                ),
            },
            Err(e) => (
                &e.plugin,
                &e.usage,
                "fault",
                json!({ "fault": e.fault, "log": e.log }),
            ),
        };
        let fuel = i64::try_from(usage.fuel).unwrap_or(i64::MAX);
        let duration_us = i64::try_from(usage.wall_time_us).unwrap_or(i64::MAX);
        writes.decision(&NewDecision {
            id,
            tenant_id: &row.tenant_id,
            event_id: &row.id,
            plugin_id,
            plugin_name: &plugin.name,
            plugin_version: &plugin.version,
            outcome,
            detail: &detail.to_string(),
            fuel,
            duration_us,
        });
        let labels = [
            ("tenant", row.tenant_id.as_str()),
            ("plugin", plugin.name.as_str()),
        ];
        self.metrics
            .decision(&labels, usage.wall_time_us as f64 / 1e6, usage.fuel);
        self.metrics.inc(
            "tidings_decisions_total",
            &[
                ("tenant", &row.tenant_id),
                ("plugin", &plugin.name),
                ("outcome", outcome),
            ],
        );
        if let Err(e) = result {
            let fault = serde_json::to_value(&e.fault).ok();
            let kind = fault
                .as_ref()
                .and_then(|f| f["kind"].as_str())
                .unwrap_or("unknown")
                .to_owned();
            self.metrics.inc(
                "tidings_plugin_faults_total",
                &[
                    ("tenant", &row.tenant_id),
                    ("plugin", &plugin.name),
                    ("fault", &kind),
                ],
            );
        }
        let mut detail = detail;
        detail["decision_id"] = json!(id);
        detail["plugin"] = json!(plugin);
        detail["usage"] = json!(usage);
        let actor = format!("plugin:{plugin}");
        writes.audit(audit_entry(row, None, "decide", outcome, &actor, detail));
    }

    async fn plugin_failed(
        &self,
        row: &EventRow,
        settings: &TenantSettings,
        decision_id: &str,
        reason: &str,
        writes: &mut Writes,
    ) -> Result<(), PipelineError> {
        if settings.on_plugin_failure == FailureFallback::Record {
            return Ok(());
        }
        self.flush(row, writes).await?;
        crate::escalation::open(
            self,
            row,
            settings,
            &crate::escalation::Opening {
                queue: PLUGIN_FAULTS_QUEUE,
                priority: "high",
                reason,
                sla_minutes: None,
                decision_id: Some(decision_id),
                message_id: None,
            },
        )
        .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        row: &EventRow,
        event: &OrderEvent,
        settings: &TenantSettings,
        decision_id: &str,
        message_id: &str,
        action: &Action,
        now: Timestamp,
        writes: &mut Writes,
    ) -> Result<(), PipelineError> {
        match action {
            Action::Notify(notify) => {
                self.schedule_notify(
                    row,
                    event,
                    settings,
                    decision_id,
                    message_id,
                    notify,
                    now,
                    writes,
                )
                .await
            }
            Action::HoldForApproval { notify, reason } => {
                self.flush(row, writes).await?;
                let held = crate::escalation::Held {
                    decision_id,
                    message_id,
                    notify,
                    reason,
                };
                crate::escalation::hold(self, row, event, settings, &held).await
            }
            Action::Escalate(e) => {
                self.flush(row, writes).await?;
                let priority = enum_str(&e.priority);
                crate::escalation::open(
                    self,
                    row,
                    settings,
                    &crate::escalation::Opening {
                        queue: &e.queue,
                        priority: &priority,
                        reason: &e.reason,
                        sla_minutes: e.sla_minutes.map(i64::from),
                        decision_id: Some(decision_id),
                        message_id: None,
                    },
                )
                .await?;
                Ok(())
            }
            Action::Cancel { cancel_key } => {
                self.flush(row, writes).await?;
                let cancelled = self
                    .store
                    .cancel_key(&row.tenant_id, cancel_key, &row.id)
                    .await?;
                writes.audit(audit_entry(
                    row,
                    None,
                    "policy",
                    "cancel",
                    "system",
                    json!({ "cancel_key": cancel_key, "cancelled": cancelled }),
                ));
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn schedule_notify(
        &self,
        row: &EventRow,
        event: &OrderEvent,
        settings: &TenantSettings,
        decision_id: &str,
        id: &str,
        notify: &Notify,
        now: Timestamp,
        writes: &mut Writes,
    ) -> Result<(), PipelineError> {
        // Marketing messages of this event not stored yet count against the
        // customer's cap too.
        let customer = event.order.customer.id.as_str();
        let pending_marketing = writes
            .pending_messages()
            .filter(|&(c, category)| c == customer && category == "marketing")
            .count();
        let (verdict, send_at) = self
            .verdict_with(
                &row.tenant_id,
                event,
                settings,
                notify,
                now,
                u32::try_from(pending_marketing).unwrap_or(u32::MAX),
            )
            .await?;
        let (channel, status, at, reason, verdict_name) = match &verdict.outcome {
            Outcome::Send { channel, at } => (*channel, "scheduled", *at, None, "send"),
            Outcome::Defer {
                channel,
                until,
                reason,
            } => (
                *channel,
                "scheduled",
                *until,
                Some(reason.to_string()),
                "defer",
            ),
            Outcome::Suppress(reason) => (
                notify.channel,
                "suppressed",
                send_at,
                Some(reason.to_string()),
                "suppress",
            ),
        };
        let mut message = new_message(
            row,
            event,
            decision_id,
            notify,
            channel,
            status,
            reason.as_deref(),
            at,
        );
        message.send_at = at.as_millisecond();
        let fallbacks = match status {
            "scheduled" => remaining_fallbacks(notify, channel),
            _ => Vec::new(),
        };
        let fallbacks = serde_json::to_string(&fallbacks).expect("channels serialise");
        let reason_code = match &verdict.outcome {
            Outcome::Suppress(r) | Outcome::Defer { reason: r, .. } => r.code(),
            Outcome::Send { .. } => "allowed",
        };
        // Counted once the message is created, so not twice for an event
        // processed again.
        let mut counts = vec![Count {
            name: "tidings_policy_verdicts_total",
            labels: vec![
                ("tenant", row.tenant_id.clone()),
                ("verdict", verdict_name.to_owned()),
                ("reason", reason_code.to_owned()),
            ],
        }];
        if status == "suppressed" {
            counts.push(Count {
                name: "tidings_messages_total",
                labels: vec![
                    ("tenant", row.tenant_id.clone()),
                    ("channel", message.channel.clone()),
                    ("status", "suppressed".to_owned()),
                ],
            });
        }
        let detail = json!({
            "verdict": verdict,
            "template": notify.template,
            "requested_channel": notify.channel,
            "send_at": at,
        });
        // A message an earlier attempt at this event stored is not stored
        // (or audited) again.
        let audit = audit_entry(row, Some(id), "policy", verdict_name, "system", detail);
        // Due now: this process's message worker takes it as it is stored,
        // if it has room, instead of leasing it from the table later.
        let owner = (status == "scheduled" && at <= now)
            .then(|| self.handoff.reserve(&row.tenant_id, &message.channel))
            .flatten();
        let until = self.now().as_millisecond().saturating_add(self.lease_ms());
        let lease = owner.as_deref().map(|owner| (owner, until));
        writes.message(id, &message, &fallbacks, audit, counts, lease);
        Ok(())
    }

    /// What policy says about `notify` for `event` now, with the facts looked
    /// up in the store; also the time the plugin asked for.
    pub async fn verdict(
        &self,
        tenant_id: &str,
        event: &OrderEvent,
        settings: &TenantSettings,
        notify: &Notify,
        now: Timestamp,
    ) -> Result<(policy::Verdict, Timestamp), PipelineError> {
        self.verdict_with(tenant_id, event, settings, notify, now, 0)
            .await
    }

    /// [`Pipeline::verdict`], with `unstored_marketing` marketing messages
    /// to the customer about to be stored besides those in the store.
    async fn verdict_with(
        &self,
        tenant_id: &str,
        event: &OrderEvent,
        settings: &TenantSettings,
        notify: &Notify,
        now: Timestamp,
        unstored_marketing: u32,
    ) -> Result<(policy::Verdict, Timestamp), PipelineError> {
        let send_at = crate::schedule::send_at(&notify.timing, now);
        let customer = &event.order.customer;
        // Only marketing counts against the marketing cap.
        let marketing_since = (notify.category == Category::Marketing)
            .then(|| settings.policy.marketing_window_start(now).as_millisecond());
        let found = self
            .store
            .policy_facts(&FactsQuery {
                tenant_id,
                customer_id: &customer.id,
                email: customer.email.as_deref(),
                phone: customer.phone.as_deref(),
                cancel_key: notify.cancel_key.as_deref(),
                dedupe_key: notify.dedupe_key.as_deref(),
                marketing_since,
            })
            .await?;
        let suppressed: Vec<Channel> = found
            .suppressed
            .iter()
            .filter_map(|c| parse_enum(c))
            .collect();
        let last_with_dedupe_key = found
            .last_dedupe
            .and_then(|ms| Timestamp::from_millisecond(ms).ok());
        let facts = Facts {
            customer,
            suppressed: &suppressed,
            cancelled: found.cancelled,
            last_with_dedupe_key,
            marketing_sent_in_window: u32::try_from(found.marketing_count)
                .unwrap_or(u32::MAX)
                .saturating_add(unstored_marketing),
            now,
        };
        Ok((
            policy::check(notify, send_at, &facts, &settings.policy),
            send_at,
        ))
    }

    /// Append to the audit log for `row`'s order.
    pub async fn audit(
        &self,
        row: &EventRow,
        message_id: Option<&str>,
        stage: &str,
        action: &str,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<(), PipelineError> {
        self.store
            .audit(audit_entry(row, message_id, stage, action, actor, detail))
            .await?;
        Ok(())
    }
}

/// What a plugin is told about an order besides the event: the
/// notifications so far and the open escalations.
#[derive(Debug, Clone, Default)]
pub struct OrderContext {
    /// Notifications scheduled, sent or held, oldest first.
    pub history: Vec<SentNotification>,
    /// Open (or acknowledged) escalations, newest first.
    pub open_escalations: Vec<OpenEscalation>,
}

impl OrderContext {
    /// From the store's rows, as of `before` (ms).
    fn from_rows(history: Vec<HistoryRow>, open: Vec<EscalationRow>, before: i64) -> Self {
        let history = history
            .into_iter()
            .filter(|m| m.created_at < before)
            .filter_map(|m| {
                Some(SentNotification {
                    template: m.template,
                    channel: parse_enum(&m.channel)?,
                    at: Timestamp::from_millisecond(m.send_at).ok()?,
                })
            })
            .collect();
        let open_escalations = open
            .into_iter()
            .filter(|e| e.created_at < before)
            .filter_map(|e| {
                Some(OpenEscalation {
                    queue: e.queue,
                    priority: parse_enum(&e.priority)?,
                    opened_at: Timestamp::from_millisecond(e.created_at).ok()?,
                })
            })
            .collect();
        Self {
            history,
            open_escalations,
        }
    }
}

/// An audit entry about `row`'s order.
fn audit_entry<'a>(
    row: &'a EventRow,
    message_id: Option<&'a str>,
    stage: &'a str,
    action: &'a str,
    actor: &'a str,
    detail: serde_json::Value,
) -> AuditEntry<'a> {
    AuditEntry {
        tenant_id: &row.tenant_id,
        order_id: Some(&row.order_id),
        event_id: Some(&row.id),
        message_id,
        stage,
        action,
        actor,
        detail,
    }
}

/// The row for a message a plugin asked for.
#[allow(clippy::too_many_arguments)]
pub fn new_message<'a>(
    row: &'a EventRow,
    event: &'a OrderEvent,
    decision_id: &'a str,
    notify: &'a Notify,
    channel: Channel,
    status: &'a str,
    reason: Option<&'a str>,
    at: Timestamp,
) -> NewMessage<'a> {
    NewMessage {
        tenant_id: &row.tenant_id,
        event_id: &row.id,
        decision_id,
        order_id: &row.order_id,
        customer_id: &event.order.customer.id,
        channel: enum_str(&channel),
        template: &notify.template,
        locale: notify.locale.as_deref(),
        category: enum_str(&notify.category),
        priority: enum_str(&notify.priority),
        dedupe_key: notify.dedupe_key.as_deref(),
        cancel_key: notify.cancel_key.as_deref(),
        data: serde_json::to_string(&notify.data).expect("maps serialise"),
        status,
        status_reason: reason,
        send_at: at.as_millisecond(),
        recipient: None,
    }
}

/// The channels of `notify` after `chosen`, in order and without repeats:
/// what delivery tries next if `chosen` fails for good.
pub fn remaining_fallbacks(notify: &Notify, chosen: Channel) -> Vec<Channel> {
    let mut order: Vec<Channel> = Vec::new();
    for &c in std::iter::once(&notify.channel).chain(&notify.fallback_channels) {
        if !order.contains(&c) {
            order.push(c);
        }
    }
    match order.iter().position(|&c| c == chosen) {
        Some(i) => order.split_off(i + 1),
        None => Vec::new(),
    }
}

/// The `snake_case` name of a serde enum value (channel, priority, ...).
pub fn enum_str<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

/// Parse a `snake_case` enum value stored as text.
pub fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}
