//! Filesystem work inside a container's mounted rootfs, done before and after the
//! runtime runs: reading `/etc/passwd`, creating the working directory, removing mount
//! stubs. Every path is resolved with `openat2(RESOLVE_IN_ROOT)`, so symlinks are
//! followed as the container would follow them and nothing outside the rootfs is ever
//! read, created or removed.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid};
use rustix::io::Errno;

/// How often to retry `openat2` when the kernel reports a concurrent rename (`EAGAIN`).
const OPENAT2_RETRIES: usize = 16;

/// An open rootfs directory that paths are resolved in.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens `path` (the host path of a mounted rootfs).
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path of the rootfs.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (absolute or relative, always taken inside the root).
    fn open_in(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let rel = relative(rel);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                self.fd.as_fd(),
                rel,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// Reads a regular file of at most `limit` bytes; `Ok(None)` if it does not exist.
    pub(crate) fn read_file(&self, rel: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let fd = match self.open_in(rel, OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        let mut buf = Vec::new();
        File::from(fd).take(limit + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {limit} bytes"),
            ));
        }
        Ok(Some(buf))
    }

    /// Whether `rel` exists (not following a final symlink).
    pub(crate) fn exists(&self, rel: &Path) -> io::Result<bool> {
        let rel = relative(rel);
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(true); // the root itself
        };
        let dir = match self.open_in(parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if is_missing(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `mkdir -p rel`, giving each directory it creates `mode` (less the umask) and the
    /// owner `uid:gid`, as BuildKit does for a missing working directory.
    pub(crate) fn mkdir_all(&self, rel: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        let rel = relative(rel);
        let mut cur = PathBuf::new();
        for name in rel.iter() {
            let parent = cur.clone();
            cur.push(name);
            match self.open_in(&cur, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
            let dir = self.open_in(&parent, OFlags::PATH | OFlags::DIRECTORY)?;
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode)) {
                Ok(()) => {}
                Err(Errno::EXIST) => {} // created concurrently; checked by the open below
                Err(e) => return Err(e.into()),
            }
            let created = rustix::fs::openat(
                &dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fchown(&created, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
        }
        Ok(())
    }

    /// Removes `rel` if it is an empty directory or an empty file, keeping the parent's
    /// timestamps (so that a mount stub leaves no trace in the layer). Returns whether it
    /// removed something.
    fn remove_if_empty(&self, rel: &Path) -> io::Result<bool> {
        let rel = relative(rel);
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(false);
        };
        let dir = self.open_in(parent, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let st = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let parent_st = rustix::fs::fstat(&dir)?;
        let removed = match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => match rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR) {
                Ok(()) => true,
                Err(Errno::NOTEMPTY | Errno::EXIST) => false,
                Err(e) => return Err(e.into()),
            },
            _ if st.st_size == 0 => {
                rustix::fs::unlinkat(&dir, name, AtFlags::empty())?;
                true
            }
            _ => false,
        };
        if removed {
            restore_times(dir.as_fd(), &parent_st)?;
        }
        Ok(removed)
    }
}

fn restore_times(dir: BorrowedFd<'_>, st: &rustix::fs::Stat) -> io::Result<()> {
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rustix::fs::futimens(dir, &times)?;
    Ok(())
}

/// `p` without its root and `.` components (`..` is left to `RESOLVE_IN_ROOT`).
fn relative(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == Errno::NOENT.raw_os_error() || c == Errno::NOTDIR.raw_os_error()
    )
}

/// Mount destinations that did not exist in the rootfs before the run. The runtime
/// creates them as mount points; [`MountStubs::remove`] takes them out again afterwards
/// if they are still empty, as BuildKit's `MountStubsCleaner` does (non-recursively: only
/// the destination itself, not parents the runtime created for it).
#[derive(Debug, Default)]
pub(crate) struct MountStubs {
    paths: Vec<PathBuf>,
}

