//! Whole-tree operations on snapshot directories.
//!
//! Copying keeps everything a container filesystem needs: modes (setuid included),
//! owners, times to the nanosecond, xattrs, symlinks, hard links, device nodes, FIFOs and
//! sockets. File data is reflinked where the filesystem can, otherwise copied in the kernel
//! with `copy_file_range`, otherwise read and written.
//!
//! Measuring counts allocated bytes and inodes, each hard-linked inode once.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use crate::store::io_err;
use crate::{Error, Result, Usage};

fn errno_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| Error::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// The largest xattr value and name list Linux allows (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`).
const XATTR_MAX: usize = 65536;

/// Copies the contents and metadata of directory `src` into the existing, empty
/// directory `dst` (whose own metadata becomes `src`'s).
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let root_md = std::fs::symlink_metadata(src).map_err(io_err("stat", src))?;
    // Directory metadata goes on last: adding entries would change mtimes again.
    let mut dirs: Vec<(PathBuf, std::fs::Metadata)> = vec![(dst.to_path_buf(), root_md)];
    let mut todo: Vec<(PathBuf, PathBuf)> = vec![(src.to_path_buf(), dst.to_path_buf())];
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    while let Some((sdir, ddir)) = todo.pop() {
        for entry in std::fs::read_dir(&sdir).map_err(io_err("read directory", &sdir))? {
            let entry = entry.map_err(io_err("read directory", &sdir))?;
            let (s, d) = (entry.path(), ddir.join(entry.file_name()));
            let md = std::fs::symlink_metadata(&s).map_err(io_err("stat", &s))?;
            let ft = md.file_type();
            if ft.is_dir() {
                crate::store::mkdir(&d, 0o700)?;
                todo.push((s, d.clone()));
                dirs.push((d, md));
                continue;
            }
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    std::fs::hard_link(first, &d).map_err(io_err("hard link", &d))?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), d.clone());
            }
            if ft.is_file() {
                copy_data(&s, &d)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&s).map_err(io_err("read link", &s))?;
                std::os::unix::fs::symlink(&target, &d).map_err(io_err("symlink", &d))?;
            } else {
                // Character and block devices, FIFOs, sockets.
                rustix::fs::mknodat(
                    CWD,
                    &d,
                    FileType::from_raw_mode(md.mode()),
                    Mode::from_raw_mode(md.mode() & 0o7777),
                    md.rdev(),
                )
                .map_err(errno_err("mknod", &d))?;
            }
            copy_metadata(&s, &d, &md)?;
        }
    }
    for (d, md) in dirs.iter().rev() {
        // The source path only matters for xattrs; find it again from the destination.
        let rel = d.strip_prefix(dst).unwrap_or(Path::new(""));
        copy_metadata(&src.join(rel), d, md)?;
    }
    Ok(())
}

/// Copies a regular file's bytes into a new file `d`.
fn copy_data(s: &Path, d: &Path) -> Result<()> {
    let from = File::open(s).map_err(io_err("open", s))?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(d)
        .map_err(io_err("create", d))?;
    if rustix::fs::ioctl_ficlone(&to, &from).is_ok() {
        return Ok(());
    }
    loop {
        match rustix::fs::copy_file_range(&from, None, &to, None, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP | Errno::PERM) => {
                break;
            }
            Err(e) => return Err(errno_err("copy_file_range", d)(e)),
        }
    }
    // Plain read/write from wherever copy_file_range stopped.
    let (mut from, mut to) = (from, to);
    std::io::copy(&mut from, &mut to).map_err(io_err("copy", d))?;
    Ok(())
}

/// Owner, mode, xattrs and times of `s` onto `d` (never following a symlink `d`).
pub(crate) fn copy_metadata(s: &Path, d: &Path, md: &std::fs::Metadata) -> Result<()> {
    let symlink = md.file_type().is_symlink();
    rustix::fs::chownat(
        CWD,
        d,
        Some(Uid::from_raw(md.uid())),
        Some(Gid::from_raw(md.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno_err("chown", d))?;
    // After chown, which clears setuid/setgid; symlinks have no mode of their own.
    if !symlink {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io_err("chmod", d))?;
    }
    // After chown too, which drops security.capability.
    copy_xattrs(s, d)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, d, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno_err("set times", d))
}

