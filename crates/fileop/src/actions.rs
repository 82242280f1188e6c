//! The single-path actions: mkdir, mkfile, rm and symlink.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use proto::pb;
use rustix::fs::{Mode, OFlags, Timestamps};
use rustix::io::Errno;

use crate::Owner;
use crate::error::{Error, Result, errno, io_err};
use crate::meta::{self, Attrs, timestamp};
use crate::root::{self, Root, clean, display};
use crate::wildcard;

fn open_root(path: &Path, action: &'static str) -> Result<Root> {
    Root::open(path).map_err(io_err(action, &path.display().to_string(), "open root"))
}

/// Creates the directory `a.path` (mode `a.mode & 0777`, applied exactly, without the
/// umask). With `makeParents`, missing parents are created too, each with the same mode,
/// owner and timestamp (as BuildKit does); without it the parent must exist. An existing
/// directory is left as it is. Symlinks on the way, the last component included, are
/// followed inside `root`.
pub fn mkdir(root: &Path, a: &pb::FileActionMkDir, owner: Option<Owner>) -> Result<()> {
    let root = open_root(root, "mkdir")?;
    let comps = clean(a.path.as_bytes());
    let shown = display(&comps);
    let attrs = Attrs {
        mode: a.mode as u32 & 0o777,
        owner,
        time: timestamp(a.timestamp),
    };
    let comps = root
        .resolve(&comps, true)
        .map_err(io_err("mkdir", &shown, "resolve"))?;
    if a.make_parents {
        let created = root
            .mkdir_all(&comps, &attrs)
            .map_err(io_err("mkdir", &shown, "mkdir"))?;
        // Creating a child changed its parent's mtime after it was set.
        if let Some(t) = attrs.time {
            for dir in created.iter().rev() {
                let e = root.entry(dir).map_err(io_err("mkdir", &shown, "open"))?;
                meta::set_times(e.dir.as_fd(), &e.name, t, t)
                    .map_err(io_err("mkdir", &shown, "utimes"))?;
            }
        }
        tracing::debug!(path = %shown, created = created.len(), "mkdir -p");
        return Ok(());
    }
    let Some((name, parent)) = comps.split_last() else {
        return Ok(()); // the root exists
    };
    let dir = root
        .open_dir(parent)
        .map_err(io_err("mkdir", &shown, "open parent"))?;
    let os = OsStr::from_bytes(name);
    match rustix::fs::mkdirat(&dir, os, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            // As upstream: whatever is there stays, and this is not an error.
            tracing::debug!(path = %shown, "mkdir: already exists");
            return Ok(());
        }
        Err(e) => return Err(errno("mkdir", &shown, "mkdir")(e)),
    }
    let fd = rustix::fs::openat(&dir, os, root::DIR_READ, Mode::empty())
        .map_err(errno("mkdir", &shown, "open"))?;
    meta::set_dir_attrs(&fd, &attrs).map_err(io_err("mkdir", &shown, "set attributes"))?;
    Ok(())
}

