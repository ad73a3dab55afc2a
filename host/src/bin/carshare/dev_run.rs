//! `carshare dev run [DIR]`: a context author's loop. Builds the context crate in DIR, serves
//! it with the built-in contexts (its own data directory under the crate's `target/`), and on
//! every save under `src/` or to `Cargo.toml` builds again and swaps the new version in while
//! it serves. A build that fails is reported and the running version goes on serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use carshare_host::{Config, Runtime};

use crate::cli::DevRunArgs;

/// How often the sources are looked at.
const POLL: Duration = Duration::from_millis(400);

/// Builds, serves and watches until Ctrl-C or SIGTERM.
pub async fn run(args: DevRunArgs) -> Result<(), String> {
    let dir = std::fs::canonicalize(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    if !dir.join("Cargo.toml").is_file() {
        return Err(format!(
            "{} has no Cargo.toml: give the context crate's directory",
            dir.display()
        ));
    }
    let name = match args.name {
        Some(name) => name,
        None => package_name(&dir)?,
    };
    let target = args
        .target_dir
        .unwrap_or_else(|| dir.join("target").join("carshare-dev"));
    let wasm = build(&dir, &target).await.map_err(|e| e.to_string())?;
    let mut config = Config {
        listen: args.listen,
        data_dir: args
            .data_dir
            .unwrap_or_else(|| dir.join("target").join("carshare-dev").join("data")),
        admin_token: std::env::var("CARSHARE_ADMIN_TOKEN").ok(),
        ..Config::default()
    };
    config.contexts.insert(name.clone(), wasm);
    let server = carshare_host::start(config).await.map_err(|e| e.to_string())?;
    tracing::info!(
        "serving context {name} from {}; saving a file under src/ rebuilds and swaps it",
        dir.display()
    );
    let watcher = tokio::spawn(watch(dir, target, name, server.runtime.clone()));
    let served = server.run(crate::shutdown_signal()).await;
    watcher.abort();
    served.map_err(|e| e.to_string())
}

/// Rebuilds and swaps whenever a source changes.
async fn watch(dir: PathBuf, target: PathBuf, name: String, runtime: Runtime) {
    let mut seen = newest(&dir);
    loop {
        tokio::time::sleep(POLL).await;
        let now = newest(&dir);
        if now <= seen {
            continue;
        }
        seen = now;
        let started = std::time::Instant::now();
        let wasm = match build(&dir, &target).await {
            Ok(wasm) => wasm,
            Err(e) => {
                tracing::error!("{e}\n{name} goes on running its last version");
                continue;
            }
        };
        let built = started.elapsed();
        let bytes = match tokio::fs::read(&wasm).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot read {}: {e}", wasm.display());
                continue;
            }
        };
        match runtime.swap(&name, &bytes).await {
            Ok(s) => tracing::info!(
                "rebuilt {name} in {:.1} s and swapped it in: {} -> {} in {:.1} ms",
                built.as_secs_f64(),
                s.previous_version,
                s.version,
                s.millis
            ),
            Err(e) => tracing::error!("rebuilt {name}, but the swap was refused: {e}"),
        }
    }
}

async fn build(dir: &Path, target: &Path) -> Result<PathBuf, carshare_host::BuildError> {
    let (dir, target) = (dir.to_path_buf(), target.to_path_buf());
    let d = dir.clone();
    tokio::task::spawn_blocking(move || carshare_host::build_context(&dir, &target))
        .await
        .unwrap_or_else(|e| {
            Err(carshare_host::BuildError {
                dir: d,
                reason: format!("the build task failed: {e}"),
            })
        })
}

/// The latest modification time under `dir/src` and of `dir/Cargo.toml`.
fn newest(dir: &Path) -> SystemTime {
    fn walk(path: &Path, latest: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if let Ok(m) = meta.modified() {
            *latest = (*latest).max(m);
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(path)
        {
            for e in entries.flatten() {
                walk(&e.path(), latest);
            }
        }
    }
    let mut latest = SystemTime::UNIX_EPOCH;
    walk(&dir.join("src"), &mut latest);
    walk(&dir.join("Cargo.toml"), &mut latest);
    latest
}

/// The crate's package name (`cargo metadata`): the context's name unless `--name` says.
fn package_name(dir: &Path) -> Result<String, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata said nothing usable: {e}"))?;
    let wanted = std::fs::canonicalize(dir.join("Cargo.toml")).ok();
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| std::fs::canonicalize(m).ok())
                == wanted
        })
        .and_then(|p| p["name"].as_str())
        .map(str::to_string)
        .ok_or_else(|| "cargo metadata names no package for this crate: give --name".into())
}
