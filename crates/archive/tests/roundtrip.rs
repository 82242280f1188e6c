//! apply(diff(tree)) reproduces the tree, and diffs are deterministic. Needs root (owners,
//! device nodes, trusted and security xattrs).

mod common;

use std::fs;
use std::path::Path;

use archive::{
    ApplyOptions, Compression, DiffOptions, WhiteoutMode, XattrPolicy, apply_layer, diff_dirs,
    diff_overlay,
};
use common::*;

fn diff_all(tree: &Path, opts: &DiffOptions) -> (archive::DiffStats, Vec<u8>) {
    let empty = tempfile::tempdir().unwrap();
    let mut blob = Vec::new();
    let stats = diff_dirs(empty.path(), tree, &mut blob, opts).unwrap();
    (stats, blob)
}

#[test]
fn apply_of_diff_reproduces_the_tree() {
    if !need_root("round trip with owners and device nodes") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let (stats, blob) = diff_all(src.path(), &DiffOptions::default());
    assert_eq!(stats.digest, stats.diff_id);
    assert_eq!(stats.size, blob.len() as u64);

    let dst = tempfile::tempdir().unwrap();
    let applied = apply_layer(
        &blob[..],
        dst.path(),
        &ApplyOptions::new(WhiteoutMode::Delete),
    )
    .unwrap();
    assert_eq!(applied.diff_id, stats.diff_id);
    assert_eq!(applied.tar_size, stats.uncompressed_size);
    assert_eq!(applied.entries, stats.entries);
    assert_eq!(applied.compression, Compression::Uncompressed);

    let want = describe(src.path(), ALL);
    let got = describe(dst.path(), ALL);
    assert_eq!(got, want);
    // Spot checks of what the description must have seen.
    assert!(
        want["usr/bin/tool"].contains("mode=4755"),
        "{}",
        want["usr/bin/tool"]
    );
    assert!(want["usr/bin/tool"].contains("security.capability"));
    assert!(
        want["usr/bin/multi2"].contains("link=etc/multi3"),
        "{}",
        want["usr/bin/multi2"]
    );
    assert!(want["usr/bin/multi"].contains("owner=3000000:3000001"));
    assert!(want["null"].contains("dev=1:3"));
    assert!(want["etc/hostname"].contains("trusted.tag"));

    // Diffing the applied tree gives the same bytes.
    let (again, blob2) = diff_all(dst.path(), &DiffOptions::default());
    assert_eq!(again.diff_id, stats.diff_id);
    assert_eq!(blob2, blob);
}

#[test]
fn compressed_layers_apply_and_keep_the_diff_id() {
    if !need_root("round trip with owners and device nodes") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path());
    let (plain, _) = diff_all(src.path(), &DiffOptions::default());
    for (c, level) in [(Compression::Gzip, Some(1)), (Compression::Zstd, Some(3))] {
        let mut opts = DiffOptions::default();
        opts.compression = c;
        opts.compression_level = level;
        let (stats, blob) = diff_all(src.path(), &opts);
        assert_eq!(stats.diff_id, plain.diff_id, "{c}");
        assert_eq!(stats.digest, oci::Digest::of(&blob));
        assert_ne!(stats.digest, stats.diff_id);
        assert_eq!(stats.uncompressed_size, plain.uncompressed_size);
        let dst = tempfile::tempdir().unwrap();
        let applied = apply_layer(
            &blob[..],
            dst.path(),
            &ApplyOptions::new(WhiteoutMode::Delete),
        )
        .unwrap();
        assert_eq!(applied.compression, c);
        assert_eq!(applied.diff_id, plain.diff_id);
        assert_eq!(describe(dst.path(), ALL), describe(src.path(), ALL));
    }
}

