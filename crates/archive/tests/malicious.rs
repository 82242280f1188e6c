//! Hostile tars: every entry that could write outside the target is refused or kept
//! inside it. The target sits in a sentinel directory whose listing is compared before
//! and after; /etc/passwd is checked untouched.
//!
//! The tests are safe to run against a broken extractor: whatever could reach past the
//! sentinel only creates uniquely named canaries (checked, and removed if found), and
//! anything that deletes only points into the sentinel.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use archive::{ApplyOptions, Error, WhiteoutMode, apply_layer};
use common::*;
use proptest::prelude::*;

struct Sandbox {
    sentinel: tempfile::TempDir,
    target: PathBuf,
    before: Vec<PathBuf>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let sentinel = tempfile::tempdir().unwrap();
        let target = sentinel.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::create_dir(sentinel.path().join("outside")).unwrap();
        fs::write(sentinel.path().join("outside/keep"), b"keep").unwrap();
        let before = listing(sentinel.path(), &target);
        Sandbox {
            sentinel,
            target,
            before,
        }
    }

    fn outside(&self) -> PathBuf {
        self.sentinel.path().join("outside")
    }

    fn apply(&self, tar: &[u8], mode: WhiteoutMode) -> Result<archive::ApplyStats, Error> {
        apply_layer(tar, &self.target, &ApplyOptions::new(mode))
    }

    /// Nothing next to the target changed.
    fn check(&self) {
        assert_eq!(listing(self.sentinel.path(), &self.target), self.before);
        assert_eq!(fs::read(self.outside().join("keep")).unwrap(), b"keep");
    }
}

/// A name no real file has, for what a broken extractor would create outside.
fn canary() -> String {
    format!("archive-test-canary-{}", std::process::id())
}

/// Asserts `path` does not exist, removing it first if it does so a failure leaves
/// nothing behind.
fn assert_absent(path: &Path) {
    if fs::symlink_metadata(path).is_ok() {
        let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
        panic!("{} was created outside the target", path.display());
    }
}

fn passwd_state() -> (Vec<u8>, i64, u64) {
    let m = fs::metadata("/etc/passwd").unwrap();
    (fs::read("/etc/passwd").unwrap(), m.mtime(), m.nlink())
}

fn refused(r: Result<archive::ApplyStats, Error>, what: &str) {
    match r {
        Err(Error::InvalidEntry { entry, reason }) => {
            assert!(!entry.is_empty() && !reason.is_empty())
        }
        other => panic!("{what}: expected InvalidEntry, got {other:?}"),
    }
}

#[test]
fn dotdot_names_are_refused() {
    for name in [
        &b"../escape"[..],
        b"a/../../escape",
        b"./../escape",
        b"a/..",
    ] {
        let s = Sandbox::new();
        refused(
            s.apply(&raw_tar(&[Raw::File(name, b"x")]), WhiteoutMode::Delete),
            "dotdot",
        );
        s.check();
    }
    // The same through a PAX path record, whatever the header says.
    let s = Sandbox::new();
    refused(
        s.apply(
            &raw_tar(&[Raw::PaxFile(b"../pax-escape", b"x")]),
            WhiteoutMode::Delete,
        ),
        "pax dotdot",
    );
    s.check();
    assert!(!s.target.join("innocent").exists());
}

#[test]
fn absolute_names_land_inside() {
    let s = Sandbox::new();
    let before = passwd_state();
    let c = canary();
    let (top, in_etc) = (format!("/{c}/path"), format!("/etc/{c}"));
    let tar = raw_tar(&[
        Raw::File(top.as_bytes(), b"x"),
        Raw::File(in_etc.as_bytes(), b"evil"),
    ]);
    s.apply(&tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::read(s.target.join(&top[1..])).unwrap(), b"x");
    assert_eq!(fs::read(s.target.join(&in_etc[1..])).unwrap(), b"evil");
    assert_absent(&Path::new("/").join(&c));
    assert_absent(Path::new(&in_etc));
    assert_eq!(passwd_state(), before);
    s.check();
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let before = passwd_state();
    let c = canary();
    // (symlink target, where a file written through it must land inside the target)
    let cases: [(&str, &str); 5] = [
        ("/", ""),
        ("..", ""),
        ("../..", ""),
        ("/etc", "etc"),
        ("OUTSIDE", "OUTSIDE"),
    ];
    for (link, lands) in cases {
        let s = Sandbox::new();
        let outside = s.outside().to_str().unwrap().to_string();
        let link = link.replace("OUTSIDE", &outside);
        let lands = Path::new(&lands.replace("OUTSIDE", outside.trim_start_matches('/'))).join(&c);
        let entry = format!("a/{c}");
        let tar = raw_tar(&[
            Raw::Symlink(b"a", link.as_bytes()),
            Raw::File(entry.as_bytes(), b"pwned"),
        ]);
        s.apply(&tar, WhiteoutMode::Delete).unwrap();
        // What a broken extractor would have made, next to the sentinel or on the host.
        for outside in [
            "/",
            "/etc",
            s.sentinel.path().parent().unwrap().to_str().unwrap(),
        ] {
            assert_absent(&Path::new(outside).join(&c));
        }
        // The symlink is stored verbatim; the file lands where the symlink points when
        // the target is taken as /.
        assert_eq!(fs::read_link(s.target.join("a")).unwrap(), Path::new(&link));
        assert_eq!(fs::read(s.target.join(&lands)).unwrap(), b"pwned", "{link}");
        s.check();
    }
    assert_eq!(passwd_state(), before);
}

