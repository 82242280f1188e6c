//! A directory that paths are resolved inside, never outside.
//!
//! Action paths are first cleaned lexically (`..` stops at the root, as `filepath.Join("/",
//! p)` does upstream). [`Root::resolve`] then follows symlinks the way containerd's
//! `fs.RootPath` does: one component at a time, an absolute target restarting from the
//! root, a relative one joined to the (already symlink-free) parent and cleaned, a
//! missing component ending the walk. The result is a list of components with no
//! symlinks in it at the time of the walk.
//!
//! Every open afterwards goes through `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`
//! relative to the root's descriptor, and the last component only ever to `*at` calls
//! that do not follow it. So a walk that races with a change can fail, but nothing can
//! make it reach outside the root.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::meta::{self, Attrs};

/// Path components relative to a root: no empty, `.` or `..` components.
pub(crate) type Comps = Vec<Vec<u8>>;

/// Symlinks followed in one resolution before giving up (as `fs.RootPath`).
const MAX_LINKS: usize = 255;

/// Cleans `path` lexically into components relative to the root: empty and `.`
/// components dropped, `..` removing the component before it and ignored at the root.
pub(crate) fn clean(path: &[u8]) -> Comps {
    let mut out: Comps = Vec::new();
    push_clean(&mut out, path);
    out
}

/// Appends the components of `path` to `out`, cleaning as [`clean`] does.
fn push_clean(out: &mut Comps, path: &[u8]) {
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
}

/// `/a/b` for display in errors and logs.
pub(crate) fn display(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// An entry addressed by its parent directory and its name in it. The root itself is
/// its own descriptor with the name `.`.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) dir: OwnedFd,
    pub(crate) name: Vec<u8>,
}

impl Entry {
    pub(crate) fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.name)
    }

    /// `lstat` of the entry; `None` when it does not exist.
    pub(crate) fn lstat(&self) -> io::Result<Option<Stat>> {
        lstat_at(self.dir.as_fd(), &self.name)
    }
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The root directory of an action.
#[derive(Debug)]
pub(crate) struct Root {
    path: PathBuf,
    fd: OwnedFd,
}

