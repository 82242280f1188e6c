//! Owners by name from a root's /etc/passwd and /etc/group, then used by actions.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;
use fileop::{Owner, copy, resolve_owner};
use proto::pb;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      # a comment\n\
                      app:x:1000:1000:App:/home/app:/bin/sh\n\
                      svc:x:1001:50::/srv:/sbin/nologin\n\
                      2000:x:2100:2200::/:/bin/sh\n";
const GROUP: &str = "root:x:0:\nstaff:x:50:svc\nweb:x:33:app\n";

fn image_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("etc/passwd"), PASSWD);
    write(&dir.path().join("etc/group"), GROUP);
    dir
}

#[test]
fn names_resolve_from_the_roots_files() {
    let img = image_root();
    let r = Some(img.path());
    let o = |c: pb::ChownOpt| resolve_owner(&c, r).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert_eq!(
        o(owner_by_name("app", None)),
        Some(Owner {
            uid: 1000,
            gid: 1000
        })
    );
    // The primary group comes from passwd.
    assert_eq!(
        o(owner_by_name("svc", None)),
        Some(Owner { uid: 1001, gid: 50 })
    );
    assert_eq!(
        o(owner_by_name("app", Some("web"))),
        Some(Owner { uid: 1000, gid: 33 })
    );
    assert_eq!(
        o(owner_by_name("svc", Some("7"))),
        Some(Owner { uid: 1001, gid: 7 })
    );
    // A name that is a number: a passwd entry of that name first, else a uid.
    assert_eq!(
        o(owner_by_name("2000", None)),
        Some(Owner {
            uid: 2100,
            gid: 2200
        })
    );
    assert_eq!(
        o(owner_by_name("1000", None)),
        Some(Owner {
            uid: 1000,
            gid: 1000
        })
    );
    assert_eq!(
        o(owner_by_name("4321", None)),
        Some(Owner {
            uid: 4321,
            gid: 4321
        })
    );
    // Group only: the user is root.
    let group_only = pb::ChownOpt {
        user: None,
        ..owner_by_name("x", Some("staff"))
    };
    assert_eq!(o(group_only), Some(Owner { uid: 0, gid: 50 }));
    assert_eq!(o(owner_by_id(5, 6)), Some(Owner { uid: 5, gid: 6 }));
}

#[test]
fn unknown_names_are_errors_naming_them() {
    let img = image_root();
    let err = resolve_owner(&owner_by_name("nobody", None), Some(img.path())).unwrap_err();
    assert!(err.to_string().contains("\"nobody\""), "{err}");
    let err = resolve_owner(&owner_by_name("app", Some("wheel")), Some(img.path())).unwrap_err();
    assert!(err.to_string().contains("\"wheel\""), "{err}");
    // No passwd at all: names are unknown.
    let empty = tempfile::tempdir().unwrap();
    let err = resolve_owner(&owner_by_name("app", None), Some(empty.path())).unwrap_err();
    assert!(err.to_string().contains("\"app\""), "{err}");
}

#[test]
fn passwd_is_read_inside_the_root() {
    let sb = Sandbox::new();
    // The image's /etc is a symlink to the absolute /etc: that is its own etc.
    let img = sb.src();
    fs::create_dir(img.join("real-etc")).unwrap();
    write(&img.join("real-etc/passwd"), "mine:x:77:88::/:/bin/sh\n");
    symlink("/real-etc", img.join("etc")).unwrap();
    let o = resolve_owner(&owner_by_name("mine", None), Some(&img)).unwrap();
    assert_eq!(o, Some(Owner { uid: 77, gid: 88 }));
    // "host" is only in the sentinel's etc/passwd: it must not be found there.
    let outside_etc = sb.outside().join("etc");
    fs::remove_file(img.join("etc")).unwrap();
    symlink(&outside_etc, img.join("etc")).unwrap();
    assert!(resolve_owner(&owner_by_name("host", None), Some(&img)).is_err());
    sb.assert_untouched();
}

#[test]
fn copy_with_an_owner_by_name() {
    if !need_root("copy_with_an_owner_by_name") {
        return;
    }
    let sb = Sandbox::new();
    write(&sb.dst().join("etc/passwd"), PASSWD);
    write(&sb.dst().join("etc/group"), GROUP);
    write(&sb.src().join("app/bin/run"), "#!/bin/sh\n");
    let chown = owner_by_name("app", Some("web"));
    let owner = resolve_owner(&chown, Some(&sb.dst())).unwrap();
    let a = pb::FileActionCopy {
        owner: Some(chown),
        ..dockerfile_copy("app", "/home/app/")
    };
    copy(&sb.src(), &sb.dst(), &a, owner).unwrap();
    for p in ["home", "home/app", "home/app/bin", "home/app/bin/run"] {
        assert_eq!(common::owner(&sb.dst().join(p)), (1000, 33), "{p}");
    }
}