#[test]
fn a_file_replacing_a_symlink_does_not_follow_it() {
    let s = Sandbox::new();
    let victim = s.outside().join("keep");
    let tar = raw_tar(&[
        Raw::Symlink(b"l", bytes(&victim)),
        Raw::File(b"l", b"overwritten?"),
    ]);
    s.apply(&tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::read(s.target.join("l")).unwrap(), b"overwritten?");
    assert!(fs::symlink_metadata(s.target.join("l")).unwrap().is_file());
    s.check();
    // Same with a directory entry, a device node and a hard link over the symlink.
    let s = Sandbox::new();
    let tar = raw_tar(&[
        Raw::Symlink(b"d", bytes(&s.outside())),
        Raw::Dir(b"d"),
        Raw::File(b"f", b"f"),
        Raw::Symlink(b"h", bytes(&victim)),
        Raw::Hardlink(b"h", b"f"),
    ]);
    s.apply(&tar, WhiteoutMode::Delete).unwrap();
    assert!(fs::symlink_metadata(s.target.join("d")).unwrap().is_dir());
    assert_eq!(fs::metadata(s.target.join("h")).unwrap().nlink(), 2);
    s.check();
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let before = passwd_state();
    for link in [
        &b"../outside/keep"[..],
        b"/etc/passwd",
        b"etc/passwd",
        b"a/passwd",
    ] {
        let s = Sandbox::new();
        let tar = raw_tar(&[Raw::Symlink(b"a", b"/etc"), Raw::Hardlink(b"h", link)]);
        refused(
            s.apply(&tar, WhiteoutMode::Delete),
            &String::from_utf8_lossy(link),
        );
        assert!(!s.target.join("h").exists());
        s.check();
    }
    // A hard link to /etc/passwd when the target has its own: it links the target's copy.
    let s = Sandbox::new();
    let tar = raw_tar(&[
        Raw::File(b"etc/passwd", b"mine"),
        Raw::Hardlink(b"h", b"/etc/passwd"),
    ]);
    s.apply(&tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::read(s.target.join("h")).unwrap(), b"mine");
    assert_eq!(
        fs::metadata(s.target.join("h")).unwrap().ino(),
        fs::metadata(s.target.join("etc/passwd")).unwrap().ino()
    );
    // A hard link to a symlink pointing outside links the symlink itself.
    let s2 = Sandbox::new();
    let victim = s2.outside().join("keep");
    let tar = raw_tar(&[
        Raw::Symlink(b"l", bytes(&victim)),
        Raw::Hardlink(b"h", b"l"),
    ]);
    s2.apply(&tar, WhiteoutMode::Delete).unwrap();
    assert!(
        fs::symlink_metadata(s2.target.join("h"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(passwd_state(), before);
    s.check();
    s2.check();
}

#[test]
fn whiteouts_through_symlinks_stay_inside() {
    for mode in [
        WhiteoutMode::Delete,
        WhiteoutMode::Overlay { userxattr: false },
    ] {
        let s = Sandbox::new();
        let out = bytes(&s.outside()).to_vec();
        let tar = raw_tar(&[
            Raw::Symlink(b"a", &out),
            Raw::File(b"a/.wh.keep", b""),
            Raw::File(b"a/.wh..wh..opq", b""),
            Raw::Symlink(b"up", b".."),
            Raw::File(b"up/.wh.outside", b""),
        ]);
        match s.apply(&tar, mode) {
            Ok(_) => {}
            // Setting trusted.* on a path inside is fine too; only the outside matters.
            Err(e) => panic!("{mode:?}: {e}"),
        }
        s.check();
    }
    for bad in [&b".wh."[..], b"d/.wh..", b"d/.wh..."] {
        let s = Sandbox::new();
        refused(
            s.apply(&raw_tar(&[Raw::File(bad, b"")]), WhiteoutMode::Delete),
            "bad whiteout",
        );
        s.check();
    }
}

#[test]
fn directories_are_replaced_as_docker_does() {
    let s = Sandbox::new();
    fs::create_dir_all(s.target.join("d/sub")).unwrap();
    fs::write(s.target.join("d/sub/f"), b"old").unwrap();
    fs::write(s.target.join("plain"), b"file").unwrap();
    fs::create_dir(s.target.join("merge")).unwrap();
    fs::write(s.target.join("merge/kept"), b"k").unwrap();
    let tar = raw_tar(&[
        Raw::File(b"d", b"now a file"),
        Raw::Dir(b"plain"),
        Raw::File(b"plain/x", b"x"),
        Raw::Dir(b"merge"),
    ]);
    s.apply(&tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(fs::read(s.target.join("d")).unwrap(), b"now a file");
    assert_eq!(fs::read(s.target.join("plain/x")).unwrap(), b"x");
    assert_eq!(fs::read(s.target.join("merge/kept")).unwrap(), b"k");
    s.check();
}

#[test]
fn device_nodes_through_symlinks_stay_inside() {
    if !need_root("device nodes") {
        return;
    }
    let s = Sandbox::new();
    let out = bytes(&s.outside()).to_vec();
    let tar = raw_tar(&[Raw::Symlink(b"a", &out), Raw::Char(b"a/null", 1, 3)]);
    s.apply(&tar, WhiteoutMode::Delete).unwrap();
    let inside = s
        .target
        .join(s.outside().strip_prefix("/").unwrap())
        .join("null");
    assert_eq!(
        rustix::fs::major(fs::symlink_metadata(inside).unwrap().rdev()),
        1
    );
    s.check();
}

/// A name from a small alphabet that hits the interesting cases often.
fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"a".to_vec()),
        4 => Just(b"b".to_vec()),
        1 => Just(b"..".to_vec()),
        1 => Just(b".".to_vec()),
        1 => Just(b"".to_vec()),
        1 => Just(b".wh.a".to_vec()),
        1 => Just(b".wh..wh..opq".to_vec()),
        2 => "[a-c.]{1,3}".prop_map(String::into_bytes),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), proptest::collection::vec(component(), 1..4)).prop_map(|(abs, comps)| {
        let mut p = if abs { b"/".to_vec() } else { Vec::new() };
        p.extend(comps.join(&b'/'));
        p
    })
}

