//! Bringing an earlier copy of a local source's directory up to date by a metadata walk,
//! so that a small change in a large context costs a small copy.
//!
//! [`update`] takes the synced directory (`src`) and a mounted writable snapshot (`dst`)
//! holding a copy of an earlier state of it (a full `fileop::copy`, possibly updated by
//! earlier calls), and leaves `dst` as a full copy of `src` made now would be:
//!
//! - Entries are compared by type, permission and special bits, owner, modification
//!   time and, for files, size; symlinks also by target, devices by device number. This
//!   is what the session's receiver compares, and the receiver is the only writer of
//!   `src`: it replaces a file whose metadata differs from the client's and finishes a
//!   file by setting its time, so equal metadata means the content was not rewritten
//!   (a partly written file keeps the time of its creation). Access times are not
//!   compared: reading changes them.
//! - A differing entry, and a new one, is copied with `fileop::copy` (owner, mode, times,
//!   xattrs; a directory with everything below it); an entry `src` no longer has is
//!   removed. On an overlay mount the kernel records the removals as whiteouts.
//! - A directory present on both sides is descended into when its type, mode and owner
//!   match, and copied again as a whole otherwise (the rare chmod or chown of a
//!   directory): that also carries its xattrs, which are not compared. The receiver sets
//!   a directory's xattrs only with its mode and owner, so they change together. Once
//!   everything below a directory is done, its times are set when its modification
//!   time differs (writing inside it changes it).
//! - The top directory keeps its own mode and owner and takes `src`'s times, as the full
//!   copy treats an existing destination.
//! - Hard links: a full copy links the paths that share an inode in `src`. Here a file
//!   that is multiply linked in `dst` but not in `src` is copied again (separating it),
//!   and after the walk the paths sharing an inode in `src` are made links of the first
//!   one's copy, so link identity matches the full copy too. Such files are cheap to
//!   check but, when relinked on an overlay mount, copied up in full.
//!
//! Paths are handled with the standard library's path-based calls. Both trees are
//! private to the daemon (the synced directory is leased to this build, the snapshot
//! is a fresh mount) and nothing follows a symlink from them: entries are looked at
//! with `lstat`, and only real directories on both sides are descended into. Names
//! must be UTF-8 (they come from fsutil STATs, which are protobuf strings), since a
//! copy action names its paths as strings.

use std::collections::HashMap;
use std::fs::{self, FileTimes, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use proto::pb;

/// The file type bits of `st_mode`.
const S_IFMT: u32 = 0o170000;

/// Why an update could not be made (the caller then copies everything instead).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("copying {path}: {source}")]
    Copy {
        path: String,
        // Boxed: it is large, and every result of the walk carries this type.
        #[source]
        source: Box<fileop::Error>,
    },
    #[error("{}: not a UTF-8 path", path.display())]
    NotUtf8 { path: PathBuf },
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What an update did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Entries copied: new, changed, or replacing an entry of another type (a directory
    /// counts once, with what is below it).
    pub(crate) copied: u64,
    /// Entries removed because `src` no longer has them.
    pub(crate) removed: u64,
    /// Paths made hard links of another path's copy.
    pub(crate) linked: u64,
    /// Entries compared and found equal (directories included).
    pub(crate) unchanged: u64,
}

/// Makes `dst` what a full copy of `src` would be; see the module documentation.
/// Blocking.
pub(crate) fn update(src: &Path, dst: &Path) -> Result<Stats, Error> {
    let mut u = Update {
        src,
        dst,
        stats: Stats::default(),
        links: HashMap::new(),
    };
    enum Step {
        /// Compare the entries of a directory present on both sides.
        Visit(PathBuf),
        /// Everything below it is done: fix its times.
        Finish(PathBuf),
    }
    let mut steps = vec![Step::Finish(PathBuf::new()), Step::Visit(PathBuf::new())];
    while let Some(step) = steps.pop() {
        match step {
            Step::Visit(rel) => {
                let subdirs = u.visit(&rel)?;
                // Reversed so that the stack visits them in name order.
                for sub in subdirs.into_iter().rev() {
                    steps.push(Step::Finish(sub.clone()));
                    steps.push(Step::Visit(sub));
                }
            }
            Step::Finish(rel) => u.fix_times(&rel)?,
        }
    }
    u.relink()?;
    Ok(u.stats)
}

struct Update<'a> {
    src: &'a Path,
    dst: &'a Path,
    stats: Stats,
    /// Paths of regular files that are multiply linked in `src`, by `src` inode, in
    /// walk order.
    links: HashMap<(u64, u64), Vec<PathBuf>>,
}