#[test]
fn same_tree_gives_the_same_digest() {
    if !need_root("determinism over owners and device nodes") {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    rich_tree(a.path());
    // The same content made in a different order on other inodes.
    rich_tree(b.path());
    let (da, blob_a) = diff_all(a.path(), &DiffOptions::default());
    let (db, blob_b) = diff_all(b.path(), &DiffOptions::default());
    assert_eq!(da.diff_id, db.diff_id);
    assert_eq!(blob_a, blob_b);
    // Twice on one tree, and through the overlay differ (everything is an addition).
    assert_eq!(
        diff_all(a.path(), &DiffOptions::default()).0.diff_id,
        da.diff_id
    );
    let mut blob_o = Vec::new();
    let o = diff_overlay(a.path(), &mut blob_o, &DiffOptions::default()).unwrap();
    assert_eq!(o.diff_id, da.diff_id);
    // Compressed output is reproducible too.
    let mut opts = DiffOptions::default();
    opts.compression = Compression::Gzip;
    assert_eq!(
        diff_all(a.path(), &opts).0.digest,
        diff_all(b.path(), &opts).0.digest
    );
    // A changed mtime changes the digest.
    set_mtime(&a.path().join("etc/hostname"), 5, 0);
    assert_ne!(
        diff_all(a.path(), &DiffOptions::default()).0.diff_id,
        da.diff_id
    );
}

#[test]
fn entries_are_sorted_with_parents_first() {
    let src = tempfile::tempdir().unwrap();
    let p = src.path();
    for d in ["b", "a/z", "a.d", "a/b/c"] {
        fs::create_dir_all(p.join(d)).unwrap();
    }
    for f in ["a/z/1", "a/b/c/2", "a.d/3", "a-", "b/4", "a/0"] {
        fs::write(p.join(f), f).unwrap();
    }
    let (_, blob) = diff_all(p, &DiffOptions::default());
    let mut ar = tar::Archive::new(&blob[..]);
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "a/", "a/0", "a/b/", "a/b/c/", "a/b/c/2", "a/z/", "a/z/1", "a-", "a.d/", "a.d/3", "b/",
            "b/4"
        ]
    );
}

#[test]
fn headers_are_normalized_and_mtimes_clamped() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("new"), b"n").unwrap();
    fs::write(src.path().join("old"), b"o").unwrap();
    set_mtime(&src.path().join("new"), 2_000_000_000, 123);
    set_mtime(&src.path().join("old"), 1_000, 999);
    let mut opts = DiffOptions::default();
    opts.source_date_epoch = Some(1_500_000_000);
    let (_, blob) = diff_all(src.path(), &opts);
    let mut ar = tar::Archive::new(&blob[..]);
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert!(h.as_ustar().is_some());
        seen.push((
            String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            h.mtime().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("new".to_string(), 1_500_000_000),
            ("old".to_string(), 1_000)
        ]
    );
    // No PAX header was needed.
    assert!(!blob.windows(14).any(|w| w == b"././@PaxHeader"));
}

#[test]
fn xattr_policies_choose_what_is_written() {
    if !need_root("trusted and security xattrs") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("f");
    fs::write(&f, b"x").unwrap();
    set_xattr(
        &f,
        "security.capability",
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    set_xattr(&f, "trusted.overlay.origin", b"junk");
    set_xattr(&f, "user.keep", b"1");
    let keys = |policy: XattrPolicy| {
        let mut opts = DiffOptions::default();
        opts.xattrs = policy;
        let (_, blob) = diff_all(src.path(), &opts);
        let mut ar = tar::Archive::new(&blob[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        let mut keys = Vec::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                keys.push(x.unwrap().key().unwrap().to_string());
            }
        }
        keys
    };
    assert_eq!(
        keys(XattrPolicy::Portable),
        ["SCHILY.xattr.security.capability", "SCHILY.xattr.user.keep"]
    );
    assert_eq!(
        keys(XattrPolicy::CapabilitiesOnly),
        ["SCHILY.xattr.security.capability"]
    );
    assert!(keys(XattrPolicy::None).is_empty());
}
