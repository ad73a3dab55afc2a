//! Which contexts a start runs. The set is data kept with the system (`components.rs`): the
//! built-in contexts (all, or those an embedder chose) unless removed, each as last swapped;
//! every context added (or given) before, unless removed; and the components given now, by
//! `--context NAME=FILE`, the config file or the builder. What a given component means on a
//! later start:
//!
//! - the same component as the one stored: it runs (nothing to do);
//! - the same file as named at the last start, while a version swapped in since is stored:
//!   the swapped version goes on running (restarting with an unchanged command line never
//!   undoes a swap), and that is logged;
//! - a different component: it replaces the stored one, which is kept for a rollback, and
//!   that is logged;
//! - a context that was removed: it runs again, and that is logged.
//!
//! What a start changes in the stored set is recorded only once every context has loaded and
//! their events fit together: a start refused for a bad component leaves the set as it was,
//! so the next start without it runs what ran before.
//!
//! In a cluster, given components are not recorded (the log names the code there).

use crate::embed::{Component, ContextPlan};
use crate::runtime::Runtime;
use crate::start::StartError;
use crate::wasm::digest_of;

/// A context to load: name, component, and what a rollback restores.
pub(crate) type Source = (String, Vec<u8>, Option<Vec<u8>>);

/// A change to the stored set that a start makes once it has succeeded.
pub(crate) enum Record {
    /// Store `bytes` as what `name` runs, `previous` as what a rollback restores.
    Save {
        name: String,
        bytes: Vec<u8>,
        previous: Option<Vec<u8>>,
    },
    /// `name` was removed and runs again.
    Unremove(String),
    /// `digest` is the component given for `name` at this start.
    Given { name: String, digest: String },
}

/// Makes the changes `records` to `runtime`'s stored set.
pub(crate) fn record(runtime: &Runtime, records: Vec<Record>) -> Result<(), StartError> {
    let Some(store) = runtime.component_store() else {
        return Ok(());
    };
    for r in records {
        match r {
            Record::Save {
                name,
                bytes,
                previous,
            } => store.save(&name, &bytes, previous.as_deref()),
            Record::Unremove(name) => store.set_removed(&name, false),
            Record::Given { name, digest } => store.set_given(&name, &digest),
        }
        .map_err(StartError::ComponentStore)?;
    }
    Ok(())
}

/// The contexts to load, in order (built-in ones, given ones, then those added before), and
/// what to record of them once they run.
pub(crate) fn resolve(
    runtime: &Runtime,
    plan: &ContextPlan,
    record: bool,
) -> Result<(Vec<Source>, Vec<Record>), StartError> {
    let mut records = Vec::new();
    let store = runtime.component_store().filter(|_| record);
    let removed = |name: &str| runtime.component_store().is_some_and(|s| s.is_removed(name));
    let mut stored = runtime.swapped_components().map_err(StartError::ComponentStore)?;
    let is_given = |name: &str| plan.given.iter().any(|(given, _)| given == name);
    let mut sources = Vec::new();
    for (name, bytes) in crate::builtin::DEFAULT_CONTEXTS {
        let chosen = plan.builtin.as_ref().is_none_or(|names| names.contains(*name));
        if !chosen || is_given(name) {
            continue;
        }
        let current = stored.remove(*name);
        if removed(name) {
            tracing::info!(
                "context {name} was removed: not started (its data is kept; `carshare contexts add` brings it back)"
            );
            continue;
        }
        match current {
            Some((current, previous)) => sources.push((name.to_string(), current, previous)),
            None => sources.push((name.to_string(), bytes.to_vec(), None)),
        }
    }
    for (name, component) in &plan.given {
        let (bytes, from) = match component {
            Component::Bytes(bytes) => (bytes.clone(), "the embedder's bytes".to_string()),
            Component::File(path) => (
                std::fs::read(path).map_err(|source| StartError::ReadComponent {
                    path: path.clone(),
                    source,
                })?,
                path.display().to_string(),
            ),
        };
        let current = stored.remove(name);
        let Some(store) = store else {
            sources.push((name.clone(), bytes, None));
            continue;
        };
        let digest = digest_of(&bytes);
        let persist = |e: std::io::Error| StartError::ComponentStore(e);
        let source = match current {
            Some((current, previous)) if digest_of(&current) == digest => (name.clone(), current, previous),
            Some((current, previous)) if store.given(name).map_err(persist)?.as_deref() == Some(&digest) => {
                tracing::info!(
                    "context {name}: {from} is what was given at the last start; the version swapped \
                     in since goes on running (give another component, or swap, to replace it)"
                );
                (name.clone(), current, previous)
            }
            Some((current, _)) => {
                tracing::warn!(
                    "context {name}: {from} replaces the version that ran before, which is kept for a rollback"
                );
                records.push(Record::Save {
                    name: name.clone(),
                    bytes: bytes.clone(),
                    previous: Some(current.clone()),
                });
                (name.clone(), bytes, Some(current))
            }
            None => {
                records.push(Record::Save {
                    name: name.clone(),
                    bytes: bytes.clone(),
                    previous: None,
                });
                (name.clone(), bytes, None)
            }
        };
        if store.is_removed(name) {
            tracing::info!("context {name} had been removed; given at start, it runs again");
            records.push(Record::Unremove(name.clone()));
        }
        records.push(Record::Given {
            name: name.clone(),
            digest,
        });
        sources.push(source);
    }
    // Added (or given) at an earlier start, and neither removed nor left out by the embedder.
    for (name, (current, previous)) in stored {
        let builtin = crate::builtin::DEFAULT_CONTEXTS.iter().any(|(b, _)| *b == name);
        if builtin || removed(&name) {
            continue;
        }
        tracing::info!("context {name}: added earlier, run from the data directory");
        sources.push((name, current, previous));
    }
    Ok((sources, records))
}