/// Writes the file `a.path` with `a.data`, creating or truncating it, with mode
/// `a.mode & 0777` applied exactly, then the owner and timestamp when given. The parent
/// must exist. A symlink at the path is followed inside `root`.
pub fn mkfile(root: &Path, a: &pb::FileActionMkFile, owner: Option<Owner>) -> Result<()> {
    let root = open_root(root, "mkfile")?;
    let comps = clean(a.path.as_bytes());
    let shown = display(&comps);
    let comps = root
        .resolve(&comps, true)
        .map_err(io_err("mkfile", &shown, "resolve"))?;
    let Some((name, parent)) = comps.split_last() else {
        return Err(Error::Invalid {
            action: "mkfile",
            path: shown,
            reason: "the root is a directory".to_string(),
        });
    };
    let dir = root
        .open_dir(parent)
        .map_err(io_err("mkfile", &shown, "open parent"))?;
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let os = OsStr::from_bytes(name);
    let fd = rustix::fs::openat(&dir, os, flags, Mode::from_raw_mode(0o600))
        .map_err(errno("mkfile", &shown, "create"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&a.data)
        .map_err(io_err("mkfile", &shown, "write"))?;
    if let Some(owner) = owner {
        meta::fchown(&file, owner).map_err(io_err("mkfile", &shown, "chown"))?;
    }
    rustix::fs::fchmod(&file, Mode::from_raw_mode(a.mode as u32 & 0o777))
        .map_err(errno("mkfile", &shown, "chmod"))?;
    if let Some(t) = timestamp(a.timestamp) {
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::futimens(&file, &times).map_err(errno("mkfile", &shown, "utimes"))?;
    }
    Ok(())
}

/// Removes `a.path` (recursively for a directory; a symlink itself, never its target).
/// Its parent is resolved inside `root`. A missing path is an error unless
/// `allowNotFound`. With `allowWildcard`, every entry the path matches (Go
/// `filepath.Match` per component) is removed; no match is not an error. The root
/// itself cannot be removed.
pub fn rm(root: &Path, a: &pb::FileActionRm) -> Result<()> {
    let root = open_root(root, "rm")?;
    let comps = clean(a.path.as_bytes());
    let targets = if a.allow_wildcard {
        wildcard::expand(&root, &comps, false, "rm")?
    } else {
        vec![comps]
    };
    for target in targets {
        rm_one(&root, &target, a.allow_not_found)?;
    }
    Ok(())
}

fn rm_one(root: &Root, comps: &[Vec<u8>], allow_not_found: bool) -> Result<()> {
    let shown = display(comps);
    let Some((name, parent)) = comps.split_last() else {
        return Err(Error::Invalid {
            action: "rm",
            path: shown,
            reason: "the root cannot be removed".to_string(),
        });
    };
    let missing = |source: std::io::Error| {
        if allow_not_found {
            Ok(())
        } else {
            Err(io_err("rm", &shown, "lstat")(source))
        }
    };
    let parent = match root.resolve(parent, true).and_then(|p| root.open_dir(&p)) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return missing(e),
        Err(e) => return Err(io_err("rm", &shown, "open parent")(e)),
    };
    let removed = root::remove_all(parent.as_fd(), name).map_err(io_err("rm", &shown, "remove"))?;
    if !removed {
        return missing(Errno::NOENT.into());
    }
    tracing::debug!(path = %shown, "removed");
    Ok(())
}

/// Creates the symlink `a.newpath` pointing at `a.oldpath` (verbatim), then sets its
/// owner and timestamp when given (on the link, not its target). The parent is resolved
/// inside `root`; an existing entry at `newpath` is an error.
pub fn symlink(root: &Path, a: &pb::FileActionSymlink, owner: Option<Owner>) -> Result<()> {
    let root = open_root(root, "symlink")?;
    let comps = clean(a.newpath.as_bytes());
    let shown = display(&comps);
    let Some((name, parent)) = comps.split_last() else {
        return Err(Error::Invalid {
            action: "symlink",
            path: shown,
            reason: "the root already exists".to_string(),
        });
    };
    let parent = root
        .resolve(parent, true)
        .map_err(io_err("symlink", &shown, "resolve"))?;
    let dir = root
        .open_dir(&parent)
        .map_err(io_err("symlink", &shown, "open parent"))?;
    let os = OsStr::from_bytes(name);
    rustix::fs::symlinkat(a.oldpath.as_str(), &dir, os)
        .map_err(errno("symlink", &shown, "symlink"))?;
    if let Some(owner) = owner {
        meta::chown(dir.as_fd(), name, owner).map_err(io_err("symlink", &shown, "chown"))?;
    }
    if let Some(t) = timestamp(a.timestamp) {
        meta::set_times(dir.as_fd(), name, t, t).map_err(io_err("symlink", &shown, "utimes"))?;
    }
    Ok(())
}
