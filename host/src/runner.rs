//! The local runner behind `tidings plugin run` and `tidings plugin check`:
//! run a plugin on sample events under the production limits and report what
//! it decided and what it consumed.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tidings_sdk::action::{Action, RuleError};
use tidings_sdk::types::{Context, OrderEvent, Timestamp};

use crate::decide::{
    DecideError, Decision, EngineLimits, Fault, Limits, LogLine, Plugin, PluginRef, Runtime, Usage,
};

/// Why the runner could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON file has a wrong or missing field.
    #[error("{path}: field `{field}`: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The component was rejected.
    #[error("{path}: {source}")]
    Load {
        /// The component file.
        path: PathBuf,
        /// Why it was rejected.
        source: crate::decide::LoadError,
    },
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] crate::decide::RuntimeError),
}

/// Load a component from disk, reporting the path on failure.
pub fn load_plugin(runtime: &Runtime, path: &Path) -> Result<Plugin, RunnerError> {
    let bytes = read(path)?;
    runtime.load(&bytes).map_err(|source| RunnerError::Load {
        path: path.to_owned(),
        source,
    })
}

/// Read an order event from its JSON file.
pub fn read_event(path: &Path) -> Result<OrderEvent, RunnerError> {
    let text = read_text(path)?;
    OrderEvent::from_json(&text).map_err(|e| json_error(path, e))
}

/// Read a decision context from its JSON file.
pub fn read_context(path: &Path) -> Result<Context, RunnerError> {
    let text = read_text(path)?;
    tidings_sdk::types::from_json(&text).map_err(|e| json_error(path, e))
}

/// Read a merchant config (any JSON value) from its file.
pub fn read_config(path: &Path) -> Result<serde_json::Value, RunnerError> {
    let text = read_text(path)?;
    tidings_sdk::types::from_json(&text).map_err(|e| json_error(path, e))
}