impl MountStubs {
    /// Records which of `dests` are missing in `root`.
    pub(crate) fn record<'a>(root: &Root, dests: impl IntoIterator<Item = &'a Path>) -> MountStubs {
        let mut paths = Vec::new();
        for dest in dests {
            match root.exists(dest) {
                Ok(false) => paths.push(dest.to_path_buf()),
                Ok(true) => {}
                Err(e) => {
                    tracing::debug!(dest = %dest.display(), error = %e, "cannot check mount stub")
                }
            }
        }
        MountStubs { paths }
    }

    /// The recorded destinations.
    #[cfg(test)]
    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Removes the recorded stubs that are still empty; failures are logged, not fatal.
    pub(crate) fn remove(&self, root: &Root) {
        for p in &self.paths {
            match root.remove_if_empty(p) {
                Ok(removed) => tracing::trace!(stub = %p.display(), removed, "mount stub"),
                Err(e) => tracing::warn!(
                    rootfs = %root.path().display(),
                    stub = %p.display(),
                    error = %e,
                    "cannot remove mount stub"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn reads_inside_and_never_outside() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/real"), "inside").unwrap();
        symlink("/etc/real", dir.path().join("etc/abs")).unwrap();
        symlink("../../../../etc/real", dir.path().join("etc/dotdot")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("etc/escape")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let read = |p: &str| {
            root.read_file(Path::new(p), 100)
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(read("/etc/real").as_deref(), Some("inside"));
        assert_eq!(read("/etc/abs").as_deref(), Some("inside"));
        assert_eq!(read("/etc/dotdot").as_deref(), Some("inside"));
        assert_eq!(read("/../../etc/real").as_deref(), Some("inside"));
        // The absolute target is looked up inside the root, where it does not exist.
        assert_eq!(read("/etc/escape"), None);
        assert_eq!(read("/etc/missing"), None);
    }

    #[test]
    fn read_refuses_large_and_odd_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 101]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let e = root.read_file(Path::new("/big"), 100).unwrap_err();
        assert!(e.to_string().contains("larger than 100 bytes"), "{e}");
        assert_eq!(
            root.read_file(Path::new("/big"), 101)
                .unwrap()
                .unwrap()
                .len(),
            101
        );
        let e = root.read_file(Path::new("/d"), 100).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn mkdir_all_stays_inside_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        symlink("/real", dir.path().join("inside")).unwrap();
        symlink(outside.path(), dir.path().join("escape")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        // An absolute link is followed inside the root.
        root.mkdir_all(Path::new("/inside/a/b"), 0o755, uid, gid)
            .unwrap();
        assert!(dir.path().join("real/a/b").is_dir());
        // Existing directories are fine.
        root.mkdir_all(Path::new("/inside/a/b"), 0o755, uid, gid)
            .unwrap();
        // A link whose target only exists outside the root is an error, and nothing is
        // created outside.
        assert!(
            root.mkdir_all(Path::new("/escape/a"), 0o755, uid, gid)
                .is_err()
        );
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        // A file in the way is an error.
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(
            root.mkdir_all(Path::new("/file/x"), 0o755, uid, gid)
                .is_err()
        );
    }

    #[test]
    fn stubs_are_removed_only_when_empty_and_parent_times_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hosts"), "x").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let dests = [
            Path::new("/etc/hosts"),
            Path::new("/stub"),
            Path::new("/full"),
            Path::new("/f"),
        ];
        let stubs = MountStubs::record(&root, dests);
        assert_eq!(
            stubs.paths(),
            &[
                PathBuf::from("/stub"),
                PathBuf::from("/full"),
                PathBuf::from("/f")
            ]
        );
        // What the runtime would have done.
        std::fs::create_dir(dir.path().join("stub")).unwrap();
        std::fs::create_dir(dir.path().join("full")).unwrap();
        std::fs::write(dir.path().join("full/keep"), "").unwrap();
        std::fs::write(dir.path().join("f"), "").unwrap();
        let stamp = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, dir.path(), &stamp, AtFlags::empty()).unwrap();
        stubs.remove(&root);
        assert!(!dir.path().join("stub").exists());
        assert!(!dir.path().join("f").exists());
        assert!(dir.path().join("full/keep").exists());
        assert!(dir.path().join("etc/hosts").exists());
        assert_eq!(filetime_of(dir.path()), 1_000_000);
    }

    fn filetime_of(p: &Path) -> i64 {
        std::fs::metadata(p).unwrap().mtime()
    }
}
