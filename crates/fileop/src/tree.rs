//! Copying one source entry onto one destination entry, recursively for directories, as
//! fsutil's copier does with `cp -a` semantics: files, symlinks (target verbatim),
//! device nodes and FIFOs recreated; hard links within the tree kept; owner, mode, times
//! and xattrs carried over unless the action overrides them; include/exclude patterns
//! matched on paths relative to the source.
//!
//! The walk keeps an explicit stack of open directories (no recursion, so depth is not
//! limited by the thread's stack). Every destination entry is created relative to its
//! parent's descriptor with calls that never follow the last component, and descended
//! into only after `O_NOFOLLOW | O_DIRECTORY`, so the copy cannot leave the destination
//! root. A directory that include patterns do not select is created only once something
//! below it is copied ("lazily"), as upstream does for patterns like `a/*/c`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use patternmatcher::MatchInfo;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::Owner;
use crate::copy::{CopyStats, Options};
use crate::error::{Error, Result, errno, io_err};
use crate::meta::{self, inode, stat_times};
use crate::root::{Comps, DIR_READ, Entry, Root, display, list, lstat_at, remove_all};

fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// A directory being copied.
struct Frame {
    /// The source directory, open for reading.
    src: OwnedFd,
    /// The destination directory, once it exists.
    dst: Option<OwnedFd>,
    name: Vec<u8>,
    /// Path relative to the copied source, for patterns and messages (`""` at the top).
    rel: String,
    dst_comps: Comps,
    stat: Stat,
    include: bool,
    include_info: MatchInfo,
    exclude_info: MatchInfo,
    /// We made the destination directory (it did not exist).
    created: bool,
    top: bool,
    /// Children still to copy, last first.
    names: Vec<Vec<u8>>,
}

/// One source copied onto one destination.
pub(crate) struct Tree<'a> {
    pub(crate) opts: &'a Options,
    pub(crate) dest_root: &'a Root,
    pub(crate) stats: &'a mut CopyStats,
    /// The source as the action names it, for messages.
    pub(crate) shown: String,
    /// First destination of each multiply-linked source inode.
    pub(crate) links: HashMap<(u64, u64), Comps>,
}

