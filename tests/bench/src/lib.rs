//! Shared pieces of the Tidings benchmarks: where the sample events and the
//! built components are, and per-call timings summarised as a markdown table.
//!
//! The machines these run on are shared and noisy, so every bench measures
//! its contenders side by side in one run, interleaved call by call, and
//! reports ratios as well as times.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tidings_sdk::types::{Context, OrderEvent};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/bench sits two levels below the root")
        .to_owned()
}

/// A file built by `make`, relative to the repository root; panics with the
/// command to run when it is missing.
pub fn built(relative: &str, make_target: &str) -> PathBuf {
    let path = workspace_root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `make {make_target}` (or `make bench`) first",
        path.display()
    );
    path
}

/// The sample events of `tests/fixtures/events/`, by file stem, in name order.
pub fn sample_events() -> Vec<(String, OrderEvent)> {
    let dir = workspace_root().join("tests/fixtures/events");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/events is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable fixture");
            let name = path
                .file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let event = OrderEvent::from_json(&text).expect("the bundled fixtures are valid");
            (name, event)
        })
        .collect()
}

/// The sample context, `tests/fixtures/context.json`.
pub fn sample_context() -> Context {
    let text = std::fs::read_to_string(workspace_root().join("tests/fixtures/context.json"))
        .expect("tests/fixtures/context.json is readable");
    serde_json::from_str(&text).expect("the bundled context is valid")
}

/// Per-call timings of one contender.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Samples {
    /// Room for `n` timings.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            nanos: Vec::with_capacity(n),
            sorted: true,
        }
    }

    /// Record one call.
    pub fn push(&mut self, elapsed: Duration) {
        self.nanos
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// How many calls were recorded.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The `q` quantile (0.0..=1.0, nearest rank), in nanoseconds.
    pub fn quantile(&mut self, q: f64) -> f64 {
        if self.nanos.is_empty() {
            return f64::NAN;
        }
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.nanos.len() - 1) as f64).round() as usize;
        self.nanos[rank] as f64
    }

    /// The median, in nanoseconds.
    pub fn median(&mut self) -> f64 {
        self.quantile(0.5)
    }

    /// The 99th percentile, in nanoseconds.
    pub fn p99(&mut self) -> f64 {
        self.quantile(0.99)
    }
}

/// Nanoseconds as microseconds with a precision that suits the magnitude.
pub fn micros(nanos: f64) -> String {
    let us = nanos / 1_000.0;
    if us < 10.0 {
        format!("{us:.2}")
    } else if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// A ratio such as `12.3×`.
pub fn ratio(value: f64, base: f64) -> String {
    let r = value / base;
    if r < 10.0 {
        format!("{r:.2}×")
    } else if r < 100.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.0}×")
    }
}

/// A markdown table: a header row and rows of cells.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for cell in cells {
            s.push(' ');
            s.push_str(cell);
            s.push_str(" |");
        }
        s.push('\n');
        s
    };
    out.push_str(&line(&mut header.iter().copied()));
    out.push_str(&line(&mut header.iter().map(|_| "---")));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}
