//! Markdown tables, and writing them into `BENCHMARKS.md`.
//!
//! Each section's tables sit between `<!-- tidings-load:NAME -->` and
//! `<!-- /tidings-load:NAME -->`; only that part is replaced, so the prose
//! around it and other sections (the decision-cost bench) stay as written.

use std::fmt::Write as _;
use std::path::Path;

use crate::density::{Report, SHARED_RESTARTS, WARM_RUNS};
use crate::e2e::{Options, Rate, Throughput};
use crate::stats::{mib, ms};

pub fn end_to_end(options: &Options, throughput: &[Throughput], rates: &[Rate]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Full speed: {} `order_created` events (one order and one email each) over {} keep-alive connections. Messages/s while posting: handed to the transport until the last POST was answered, over that time; after: the rest, over the time it took. Handed over at once: messages the event worker gave straight to the message worker as it stored them, without a lease from the table. CPU per event, from the first POST to the last message handed over: the service's (all threads), this load generator's; idle: the share of the machine's two cores' time that nobody used over that span.\n",
        options.events, options.connections
    );
    s.push_str("| database | transport | events/s, POST → handed to transport | ingest events/s (all 202s) | messages/s while posting | messages/s after | ack p50 ms | ack p99 ms | service CPU µs per event | load generator CPU µs per event | machine idle | handed over at once | delivered |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for t in throughput {
        let after = t.end_to_end.saturating_sub(t.ingest).as_secs_f64();
        let _ = writeln!(
            s,
            "| {} | {} | **{:.0}** | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} % | {} | {}/{} |",
            t.db.name(),
            t.transport.name(),
            t.events as f64 / t.end_to_end.as_secs_f64(),
            t.events as f64 / t.ingest.as_secs_f64(),
            t.sent_while_posting as f64 / t.ingest.as_secs_f64(),
            t.events.saturating_sub(t.sent_while_posting as usize) as f64 / after.max(1e-3),
            ms(t.acks.quantile(0.5)),
            ms(t.acks.quantile(0.99)),
            t.cpu.as_secs_f64() * 1e6 / t.events as f64,
            t.load_cpu.as_secs_f64() * 1e6 / t.events as f64,
            t.idle * 100.0,
            t.handed_over,
            t.delivered,
            t.events,
        );
    }
    let _ = writeln!(
        s,
        "\nFixed rate, open loop: {} events/s for {} s; latency from each request's scheduled send time to its 202.\n",
        options.rate, options.secs
    );
    s.push_str("| database | transport | offered events/s | ack p50 ms | ack p99 ms | ack max ms | errors | sent during the window | drained after | handed over at once |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rates {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | **{}** | {} | {} | {}/{} | {} | {} |",
            r.db.name(),
            r.transport.name(),
            r.offered,
            ms(r.acks.quantile(0.5)),
            ms(r.acks.quantile(0.99)),
            ms(r.acks.max()),
            r.errors,
            r.sent_in_window,
            r.rate * r.secs as usize,
            r.drain
                .map_or(format!("> {} s", crate::e2e::DRAIN_WAIT.as_secs()), |d| {
                    format!("{:.1} s", d.as_secs_f64())
                }),
            r.handed_over,
        );
    }
    s
}

