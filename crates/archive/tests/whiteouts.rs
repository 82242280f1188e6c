//! Whiteouts and opaque directories, applied in both modes and produced by both differs,
//! including a diff of a real overlay mount. Needs root (trusted xattrs, whiteout device
//! nodes, mounts).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use archive::{
    ApplyOptions, DiffOptions, WhiteoutMode, apply_layer, diff_dirs, diff_overlay,
    diff_overlay_with_base,
};
use common::*;

fn entry_names(blob: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(blob);
    ar.entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect()
}

/// Copies a tree exactly (metadata included) by diffing and applying it.
fn clone_tree(src: &Path, dst: &Path) {
    let empty = tempfile::tempdir().unwrap();
    let mut blob = Vec::new();
    diff_dirs(empty.path(), src, &mut blob, &DiffOptions::default()).unwrap();
    apply_layer(&blob[..], dst, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
}

fn is_whiteout(p: &Path) -> bool {
    let m = fs::symlink_metadata(p).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

/// A base tree and a layer deleting from it.
fn base(target: &Path) {
    for d in ["a", "b/sub", "d/deep"] {
        fs::create_dir_all(target.join(d)).unwrap();
    }
    for f in ["a/f", "a/g", "b/x", "b/sub/y", "c", "d/deep/z"] {
        fs::write(target.join(f), f).unwrap();
    }
}

fn deleting_layer() -> Vec<u8> {
    raw_tar(&[
        Raw::File(b".wh.c", b""),
        Raw::File(b".wh.d", b""),
        Raw::File(b"a/.wh.f", b""),
        Raw::Dir(b"b"),
        Raw::File(b"b/new", b"new"),
        // After an entry it must keep: opaque markers can come in any order.
        Raw::File(b"b/.wh..wh..opq", b""),
        Raw::File(b"e/.wh.nothing", b""),
        Raw::File(b"a/.wh..wh.plnk", b""),
    ])
}

#[test]
fn delete_mode_removes_whited_out_paths() {
    let dir = tempfile::tempdir().unwrap();
    base(dir.path());
    let stats = apply_layer(
        &deleting_layer()[..],
        dir.path(),
        &ApplyOptions::new(WhiteoutMode::Delete),
    )
    .unwrap();
    assert_eq!(stats.whiteouts, 5);
    assert_eq!(stats.entries, 8);
    let left: Vec<_> = describe(dir.path(), ALL).into_keys().collect();
    assert_eq!(left, ["a", "a/g", "b", "b/new"]);
}

#[test]
fn an_opaque_marker_after_the_entries_hides_older_contents_below_them_too() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("b/sub")).unwrap();
    fs::write(dir.path().join("b/sub/old"), b"old").unwrap();
    fs::write(dir.path().join("b/gone"), b"gone").unwrap();
    let layer = raw_tar(&[
        Raw::Dir(b"b"),
        Raw::Dir(b"b/sub"),
        Raw::File(b"b/sub/new", b"new"),
        Raw::Symlink(b"b/link", b"sub"),
        Raw::File(b"b/.wh..wh..opq", b""),
    ]);
    apply_layer(
        &layer[..],
        dir.path(),
        &ApplyOptions::new(WhiteoutMode::Delete),
    )
    .unwrap();
    let left: Vec<_> = describe(dir.path(), ALL).into_keys().collect();
    assert_eq!(left, ["b", "b/link", "b/sub", "b/sub/new"]);
}

#[test]
fn overlay_mode_makes_overlay_whiteouts() {
    if !need_root("trusted xattrs and whiteout device nodes") {
        return;
    }
    for userxattr in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mode = WhiteoutMode::Overlay { userxattr };
        apply_layer(&deleting_layer()[..], dir.path(), &ApplyOptions::new(mode)).unwrap();
        for w in ["c", "d", "a/f", "e/nothing"] {
            assert!(is_whiteout(&dir.path().join(w)), "{w}");
        }
        assert_eq!(fs::read(dir.path().join("b/new")).unwrap(), b"new");
        let key = if userxattr {
            "user.overlay.opaque"
        } else {
            "trusted.overlay.opaque"
        };
        assert_eq!(
            xattrs(&dir.path().join("b")),
            [(key.to_string(), b"y".to_vec())]
        );
        assert!(xattrs(&dir.path().join("a")).is_empty());
        // The reserved metadata entry was skipped.
        assert!(!dir.path().join("a/.wh..wh.plnk").exists());
    }
}

