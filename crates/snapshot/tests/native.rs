//! The native snapshotter against real bind mounts (needs root): a child sees a faithful
//! copy of its parent, and its changes stay its own.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::{Fixture, mem, read, require_root, write_errno};
use rustix::fs::{CWD, FileType, Mode, XattrFlags};
use snapshot::mount::mount_all;
use snapshot::{NativeSnapshotter, Snapshotter};

const EROFS: i32 = 30;

#[test]
fn child_sees_a_faithful_copy_and_changes_do_not_leak() {
    if !require_root("child_sees_a_faithful_copy_and_changes_do_not_leak") {
        return;
    }
    let fx = Fixture::new();
    let s = NativeSnapshotter::new(&fx.root(), mem()).unwrap();
    let target = fx.target("rootfs");

    let mounts = s.prepare("base-work", None).unwrap();
    let guard = mount_all(&mounts, &target).unwrap();
    let t = |p: &str| target.join(p);
    std::fs::create_dir(t("bin")).unwrap();
    std::fs::write(t("bin/tool"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(t("bin/tool"), Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(t("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::hard_link(t("bin/tool"), t("bin/alias")).unwrap();
    std::os::unix::fs::symlink("bin/tool", t("link")).unwrap();
    rustix::fs::mknodat(
        CWD,
        t("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        t("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    rustix::fs::lsetxattr(t("bin/tool"), "trusted.test", b"yes", XattrFlags::empty()).unwrap();
    std::fs::write(t("change"), "old").unwrap();
    std::fs::write(t("gone"), "x").unwrap();
    guard.release().unwrap();
    s.commit("base", "base-work").unwrap();

    let mounts = s.prepare("child", Some("base")).unwrap();
    assert_eq!(mounts[0].fstype, "bind");
    let guard = mount_all(&mounts, &target).unwrap();
    let tool = std::fs::metadata(t("bin/tool")).unwrap();
    assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid survives the copy");
    assert_eq!(tool.nlink(), 2);
    assert_eq!(std::fs::metadata(t("bin/alias")).unwrap().ino(), tool.ino());
    assert_eq!(
        std::fs::read_link(t("link")).unwrap().to_str(),
        Some("bin/tool")
    );
    let null = std::fs::symlink_metadata(t("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(
        std::fs::symlink_metadata(t("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::lgetxattr(t("bin/tool"), "trusted.test", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"yes");
    assert_eq!(read(&t("change")), "old");

    std::fs::write(t("change"), "new").unwrap();
    std::fs::remove_file(t("gone")).unwrap();
    guard.release().unwrap();

    let base = s.layer_dir("base").unwrap();
    let child = s.layer_dir("child").unwrap();
    assert_ne!(base, child);
    assert_eq!(read(&base.join("change")), "old", "no leak into the parent");
    assert_eq!(read(&base.join("gone")), "x");
    assert_eq!(read(&child.join("change")), "new");
    assert!(!child.join("gone").exists());

    // A view is read-only and shows the parent.
    let mounts = s.view("look", Some("base")).unwrap();
    let guard = mount_all(&mounts, &target).unwrap();
    assert_eq!(read(&t("change")), "old");
    assert_eq!(write_errno(&t("new"), b"x"), Some(EROFS));
    guard.release().unwrap();
    fx.assert_no_mounts();
}

#[test]
fn auto_can_be_told_native() {
    if !require_root("auto_can_be_told_native") {
        return;
    }
    let fx = Fixture::new();
    let s = snapshot::by_name("native", &fx.root(), mem()).unwrap();
    assert_eq!(s.name(), "native");
    let mounts = s.prepare("k", None).unwrap();
    let target = fx.target("t");
    let guard = mount_all(&mounts, &target).unwrap();
    std::fs::write(target.join("f"), "through the bind").unwrap();
    guard.release().unwrap();
    assert_eq!(
        read(&s.layer_dir("k").unwrap().join("f")),
        "through the bind"
    );
    fx.assert_no_mounts();
}
