//! Render cost: the bundled `order-confirmation` email (subject, text and an
//! HTML part extending the layout) for the sample `order_created` event,
//! timed per call, compiled for every render (`render::render`, as template
//! previews do) and compiled once (`TemplateCache::render`, as the message
//! worker does). The two alternate call by call.
//!
//! `cargo bench -p tidings-bench --bench render`. `TIDINGS_BENCH_ROUNDS` sets
//! the number of renders (default 3,000).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use tidings_bench::{Samples, markdown_table, micros, ratio, workspace_root};
use tidings_host::render::{self, RenderRequest, ShopInfo, TemplateCache, TemplateSet};
use tidings_sdk::types::{Channel, EventKind};

fn main() {
    let rounds: usize = std::env::var("TIDINGS_BENCH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("TIDINGS_BENCH_ROUNDS is a number"))
        .unwrap_or(3_000);

    let dir = workspace_root().join("plugins/standard-lifecycle/templates/en");
    let mut templates = TemplateSet::new();
    for name in ["order-confirmation", render::LAYOUT] {
        let source = std::fs::read_to_string(dir.join(format!("{name}.email.jinja")))
            .expect("the bundled templates are readable");
        let parts = render::parse_parts(&source).expect("the bundled templates parse");
        templates.insert((name.to_owned(), Channel::Email, "en".to_owned()), parts);
    }
    let event = tidings_sdk::testing::fixture(EventKind::OrderCreated);
    let data = BTreeMap::new();
    let shop = ShopInfo {
        name: "Bottega Verde".to_owned(),
        url: "https://shop.example.com".to_owned(),
        support_email: "help@shop.example.com".to_owned(),
    };
    let request = RenderRequest {
        template: "order-confirmation",
        channel: Channel::Email,
        locale: None,
        tenant_default_locale: "en",
        event: &event,
        data: &data,
        shop: &shop,
        now: "2026-11-23T10:00:00Z".parse().expect("a valid timestamp"),
        fuel: render::DEFAULT_FUEL,
    };

    let cache = TemplateCache::default();
    assert_eq!(
        render::render(&templates, &request).expect("the bundled template renders"),
        cache
            .render(&templates, &request)
            .expect("the bundled template renders"),
    );
    let mut fresh = Samples::with_capacity(rounds);
    let mut cached = Samples::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let rendered = render::render(black_box(&templates), black_box(&request));
        fresh.push(start.elapsed());
        black_box(rendered.expect("the bundled template renders"));

        let start = Instant::now();
        let rendered = cache.render(black_box(&templates), black_box(&request));
        cached.push(start.elapsed());
        black_box(rendered.expect("the bundled template renders"));
    }
    let base = fresh.median();
    let rows: Vec<Vec<String>> = [
        ("`render::render`: compiled for every render", &mut fresh),
        ("`TemplateCache::render`: compiled once", &mut cached),
    ]
    .into_iter()
    .map(|(name, samples)| {
        let median = samples.median();
        vec![
            name.to_owned(),
            micros(median),
            micros(samples.p99()),
            ratio(median, base),
        ]
    })
    .collect();
    print!(
        "{}",
        markdown_table(
            &[
                "contender",
                "median µs",
                "p99 µs",
                "median ÷ compiled every time"
            ],
            &rows
        )
    );
}
