//! Reading entries of the tree under a root without ever leaving it.
//!
//! Every path is opened relative to the root with `openat2(RESOLVE_IN_ROOT)`, so even a
//! symlink swapped in behind our back resolves as if the root were `/`; the last
//! component is never followed (`O_NOFOLLOW`). The paths handed in are already resolved
//! by the tree (no symlinks among their parents), so the kernel's resolution is a safety
//! net, not the mechanism. The root itself is opened only when something has to be read:
//! a fully cached checksum touches no file at all.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use oci::Digest;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::header::{self, Meta, Xattrs};
use crate::{Counters, Error};

/// What an entry is, as far as walking the tree is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    /// A regular file: its digest reads its content.
    File,
    Symlink(Vec<u8>),
    /// A device, fifo or socket: its digest is its header alone.
    Special,
}

/// One directory read: the digest of its own header and its entries sorted by name.
#[derive(Debug)]
pub(crate) struct Listing {
    pub header: Digest,
    pub entries: Vec<(Vec<u8>, Kind)>,
}

/// Access to the tree under one root directory.
pub(crate) struct Fs<'a> {
    root: &'a Path,
    fd: Option<OwnedFd>,
    counters: &'a Counters,
}

/// How a path inside the root is shown in errors: absolute, as the caller named it.
pub(crate) fn shown(rel: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(rel))
}

fn io_err(rel: &[u8], op: &'static str, e: Errno) -> Error {
    Error::Io {
        path: shown(rel),
        op,
        source: e.into(),
    }
}

impl<'a> Fs<'a> {
    pub(crate) fn new(root: &'a Path, counters: &'a Counters) -> Self {
        Fs {
            root,
            fd: None,
            counters,
        }
    }

    fn root_fd(&mut self) -> Result<&OwnedFd, Error> {
        let fd = match self.fd.take() {
            Some(fd) => fd,
            None => {
                let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
                rustix::fs::open(self.root, flags, Mode::empty()).map_err(|e| Error::Root {
                    path: self.root.to_path_buf(),
                    source: e.into(),
                })?
            }
        };
        Ok(self.fd.insert(fd))
    }

    /// Opens `rel` (normalized, relative to the root, "" for the root) without following
    /// its last component. The outer error is the root's, the inner one the entry's.
    fn open(&mut self, rel: &[u8], flags: OFlags) -> Result<Result<OwnedFd, Errno>, Error> {
        let root = self.root_fd()?;
        let path: &[u8] = if rel.is_empty() { b"." } else { rel };
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // EAGAIN: a concurrent rename raced the lookup, and the kernel asks for a retry.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(root, OsStr::from_bytes(path), flags, Mode::empty(), how) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                other => return Ok(other),
            }
        }
    }

    fn open_existing(&mut self, rel: &[u8], flags: OFlags) -> Result<OwnedFd, Error> {
        self.open(rel, flags)?.map_err(|e| io_err(rel, "open", e))
    }

    /// The kind of entry `rel`, or `None` when it does not exist.
    pub(crate) fn lstat(&mut self, rel: &[u8]) -> Result<Option<Kind>, Error> {
        self.counters.entries_stat.fetch_add(1, Ordering::Relaxed);
        let fd = match self.open(rel, OFlags::PATH)? {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
            Err(e) => return Err(io_err(rel, "open", e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(rel, "stat", e))?;
        kind_of(FileType::from_raw_mode(st.st_mode), || readlink(&fd, rel)).map(Some)
    }

    /// Reads directory `rel`: its header digest and its entries.
    pub(crate) fn list(&mut self, rel: &[u8]) -> Result<Listing, Error> {
        self.counters.dirs_listed.fetch_add(1, Ordering::Relaxed);
        let fd = self.open_existing(rel, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_err(rel, "stat", e))?;
        let xattrs = fd_xattrs(&fd).map_err(|e| io_err(rel, "listxattr", e))?;
        let header = header::digest_of(&Meta::from_stat(&st, b"", &xattrs));

        let mut dir = rustix::fs::Dir::read_from(&fd).map_err(|e| io_err(rel, "readdir", e))?;
        let mut entries = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| io_err(rel, "readdir", e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = name.to_vec();
            let mut ft = entry.file_type();
            if ft == FileType::Unknown {
                // Some filesystems do not fill in d_type.
                let st =
                    rustix::fs::statat(&fd, OsStr::from_bytes(&name), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| io_err(&child(rel, &name), "stat", e))?;
                ft = FileType::from_raw_mode(st.st_mode);
            }
            let kind = kind_of(ft, || {
                rustix::fs::readlinkat(&fd, OsStr::from_bytes(&name), Vec::new())
                    .map(|t| t.into_bytes())
                    .map_err(|e| io_err(&child(rel, &name), "readlink", e))
            })?;
            entries.push((name, kind));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Listing { header, entries })
    }

    /// The digest of non-directory entry `rel`, which the tree knows as `kind`.
    pub(crate) fn entry_digest(&mut self, rel: &[u8], kind: &Kind) -> Result<Digest, Error> {
        match kind {
            Kind::Dir => Ok(self.list(rel)?.header),
            Kind::File => {
                // O_NONBLOCK: should the file have become a fifo, opening it must not hang.
                let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
                let fd = self.open_existing(rel, flags)?;
                let st = rustix::fs::fstat(&fd).map_err(|e| io_err(rel, "stat", e))?;
                let xattrs = fd_xattrs(&fd).map_err(|e| io_err(rel, "listxattr", e))?;
                let meta = Meta::from_stat(&st, b"", &xattrs);
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Ok(header::digest_of(&meta));
                }
                let mut file = std::fs::File::from(fd);
                let (d, n) =
                    header::digest_with_content(&meta, &mut file).map_err(|e| Error::Io {
                        path: shown(rel),
                        op: "read",
                        source: e,
                    })?;
                self.counters.files_hashed.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes_hashed.fetch_add(n, Ordering::Relaxed);
                Ok(d)
            }
            Kind::Symlink(_) | Kind::Special => {
                self.counters.entries_stat.fetch_add(1, Ordering::Relaxed);
                let fd = self.open_existing(rel, OFlags::PATH)?;
                let st = rustix::fs::fstat(&fd).map_err(|e| io_err(rel, "stat", e))?;
                let link = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                    readlink(&fd, rel)?
                } else {
                    Vec::new()
                };
                // No f*xattr call works on an O_PATH descriptor, so these go by path; the
                // parents are resolved and hold no symlink.
                let path = self.host_path(rel);
                let xattrs = path_xattrs(&path).map_err(|e| io_err(rel, "listxattr", e))?;
                Ok(header::digest_of(&Meta::from_stat(&st, &link, &xattrs)))
            }
        }
    }

    fn host_path(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }
}

