//! A handle on the target directory that never lets a path leave it.
//!
//! Parent directories are resolved with `openat2(RESOLVE_IN_ROOT)`: symlinks are followed
//! as if the target were `/`, so `a -> /etc` then `a/passwd` lands in `<target>/etc/passwd`
//! and `a -> ../..` then `a/x` in `<target>/x`, exactly as Docker and containerd scope
//! them. The last component of a name is only ever used with `*at` calls that do not
//! follow it (`O_NOFOLLOW`/`O_EXCL`, `AT_SYMLINK_NOFOLLOW`, `mkdirat`, `symlinkat`, ...),
//! relative to the resolved parent's file descriptor, so no symlink can redirect a write.

use std::cell::OnceCell;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A resolved directory inside the root, with its identity computed on demand.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    id: OnceCell<(u64, u64)>,
}

impl Dir {
    fn new(fd: OwnedFd) -> Rc<Dir> {
        Rc::new(Dir {
            fd,
            id: OnceCell::new(),
        })
    }

    /// `(st_dev, st_ino)` of the directory.
    pub(crate) fn id(&self) -> io::Result<(u64, u64)> {
        if let Some(id) = self.id.get() {
            return Ok(*id);
        }
        let st = rustix::fs::fstat(&self.fd)?;
        let id = (st.st_dev, st.st_ino);
        Ok(*self.id.get_or_init(|| id))
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The target directory of an apply.
#[derive(Debug)]
pub(crate) struct Root {
    path: PathBuf,
    dir: Rc<Dir>,
    /// The last parent resolved, reused while nothing is removed.
    cache: Option<(Vec<u8>, Rc<Dir>)>,
}

const DIR_PATH: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

impl Root {
    /// Opens `path` (which the caller trusts; symlinks in it are followed).
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR_PATH, Mode::empty())?;
        Ok(Root {
            path: path.to_path_buf(),
            dir: Dir::new(fd),
            cache: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory at normalized path `rel`, resolving every component inside
    /// the root. `flags` adds to `O_DIRECTORY | O_CLOEXEC` (`O_PATH` or `O_RDONLY`).
    pub(crate) fn open_dir(&self, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = flags | OFlags::DIRECTORY | OFlags::CLOEXEC;
        // EAGAIN means a concurrent rename raced the lookup; the kernel asks us to retry.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(&self.dir, OsStr::from_bytes(rel), flags, Mode::empty(), how)
            {
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

    /// The directory `rel` (normalized), for creating an entry in it. Missing directories
    /// are created (mode 0755, owned by the caller) when `create`; otherwise a missing
    /// directory gives `Ok(None)`.
    pub(crate) fn parent(&mut self, rel: &[u8], create: bool) -> io::Result<Option<Rc<Dir>>> {
        if rel.is_empty() {
            return Ok(Some(self.dir.clone()));
        }
        if let Some((path, dir)) = &self.cache {
            if path == rel {
                return Ok(Some(dir.clone()));
            }
        }
        let dir = match self.open_dir(rel, OFlags::PATH) {
            Ok(fd) => Dir::new(fd),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                if !create {
                    return Ok(None);
                }
                Dir::new(self.create_dirs(rel)?)
            }
            Err(e) => return Err(e),
        };
        self.cache = Some((rel.to_vec(), dir.clone()));
        Ok(Some(dir))
    }

    /// Forgets cached parents. Called whenever a directory or symlink is removed, since a
    /// cached parent may have been resolved through it.
    pub(crate) fn invalidate(&mut self) {
        self.cache = None;
    }

    /// Creates the missing directories of `rel`. A dangling symlink on the way is
    /// followed as Docker follows it: its target is created, inside the root.
    fn create_dirs(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let mut path = rel.to_vec();
        let mut links = 0;
        'restart: loop {
            let ranges = components(&path);
            let mut cur: Option<OwnedFd> = None;
            // Below a directory we just made everything is new: no lookups needed.
            let mut created_above = false;
            for &(start, end) in &ranges {
                let comp = &path[start..end];
                if comp == b".." {
                    // Only from a symlink target; resolve it inside the root.
                    cur = Some(self.open_dir(&path[..end], OFlags::PATH)?);
                    created_above = false;
                    continue;
                }
                let at = match &cur {
                    Some(fd) => fd.as_fd(),
                    None => self.dir.as_fd(),
                };
                if created_above {
                    mkdir_if_missing(at, comp)?;
                    let fd = rustix::fs::openat(
                        at,
                        OsStr::from_bytes(comp),
                        DIR_PATH | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )?;
                    cur = Some(fd);
                    continue;
                }
                match self.open_dir(&path[..end], OFlags::PATH) {
                    Ok(fd) => {
                        cur = Some(fd);
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
                    Err(e) => return Err(e),
                }
                match rustix::fs::mkdirat(at, OsStr::from_bytes(comp), Mode::from_raw_mode(0o755)) {
                    Ok(()) => {
                        created_above = true;
                        let fd = rustix::fs::openat(
                            at,
                            OsStr::from_bytes(comp),
                            DIR_PATH | OFlags::NOFOLLOW,
                            Mode::empty(),
                        )?;
                        cur = Some(fd);
                    }
                    Err(Errno::EXIST) => {
                        // The name exists but does not resolve: a dangling symlink.
                        links += 1;
                        if links > 40 {
                            return Err(Errno::LOOP.into());
                        }
                        let target =
                            rustix::fs::readlinkat(at, OsStr::from_bytes(comp), Vec::new())?;
                        let target = target.as_bytes();
                        let mut next = Vec::with_capacity(path.len() + target.len());
                        if !target.starts_with(b"/") {
                            next.extend_from_slice(&path[..start]);
                        }
                        next.extend_from_slice(target);
                        next.push(b'/');
                        next.extend_from_slice(&path[end..]);
                        path = next;
                        continue 'restart;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return cur.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound));
        }
    }
}

/// Byte ranges of the components of `path`, without empty and `.` components.
fn components(path: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in path.iter().chain(std::iter::once(&b'/')).enumerate() {
        if b == b'/' {
            let comp = &path[start..i];
            if !comp.is_empty() && comp != b"." {
                out.push((start, i));
            }
            start = i + 1;
        }
    }
    out
}

fn mkdir_if_missing(at: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::mkdirat(at, OsStr::from_bytes(name), Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A path naming `name` inside the directory `dir` through `/proc/self/fd`, for the few
/// calls that have no `*at` form (`lsetxattr` on a symlink or device node). The directory
/// part is the magic link of an fd we hold, so nothing but `name` is looked up, and the
/// `l*` calls do not follow `name`.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(OsStr::from_bytes(name));
    p
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, without ever
/// following a symlink. Returns whether anything was there.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let name_os = OsStr::from_bytes(name);
    match rustix::fs::unlinkat(dir, name_os, AtFlags::empty()) {
        Ok(()) => return Ok(true),
        Err(Errno::NOENT) => return Ok(false),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let top = rustix::fs::openat(dir, name_os, read_dir_flags(), Mode::empty())?;
    // An explicit stack instead of recursion: a hostile tree can be deeper than a thread's
    // stack allows.
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(top, name.to_vec())];
    while let Some((fd, _)) = stack.last() {
        let mut subdir = None;
        for entry in rustix::fs::Dir::read_from(fd)? {
            let entry = entry?;
            let child = entry.file_name().to_bytes();
            if child == b"." || child == b".." {
                continue;
            }
            match rustix::fs::unlinkat(fd, OsStr::from_bytes(child), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) => {
                    subdir = Some(child.to_vec());
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        match subdir {
            Some(child) => {
                let child_fd = rustix::fs::openat(
                    fd,
                    OsStr::from_bytes(&child),
                    read_dir_flags(),
                    Mode::empty(),
                )?;
                stack.push((child_fd, child));
            }
            None => {
                let Some((_, done)) = stack.pop() else { break };
                let parent = match stack.last() {
                    Some((pfd, _)) => pfd.as_fd(),
                    None => dir,
                };
                rustix::fs::unlinkat(parent, OsStr::from_bytes(&done), AtFlags::REMOVEDIR)?;
            }
        }
    }
    Ok(true)
}

/// Flags to open a directory for listing, refusing a symlink in its place.
pub(crate) fn read_dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Lists the names in a directory, without `.` and `..`.
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn parents_resolve_inside_the_root() {
        let sentinel = tempfile::tempdir().unwrap();
        let target = sentinel.path().join("target");
        fs::create_dir(&target).unwrap();
        symlink("/", target.join("abs")).unwrap();
        symlink("../..", target.join("up")).unwrap();
        let mut root = Root::open(&target).unwrap();
        for rel in [&b"abs/x/y"[..], b"up/z"] {
            let dir = root.parent(rel, true).unwrap().unwrap();
            rustix::fs::mkdirat(&*dir, "made", Mode::from_raw_mode(0o755)).unwrap();
        }
        assert!(target.join("x/y/made").is_dir());
        assert!(target.join("z/made").is_dir());
        // Nothing appeared next to the target.
        let names: Vec<_> = fs::read_dir(sentinel.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("target")]);
        assert!(root.parent(b"missing/dir", false).unwrap().is_none());
    }

    #[test]
    fn a_file_in_the_way_is_an_error_and_dangling_links_are_followed_inside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("file"), b"").unwrap();
        symlink("nowhere", dir.path().join("dangling")).unwrap();
        let mut root = Root::open(dir.path()).unwrap();
        assert!(root.parent(b"file/x", true).is_err());
        // A dangling symlink is followed inside the root, as Docker does.
        root.parent(b"dangling/x", true).unwrap().unwrap();
        assert!(dir.path().join("nowhere/x").is_dir());
        symlink("loop", dir.path().join("loop")).unwrap();
        assert!(root.parent(b"loop/x", true).is_err());
        symlink("/a/../../b/./c", dir.path().join("abs")).unwrap();
        root.parent(b"abs/d", true).unwrap().unwrap();
        assert!(dir.path().join("b/c/d").is_dir());
    }

    #[test]
    fn remove_all_never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"k").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir_all(victim.join("a/b/c")).unwrap();
        fs::write(victim.join("a/b/c/f"), b"x").unwrap();
        symlink(outside.path(), victim.join("a/link")).unwrap();
        let fd = rustix::fs::open(dir.path(), read_dir_flags(), Mode::empty()).unwrap();
        assert!(remove_all(fd.as_fd(), b"victim").unwrap());
        assert!(!victim.exists());
        assert!(outside.path().join("keep").exists());
        assert!(!remove_all(fd.as_fd(), b"victim").unwrap());
    }
}
