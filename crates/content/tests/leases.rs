//! Leases, GC, and their persistence in the redb metadata database.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use common::{data, mem_store, redb_store};
use content::Error;

#[test]
fn lease_protects_from_gc_and_gc_removes_unleased() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    store.create_lease("build-1", None).unwrap();
    let kept = store.put_in_lease("build-1", &data(1, 10_000)).unwrap();
    let also_kept = store.put(&data(2, 20_000)).unwrap();
    store.add_to_lease("build-1", &also_kept).unwrap();
    let loose = store.put(&data(3, 30_000)).unwrap();
    let loose2 = store.put(&data(4, 40_000)).unwrap();

    let report = store.gc(&HashSet::new()).unwrap();
    let mut removed = vec![loose, loose2];
    removed.sort();
    assert_eq!(report.removed, removed);
    assert_eq!(report.bytes_freed, 70_000);
    assert!(store.exists(&kept).unwrap() && store.exists(&also_kept).unwrap());
    assert!(!store.exists(&loose).unwrap() && !store.exists(&loose2).unwrap());

    // leased blobs cannot be deleted by hand either
    let err = store.delete(&kept).unwrap_err();
    assert!(matches!(err, Error::Leased { .. }), "{err}");

    // once the lease goes, so do its blobs
    store.delete_lease("build-1").unwrap();
    let report = store.gc(&HashSet::new()).unwrap();
    assert_eq!(report.removed.len(), 2);
    assert_eq!(report.bytes_freed, 30_000);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn lease_guard_protects_while_alive() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    let d = {
        let job = store
            .lease_guard(&content::new_lease_id("job"), None)
            .unwrap();
        let mut w = job.writer().unwrap();
        std::io::Write::write_all(&mut w, b"job output").unwrap();
        let d = w.commit(None).unwrap();
        assert!(store.gc(&HashSet::new()).unwrap().removed.is_empty());
        assert_eq!(store.blob_leases(&d).unwrap(), vec![job.id().to_string()]);
        d
    };
    assert!(store.leases().unwrap().is_empty());
    assert_eq!(store.gc(&HashSet::new()).unwrap().removed, vec![d]);
}

#[test]
fn leases_persist_across_reopen_with_redb() {
    let dir = tempfile::tempdir().unwrap();
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let (a, b) = {
        let store = redb_store(dir.path());
        store.create_lease("forever", None).unwrap();
        store.create_lease("hour", Some(expires)).unwrap();
        let a = store.put_in_lease("forever", &data(10, 1000)).unwrap();
        let b = store.put_in_lease("hour", &data(11, 1000)).unwrap();
        store.put(&data(12, 1000)).unwrap();
        (a, b)
    };
    let store = redb_store(dir.path());
    let leases = store.leases().unwrap();
    let ids: Vec<&str> = leases.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["forever", "hour"]);
    assert_eq!(leases[0].expires, None);
    let got = leases[1].expires.unwrap();
    let diff = got.duration_since(expires).unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_millis(2), "{got:?} vs {expires:?}");
    assert_eq!(store.lease_blobs("forever").unwrap(), vec![a]);
    assert_eq!(store.blob_leases(&b).unwrap(), vec!["hour"]);
    let report = store.gc(&HashSet::new()).unwrap();
    assert_eq!(report.removed, vec![oci::Digest::of(&data(12, 1000))]);
    assert!(store.exists(&a).unwrap() && store.exists(&b).unwrap());
}

#[test]
fn extra_roots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = mem_store(dir.path());
    let root = store.put(b"root").unwrap();
    let other = store.put(b"other").unwrap();
    let report = store.gc(&HashSet::from([root])).unwrap();
    assert_eq!(report.removed, vec![other]);
    assert_eq!(common::digests(&store), vec![root]);
}
