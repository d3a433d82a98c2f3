//! The build script of every bundled plugin: link the component with a
//! 128 KiB stack instead of Rust's default 1 MiB.
//!
//! A rule's stack needs are small and every decision runs in a fresh
//! instance, so the smaller stack makes the instance's linear memory 256 KiB
//! instead of 1.1 MiB: less for the host to check and reset after each
//! decision (~0.3 µs of ~11, BENCHMARKS.md). A stack overflow is still
//! caught: Rust's wasm targets put the stack below the data, so overflowing
//! it falls off address zero and traps.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size=131072");
    }
}
