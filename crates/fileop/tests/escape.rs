//! Escape attempts: symlinks and `..` in sources, destinations and action paths must
//! resolve inside their roots. Every test checks a sentinel directory next to the roots
//! that holds its own `etc/passwd`.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;
use fileop::{copy, mkdir, mkfile, rm, symlink as make_link};
use proptest::prelude::*;
use proto::pb;

/// A root whose `link` points at the absolute `/etc`, whose `up` climbs out with
/// `../../..`, and whose `abs` names the sentinel by its real path.
fn hostile(sb: &Sandbox, root: &std::path::Path) {
    write(&root.join("etc/passwd"), "inside:x:1:1::/:/bin/sh\n");
    symlink("/etc", root.join("link")).unwrap();
    symlink("../../../../../../..", root.join("up")).unwrap();
    symlink(sb.outside(), root.join("abs")).unwrap();
}

#[test]
fn a_source_link_to_etc_reads_the_roots_own_etc() {
    let sb = Sandbox::new();
    hostile(&sb, &sb.src());
    copy(
        &sb.src(),
        &sb.dst(),
        &copy_action("link/passwd", "/copied"),
        None,
    )
    .unwrap();
    assert_eq!(read(&sb.dst().join("copied")), "inside:x:1:1::/:/bin/sh\n");
    // Following the link as the source itself: the root's etc, never the host's.
    let follow = pb::FileActionCopy {
        follow_symlink: true,
        ..copy_action("link", "/etc-copy")
    };
    copy(&sb.src(), &sb.dst(), &follow, None).unwrap();
    assert_eq!(paths(&sb.dst().join("etc-copy")), ["passwd"]);
    // Climbing links stop at the root.
    copy(
        &sb.src(),
        &sb.dst(),
        &copy_action("up/etc/passwd", "/climbed"),
        None,
    )
    .unwrap();
    assert_eq!(read(&sb.dst().join("climbed")), "inside:x:1:1::/:/bin/sh\n");
    // The sentinel's path through a link is a path inside the root: not there.
    assert!(copy(&sb.src(), &sb.dst(), &copy_action("abs/canary", "/c"), None).is_err());
    sb.assert_untouched();
}

#[test]
fn dotdot_in_paths_stays_inside() {
    let sb = Sandbox::new();
    write(&sb.src().join("a"), "A");
    copy(
        &sb.src(),
        &sb.dst(),
        &copy_action("../../../a", "../../../b"),
        None,
    )
    .unwrap();
    assert_eq!(read(&sb.dst().join("b")), "A");
    let dc = pb::FileActionCopy {
        dir_copy_contents: true,
        ..copy_action("..", "/../all")
    };
    copy(&sb.src(), &sb.dst(), &dc, None).unwrap();
    assert_eq!(read(&sb.dst().join("all/a")), "A");
    assert!(
        copy(
            &sb.src(),
            &sb.dst(),
            &copy_action("../outside/canary", "/x"),
            None
        )
        .is_err()
    );
    sb.assert_untouched();
}

#[test]
fn a_destination_through_an_outward_link_writes_inside() {
    let sb = Sandbox::new();
    write(&sb.src().join("canary"), "evil");
    write(&sb.src().join("tree/canary"), "evil");
    hostile(&sb, &sb.dst());
    let wild = |src: &str, dest: &str| pb::FileActionCopy {
        create_dest_path: true,
        allow_wildcard: true,
        ..copy_action(src, dest)
    };
    for dest in [
        "/abs/",
        "/abs/canary",
        "/up/",
        "/up/canary",
        "/link/",
        "/up/x/y/",
    ] {
        copy(&sb.src(), &sb.dst(), &wild("canary", dest), None)
            .unwrap_or_else(|e| panic!("{dest}: {e}"));
        // A tree onto the file just copied fails (not a directory); either way nothing
        // may land outside.
        let _ = copy(&sb.src(), &sb.dst(), &wild("tree", dest), None);
        sb.assert_untouched();
    }
    // The link to the sentinel landed as a directory of the same path inside the root.
    let inside = sb.dst().join(sb.outside().strip_prefix("/").unwrap());
    assert_eq!(read(&inside.join("canary")), "evil");
    assert_eq!(read(&sb.dst().join("canary")), "evil");
    assert_eq!(read(&sb.dst().join("etc/canary")), "evil");
}

