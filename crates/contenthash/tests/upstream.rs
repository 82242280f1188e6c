//! Our digests against the values upstream BuildKit's own tests expect
//! (`cache/contenthash/checksum_test.go` at v0.32.2), on the same trees: root-owned,
//! directories 0755, files 0644. Equal digests mean equal cache keys across the two
//! implementations.

mod common;

use common::*;
use contenthash::{ChecksumOptions, Error, checksum, empty_digest};

const FILE_DATA0: &str = "sha256:cd8e75bca50f2d695f220d0cb0997d8ead387e4f926e8669a92d7f104cc9885b";
const FILE_DATA1: &str = "sha256:c2b5e234f5f38fc5864da7def04782f82501a40d46192e4207d5b3f0c3c4732b";
const FILE_DATA2: &str = "sha256:1c67653c3cf95b12a0014e2c4cd1d776b474b3218aee54155d6ae27b9b999c54";
const DIR_D0: &str = "sha256:d47454417d2c554067fbefe5f5719edc49f3cfe969c36b62e34a187a4da0cc9a";
const DIR_D0_FILE_BY_FILE: &str =
    "sha256:6b612ad5c13159112ae26357ef7bd34df29916941ba40ec2ce38dfb70c6c60c3";
const DIR_D0_MODIFIED: &str =
    "sha256:555ffa3028630d97ba37832b749eda85ab676fd64ffb629fbf0f4ec8c1e3bff1";
const DOUBLE_STAR: &str = "sha256:aa7448215bbf5b837b35ce64467857d8b9747965573d14d4b31b370586370971";

fn sum(root: &std::path::Path, path: &str, opts: &ChecksumOptions) -> String {
    checksum(root, path, opts)
        .unwrap_or_else(|e| panic!("checksum({path:?}): {e}"))
        .to_string()
}

fn with(base: ChecksumOptions, f: impl FnOnce(&mut ChecksumOptions)) -> ChecksumOptions {
    let mut o = base;
    f(&mut o);
    o
}

