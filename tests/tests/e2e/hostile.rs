//! Adversarial guests: each attack gets its specific fault (or a harmless,
//! virtualised answer) and the runtime keeps serving the next decision.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_host::decide::{DecideError, Decision, Fault, LoadError, Plugin, Source};
use tidings_sdk::action::Action;
use tidings_sdk::types::{
    Channel, Context, EventKind, OpenEscalation, OrderEvent, Priority, SentNotification,
};
use tidings_tests::{Host, TestHost, event, guests};

fn host() -> &'static (Host, Plugin) {
    static HOST: OnceLock<(Host, Plugin)> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = TestHost::new().build();
        let plugin = host.load(guests::HOSTILE);
        (host, plugin)
    })
}

fn attack(name: &str) -> Result<Decision, DecideError> {
    let (host, plugin) = host();
    host.decide(
        plugin,
        &event(EventKind::OrderCreated),
        json!({ "attack": name }),
    )
}

fn fault(name: &str) -> Fault {
    let err = attack(name).expect_err("the attack must fault");
    assert_eq!(err.plugin.name, "hostile-guest", "faults name the plugin");
    assert_eq!(err.plugin.version, "0.1.0", "faults name the version");
    err.fault
}

/// The same runtime serves a normal decision right after the attack.
fn assert_still_serving() {
    let decision = attack("none").expect("a normal decision after an attack");
    assert_eq!(decision.outcome.expect("actions").len(), 1);
}

/// The variables of the probe's one notify action.
fn probe(name: &str) -> BTreeMap<String, String> {
    let decision = attack(name).expect("the probe returns normally");
    let actions = decision.outcome.expect("the probe returns actions");
    let Some(Action::Notify(notify)) = actions.first() else {
        panic!("the probe returns a notify action, got {actions:?}")
    };
    notify.data.clone()
}

fn result_of(name: &str) -> String {
    let data = probe(name);
    data.get("result")
        .cloned()
        .unwrap_or_else(|| format!("{data:?}"))
}

/// Loading `bytes` fails, and the runtime that refused them still serves.
fn refused(bytes: &[u8]) -> LoadError {
    let (host, _) = host();
    let err = host.runtime.load(bytes).expect_err("rejected");
    assert_still_serving();
    err
}

fn read_guest(path: &str) -> Vec<u8> {
    std::fs::read(path).expect("guest components are built by build.rs")
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    assert_eq!(
        fault("infinite-loop"),
        Fault::OutOfFuel { limit: 10_000_000 }
    );
    assert_still_serving();
}

#[test]
fn infinite_loop_with_unlimited_fuel_hits_the_wall_clock_deadline() {
    let (host, plugin) = host();
    let mut limits = host.runtime.default_limits().clone();
    limits.fuel = u64::MAX / 2;
    let started = Instant::now();
    let err = host
        .decide_with(
            plugin,
            &event(EventKind::OrderCreated),
            json!({"attack": "infinite-loop"}),
            &limits,
        )
        .expect_err("the loop must be interrupted");
    assert_eq!(err.fault, Fault::Timeout { limit_ms: 50 });
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the deadline interrupts promptly"
    );
    assert!(
        err.usage.wall_time_us >= 50_000,
        "not before the deadline: {:?}",
        err.usage
    );
    assert_still_serving();
}

#[test]
fn busy_computation_runs_out_of_fuel() {
    assert_eq!(fault("busy-fuel"), Fault::OutOfFuel { limit: 10_000_000 });
    assert_still_serving();
}

#[test]
fn memory_hog_hits_the_memory_limit() {
    match fault("memory-hog") {
        Fault::MemoryLimit {
            requested_bytes,
            limit_bytes,
        } => {
            assert_eq!(limit_bytes, 16 << 20);
            assert!(requested_bytes > limit_bytes);
        }
        other => panic!("expected a memory limit fault, got {other:?}"),
    }
    assert_still_serving();
}

#[test]
fn deep_recursion_overflows_the_wasm_stack() {
    assert_eq!(
        fault("deep-recursion"),
        Fault::StackOverflow {
            limit_bytes: 512 << 10
        }
    );
    assert_still_serving();
}

