//! The overlay snapshotter against real overlay mounts (needs root).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{Fixture, mem, read, require_root, write_errno};
use snapshot::mount::{mount_all, mount_one_classic};
use snapshot::{Error, Kind, OverlaySnapshotter, Snapshotter};

const EROFS: i32 = 30;

/// Commits `n` layers; layer `i` adds `layer-<i>` and rewrites `top`. Returns the top name.
fn commit_chain(s: &OverlaySnapshotter, n: usize) -> String {
    let mut parent: Option<String> = None;
    for i in 0..n {
        let key = format!("active-{i}");
        s.prepare(&key, parent.as_deref()).unwrap();
        // Writing straight into the upper dir is what a mounted write would leave there.
        let dir = s.layer_dir(&key).unwrap();
        std::fs::write(dir.join(format!("layer-{i}")), i.to_string()).unwrap();
        std::fs::write(dir.join("top"), i.to_string()).unwrap();
        let name = format!("layer-{i}");
        s.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    parent.unwrap()
}

#[test]
fn child_sees_parent_and_records_changes_with_whiteouts() {
    if !require_root("child_sees_parent_and_records_changes_with_whiteouts") {
        return;
    }
    let fx = Fixture::new();
    let s = OverlaySnapshotter::new(&fx.root(), mem()).unwrap();
    let target = fx.target("rootfs");

    let mounts = s.prepare("base-work", None).unwrap();
    let guard = mount_all(&mounts, &target).unwrap();
    std::fs::write(target.join("keep"), "parent").unwrap();
    std::fs::write(target.join("change"), "old").unwrap();
    std::fs::create_dir(target.join("dir")).unwrap();
    std::fs::write(target.join("dir/gone"), "x").unwrap();
    guard.release().unwrap();
    s.commit("base", "base-work").unwrap();

    let mounts = s.prepare("child", Some("base")).unwrap();
    assert_eq!(mounts[0].fstype, "overlay");
    let guard = mount_all(&mounts, &target).unwrap();
    assert_eq!(read(&target.join("keep")), "parent");
    assert_eq!(read(&target.join("dir/gone")), "x");
    std::fs::write(target.join("change"), "new").unwrap();
    std::fs::remove_file(target.join("dir/gone")).unwrap();
    std::fs::write(target.join("added"), "child").unwrap();
    guard.release().unwrap();

    let layer = s.layer_dir("child").unwrap();
    assert_eq!(read(&layer.join("change")), "new");
    assert_eq!(read(&layer.join("added")), "child");
    assert!(
        !layer.join("keep").exists(),
        "unchanged files stay in the parent"
    );
    let wh = std::fs::symlink_metadata(layer.join("dir/gone")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0, "whiteout is device 0/0");

    let base = s.layer_dir("base").unwrap();
    assert_eq!(
        read(&base.join("change")),
        "old",
        "changes do not leak into the parent"
    );
    assert_eq!(read(&base.join("dir/gone")), "x");
    assert!(s.usage("child").unwrap().inodes >= 4);
    fx.assert_no_mounts();
}

#[test]
fn views_are_read_only() {
    if !require_root("views_are_read_only") {
        return;
    }
    let fx = Fixture::new();
    let s = OverlaySnapshotter::new(&fx.root(), mem()).unwrap();
    let top = commit_chain(&s, 2);
    let target = fx.target("view");

    // Two layers: an overlay with only lower dirs.
    let mounts = s.view("v2", Some(&top)).unwrap();
    assert_eq!(mounts[0].fstype, "overlay");
    let guard = mount_all(&mounts, &target).unwrap();
    assert_eq!(read(&target.join("top")), "1");
    assert_eq!(read(&target.join("layer-0")), "0");
    assert_eq!(write_errno(&target.join("new"), b"x"), Some(EROFS));
    assert_eq!(write_errno(&target.join("top"), b"x"), Some(EROFS));
    guard.release().unwrap();

    // One layer: a read-only bind mount.
    let mounts = s.view("v1", Some("layer-0")).unwrap();
    assert_eq!(mounts[0].fstype, "bind");
    let guard = mount_all(&mounts, &target).unwrap();
    assert_eq!(read(&target.join("top")), "0");
    assert_eq!(write_errno(&target.join("new"), b"x"), Some(EROFS));
    guard.release().unwrap();

    assert_eq!(s.stat("v2").unwrap().kind, Kind::View);
    fx.assert_no_mounts();
}

#[test]
fn remove_refuses_parents_and_cleanup_collects_orphans() {
    if !require_root("remove_refuses_parents_and_cleanup_collects_orphans") {
        return;
    }
    let fx = Fixture::new();
    let s = OverlaySnapshotter::new(&fx.root(), mem()).unwrap();
    let top = commit_chain(&s, 2);
    s.prepare("work", Some(&top)).unwrap();
    let e = s.remove(&top).unwrap_err();
    assert!(matches!(&e, Error::HasChildren(k) if k == &top), "{e}");
    assert!(e.to_string().contains(&top));

    // As a crash between creating a directory and writing its record leaves it.
    let orphan = s.root().join("snapshots/9999");
    std::fs::create_dir_all(orphan.join("fs/etc")).unwrap();
    std::fs::create_dir_all(orphan.join("work")).unwrap();
    std::fs::write(orphan.join("fs/etc/passwd"), "x").unwrap();
    assert_eq!(s.cleanup().unwrap(), 1);
    assert!(!orphan.exists());
    assert!(
        s.layer_dir(&top).unwrap().join("top").exists(),
        "recorded data kept"
    );

    s.remove("work").unwrap();
    s.remove(&top).unwrap();
    assert_eq!(s.list().unwrap().len(), 1);
    fx.assert_no_mounts();
}

#[test]
fn two_hundred_layers_mount() {
    if !require_root("two_hundred_layers_mount") {
        return;
    }
    let fx = Fixture::new();
    let s = OverlaySnapshotter::new(&fx.root(), mem()).unwrap();
    let top = commit_chain(&s, 200);
    let mounts = s.prepare("build", Some(&top)).unwrap();
    let options: usize = mounts[0].options.iter().map(|o| o.len() + 1).sum();
    assert!(
        options > rustix::param::page_size(),
        "the chain must not fit in one page, or this test proves nothing ({options} bytes)"
    );

    let target = fx.target("deep");
    // mount(2) alone cannot take this many layers, and says so.
    let e = mount_one_classic(&mounts[0], &target).unwrap_err();
    assert!(matches!(e, Error::OptionsTooLong { .. }), "{e}");
    fx.assert_no_mounts();

    let guard = mount_all(&mounts, &target).unwrap();
    assert_eq!(read(&target.join("top")), "199");
    assert_eq!(read(&target.join("layer-0")), "0");
    assert_eq!(read(&target.join("layer-137")), "137");
    std::fs::write(target.join("top"), "mine").unwrap();
    guard.release().unwrap();
    assert_eq!(read(&s.layer_dir("build").unwrap().join("top")), "mine");
    fx.assert_no_mounts();
}

#[test]
fn classic_mount_still_works_for_short_chains() {
    if !require_root("classic_mount_still_works_for_short_chains") {
        return;
    }
    let fx = Fixture::new();
    let s = OverlaySnapshotter::new(&fx.root(), mem()).unwrap();
    let top = commit_chain(&s, 3);
    let mounts = s.prepare("w", Some(&top)).unwrap();
    let target = fx.target("classic");
    mount_one_classic(&mounts[0], &target).unwrap();
    let content = read(&target.join("top"));
    snapshot::mount::unmount(&target).unwrap();
    assert_eq!(content, "2");
    fx.assert_no_mounts();
}

#[test]
fn auto_picks_overlay_here() {
    if !require_root("auto_picks_overlay_here") {
        return;
    }
    let fx = Fixture::new();
    let root = fx.root();
    let s = snapshot::auto(&root, mem()).unwrap();
    assert_eq!(s.name(), "overlayfs");
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".overlay-probe"))
        .collect();
    assert!(leftovers.is_empty(), "probe left {leftovers:?}");
    // by_name agrees, and the auto-chosen snapshotter is usable.
    assert_eq!(
        snapshot::by_name("auto", &root, mem()).unwrap().name(),
        "overlayfs"
    );
    s.prepare("k", None).unwrap();
    assert!(Path::new(&s.layer_dir("k").unwrap()).is_dir());
    fx.assert_no_mounts();
}

#[test]
fn mount_errors_name_the_target_and_the_kernels_reason() {
    if !require_root("mount_errors_name_the_target_and_the_kernels_reason") {
        return;
    }
    let fx = Fixture::new();
    let s = OverlaySnapshotter::new(&fx.root(), mem()).unwrap();
    let top = commit_chain(&s, 2);
    let mut mounts = s.prepare("w", Some(&top)).unwrap();
    let gone = fx.path().join("no-such-layer");
    mounts[0].options[0].push_str(&format!(":{}", gone.display()));
    let target = fx.target("bad");
    let e = mount_all(&mounts, &target).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&target.display().to_string()), "{msg}");
    assert!(msg.contains("no-such-layer"), "{msg}");
    fx.assert_no_mounts();
}
