//! Setting owners, modes, times and extended attributes on entries, addressed by their
//! parent directory and name, never following a symlink.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use crate::Owner;
use crate::root::proc_path;

/// Attributes for directories (and files) an action creates.
#[derive(Clone, Debug)]
pub(crate) struct Attrs {
    /// Permission bits (and set-id/sticky bits), applied exactly.
    pub(crate) mode: u32,
    /// Owner to set; `None` keeps the creating process's.
    pub(crate) owner: Option<Owner>,
    /// Access and modification time to set; `None` keeps "now".
    pub(crate) time: Option<Timespec>,
}

#[cfg(test)]
impl Attrs {
    /// `mode`, no owner, no time.
    pub(crate) fn mode(mode: u32) -> Attrs {
        Attrs {
            mode,
            owner: None,
            time: None,
        }
    }
}

/// The time an LLB timestamp (unix nanoseconds) stands for; `-1` means "none".
pub(crate) fn timestamp(ns: i64) -> Option<Timespec> {
    if ns == -1 {
        return None;
    }
    Some(Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    })
}

/// `(atime, mtime)` of a stat. The field types differ between architectures, hence
/// the casts.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn stat_times(st: &Stat) -> (Timespec, Timespec) {
    (
        Timespec {
            tv_sec: st.st_atime as i64,
            tv_nsec: st.st_atime_nsec as i64,
        },
        Timespec {
            tv_sec: st.st_mtime as i64,
            tv_nsec: st.st_mtime_nsec as i64,
        },
    )
}

/// `(st_dev, st_ino)` and whether the entry has more than one link.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn inode(st: &Stat) -> ((u64, u64), bool) {
    ((st.st_dev as u64, st.st_ino as u64), st.st_nlink as u64 > 1)
}

/// Kernel ids for `owner`. `u32::MAX` means "leave unchanged" to chown; `Owner`s are
/// checked against it when they are made, so this cannot be reached with it.
fn ids(owner: Owner) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw_unchecked(owner.uid)),
        Some(Gid::from_raw_unchecked(owner.gid)),
    )
}

/// Sets `attrs` on a directory just created and opened for reading: owner first (a
/// chown may clear set-id bits), then the mode, then the times.
pub(crate) fn set_dir_attrs(fd: impl AsFd, attrs: &Attrs) -> io::Result<()> {
    if let Some(owner) = attrs.owner {
        let (u, g) = ids(owner);
        rustix::fs::fchown(&fd, u, g)?;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(attrs.mode))?;
    if let Some(t) = attrs.time {
        rustix::fs::futimens(
            &fd,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )?;
    }
    Ok(())
}

/// `fchown` of an open entry.
pub(crate) fn fchown(fd: impl AsFd, owner: Owner) -> io::Result<()> {
    let (u, g) = ids(owner);
    rustix::fs::fchown(fd, u, g)?;
    Ok(())
}

/// `lchown` of `name` in `dir`.
pub(crate) fn chown(dir: BorrowedFd<'_>, name: &[u8], owner: Owner) -> io::Result<()> {
    let (u, g) = ids(owner);
    rustix::fs::chownat(
        dir,
        OsStr::from_bytes(name),
        u,
        g,
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// `chmod` of `name` in `dir`, which must not be a symlink (symlinks have no mode on
/// Linux; the call is skipped for them). The entry is pinned with an `O_PATH` handle and
/// changed through its `/proc/self/fd` link, so a symlink swapped in cannot redirect it.
pub(crate) fn chmod(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, OsStr::from_bytes(name), flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
        return Ok(());
    }
    let path = proc_path(fd.as_fd(), b".");
    rustix::fs::chmodat(
        rustix::fs::CWD,
        &path,
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?;
    Ok(())
}

/// Sets atime and mtime of `name` in `dir`, not following a symlink.
pub(crate) fn set_times(
    dir: BorrowedFd<'_>,
    name: &[u8],
    atime: Timespec,
    mtime: Timespec,
) -> io::Result<()> {
    let times = Timestamps {
        last_access: atime,
        last_modification: mtime,
    };
    rustix::fs::utimensat(
        dir,
        OsStr::from_bytes(name),
        &times,
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Calls `f` with growing buffers until the value fits.
fn sized(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < 64 * 1024 * 1024 => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Copies every extended attribute of the source entry onto the destination entry.
/// As upstream, failures (a filesystem without xattrs, a namespace we may not write) are
/// logged and skipped, never fatal.
pub(crate) fn copy_xattrs(
    src_dir: BorrowedFd<'_>,
    src_name: &[u8],
    dst_dir: BorrowedFd<'_>,
    dst_name: &[u8],
    shown: &str,
) {
    let src = proc_path(src_dir, src_name);
    let dst = proc_path(dst_dir, dst_name);
    let list = match sized(|buf| rustix::fs::llistxattr(&src, buf)) {
        Ok(list) => list,
        Err(e) if e.raw_os_error() == Some(Errno::NOTSUP.raw_os_error()) => return,
        Err(e) => {
            tracing::warn!(path = shown, error = %e, "copy: cannot list xattrs");
            return;
        }
    };
    for key in list.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let key = OsStr::from_bytes(key);
        let set = sized(|buf| rustix::fs::lgetxattr(&src, key, buf)).and_then(|value| {
            rustix::fs::lsetxattr(&dst, key, &value, XattrFlags::empty()).map_err(io::Error::from)
        });
        if let Err(e) = set {
            tracing::warn!(path = shown, key = ?key, error = %e, "copy: cannot copy xattr");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_unix_nanoseconds() {
        assert_eq!(timestamp(-1), None);
        let t = timestamp(1_500_000_000_250_000_000).unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_500_000_000, 250_000_000));
        let t = timestamp(0).unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 0));
        // Before the epoch the nanoseconds stay positive, as utimensat wants them.
        let t = timestamp(-1_500_000_000).unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
    }
}