/// TestChecksumBasicFile.
#[test]
fn basic_file() {
    if !require_root("basic_file") {
        return;
    }
    let d = tree(&[
        "file foo data0",
        "file bar data1",
        "dir d0",
        "file d0/abc data0",
        "link d0/def abc",
        "link d0/ghi nosuchfile",
    ]);
    let r = d.path();
    assert!(matches!(
        checksum(r, "nosuch", &follow()),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(sum(r, "foo", &follow()), FILE_DATA0);
    assert_eq!(sum(r, "bar", &follow()), FILE_DATA1);
    assert_eq!(sum(r, "d0/abc", &follow()), FILE_DATA0);
    assert_eq!(sum(r, "d0/def", &follow()), FILE_DATA0);
    assert!(matches!(
        checksum(r, "d0/ghi", &follow()),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        sum(r, "/", &follow()),
        "sha256:427c9cf9ae98c0f81fb57a3076b965c7c149b6b0a85625ad4e884236649a42c6"
    );
    assert_eq!(sum(r, "d0", &follow()), DIR_D0);

    // The same directory as a root.
    let d = tree(&["file abc data0", "link def abc", "link ghi nosuchfile"]);
    assert_eq!(sum(d.path(), "/", &follow()), DIR_D0);
    // Removing a dangling symlink changes the digest.
    let d = tree(&["file abc data0", "link def abc"]);
    assert_eq!(sum(d.path(), "/", &follow()), DIR_D0_MODIFIED);
}

/// TestChecksumWildcardOrFilter.
#[test]
fn wildcards() {
    if !require_root("wildcards") {
        return;
    }
    let d = tree(&[
        "file bar data1",
        "file foo data0",
        "file fox data2",
        "dir x",
        "dir x/d0",
        "file x/d0/abc data0",
        "link x/d0/def abc",
        "link x/d0/ghi nosuchfile",
        "link y1 foo",
        "link y2 fox",
    ]);
    let r = d.path();
    let mut one = b"\0foo".to_vec();
    one.extend_from_slice(FILE_DATA0.as_bytes());
    assert_eq!(
        sum(r, "f*o", &wildcard()),
        contenthash::Digest::of(&one).to_string()
    );
    assert_eq!(
        sum(r, "f*", &wildcard()),
        "sha256:0b6731924f0a32a812bf8a729202e55e54ded331f9e4ff2397f681e43694e086"
    );
    assert_eq!(sum(r, "x/d?", &wildcard()), DIR_D0_FILE_BY_FILE);
    let wf = with(wildcard(), |o| o.follow_links = true);
    assert_eq!(sum(r, "x/d?/def", &wf), FILE_DATA0);
    assert_eq!(
        sum(r, "y*", &wf),
        "sha256:982153600b9653a1decb0f961e09e2bc1be335cfcaac9b39dbd1120b65fdf92c"
    );
}

/// TestSymlinksNoFollow.
#[test]
fn symlinks_no_follow() {
    if !require_root("symlinks_no_follow") {
        return;
    }
    let d = tree(&[
        "file target data0",
        "link sym target",
        "link sym2 target2",
        "dir foo",
        "link foo/ghi target",
        "link y1 foo/ghi",
    ]);
    let r = d.path();
    let sym = "sha256:a2ba571981f48ec34eb79c9a3ab091b6491e825c2f7e9914ea86e8e958be7fae";
    let wf = with(wildcard(), |o| o.follow_links = true);
    assert_eq!(sum(r, "sym", &wildcard()), sym);
    assert_ne!(sum(r, "sym2", &wildcard()), sym);
    assert_eq!(sum(r, "foo/ghi", &wildcard()), sym);
    // foo/ghi -> target is relative to foo: dangling.
    assert!(matches!(
        checksum(r, "foo/ghi", &wf),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        checksum(r, "y1", &wf),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(sum(r, "sym", &plain()), sym);
    assert_eq!(sum(r, "foo/ghi", &plain()), sym);
    let foo = "sha256:9b761577efcb1239cf4be971914c5d7404914dd32ff436401af1764dc5446b83";
    assert_eq!(sum(r, "foo", &follow()), foo);
    assert_eq!(
        sum(r, "fo?", &wf),
        "sha256:2797e710c6d1a89ff2d91c834b828b1dc500f2982430a58241df8e146f4c4bb4"
    );
    let fe = with(follow(), |o| o.exclude_patterns = vec!["*.git".into()]);
    assert_eq!(sum(r, "foo", &fe), foo);
}

/// TestChecksumIncludeDoubleStar.
#[test]
fn include_double_star() {
    if !require_root("include_double_star") {
        return;
    }
    let d = tree(&[
        "dir prefix",
        "dir prefix/a",
        "dir prefix/a/b",
        "dir prefix/a/b/c",
    ]);
    for w in [false, true] {
        let o = with(include(&["**/foo/**"]), |o| o.wildcard = w);
        assert_eq!(sum(d.path(), "prefix/a", &o), empty_digest().to_string());
    }
    build(
        d.path(),
        &["dir prefix/a/b/c/foo", "file prefix/a/b/c/foo/bar abc"],
    );
    for w in [false, true] {
        for pats in [["**/foo/**", "**/report"], ["**/foo", "**/report"]] {
            let o = with(include(&pats), |o| o.wildcard = w);
            assert_eq!(sum(d.path(), "prefix/a", &o), DOUBLE_STAR, "{pats:?} {w}");
        }
    }
}

/// TestChecksumIncludeExclude: how include patterns react to changes.
#[test]
fn include_exclude() {
    if !require_root("include_exclude") {
        return;
    }
    for w in [false, true] {
        let o = |inc: &[&str], exc: &[&str]| {
            with(include(inc), |o| {
                o.wildcard = w;
                o.exclude_patterns = exc.iter().map(|s| s.to_string()).collect();
            })
        };
        let d = tree(&[
            "file foo data0",
            "file bar data1",
            "dir d0",
            "file d0/abc abc",
            "dir d1",
            "file d1/def def",
        ]);
        let r = d.path();
        let empty = empty_digest().to_string();
        let foo = sum(r, "", &o(&["foo"], &[]));
        let foobar = sum(r, "", &o(&["foo", "bar"], &[]));
        let d0 = sum(r, "", &o(&["d0"], &[]));
        let d1 = sum(r, "", &o(&["d1"], &[]));
        let d0star = sum(r, "", &o(&["d0/*"], &[]));
        let d1star = sum(r, "", &o(&["d1/*"], &[]));
        for x in [&foo, &foobar, &d0, &d1, &d0star, &d1star] {
            assert_ne!(*x, empty);
        }
        assert_ne!(foo, foobar);
        assert_eq!(sum(r, "", &o(&["d0/a*"], &[])), d0star);
        assert_eq!(sum(r, "", &o(&["d2/foo"], &[])), empty);

        build(r, &["file baz data2", "file d0/xyz xyz", "dir d2"]);
        assert_eq!(sum(r, "", &o(&["foo"], &[])), foo);
        assert_eq!(sum(r, "", &o(&["foo", "bar"], &[])), foobar);
        assert_ne!(sum(r, "", &o(&["d0"], &[])), d0);
        assert_eq!(sum(r, "", &o(&["d1"], &[])), d1);
        assert_ne!(sum(r, "", &o(&["d0/*"], &[])), d0star);
        assert_eq!(sum(r, "", &o(&["d0/a*"], &[])), d0star);
        assert_eq!(sum(r, "", &o(&["**/abc"], &[])), d0star);
        assert_eq!(sum(r, "", &o(&["d1/*"], &[])), d1star);
        assert_eq!(sum(r, "", &o(&["d0/*"], &["d0/xyz"])), d0star);
        assert_eq!(sum(r, "", &o(&["d2/foo"], &[])), empty);
        assert_eq!(sum(r, "d2", &o(&["foo"], &[])), empty);
    }
}

/// TestChecksumIncludeSymlink: a symlinked prefix selects the same entries.
#[test]
fn include_through_symlink() {
    if !require_root("include_through_symlink") {
        return;
    }
    let d = tree(&[
        "dir data",
        "dir data/d0",
        "dir data/d0/d1",
        "dir data/d0/d1/d2",
        "dir mnt",
        "link mnt/data ../data",
        "file data/d0/d1/d2/foo abc",
        "link data/symlink-to-d0 d0",
    ]);
    let r = d.path();
    let inc = include(&["**/foo"]);
    let winc = with(inc.clone(), |o| o.wildcard = true);
    let d0 = sum(r, "data/d0", &inc);
    assert_ne!(d0, empty_digest().to_string());
    assert_eq!(sum(r, "mnt/data/d0", &inc), d0);
    assert_eq!(sum(r, "mnt/data/d0", &winc), d0);
    let d0w = sum(r, "data/d*", &winc);
    assert_eq!(sum(r, "mnt/data/d*", &winc), d0w);
    let d2 = sum(r, "data/d0/d1/d2", &inc);
    assert_eq!(sum(r, "mnt/data/d0/d1/d2", &inc), d2);
    assert_eq!(sum(r, "mnt/data/d0/d1/d2", &winc), d2);
    let d2w = sum(r, "data/d0/d1/d*", &winc);
    assert_eq!(sum(r, "mnt/data/d0/d1/d*", &winc), d2w);
    let inner = sum(r, "mnt/data/d0/d*/d2", &winc);
    assert_eq!(sum(r, "mnt/data/symlink-to-d0/d*/d2", &winc), inner);
}

/// TestChecksumNonLexicalSymlinks and TestSymlinkThroughParent: symlinks on the way.
#[test]
fn symlinks_on_the_way() {
    if !require_root("symlinks_on_the_way") {
        return;
    }
    let d = tree(&[
        "dir target",
        "file target/file data0",
        "dir link1",
        "link link1/target_file ../target/file",
        "link link1/target_dir_abs /target",
        "dir link2",
        "link link2/link1_rel ../link1",
        "link link2/link1_abs /link1",
        "link link3 /link2/link1_rel/target_dir_abs/",
    ]);
    let r = d.path();
    for p in [
        "target/file",
        "link1/target_file",
        "link1/target_dir_abs/file",
        "link2/link1_rel/target_file",
        "link2/link1_abs/target_dir_abs/file",
        "link3/file",
    ] {
        assert_eq!(sum(r, p, &follow()), FILE_DATA0, "{p}");
    }
    // Without following, the last component is the link itself.
    assert_ne!(sum(r, "link1/target_file", &plain()), FILE_DATA0);
    assert_eq!(
        sum(r, "link2/link1_abs/target_file", &plain()),
        sum(r, "link1/target_file", &plain())
    );
}

/// TestChecksumUnorderedFiles, TestChecksumUpdateDirectory and
/// TestChecksumIdenticalWithNoopExclude: directory digests.
#[test]
fn directory_digests() {
    if !require_root("directory_digests") {
        return;
    }
    let d = tree(&[
        "dir d0",
        "dir d0/foo",
        "file d0/foo/bar data0",
        "dir d0/foo-subdir",
        "file d0/foo.subdir data1",
    ]);
    assert_eq!(
        sum(d.path(), "d0", &follow()),
        "sha256:14276c302c940a80f82ca5477bf766c98a24702d6a9948ee71bb277cdad3ae05"
    );

    let d = tree(&[
        "dir d0",
        "dir d0/foo",
        "file d0/foo/bar data0",
        "dir d0/foo/subdir1",
        "file d0/foo/subdir1/baz data1",
        "dir d0/foo/subdir2",
    ]);
    let r = d.path();
    assert_eq!(
        sum(r, "d0/foo", &plain()),
        "sha256:e76717544f71725bd759a981554ca17c286b3d222598f46a671b983fd2b8172d"
    );
    assert_eq!(sum(r, "d0/foo/bar", &plain()), FILE_DATA0);
    set_mode(&r.join("d0/foo"), 0o700);
    assert_eq!(
        sum(r, "d0/foo", &plain()),
        "sha256:3a729f6ba0d3d74c6ade7d118b08b46e37e447afdad7fc6e258dbba12fa80141"
    );
    assert_eq!(sum(r, "d0/foo/bar", &plain()), FILE_DATA0);
    std::fs::remove_dir_all(r.join("d0/foo")).unwrap();
    build(r, &["file d0/foo data2"]);
    assert_eq!(sum(r, "d0/foo", &plain()), FILE_DATA2);
    assert!(matches!(
        checksum(r, "d0/foo/bar", &plain()),
        Err(Error::NotFound { .. })
    ));

    let d = tree(&["dir test", "file test/foo data0"]);
    let want = "sha256:8f36dfd60011a21345427f4d3177b1223e11fbb732c18dd07cd8b2a27a0b53ca";
    assert_eq!(sum(d.path(), "test", &plain()), want);
    assert_eq!(sum(d.path(), "test", &exclude(&["*.git"])), want);
}
