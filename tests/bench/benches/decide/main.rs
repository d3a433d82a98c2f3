//! Decision cost: the bundled `standard-lifecycle` rule on every sample event,
//! run by each contender side by side in one process.
//!
//! Contenders: the rule called natively (the floor); Tidings' runtime (a fresh
//! sandbox per event, every limit on), directly and through its admission
//! path; a naive wasmtime host of the same component; the same rule as an
//! Extism plugin, reused across calls and fresh per call.
//!
//! Contenders are interleaved: in each round every contender, in an order
//! that rotates from round to round, decides every sample event twice: once
//! unrecorded, to warm the caches the previous contender evicted, then once
//! with each call timed on its own. Noise from the shared machine thus lands
//! on all contenders alike, while each still runs a stream of decisions back
//! to back, as a service does (alternating call by call would also charge
//! each contender for the caches the previous one evicted). Two unrecorded
//! calls, as before, left every contender's first pass after another's
//! slower than its next ones (BENCHMARKS.md, 2026-12-07). Before timing,
//! every contender's actions are checked against the native ones.
//!
//! `cargo bench -p tidings-bench --bench decide` (after `make plugins
//! extism-guest`; `make bench` does both). `TIDINGS_BENCH_ROUNDS` sets the
//! number of rounds (default 400); `TIDINGS_BENCH_ONLY=<text>` keeps only the
//! contenders whose name contains the text (and native), for profiling;
//! `TIDINGS_BENCH_SLOTS=1` shrinks Tidings' instance pool so that the bench
//! fits in valgrind's address space; `TIDINGS_BENCH_COMPONENT=<path>` runs
//! another build of the component (say, at another opt-level) in the Wasm
//! contenders but Extism.

mod extism_host;
mod naive;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings_bench::{Samples, markdown_table, micros, ratio};
use tidings_host::decide::{Limits, Runtime, RuntimeConfig};
use tidings_sdk::Rule;
use tidings_sdk::action::{Action, RuleError};
use tidings_sdk::types::{Context, OrderEvent};

/// What every contender returns: the rule's own result.
type Outcome = Result<Vec<Action>, RuleError>;

/// One way of running the rule.
struct Contender {
    name: &'static str,
    decide: Decide,
}

/// The Tidings component of `standard-lifecycle`, built by `make plugins`.
const COMPONENT: &str = "target/wasm32-wasip2/plugin/standard_lifecycle.wasm";
/// The Extism plugin of the same rule, built by `make extism-guest`.
const EXTISM_PLUGIN: &str = "target/extism/wasm32-unknown-unknown/release/extism_rule.wasm";

const NATIVE: &str = "native Rust (`StandardLifecycle::decide`)";
const TIDINGS: &str = "Tidings `Runtime::evaluate`: fresh sandbox, all limits";

