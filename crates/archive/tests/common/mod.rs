//! Helpers shared by the integration tests: privilege checks, tree fixtures and tree
//! descriptions to compare, raw tar building.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};

/// Whether a test needing `what` can run. Without root it skips loudly, except in CI
/// (env `CI` set), where it fails.
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

/// Skips (or fails in CI) when `cond` is false.
pub fn need(cond: bool, what: &str) -> bool {
    if !cond {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing, and CI must run this test"
        );
        eprintln!("SKIP: {what} is missing");
    }
    cond
}

pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec,
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

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub fn mknod(path: &Path, ft: FileType, major: u32, minor: u32, mode: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        ft,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

/// Pseudo-random bytes (xorshift), so content is not trivially compressible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree with every kind of entry a layer can hold (needs root: owners, devices,
/// trusted xattrs). Every mtime is set, directories' last.
pub fn rich_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    fs::create_dir_all(p("etc/conf.d")).unwrap();
    fs::create_dir_all(p("usr/bin")).unwrap();
    fs::create_dir_all(p("empty")).unwrap();
    fs::create_dir_all(p("locked/inner")).unwrap();
    fs::write(p("etc/hostname"), b"box\n").unwrap();
    fs::write(p("etc/conf.d/a.conf"), noise(1, 10_000)).unwrap();
    fs::write(p("usr/bin/tool"), noise(2, 100_000)).unwrap();
    fs::set_permissions(p("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    set_xattr(
        &p("usr/bin/tool"),
        "security.capability",
        &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    set_xattr(&p("etc/hostname"), "user.note", b"hello");
    set_xattr(&p("etc/hostname"), "trusted.tag", b"\x00\x01binary");
    fs::write(p("empty.file"), b"").unwrap();
    fs::write(p("locked/inner/secret"), b"s").unwrap();
    // Hard links, one of them in another directory.
    fs::write(p("usr/bin/multi"), b"linked content").unwrap();
    fs::hard_link(p("usr/bin/multi"), p("usr/bin/multi2")).unwrap();
    fs::hard_link(p("usr/bin/multi"), p("etc/multi3")).unwrap();
    // Symlinks: relative, absolute, dangling, to a directory.
    symlink("hostname", p("etc/hostname.link")).unwrap();
    symlink("/etc/passwd", p("etc/abs.link")).unwrap();
    symlink("../nowhere/at/all", p("etc/dangling")).unwrap();
    symlink("usr/bin", p("bin")).unwrap();
    // Special files.
    mknod(&p("null"), FileType::CharacterDevice, 1, 3, 0o666);
    mknod(&p("loop9"), FileType::BlockDevice, 7, 9, 0o660);
    mknod(&p("pipe"), FileType::Fifo, 0, 0, 0o600);
    // Long names: one needing the ustar prefix, one needing PAX.
    let long_dir = p(&"d".repeat(120));
    fs::create_dir(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(90)), b"split").unwrap();
    fs::write(long_dir.join("g".repeat(200)), b"pax").unwrap();
    symlink("t".repeat(150), p("long.link")).unwrap();
    // Owners.
    chown(&p("etc/hostname"), 1000, 1000);
    chown(&p("etc/conf.d"), 33, 44);
    chown(&p("etc/dangling"), 7, 8);
    chown(&p("usr/bin/multi"), 3_000_000, 3_000_001);
    // Modes that would get in the way of extraction if applied too early.
    fs::set_permissions(p("locked/inner"), fs::Permissions::from_mode(0o500)).unwrap();
    fs::set_permissions(p("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(p("empty"), fs::Permissions::from_mode(0o1777)).unwrap();
    set_times(root, 1_600_000_000);
}

/// Sets every mtime below `root` to `secs` plus a per-path offset, directories last.
pub fn set_times(root: &Path, secs: i64) {
    let mut paths = Vec::new();
    walk(root, &mut |p, _| paths.push(p.to_path_buf()));
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in paths.iter().enumerate() {
        set_mtime(p, secs + i as i64, 0);
    }
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

/// Which parts of a file a description covers.
#[derive(Clone, Copy)]
pub struct Fields {
    pub dir_mtimes: bool,
    pub overlay_xattrs: bool,
}

pub const ALL: Fields = Fields {
    dir_mtimes: true,
    overlay_xattrs: false,
};

/// Describes every path below `root`: type, mode, owner, mtime, size, content digest,
/// symlink target, device number, xattrs and hard-link group.
pub fn describe(root: &Path, fields: Fields) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    walk(root, &mut |p, m| {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.mode() & 0o170000;
        let mut d = format!(
            "type={ft:o} mode={:o} owner={}:{}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        );
        if !m.is_dir() || fields.dir_mtimes {
            d += &format!(" mtime={}", m.mtime());
        }
        if m.is_file() {
            d += &format!(
                " size={} sha={}",
                m.size(),
                oci::Digest::of(&fs::read(p).unwrap())
            );
        }
        if m.file_type().is_symlink() {
            d += &format!(" -> {}", fs::read_link(p).unwrap().display());
        }
        if ft == 0o020000 || ft == 0o060000 {
            d += &format!(
                " dev={}:{}",
                rustix::fs::major(m.rdev()),
                rustix::fs::minor(m.rdev())
            );
        }
        if !m.is_dir() && m.nlink() > 1 {
            let first = inodes
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| rel.clone());
            d += &format!(" link={first}");
        }
        for (k, v) in xattrs(p) {
            if k.starts_with("trusted.overlay.") && !fields.overlay_xattrs {
                continue;
            }
            d += &format!(" {k}={v:?}");
        }
        out.insert(rel, d);
    });
    out
}

pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or(0);
    let mut names: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| s != "security.selinux")
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|k| {
            let mut v = vec![0u8; 65536];
            let n = rustix::fs::lgetxattr(p, k.as_str(), &mut v[..]).unwrap();
            v.truncate(n);
            (k, v)
        })
        .collect()
}

