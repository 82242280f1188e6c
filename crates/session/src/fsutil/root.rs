//! File system operations confined to a destination directory.
//!
//! Every path is resolved from a descriptor of the destination, one component at a time
//! with `O_NOFOLLOW | O_DIRECTORY`, and the final step is an `*at` call on the parent's
//! descriptor that does not follow a final symlink. A symlink (or a file) anywhere
//! along a received path is therefore an error, never a way out of the destination.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::Error;
use super::path::{join, split};

/// A destination directory, opened once.
pub(crate) struct Root {
    path: PathBuf,
    fd: Rc<OwnedFd>,
    /// The last parent directory resolved: consecutive entries usually share it.
    last: Option<(String, Rc<OwnedFd>)>,
    /// Suffix of the next temporary file name.
    next_temp: u64,
}

fn err(op: &'static str, path: &str, e: Errno) -> Error {
    Error::io(op, path, e.into())
}

impl Root {
    /// Opens `path` (created if missing) as the root of all later operations.
    pub(crate) fn open(path: &Path) -> Result<Root, Error> {
        std::fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", path, e.into()))?;
        Ok(Root {
            path: path.to_path_buf(),
            fd: Rc::new(fd),
            last: None,
            next_temp: 0,
        })
    }

    /// The destination as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor of directory `dir` (relative, `""` for the root), refusing any
    /// component that is not a real directory.
    fn dir(&mut self, dir: &str) -> Result<Rc<OwnedFd>, Error> {
        if dir.is_empty() {
            return Ok(self.fd.clone());
        }
        if let Some((path, fd)) = &self.last {
            if path == dir {
                return Ok(fd.clone());
            }
        }
        let mut current = self.fd.clone();
        for comp in dir.split('/') {
            let next = rustix::fs::openat(
                current.as_fd(),
                comp,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => {
                    Error::invalid_path(dir, "a parent is a symlink or not a directory")
                }
                e => err("open", dir, e),
            })?;
            current = Rc::new(next);
        }
        self.last = Some((dir.to_string(), current.clone()));
        Ok(current)
    }

    /// The parent's descriptor and the base name of `rel`.
    fn parent<'p>(&mut self, rel: &'p str) -> Result<(Rc<OwnedFd>, &'p str), Error> {
        let (dir, base) = split(rel);
        Ok((self.dir(dir)?, base))
    }

    /// Forgets the cached parent (after something it names may have been removed).
    fn forget(&mut self) {
        self.last = None;
    }

    /// `lstat` of `rel`, `None` if it does not exist.
    pub(crate) fn lstat(&mut self, rel: &str) -> Result<Option<rustix::fs::Stat>, Error> {
        let (dir, name) = self.parent(rel)?;
        match rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(err("lstat", rel, e)),
        }
    }

    pub(crate) fn mkdir(&mut self, rel: &str) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mkdirat(dir.as_fd(), name, Mode::from_raw_mode(0o700))
            .map_err(|e| err("mkdir", rel, e))
    }

    /// Creates a new, empty regular file (owner-only until its metadata is applied).
    pub(crate) fn create_file(&mut self, rel: &str) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map(drop)
        .map_err(|e| err("create", rel, e))
    }

    /// Opens an existing regular file for writing (appending data in order).
    pub(crate) fn open_write(&mut self, rel: &str) -> Result<File, Error> {
        let (dir, name) = self.parent(rel)?;
        let fd = rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err("open", rel, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| err("stat", rel, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::invalid_path(rel, "not a regular file"));
        }
        Ok(File::from(fd))
    }

    /// Opens `rel` for reading if it is a regular file (never through a final symlink,
    /// never blocking on a FIFO); `None` if it is not one or cannot be opened.
    pub(crate) fn open_read(
        &mut self,
        rel: &str,
    ) -> Result<Option<(File, rustix::fs::Stat)>, Error> {
        let (dir, name) = self.parent(rel)?;
        let Ok(fd) = rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Ok(None);
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| err("stat", rel, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        Ok(Some((File::from(fd), st)))
    }

    /// Creates a new, empty file (owner-only) under a free temporary name in the
    /// directory of `rel`, to be renamed over `rel` once written; returns its path.
    pub(crate) fn create_temp(&mut self, rel: &str) -> Result<(String, File), Error> {
        let (dir, _) = split(rel);
        for _ in 0..1000 {
            let name = format!(".fsutil-tmp-{}-{}", std::process::id(), self.next_temp);
            self.next_temp += 1;
            let tmp = join(dir, &name);
            let (parent, base) = self.parent(&tmp)?;
            match rustix::fs::openat(
                parent.as_fd(),
                base,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((tmp, File::from(fd))),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(err("create", &tmp, e)),
            }
        }
        Err(err("create", rel, Errno::EXIST))
    }

    /// Renames `from` to `to` (replacing a non-directory there).
    pub(crate) fn rename(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        rustix::fs::renameat(fdir.as_fd(), fname, tdir.as_fd(), tname)
            .map_err(|e| err("rename", to, e))
    }

    pub(crate) fn symlink(&mut self, target: &str, rel: &str) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::symlinkat(target, dir.as_fd(), name).map_err(|e| err("symlink", rel, e))
    }

    /// Hard-links `rel` to the existing `target` (both relative to the root).
    pub(crate) fn hardlink(&mut self, target: &str, rel: &str) -> Result<(), Error> {
        let (tdir, tname) = self.parent(target)?;
        let (dir, name) = self.parent(rel)?;
        rustix::fs::linkat(tdir.as_fd(), tname, dir.as_fd(), name, AtFlags::empty())
            .map_err(|e| err("link", rel, e))
    }

    pub(crate) fn mknod(
        &mut self,
        rel: &str,
        kind: FileType,
        perm: u32,
        dev: u64,
    ) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::mknodat(dir.as_fd(), name, kind, Mode::from_raw_mode(perm), dev)
            .map_err(|e| err("mknod", rel, e))
    }

    /// Removes the directory `rel` if it is empty; `false` if it is not.
    pub(crate) fn remove_empty_dir(&mut self, rel: &str) -> Result<bool, Error> {
        let (dir, name) = self.parent(rel)?;
        let result = match rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(true),
            Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(err("rmdir", rel, e)),
        };
        self.forget();
        result
    }

    /// Removes `rel` and, if it is a directory, everything below it.
    pub(crate) fn remove_all(&mut self, rel: &str) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        let result = remove_at(dir.as_fd(), OsStr::new(name)).map_err(|e| err("remove", rel, e));
        self.forget();
        result
    }

    pub(crate) fn chown(&mut self, rel: &str, uid: u32, gid: u32) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        rustix::fs::chownat(
            dir.as_fd(),
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| err("chown", rel, e))
    }

    /// Sets permission and special bits. Never called on symlinks (`fchmodat` follows
    /// them, and Linux has no mode for a symlink anyway).
    pub(crate) fn chmod(&mut self, rel: &str, perm: u32) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        let st = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| err("lstat", rel, e))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Ok(());
        }
        rustix::fs::chmodat(
            dir.as_fd(),
            name,
            Mode::from_raw_mode(perm),
            AtFlags::empty(),
        )
        .map_err(|e| err("chmod", rel, e))
    }

    /// Sets access and modification time to `mtime_ns` (as fsutil does), not following
    /// a final symlink.
    pub(crate) fn set_times(&mut self, rel: &str, mtime_ns: i64) -> Result<(), Error> {
        let (dir, name) = self.parent(rel)?;
        let ts = Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
        };
        let times = Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        rustix::fs::utimensat(dir.as_fd(), name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| err("chtimes", rel, e))
    }

    /// Sets extended attributes on a regular file or directory, best effort (as
    /// upstream, which ignores `setxattr` failures).
    pub(crate) fn set_xattrs(&mut self, rel: &str, xattrs: &BTreeMap<String, Vec<u8>>) {
        if xattrs.is_empty() {
            return;
        }
        let Ok((dir, name)) = self.parent(rel) else {
            return;
        };
        let Ok(fd) = rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        for (key, value) in xattrs {
            if let Err(e) = rustix::fs::fsetxattr(&fd, key.as_str(), value, XattrFlags::empty()) {
                tracing::debug!(path = rel, key, error = %e, "setxattr failed");
            }
        }
    }
}

/// The names of the extended attributes of the open file `fd` (none where the file
/// system has none).
pub(crate) fn xattr_names(fd: BorrowedFd<'_>) -> std::io::Result<Vec<Vec<u8>>> {
    for _ in 0..3 {
        let len = match rustix::fs::flistxattr_query(fd) {
            Ok(len) => len,
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len];
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            // The list grew between the two calls: ask again.
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::other("extended attributes keep changing"))
}

/// Removes `name` in `dir`, recursively if it is a directory, never following symlinks.
fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // Linux reports EISDIR for a directory (POSIX allows EPERM).
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(&fd)?;
    while let Some(entry) = entries.read() {
        let n = entry?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n));
        }
    }
    for n in &names {
        remove_at(fd.as_fd(), n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
