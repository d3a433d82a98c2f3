//! Metrics in the Prometheus text format, labelled by tenant. A small
//! in-process registry: counters and histograms keyed by name and labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Histogram bucket bounds for decision duration, in seconds.
const DURATION_BUCKETS: [f64; 8] = [0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1];
/// Histogram bucket bounds for fuel.
const FUEL_BUCKETS: [f64; 7] = [1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, Labels), Histogram>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "tidings_events_total",
        "counter",
        "Order events accepted, by tenant and kind.",
    ),
    (
        "tidings_decisions_total",
        "counter",
        "Plugin decisions, by tenant, plugin and outcome.",
    ),
    (
        "tidings_plugin_faults_total",
        "counter",
        "Plugin faults, by tenant, plugin and fault.",
    ),
    (
        "tidings_policy_verdicts_total",
        "counter",
        "Policy verdicts on messages, by tenant, verdict and reason.",
    ),
    (
        "tidings_messages_total",
        "counter",
        "Messages settled, by tenant, channel and status.",
    ),
    (
        "tidings_messages_handed_over_total",
        "counter",
        "Messages due at once that the event worker handed to this process's message worker as it stored them, instead of the message worker leasing them from the table later.",
    ),
    (
        "tidings_decision_duration_seconds",
        "histogram",
        "Wall time of a decision.",
    ),
    (
        "tidings_decision_fuel",
        "histogram",
        "Instructions (fuel) used by a decision.",
    ),
];

impl Metrics {
    /// Add one to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (name, own(labels));
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Record a decision's duration (seconds) and fuel.
    pub fn decision(&self, labels: &[(&'static str, &str)], seconds: f64, fuel: u64) {
        self.observe(
            "tidings_decision_duration_seconds",
            labels,
            seconds,
            &DURATION_BUCKETS,
        );
        self.observe("tidings_decision_fuel", labels, fuel as f64, &FUEL_BUCKETS);
    }

    fn observe(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
        bounds: &[f64],
    ) {
        let mut histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let h = histograms.entry((name, own(labels))).or_default();
        if h.buckets.is_empty() {
            h.buckets = vec![0; bounds.len()];
        }
        for (i, bound) in bounds.iter().enumerate() {
            if value <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.sum += value;
        h.count += 1;
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let histograms = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, labels), value) in counters.iter() {
                if n == name {
                    let _ = writeln!(out, "{name}{} {value}", fmt_labels(labels, None));
                }
            }
            for ((n, labels), h) in histograms.iter() {
                if n != name {
                    continue;
                }
                let bounds: &[f64] = if *name == "tidings_decision_fuel" {
                    &FUEL_BUCKETS
                } else {
                    &DURATION_BUCKETS
                };
                for (bound, count) in bounds.iter().zip(&h.buckets) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {count}",
                        fmt_labels(labels, Some(&bound.to_string()))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
            }
        }
        out
    }
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_prometheus_text_format() {
        let m = Metrics::default();
        m.inc(
            "tidings_events_total",
            &[("tenant", "t1"), ("kind", "order_created")],
        );
        m.inc(
            "tidings_events_total",
            &[("tenant", "t1"), ("kind", "order_created")],
        );
        m.decision(&[("tenant", "t1")], 0.0002, 60_000);
        let text = m.render();
        assert!(
            text.contains("tidings_events_total{tenant=\"t1\",kind=\"order_created\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tidings_decision_fuel_bucket{tenant=\"t1\",le=\"100000\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tidings_decision_duration_seconds_count{tenant=\"t1\"} 1"),
            "{text}"
        );
    }
}