fn main() {
    let rounds: usize = std::env::var("TIDINGS_BENCH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("TIDINGS_BENCH_ROUNDS is a number"))
        .unwrap_or(400);
    let events = tidings_bench::sample_events();
    let ctx = tidings_bench::sample_context();
    let component = match std::env::var("TIDINGS_BENCH_COMPONENT") {
        Ok(path) => std::fs::read(path),
        Err(_) => std::fs::read(tidings_bench::built(COMPONENT, "plugins")),
    }
    .expect("the component is readable");
    let extism_plugin = std::fs::read(tidings_bench::built(EXTISM_PLUGIN, "extism-guest"))
        .expect("the Extism plugin is readable");

    let only = std::env::var("TIDINGS_BENCH_ONLY").ok();
    let mut contenders = contenders(&component, &extism_plugin, only.as_deref());
    check_outcomes(&mut contenders, &events, &ctx);

    // Warm up: caches, lazily built state, the pool's warm slots.
    for _ in 0..20 {
        for (_, event) in &events {
            for c in &mut contenders {
                let _ = black_box((c.decide)(event, &ctx));
            }
        }
    }

    let mut samples: Vec<Samples> = contenders
        .iter()
        .map(|_| Samples::with_capacity(rounds * events.len()))
        .collect();
    let started = Instant::now();
    let n = contenders.len();
    for round in 0..rounds {
        for k in 0..n {
            let c = (k + round) % n;
            let decide = &mut contenders[c].decide;
            // Unrecorded: the first pass of a turn pays for the caches the
            // previous contender evicted, which says nothing about either.
            for (_, event) in &events {
                let _ = black_box(decide(black_box(event), &ctx));
            }
            for (_, event) in &events {
                let t = Instant::now();
                let _ = black_box(decide(black_box(event), &ctx));
                samples[c].push(t.elapsed());
            }
        }
    }
    let took = started.elapsed();

    print_report(&contenders, &mut samples, events.len(), rounds, took);
    println!("\n{}", usage(&component, &events, &ctx));
}

/// What the component consumes per decision in Tidings, for the reading of
/// the numbers.
fn usage(component: &[u8], events: &[(String, OrderEvent)], ctx: &Context) -> String {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("the runtime starts");
    let plugin = runtime.load(component).expect("the component loads");
    let limits = runtime.default_limits().clone();
    let usages: Vec<_> = events
        .iter()
        .map(|(_, event)| {
            runtime
                .evaluate(&plugin, event, ctx, &limits)
                .expect("standard-lifecycle does not fault")
                .usage
        })
        .collect();
    let n = usages.len() as u64;
    let fuel = usages.iter().map(|u| u.fuel).sum::<u64>() / n;
    let output = usages.iter().map(|u| u.output_bytes as u64).sum::<u64>() / n;
    let memory = usages
        .iter()
        .map(|u| u.peak_memory_bytes)
        .max()
        .unwrap_or(0);
    format!(
        "In Tidings the component ({} KiB) runs {fuel} Wasm instructions (fuel) per decision on \
         average, returns {output} bytes of actions as JSON, and its linear memory peaks at {} KiB.",
        component.len() >> 10,
        memory >> 10
    )
}

type Decide = Box<dyn FnMut(&OrderEvent, &Context) -> Outcome>;
/// Builds a contender (compiling, loading) only when it is selected.
type MakeDecide<'a> = Box<dyn FnOnce() -> Decide + 'a>;

/// The contenders whose name contains `only` (all when `None`), and native.
fn contenders(component: &[u8], extism_plugin: &[u8], only: Option<&str>) -> Vec<Contender> {
    let tidings = || {
        let mut config = RuntimeConfig::default();
        if let Ok(slots) = std::env::var("TIDINGS_BENCH_SLOTS") {
            // Fewer pool slots reserve less address space, as valgrind needs.
            config.engine_limits.max_concurrent = slots.parse().expect("a number of slots");
        }
        let runtime = Arc::new(Runtime::new(config).expect("the runtime starts"));
        let plugin = runtime.load(component).expect("the component loads");
        let limits: Limits = runtime.default_limits().clone();
        (runtime, plugin, limits)
    };
    let all: Vec<(&'static str, MakeDecide<'_>)> = vec![
        (
            NATIVE,
            Box::new(|| {
                Box::new(|event: &OrderEvent, ctx: &Context| {
                    <standard_lifecycle::StandardLifecycle as Rule>::decide(event, ctx)
                })
            }),
        ),
        (
            TIDINGS,
            Box::new(move || {
                let (runtime, plugin, limits) = tidings();
                Box::new(move |event: &OrderEvent, ctx: &Context| {
                    runtime
                        .evaluate(&plugin, event, ctx, &limits)
                        .expect("standard-lifecycle does not fault")
                        .outcome
                })
            }),
        ),
        (
            "Tidings `Runtime::decide`: the same, plus admission and `block_in_place` (multi-thread runtime, as in `tidings serve`)",
            Box::new(move || {
                let (runtime, plugin, limits) = tidings();
                let tokio = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .build()
                    .expect("a tokio runtime");
                Box::new(move |event: &OrderEvent, ctx: &Context| {
                    tokio
                        .block_on(runtime.decide(&ctx.tenant, &plugin, event, ctx, &limits))
                        .expect("standard-lifecycle does not fault")
                        .outcome
                })
            }),
        ),
        (
            "naive wasmtime: default config, new `Linker` and `instantiate` per call",
            Box::new(|| {
                let naive = naive::NaiveHost::new(component);
                Box::new(move |event: &OrderEvent, ctx: &Context| naive.decide(event, ctx))
            }),
        ),
        (
            "Extism, one plugin instance reused across calls (JSON in/out)",
            Box::new(|| {
                let mut plugin = extism_host::reused(extism_plugin);
                Box::new(move |event: &OrderEvent, ctx: &Context| {
                    extism_host::call(&mut plugin, event, ctx)
                })
            }),
        ),
        (
            "Extism, fresh plugin per call from a `CompiledPlugin` (JSON in/out)",
            Box::new(|| {
                let fresh = extism_host::Fresh::new(extism_plugin);
                Box::new(move |event: &OrderEvent, ctx: &Context| fresh.decide(event, ctx))
            }),
        ),
    ];
    all.into_iter()
        .filter(|(name, _)| {
            *name == NATIVE
                || only.is_none_or(|only| name.to_lowercase().contains(&only.to_lowercase()))
        })
        .map(|(name, make)| Contender {
            name,
            decide: make(),
        })
        .collect()
}

/// Every contender must decide exactly what the native rule decides.
fn check_outcomes(contenders: &mut [Contender], events: &[(String, OrderEvent)], ctx: &Context) {
    let (native, others) = contenders
        .split_first_mut()
        .expect("native is the first contender");
    let mut actions = 0;
    for (name, event) in events {
        let expected = (native.decide)(event, ctx);
        actions += expected.as_ref().map_or(0, Vec::len);
        for c in others.iter_mut() {
            let got = (c.decide)(event, ctx);
            assert_eq!(got, expected, "{} differs from native on {name}", c.name);
        }
    }
    assert!(actions > 0, "the sample events produce actions");
}

fn print_report(
    contenders: &[Contender],
    samples: &mut [Samples],
    events: usize,
    rounds: usize,
    took: Duration,
) {
    let native = samples[0].median();
    let tidings = contenders
        .iter()
        .position(|c| c.name == TIDINGS)
        .map_or(f64::NAN, |i| samples[i].median());
    let rows: Vec<Vec<String>> = contenders
        .iter()
        .zip(samples.iter_mut())
        .map(|(c, s)| {
            let median = s.median();
            vec![
                c.name.to_owned(),
                micros(median),
                micros(s.p99()),
                ratio(median, native),
                ratio(median, tidings),
            ]
        })
        .collect();
    println!(
        "## Decision cost: standard-lifecycle, {events} sample events × {rounds} rounds, \
         interleaved ({} decisions per contender, {:.1} s)\n",
        samples[0].len(),
        took.as_secs_f64()
    );
    print!(
        "{}",
        markdown_table(
            &[
                "contender",
                "median µs",
                "p99 µs",
                "median ÷ native",
                "median ÷ Tidings",
            ],
            &rows,
        )
    );
}
