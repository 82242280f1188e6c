//! What both backends share: the directory layout under the root, the records, and the
//! crash-safe order between them.
//!
//! Layout: `<root>/snapshots/<id>/fs` (the snapshot's own tree) and, for overlay,
//! `<root>/snapshots/<id>/work`; `<root>/snapshotter` names the backend that owns the root.
//! Ids are short decimal numbers, so overlay option strings stay short.
//!
//! Order: a snapshot's directory is created (and filled) before its record is written and
//! is deleted after its record is; a crash in between leaves a directory without a record,
//! which [`Store::cleanup`] deletes. Creation holds a shared lock and cleanup an exclusive
//! one, so cleanup never deletes a directory whose record is about to be written.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use metadata::MetadataStore;

use crate::records::{Record, Records};
use crate::{Error, Info, Kind, Result};

/// The file under the root naming the backend that owns it.
const MARKER: &str = "snapshotter";

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The backend recorded in `root`'s marker file, if the root was used before.
pub(crate) fn recorded_backend(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join(MARKER))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Creates `path` with `mode` (not subject to the umask).
pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", path))
}

/// Layout plus records of one backend.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
    snapshots: PathBuf,
    pub records: Records,
    lock: RwLock<()>,
}

impl Store {
    /// Opens (creating if needed) the root for `backend`, refusing one that belongs to
    /// another backend.
    pub fn open(root: &Path, md: Arc<dyn MetadataStore>, backend: &'static str) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(io_err("create directory", root))?;
        let root = std::fs::canonicalize(root).map_err(io_err("resolve", root))?;
        if root.to_str().is_none() {
            return Err(Error::Io {
                op: "use as snapshotter root",
                path: root,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "path is not UTF-8, which mount options cannot carry",
                ),
            });
        }
        match recorded_backend(&root) {
            Some(owner) if owner != backend => {
                return Err(Error::RootInUse {
                    root,
                    owner,
                    wanted: backend.to_string(),
                });
            }
            Some(_) => {}
            None => {
                let tmp = root.join(format!("{MARKER}.tmp"));
                std::fs::write(&tmp, format!("{backend}\n")).map_err(io_err("write", &tmp))?;
                let marker = root.join(MARKER);
                std::fs::rename(&tmp, &marker).map_err(io_err("rename", &marker))?;
            }
        }
        let snapshots = root.join("snapshots");
        if !snapshots.is_dir() {
            mkdir(&snapshots, 0o700)?;
        }
        let store = Store {
            records: Records::new(md, backend),
            root,
            snapshots,
            lock: RwLock::new(()),
        };
        // Directories that outlived their database must never be handed out again.
        let max = store
            .entries()?
            .into_iter()
            .filter_map(|(name, _)| name.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        store.records.reserve_ids_through(max)?;
        tracing::debug!(root = %store.root.display(), backend, "snapshotter opened");
        Ok(store)
    }

    /// The (canonical) root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/snapshots/<id>`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    /// `<root>/snapshots/<id>/fs`.
    pub fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// `<root>/snapshots/<id>/work`.
    pub fn work(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }

    /// The names and paths under `<root>/snapshots`.
    fn entries(&self) -> Result<Vec<(String, PathBuf)>> {
        let dir = &self.snapshots;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err("read directory", dir))? {
            let entry = entry.map_err(io_err("read directory", dir))?;
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
        Ok(out)
    }

