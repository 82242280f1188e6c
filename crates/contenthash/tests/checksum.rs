//! What a checksum covers and what it ignores, on real directories.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use contenthash::{ChecksumOptions, Digest, Error, checksum, empty_digest};

fn sum(root: &Path, path: &str, opts: &ChecksumOptions) -> Digest {
    checksum(root, path, opts).unwrap_or_else(|e| panic!("checksum({path:?}): {e}"))
}

const SAMPLE: &[&str] = &[
    "dir a",
    "dir a/b",
    "file a/b/f1 one",
    "file a/f2 two",
    "link a/l b/f1",
    "dir c",
    "file c/x.txt x",
    "file top top",
];

#[test]
fn same_tree_under_two_roots_gives_the_same_digest() {
    let one = tree(SAMPLE);
    std::thread::sleep(Duration::from_millis(20));
    let two = tree(SAMPLE);
    for p in ["", "/", "a", "a/b", "a/l", "c/x.txt"] {
        assert_eq!(
            sum(one.path(), p, &plain()),
            sum(two.path(), p, &plain()),
            "{p}"
        );
    }
    // And different content does not.
    assert_ne!(
        sum(one.path(), "a/b", &plain()),
        sum(one.path(), "c", &plain())
    );
}

#[test]
fn times_and_inodes_do_not_count() {
    let d = tree(SAMPLE);
    let r = d.path();
    let before = sum(r, "/", &plain());
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for p in ["a/b/f1", "top"] {
        let f = std::fs::File::options()
            .write(true)
            .open(r.join(p))
            .unwrap();
        f.set_modified(old).unwrap();
    }
    std::fs::File::open(r.join("a/b"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A new inode with the same content and metadata.
    std::fs::copy(r.join("a/f2"), r.join("a/f2.new")).unwrap();
    std::fs::rename(r.join("a/f2.new"), r.join("a/f2")).unwrap();
    set_mode(&r.join("a/f2"), 0o644);
    assert_eq!(sum(r, "/", &plain()), before);
}

/// Applies `change` to a fresh sample tree and returns the root digest before and after.
fn digest_change(change: impl FnOnce(&Path)) -> (Digest, Digest) {
    let d = tree(SAMPLE);
    let before = sum(d.path(), "/", &plain());
    change(d.path());
    (before, sum(d.path(), "/", &plain()))
}

#[test]
fn every_covered_change_changes_the_digest() {
    type Change = Box<dyn FnOnce(&Path)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "content",
            Box::new(|r| std::fs::write(r.join("a/b/f1"), "One").unwrap()),
        ),
        ("mode", Box::new(|r| set_mode(&r.join("a/b/f1"), 0o600))),
        ("setuid", Box::new(|r| set_mode(&r.join("a/b/f1"), 0o4644))),
        ("dir mode", Box::new(|r| set_mode(&r.join("a/b"), 0o700))),
        ("root mode", Box::new(|r| set_mode(r, 0o750))),
        (
            "symlink target",
            Box::new(|r| {
                std::fs::remove_file(r.join("a/l")).unwrap();
                std::os::unix::fs::symlink("b/./f1", r.join("a/l")).unwrap();
            }),
        ),
        (
            "new file",
            Box::new(|r| std::fs::write(r.join("a/b/new"), "").unwrap()),
        ),
        (
            "new dir",
            Box::new(|r| std::fs::create_dir(r.join("a/b/new")).unwrap()),
        ),
        (
            "removed file",
            Box::new(|r| std::fs::remove_file(r.join("top")).unwrap()),
        ),
        (
            "renamed file",
            Box::new(|r| std::fs::rename(r.join("top"), r.join("top2")).unwrap()),
        ),
        (
            "user xattr",
            Box::new(|r| {
                rustix::fs::setxattr(
                    r.join("top"),
                    "user.k",
                    b"v",
                    rustix::fs::XattrFlags::empty(),
                )
                .unwrap()
            }),
        ),
    ];
    for (what, change) in changes {
        let (before, after) = digest_change(change);
        assert_ne!(before, after, "{what}");
    }
}

#[test]
fn owners_count() {
    if !require_root("owners_count") {
        return;
    }
    let (before, after) =
        digest_change(|r| std::os::unix::fs::lchown(r.join("top"), Some(1000), None).unwrap());
    assert_ne!(before, after, "uid");
    let (before, after) =
        digest_change(|r| std::os::unix::fs::lchown(r.join("a/l"), None, Some(1000)).unwrap());
    assert_ne!(before, after, "gid of a symlink");
}

