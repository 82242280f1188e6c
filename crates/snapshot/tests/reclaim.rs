//! `mount::unmount_all_under`: what a restarted daemon uses to detach the mounts a killed
//! one left in its temporary directory.

mod common;

use common::{Fixture, mounts_under, require_root};
use snapshot::Mount;
use snapshot::mount::{mount_one, unmount_all_under};

#[test]
fn detaches_nested_and_stacked_mounts_and_nothing_beside() {
    if !require_root("detaches_nested_and_stacked_mounts_and_nothing_beside") {
        return;
    }
    let fx = Fixture::new();
    let src = fx.path().join("src");
    std::fs::create_dir_all(src.join("inner")).unwrap();
    std::fs::write(src.join("file"), "data").unwrap();
    let bind = |dir: &std::path::Path| Mount::bind(dir.to_string_lossy(), true);

    let tmp = fx.path().join("tmp");
    let a = tmp.join("a");
    std::fs::create_dir_all(&a).unwrap();
    mount_one(&bind(&src), &a).unwrap();
    // stacked on the same point, and one below it
    mount_one(&bind(&src), &a).unwrap();
    mount_one(&bind(&src), &a.join("inner")).unwrap();
    // a sibling whose name merely starts the same is not below `tmp`
    let beside = fx.path().join("tmpx");
    std::fs::create_dir_all(&beside).unwrap();
    mount_one(&bind(&src), &beside).unwrap();

    assert_eq!(mounts_under(&tmp).len(), 3);
    let detached = unmount_all_under(&tmp).unwrap();
    assert!(detached.len() >= 2, "{detached:?}");
    assert!(mounts_under(&tmp).is_empty(), "{:?}", mounts_under(&tmp));
    assert_eq!(mounts_under(&beside), vec![beside.clone()]);
    // the source was never written through
    assert_eq!(std::fs::read_to_string(src.join("file")).unwrap(), "data");

    // nothing mounted: nothing to do
    assert!(unmount_all_under(&tmp).unwrap().is_empty());
    assert!(
        unmount_all_under(&fx.path().join("missing"))
            .unwrap()
            .is_empty()
    );
    snapshot::mount::unmount(&beside).unwrap();
    fx.assert_no_mounts();
}
