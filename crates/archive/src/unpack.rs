//! Creating one tar entry inside the target: the object itself (relative to its resolved
//! parent, never following its own name), then owner, xattrs, mode and mtime, in that
//! order (chown clears set-id bits and file capabilities, so it comes first).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use crate::Error;
use crate::apply::{Applier, WhiteoutMode, failed, invalid, os};
use crate::error::lossy;
use crate::name;
use crate::root::{self, Dir};

/// Metadata of an entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: Timestamps,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The entry's owner, refusing ids that do not fit (or are -1, which `chown` reads as
/// "unchanged").
pub(crate) fn owner(h: &tar::Header, shown: &str) -> Result<(u32, u32), Error> {
    let old = h.as_old();
    let id = |v: io::Result<u64>, raw: &[u8], what: &str| -> Result<u32, Error> {
        let v = numeric(v, raw, what, shown)?;
        u32::try_from(v)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| invalid(shown, format!("{what} {v} is out of range")))
    };
    Ok((id(h.uid(), &old.uid, "uid")?, id(h.gid(), &old.gid, "gid")?))
}

/// A numeric header field; an empty one (all NUL or spaces, as some writers leave
/// fields they do not use) reads as 0, as Go's archive/tar and GNU tar read it.
fn numeric(parsed: io::Result<u64>, raw: &[u8], what: &str, shown: &str) -> Result<u64, Error> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(invalid(shown, format!("bad {what} field: {e}"))),
    }
}

