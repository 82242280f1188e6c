//! Snapshot records in a real database survive a reopen (no root needed: nothing mounts).

use std::sync::Arc;

use metadata::{MetadataStore, RedbStore};
use snapshot::{Kind, NativeSnapshotter, OverlaySnapshotter, Snapshotter};

fn open(path: &std::path::Path) -> Arc<dyn MetadataStore> {
    Arc::new(RedbStore::open(path, &[]).unwrap())
}

#[test]
fn overlay_records_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, db) = (tmp.path().join("root"), tmp.path().join("meta.redb"));
    let (mounts, layer) = {
        let s = OverlaySnapshotter::new(&root, open(&db)).unwrap();
        s.prepare("a", None).unwrap();
        s.commit("A", "a").unwrap();
        let m = s.prepare("b", Some("A")).unwrap();
        (m, s.layer_dir("b").unwrap())
    };

    let s = OverlaySnapshotter::new(&root, open(&db)).unwrap();
    let infos = s.list().unwrap();
    let keys: Vec<_> = infos.iter().map(|i| (i.key.as_str(), i.kind)).collect();
    assert_eq!(keys, [("A", Kind::Committed), ("b", Kind::Active)]);
    assert_eq!(s.stat("b").unwrap().parent.as_deref(), Some("A"));
    assert_eq!(s.mounts("b").unwrap(), mounts);
    assert_eq!(s.layer_dir("b").unwrap(), layer);
    assert_eq!(
        s.cleanup().unwrap(),
        0,
        "recorded directories are not garbage"
    );
    // Ids continue after the reopen instead of reusing a directory.
    s.prepare("c", None).unwrap();
    assert_ne!(s.layer_dir("c").unwrap(), layer);
    assert!(s.layer_dir("c").unwrap().ends_with("snapshots/3/fs"));
}

#[test]
fn a_lost_directory_is_reported_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, db) = (tmp.path().join("root"), tmp.path().join("meta.redb"));
    let dir = {
        let s = NativeSnapshotter::new(&root, open(&db)).unwrap();
        s.prepare("a", None).unwrap();
        s.layer_dir("a").unwrap()
    };
    std::fs::remove_dir_all(&dir).unwrap();
    let s = NativeSnapshotter::new(&root, open(&db)).unwrap();
    let e = s.mounts("a").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("\"a\"") && msg.contains("missing"), "{msg}");
    // The overlay snapshotter refuses a root the native one owns.
    let e = OverlaySnapshotter::new(&root, open(&tmp.path().join("other.redb"))).unwrap_err();
    assert!(e.to_string().contains("native"), "{e}");
}