const DIR_PATH: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// Flags to open a directory for listing or for metadata calls, refusing a symlink.
pub(crate) const DIR_READ: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
    /// Opens the root at `path`, which the caller trusts (symlinks in it are followed).
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR_PATH, Mode::empty())?;
        Ok(Root {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// A root on an already open directory (`path` is for messages only).
    pub(crate) fn from_fd(fd: OwnedFd, path: PathBuf) -> Root {
        Root { path, fd }
    }

    /// The root's path as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Follows the symlinks of `comps` inside the root (the last component too when
    /// `follow_last`), returning symlink-free components. A component that does not
    /// exist ends the walk: it and the rest are kept as they are. A non-directory in
    /// the middle is `ENOTDIR`; more than 255 links `ELOOP`.
    pub(crate) fn resolve(&self, comps: &[Vec<u8>], follow_last: bool) -> io::Result<Comps> {
        let mut path: Comps = comps.to_vec();
        let mut links = 0;
        'restart: loop {
            // Descriptors of the directories walked so far; the root below them.
            let mut dirs: Vec<OwnedFd> = Vec::new();
            for i in 0..path.len() {
                let last = i + 1 == path.len();
                let dir = dirs.last().map_or(self.fd.as_fd(), AsFd::as_fd);
                let Some(st) = lstat_at(dir, &path[i])? else {
                    return Ok(path);
                };
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory if !last => {
                        let name = OsStr::from_bytes(&path[i]);
                        let flags = DIR_PATH | OFlags::NOFOLLOW;
                        dirs.push(rustix::fs::openat(dir, name, flags, Mode::empty())?);
                    }
                    FileType::Symlink if !last || follow_last => {
                        links += 1;
                        if links > MAX_LINKS {
                            return Err(Errno::LOOP.into());
                        }
                        let target =
                            rustix::fs::readlinkat(dir, OsStr::from_bytes(&path[i]), Vec::new())?;
                        let target = target.as_bytes();
                        let mut next: Comps = Vec::new();
                        if !target.starts_with(b"/") {
                            next.extend_from_slice(&path[..i]);
                        }
                        push_clean(&mut next, target);
                        for rest in &path[i + 1..] {
                            next.push(rest.clone());
                        }
                        path = next;
                        continue 'restart;
                    }
                    _ if !last => return Err(Errno::NOTDIR.into()),
                    _ => {}
                }
            }
            return Ok(path);
        }
    }

    /// Opens `comps` (symlink-free, from [`resolve`](Self::resolve)) with `flags`.
    pub(crate) fn open_at(&self, comps: &[Vec<u8>], flags: OFlags) -> io::Result<OwnedFd> {
        let joined = comps.join(&b'/');
        let rel: &[u8] = if joined.is_empty() { b"." } else { &joined };
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        // EAGAIN: a concurrent rename raced the lookup; the kernel asks for a retry.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                OsStr::from_bytes(rel),
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                how,
            ) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                Err(Errno::NOSYS) => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "openat2 is not available (Linux 5.6 or later is needed)",
                    ));
                }
                other => return other.map_err(io::Error::from),
            }
        }
    }

    /// Opens the directory `comps` (symlink-free) as `O_PATH`.
    pub(crate) fn open_dir(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        self.open_at(comps, DIR_PATH)
    }

    /// The entry `comps` (symlink-free) as parent directory and name; the parent must
    /// exist. The root is `(root, ".")`.
    pub(crate) fn entry(&self, comps: &[Vec<u8>]) -> io::Result<Entry> {
        match comps.split_last() {
            None => Ok(Entry {
                dir: self.open_dir(&[])?,
                name: b".".to_vec(),
            }),
            Some((name, parent)) => Ok(Entry {
                dir: self.open_dir(parent)?,
                name: name.clone(),
            }),
        }
    }

    /// `lstat` of `comps` (symlink-free); `None` when it or a parent does not exist.
    pub(crate) fn lstat(&self, comps: &[Vec<u8>]) -> io::Result<Option<Stat>> {
        match self.entry(comps) {
            Ok(entry) => entry.lstat(),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the missing directories of `comps` (symlink-free), each with exactly
    /// `attrs.mode` (no umask), then `attrs.owner` and `attrs.time` when set, like
    /// fsutil's `MkdirAll`. Returns the directories created, outermost first. Something
    /// other than a directory on the way is `ENOTDIR`.
    pub(crate) fn mkdir_all(&self, comps: &[Vec<u8>], attrs: &Attrs) -> io::Result<Vec<Comps>> {
        let mut created = Vec::new();
        let mut cur = self.open_dir(&[])?;
        let mut pending: VecDeque<&Vec<u8>> = comps.iter().collect();
        let mut depth = 0;
        while let Some(comp) = pending.pop_front() {
            depth += 1;
            let name = OsStr::from_bytes(comp);
            match rustix::fs::openat(&cur, name, DIR_PATH | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Err(Errno::NOTDIR.into()),
                Err(e) => return Err(e.into()),
            }
            let made = match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => true,
                Err(Errno::EXIST) => false,
                Err(e) => return Err(e.into()),
            };
            let fd = match rustix::fs::openat(&cur, name, DIR_READ, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Err(Errno::NOTDIR.into()),
                Err(e) => return Err(e.into()),
            };
            if made {
                meta::set_dir_attrs(&fd, attrs)?;
                created.push(comps[..depth].to_vec());
            }
            cur = fd;
        }
        Ok(created)
    }
}

/// A path naming `name` inside the directory `dir` through `/proc/self/fd`, for calls
/// that have no `*at` form (xattrs of any entry, chmod of a device node). The directory
/// part is the magic link of a descriptor we hold, so only `name` is looked up, and the
/// `l*` calls do not follow it.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if name != b"." {
        p.push(OsStr::from_bytes(name));
    }
    p
}

