//! `tidings plugin run` and `tidings plugin check` as a user runs them.

use std::path::PathBuf;
use std::process::{Command, Output};

use tidings_tests::{fixtures_dir, guests};

fn tidings(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings-test-cli"))
        .args(args)
        .output()
        .expect("the tidings binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidings-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

#[test]
fn run_prints_the_decision_and_every_limit() {
    let out = tidings(&[
        "plugin",
        "run",
        guests::STANDARD_LIFECYCLE,
        "--event",
        &fixture("shipment_created.json"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decision: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is the decision JSON");
    assert_eq!(decision["actions"][0]["template"], "order-shipped");
    let stderr = text(&out.stderr);
    for limit in [
        "fuel (instructions)",
        "peak memory",
        "wall time",
        "component size",
        "output size",
        "actions",
    ] {
        assert!(stderr.contains(limit), "missing {limit} in:\n{stderr}");
    }
    assert!(stderr.contains("of     10,000,000"), "{stderr}");
}

#[test]
fn run_over_a_directory_reports_each_event_as_json() {
    let dir = fixtures_dir().display().to_string();
    let out = tidings(&[
        "plugin",
        "run",
        guests::STANDARD_LIFECYCLE,
        "--event",
        &dir,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("one JSON report per event");
    assert_eq!(reports.len(), 18);
    for report in &reports {
        assert!(
            report["limits"]["fuel"]["used"]
                .as_u64()
                .expect("fuel used")
                > 0
        );
        assert_eq!(report["limits"]["fuel"]["limit"], 10_000_000);
        assert_eq!(report["limits"]["component_bytes"]["limit"], 2 << 20);
    }
}

#[test]
fn a_wrong_event_field_is_named_with_its_path() {
    let original =
        std::fs::read_to_string(fixtures_dir().join("order_paid.json")).expect("fixture");
    let broken = original.replace("\"minor\": 13500", "\"minor\": \"a lot\"");
    let path = scratch("broken.json", &broken);
    let out = tidings(&[
        "plugin",
        "run",
        guests::STANDARD_LIFECYCLE,
        "--event",
        &path.display().to_string(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("field `order.total.minor`"), "{stderr}");
    assert!(stderr.contains("broken.json"), "{stderr}");
}

#[test]
fn an_unknown_event_kind_is_named() {
    let original =
        std::fs::read_to_string(fixtures_dir().join("order_paid.json")).expect("fixture");
    let path = scratch(
        "unknown-kind.json",
        &original.replace("\"kind\": \"order_paid\"", "\"kind\": \"order_teleported\""),
    );
    let out = tidings(&[
        "plugin",
        "run",
        guests::STANDARD_LIFECYCLE,
        "--event",
        &path.display().to_string(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("field `kind`") && stderr.contains("order_teleported"),
        "{stderr}"
    );
}

#[test]
fn a_limit_hit_is_reported_with_how_much() {
    let config = scratch("loop.json", r#"{"attack": "busy-fuel"}"#);
    let out = tidings(&[
        "plugin",
        "run",
        guests::HOSTILE,
        "--event",
        &fixture("order_created.json"),
        "--config",
        &config.display().to_string(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("FAULT: out of fuel: used all 10000000 instructions"),
        "{stderr}"
    );
    assert!(
        stderr.contains("10,000,000 of     10,000,000 (100.0%)"),
        "{stderr}"
    );
}

#[test]
fn check_prints_describe_and_rejects_a_core_module() {
    let out = tidings(&["plugin", "check", guests::VIP_CONCIERGE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["describe"]["name"], "vip-concierge");
    assert_eq!(report["contract"], "tidings:notify@0.1.0");
    assert!(report["describe"]["config_schema"].is_object());
    let imports = report["imports"].as_array().expect("the imports");
    assert!(
        !imports.is_empty()
            && imports
                .iter()
                .all(|i| i.as_str().is_some_and(|i| i.starts_with("tidings:notify/"))),
        "a plugin built with the SDK imports only the contract: {imports:?}"
    );
    assert_eq!(
        report["bump_alloc"], true,
        "a plugin built with the SDK declares its bump allocator"
    );

    let core = scratch("core.wasm", "\0asm\u{1}\0\0\0");
    let out = tidings(&["plugin", "check", &core.display().to_string()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("core WebAssembly module, not a component"));
}

#[test]
fn a_missing_file_says_which() {
    let out = tidings(&[
        "plugin",
        "run",
        "/nonexistent/plugin.wasm",
        "--event",
        &fixture("delivered.json"),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read /nonexistent/plugin.wasm"));
}

/// The order event shown in the README is complete and valid: the SDK's
/// event type and the host's ingest (what `--event` and `POST /v1/events`
/// use) both accept it as it is written.
#[test]
fn the_readme_order_event_example_is_a_valid_event() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let section = readme
        .split_once("## The order event (JSON)")
        .expect("the README has the order event section")
        .1;
    let block = section
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("the section has a JSON block")
        .0;
    assert!(!block.contains('…'), "the example is shortened: {block}");
    let event = tidings_sdk::types::OrderEvent::from_json(block)
        .unwrap_or_else(|e| panic!("the README example is not a valid event: {e}"));
    assert_eq!(event.kind, tidings_sdk::types::EventKind::ShipmentCreated);
    let shipment = event.shipment.as_ref().expect("the example has a shipment");
    assert_eq!(shipment.tracking_number.as_deref(), Some("BRT123456789IT"));
    assert!(!shipment.items.is_empty());
    tidings_host::ingest::parse(block)
        .unwrap_or_else(|e| panic!("the host refuses the README example: {e}"));

    // And the local runner decides on it.
    let path = scratch("readme-event.json", block);
    let out = tidings(&[
        "plugin",
        "run",
        guests::STANDARD_LIFECYCLE,
        "--event",
        &path.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("order-shipped"),
        "{}",
        text(&out.stdout)
    );
}
