//! What a copy carries over or sets on each entry: hard links, modes (octal and
//! symbolic), times, owners, xattrs, device nodes.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};

use common::*;
use fileop::{CopyStats, Owner, copy};
use proto::pb;

fn run(sb: &Sandbox, a: &pb::FileActionCopy) -> CopyStats {
    copy(&sb.src(), &sb.dst(), a, None).unwrap_or_else(|e| panic!("{a:?}: {e}"))
}

fn fails(sb: &Sandbox, a: &pb::FileActionCopy) -> String {
    match copy(&sb.src(), &sb.dst(), a, None) {
        Ok(_) => panic!("{a:?} succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn hard_links_within_the_copy_are_kept() {
    let sb = Sandbox::new();
    write(&sb.src().join("dir/a"), "linked");
    fs::hard_link(sb.src().join("dir/a"), sb.src().join("dir/b")).unwrap();
    fs::create_dir(sb.src().join("dir/sub")).unwrap();
    fs::hard_link(sb.src().join("dir/a"), sb.src().join("dir/sub/c")).unwrap();
    write(&sb.src().join("dir/single"), "alone");
    let stats = run(&sb, &copy_action("dir", "/out"));
    let ino = |p: &str| fs::metadata(sb.dst().join(p)).unwrap().ino();
    assert_eq!(ino("out/a"), ino("out/b"));
    assert_eq!(ino("out/a"), ino("out/sub/c"));
    assert_ne!(ino("out/a"), ino("out/single"));
    assert_ne!(
        ino("out/a"),
        fs::metadata(sb.src().join("dir/a")).unwrap().ino()
    );
    assert_eq!(fs::metadata(sb.dst().join("out/a")).unwrap().nlink(), 3);
    // Content was written once: "linked" + "alone".
    assert_eq!(stats.bytes, 11);
    assert_eq!(stats.files, 4);
}

#[test]
fn octal_modes_apply_to_every_entry() {
    // Directories get 0640 before anything is written in them: only root gets in.
    if !need_root("octal_modes_apply_to_every_entry") {
        return;
    }
    let sb = Sandbox::new();
    write(&sb.src().join("dir/f"), "f");
    write(&sb.src().join("dir/sub/g"), "g");
    chmod(&sb.src().join("dir/f"), 0o600);
    run(
        &sb,
        &pb::FileActionCopy {
            mode: 0o640,
            ..copy_action("dir", "/out/")
        },
    );
    assert_eq!(mode(&sb.dst().join("out/dir/f")), 0o640);
    assert_eq!(mode(&sb.dst().join("out/dir/sub")), 0o640);
    assert_eq!(mode(&sb.dst().join("out/dir/sub/g")), 0o640);
    // The directory made for dest takes the mode's permission bits too.
    assert_eq!(mode(&sb.dst().join("out")), 0o640);
    run(
        &sb,
        &pb::FileActionCopy {
            mode: 0o4755,
            ..copy_action("dir/f", "/setuid")
        },
    );
    assert_eq!(mode(&sb.dst().join("setuid")), 0o4755);
    // Without a mode the source's is kept.
    run(&sb, &copy_action("dir/f", "/kept"));
    assert_eq!(mode(&sb.dst().join("kept")), 0o600);
}

#[test]
fn symbolic_modes_follow_chmod() {
    // `a=r` leaves directories without search permission: only root reads them back.
    if !need_root("symbolic_modes_follow_chmod") {
        return;
    }
    let sb = Sandbox::new();
    write(&sb.src().join("dir/plain"), "p");
    write(&sb.src().join("dir/script"), "s");
    chmod(&sb.src().join("dir/plain"), 0o664);
    chmod(&sb.src().join("dir/script"), 0o744);
    chmod(&sb.src().join("dir"), 0o700);
    let with = |s: &str, dest: &str| pb::FileActionCopy {
        mode_str: s.to_string(),
        mode: 0o777, // modeStr wins over mode
        ..copy_action("dir", dest)
    };
    run(&sb, &with("u+x,g-w", "/a"));
    assert_eq!(mode(&sb.dst().join("a/plain")), 0o744);
    assert_eq!(mode(&sb.dst().join("a/script")), 0o744);
    assert_eq!(mode(&sb.dst().join("a")), 0o700);
    run(&sb, &with("a+X", "/b"));
    assert_eq!(mode(&sb.dst().join("b/plain")), 0o664);
    assert_eq!(mode(&sb.dst().join("b/script")), 0o755);
    assert_eq!(mode(&sb.dst().join("b")), 0o711);
    run(&sb, &with("a=r", "/c"));
    assert_eq!(mode(&sb.dst().join("c/script")), 0o444);
    let err = fails(&sb, &with("u+q", "/d"));
    assert!(err.contains("u+q"), "{err}");
}

#[test]
fn times_are_kept_or_set() {
    let sb = Sandbox::new();
    write(&sb.src().join("dir/f"), "f");
    symlink("f", sb.src().join("dir/l")).unwrap();
    set_mtime(&sb.src().join("dir/f"), 1_111_111_111);
    set_mtime(&sb.src().join("dir/l"), 1_222_222_222);
    set_mtime(&sb.src().join("dir"), 1_333_333_333);
    run(&sb, &copy_action("dir", "/kept"));
    assert_eq!(mtime(&sb.dst().join("kept/f")).0, 1_111_111_111);
    assert_eq!(mtime(&sb.dst().join("kept/l")).0, 1_222_222_222);
    assert_eq!(mtime(&sb.dst().join("kept")).0, 1_333_333_333);

    let ts = 1_500_000_000_123_456_789;
    run(
        &sb,
        &pb::FileActionCopy {
            timestamp: ts,
            create_dest_path: true,
            ..copy_action("dir", "/p/q/set")
        },
    );
    for p in ["p", "p/q", "p/q/set", "p/q/set/f", "p/q/set/l"] {
        assert_eq!(
            mtime(&sb.dst().join(p)),
            (1_500_000_000, 123_456_789),
            "{p}"
        );
    }
}

#[test]
fn owners_are_kept_or_overridden() {
    if !need_root("owners_are_kept_or_overridden") {
        return;
    }
    let sb = Sandbox::new();
    write(&sb.src().join("dir/f"), "f");
    symlink("f", sb.src().join("dir/l")).unwrap();
    chown(&sb.src().join("dir/f"), 1000, 1001);
    chown(&sb.src().join("dir/l"), 7, 8);
    chown(&sb.src().join("dir"), 33, 34);
    run(&sb, &copy_action("dir", "/kept"));
    assert_eq!(owner(&sb.dst().join("kept/f")), (1000, 1001));
    assert_eq!(owner(&sb.dst().join("kept/l")), (7, 8));
    assert_eq!(owner(&sb.dst().join("kept")), (33, 34));

    let a = pb::FileActionCopy {
        create_dest_path: true,
        ..copy_action("dir", "/made/for/it/")
    };
    copy(
        &sb.src(),
        &sb.dst(),
        &a,
        Some(Owner {
            uid: 2000,
            gid: 3000,
        }),
    )
    .unwrap();
    for p in [
        "made",
        "made/for",
        "made/for/it",
        "made/for/it/dir",
        "made/for/it/dir/f",
        "made/for/it/dir/l",
    ] {
        assert_eq!(owner(&sb.dst().join(p)), (2000, 3000), "{p}");
    }
}

#[test]
fn xattrs_are_kept() {
    if !need_root("xattrs_are_kept") {
        return;
    }
    let sb = Sandbox::new();
    write(&sb.src().join("dir/f"), "f");
    set_xattr(&sb.src().join("dir/f"), "user.note", b"hello");
    set_xattr(&sb.src().join("dir/f"), "trusted.tag", b"\x00\x01bin");
    set_xattr(&sb.src().join("dir"), "user.dir", b"d");
    run(&sb, &copy_action("dir", "/out"));
    assert_eq!(
        get_xattr(&sb.dst().join("out/f"), "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        get_xattr(&sb.dst().join("out/f"), "trusted.tag").as_deref(),
        Some(&b"\x00\x01bin"[..])
    );
    assert_eq!(
        get_xattr(&sb.dst().join("out"), "user.dir").as_deref(),
        Some(&b"d"[..])
    );
}

#[test]
fn devices_and_fifos_are_recreated() {
    if !need_root("devices_and_fifos_are_recreated") {
        return;
    }
    use rustix::fs::FileType;
    let sb = Sandbox::new();
    fs::create_dir(sb.src().join("dev")).unwrap();
    mknod(
        &sb.src().join("dev/null"),
        FileType::CharacterDevice,
        1,
        3,
        0o666,
    );
    mknod(
        &sb.src().join("dev/loop9"),
        FileType::BlockDevice,
        7,
        9,
        0o660,
    );
    mknod(&sb.src().join("dev/pipe"), FileType::Fifo, 0, 0, 0o620);
    chmod(&sb.src().join("dev/pipe"), 0o620);
    run(&sb, &copy_action("dev", "/dev"));
    let m = |p: &str| fs::symlink_metadata(sb.dst().join(p)).unwrap();
    assert_eq!(m("dev/null").mode() & 0o170000, 0o020000);
    assert_eq!(m("dev/null").rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(m("dev/loop9").mode() & 0o170000, 0o060000);
    assert_eq!(m("dev/loop9").rdev(), rustix::fs::makedev(7, 9));
    assert_eq!(m("dev/pipe").mode() & 0o170000, 0o010000);
    assert_eq!(mode(&sb.dst().join("dev/pipe")), 0o620);
}