#[test]
fn overlay_xattrs_in_a_layer_are_dropped() {
    if !need_root("trusted xattrs") {
        return;
    }
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
        ("SCHILY.xattr.user.ok", &b"1"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("d/").unwrap();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = ApplyOptions::new(WhiteoutMode::Overlay { userxattr: false });
    apply_layer(&b.into_inner().unwrap()[..], dir.path(), &opts).unwrap();
    assert_eq!(
        xattrs(&dir.path().join("d")),
        [("user.ok".to_string(), b"1".to_vec())]
    );
}

#[test]
fn diff_dirs_writes_changes_and_one_whiteout_per_deleted_dir() {
    if !need_root("exact tree copies") {
        return;
    }
    let lower = tempfile::tempdir().unwrap();
    let l = lower.path();
    for d in ["keep", "mod", "perm", "gone", "gonedir/x"] {
        fs::create_dir_all(l.join(d)).unwrap();
    }
    for f in [
        "keep/unchanged",
        "keep/samesec",
        "mod/file",
        "perm/file",
        "gone/file",
        "gonedir/x/y",
        "swap",
    ] {
        fs::write(l.join(f), b"aaaa").unwrap();
    }
    set_times(l, 1_000);
    // The upper tree starts as an exact copy, as a native snapshot does.
    let upper = tempfile::tempdir().unwrap();
    let u = upper.path();
    clone_tree(l, u);
    fs::write(u.join("mod/file"), b"new content").unwrap();
    fs::set_permissions(u.join("perm/file"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(u.join("gone/file")).unwrap();
    fs::remove_dir_all(u.join("gonedir")).unwrap();
    fs::remove_file(u.join("swap")).unwrap();
    fs::create_dir(u.join("swap")).unwrap();
    fs::write(u.join("swap/inner"), b"i").unwrap();
    // Same size and the same whole-second mtime: only the content tells.
    let samesec_mtime = fs::metadata(u.join("keep/samesec")).unwrap().mtime();
    fs::write(u.join("keep/samesec"), b"bbbb").unwrap();
    set_mtime(&u.join("keep/samesec"), samesec_mtime, 0);
    fs::create_dir_all(u.join("added/new")).unwrap();
    fs::write(u.join("added/new/file"), b"f").unwrap();

    let mut blob = Vec::new();
    let stats = diff_dirs(l, u, &mut blob, &DiffOptions::default()).unwrap();
    assert_eq!(
        entry_names(&blob),
        [
            ".wh.gonedir",
            "added/",
            "added/new/",
            "added/new/file",
            "gone/",
            "gone/.wh.file",
            "keep/",
            "keep/samesec",
            "mod/",
            "mod/file",
            "perm/",
            "perm/file",
            "swap/",
            "swap/inner",
        ]
    );
    assert_eq!(stats.entries, 14);

    // Applying it on a copy of the lower tree gives the upper tree.
    let copy = tempfile::tempdir().unwrap();
    clone_tree(l, copy.path());
    apply_layer(
        &blob[..],
        copy.path(),
        &ApplyOptions::new(WhiteoutMode::Delete),
    )
    .unwrap();
    let no_dir_mtimes = Fields {
        dir_mtimes: false,
        overlay_xattrs: false,
    };
    assert_eq!(
        describe(copy.path(), no_dir_mtimes),
        describe(u, no_dir_mtimes)
    );
}

#[test]
fn diff_of_a_real_overlay_mount() {
    if !need_root("overlay mounts") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (src, lower, upper, work, merged) = (
        s.join("src"),
        s.join("lower"),
        s.join("upper"),
        s.join("work"),
        s.join("merged"),
    );
    for d in [&src, &lower, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    for d in ["a", "b/x", "c", "d", "e"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in ["a/f1", "a/f2", "b/x/y", "c/z", "d/keep", "e/file"] {
        fs::write(src.join(f), f).unwrap();
    }
    set_times(&src, 1_000_000);
    clone_tree(&src, &lower);
    let mounted = mount_overlay(lower.to_str().unwrap(), &upper, &work, &merged);
    if !need(mounted.is_ok(), &format!("an overlay mount ({mounted:?})")) {
        return;
    }
    // Changes made through the mount, as a RUN step makes them.
    let m = &merged;
    let changes = || -> std::io::Result<()> {
        fs::write(m.join("a/f1"), b"changed")?;
        fs::remove_file(m.join("a/f2"))?;
        fs::remove_dir_all(m.join("b"))?;
        fs::remove_dir_all(m.join("c"))?;
        fs::create_dir(m.join("c"))?;
        fs::write(m.join("c/fresh"), b"fresh")?;
        fs::set_permissions(m.join("d/keep"), fs::Permissions::from_mode(0o600))?;
        fs::create_dir(m.join("n"))?;
        fs::write(m.join("n/new"), b"new")
    };
    let changed = changes();
    let fields = Fields {
        dir_mtimes: false,
        overlay_xattrs: false,
    };
    let want = describe(m, fields);
    unmount(m);
    changed.unwrap();

    let mut blob = Vec::new();
    diff_overlay(&upper, &mut blob, &DiffOptions::default()).unwrap();
    // overlayfs' own attributes (origin, impure, opaque) never reach the layer.
    assert!(!xattrs(&upper.join("c")).is_empty());
    assert!(!blob.windows(8).any(|w| w == b"overlay."));
    assert_eq!(
        entry_names(&blob),
        [
            ".wh.b",
            "a/",
            "a/.wh.f2",
            "a/f1",
            "c/",
            "c/.wh..wh..opq",
            "c/fresh",
            "d/",
            "d/keep",
            "n/",
            "n/new"
        ]
    );

    // Overlay mode: unpack into a fresh upper directory and mount it over the same lower.
    let (upper2, work2) = (s.join("upper2"), s.join("work2"));
    fs::create_dir(&upper2).unwrap();
    fs::create_dir(&work2).unwrap();
    apply_layer(
        &blob[..],
        &upper2,
        &ApplyOptions::new(WhiteoutMode::Overlay { userxattr: false }),
    )
    .unwrap();
    mount_overlay(lower.to_str().unwrap(), &upper2, &work2, m).unwrap();
    let got = describe(m, fields);
    unmount(m);
    assert_eq!(got, want);

    // Delete mode: apply onto a copy of the lower tree.
    let native = s.join("native");
    fs::create_dir(&native).unwrap();
    clone_tree(&lower, &native);
    apply_layer(&blob[..], &native, &ApplyOptions::new(WhiteoutMode::Delete)).unwrap();
    assert_eq!(describe(&native, fields), want);
    assert!(!native.join("c/z").exists());
    assert!(native.join("e/file").exists());
}

#[test]
fn a_base_leaves_out_what_was_copied_up_without_change() {
    if !need_root("overlay mounts") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    let (lower, upper, work, merged) = (
        s.join("lower"),
        s.join("upper"),
        s.join("work"),
        s.join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    for d in ["a", "d", "e"] {
        fs::create_dir(lower.join(d)).unwrap();
    }
    for f in ["a/f1", "d/keep", "e/file"] {
        fs::write(lower.join(f), f).unwrap();
    }
    set_times(&lower, 1_000_000);
    let mounted = mount_overlay(lower.to_str().unwrap(), &upper, &work, &merged);
    if !need(mounted.is_ok(), &format!("an overlay mount ({mounted:?})")) {
        return;
    }
    let m = &merged;
    let changes = || -> std::io::Result<()> {
        // a real change
        fs::write(m.join("a/f1"), b"changed")?;
        // a mount stub: created and removed, the directory's times put back
        let before = fs::metadata(m.join("e"))?;
        fs::write(m.join("e/stub"), b"")?;
        fs::remove_file(m.join("e/stub"))?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(before.mtime() as u64);
        fs::File::open(m.join("e"))?.set_modified(t)?;
        // a chmod to the same mode copies the file up unchanged
        fs::set_permissions(
            m.join("d/keep"),
            fs::Permissions::from_mode(before_mode(&lower.join("d/keep"))),
        )
    };
    let changed = changes();
    unmount(m);
    changed.unwrap();
    assert!(
        upper.join("e").is_dir() && upper.join("d/keep").is_file(),
        "copied up"
    );

    let mut plain = Vec::new();
    diff_overlay(&upper, &mut plain, &DiffOptions::default()).unwrap();
    let plain = entry_names(&plain);
    assert!(
        plain.contains(&"e/".to_string()) && plain.contains(&"d/keep".to_string()),
        "{plain:?}"
    );

    let mut based = Vec::new();
    diff_overlay_with_base(&upper, &lower, &mut based, &DiffOptions::default()).unwrap();
    assert_eq!(entry_names(&based), ["a/", "a/f1"]);
}

fn before_mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}
