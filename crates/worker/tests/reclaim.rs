//! Opening a worker reclaims what a killed process left under its root: a snapshot still
//! mounted under `tmp/`, stray entries there, and snapshots that were never committed;
//! committed snapshots, including the one that was mounted, stay intact.

use worker::{Worker, WorkerOptions};

fn require_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "worker tests need root in CI"
        );
        eprintln!("SKIPPED: needs root (mounts)");
    }
    root
}

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&dir))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn open_reclaims_temporary_mounts_and_uncommitted_snapshots() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = || WorkerOptions {
        snapshotter: Some("overlayfs".into()),
        ..WorkerOptions::default()
    };
    let w = Worker::open(dir.path(), opts()).await.unwrap();
    let s = w.snapshotter.clone();
    s.prepare("base", None).unwrap();
    std::fs::write(s.layer_dir("base").unwrap().join("keep"), "kept").unwrap();
    s.commit("committed", "base").unwrap();
    s.prepare("active/left", Some("committed")).unwrap();
    let view = s.view("view/left", Some("committed")).unwrap();
    // What a killed process leaves: a view mounted in tmp/ (never unmounted), and a stray
    // file there.
    let target = w.tmp_dir().join("mounted");
    std::fs::create_dir_all(&target).unwrap();
    for m in &view {
        snapshot::mount::mount_one(m, &target).unwrap();
    }
    std::fs::write(w.tmp_dir().join("stray"), "x").unwrap();
    assert!(!mounts_under(&w.tmp_dir()).is_empty());
    let tmp = w.tmp_dir();
    drop((w, s));

    let w = Worker::open(dir.path(), opts()).await.unwrap();
    assert!(
        mounts_under(dir.path()).is_empty(),
        "{:?}",
        mounts_under(dir.path())
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "tmp/ is emptied"
    );
    let keys: Vec<String> = w
        .snapshotter
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, ["committed"]);
    let snapshot_dirs = std::fs::read_dir(w.root().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(
        snapshot_dirs, 1,
        "the uncommitted snapshots' directories are gone"
    );
    // nothing was deleted through the mount
    let layer = w.snapshotter.layer_dir("committed").unwrap();
    assert_eq!(std::fs::read_to_string(layer.join("keep")).unwrap(), "kept");
}
