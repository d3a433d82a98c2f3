//! Builds every guest component the end-to-end tests load — the bundled
//! plugins and the adversarial guests — for `wasm32-wasip2`, and writes their
//! paths as constants into `$OUT_DIR/guests.rs`.
//!
//! The nested cargo uses its own target directory (`target/guests`) so it
//! never waits on the lock of the build that runs this script.

use std::path::PathBuf;
use std::process::Command;

const GUESTS: &[(&str, &str)] = &[
    ("STANDARD_LIFECYCLE", "standard-lifecycle"),
    ("VIP_CONCIERGE", "vip-concierge"),
    ("CONFIGURABLE", "configurable"),
    ("FUTURE_CONTRACT", "future-contract-guest"),
    ("STDIO_GUEST", "stdio-guest"),
];

/// The adversarial guest, built apart from the others: it turns off the
/// SDK's `stdio-log`, and in one build cargo would unify the SDK's features
/// across all guests and turn it back on.
const HOSTILE: (&str, &str) = ("HOSTILE", "hostile-guest");

/// Components built as examples of the hostile guest crate (one cdylib
/// each), so odd components need no workspace member of their own.
const HOSTILE_EXAMPLES: &[(&str, &str)] = &[
    ("NOT_A_PLUGIN", "not-a-plugin"),
    ("MISSING_IMPORT", "missing-import"),
    ("INIT_TRAP", "init-trap"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned();
    let target_dir = workspace.join("target").join("guests");
    for watched in [
        "sdk",
        "wit",
        "plugins",
        "tests/guests",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    let packages = GUESTS.iter().flat_map(|(_, package)| ["-p", *package]);
    build_guests(&workspace, &target_dir, packages);
    build_guests(
        &workspace,
        &target_dir,
        ["-p", HOSTILE.1, "--lib", "--examples"],
    );

    let out_dir = target_dir.join("wasm32-wasip2").join("plugin");
    let components = GUESTS
        .iter()
        .chain([&HOSTILE])
        .map(|(constant, package)| (constant, package, out_dir.clone()))
        .chain(
            HOSTILE_EXAMPLES
                .iter()
                .map(|(constant, example)| (constant, example, out_dir.join("examples"))),
        );
    let mut constants = String::new();
    for (constant, package, dir) in components {
        let file = dir.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            file.exists(),
            "expected {} after the guest build",
            file.display()
        );
        constants.push_str(&format!(
            "/// The `{package}` component.\npub const {constant}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests.rs");
    std::fs::write(out, constants).expect("cannot write guests.rs");
}

/// `cargo build` for `wasm32-wasip2` with the `plugin` profile and `args`.
fn build_guests<'a>(
    workspace: &std::path::Path,
    target_dir: &std::path::Path,
    args: impl IntoIterator<Item = &'a str>,
) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(target_dir)
        .args(args);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .expect("cannot run cargo to build the guest components");
    if !status.success() {
        panic!(
            "building the guest components failed; is the target installed? \
             run `rustup target add wasm32-wasip2`"
        );
    }
}
