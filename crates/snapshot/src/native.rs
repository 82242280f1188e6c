//! The native snapshotter: every active snapshot is a full copy of its parent's tree in
//! `<root>/snapshots/<id>/fs`, mounted with a bind mount. Works on any filesystem and
//! without overlay support, at the cost of a copy per `prepare`. A snapshot's layer is
//! found by comparing its tree with its parent's (the `archive` crate's job), so
//! [`Snapshotter::layer_dir`] is the whole tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use metadata::MetadataStore;

use crate::records::Record;
use crate::store::Store;
use crate::{Error, Info, Kind, Mount, Result, Snapshotter, Usage};

/// Snapshots as full copies.
#[derive(Debug)]
pub struct NativeSnapshotter {
    store: Store,
}

impl NativeSnapshotter {
    /// The backend name, also the value of [`Snapshotter::name`].
    pub const NAME: &'static str = "native";

    /// Opens (creating if needed) a native snapshotter under `root`, with its records in
    /// `md`.
    pub fn new(root: &Path, md: Arc<dyn MetadataStore>) -> Result<Self> {
        Ok(NativeSnapshotter {
            store: Store::open(root, md, Self::NAME)?,
        })
    }

    /// The root directory (canonical).
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// The tree a snapshot shows: its own copy, or for a view its (immutable) parent's.
    fn tree(&self, rec: &Record) -> PathBuf {
        match (rec.kind, rec.parents.first()) {
            (Kind::View, Some(&parent)) => self.store.fs(parent),
            _ => self.store.fs(rec.id),
        }
    }

    fn mounts_of(&self, key: &str, rec: &Record) -> Result<Vec<Mount>> {
        let tree = self.tree(rec).to_string_lossy().into_owned();
        match rec.kind {
            Kind::Active => Ok(vec![Mount::bind(tree, false)]),
            Kind::View => Ok(vec![Mount::bind(tree, true)]),
            Kind::Committed => Err(Error::Invalid {
                key: key.to_string(),
                reason: "is committed and has no mounts; create a view of it".into(),
            }),
        }
    }
}

impl Snapshotter for NativeSnapshotter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        let rec = self.store.create(key, parent, Kind::Active, |dir, chain| {
            if let Some(&nearest) = chain.first() {
                crate::tree::copy_tree(&self.store.fs(nearest), &dir.join("fs"))?;
            }
            Ok(())
        })?;
        self.mounts_of(key, &rec)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        // Committed trees never change, so a view binds the parent's tree read-only
        // instead of copying it; the parent cannot be removed while the view exists.
        let rec = self.store.create(key, parent, Kind::View, |_, _| Ok(()))?;
        self.mounts_of(key, &rec)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let rec = self.store.get(key)?;
        self.mounts_of(key, &rec)
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.store.commit(name, key)
    }

    fn remove(&self, key: &str) -> Result<()> {
        self.store.remove(key)
    }

    fn stat(&self, key: &str) -> Result<Info> {
        self.store.stat(key)
    }

    fn list(&self) -> Result<Vec<Info>> {
        self.store.list()
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        crate::tree::disk_usage(&self.layer_dir(key)?)
    }

    fn layer_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.tree(&self.store.get(key)?))
    }

    fn cleanup(&self) -> Result<usize> {
        self.store.cleanup()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;

    #[test]
    fn prepare_copies_and_views_bind_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let s = NativeSnapshotter::new(tmp.path(), Arc::new(MemStore::default())).unwrap();
        let m = s.prepare("a", None).unwrap();
        assert_eq!(m.len(), 1);
        assert!(!m[0].is_readonly());
        let a = s.layer_dir("a").unwrap();
        assert_eq!(m[0].source, a.to_string_lossy());
        std::fs::write(a.join("f"), b"one").unwrap();
        s.commit("A", "a").unwrap();

        s.prepare("b", Some("A")).unwrap();
        let b = s.layer_dir("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(b.join("f")).unwrap(), b"one");
        std::fs::write(b.join("f"), b"two").unwrap();
        assert_eq!(
            std::fs::read(a.join("f")).unwrap(),
            b"one",
            "no leak into the parent"
        );

        let v = s.view("v", Some("A")).unwrap();
        assert_eq!(v, vec![Mount::bind(a.to_string_lossy(), true)]);
        assert_eq!(s.layer_dir("v").unwrap(), a);
        assert!(matches!(s.remove("A"), Err(Error::HasChildren(_))));
        assert_eq!(s.name(), "native");
    }
}