    /// Creates snapshot `key`: allocates an id, creates `<id>/fs`, lets `populate` fill
    /// the directory (given the directory and the parent chain, nearest first), then writes
    /// the record. On failure the directory is removed again.
    pub fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        kind: Kind,
        populate: impl FnOnce(&Path, &[u64]) -> Result<()>,
    ) -> Result<Record> {
        let _shared = self.lock.read().unwrap_or_else(|e| e.into_inner());
        let chain = self.records.precheck(key, parent)?;
        for &id in &chain {
            let fs = self.fs(id);
            if !fs.is_dir() {
                return Err(Error::MissingDir {
                    key: parent.unwrap_or(key).to_string(),
                    path: fs,
                });
            }
        }
        let id = self.records.allocate_id(key)?;
        let dir = self.dir(id);
        let result = mkdir(&dir, 0o700)
            .and_then(|()| mkdir(&dir.join("fs"), 0o755))
            .and_then(|()| populate(&dir, &chain))
            .and_then(|()| self.records.create(key, kind, parent, id));
        let result = match result {
            Ok(rec) if rec.parents != chain => {
                // The parent was replaced while we populated; what we built is stale.
                self.records.remove(key)?;
                Err(Error::Invalid {
                    key: key.to_string(),
                    reason: format!("parent {parent:?} changed while the snapshot was created"),
                })
            }
            other => other,
        };
        if result.is_err() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(key, dir = %dir.display(), error = %e,
                    "could not remove the directory of a failed snapshot; cleanup will");
            }
        } else {
            tracing::debug!(key, id, ?parent, %kind, "snapshot created");
        }
        result
    }

    /// The record of `key`, after checking that its directory and its parents' exist.
    pub fn get(&self, key: &str) -> Result<Record> {
        let rec = self.records.require(key)?;
        for id in std::iter::once(rec.id).chain(rec.parents.iter().copied()) {
            let fs = self.fs(id);
            if !fs.is_dir() {
                return Err(Error::MissingDir {
                    key: key.to_string(),
                    path: fs,
                });
            }
        }
        Ok(rec)
    }

    /// Commits active `key` as `name` (the directory stays where it is).
    pub fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.get(key)?;
        let rec = self.records.commit(name, key)?;
        tracing::debug!(key, name, id = rec.id, "snapshot committed");
        Ok(())
    }

    /// Deletes the record of `key`, then its directory.
    pub fn remove(&self, key: &str) -> Result<()> {
        let _shared = self.lock.read().unwrap_or_else(|e| e.into_inner());
        let rec = self.records.remove(key)?;
        let dir = self.dir(rec.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(key, id = rec.id, "snapshot removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // The record is gone, so the snapshot is; the directory is garbage now.
            Err(e) => tracing::warn!(key, dir = %dir.display(), error = %e,
                "snapshot removed but its directory was not; cleanup will retry"),
        }
        Ok(())
    }

    /// Removes every entry under `<root>/snapshots` that no record points at.
    pub fn cleanup(&self) -> Result<usize> {
        let _exclusive = self.lock.write().unwrap_or_else(|e| e.into_inner());
        let ids = self.records.ids()?;
        let mut removed = 0;
        let mut first_err = None;
        for (name, path) in self.entries()? {
            if name.parse::<u64>().is_ok_and(|id| ids.contains(&id)) {
                continue;
            }
            let r = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match r {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed snapshot directory without a record");
                    removed += 1;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cleanup failed");
                    first_err.get_or_insert(Error::Io {
                        op: "remove orphaned snapshot directory",
                        path,
                        source: e,
                    });
                }
            }
        }
        first_err.map_or(Ok(removed), Err)
    }

    /// The record of `key` as [`Info`].
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.records.require(key)?.info(key))
    }

    /// All records as [`Info`], in key order.
    pub fn list(&self) -> Result<Vec<Info>> {
        Ok(self
            .records
            .list()?
            .into_iter()
            .map(|(k, r)| r.info(&k))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;

    fn store(dir: &Path) -> Store {
        Store::open(dir, Arc::new(MemStore::default()), "test").unwrap()
    }

    #[test]
    fn failed_populate_leaves_neither_record_nor_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let e = s
            .create("k", None, Kind::Active, |dir, _| {
                Err(Error::Invalid {
                    key: dir.display().to_string(),
                    reason: "boom".into(),
                })
            })
            .unwrap_err();
        assert!(e.to_string().contains("boom"));
        assert!(s.records.get("k").unwrap().is_none());
        assert!(s.entries().unwrap().is_empty());
    }

    #[test]
    fn cleanup_removes_only_unrecorded_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let rec = s.create("k", None, Kind::Active, |_, _| Ok(())).unwrap();
        std::fs::create_dir_all(tmp.path().join("snapshots/99/fs")).unwrap();
        std::fs::write(tmp.path().join("snapshots/junk"), b"x").unwrap();
        assert_eq!(s.cleanup().unwrap(), 2);
        assert!(s.fs(rec.id).is_dir());
        assert!(!tmp.path().join("snapshots/99").exists());
        assert_eq!(s.cleanup().unwrap(), 0);
    }

    #[test]
    fn reopening_skips_ids_of_leftover_directories() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("snapshots/41")).unwrap();
        let s = store(tmp.path());
        let rec = s.create("k", None, Kind::Active, |_, _| Ok(())).unwrap();
        assert_eq!(rec.id, 42);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let rec = s.create("k", None, Kind::Active, |_, _| Ok(())).unwrap();
        s.commit("K", "k").unwrap();
        std::fs::remove_dir_all(s.dir(rec.id)).unwrap();
        let e = s.get("K").unwrap_err();
        assert!(
            matches!(&e, Error::MissingDir { key, .. } if key == "K"),
            "{e}"
        );
        assert!(e.to_string().contains("snapshots/1/fs is missing"), "{e}");
        let e = s
            .create("child", Some("K"), Kind::Active, |_, _| Ok(()))
            .unwrap_err();
        assert!(matches!(e, Error::MissingDir { .. }), "{e}");
        // removing such a record works
        s.remove("K").unwrap();
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn a_root_belongs_to_one_backend() {
        let tmp = tempfile::tempdir().unwrap();
        let md: Arc<dyn MetadataStore> = Arc::new(MemStore::default());
        Store::open(tmp.path(), md.clone(), "native").unwrap();
        assert_eq!(recorded_backend(tmp.path()).as_deref(), Some("native"));
        let e = Store::open(tmp.path(), md, "overlayfs").unwrap_err();
        assert!(matches!(e, Error::RootInUse { .. }), "{e}");
    }
}