/// Expand `paths`: files as given, directories into their `*.json` files in
/// name order.
pub fn expand_event_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RunnerError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| RunnerError::Read {
                path: path.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, RunnerError> {
    std::fs::read(path).map_err(|source| RunnerError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, RunnerError> {
    std::fs::read_to_string(path).map_err(|source| RunnerError::Read {
        path: path.to_owned(),
        source,
    })
}

fn json_error(path: &Path, e: tidings_sdk::types::JsonError) -> RunnerError {
    RunnerError::Json {
        path: path.to_owned(),
        field: e.path,
        message: e.message,
    }
}

/// The context a local run uses: `base` (or an empty one for tenant `local`),
/// with `now` defaulting to the event's time so runs are reproducible.
pub fn context_for(
    event: &OrderEvent,
    base: Option<&Context>,
    config: Option<&serde_json::Value>,
    now: Option<Timestamp>,
) -> Context {
    let mut ctx = base
        .cloned()
        .unwrap_or_else(|| Context::new("local", event.occurred_at));
    if base.is_none() || now.is_some() {
        ctx.now = now.unwrap_or(event.occurred_at);
    }
    if let Some(config) = config {
        ctx.config = config.clone();
    }
    ctx
}

/// One run's report: the decision and its use of each limit.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The plugin.
    pub plugin: PluginRef,
    /// The event's id.
    pub event_id: String,
    /// The event's kind.
    pub event_kind: String,
    /// The plugin's actions, if it returned some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
    /// The plugin's own error, if it returned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_error: Option<RuleError>,
    /// The fault, if the plugin failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The plugin log.
    pub log: Vec<LogLine>,
    /// Usage against the production limits.
    pub limits: LimitUsage,
}

/// The outcome part of a [`Report`].
#[derive(Debug, Serialize)]
pub struct DecisionView<'a> {
    /// The plugin's actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<&'a [Action]>,
    /// The plugin's own error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_error: Option<&'a RuleError>,
    /// The fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'a Fault>,
}

/// Each limit with what the run used of it.
#[derive(Debug, Serialize)]
pub struct LimitUsage {
    /// Instructions.
    pub fuel: Measure,
    /// Peak linear memory, bytes.
    pub memory_bytes: Measure,
    /// Wall time, microseconds.
    pub wall_time_us: Measure,
    /// Component size, bytes.
    pub component_bytes: Measure,
    /// Actions as JSON, bytes.
    pub output_bytes: Measure,
    /// Number of actions.
    pub actions: Measure,
}

/// A used amount against a limit.
#[derive(Debug, Serialize)]
pub struct Measure {
    /// Used.
    pub used: u64,
    /// Allowed.
    pub limit: u64,
}

impl Measure {
    fn new(used: impl TryInto<u64>, limit: impl TryInto<u64>) -> Self {
        Self {
            used: used.try_into().unwrap_or(u64::MAX),
            limit: limit.try_into().unwrap_or(u64::MAX),
        }
    }

    fn percent(&self) -> f64 {
        if self.limit == 0 {
            return 0.0;
        }
        self.used as f64 * 100.0 / self.limit as f64
    }
}

impl Report {
    /// Build the report for one run.
    pub fn new(
        plugin: &Plugin,
        event: &OrderEvent,
        result: Result<Decision, DecideError>,
        limits: &Limits,
        engine: &EngineLimits,
    ) -> Self {
        let (actions, rule_error, fault, usage, log) = match result {
            Ok(Decision {
                outcome: Ok(actions),
                usage,
                log,
                ..
            }) => (Some(actions), None, None, usage, log),
            Ok(Decision {
                outcome: Err(e),
                usage,
                log,
                ..
            }) => (None, Some(e), None, usage, log),
            Err(DecideError {
                fault, usage, log, ..
            }) => (None, None, Some(fault), usage, log),
        };
        let action_count = actions.as_ref().map_or(0, Vec::len);
        let Usage {
            fuel,
            peak_memory_bytes,
            wall_time_us,
            output_bytes,
        } = usage;
        Self {
            plugin: plugin.id().clone(),
            event_id: event.id.clone(),
            event_kind: event.kind.to_string(),
            actions,
            rule_error,
            fault,
            log,
            limits: LimitUsage {
                fuel: Measure::new(fuel, limits.fuel),
                memory_bytes: Measure::new(peak_memory_bytes, limits.memory_bytes),
                wall_time_us: Measure::new(wall_time_us, limits.wall_clock_ms.saturating_mul(1000)),
                component_bytes: Measure::new(plugin.size(), engine.component_bytes),
                output_bytes: Measure::new(output_bytes, limits.max_output_bytes),
                actions: Measure::new(action_count, limits.max_actions),
            },
        }
    }

    /// Whether the plugin returned actions (not a rule error or a fault).
    pub fn succeeded(&self) -> bool {
        self.actions.is_some()
    }

    /// The decision alone, as printed by `tidings plugin run`: exactly one
    /// of `actions`, `rule_error` or `fault`.
    pub fn decision(&self) -> DecisionView<'_> {
        DecisionView {
            actions: self.actions.as_deref(),
            rule_error: self.rule_error.as_ref(),
            fault: self.fault.as_ref(),
        }
    }

    /// The human summary of limits, one line each.
    pub fn limits_table(&self) -> String {
        let l = &self.limits;
        let rows = [
            ("fuel (instructions)", &l.fuel, "", 1.0),
            ("peak memory", &l.memory_bytes, "KiB", 1024.0),
            ("wall time", &l.wall_time_us, "ms", 1000.0),
            ("component size", &l.component_bytes, "KiB", 1024.0),
            ("output size", &l.output_bytes, "KiB", 1024.0),
            ("actions", &l.actions, "", 1.0),
        ];
        let mut out = String::new();
        for (name, m, unit, scale) in rows {
            let fmt = |v: u64| {
                if scale == 1.0 {
                    group_thousands(v)
                } else {
                    format!("{:.2} {unit}", v as f64 / scale)
                }
            };
            let flag = if m.used > m.limit {
                "  << OVER LIMIT"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {name:<20} {:>14} of {:>14} ({:>5.1}%){flag}\n",
                fmt(m.used),
                fmt(m.limit),
                m.percent()
            ));
        }
        out
    }
}

fn group_thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(10_000_000), "10,000,000");
        assert_eq!(group_thousands(999), "999");
    }
}
