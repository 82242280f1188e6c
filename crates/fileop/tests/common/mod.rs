//! Helpers shared by the integration tests: privilege checks, a sandbox with a sentinel
//! directory next to the roots, action builders with upstream's defaults, and small
//! accessors for what a test asserts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proto::pb;
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};

/// Whether a test needing root can run. Without root it skips loudly, except in CI (env
/// `CI` set), where it fails.
pub fn need_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} needs root, and CI must run it"
    );
    eprintln!("SKIP: {what} needs root");
    false
}

/// A temporary directory holding a source root `src`, a destination root `dst` and a
/// sentinel directory `outside` that no action may touch.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    before: BTreeMap<String, String>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for d in ["src", "dst", "outside/etc"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(
            dir.path().join("outside/etc/passwd"),
            b"host:x:0:0::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(dir.path().join("outside/canary"), b"do not touch").unwrap();
        set_mtime(&dir.path().join("outside/canary"), 1_000_000);
        let before = describe(&dir.path().join("outside"));
        Sandbox { dir, before }
    }

    pub fn src(&self) -> PathBuf {
        self.dir.path().join("src")
    }

    pub fn dst(&self) -> PathBuf {
        self.dir.path().join("dst")
    }

    pub fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Asserts that nothing changed in `outside` and nothing appeared next to the roots.
    pub fn assert_untouched(&self) {
        assert_eq!(
            describe(&self.outside()),
            self.before,
            "the sentinel changed"
        );
        let mut top: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["dst", "outside", "src"],
            "something appeared next to the roots"
        );
    }
}

/// Every path below `root` with its type, mode, size, content and mtime (symlinks with
/// their target), for before/after comparisons.
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, &mut |p, m| {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let mut d = format!(
            "mode={:o} owner={}:{} mtime={}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime()
        );
        if m.is_file() {
            d += &format!(" data={:?}", String::from_utf8_lossy(&fs::read(p).unwrap()));
        }
        if m.file_type().is_symlink() {
            d += &format!(" -> {}", fs::read_link(p).unwrap().display());
        }
        out.insert(rel, d);
    });
    out
}

/// The relative paths below `root`, directories with a trailing `/`, sorted.
pub fn paths(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, &mut |p, m| {
        let mut rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if m.is_dir() {
            rel.push('/');
        }
        out.push(rel);
    });
    out.sort();
    out
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names {
        let p = dir.join(n);
        let m = fs::symlink_metadata(&p).unwrap();
        f(&p, &m);
        if m.is_dir() {
            walk(&p, f);
        }
    }
}

pub fn write(path: &Path, data: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap();
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Permission bits (with set-id and sticky) of `path`, not following a symlink.
pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// `(mtime seconds, nanoseconds)`, not following a symlink.
pub fn mtime(path: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec())
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn mknod(path: &Path, ft: FileType, major: u32, minor: u32, mode: u32) {
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(rustix::fs::CWD, path, ft, Mode::from_raw_mode(mode), dev).unwrap();
}

/// A copy action as upstream's client builds one: no mode, no timestamp.
pub fn copy_action(src: &str, dest: &str) -> pb::FileActionCopy {
    pb::FileActionCopy {
        src: src.to_string(),
        dest: dest.to_string(),
        mode: -1,
        timestamp: -1,
        ..Default::default()
    }
}

/// A copy action as the Dockerfile frontend builds one for `COPY src dest`.
pub fn dockerfile_copy(src: &str, dest: &str) -> pb::FileActionCopy {
    pb::FileActionCopy {
        follow_symlink: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        allow_empty_wildcard: true,
        ..copy_action(src, dest)
    }
}

pub fn owner_by_id(uid: u32, gid: u32) -> pb::ChownOpt {
    pb::ChownOpt {
        user: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ById(uid)),
        }),
        group: Some(pb::UserOpt {
            user: Some(pb::user_opt::User::ById(gid)),
        }),
    }
}

pub fn owner_by_name(user: &str, group: Option<&str>) -> pb::ChownOpt {
    let named = |name: &str| pb::UserOpt {
        user: Some(pb::user_opt::User::ByName(pb::NamedUserOpt {
            name: name.to_string(),
            input: 0,
        })),
    };
    pb::ChownOpt {
        user: Some(named(user)),
        group: group.map(named),
    }
}
