//! Plugins built with the SDK's defaults print, panic and read the
//! environment through the contract (`tidings_sdk::stdio`), import nothing
//! but the contract, and still get what the host's WASI gave them.

use std::sync::OnceLock;

use serde_json::json;
use tidings_host::decide::{DecideError, Decision, Fault, Plugin, Source};
use tidings_sdk::action::Action;
use tidings_sdk::types::EventKind;
use tidings_tests::{Host, TestHost, event, guests};

fn host() -> &'static (Host, Plugin) {
    static HOST: OnceLock<(Host, Plugin)> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = TestHost::new().build();
        let plugin = host.load(guests::STDIO_GUEST);
        (host, plugin)
    })
}

fn run(what: &str) -> Result<Decision, DecideError> {
    let (host, plugin) = host();
    host.decide(
        plugin,
        &event(EventKind::OrderCreated),
        json!({ "do": what }),
    )
}

/// The interfaces outside the contract that the component at `path` imports.
fn foreign_imports(path: &str) -> Vec<String> {
    let (host, _) = host();
    let plugin = host.load(path);
    assert!(
        !plugin.imports().is_empty(),
        "{} imports at least the contract's host interface",
        plugin.id()
    );
    plugin
        .imports()
        .iter()
        .filter(|name| !name.starts_with("tidings:notify/"))
        .cloned()
        .collect()
}

#[test]
fn sdk_plugins_import_only_the_contract() {
    for path in [
        guests::STANDARD_LIFECYCLE,
        guests::VIP_CONCIERGE,
        guests::CONFIGURABLE,
        guests::STDIO_GUEST,
    ] {
        assert_eq!(foreign_imports(path), Vec::<String>::new(), "{path}");
    }
    // Without `stdio-log` the standard library's stdio is WASI's.
    let hostile = foreign_imports(guests::HOSTILE);
    assert!(
        hostile.iter().any(|i| i.starts_with("wasi:cli/stderr@")),
        "{hostile:?}"
    );
}

#[test]
fn printed_lines_reach_the_plugin_log() {
    let decision = run("print").expect("printing is allowed");
    assert!(decision.outcome.is_ok());
    let lines: Vec<(&str, Source, &str)> = decision
        .log
        .iter()
        .map(|l| (l.level, l.source, l.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("info", Source::Log, "hello from the plugin"),
            ("warn", Source::Log, "warning from the plugin"),
            // Printed without a newline: logged when `decide` returns.
            ("info", Source::Log, "no newline"),
        ]
    );
}

#[test]
fn a_panic_is_a_trap_carrying_the_plugin_message() {
    let err = run("panic").expect_err("a panic faults");
    match err.fault {
        Fault::Trap { message } => assert!(
            message.contains("the plugin panicked at")
                && message.contains("stdio guest panicked on purpose"),
            "{message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(
        err.log
            .iter()
            .any(|l| l.message.contains("stdio guest panicked on purpose")),
        "the panic message is in the plugin log: {:?}",
        err.log
    );
    assert!(run("print").is_ok(), "the runtime still serves");
}

#[test]
fn exiting_is_a_trap() {
    match run("exit").expect_err("exiting faults").fault {
        Fault::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn the_environment_is_empty() {
    let decision = run("env").expect("reading the environment is allowed");
    let actions = decision.outcome.expect("actions");
    let Some(Action::Notify(notify)) = actions.first() else {
        panic!("one notify action, got {actions:?}")
    };
    assert_eq!(notify.data["home"], "Err(NotPresent)");
}
