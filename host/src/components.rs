//! The set of contexts a system runs, kept with its data so that a restart runs the same set:
//! in `<data-dir>/contexts/`, `<name>.wasm` is what runs (a context swapped, added, or given
//! with `--context`) and `<name>.previous.wasm` is what a rollback restores; `<name>.removed`
//! says the context was removed (its data stays); `<name>.given` holds the SHA-256 of the file
//! `--context` named at the last start, so that the same file named again does not undo a
//! swap made since. Files are written to a temporary name, synced and renamed, so a crash
//! leaves either the old file or the new one, never half of one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A context's swapped-in component, and the one it replaced (what a rollback restores).
pub type Stored = (Vec<u8>, Option<Vec<u8>>);

/// The directory of swapped-in components.
#[derive(Debug, Clone)]
pub struct ComponentStore {
    dir: PathBuf,
}

impl ComponentStore {
    /// The store in `dir`, created if missing.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(ComponentStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str, previous: bool) -> PathBuf {
        self.dir.join(if previous {
            format!("{name}.previous.wasm")
        } else {
            format!("{name}.wasm")
        })
    }

    /// Records that `name` now runs `current`, and that a rollback restores `previous`.
    pub fn save(&self, name: &str, current: &[u8], previous: Option<&[u8]>) -> io::Result<()> {
        // The previous first: if we crash in between, the old current is still the current.
        match previous {
            Some(p) => write_atomically(&self.path(name, true), p)?,
            None => match fs::remove_file(self.path(name, true)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
        write_atomically(&self.path(name, false), current)?;
        File::open(&self.dir)?.sync_all()
    }

    /// What `name` was last swapped to, and its previous version, if it was ever swapped.
    pub fn load(&self, name: &str) -> io::Result<Option<Stored>> {
        let current = match fs::read(self.path(name, false)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let previous = match fs::read(self.path(name, true)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Some((current, previous)))
    }

    /// Marks `name` removed (`true`) or not: a removed context is not run at the next start.
    pub fn set_removed(&self, name: &str, removed: bool) -> io::Result<()> {
        let path = self.dir.join(format!("{name}.removed"));
        if removed {
            write_atomically(&path, b"")?;
        } else {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        File::open(&self.dir)?.sync_all()
    }

    /// Whether `name` was removed.
    pub fn is_removed(&self, name: &str) -> bool {
        self.dir.join(format!("{name}.removed")).exists()
    }

    /// The SHA-256 (hex) of the file `--context` named for `name` at the last start.
    pub fn given(&self, name: &str) -> io::Result<Option<String>> {
        match fs::read_to_string(self.dir.join(format!("{name}.given"))) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records the SHA-256 (hex) of the file `--context` named for `name`.
    pub fn set_given(&self, name: &str, digest: &str) -> io::Result<()> {
        write_atomically(&self.dir.join(format!("{name}.given")), digest.as_bytes())?;
        File::open(&self.dir)?.sync_all()
    }

    /// The names of every context that has a stored component (swapped, added or given).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".wasm")
                && !stem.ends_with(".previous")
                && !stem.contains(".tmp")
            {
                names.push(stem.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_current_and_previous() {
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::open(dir.path()).unwrap();
        assert_eq!(store.load("order").unwrap(), None);
        store.save("order", b"v2", Some(b"v1")).unwrap();
        assert_eq!(
            store.load("order").unwrap(),
            Some((b"v2".to_vec(), Some(b"v1".to_vec())))
        );
        store.save("order", b"v3", None).unwrap();
        assert_eq!(store.load("order").unwrap(), Some((b"v3".to_vec(), None)));
        assert_eq!(store.names().unwrap(), vec!["order".to_string()]);
    }

    #[test]
    fn keeps_removals_and_given_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::open(dir.path()).unwrap();
        assert!(!store.is_removed("rating"));
        store.set_removed("rating", true).unwrap();
        assert!(store.is_removed("rating"));
        store.set_removed("rating", false).unwrap();
        store.set_removed("rating", false).unwrap();
        assert!(!store.is_removed("rating"));
        assert_eq!(store.given("rating").unwrap(), None);
        store.set_given("rating", "abc").unwrap();
        assert_eq!(store.given("rating").unwrap().as_deref(), Some("abc"));
        // Neither is a component.
        assert!(store.names().unwrap().is_empty());
    }
}