fn meta<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, Error> {
    let h = entry.header();
    let old = h.as_old();
    let mode = numeric(h.mode().map(u64::from), &old.mode, "mode", shown)? as u32 & 0o7777;
    let (uid, gid) = owner(h, shown)?;
    let secs = numeric(h.mtime(), &old.mtime, "mtime", shown)?;
    let mut mtime = Timespec {
        tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    let pax = entry
        .pax_extensions()
        .map_err(|e| invalid(shown, format!("bad PAX header: {e}")))?;
    for ext in pax.into_iter().flatten() {
        let ext = ext.map_err(|e| invalid(shown, format!("bad PAX record: {e}")))?;
        let key = ext.key_bytes();
        if key == b"mtime" {
            mtime = pax_time(ext.value_bytes()).ok_or_else(|| {
                invalid(
                    shown,
                    format!("bad PAX mtime {:?}", lossy(ext.value_bytes())),
                )
            })?;
        } else if let Some(xattr) = key.strip_prefix(b"SCHILY.xattr.") {
            xattrs.push((xattr.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        times: Timestamps {
            last_access: mtime,
            last_modification: mtime,
        },
        xattrs,
    })
}

/// Parses a PAX time, `[-]seconds[.fraction]`.
fn pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut sec: i64 = secs.parse().ok()?;
    let digits = &frac[..frac.len().min(9)];
    let mut nsec: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    for _ in digits.len()..9 {
        nsec *= 10;
    }
    if neg {
        sec = -sec;
        if nsec > 0 {
            sec -= 1;
            nsec = 1_000_000_000 - nsec;
        }
    }
    Some(Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    })
}

/// The directory `parent` inside the target, created if missing.
pub(crate) fn parent_dir(
    a: &mut Applier<'_>,
    parent: &[u8],
    shown: &str,
) -> Result<Rc<Dir>, Error> {
    a.root
        .parent(parent, true)
        .map_err(failed(shown, "create parent directories"))?
        .ok_or_else(|| invalid(shown, "parent directory is missing"))
}

/// Runs `create`; if the name is taken, removes what is there (unless both are
/// directories, which merge: `Ok(None)`) and runs it again.
pub(crate) fn make<T>(
    a: &mut Applier<'_>,
    dir: &Dir,
    base: &[u8],
    is_dir: bool,
    shown: &str,
    mut create: impl FnMut() -> rustix::io::Result<T>,
) -> Result<Option<T>, Error> {
    match create() {
        Ok(v) => return Ok(Some(v)),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(failed(shown, "create")(e.into())),
    }
    let st = rustix::fs::statat(dir, os(base), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| failed(shown, "stat existing path")(e.into()))?;
    let existing = FileType::from_raw_mode(st.st_mode);
    if is_dir && existing == FileType::Directory {
        return Ok(None);
    }
    if matches!(existing, FileType::Directory | FileType::Symlink) {
        a.root.invalidate();
    }
    root::remove_all(dir.as_fd(), base).map_err(failed(shown, "remove existing path"))?;
    create()
        .map(Some)
        .map_err(|e| failed(shown, "create")(e.into()))
}

/// Creates the entry `base` in directory `parent` from a non-whiteout tar entry.
pub(crate) fn create<R: Read>(
    a: &mut Applier<'_>,
    entry: &mut tar::Entry<'_, R>,
    parent: &[u8],
    base: &[u8],
    shown: &str,
) -> Result<(), Error> {
    use tar::EntryType as T;
    let etype = entry.header().entry_type();
    let m = meta(entry, shown)?;
    let dir = parent_dir(a, parent, shown)?;
    let name = os(base);
    match etype {
        T::Regular | T::Continuous | T::GNUSparse => {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = make(a, &dir, base, false, shown, || {
                rustix::fs::openat(&*dir, name, flags, Mode::from_raw_mode(0o600))
            })?
            .ok_or_else(|| invalid(shown, "file was not created"))?;
            let mut file = File::from(fd);
            let want = entry.size();
            let got =
                copy(entry, &mut file, &mut a.buf).map_err(failed(shown, "write file content"))?;
            if got != want {
                return Err(failed(shown, "write file content")(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("stream ended after {got} of {want} bytes"),
                )));
            }
            a.content_bytes += got;
            set_meta_fd(a, file.as_fd(), &m, shown)?;
            rustix::fs::futimens(&file, &m.times)
                .map_err(|e| failed(shown, "set mtime")(e.into()))?;
        }
        T::Directory => {
            make(a, &dir, base, true, shown, || {
                rustix::fs::mkdirat(&*dir, name, Mode::from_raw_mode(0o700))
            })?;
            let fd = rustix::fs::openat(&*dir, name, root::read_dir_flags(), Mode::empty())
                .map_err(|e| failed(shown, "open directory")(e.into()))?;
            set_meta_fd(a, fd.as_fd(), &m, shown)?;
            a.dirs.push((name::join(parent, base), m.times.clone()));
        }
        T::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| invalid(shown, "symlink without a target"))?
                .into_owned();
            // Stored verbatim: it is only ever read, never followed, by this crate.
            make(a, &dir, base, false, shown, || {
                rustix::fs::symlinkat(os(&target), &*dir, name)
            })?;
            set_meta_at(a, &dir, base, &m, shown, true)?;
        }
        T::Link => {
            let raw = entry
                .link_name_bytes()
                .ok_or_else(|| invalid(shown, "hard link without a target"))?
                .into_owned();
            let target = name::normalize(&raw).map_err(|e| {
                invalid(
                    shown,
                    format!("hard link target {:?}: {}", lossy(&raw), e.reason()),
                )
            })?;
            let (tparent, tbase) = name::split_parent(&target);
            let missing = || {
                invalid(
                    shown,
                    format!(
                        "hard link target {:?} does not exist in the target",
                        lossy(&raw)
                    ),
                )
            };
            if target.is_empty() {
                return Err(invalid(shown, "hard link to the root directory"));
            }
            let tdir = a
                .root
                .parent(tparent, false)
                .map_err(failed(shown, "resolve hard link target"))?
                .ok_or_else(missing)?;
            // The target's own name is not followed (linkat without AT_SYMLINK_FOLLOW):
            // a link to a symlink links the symlink, as containerd does.
            match rustix::fs::statat(&*tdir, os(tbase), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => {}
                Err(Errno::NOENT) => return Err(missing()),
                Err(e) => return Err(failed(shown, "stat hard link target")(e.into())),
            }
            make(a, &dir, base, false, shown, || {
                rustix::fs::linkat(&*tdir, os(tbase), &*dir, name, AtFlags::empty())
            })?;
        }
        T::Char | T::Block | T::Fifo => {
            let (ft, dev) = if etype == T::Fifo {
                (FileType::Fifo, 0)
            } else {
                let h = entry.header();
                let num = |v: io::Result<Option<u32>>| {
                    v.map(|n| n.unwrap_or(0))
                        .map_err(|e| invalid(shown, format!("bad device number: {e}")))
                };
                let (major, minor) = (num(h.device_major())?, num(h.device_minor())?);
                let ft = if etype == T::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major, minor))
            };
            make(a, &dir, base, false, shown, || {
                rustix::fs::mknodat(&*dir, name, ft, Mode::from_raw_mode(0o600), dev)
            })?;
            set_meta_at(a, &dir, base, &m, shown, false)?;
        }
        other => {
            return Err(invalid(
                shown,
                format!("entry type {:?} is not supported", other.as_byte() as char),
            ));
        }
    }
    if a.opts.whiteouts == WhiteoutMode::Delete {
        let (dev, ino) = dir.id().map_err(failed(shown, "stat parent directory"))?;
        a.added.insert((dev, ino, base.to_vec()));
    }
    Ok(())
}

