//! An adversarial plugin for the host's tests: one component, many attacks.
//!
//! The merchant config picks the attack, `{"attack": "<name>"}`; the event is
//! ignored except by `echo`. A config without a string `attack` is a
//! `rule-error` with code `invalid-config`; an attack not listed here is a
//! `rule-error` with code `unknown-attack`.
//!
//! Faults — the plugin never returns normally:
//!
//! - `infinite-loop`: spins forever on a `black_box`ed counter. Only the
//!   host's fuel or wall-clock limit ends it.
//! - `busy-fuel`: a long but finite loop: 50 million `black_box`ed additions
//!   by default (`{"iterations": n}` overrides) at 19 fuel each, so about
//!   950 million fuel, yet about 20 ms natively and 50 ms in wasmtime. A
//!   10 million fuel limit stops it well before any sensible wall-clock
//!   limit; without one it returns one `order-confirmation` email with the
//!   `sum`.
//! - `memory-hog`: allocates 1 MiB buffers and keeps them, up to 1 GiB,
//!   writing `0xA5` into every 4 KiB page of each so the memory is really
//!   used. It costs about 5,000 fuel per MiB, so the memory limit, not fuel,
//!   stops it: the failed `memory.grow` makes the allocation fail, which
//!   aborts (an `unreachable` trap) unless the host's limiter traps first.
//!   If the host lets all 1 GiB through, it returns one `order-confirmation`
//!   email with `allocated_mib` = `"1024"`.
//! - `deep-recursion`: non-tail recursion with a small `black_box`ed array per
//!   frame, so the wasm call stack runs out before the plugin's 1 MiB
//!   linear-memory stack does (with wasmtime's default 512 KiB
//!   `max_wasm_stack`): a stack-overflow trap.
//! - `big-frames`: the same recursion with a 4 KiB array per frame, so the
//!   linear-memory stack runs out first, after about 250 frames: an
//!   out-of-bounds memory trap, because Rust's wasm targets put the stack
//!   below the data and a stack overflow falls off address zero.
//! - `sleep`: `std::thread::sleep` for an hour. Epoch interruption cannot
//!   stop a guest blocked in the host, so the host must refuse the timer.
//! - `panic`: `panic!("hostile guest panicked on purpose")`; the message goes
//!   to stderr, then the panic aborts.
//! - `abort`: `std::process::abort()`.
//!
//! Output the host must bound:
//!
//! - `giant-output`: one `order-confirmation` email whose `blob` variable is a
//!   1 MiB string.
//! - `too-many-actions`: 1,000 `order-confirmation` emails, each with an
//!   `index` variable.
//! - `invalid-output`: one email with an empty template name, well-typed but
//!   unusable.
//! - `log-flood`: 100 plugin-log lines of 200 characters, 100 stdout lines of
//!   200 characters, then one normal `order-confirmation` email.
//! - `stdout`: prints `hello from the plugin` to stdout and
//!   `warning from the plugin` to stderr, then one normal email.
//!
//! WASI probes — each returns one `order-confirmation` email whose variables
//! say what the plugin saw, so tests can assert the host denied or faked it:
//!
//! - `read-file`: `result` is `ok:<bytes>` or `err:<error>` for reading
//!   `/etc/passwd`; `read_dir` is `ok:<entries>` or `err:<error>` for listing
//!   `.`.
//! - `read-env`: `vars` is `std::env::vars()` as a debug-formatted list,
//!   `home` is `std::env::var("HOME")` debug-formatted, and `result` is both.
//! - `open-socket`: `result` is `ok` or `err:<error>` for a TCP connection to
//!   `127.0.0.1:5432`.
//! - `read-clock`: `system_time_ms` is `SystemTime::now()` in milliseconds
//!   since the Unix epoch, `instant_ns` the nanoseconds an `Instant` measured
//!   across a 1,000-step loop.
//! - `random`: `random` is the decimal `u64` hash of the fixed string
//!   `"tidings"` under a fresh `RandomState`, whose 16 bytes of keys come
//!   from WASI (`wasi:random/insecure-seed` on this target).
//!
//! Normal answers:
//!
//! - `none`: one `order-confirmation` email.
//! - `echo`: one `order-confirmation` email whose `event` and `context`
//!   variables are the event and context as the plugin received them, as
//!   JSON: what the host passed in.
//! - `rule-error`: the plugin's own error, code `invalid-config`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tidings_sdk::prelude::*;

struct Hostile;

