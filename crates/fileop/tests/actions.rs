//! mkdir, mkfile, rm and symlink against real directories.

mod common;

use std::fs;
use std::os::unix::fs::symlink as make_symlink;

use common::*;
use fileop::{Owner, mkdir, mkfile, rm, symlink};
use proto::pb;

fn mkdir_action(path: &str, mode: i32, parents: bool) -> pb::FileActionMkDir {
    pb::FileActionMkDir {
        path: path.to_string(),
        mode,
        make_parents: parents,
        owner: None,
        timestamp: -1,
    }
}

fn rm_action(path: &str) -> pb::FileActionRm {
    pb::FileActionRm {
        path: path.to_string(),
        allow_not_found: false,
        allow_wildcard: false,
    }
}

#[test]
fn mkdir_sets_the_exact_mode_and_needs_a_parent() {
    let sb = Sandbox::new();
    let root = sb.dst();
    mkdir(&root, &mkdir_action("/a", 0o750, false), None).unwrap();
    assert_eq!(mode(&root.join("a")), 0o750);
    // Set-id bits are not part of a mkdir mode.
    mkdir(&root, &mkdir_action("/s", 0o2777, false), None).unwrap();
    assert_eq!(mode(&root.join("s")), 0o777);
    let err = mkdir(&root, &mkdir_action("/x/y", 0o755, false), None).unwrap_err();
    assert!(err.to_string().contains("/x/y"), "{err}");
    // An existing directory is left alone.
    chmod(&root.join("a"), 0o700);
    mkdir(&root, &mkdir_action("a", 0o755, false), None).unwrap();
    assert_eq!(mode(&root.join("a")), 0o700);
    mkdir(&root, &mkdir_action("/", 0o755, false), None).unwrap();
}

#[test]
fn mkdir_parents_get_mode_owner_and_time() {
    if !need_root("mkdir_parents_get_mode_owner_and_time") {
        return;
    }
    let sb = Sandbox::new();
    let root = sb.dst();
    fs::create_dir(root.join("pre")).unwrap();
    let a = pb::FileActionMkDir {
        timestamp: 1_600_000_000_000_000_000,
        ..mkdir_action("/pre/a/b/c", 0o711, true)
    };
    mkdir(
        &root,
        &a,
        Some(Owner {
            uid: 1000,
            gid: 1001,
        }),
    )
    .unwrap();
    for p in ["pre/a", "pre/a/b", "pre/a/b/c"] {
        assert_eq!(mode(&root.join(p)), 0o711, "{p}");
        assert_eq!(owner(&root.join(p)), (1000, 1001), "{p}");
        assert_eq!(mtime(&root.join(p)), (1_600_000_000, 0), "{p}");
    }
    // What existed keeps its metadata.
    assert_eq!(owner(&root.join("pre")), (0, 0));
    assert_eq!(mode(&root.join("pre")), 0o755);
    // A file on the way is an error.
    write(&root.join("file"), "f");
    assert!(mkdir(&root, &mkdir_action("/file/x", 0o755, true), None).is_err());
}

#[test]
fn mkdir_follows_symlinks_inside_the_root() {
    let sb = Sandbox::new();
    let root = sb.dst();
    fs::create_dir(root.join("real")).unwrap();
    make_symlink("/real", root.join("link")).unwrap();
    mkdir(&root, &mkdir_action("/link/sub", 0o755, false), None).unwrap();
    assert!(root.join("real/sub").is_dir());
    // A dangling link is created inside the root, as Docker does.
    make_symlink("/made/by/link", root.join("dangling")).unwrap();
    mkdir(&root, &mkdir_action("/dangling/x", 0o755, true), None).unwrap();
    assert!(root.join("made/by/link/x").is_dir());
    sb.assert_untouched();
}

#[test]
fn mkfile_writes_data_mode_owner_and_time() {
    let sb = Sandbox::new();
    let root = sb.dst();
    let a = pb::FileActionMkFile {
        path: "/etc/config".to_string(),
        mode: 0o640,
        data: b"key=value\n".to_vec(),
        owner: None,
        timestamp: 1_700_000_000_500_000_000,
    };
    let err = mkfile(&root, &a, None).unwrap_err();
    assert!(err.to_string().contains("/etc/config"), "{err}");
    fs::create_dir(root.join("etc")).unwrap();
    mkfile(&root, &a, None).unwrap();
    assert_eq!(read(&root.join("etc/config")), "key=value\n");
    assert_eq!(mode(&root.join("etc/config")), 0o640);
    assert_eq!(
        mtime(&root.join("etc/config")),
        (1_700_000_000, 500_000_000)
    );
    // Writing again truncates and takes the new mode.
    let again = pb::FileActionMkFile {
        data: b"x".to_vec(),
        mode: 0o600,
        timestamp: -1,
        ..a.clone()
    };
    mkfile(&root, &again, None).unwrap();
    assert_eq!(read(&root.join("etc/config")), "x");
    assert_eq!(mode(&root.join("etc/config")), 0o600);
    // A directory there is an error.
    fs::create_dir(root.join("etc/dir")).unwrap();
    let dir = pb::FileActionMkFile {
        path: "etc/dir".to_string(),
        ..again.clone()
    };
    assert!(mkfile(&root, &dir, None).is_err());
    if need_root("mkfile with an owner") {
        mkfile(&root, &again, Some(Owner { uid: 12, gid: 34 })).unwrap();
        assert_eq!(owner(&root.join("etc/config")), (12, 34));
    }
}