#[derive(Debug, Clone)]
enum Op {
    File(Vec<u8>),
    Dir(Vec<u8>),
    Symlink(Vec<u8>, u8),
    Hardlink(Vec<u8>, Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        path().prop_map(Op::File),
        path().prop_map(Op::Dir),
        (path(), 0..4u8).prop_map(|(p, t)| Op::Symlink(p, t)),
        (path(), path()).prop_map(|(p, t)| Op::Hardlink(p, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn random_layers_never_escape(ops in proptest::collection::vec(op(), 1..12), overlay in any::<bool>()) {
        let s = Sandbox::new();
        // Only absolute paths into the sentinel: followed by a broken extractor they
        // stay inside the sentinel, whatever chain of links a case builds.
        let out = bytes(&s.outside()).to_vec();
        let sentinel = bytes(s.sentinel.path()).to_vec();
        let target = bytes(&s.target).to_vec();
        let mut sub = out.clone();
        sub.extend_from_slice(b"/sub/dir");
        let targets: [&[u8]; 4] = [&sentinel, &out, &sub, &target];
        let raws: Vec<Raw<'_>> = ops.iter().map(|o| match o {
            Op::File(p) => Raw::File(p, b"data"),
            Op::Dir(p) => Raw::Dir(p),
            Op::Symlink(p, t) => Raw::Symlink(p, targets[*t as usize]),
            Op::Hardlink(p, t) => Raw::Hardlink(p, t),
        }).filter(|r| match r {
            Raw::File(p, _) | Raw::Dir(p) | Raw::Symlink(p, _) | Raw::Hardlink(p, _) => p.len() <= 100,
            _ => true,
        }).collect();
        let mode = if overlay { WhiteoutMode::Overlay { userxattr: false } } else { WhiteoutMode::Delete };
        // Errors are fine; panics and writes outside are not.
        let _ = s.apply(&raw_tar(&raws), mode);
        prop_assert_eq!(listing(s.sentinel.path(), &s.target), s.before.clone());
        prop_assert_eq!(fs::read(s.outside().join("keep")).unwrap(), b"keep".to_vec());
    }
}

#[test]
fn symlink_resolution_is_not_fooled_by_an_existing_symlink_in_the_target() {
    // The target already holds a symlink out (as a parent layer might).
    let s = Sandbox::new();
    symlink(s.outside(), s.target.join("evil")).unwrap();
    let before = listing(s.sentinel.path(), &s.target);
    let tar = raw_tar(&[
        Raw::File(b"evil/keep", b"pwned"),
        Raw::File(b"evil/new", b"x"),
    ]);
    s.apply(&tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(listing(s.sentinel.path(), &s.target), before);
    assert_eq!(fs::read(s.outside().join("keep")).unwrap(), b"keep");
}