fn copy(r: &mut impl Read, w: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn ids(m: &Meta) -> (Option<Uid>, Option<Gid>) {
    // owner() refused u32::MAX, the only value from_raw rejects.
    (Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
}

/// Owner, xattrs and mode through an open file or directory.
fn set_meta_fd(a: &Applier<'_>, fd: BorrowedFd<'_>, m: &Meta, shown: &str) -> Result<(), Error> {
    if a.opts.same_owner {
        let (u, g) = ids(m);
        rustix::fs::fchown(fd, u, g).map_err(|e| failed(shown, "chown")(e.into()))?;
    }
    for (key, value) in &m.xattrs {
        set_xattr(key, shown, true, || {
            rustix::fs::fsetxattr(fd, os(key), value, XattrFlags::empty())
        })?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode))
        .map_err(|e| failed(shown, "chmod")(e.into()))
}

/// Owner, xattrs, mode and mtime of a symlink, device node or fifo: these cannot be
/// opened safely, so everything goes through their parent's fd and a name that is not
/// followed.
fn set_meta_at(
    a: &Applier<'_>,
    dir: &Dir,
    base: &[u8],
    m: &Meta,
    shown: &str,
    symlink: bool,
) -> Result<(), Error> {
    let name = os(base);
    if a.opts.same_owner {
        let (u, g) = ids(m);
        rustix::fs::chownat(dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| failed(shown, "chown")(e.into()))?;
    }
    if !m.xattrs.is_empty() {
        let path = root::proc_path(dir.as_fd(), base);
        for (key, value) in &m.xattrs {
            set_xattr(key, shown, false, || {
                rustix::fs::lsetxattr(&path, os(key), value, XattrFlags::empty())
            })?;
        }
    }
    if !symlink {
        // fchmodat follows a symlink in the last component, but this name is the node we
        // just made with mknodat, and nothing else writes into the target meanwhile.
        rustix::fs::chmodat(dir, name, Mode::from_raw_mode(m.mode), AtFlags::empty())
            .map_err(|e| failed(shown, "chmod")(e.into()))?;
    }
    rustix::fs::utimensat(dir, name, &m.times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| failed(shown, "set mtime")(e.into()))
}

/// Sets one xattr from the tar, skipping the overlay namespace (a layer must not steer
/// the overlay filesystem it is unpacked into) and, with a warning, attributes the
/// filesystem or the file type cannot hold.
fn set_xattr(
    key: &[u8],
    shown: &str,
    regular_or_dir: bool,
    set: impl FnOnce() -> rustix::io::Result<()>,
) -> Result<(), Error> {
    if key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") {
        tracing::warn!(entry = shown, xattr = %lossy(key), "overlayfs xattr in layer ignored");
        return Ok(());
    }
    match set() {
        Ok(()) => Ok(()),
        Err(Errno::NOTSUP) => {
            tracing::warn!(entry = shown, xattr = %lossy(key), "xattr not supported by the filesystem; ignored");
            Ok(())
        }
        // user.* is only allowed on regular files and directories.
        Err(Errno::PERM) if key.starts_with(b"user.") && !regular_or_dir => {
            tracing::warn!(entry = shown, xattr = %lossy(key), "user xattr on a special file ignored");
            Ok(())
        }
        Err(e) => Err(Error::Apply {
            entry: shown.to_string(),
            op: "set xattr",
            source: io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", lossy(key))),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        let t = |s: &str| pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1.1234567891234"), Some((1, 123_456_789)));
        assert_eq!(t("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        for bad in ["", ".5", "1e9", "x", "1.-5", "99999999999999999999999"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }
}