impl Tree<'_> {
    /// Copies `src` (whose `lstat` is `st`) onto `dst` (at `dst_comps`).
    pub(crate) fn copy(
        &mut self,
        src: &Entry,
        st: &Stat,
        dst: &Entry,
        dst_comps: Comps,
    ) -> Result<()> {
        if !is_dir(st) {
            let shown = self.shown.clone();
            return self.copy_leaf(
                src.dir.as_fd(),
                &src.name,
                st,
                dst.dir.as_fd(),
                &dst.name,
                &dst_comps,
                &shown,
            );
        }
        let shown = self.shown.clone();
        let created = self.make_dir(dst.dir.as_fd(), &dst.name, &dst_comps)?;
        let src_fd = rustix::fs::openat(&src.dir, src.name(), DIR_READ, Mode::empty())
            .map_err(errno("copy", &shown, "open"))?;
        let dst_fd = rustix::fs::openat(&dst.dir, dst.name(), DIR_READ, Mode::empty())
            .map_err(errno("copy", &display(&dst_comps), "open destination"))?;
        let mut names = list(src_fd.as_fd()).map_err(io_err("copy", &shown, "read directory"))?;
        names.reverse();
        let mut stack = vec![Frame {
            src: src_fd,
            dst: Some(dst_fd),
            name: dst.name.clone(),
            rel: String::new(),
            dst_comps,
            stat: *st,
            include: true,
            include_info: MatchInfo::default(),
            exclude_info: MatchInfo::default(),
            created,
            top: true,
            names,
        }];
        while let Some(frame) = stack.last_mut() {
            if let Some(name) = frame.names.pop() {
                self.visit(&mut stack, dst, name)?;
            } else if let Some(frame) = stack.pop() {
                self.finish(&stack, src, dst, frame)?;
            }
        }
        Ok(())
    }

    /// The message path of `rel` below the source.
    fn shown_rel(&self, rel: &str) -> String {
        if rel.is_empty() {
            return self.shown.clone();
        }
        format!("{}/{rel}", self.shown.trim_end_matches('/'))
    }

    /// One child `name` of the directory on top of `stack`.
    fn visit(&mut self, stack: &mut Vec<Frame>, top_dst: &Entry, name: Vec<u8>) -> Result<()> {
        let opts = self.opts;
        let depth = stack.len();
        let parent = &stack[depth - 1];
        let lossy = String::from_utf8_lossy(&name);
        let rel = if parent.rel.is_empty() {
            lossy.into_owned()
        } else {
            format!("{}/{lossy}", parent.rel)
        };
        let (mut include, include_info) = match &opts.include {
            Some(pm) => pm.matches_with_parents(&rel, &parent.include_info),
            None => (true, MatchInfo::default()),
        };
        let (excluded, exclude_info) = match &opts.exclude {
            Some(pm) => pm.matches_with_parents(&rel, &parent.exclude_info),
            None => (false, MatchInfo::default()),
        };
        include &= !excluded;
        let exclusions = opts.exclude.as_ref().is_some_and(|pm| pm.exclusions());
        // Nothing below an excluded entry can come back: skip it without a look.
        if !include && opts.include.is_none() && !exclusions {
            return Ok(());
        }
        let shown = self.shown_rel(&rel);
        let st = lstat_at(parent.src.as_fd(), &name)
            .and_then(|st| st.ok_or_else(|| Errno::NOENT.into()))
            .map_err(io_err("copy", &shown, "lstat"))?;
        if !include && !is_dir(&st) {
            return Ok(());
        }
        let mut dst_comps = parent.dst_comps.clone();
        dst_comps.push(name.clone());
        if include {
            self.create_pending(stack, top_dst)?;
        }
        let parent = &stack[depth - 1];
        if !is_dir(&st) {
            let Some(pdst) = parent.dst.as_ref() else {
                return Err(Errno::NOENT).map_err(errno("copy", &shown, "open destination"));
            };
            return self.copy_leaf(
                parent.src.as_fd(),
                &name,
                &st,
                pdst.as_fd(),
                &name,
                &dst_comps,
                &shown,
            );
        }
        let src = rustix::fs::openat(
            &parent.src,
            OsStr::from_bytes(&name),
            DIR_READ,
            Mode::empty(),
        )
        .map_err(errno("copy", &shown, "open"))?;
        // An excluded directory is read only when an exclusion (`!x`) may bring back
        // something below it.
        let mut names = if excluded && !exclusions {
            Vec::new()
        } else {
            list(src.as_fd()).map_err(io_err("copy", &shown, "read directory"))?
        };
        names.reverse();
        let (dst, created) = match (include, parent.dst.as_ref()) {
            (true, Some(pdst)) => {
                let created = self.make_dir(pdst.as_fd(), &name, &dst_comps)?;
                let fd =
                    rustix::fs::openat(pdst, OsStr::from_bytes(&name), DIR_READ, Mode::empty())
                        .map_err(errno("copy", &display(&dst_comps), "open destination"))?;
                (Some(fd), created)
            }
            _ => (None, false),
        };
        if dst.is_none() && names.is_empty() {
            return Ok(());
        }
        stack.push(Frame {
            src,
            dst,
            name,
            rel,
            dst_comps,
            stat: st,
            include,
            include_info,
            exclude_info,
            created,
            top: false,
            names,
        });
        Ok(())
    }

    /// Creates the destination directories of the frames on `stack` that were not
    /// created yet (directories the patterns did not select, now that something below
    /// them is copied). An existing directory is adopted and takes the source's mode.
    fn create_pending(&mut self, stack: &mut [Frame], top_dst: &Entry) -> Result<()> {
        for i in 0..stack.len() {
            if stack[i].dst.is_some() {
                continue;
            }
            let (before, after) = stack.split_at_mut(i);
            let frame = &mut after[0];
            let parent = match before.last() {
                Some(p) => p.dst.as_ref().map(AsFd::as_fd),
                None => Some(top_dst.dir.as_fd()),
            };
            let shown = display(&frame.dst_comps);
            let Some(parent) = parent else {
                return Err(Errno::NOENT).map_err(errno("copy", &shown, "open destination"));
            };
            frame.created = self.make_dir(parent, &frame.name, &frame.dst_comps)?;
            if !frame.created {
                meta::chmod(parent, &frame.name, frame.stat.st_mode & 0o7777)
                    .map_err(io_err("copy", &shown, "chmod"))?;
            }
            let fd = rustix::fs::openat(
                parent,
                OsStr::from_bytes(&frame.name),
                DIR_READ,
                Mode::empty(),
            )
            .map_err(errno("copy", &shown, "open destination"))?;
            frame.dst = Some(fd);
        }
        Ok(())
    }

    /// A directory is done: its metadata is set now that nothing more is written in it.
    fn finish(
        &mut self,
        stack: &[Frame],
        top_src: &Entry,
        top_dst: &Entry,
        frame: Frame,
    ) -> Result<()> {
        if frame.dst.is_none() {
            return Ok(());
        }
        let (src_parent, dst_parent, src_name) = match stack.last() {
            Some(p) => (p.src.as_fd(), p.dst.as_ref().map(AsFd::as_fd), &frame.name),
            None => (
                top_src.dir.as_fd(),
                Some(top_dst.dir.as_fd()),
                &top_src.name,
            ),
        };
        let shown = self.shown_rel(&frame.rel);
        let Some(dst_parent) = dst_parent else {
            return Err(Errno::NOENT).map_err(errno("copy", &shown, "open destination"));
        };
        // The top directory keeps its metadata when it existed (only its times are
        // set), as upstream; every other directory copied takes the source's. One
        // created only for something below it (not itself selected) gets it too, so
        // the result does not depend on when its children were written.
        if frame.top && !frame.created {
            let (atime, mtime) = self.times(&frame.stat);
            return meta::set_times(dst_parent, &frame.name, atime, mtime)
                .map_err(io_err("copy", &shown, "utimes"));
        }
        if frame.include || frame.created {
            self.set_info(
                src_parent,
                src_name,
                &frame.stat,
                dst_parent,
                &frame.name,
                &shown,
            )?;
        }
        Ok(())
    }

    /// Makes `name` in `dir` a directory: kept if it is one, created if missing (the
    /// mode is set later), replaced if it is something else and the action allows it.
    /// Returns whether it was created.
    fn make_dir(&mut self, dir: BorrowedFd<'_>, name: &[u8], comps: &Comps) -> Result<bool> {
        let shown = display(comps);
        match lstat_at(dir, name).map_err(io_err("copy", &shown, "lstat destination"))? {
            Some(st) if is_dir(&st) => return Ok(false),
            Some(_) if self.opts.always_replace => {
                remove_all(dir, name).map_err(io_err("copy", &shown, "remove"))?;
            }
            Some(_) => {
                return Err(Error::Invalid {
                    action: "copy",
                    path: shown,
                    reason: "cannot copy a directory onto a non-directory".to_string(),
                });
            }
            None => {}
        }
        rustix::fs::mkdirat(dir, OsStr::from_bytes(name), Mode::from_raw_mode(0o700))
            .map_err(errno("copy", &shown, "mkdir"))?;
        self.stats.dirs += 1;
        Ok(true)
    }

    /// Copies a non-directory `src_name` (in `src_dir`, `lstat` = `st`) to `dst_name` in
    /// `dst_dir`, replacing a non-directory there.
    #[allow(clippy::too_many_arguments, clippy::unnecessary_cast)]
    fn copy_leaf(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &[u8],
        st: &Stat,
        dst_dir: BorrowedFd<'_>,
        dst_name: &[u8],
        dst_comps: &Comps,
        shown: &str,
    ) -> Result<()> {
        let dst_shown = display(dst_comps);
        match lstat_at(dst_dir, dst_name).map_err(io_err(
            "copy",
            &dst_shown,
            "lstat destination",
        ))? {
            None => {}
            Some(t) if is_dir(&t) && !self.opts.always_replace => {
                return Err(Error::Invalid {
                    action: "copy",
                    path: dst_shown,
                    reason: "cannot replace a directory with a file".to_string(),
                });
            }
            Some(_) => {
                remove_all(dst_dir, dst_name).map_err(io_err("copy", &dst_shown, "remove"))?;
            }
        }
        let dst_os = OsStr::from_bytes(dst_name);
        let src_os = OsStr::from_bytes(src_name);
        let ft = FileType::from_raw_mode(st.st_mode);
        match ft {
            FileType::RegularFile => {
                let (key, multi) = inode(st);
                let first = if multi {
                    self.links.get(&key).cloned()
                } else {
                    None
                };
                if let Some(first) = first {
                    let e = self.dest_root.entry(&first).map_err(io_err(
                        "copy",
                        &dst_shown,
                        "open link source",
                    ))?;
                    rustix::fs::linkat(&e.dir, e.name(), dst_dir, dst_os, AtFlags::empty())
                        .map_err(errno("copy", &dst_shown, "link"))?;
                } else {
                    if multi {
                        self.links.insert(key, dst_comps.clone());
                    }
                    self.stats.bytes += copy_content(src_dir, src_os, dst_dir, dst_os)
                        .map_err(io_err("copy", shown, "copy content"))?;
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src_dir, src_os, Vec::new())
                    .map_err(errno("copy", shown, "readlink"))?;
                rustix::fs::symlinkat(target.as_c_str(), dst_dir, dst_os)
                    .map_err(errno("copy", &dst_shown, "symlink"))?;
            }
            FileType::BlockDevice | FileType::CharacterDevice | FileType::Fifo => {
                let rdev = if ft == FileType::Fifo {
                    0
                } else {
                    st.st_rdev as u64
                };
                rustix::fs::mknodat(dst_dir, dst_os, ft, Mode::from_raw_mode(0o600), rdev)
                    .map_err(errno("copy", &dst_shown, "mknod"))?;
            }
            FileType::Socket => {
                // A socket cannot be copied; upstream leaves an empty file in its place.
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                rustix::fs::openat(dst_dir, dst_os, flags, Mode::from_raw_mode(0o600))
                    .map_err(errno("copy", &dst_shown, "create"))?;
            }
            _ => {
                tracing::warn!(path = shown, "copy: skipping an entry of unknown type");
                return Ok(());
            }
        }
        self.stats.files += 1;
        self.set_info(src_dir, src_name, st, dst_dir, dst_name, shown)
    }

    /// Access and modification times for a copied entry.
    fn times(&self, st: &Stat) -> (rustix::fs::Timespec, rustix::fs::Timespec) {
        match self.opts.time {
            Some(t) => (t, t),
            None => stat_times(st),
        }
    }

    /// fsutil's `copyFileInfo`: owner (the action's, else the source's), mode (the
    /// action's `mode`/`modeStr` applied, else the source's; not for symlinks), times
    /// (the action's timestamp, else the source's), then xattrs.
    fn set_info(
        &self,
        src_dir: BorrowedFd<'_>,
        src_name: &[u8],
        st: &Stat,
        dst_dir: BorrowedFd<'_>,
        dst_name: &[u8],
        shown: &str,
    ) -> Result<()> {
        let owner = self.opts.owner.unwrap_or(Owner {
            uid: st.st_uid,
            gid: st.st_gid,
        });
        meta::chown(dst_dir, dst_name, owner).map_err(io_err("copy", shown, "chown"))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft != FileType::Symlink {
            let mode = self.opts.mode_for(st.st_mode, ft == FileType::Directory);
            meta::chmod(dst_dir, dst_name, mode).map_err(io_err("copy", shown, "chmod"))?;
        }
        let (atime, mtime) = self.times(st);
        meta::set_times(dst_dir, dst_name, atime, mtime)
            .map_err(io_err("copy", shown, "utimes"))?;
        meta::copy_xattrs(src_dir, src_name, dst_dir, dst_name, shown);
        Ok(())
    }
}

/// Copies the content of regular file `src` into a new file `dst` (which must not
/// exist). `std::io::copy` between files uses `copy_file_range` (reflinks where the
/// filesystem can) and falls back to read/write.
fn copy_content(
    src_dir: BorrowedFd<'_>,
    src: &OsStr,
    dst_dir: BorrowedFd<'_>,
    dst: &OsStr,
) -> io::Result<u64> {
    let from = rustix::fs::openat(
        src_dir,
        src,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let to = rustix::fs::openat(dst_dir, dst, flags, Mode::from_raw_mode(0o600))?;
    let mut from = std::fs::File::from(from);
    let mut to = std::fs::File::from(to);
    io::copy(&mut from, &mut to)
}