#[test]
fn overflowing_the_linear_memory_stack_is_a_trap() {
    // Rust's wasm targets put the stack below the data: running past it
    // falls off address zero, which the bundled plugins' smaller stack
    // (`plugins/build.rs`) relies on.
    match fault("big-frames") {
        Fault::Trap { message } => assert!(
            message.contains("out of bounds memory access"),
            "expected an out-of-bounds trap, got {message}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_still_serving();
}

#[test]
fn giant_output_is_too_large() {
    match fault("giant-output") {
        Fault::OutputTooLarge {
            what,
            actual,
            limit,
        } => {
            assert_eq!(what, "output bytes");
            assert!(actual > 1 << 20);
            assert_eq!(limit, 64 << 10);
        }
        other => panic!("expected output too large, got {other:?}"),
    }
    assert_still_serving();
}

#[test]
fn too_many_actions_are_refused() {
    assert_eq!(
        fault("too-many-actions"),
        Fault::OutputTooLarge {
            what: "actions",
            actual: 1_000,
            limit: 32
        }
    );
    assert_still_serving();
}

#[test]
fn panic_is_a_trap_carrying_the_guest_message() {
    match fault("panic") {
        Fault::Trap { message } => {
            assert!(
                message.contains("hostile guest panicked on purpose"),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_still_serving();
}

#[test]
fn abort_is_a_trap() {
    match fault("abort") {
        Fault::Trap { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_still_serving();
}

#[test]
fn sleeping_is_refused_instead_of_holding_a_thread() {
    let started = Instant::now();
    match fault("sleep") {
        Fault::Trap { message } => assert!(message.contains("may not sleep"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_still_serving();
}

#[test]
fn files_are_not_there() {
    let data = probe("read-file");
    assert!(data["result"].starts_with("err:"), "{data:?}");
    assert!(
        data["read_dir"].starts_with("err:"),
        "listing `.` must fail: {data:?}"
    );
    assert_still_serving();
}

#[test]
fn environment_is_empty() {
    let result = result_of("read-env");
    assert!(result.contains("vars=[]"), "{result}");
    assert!(result.contains("NotPresent"), "{result}");
    assert_still_serving();
}

#[test]
fn sockets_are_denied() {
    let result = result_of("open-socket");
    assert!(result.starts_with("err:"), "{result}");
    assert_still_serving();
}

#[test]
fn the_clock_reads_the_decision_time_and_does_not_advance() {
    let decision = attack("read-clock").expect("the probe returns");
    let actions = decision.outcome.expect("actions");
    let data = &actions[0].message().expect("a notify").data;
    let expected = event(EventKind::OrderCreated).occurred_at.as_millisecond();
    assert_eq!(data["system_time_ms"], expected.to_string());
    assert_eq!(data["instant_ns"], "0");
    assert_still_serving();
}

#[test]
fn randomness_is_seeded_by_the_event_id() {
    let (host, plugin) = host();
    let config = json!({ "attack": "random" });
    let first = event(EventKind::OrderCreated);
    let mut second = first.clone();
    second.id = "evt_other".into();
    let draw = |e| {
        let decision = host
            .decide(plugin, e, config.clone())
            .expect("the probe returns");
        decision.outcome.expect("actions")[0]
            .message()
            .expect("a notify")
            .data
            .clone()
    };
    assert_eq!(draw(&first), draw(&first), "same event, same randomness");
    assert_ne!(
        draw(&first),
        draw(&second),
        "another event, other randomness"
    );
    assert_still_serving();
}

#[test]
fn the_same_event_and_context_always_yield_the_same_decision() {
    let (host, _) = host();
    let plugin = host.load(guests::STANDARD_LIFECYCLE);
    for kind in EventKind::ALL {
        let e = event(kind);
        let a = host.decide(&plugin, &e, json!({})).expect("decides");
        let b = host.decide(&plugin, &e, json!({})).expect("decides");
        assert_eq!(a.outcome, b.outcome, "{kind}");
        assert_eq!(
            a.usage.fuel, b.usage.fuel,
            "{kind}: fuel is deterministic too"
        );
    }
}

#[test]
fn a_flooded_log_is_truncated_not_failed() {
    let decision = attack("log-flood").expect("logging too much is not a fault");
    assert!(decision.outcome.is_ok());
    let kept: usize = decision.log.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 4096, "kept {kept} bytes");
    assert!(decision.log_truncated_bytes > 0);
}

#[test]
fn stdout_and_stderr_go_to_the_plugin_log() {
    let decision = attack("stdout").expect("printing is allowed");
    let line = |source| {
        decision
            .log
            .iter()
            .find(|l| l.source == source)
            .map(|l| l.message.clone())
            .unwrap_or_default()
    };
    assert_eq!(line(Source::Stdout), "hello from the plugin");
    assert_eq!(line(Source::Stderr), "warning from the plugin");
}

#[test]
fn a_rule_error_is_an_outcome_not_a_fault() {
    let decision = attack("rule-error").expect("a rule error is not a fault");
    let err = decision.outcome.expect_err("the plugin's own error");
    assert_eq!(err.code, "invalid-config");
}

#[test]
fn malformed_bytes_are_rejected() {
    let err = refused(b"definitely not wasm");
    assert!(matches!(err, LoadError::Malformed), "{err}");
    let mut truncated = read_guest(guests::STANDARD_LIFECYCLE);
    truncated.truncate(truncated.len() / 2);
    let err = refused(&truncated);
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

#[test]
fn a_core_module_is_not_a_component() {
    let empty_core_module = b"\0asm\x01\0\0\0";
    let err = refused(empty_core_module);
    assert!(matches!(err, LoadError::CoreModule), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"));
}

#[test]
fn a_component_over_the_size_limit_is_rejected_before_compiling() {
    let mut bytes = read_guest(guests::STANDARD_LIFECYCLE);
    // A valid component padded with a 2 MiB custom section.
    let payload = vec![0u8; 2 << 20];
    let name = b"padding";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    bytes.push(0);
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        bytes.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&section);
    match refused(&bytes) {
        LoadError::TooLarge { size, limit } => {
            assert_eq!(size, bytes.len());
            assert_eq!(limit, 2 << 20);
        }
        other => panic!("expected too large, got {other}"),
    }
}

#[test]
fn a_component_built_against_another_contract_major_is_refused() {
    match refused(&read_guest(guests::FUTURE_CONTRACT)) {
        LoadError::UnsupportedContract { found, supported } => {
            assert_eq!(found, "1.0.0");
            assert_eq!(supported, "0.1.0");
        }
        other => panic!("expected unsupported contract, got {other}"),
    }
}

#[test]
fn a_component_without_the_plugin_export_is_not_a_plugin() {
    let err = refused(&read_guest(guests::NOT_A_PLUGIN));
    assert!(matches!(err, LoadError::NotAPlugin), "{err}");
    assert!(
        err.to_string().contains("tidings:notify/plugin"),
        "the error names the missing export: {err}"
    );
}

#[test]
fn a_component_importing_what_the_host_does_not_provide_fails_to_link() {
    match refused(&read_guest(guests::MISSING_IMPORT)) {
        LoadError::Link(message) => {
            assert!(
                message.contains("hostile:probe/secrets"),
                "the error names the import: {message}"
            );
        }
        other => panic!("expected a link error, got {other}"),
    }
}

#[test]
fn a_component_whose_initialisation_traps_is_an_instantiation_fault() {
    // The host instantiates a plugin at load to call `describe()`, so a
    // component that cannot be instantiated never becomes a `Plugin`.
    match refused(&read_guest(guests::INIT_TRAP)) {
        LoadError::Describe(Fault::Instantiation { message }) => {
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("expected an instantiation fault, got {other}"),
    }
}

#[test]
fn an_empty_template_name_is_invalid_output() {
    match fault("invalid-output") {
        Fault::InvalidOutput { message } => {
            assert!(
                message.contains("action 0") && message.contains("template ``"),
                "{message}"
            );
        }
        other => panic!("expected invalid output, got {other:?}"),
    }
    assert_still_serving();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_decisions_than_instance_slots_queue_instead_of_failing() {
    let host = TestHost::new()
        .engine_limits(|l| {
            l.max_concurrent = 2;
            l.max_concurrent_per_tenant = 2;
        })
        .build();
    let plugin = host.load(guests::STANDARD_LIFECYCLE);
    let limits = host.runtime.default_limits().clone();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (runtime, plugin, limits) = (host.runtime.clone(), plugin.clone(), limits.clone());
        tasks.push(tokio::spawn(async move {
            let e = event(EventKind::ALL[i % EventKind::ALL.len()]);
            let ctx = tidings_sdk::types::Context::new("busy-shop", e.occurred_at);
            runtime
                .decide("busy-shop", &plugin, &e, &ctx, &limits)
                .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("every decision succeeds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_stuck_in_loops_does_not_hold_up_another_tenant() {
    let host = TestHost::new()
        .engine_limits(|l| {
            l.max_concurrent = 4;
            l.max_concurrent_per_tenant = 1;
        })
        .limits(|l| l.fuel = u64::MAX / 2)
        .build();
    let hostile = host.load(guests::HOSTILE);
    let standard = host.load(guests::STANDARD_LIFECYCLE);
    let limits = host.runtime.default_limits().clone();
    let e = event(EventKind::OrderCreated);

    let mut noisy = Vec::new();
    for _ in 0..6 {
        let (runtime, plugin, limits, e) = (
            host.runtime.clone(),
            hostile.clone(),
            limits.clone(),
            e.clone(),
        );
        noisy.push(tokio::spawn(async move {
            let mut ctx = tidings_sdk::types::Context::new("noisy", e.occurred_at);
            ctx.config = json!({"attack": "infinite-loop"});
            let _ = runtime.decide("noisy", &plugin, &e, &ctx, &limits).await;
            Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let ctx = tidings_sdk::types::Context::new("quiet", e.occurred_at);
    host.runtime
        .decide("quiet", &standard, &e, &ctx, &limits)
        .await
        .expect("the quiet tenant decides");
    let quiet_done = Instant::now();

    let mut last_noisy = quiet_done;
    for task in noisy {
        last_noisy = last_noisy.max(task.await.expect("task"));
    }
    // The noisy tenant's six 50 ms loops run one at a time (its limit is 1),
    // so they end ~300 ms in; the quiet tenant must not have waited for them.
    assert!(
        last_noisy.duration_since(quiet_done) > Duration::from_millis(100),
        "the quiet tenant finished only {:?} before the noisy one",
        last_noisy.duration_since(quiet_done)
    );
}

/// The host copies every string and list of `decide`'s arguments into one
/// allocation in the guest when the plugin declares the SDK's bump allocator
/// (a custom section), and into one allocation each otherwise. Either way
/// the plugin receives the event exactly: multi-byte and empty strings, and
/// lists empty or not, of every element type, each aligned as it needs. The
/// declaration is kept with the compiled artifact, so a restarted host that
/// loads the plugin from its cache still knows it.
#[test]
fn the_event_reaches_the_plugin_whole_in_one_allocation_or_one_per_string() {
    let cache = std::env::temp_dir().join(format!("tidings-arena-{}", std::process::id()));
    let host = TestHost::new().cache_dir(cache.clone()).build();
    let declared_bytes = std::fs::read(guests::HOSTILE).expect("the hostile guest is built");
    // The same component with the section renamed (same length): no longer
    // a declaration, so its strings are lowered the canonical way.
    let marker = b"tidings:bump-alloc";
    let at = declared_bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the SDK's bump allocator declares itself");
    let mut undeclared_bytes = declared_bytes.clone();
    undeclared_bytes[at..at + marker.len()].copy_from_slice(b"tidings:bump-xxxxx");

    let declared = host.runtime.load(&declared_bytes).expect("loads");
    let undeclared = host.runtime.load(&undeclared_bytes).expect("loads");
    assert!(declared.bump_alloc());
    assert!(!undeclared.bump_alloc());

    let mut unusual = event(EventKind::ShipmentCreated);
    unusual.order.customer.first_name = Some("Zoë 🦀".into());
    unusual.order.tags.push(String::new());
    unusual.order.tags.push("città".into());
    unusual
        .attributes
        .insert("note".into(), "Ünïcödé ✓ ".repeat(50));
    let mut ctx = Context::new("shop-é", unusual.occurred_at);
    ctx.config = json!({ "attack": "echo", "greeting": "ciao 👋", "n": [1, 2.5, null] });
    ctx.history = vec![
        SentNotification {
            template: "order-confirmation".into(),
            channel: Channel::Email,
            at: unusual.order.created_at,
        },
        SentNotification {
            template: String::new(),
            channel: Channel::Sms,
            at: unusual.occurred_at,
        },
    ];
    ctx.open_escalations = vec![OpenEscalation {
        queue: "vip-care".into(),
        priority: Priority::High,
        opened_at: unusual.occurred_at,
    }];
    let events = EventKind::ALL
        .iter()
        .map(|&kind| event(kind))
        .chain([unusual]);
    for sent in events {
        // What a plugin may see: whether an address exists, not the address.
        let mut seen = sent.clone();
        let customer = &mut seen.order.customer;
        customer.has_email |= customer.email.take().is_some_and(|a| !a.is_empty());
        customer.has_phone |= customer.phone.take().is_some_and(|a| !a.is_empty());
        for plugin in [&declared, &undeclared] {
            let limits = host.runtime.default_limits();
            let decision = host
                .runtime
                .evaluate(plugin, &sent, &ctx, limits)
                .expect("echo returns normally");
            let actions = decision.outcome.expect("echo returns actions");
            let echoed = &actions[0].message().expect("a notify").data;
            let why = format!("{} (bump allocator: {})", sent.kind, plugin.bump_alloc());
            let received: OrderEvent = serde_json::from_str(&echoed["event"]).expect("an event");
            assert_eq!(received, seen, "{why}");
            let received: Context = serde_json::from_str(&echoed["context"]).expect("a context");
            assert_eq!(received, ctx, "{why}");
        }
    }

    let restarted = TestHost::new().cache_dir(cache.clone()).build();
    for plugin in [&declared, &undeclared] {
        let again = restarted
            .runtime
            .load_compiled(
                &plugin.id().sha256,
                plugin.size(),
                Some(plugin.info().clone()),
            )
            .expect("loads")
            .expect("compiled on disk");
        assert_eq!(again.bump_alloc(), plugin.bump_alloc());
    }

    // A cache written before the declaration existed cannot say whether a
    // plugin declares it: its artifacts are not read, and the plugin is
    // compiled again from its bytes.
    for entry in std::fs::read_dir(&cache).expect("the cache directory") {
        let path = entry.expect("an entry").path();
        let name = path.to_string_lossy().into_owned();
        std::fs::rename(
            &path,
            name.replace(".bump.cwasm", ".cwasm")
                .replace(".plain.cwasm", ".cwasm"),
        )
        .expect("renamed");
    }
    let upgraded = TestHost::new().cache_dir(cache.clone()).build();
    let stale = upgraded
        .runtime
        .load_compiled(
            &declared.id().sha256,
            declared.size(),
            Some(declared.info().clone()),
        )
        .expect("a cache miss is no error");
    assert!(
        stale.is_none(),
        "an artifact without the declaration in its name is not read"
    );
    assert!(
        upgraded
            .runtime
            .load(&declared_bytes)
            .expect("loads")
            .bump_alloc()
    );
    // Compiled again, the plugin's artifact has its new name, and the old
    // one is gone; the other plugin's, not compiled again, stays.
    let names: Vec<String> = std::fs::read_dir(&cache)
        .expect("the cache directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let (declared_sha, undeclared_sha) = (&declared.id().sha256, &undeclared.id().sha256);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(declared_sha.as_str()) && n.ends_with(".bump.cwasm")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with(undeclared_sha.as_str())
            && n.ends_with(".cwasm")
            && !n.ends_with(".plain.cwasm")),
        "{names:?}"
    );
    let _ = std::fs::remove_dir_all(cache);
}
