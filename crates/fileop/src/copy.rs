//! The copy action: which sources (wildcards), where each lands (the destination rules
//! of fsutil's `Copy`), then one [`Tree`] copy per source, or an archive unpacked.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use patternmatcher::PatternMatcher;
use proto::pb;
use rustix::fs::{FileType, Timespec};
use rustix::io::Errno;

use crate::Owner;
use crate::error::{Error, Result, io_err};
use crate::meta::{self, Attrs, timestamp};
use crate::mode::ModeSet;
use crate::root::{Comps, Root, clean, display};
use crate::tree::Tree;
use crate::{unpack, wildcard};

/// What a copy did, for progress reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyStats {
    /// Non-directory entries written (files, links, symlinks, devices), or tar entries
    /// read from unpacked archives.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

impl std::ops::AddAssign for CopyStats {
    fn add_assign(&mut self, other: CopyStats) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.bytes += other.bytes;
    }
}

/// A copy action's options, parsed once.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) owner: Option<Owner>,
    /// `mode` when set (and no `modeStr`): permission, set-id and sticky bits.
    mode: Option<u32>,
    mode_set: Option<ModeSet>,
    pub(crate) time: Option<Timespec>,
    pub(crate) include: Option<PatternMatcher>,
    pub(crate) exclude: Option<PatternMatcher>,
    pub(crate) always_replace: bool,
}

impl Options {
    fn new(a: &pb::FileActionCopy, owner: Option<Owner>) -> Result<Options> {
        let mode_set = if a.mode_str.is_empty() {
            None
        } else {
            let set = ModeSet::parse(&a.mode_str).map_err(|reason| Error::Mode {
                mode: a.mode_str.clone(),
                reason,
            })?;
            Some(set)
        };
        let mode = (mode_set.is_none() && a.mode != -1).then_some(a.mode as u32 & 0o7777);
        let patterns = |list: &[String], which| -> Result<Option<PatternMatcher>> {
            if list.is_empty() {
                return Ok(None);
            }
            let pm = PatternMatcher::new(list).map_err(|source| Error::Pattern {
                action: "copy",
                which,
                source,
            })?;
            Ok(Some(pm))
        };
        Ok(Options {
            owner,
            mode,
            mode_set,
            time: timestamp(a.timestamp),
            include: patterns(&a.include_patterns, "include")?,
            exclude: patterns(&a.exclude_patterns, "exclude")?,
            always_replace: a.always_replace_existing_dest_paths,
        })
    }

    /// The permission bits a copied entry gets, from its source mode.
    pub(crate) fn mode_for(&self, st_mode: u32, is_dir: bool) -> u32 {
        match (&self.mode_set, self.mode) {
            (Some(set), _) => set.apply(st_mode, is_dir),
            (None, Some(mode)) => mode,
            (None, None) => st_mode & 0o7777,
        }
    }

    /// Attributes of destination directories created on the way: `mode`'s permission
    /// bits (else 0755), the action's owner and timestamp.
    fn dir_attrs(&self) -> Attrs {
        Attrs {
            mode: self.mode.map_or(0o755, |m| m & 0o777),
            owner: self.owner,
            time: self.time,
        }
    }
}