fn copy_xattrs(s: &Path, d: &Path) -> Result<()> {
    let mut names = vec![0u8; XATTR_MAX];
    let len = match rustix::fs::llistxattr(s, &mut names[..]) {
        Ok(len) => len,
        Err(Errno::OPNOTSUPP) => return Ok(()),
        Err(e) => return Err(errno_err("list xattrs", s)(e)),
    };
    let mut value = vec![0u8; XATTR_MAX];
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let n = match rustix::fs::lgetxattr(s, name, &mut value[..]) {
            Ok(n) => n,
            // Removed between listing and reading.
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(errno_err("read xattr", s)(e)),
        };
        match rustix::fs::lsetxattr(d, name, &value[..n], XattrFlags::empty()) {
            Ok(()) => {}
            Err(Errno::OPNOTSUPP) => {
                tracing::warn!(path = %d.display(), name = %String::from_utf8_lossy(name),
                    "target filesystem does not support this xattr; not copied");
            }
            Err(e) => return Err(errno_err("write xattr", d)(e)),
        }
    }
    Ok(())
}

/// Walks `root` without following symlinks; counts `root` itself.
pub(crate) fn disk_usage(root: &Path) -> Result<Usage> {
    let mut usage = Usage::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        // Only inodes with several links can be met twice.
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.size += md.blocks() * 512;
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(io_err("read directory", &path))? {
                let entry = entry.map_err(io_err("read directory", &path))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn copies_files_links_modes_times_and_xattrs() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("d/file"), b"hello").unwrap();
        std::fs::set_permissions(src.join("d/file"), std::fs::Permissions::from_mode(0o4751))
            .unwrap();
        std::fs::write(src.join("big"), vec![3u8; 3 << 20]).unwrap();
        std::fs::hard_link(src.join("d/file"), src.join("d/e/link")).unwrap();
        symlink("../file", src.join("d/e/sym")).unwrap();
        std::fs::set_permissions(src.join("d"), std::fs::Permissions::from_mode(0o710)).unwrap();
        let xattr_ok =
            rustix::fs::lsetxattr(src.join("big"), "user.test", b"v1", XattrFlags::empty()).is_ok();
        let old = Timestamps {
            last_access: Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 5,
            },
            last_modification: Timespec {
                tv_sec: 2_000_000,
                tv_nsec: 7,
            },
        };
        rustix::fs::utimensat(CWD, src.join("d"), &old, AtFlags::empty()).unwrap();
        rustix::fs::utimensat(CWD, src.join("d/e/sym"), &old, AtFlags::SYMLINK_NOFOLLOW).unwrap();

        copy_tree(&src, &dst).unwrap();

        assert_eq!(std::fs::read(dst.join("d/file")).unwrap(), b"hello");
        assert_eq!(std::fs::read(dst.join("big")).unwrap().len(), 3 << 20);
        let f = std::fs::metadata(dst.join("d/file")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4751);
        let l = std::fs::metadata(dst.join("d/e/link")).unwrap();
        assert_eq!((f.ino(), f.nlink()), (l.ino(), 2), "hard link kept");
        assert_eq!(
            std::fs::read_link(dst.join("d/e/sym")).unwrap(),
            Path::new("../file")
        );
        let sym = std::fs::symlink_metadata(dst.join("d/e/sym")).unwrap();
        assert_eq!((sym.mtime(), sym.mtime_nsec()), (2_000_000, 7));
        let d = std::fs::metadata(dst.join("d")).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o710);
        assert_eq!(
            (d.mtime(), d.mtime_nsec()),
            (2_000_000, 7),
            "dir times set last"
        );
        assert_eq!((d.atime(), d.atime_nsec()), (1_000_000, 5));
        if xattr_ok {
            let mut buf = [0u8; 16];
            let n = rustix::fs::lgetxattr(dst.join("big"), "user.test", &mut buf[..]).unwrap();
            assert_eq!(&buf[..n], b"v1");
        }
        // The source is untouched.
        assert_eq!(std::fs::metadata(src.join("d/file")).unwrap().nlink(), 2);
    }

    #[test]
    fn missing_source_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let e = copy_tree(&tmp.path().join("nope"), tmp.path()).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
    #[test]
    fn hard_links_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a"), vec![7u8; 100_000]).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let before = disk_usage(root).unwrap();
        assert_eq!(before.inodes, 3, "root, a, sub");
        assert!(before.size >= 100_000, "{before:?}");

        std::fs::hard_link(root.join("a"), root.join("sub/b")).unwrap();
        std::os::unix::fs::symlink("a", root.join("link")).unwrap();
        let after = disk_usage(root).unwrap();
        assert_eq!(
            after.inodes, 4,
            "the hard link adds nothing, the symlink one inode"
        );
        assert!(after.size < before.size + 100_000, "{before:?} {after:?}");
    }

    #[test]
    fn missing_root_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = disk_usage(&dir.path().join("gone")).unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
    }
}