fn lstat(path: &Path) -> Result<Metadata, Error> {
    fs::symlink_metadata(path).map_err(|e| io_err("lstat", path, e))
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>, Error> {
    let mut names = fs::read_dir(dir)
        .map_err(|e| io_err("read directory", dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io_err("read directory", dir, e))?;
    names.sort();
    Ok(names)
}

fn is_dir(md: &Metadata) -> bool {
    md.file_type().is_dir()
}

fn same_type(a: &Metadata, b: &Metadata) -> bool {
    a.mode() & S_IFMT == b.mode() & S_IFMT
}

fn same_mtime(a: &Metadata, b: &Metadata) -> bool {
    a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()
}

/// Whether a directory may be kept and descended into: what `fileop::copy` gives a
/// directory besides times and xattrs.
fn same_dir(s: &Metadata, d: &Metadata) -> bool {
    same_type(s, d) && s.mode() == d.mode() && s.uid() == d.uid() && s.gid() == d.gid()
}

impl Update<'_> {
    /// Compares the entries of directory `rel` (present on both sides), updating `dst`;
    /// returns the subdirectories to descend into.
    fn visit(&mut self, rel: &Path) -> Result<Vec<PathBuf>, Error> {
        let src_names = names(&self.src.join(rel))?;
        let dst_names = names(&self.dst.join(rel))?;
        let mut subdirs = Vec::new();
        let (mut s, mut d) = (src_names.iter().peekable(), dst_names.iter().peekable());
        loop {
            let order = match (s.peek(), d.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(b),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(name) = s.next() else { break };
                    let child = rel.join(name);
                    let md = lstat(&self.src.join(&child))?;
                    self.copy(&child, &md)?;
                }
                std::cmp::Ordering::Greater => {
                    let Some(name) = d.next() else { break };
                    self.remove(&rel.join(name))?;
                    self.stats.removed += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (Some(name), _) = (s.next(), d.next()) else {
                        break;
                    };
                    let child = rel.join(name);
                    if self.compare(&child)? {
                        subdirs.push(child);
                    }
                }
            }
        }
        Ok(subdirs)
    }

    /// One entry present on both sides: replaced when it differs. Returns whether it is
    /// a directory to descend into.
    fn compare(&mut self, rel: &Path) -> Result<bool, Error> {
        let sp = self.src.join(rel);
        let dp = self.dst.join(rel);
        let (s, d) = (lstat(&sp)?, lstat(&dp)?);
        if is_dir(&s) && is_dir(&d) && same_dir(&s, &d) {
            self.stats.unchanged += 1;
            return Ok(true);
        }
        if self.same_leaf(&sp, &s, &dp, &d)? {
            self.note_links(rel, &s);
            self.stats.unchanged += 1;
            return Ok(false);
        }
        self.remove(rel)?;
        self.copy(rel, &s)?;
        Ok(false)
    }

    /// Whether a non-directory in `dst` is what copying the one in `src` would give.
    fn same_leaf(&self, sp: &Path, s: &Metadata, dp: &Path, d: &Metadata) -> Result<bool, Error> {
        if is_dir(s)
            || is_dir(d)
            || !same_type(s, d)
            || s.mode() != d.mode()
            || s.uid() != d.uid()
            || s.gid() != d.gid()
            || !same_mtime(s, d)
        {
            return Ok(false);
        }
        let ft = s.file_type();
        if ft.is_file() {
            // A copy that shares its inode with another path while the source does not
            // must be separated.
            return Ok(s.size() == d.size() && (d.nlink() == 1 || s.nlink() > 1));
        }
        if ft.is_symlink() {
            let target = |p: &Path| fs::read_link(p).map_err(|e| io_err("readlink", p, e));
            return Ok(target(sp)? == target(dp)?);
        }
        Ok(s.rdev() == d.rdev())
    }

    /// Removes `rel` from `dst`, with everything below it.
    fn remove(&mut self, rel: &Path) -> Result<(), Error> {
        let p = self.dst.join(rel);
        if is_dir(&lstat(&p)?) {
            fs::remove_dir_all(&p).map_err(|e| io_err("remove", &p, e))
        } else {
            fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))
        }
    }

    /// Copies `rel` (whose `src` metadata is `md`) to `dst`, where it does not exist.
    fn copy(&mut self, rel: &Path, md: &Metadata) -> Result<(), Error> {
        let path = rel
            .to_str()
            .ok_or_else(|| Error::NotUtf8 {
                path: rel.to_path_buf(),
            })?
            .to_string();
        let abs = format!("/{path}");
        let action = pb::FileActionCopy {
            src: abs.clone(),
            dest: abs,
            mode: -1,
            timestamp: -1,
            always_replace_existing_dest_paths: true,
            ..pb::FileActionCopy::default()
        };
        fileop::copy(self.src, self.dst, &action, None).map_err(|source| Error::Copy {
            path,
            source: Box::new(source),
        })?;
        self.stats.copied += 1;
        if is_dir(md) {
            self.note_links_below(rel)
        } else {
            self.note_links(rel, md);
            Ok(())
        }
    }

    fn note_links(&mut self, rel: &Path, md: &Metadata) {
        if md.file_type().is_file() && md.nlink() > 1 {
            self.links
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.to_path_buf());
        }
    }

    /// Notes the multiply linked files below a directory just copied as a whole (the
    /// copy linked those among themselves, not with the rest of the tree).
    fn note_links_below(&mut self, rel: &Path) -> Result<(), Error> {
        let mut pending = vec![rel.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for name in names(&self.src.join(&dir))?.into_iter().rev() {
                let child = dir.join(name);
                let md = lstat(&self.src.join(&child))?;
                if is_dir(&md) {
                    pending.push(child);
                } else {
                    self.note_links(&child, &md);
                }
            }
        }
        Ok(())
    }

    /// Sets the times of directory `rel` in `dst` from `src` when its modification time
    /// differs.
    fn fix_times(&self, rel: &Path) -> Result<(), Error> {
        let sp = self.src.join(rel);
        let dp = self.dst.join(rel);
        let (s, d) = (lstat(&sp)?, lstat(&dp)?);
        if same_mtime(&s, &d) {
            return Ok(());
        }
        let times = FileTimes::new()
            .set_accessed(s.accessed().map_err(|e| io_err("stat", &sp, e))?)
            .set_modified(s.modified().map_err(|e| io_err("stat", &sp, e))?);
        fs::File::open(&dp)
            .and_then(|f| f.set_times(times))
            .map_err(|e| io_err("set times", &dp, e))
    }

    /// Makes the paths that share an inode in `src` share one in `dst`: each becomes a
    /// link of the first one's copy unless it already is. Then the directories where
    /// links were made get their times back.
    fn relink(&mut self) -> Result<(), Error> {
        let mut groups: Vec<Vec<PathBuf>> = std::mem::take(&mut self.links)
            .into_values()
            .filter(|paths| paths.len() > 1)
            .collect();
        // Deterministic order, for messages and tests.
        groups.sort();
        let mut touched = Vec::new();
        for paths in groups {
            let Some((first, rest)) = paths.split_first() else {
                continue;
            };
            let anchor = self.dst.join(first);
            let a = lstat(&anchor)?;
            for rel in rest {
                let p = self.dst.join(rel);
                let d = lstat(&p)?;
                if (d.dev(), d.ino()) == (a.dev(), a.ino()) {
                    continue;
                }
                fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))?;
                fs::hard_link(&anchor, &p).map_err(|e| io_err("link", &p, e))?;
                self.stats.linked += 1;
                if let Some(parent) = rel.parent() {
                    touched.push(parent.to_path_buf());
                }
            }
        }
        touched.sort();
        touched.dedup();
        for dir in touched {
            self.fix_times(&dir)?;
        }
        Ok(())
    }
}