/// Every path below `dir` (recursively, not following symlinks), except below `skip`.
pub fn listing(dir: &Path, skip: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk_skip(dir, skip, &mut out);
    out
}

fn walk_skip(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        out.push(p.clone());
        if p != skip && fs::symlink_metadata(&p).unwrap().is_dir() {
            walk_skip(&p, skip, out);
        }
    }
}

/// One raw entry of a hand-made (possibly hostile) tar.
pub enum Raw<'a> {
    File(&'a [u8], &'a [u8]),
    Dir(&'a [u8]),
    Symlink(&'a [u8], &'a [u8]),
    Hardlink(&'a [u8], &'a [u8]),
    Char(&'a [u8], u32, u32),
    /// A PAX `path` record overriding the header name.
    PaxFile(&'a [u8], &'a [u8]),
}

/// Builds a tar with names written byte for byte into the header (no validation).
pub fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        let (name, ty, link, data): (&[u8], tar::EntryType, Option<&[u8]>, &[u8]) = match e {
            Raw::File(n, d) => (n, tar::EntryType::Regular, None, d),
            Raw::Dir(n) => (n, tar::EntryType::Directory, None, &[]),
            Raw::Symlink(n, t) => (n, tar::EntryType::Symlink, Some(t), &[]),
            Raw::Hardlink(n, t) => (n, tar::EntryType::Link, Some(t), &[]),
            Raw::Char(n, a, m) => {
                h.set_device_major(*a).unwrap();
                h.set_device_minor(*m).unwrap();
                (n, tar::EntryType::Char, None, &[])
            }
            Raw::PaxFile(n, d) => {
                b.append_pax_extensions([("path", *n)]).unwrap();
                (&b"innocent"[..], tar::EntryType::Regular, None, d)
            }
        };
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Mounts overlay `lower`+`upper`(+`work`) on `merged`. `Err` when overlay cannot be
/// mounted here.
pub fn mount_overlay(lower: &str, upper: &Path, work: &Path, merged: &Path) -> std::io::Result<()> {
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let data = CString::new(data).unwrap();
    rustix::mount::mount(
        "overlay",
        merged,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )?;
    Ok(())
}

pub fn unmount(merged: &Path) {
    rustix::mount::unmount(merged, rustix::mount::UnmountFlags::empty()).unwrap();
}

pub fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}
