//! Where swapped-in components are kept so that a swap survives a restart: in
//! `<data-dir>/contexts/`, `<name>.wasm` is what runs and `<name>.previous.wasm` is what a
//! rollback restores. Files are written to a temporary name, synced and renamed, so a crash
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

    /// The names of every context that was swapped.
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
}