impl Rule for Hostile {
    fn decide(event: &OrderEvent, ctx: &Context) -> Result<Vec<Action>, RuleError> {
        let attack = ctx
            .config
            .get("attack")
            .and_then(Value::as_str)
            .ok_or_else(|| RuleError::new("invalid-config", "config needs `attack`, a string"))?;
        Ok(match attack {
            "none" => vec![confirmation()],
            "echo" => {
                let echo = |e: serde_json::Error| RuleError::new("echo", e.to_string());
                vec![
                    confirmation()
                        .with("event", serde_json::to_string(event).map_err(echo)?)
                        .with("context", serde_json::to_string(ctx).map_err(echo)?),
                ]
            }
            "infinite-loop" => infinite_loop(),
            "busy-fuel" => {
                let iterations = ctx
                    .config
                    .get("iterations")
                    .and_then(Value::as_u64)
                    .unwrap_or(50_000_000);
                vec![confirmation().with("sum", busy(iterations))]
            }
            "memory-hog" => vec![confirmation().with("allocated_mib", memory_hog())],
            "deep-recursion" => vec![confirmation().with("depth", recurse_small(0))],
            "big-frames" => vec![confirmation().with("depth", recurse_big(0))],
            "giant-output" => vec![confirmation().with("blob", "x".repeat(1 << 20))],
            "invalid-output" => vec![notify(Channel::Email, "")],
            "too-many-actions" => (0..1_000)
                .map(|i| confirmation().with("index", i))
                .collect(),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                vec![confirmation()]
            }
            "panic" => panic!("hostile guest panicked on purpose"),
            "abort" => std::process::abort(),
            "read-file" => vec![read_file()],
            "read-env" => vec![read_env()],
            "open-socket" => vec![open_socket()],
            "read-clock" => vec![read_clock()],
            "random" => vec![random()],
            "log-flood" => {
                log_flood();
                vec![confirmation()]
            }
            "stdout" => {
                println!("hello from the plugin");
                eprintln!("warning from the plugin");
                vec![confirmation()]
            }
            "rule-error" => {
                return Err(RuleError::new(
                    "invalid-config",
                    "attack rule-error requested",
                ));
            }
            other => {
                return Err(RuleError::new(
                    "unknown-attack",
                    format!("no attack named `{other}`"),
                ));
            }
        })
    }
}

register_rule!(Hostile);

fn confirmation() -> Action {
    notify(Channel::Email, "order-confirmation")
}

fn infinite_loop() -> ! {
    let mut counter = 0_u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn busy(iterations: u64) -> u64 {
    let mut sum = 0_u64;
    for i in 0..iterations {
        sum = black_box(sum.wrapping_add(i));
    }
    sum
}

fn memory_hog() -> usize {
    const MIB: usize = 1 << 20;
    const PAGE: usize = 4096;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..1024 {
        // Touch one byte per page rather than fill the buffer: wasmtime
        // charges fuel per byte for `memory.fill`, so filling 1 MiB costs a
        // million fuel and the hog would run out of fuel long before it
        // reached any memory limit.
        let mut chunk: Vec<u8> = Vec::with_capacity(MIB);
        for byte in chunk.spare_capacity_mut().iter_mut().step_by(PAGE) {
            byte.write(0xA5);
        }
        chunks.push(chunk);
        // Without this the optimiser may drop the never-read buffers.
        black_box(&chunks);
    }
    chunks.len()
}

/// Recursion that stops only at depth `u64::MAX`, which is never reached.
/// The array is passed through `black_box` so it lives in the frame, and the
/// addition after the call keeps the call from being a tail call.
macro_rules! recursion {
    ($name:ident, $frame_bytes:expr) => {
        #[inline(never)]
        fn $name(depth: u64) -> u64 {
            if black_box(depth) == u64::MAX {
                return 0;
            }
            let frame = black_box([depth.to_le_bytes()[0]; $frame_bytes]);
            let slot = usize::from(frame[0]) % $frame_bytes;
            $name(black_box(depth + 1)).wrapping_add(u64::from(frame[slot]))
        }
    };
}

recursion!(recurse_small, 16);
recursion!(recurse_big, 4096);

fn outcome<T>(result: std::io::Result<T>, describe: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => format!("ok:{}", describe(value)),
        Err(err) => format!("err:{err}"),
    }
}

fn read_file() -> Action {
    let file = outcome(std::fs::read_to_string("/etc/passwd"), |text| {
        text.len().to_string()
    });
    let dir = outcome(std::fs::read_dir("."), |entries| {
        entries.count().to_string()
    });
    confirmation().with("result", file).with("read_dir", dir)
}

fn read_env() -> Action {
    let vars = format!("{:?}", std::env::vars().collect::<Vec<_>>());
    let home = format!("{:?}", std::env::var("HOME"));
    confirmation()
        .with("result", format!("vars={vars} home={home}"))
        .with("vars", vars)
        .with("home", home)
}

fn open_socket() -> Action {
    let result = match std::net::TcpStream::connect("127.0.0.1:5432") {
        Ok(_) => "ok".to_owned(),
        Err(err) => format!("err:{err}"),
    };
    confirmation().with("result", result)
}

fn read_clock() -> Action {
    let system_time_ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_millis().to_string(),
        Err(err) => format!("before-epoch:{}", err.duration().as_millis()),
    };
    let start = Instant::now();
    busy(1_000);
    let instant_ns = start.elapsed().as_nanos();
    confirmation()
        .with("system_time_ms", system_time_ms)
        .with("instant_ns", instant_ns)
}

fn random() -> Action {
    let hash = RandomState::new().hash_one("tidings");
    confirmation().with("random", hash)
}

fn log_flood() {
    for i in 0..100 {
        let line = format!("{i:03}{}", "x".repeat(197));
        log::info(&line);
        println!("{line}");
    }
}