#[test]
fn actions_through_outward_links_stay_inside() {
    let sb = Sandbox::new();
    let root = sb.dst();
    hostile(&sb, &root);
    let mk = pb::FileActionMkDir {
        path: "/abs/newdir".into(),
        mode: 0o755,
        make_parents: true,
        owner: None,
        timestamp: -1,
    };
    mkdir(&root, &mk, None).unwrap();
    let f = pb::FileActionMkFile {
        path: "/up/canary".into(),
        mode: 0o644,
        data: b"evil".to_vec(),
        owner: None,
        timestamp: -1,
    };
    mkfile(&root, &f, None).unwrap();
    assert_eq!(read(&root.join("canary")), "evil");
    let l = pb::FileActionSymlink {
        oldpath: "/".into(),
        newpath: "/abs/newlink".into(),
        owner: None,
        timestamp: -1,
    };
    make_link(&root, &l, None).unwrap();
    let inside = root.join(sb.outside().strip_prefix("/").unwrap());
    assert!(inside.join("newdir").is_dir());
    assert!(
        fs::symlink_metadata(inside.join("newlink"))
            .unwrap()
            .is_symlink()
    );
    for p in ["/abs/canary", "/up/outside/canary", "/abs/etc"] {
        let a = pb::FileActionRm {
            path: p.into(),
            allow_not_found: true,
            allow_wildcard: false,
        };
        rm(&root, &a).unwrap();
    }
    let wild = pb::FileActionRm {
        path: "/abs/*".into(),
        allow_not_found: true,
        allow_wildcard: true,
    };
    // A wildcard's base is not followed when it is a symlink (as upstream): no match.
    rm(&root, &wild).unwrap();
    assert!(inside.join("newdir").is_dir());
    // A plain path's parent is, inside the root.
    let plain = pb::FileActionRm {
        path: "/abs/newdir".into(),
        allow_not_found: false,
        allow_wildcard: false,
    };
    rm(&root, &plain).unwrap();
    assert!(!inside.join("newdir").exists());
    sb.assert_untouched();
}

/// One step of a random escape attempt.
fn path_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("..".to_string()),
            Just("abs".to_string()),
            Just("up".to_string()),
            Just("link".to_string()),
            Just("canary".to_string()),
            Just("etc".to_string()),
            Just("d".to_string()),
        ],
        1..5,
    )
    .prop_map(|v| v.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the paths, whatever succeeds or fails, the sentinel is untouched.
    #[test]
    fn random_paths_never_leave_the_roots(src in path_strategy(), dest in path_strategy(), parents in any::<bool>()) {
        let sb = Sandbox::new();
        hostile(&sb, &sb.src());
        hostile(&sb, &sb.dst());
        write(&sb.src().join("canary"), "evil");
        write(&sb.src().join("d/canary"), "evil");
        let a = pb::FileActionCopy {
            create_dest_path: parents,
            follow_symlink: parents,
            dir_copy_contents: !parents,
            allow_wildcard: true,
            always_replace_existing_dest_paths: parents,
            ..copy_action(&src, &dest)
        };
        let _ = copy(&sb.src(), &sb.dst(), &a, None);
        let mk = pb::FileActionMkFile {
            path: dest.clone(),
            mode: 0o644,
            data: b"evil".to_vec(),
            owner: None,
            timestamp: -1,
        };
        let _ = mkfile(&sb.dst(), &mk, None);
        let md = pb::FileActionMkDir {
            path: format!("{dest}/x"),
            mode: 0o755,
            make_parents: true,
            owner: None,
            timestamp: -1,
        };
        let _ = mkdir(&sb.dst(), &md, None);
        let r = pb::FileActionRm { path: src.clone(), allow_not_found: true, allow_wildcard: false };
        let _ = rm(&sb.dst(), &r);
        sb.assert_untouched();
    }
}