/// `rel` joined with `name`.
pub(crate) fn child(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        c.extend_from_slice(rel);
        c.push(b'/');
    }
    c.extend_from_slice(name);
    c
}

fn kind_of(ft: FileType, link: impl FnOnce() -> Result<Vec<u8>, Error>) -> Result<Kind, Error> {
    Ok(match ft {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        FileType::Symlink => Kind::Symlink(link()?),
        _ => Kind::Special,
    })
}

fn readlink(fd: &OwnedFd, rel: &[u8]) -> Result<Vec<u8>, Error> {
    // An empty path reads the link an O_PATH|O_NOFOLLOW descriptor refers to.
    rustix::fs::readlinkat(fd, "", Vec::new())
        .map(|t| t.into_bytes())
        .map_err(|e| io_err(rel, "readlink", e))
}

/// Calls `f` with a small buffer and, if that is too small, with the largest size the
/// kernel allows for an attribute list or value (64 KiB).
fn sized(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> rustix::io::Result<Vec<u8>> {
    let mut small = [0u8; 512];
    match f(&mut small) {
        Ok(n) => return Ok(small[..n].to_vec()),
        Err(Errno::RANGE) => {}
        Err(e) => return Err(e),
    }
    let mut big = vec![0u8; 64 * 1024];
    let n = f(&mut big)?;
    big.truncate(n);
    Ok(big)
}

/// The attributes [`header::keeps_xattr`] selects, given how to list names and read a
/// value. A filesystem without xattrs has none; a value that cannot be read (removed
/// meanwhile) is left out, as upstream does.
fn xattrs_with(
    list: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
    mut get: impl FnMut(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Xattrs> {
    let names = match sized(list) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !header::keeps_xattr(name) {
            continue;
        }
        if let Ok(v) = sized(|buf| get(name, buf)) {
            out.push((name.to_vec(), v));
        }
    }
    Ok(out)
}

fn fd_xattrs(fd: &OwnedFd) -> rustix::io::Result<Xattrs> {
    let fd = fd.as_fd();
    xattrs_with(
        |buf| rustix::fs::flistxattr(fd, buf),
        |name, buf| rustix::fs::fgetxattr(fd, OsStr::from_bytes(name), buf),
    )
}

fn path_xattrs(path: &Path) -> rustix::io::Result<Xattrs> {
    xattrs_with(
        |buf| rustix::fs::llistxattr(path, buf),
        |name, buf| rustix::fs::lgetxattr(path, OsStr::from_bytes(name), buf),
    )
}