/// Copies `a.src` from the tree at `src_root` to `a.dest` in the tree at `dest_root`,
/// with BuildKit's semantics. Both paths are resolved inside their roots.
///
/// Sources: `src` itself, or with `allowWildcard` every entry it matches (per path
/// component, Go `filepath.Match`); no match is an error unless `allowEmptyWildcard`.
/// With `followSymlink` a source that is a symlink is resolved (inside the root), else
/// copied as a symlink.
///
/// Destination: missing parents of `dest` are created (0755, or `mode`'s bits; with the
/// owner and timestamp); without `createDestPath` the parent of `dest` must exist. A
/// `dest` ending in `/` is a directory, created if needed. A source lands *in* `dest`
/// (as `dest/<name>`) when `dest` is an existing directory, except a directory source
/// with `dirCopyContents`, whose contents are merged into `dest` (then created if
/// missing). A source ending in `/.` always copies its contents.
///
/// Each entry keeps its source owner, mode, times and xattrs unless `owner`, `mode` /
/// `modeStr` (chmod syntax, `X` rule included) or `timestamp` override them.
/// `include_patterns`/`exclude_patterns` filter entries by their path relative to the
/// source (patternmatcher semantics). An existing destination of another type is an
/// error unless `alwaysReplaceExistingDestPaths`. With `attemptUnpackDockerCompatibility`
/// a source that is a tar (plain, gzip or zstd) is extracted into `dest` instead.
pub fn copy(
    src_root: &Path,
    dest_root: &Path,
    a: &pb::FileActionCopy,
    owner: Option<Owner>,
) -> Result<CopyStats> {
    let src_comps = clean(a.src.as_bytes());
    let src_shown = display(&src_comps);
    let dest_comps = clean(a.dest.as_bytes());
    let dest_shown = display(&dest_comps);
    let src = Root::open(src_root).map_err(io_err("copy", &src_shown, "open source root"))?;
    let dst =
        Root::open(dest_root).map_err(io_err("copy", &dest_shown, "open destination root"))?;
    let opts = Options::new(a, owner)?;

    for required in &a.required_paths {
        let comps = clean(required.as_bytes());
        let found = match comps.split_last() {
            None => true,
            Some((last, parent)) => src
                .resolve(parent, true)
                .and_then(|mut p| {
                    p.push(last.clone());
                    src.lstat(&p)
                })
                .is_ok_and(|st| st.is_some()),
        };
        if !found {
            return Err(Error::RequiredPath {
                src: src_shown,
                path: required.clone(),
            });
        }
    }

    if !a.create_dest_path {
        let full = dst.resolve(&dest_comps, true).map_err(io_err(
            "copy",
            &dest_shown,
            "resolve destination",
        ))?;
        if let Some((_, parent)) = full.split_last() {
            dst.open_dir(parent)
                .map_err(io_err("copy", &dest_shown, "stat destination parent"))?;
        }
    }

    let sources = if a.allow_wildcard {
        wildcard::expand(&src, &src_comps, a.follow_symlink, "copy")?
    } else {
        vec![src_comps.clone()]
    };
    if sources.is_empty() {
        if a.allow_empty_wildcard {
            return Ok(CopyStats::default());
        }
        return Err(Error::NoMatch { src: src_shown });
    }
    let expanded = a.allow_wildcard && sources != [src_comps.clone()];

    let mut stats = CopyStats::default();
    let mut created: Vec<Comps> = Vec::new();
    let mut dest_ready = false;
    for s in &sources {
        let shown = display(s);
        if a.attempt_unpack_docker_compatibility {
            if let Some(st) =
                unpack::try_unpack(&src, s, &dst, &dest_comps, &opts, &shown, &mut created)?
            {
                stats += st;
                continue;
            }
        }
        if !dest_ready {
            // `dest/` (or `dest/.`) is a directory to create; otherwise its parent.
            let dir_hint = a.dest.ends_with('/') || a.dest.ends_with("/.");
            let ensure = match dest_comps.split_last() {
                Some((_, parent)) if !dir_hint => parent,
                _ => &dest_comps[..],
            };
            let ensure = dst.resolve(ensure, true).map_err(io_err(
                "copy",
                &dest_shown,
                "resolve destination",
            ))?;
            created.extend(dst.mkdir_all(&ensure, &opts.dir_attrs()).map_err(io_err(
                "copy",
                &dest_shown,
                "mkdir",
            ))?);
            dest_ready = true;
        }
        // The name a source gets inside a destination directory; `src/.` has none (its
        // contents go straight in), as `cp -a src/. dest` does.
        let base = if !expanded && (a.src.ends_with("/.") || a.src == ".") {
            None
        } else {
            s.last().cloned()
        };
        let one = One {
            src: &src,
            dst: &dst,
            a,
            opts: &opts,
            dest_comps: &dest_comps,
            dest_shown: &dest_shown,
        };
        stats += one.copy(s, base, &shown, &mut created)?;
    }
    if let Some(t) = opts.time {
        // Directories created on the way were modified after their times were set.
        for dir in created.iter().rev() {
            let e = dst
                .entry(dir)
                .map_err(io_err("copy", &display(dir), "open"))?;
            meta::set_times(e.dir.as_fd(), &e.name, t, t).map_err(io_err(
                "copy",
                &display(dir),
                "utimes",
            ))?;
        }
    }
    tracing::debug!(
        src = %src_shown, dest = %dest_shown, sources = sources.len(),
        files = stats.files, bytes = stats.bytes, "copied"
    );
    Ok(stats)
}

/// One source of a copy.
struct One<'a> {
    src: &'a Root,
    dst: &'a Root,
    a: &'a pb::FileActionCopy,
    opts: &'a Options,
    dest_comps: &'a Comps,
    dest_shown: &'a str,
}

impl One<'_> {
    fn copy(
        &self,
        s: &Comps,
        base: Option<Vec<u8>>,
        shown: &str,
        created: &mut Vec<Comps>,
    ) -> Result<CopyStats> {
        let (src, dst, a) = (self.src, self.dst, self.a);
        let resolved = match s.split_last() {
            Some((last, parent)) if !a.follow_symlink => src.resolve(parent, true).map(|mut p| {
                p.push(last.clone());
                p
            }),
            _ => src.resolve(s, true),
        }
        .map_err(io_err("copy", shown, "lstat"))?;
        let entry = src
            .entry(&resolved)
            .map_err(io_err("copy", shown, "lstat"))?;
        let st = entry
            .lstat()
            .and_then(|st| st.ok_or_else(|| Errno::NOENT.into()))
            .map_err(io_err("copy", shown, "lstat"))?;
        let src_is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;

        let dest = dst.resolve(self.dest_comps, true).map_err(io_err(
            "copy",
            self.dest_shown,
            "resolve destination",
        ))?;
        let dest_st =
            dst.lstat(&dest)
                .map_err(io_err("copy", self.dest_shown, "lstat destination"))?;
        let dest_is_dir =
            dest_st.is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        let into = (src_is_dir && !a.dir_copy_contents && dest_st.is_some())
            || (!src_is_dir && dest_is_dir);
        let mut dest_path = dest;
        if into {
            dest_path.extend(base);
        }
        // The directory the copy is made in must exist.
        let parent = if src_is_dir && a.dir_copy_contents && dest_st.is_none() {
            &dest_path[..]
        } else {
            dest_path.split_last().map_or(&dest_path[..], |(_, p)| p)
        };
        let dest_shown = display(&dest_path);
        created.extend(
            dst.mkdir_all(parent, &self.opts.dir_attrs())
                .map_err(io_err("copy", &dest_shown, "mkdir"))?,
        );
        let dst_entry =
            dst.entry(&dest_path)
                .map_err(io_err("copy", &dest_shown, "open destination"))?;
        let mut stats = CopyStats::default();
        let mut tree = Tree {
            opts: self.opts,
            dest_root: dst,
            stats: &mut stats,
            shown: shown.to_string(),
            links: HashMap::new(),
        };
        tree.copy(&entry, &st, &dst_entry, dest_path)?;
        Ok(stats)
    }
}
