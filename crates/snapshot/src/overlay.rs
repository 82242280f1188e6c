//! The overlayfs snapshotter, modelled on containerd's: each snapshot owns
//! `<root>/snapshots/<id>/{fs,work}`; an active snapshot mounts as an overlay whose upper
//! dir is its own `fs` and whose lower dirs are its committed parents' `fs` dirs, nearest
//! first. Committing keeps the directory: the upper dir *is* the layer.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metadata::MetadataStore;

use crate::records::Record;
use crate::store::{Store, io_err, mkdir};
use crate::{Error, Info, Kind, Mount, Result, Snapshotter, Usage};

/// Snapshots as overlayfs layers.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    store: Store,
}

/// Characters that overlay mount options cannot carry in a path (`:` separates lower
/// dirs, `,` options) and that we therefore refuse in the root.
const UNSAFE_CHARS: &[char] = &[':', ',', '\\'];

impl OverlaySnapshotter {
    /// The backend name, also the value of [`Snapshotter::name`].
    pub const NAME: &'static str = "overlayfs";

    /// Opens (creating if needed) an overlay snapshotter under `root`, with its records in
    /// `md`. Does not check that overlay mounts work here; [`crate::auto`] does.
    pub fn new(root: &Path, md: Arc<dyn MetadataStore>) -> Result<Self> {
        if root.to_string_lossy().contains(UNSAFE_CHARS) {
            return Err(Error::Io {
                op: "use as overlay snapshotter root",
                path: root.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "path contains ':', ',' or '\\', which overlay mount options cannot carry",
                ),
            });
        }
        let store = Store::open(root, md, Self::NAME)?;
        if store.root().to_string_lossy().contains(UNSAFE_CHARS) {
            return Err(Error::Io {
                op: "use as overlay snapshotter root",
                path: store.root().to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "resolved path contains ':', ',' or '\\'",
                ),
            });
        }
        Ok(OverlaySnapshotter { store })
    }

    /// The root directory (canonical).
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind) -> Result<Vec<Mount>> {
        let rec = self.store.create(key, parent, kind, |dir, chain| {
            mkdir(&dir.join("work"), 0o711)?;
            // The upper dir is the root of the merged tree: give it the parent's owner and
            // mode, or the container would see them change.
            if let Some(&nearest) = chain.first() {
                let from = self.store.fs(nearest);
                let md = std::fs::metadata(&from).map_err(io_err("stat", &from))?;
                let fs = dir.join("fs");
                std::os::unix::fs::chown(&fs, Some(md.uid()), Some(md.gid()))
                    .map_err(io_err("chown", &fs))?;
                std::fs::set_permissions(&fs, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                    .map_err(io_err("chmod", &fs))?;
            }
            Ok(())
        })?;
        self.mounts_of(key, &rec)
    }

    fn path(&self, p: PathBuf) -> String {
        // The root was checked to be UTF-8 when the store was opened.
        p.to_string_lossy().into_owned()
    }

    fn lowerdir(&self, rec: &Record) -> String {
        let dirs: Vec<String> = rec
            .parents
            .iter()
            .map(|&id| self.path(self.store.fs(id)))
            .collect();
        format!("lowerdir={}", dirs.join(":"))
    }

    fn mounts_of(&self, key: &str, rec: &Record) -> Result<Vec<Mount>> {
        let own = self.path(self.store.fs(rec.id));
        let mounts = match (rec.kind, rec.parents.as_slice()) {
            (Kind::Active, []) => vec![Mount::bind(own, false)],
            (Kind::Active, _) => {
                let work = self.store.work(rec.id);
                if !work.is_dir() {
                    return Err(Error::MissingDir {
                        key: key.to_string(),
                        path: work,
                    });
                }
                vec![Mount {
                    fstype: "overlay".into(),
                    source: "overlay".into(),
                    options: vec![
                        self.lowerdir(rec),
                        format!("upperdir={own}"),
                        format!("workdir={}", self.path(work)),
                    ],
                }]
            }
            (Kind::View, []) => vec![Mount::bind(own, true)],
            (Kind::View, [only]) => vec![Mount::bind(self.path(self.store.fs(*only)), true)],
            (Kind::View, _) => vec![Mount {
                fstype: "overlay".into(),
                source: "overlay".into(),
                options: vec!["ro".into(), self.lowerdir(rec)],
            }],
            (Kind::Committed, _) => {
                return Err(Error::Invalid {
                    key: key.to_string(),
                    reason: "is committed and has no mounts; create a view of it".into(),
                });
            }
        };
        Ok(mounts)
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View)
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
        Ok(self.store.fs(self.store.get(key)?.id))
    }

    fn cleanup(&self) -> Result<usize> {
        self.store.cleanup()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::MemStore;

    fn snapshotter(dir: &Path) -> OverlaySnapshotter {
        OverlaySnapshotter::new(dir, Arc::new(MemStore::default())).unwrap()
    }

    /// Commits `n` layers on top of each other; returns the top's name.
    fn chain(s: &OverlaySnapshotter, n: usize) -> String {
        let mut parent: Option<String> = None;
        for i in 0..n {
            s.prepare(&format!("a{i}"), parent.as_deref()).unwrap();
            s.commit(&format!("c{i}"), &format!("a{i}")).unwrap();
            parent = Some(format!("c{i}"));
        }
        parent.unwrap_or_default()
    }

    #[test]
    fn mounts_are_bind_or_overlay_as_containerd_makes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let s = snapshotter(tmp.path());
        let root = s.root().to_string_lossy().into_owned();
        let fs = |id: u64| format!("{root}/snapshots/{id}/fs");

        let m = s.prepare("base", None).unwrap();
        assert_eq!(m, vec![Mount::bind(fs(1), false)]);
        s.commit("L1", "base").unwrap();
        s.prepare("x", Some("L1")).unwrap();
        s.commit("L2", "x").unwrap();

        let m = s.prepare("top", Some("L2")).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].fstype, "overlay");
        assert_eq!(
            m[0].options,
            [
                format!("lowerdir={}:{}", fs(2), fs(1)),
                format!("upperdir={}", fs(3)),
                format!("workdir={root}/snapshots/3/work"),
            ]
        );
        assert!(!m[0].is_readonly());
        assert_eq!(s.mounts("top").unwrap(), m);

        assert_eq!(
            s.view("v1", Some("L1")).unwrap(),
            vec![Mount::bind(fs(1), true)]
        );
        let v = s.view("v2", Some("L2")).unwrap();
        assert_eq!(
            v[0].options,
            ["ro".to_string(), format!("lowerdir={}:{}", fs(2), fs(1))]
        );
        assert!(v[0].is_readonly());
        assert_eq!(s.view("v0", None).unwrap(), vec![Mount::bind(fs(6), true)]);

        let e = s.mounts("L1").unwrap_err();
        assert!(e.to_string().contains("committed"), "{e}");
        assert_eq!(s.layer_dir("top").unwrap(), PathBuf::from(fs(3)));
        assert!(tmp.path().join("snapshots/3/work").is_dir());
    }

    #[test]
    fn stat_list_remove_and_children() {
        let tmp = tempfile::tempdir().unwrap();
        let s = snapshotter(tmp.path());
        let top = chain(&s, 3);
        assert_eq!(top, "c2");
        let info = s.stat("c2").unwrap();
        assert_eq!(
            (info.kind, info.parent.as_deref()),
            (Kind::Committed, Some("c1"))
        );
        assert_eq!(s.list().unwrap().len(), 3);
        assert!(matches!(s.remove("c1"), Err(Error::HasChildren(k)) if k == "c1"));
        let dir = s.layer_dir("c2").unwrap();
        s.remove("c2").unwrap();
        assert!(!dir.exists(), "remove deletes the directory");
        s.remove("c1").unwrap();
        assert!(matches!(s.stat("c1"), Err(Error::NotFound(_))));
    }

    #[test]
    fn the_upper_dir_takes_the_parents_root_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let s = snapshotter(tmp.path());
        s.prepare("a", None).unwrap();
        let base = s.layer_dir("a").unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o750)).unwrap();
        s.commit("A", "a").unwrap();
        s.prepare("b", Some("A")).unwrap();
        let mode = std::fs::metadata(s.layer_dir("b").unwrap()).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o750);
    }

    #[test]
    fn usage_counts_the_own_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let s = snapshotter(tmp.path());
        s.prepare("a", None).unwrap();
        std::fs::write(s.layer_dir("a").unwrap().join("f"), vec![1u8; 50_000]).unwrap();
        let u = s.usage("a").unwrap();
        assert_eq!(u.inodes, 2);
        assert!(u.size >= 50_000, "{u:?}");
    }

    #[test]
    fn unsafe_roots_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let e = OverlaySnapshotter::new(&tmp.path().join("a:b"), Arc::new(MemStore::default()))
            .unwrap_err();
        assert!(e.to_string().contains("a:b"), "{e}");
    }
}
