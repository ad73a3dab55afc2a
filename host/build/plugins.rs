//! Building the guest crates of `plugins/` (their own workspace) into wasm32-wasip2
//! components: shared by `host/build.rs`, which builds the built-in contexts, and the host's
//! tests, which build the test components the first time a test asks for one (so that a crate
//! depending on carshare never compiles them).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The contexts the `carshare` binary runs by default: (context name, crate file stem).
pub const DEFAULT_CONTEXTS: &[(&str, &str)] = &[
    ("order", "carshare_order"),
    ("payment", "carshare_payment"),
    ("product", "carshare_product"),
    ("delivery", "carshare_delivery"),
    ("customerpage", "carshare_customerpage"),
];

/// Deliberately misbehaving or alternative components for tests: (name in the tests' enum,
/// crate file stem).
pub const TEST_COMPONENTS: &[(&str, &str)] = &[
    ("PaymentDeclining", "carshare_test_payment_declining"),
    ("PaymentTrapping", "carshare_test_payment_trapping"),
    ("Auditor", "carshare_test_auditor"),
    ("AuditorV2", "carshare_test_auditor_v2"),
    ("OrderV2", "carshare_test_order_v2"),
    ("PaymentV2", "carshare_test_payment_v2"),
    ("DeliveryV2", "carshare_test_delivery_v2"),
    ("Looping", "carshare_test_looping"),
    ("MemoryHog", "carshare_test_memory_hog"),
    ("BadManifest", "carshare_test_bad_manifest"),
    ("Stray", "carshare_test_stray"),
    ("StrayV2", "carshare_test_stray_v2"),
];

/// The guests' target. rustup adds the targets `rust-toolchain.toml` names only when it installs
/// the toolchain itself; a toolchain that was already there lacks it, so the build adds it.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the active toolchain has the standard library for [`WASM_TARGET`], adding it with
/// rustup when it is missing. Fails the build with the command to run when that is impossible.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .unwrap_or_else(|| panic!("`{rustc} --print sysroot` failed"));
    let target_lib = sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib");
    if target_lib.is_dir() {
        return;
    }
    // rustup's proxies name the toolchain in use; a plain path to rustc is named by its sysroot.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok().or_else(|| {
        sysroot
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    });
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = &toolchain {
        cmd.args(["--toolchain", toolchain]);
    }
    let wanted = format!(
        "rustup target add {WASM_TARGET}{}",
        toolchain
            .as_deref()
            .map(|t| format!(" --toolchain {t}"))
            .unwrap_or_default()
    );
    println!(
        "cargo:warning=the {WASM_TARGET} standard library is missing from {}; running `{wanted}`",
        sysroot.display()
    );
    match cmd.status() {
        Ok(status) if status.success() && target_lib.is_dir() => {}
        Ok(status) => panic!(
            "`{wanted}` failed ({status}): the guest contexts need the {WASM_TARGET} target. \
             Run that command by hand (it needs network access to the Rust distribution \
             server), then build again."
        ),
        Err(err) => panic!(
            "the guest contexts need the {WASM_TARGET} target, which {} lacks, and rustup \
             could not be run to add it ({err}). Install it with `{wanted}`, or use a \
             toolchain that has it.",
            sysroot.display()
        ),
    }
}

/// Builds the guest crates whose file stems are `stems` (see [`DEFAULT_CONTEXTS`] and
/// [`TEST_COMPONENTS`]) from the plugins workspace `plugins`, into `target_dir`, and returns
/// their component files in the same order. Panics with the reason if the build fails: both
/// callers (the build script, the tests) can only stop there.
pub fn build(plugins: &Path, target_dir: &Path, stems: &[&str]) -> Vec<PathBuf> {
    ensure_wasm_target();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(plugins)
        .args(["build", "--release", "--locked", "--target", WASM_TARGET])
        .env("CARGO_TARGET_DIR", target_dir);
    for stem in stems {
        cmd.args(["-p", &stem.replace('_', "-")]);
    }
    // What cargo set for *this* build must not leak into the guests' build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the plugins");
    if !status.success() {
        panic!("building the plugins in {} failed ({status})", plugins.display());
    }
    let dir = target_dir.join(WASM_TARGET).join("release");
    stems.iter().map(|stem| artifact(&dir, stem)).collect()
}

fn artifact(dir: &Path, stem: &str) -> PathBuf {
    let path = dir.join(format!("{stem}.wasm"));
    assert!(
        path.exists(),
        "the plugin build did not produce {}",
        path.display()
    );
    path
}