#[test]
fn device_numbers_count() {
    if !require_root("device_numbers_count") {
        return;
    }
    let d = tree(&[]);
    let r = d.path();
    let mknod = |minor| {
        let _ = std::fs::remove_file(r.join("dev"));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("dev"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, minor),
        )
        .unwrap();
        sum(r, "/", &plain())
    };
    assert_ne!(mknod(3), mknod(5));
    assert_eq!(mknod(3), mknod(3));
}

#[test]
fn a_change_outside_the_path_does_not_matter() {
    let d = tree(SAMPLE);
    let r = d.path();
    let a = sum(r, "a", &plain());
    let b = sum(r, "a/b", &plain());
    std::fs::write(r.join("top"), "changed").unwrap();
    std::fs::write(r.join("c/new"), "").unwrap();
    std::fs::write(r.join("a/f2"), "changed").unwrap();
    assert_eq!(sum(r, "a/b", &plain()), b);
    assert_ne!(sum(r, "a", &plain()), a);
}

#[test]
fn wildcard_covers_exactly_its_matches() {
    let d = tree(&[
        "file a.txt a",
        "file b.txt b",
        "file c.md c",
        "dir sub",
        "file sub/d.txt d",
    ]);
    let r = d.path();
    // The list digest of the matches, each named relative to the wildcard's prefix.
    let expect = |names: &[&str]| {
        let mut raw = Vec::new();
        for n in names {
            raw.push(0);
            raw.extend_from_slice(n.as_bytes());
            raw.extend_from_slice(sum(r, n, &plain()).to_string().as_bytes());
        }
        Digest::of(&raw)
    };
    assert_eq!(sum(r, "*.txt", &wildcard()), expect(&["a.txt", "b.txt"]));
    std::fs::write(r.join("c.md"), "C").unwrap();
    std::fs::write(r.join("sub/d.txt"), "D").unwrap();
    assert_eq!(sum(r, "*.txt", &wildcard()), expect(&["a.txt", "b.txt"]));
    std::fs::write(r.join("e.txt"), "e").unwrap();
    set_mode(&r.join("e.txt"), 0o644);
    assert_eq!(
        sum(r, "*.txt", &wildcard()),
        expect(&["a.txt", "b.txt", "e.txt"])
    );
    // Components of a wildcard stay within their depth.
    let mut raw = b"\0sub\0d.txt".to_vec();
    raw.extend_from_slice(sum(r, "sub/d.txt", &plain()).to_string().as_bytes());
    assert_eq!(sum(r, "*/*.txt", &wildcard()), Digest::of(&raw));
    // A single match named like the request is that entry's own digest.
    assert_eq!(sum(r, "a.txt", &wildcard()), sum(r, "a.txt", &plain()));
    assert!(matches!(
        checksum(r, "[", &wildcard()),
        Err(Error::BadPattern { .. })
    ));
}

#[test]
fn include_and_exclude_patterns_select_entries() {
    let d = tree(&[
        "dir src",
        "file src/main.rs m",
        "file src/notes.md n",
        "dir src/gen",
        "file src/gen/out.rs o",
    ]);
    let r = d.path();
    let excl = exclude(&["*.md", "gen"]);
    let incl = include(&["*.rs"]);
    let (e0, i0) = (sum(r, "src", &excl), sum(r, "src", &incl));
    std::fs::write(r.join("src/notes.md"), "N").unwrap();
    std::fs::write(r.join("src/gen/out.rs"), "O").unwrap();
    assert_eq!(sum(r, "src", &excl), e0, "excluded entries do not count");
    assert_eq!(
        sum(r, "src", &incl),
        i0,
        "gen/out.rs is not *.rs at the top"
    );
    std::fs::write(r.join("src/main.rs"), "M").unwrap();
    assert_ne!(sum(r, "src", &excl), e0);
    assert_ne!(sum(r, "src", &incl), i0);
    // Patterns keeping nothing give the empty digest, not an error.
    assert_eq!(sum(r, "src", &include(&["nothing"])), empty_digest());
    // Excluding nothing of a flat directory is its plain digest (as upstream).
    assert_eq!(
        sum(r, "src/gen", &exclude(&["*.md"])),
        sum(r, "src/gen", &plain())
    );
    assert!(matches!(
        checksum(r, "src", &include(&["[z-a]"])),
        Err(Error::BadPattern { .. })
    ));
}

