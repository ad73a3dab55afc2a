//! `carshare serve --watch DIR`: swaps context NAME in when `DIR/NAME.wasm` changes, or adds it
//! when no context of that name runs. The files present at start are taken as they are
//! (nothing is swapped for them); a file is swapped once
//! it has stopped changing for one poll, so a half-copied file is never loaded. A component
//! that fails its checks is refused, logged, and the running version goes on serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::runtime::Runtime;

/// How often the directory is looked at.
const POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn scan(dir: &Path) -> HashMap<String, (PathBuf, Stamp)> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wasm"))
        else {
            continue;
        };
        if let Ok(meta) = e.metadata()
            && meta.is_file()
        {
            out.insert(
                name.to_string(),
                (
                    path.clone(),
                    Stamp {
                        len: meta.len(),
                        modified: meta.modified().ok(),
                    },
                ),
            );
        }
    }
    out
}

/// Watches `dir` until the runtime shuts down (the task is dropped with it).
pub async fn watch(dir: PathBuf, runtime: Runtime) {
    tracing::info!("watching {} for context components", dir.display());
    let mut applied: HashMap<String, Stamp> = scan(&dir).into_iter().map(|(k, (_, s))| (k, s)).collect();
    let mut pending: HashMap<String, Stamp> = HashMap::new();
    loop {
        tokio::time::sleep(POLL).await;
        for (name, (path, stamp)) in scan(&dir) {
            if applied.get(&name) == Some(&stamp) {
                pending.remove(&name);
                continue;
            }
            // Changed: wait until it looks the same twice in a row.
            if pending.insert(name.clone(), stamp) != Some(stamp) {
                continue;
            }
            pending.remove(&name);
            applied.insert(name.clone(), stamp);
            let read = path.clone();
            let read = tokio::task::spawn_blocking(move || std::fs::read(read))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let result = match read {
                Ok(bytes) if runtime.has_context(&name) => runtime
                    .swap(&name, &bytes)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{name}: {e}")),
                Ok(bytes) => runtime
                    .add(&name, &bytes)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{name}: {e}")),
                Err(e) => Err(format!("{}: {e}", path.display())),
            };
            if let Err(e) = result {
                tracing::warn!("watch: refused {e}; the running version goes on");
            }
        }
    }
}