/// Lists the names in the directory `dir` (opened for reading), without `.` and `..`,
/// sorted bytewise as Go's `os.ReadDir` returns them.
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, never
/// following a symlink. Returns whether anything was there.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let os = OsStr::from_bytes(name);
    match rustix::fs::unlinkat(dir, os, AtFlags::empty()) {
        Ok(()) => return Ok(true),
        Err(Errno::NOENT) => return Ok(false),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    // An explicit stack rather than recursion: a tree can be deeper than a thread's
    // stack allows.
    let top = rustix::fs::openat(dir, os, DIR_READ, Mode::empty())?;
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(top, name.to_vec())];
    while let Some((fd, _)) = stack.last() {
        let mut subdir = None;
        for child in list(fd.as_fd())? {
            match rustix::fs::unlinkat(fd, OsStr::from_bytes(&child), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) => {
                    subdir = Some(child);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        match subdir {
            Some(child) => {
                let fd =
                    rustix::fs::openat(fd, OsStr::from_bytes(&child), DIR_READ, Mode::empty())?;
                stack.push((fd, child));
            }
            None => {
                let Some((_, done)) = stack.pop() else { break };
                let parent = stack.last().map_or(dir, |(fd, _)| fd.as_fd());
                rustix::fs::unlinkat(parent, OsStr::from_bytes(&done), AtFlags::REMOVEDIR)?;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn c(s: &str) -> Comps {
        clean(s.as_bytes())
    }

    #[test]
    fn cleaning_never_leaves_the_root() {
        assert_eq!(c("/a/./b//c/"), c("a/b/c"));
        assert_eq!(c("../../x"), c("x"));
        assert_eq!(c("a/../../b"), c("b"));
        assert!(c("/..").is_empty());
        assert_eq!(display(&c("a/b")), "/a/b");
        assert_eq!(display(&[]), "/");
    }

    #[test]
    fn symlinks_resolve_as_if_the_root_were_slash() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir_all(r.join("real/sub")).unwrap();
        symlink("/real", r.join("abs")).unwrap();
        symlink("real/sub", r.join("rel")).unwrap();
        symlink("../../../real", r.join("real/sub/up")).unwrap();
        symlink("/missing/x", r.join("dangling")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        fs::write(r.join("file"), b"").unwrap();
        let root = Root::open(r).unwrap();
        assert_eq!(root.resolve(&c("abs/sub"), true).unwrap(), c("real/sub"));
        assert_eq!(root.resolve(&c("rel/up/sub"), true).unwrap(), c("real/sub"));
        assert_eq!(root.resolve(&c("abs"), false).unwrap(), c("abs"));
        assert_eq!(
            root.resolve(&c("dangling/y"), true).unwrap(),
            c("missing/x/y")
        );
        assert_eq!(root.resolve(&c("dangling"), false).unwrap(), c("dangling"));
        let err = root.resolve(&c("loop"), true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::LOOP.raw_os_error()));
        let err = root.resolve(&c("file/x"), true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::NOTDIR.raw_os_error()));
    }

    #[test]
    fn mkdir_all_creates_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("a")).unwrap();
        fs::write(dir.path().join("f"), b"").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let attrs = Attrs::mode(0o750);
        let created = root.mkdir_all(&c("a/b/c"), &attrs).unwrap();
        assert_eq!(created, vec![c("a/b"), c("a/b/c")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("a/b/c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o750);
        assert!(root.mkdir_all(&c("a/b/c"), &attrs).unwrap().is_empty());
        let err = root.mkdir_all(&c("f/x"), &attrs).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::NOTDIR.raw_os_error()));
    }

    #[test]
    fn remove_all_never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"k").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir_all(victim.join("a/b")).unwrap();
        fs::write(victim.join("a/b/f"), b"x").unwrap();
        symlink(outside.path(), victim.join("a/link")).unwrap();
        let fd = rustix::fs::open(dir.path(), DIR_READ, Mode::empty()).unwrap();
        assert!(remove_all(fd.as_fd(), b"victim").unwrap());
        assert!(!victim.exists());
        assert!(outside.path().join("keep").exists());
        assert!(!remove_all(fd.as_fd(), b"victim").unwrap());
    }
}