#[test]
fn follow_links_decides_about_the_last_component() {
    let d = tree(&["dir d", "file d/f data", "link lf d/f", "link ld d"]);
    let r = d.path();
    assert_eq!(sum(r, "lf", &follow()), sum(r, "d/f", &plain()));
    assert_eq!(sum(r, "ld", &follow()), sum(r, "d", &plain()));
    let link = sum(r, "lf", &plain());
    assert_ne!(link, sum(r, "d/f", &plain()));
    // The link's digest is about its target's name, not its content.
    std::fs::write(r.join("d/f"), "other").unwrap();
    assert_eq!(sum(r, "lf", &plain()), link);
    assert_eq!(sum(r, "lf", &follow()), sum(r, "d/f", &plain()));
    // Symlinks among the parents are always followed.
    assert_eq!(sum(r, "ld/f", &plain()), sum(r, "d/f", &plain()));
}

#[test]
fn symlinks_resolve_inside_the_root() {
    // The root's /etc differs from the host's, and a second root has none at all.
    let d = tree(&[
        "dir etc",
        "file etc/passwd root:x:0:0:not-the-host",
        "link hostetc /etc",
        "link up ../../../../etc",
        "dir x",
        "link x/abs /etc/passwd",
    ]);
    let r = d.path();
    let inside = sum(r, "etc/passwd", &plain());
    for p in ["hostetc/passwd", "up/passwd", "x/abs"] {
        assert_eq!(sum(r, p, &follow()), inside, "{p}");
    }
    assert_eq!(sum(r, "hostetc", &follow()), sum(r, "etc", &plain()));

    let bare = tree(&["link hostetc /etc", "link up ../../../../etc"]);
    for p in ["hostetc/passwd", "up/passwd", "hostetc/."] {
        let err = checksum(bare.path(), p, &follow()).unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{p}: {err}");
    }
    assert!(matches!(
        checksum(bare.path(), "hostetc", &follow()),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn missing_paths_error_unless_allowed() {
    let d = tree(SAMPLE);
    let r = d.path();
    let err = checksum(r, "a/missing/file", &plain()).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert!(err.to_string().contains("a/missing/file"), "{err}");
    assert!(matches!(
        checksum(r, "top/below", &plain()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        checksum(r, "*.none", &wildcard()),
        Err(Error::NotFound { .. })
    ));
    let allow = |o: ChecksumOptions| ChecksumOptions {
        allow_missing: true,
        ..o
    };
    assert_eq!(sum(r, "a/missing/file", &allow(plain())), empty_digest());
    assert_eq!(sum(r, "*.none", &allow(wildcard())), empty_digest());
    assert_eq!(sum(r, "nope", &allow(exclude(&["x"]))), empty_digest());
    assert!(matches!(
        checksum(r, "a\0b", &plain()),
        Err(Error::InvalidPath { .. })
    ));
    let err = checksum(&r.join("no-such-root"), "/", &plain()).unwrap_err();
    assert!(matches!(err, Error::Root { .. }), "{err}");
}

#[test]
fn odd_entries_are_handled() {
    let d = tree(&["dir d"]);
    let r = d.path();
    // A fifo is hashed without being opened for reading (which would hang).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        r.join("d/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let with_fifo = sum(r, "d", &plain());
    // Names need not be UTF-8, and they count.
    let odd = r.join("d").join(OsStr::from_bytes(b"\xff\xfe"));
    std::fs::write(&odd, "x").unwrap();
    let with_odd = sum(r, "d", &plain());
    assert_ne!(with_fifo, with_odd);
    assert_eq!(sum(r, "d/*", &wildcard()), sum(r, "/d/*", &wildcard()));
    // Deep trees do not exhaust the stack.
    let mut deep = r.join("deep");
    for _ in 0..1500 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), "bottom").unwrap();
    let top = sum(r, "deep", &plain());
    std::fs::write(deep.join("f"), "changed").unwrap();
    assert_ne!(sum(r, "deep", &plain()), top);
    // A hard link is a file like any other.
    std::fs::write(r.join("d/orig"), "same").unwrap();
    std::fs::hard_link(r.join("d/orig"), r.join("hard")).unwrap();
    assert_eq!(sum(r, "hard", &plain()), sum(r, "d/orig", &plain()));
}