#[test]
fn mkfile_through_a_symlink_writes_inside_the_root() {
    let sb = Sandbox::new();
    let root = sb.dst();
    fs::create_dir(root.join("etc")).unwrap();
    let a = |path: &str| pb::FileActionMkFile {
        path: path.to_string(),
        mode: 0o644,
        data: b"root:x:0:0::/root:/bin/sh\n".to_vec(),
        owner: None,
        timestamp: -1,
    };
    // A link to the sentinel's passwd, by its real path: that path inside the root has
    // no parent directory, so the write fails rather than going outside.
    make_symlink(sb.outside().join("etc/passwd"), root.join("etc/passwd")).unwrap();
    let err = mkfile(&root, &a("/etc/passwd"), None).unwrap_err();
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
    // Once that directory exists inside the root, the write lands there.
    let inside = root.join(sb.outside().join("etc").strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    mkfile(&root, &a("/etc/passwd"), None).unwrap();
    assert_eq!(read(&inside.join("passwd")), "root:x:0:0::/root:/bin/sh\n");
    // A relative link climbing out lands at the root.
    make_symlink("../../../../../../shadow", root.join("etc/shadow")).unwrap();
    mkfile(&root, &a("etc/shadow"), None).unwrap();
    assert!(root.join("shadow").is_file());
    sb.assert_untouched();
}

#[test]
fn rm_removes_files_trees_and_links_not_their_targets() {
    let sb = Sandbox::new();
    let root = sb.dst();
    write(&root.join("f"), "f");
    write(&root.join("d/sub/g"), "g");
    write(&root.join("target"), "t");
    make_symlink("target", root.join("link")).unwrap();
    make_symlink(sb.outside(), root.join("out")).unwrap();
    rm(&root, &rm_action("f")).unwrap();
    rm(&root, &rm_action("/d")).unwrap();
    rm(&root, &rm_action("link")).unwrap();
    rm(&root, &rm_action("out")).unwrap();
    assert_eq!(paths(&root), ["target"]);

    let err = rm(&root, &rm_action("missing")).unwrap_err();
    assert!(err.to_string().contains("/missing"), "{err}");
    let allowed = pb::FileActionRm {
        allow_not_found: true,
        ..rm_action("missing/deeper")
    };
    rm(&root, &allowed).unwrap();
    let err = rm(&root, &rm_action("/")).unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
    assert!(rm(&root, &rm_action("..")).is_err());
    assert_eq!(paths(&root), ["target"]);
    sb.assert_untouched();
}

#[test]
fn rm_wildcards_match_base_names() {
    let sb = Sandbox::new();
    let root = sb.dst();
    for f in [
        "logs/a.log",
        "logs/b.log",
        "logs/keep.txt",
        "logs/sub/c.log",
    ] {
        write(&root.join(f), f);
    }
    let a = pb::FileActionRm {
        allow_wildcard: true,
        ..rm_action("/logs/*.log")
    };
    rm(&root, &a).unwrap();
    assert_eq!(
        paths(&root),
        ["logs/", "logs/keep.txt", "logs/sub/", "logs/sub/c.log"]
    );
    // No match is not an error.
    rm(&root, &a).unwrap();
    let dirs = pb::FileActionRm {
        allow_wildcard: true,
        ..rm_action("/l?gs/s*")
    };
    rm(&root, &dirs).unwrap();
    assert_eq!(paths(&root), ["logs/", "logs/keep.txt"]);
}

#[test]
fn symlink_creates_a_link_with_its_target_verbatim() {
    let sb = Sandbox::new();
    let root = sb.dst();
    fs::create_dir(root.join("bin")).unwrap();
    let a = pb::FileActionSymlink {
        oldpath: "../usr/bin/busybox".to_string(),
        newpath: "/bin/sh".to_string(),
        owner: None,
        timestamp: 1_234_567_890_000_000_000,
    };
    symlink(&root, &a, None).unwrap();
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap().to_str(),
        Some("../usr/bin/busybox")
    );
    assert_eq!(mtime(&root.join("bin/sh")), (1_234_567_890, 0));
    let err = symlink(&root, &a, None).unwrap_err();
    assert!(err.to_string().contains("/bin/sh"), "{err}");
    if need_root("symlink with an owner") {
        let b = pb::FileActionSymlink {
            newpath: "/bin/ash".to_string(),
            ..a.clone()
        };
        symlink(&root, &b, Some(Owner { uid: 5, gid: 6 })).unwrap();
        assert_eq!(owner(&root.join("bin/ash")), (5, 6));
    }
}
