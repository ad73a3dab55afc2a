//! Building a context crate into a component, as its author would (`cargo build --release
//! --target wasm32-wasip2`), for the test harness (`carshare-testing`) and `carshare dev run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A context crate that did not build.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot build the context crate at {}: {reason}", dir.display())]
pub struct BuildError {
    /// The crate's directory.
    pub dir: PathBuf,
    /// Why, in cargo's words.
    pub reason: String,
}

/// Builds the context crate in `dir` (`cargo build --release --target wasm32-wasip2`, into
/// `target`) and returns its component: the `.wasm` of the crate's cdylib.
pub fn build_context(dir: &Path, target: &Path) -> Result<PathBuf, BuildError> {
    let fail = |reason: String| BuildError {
        dir: dir.to_path_buf(),
        reason,
    };
    let manifest = dir.join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target)
        .output()
        .map_err(|e| fail(format!("cannot run cargo: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("wasm32-wasip2") && stderr.contains("target") {
            " (is the target installed? `rustup target add wasm32-wasip2`)"
        } else {
            ""
        };
        let errors: Vec<String> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-message" && m["message"]["level"] == "error")
            .filter_map(|m| m["message"]["rendered"].as_str().map(str::to_string))
            .collect();
        return Err(fail(format!("{}{}{hint}", errors.join(""), stderr.trim())));
    }
    // The cdylib of the package whose manifest this is.
    let wanted = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| std::fs::canonicalize(p).is_ok_and(|p| p == wanted))
        })
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| fail("cargo made no .wasm: is the crate's crate-type [\"cdylib\"]?".into()))
}