pub fn density(d: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} tenants, each with one installed plugin: {} install one of the 3 bundled plugins (uploaded once, shared) with varied configs, {} upload their own component (a bundled one plus a custom section: its own sha256 and compiled artifact). SQLite. Setup over the API ({} concurrent clients): {:.1} s; one dry-run decision per tenant: {:.1} s.\n",
        d.tenants,
        d.tenants - d.unique,
        d.unique,
        16,
        d.setup.as_secs_f64(),
        d.decisions.as_secs_f64(),
    );
    s.push_str("| service resident memory | VmRSS MiB | VmHWM MiB |\n|---|---:|---:|\n");
    let _ = writeln!(s, "| started, empty | {} | |", mib(d.rss_start));
    let _ = writeln!(
        s,
        "| after setup ({} distinct components loaded) | {} | {} |",
        3 + d.unique,
        mib(d.rss_setup.0),
        mib(d.rss_setup.1)
    );
    let _ = writeln!(
        s,
        "| after one decision per tenant | **{}** | {} |",
        mib(d.rss_decided.0),
        mib(d.rss_decided.1)
    );
    let _ = writeln!(
        s,
        "| restarted, nothing loaded | {} | |",
        mib(d.rss_restart)
    );
    let _ = writeln!(
        s,
        "| restarted, after the cold samples below | {} | |",
        mib(d.rss_restart_cold)
    );
    let _ = write!(
        s,
        "\nFirst decision of a tenant whose plugin is not loaded in this process (restarted service; \
         the precompiled artifact on disk), as `POST /v1/plugins/{{id}}/dry-run` round trips, after a \
         `GET /v1/plugins/{{id}}` with the tenant's key (so the first does not also read the key from \
         the database, which the event worker never does): the first \
         loads the plugin (the artifact found by the plugin's recorded sha256, mapped from the \
         cache directory, deserialized and linked), the next {WARM_RUNS} find it loaded; the first minus \
         the median of those {WARM_RUNS} is the load. `decision µs` is the sandboxed decision's own \
         recorded wall time in that median run. A shared plugin is cold once per process, so its \
         samples come from {SHARED_RESTARTS} restarts, one each.\n\n",
    );
    s.push_str("| plugin | samples | first dry-run ms (median / max) | warm ms (median) | load = first − warm, ms (median / max) | decision µs (median) |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|\n");
    let mut groups: Vec<&str> = d.cold.iter().map(|c| c.what.as_str()).collect();
    groups.sort();
    groups.dedup();
    for group in groups {
        let samples: Vec<_> = d.cold.iter().filter(|c| c.what == group).collect();
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() - 1])
        };
        let first = median(
            samples
                .iter()
                .map(|c| c.first.as_secs_f64() * 1e3)
                .collect(),
        );
        let warm = median(samples.iter().map(|c| c.warm.as_secs_f64() * 1e3).collect());
        let load = median(
            samples
                .iter()
                .map(|c| (c.first.as_secs_f64() - c.warm.as_secs_f64()) * 1e3)
                .collect(),
        );
        let decision = median(samples.iter().map(|c| c.decision_us as f64).collect());
        let _ = writeln!(
            s,
            "| {group} | {} | {:.2} / {:.2} | {:.2} | **{:.2}** / {:.2} | {:.0} |",
            samples.len(),
            first.0,
            first.1,
            warm.0,
            load.0,
            load.1,
            decision.0
        );
    }
    let _ = writeln!(
        s,
        "\nUpload-to-active of a component the host has never seen (standard-lifecycle plus a new custom section): \
         `POST /v1/plugins` (validate, compile with Cranelift, cache) **{} ms**, install {} ms, first dry run {} ms: \
         **{} ms** in all.",
        ms(d.upload),
        ms(d.install),
        ms(d.first_dry_run),
        ms(d.upload + d.install + d.first_dry_run)
    );
    s
}

fn title(name: &str) -> &'static str {
    match name {
        "end-to-end" => "End to end",
        _ => "Density",
    }
}

fn header() -> String {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "# Benchmarks\n\nLatest results, {}. Machine: {} cores ({cpu}), memory:\n\n```\n{}\n```\n",
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        run("nproc", &[]),
        run("free", &["-g"]),
    )
}

/// Put `sections` into `path` between their markers, creating the file or
/// the section when missing.
pub fn write(path: &Path, command: &str, sections: &[(&str, String)]) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_else(|_| header());
    for (name, body) in sections {
        let (open, close) = (
            format!("<!-- tidings-load:{name} -->"),
            format!("<!-- /tidings-load:{name} -->"),
        );
        let block = format!(
            "{open}\n_Generated by `{command}` on {}._\n\n{body}{close}",
            std::process::Command::new("date")
                .args(["-u", "+%Y-%m-%d %H:%M UTC"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        );
        match (text.find(&open), text.find(&close)) {
            (Some(start), Some(end)) if end > start => {
                text.replace_range(start..end + close.len(), &block);
            }
            _ => {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("\n## {}\n\n{block}\n", title(name)));
            }
        }
    }
    std::fs::write(path, text)?;
    Ok(())
}
