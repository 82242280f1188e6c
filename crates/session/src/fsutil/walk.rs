//! Walking a directory in fsutil order with include/exclude patterns and follow paths,
//! as fsutil's `filterFS` and `FollowLinks` do.
//!
//! Order: the entries of each directory sorted by name (byte-wise), each directory
//! followed by its contents. A directory that is not itself included is still descended
//! into; it is sent (just before its first included descendant) only if something below
//! it is. A directory whose contents no pattern could select is skipped entirely.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use patternmatcher::{MatchInfo, Pattern, PatternMatcher, contains_wildcards, filepath_match};
use proto::fsutil_types::Stat;

use super::Error;
use super::path::{clean, clean_in_root, join, split};
use super::stat::{Hardlinks, stat_file};

/// Which paths a sender includes. Patterns use Docker's `.dockerignore` syntax
/// (see the `patternmatcher` crate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterOptions {
    /// When not empty, only paths matching one of these (or below a match) are sent.
    pub include_patterns: Vec<String>,
    /// Paths matching these (or below a match) are not sent; `!pattern` re-includes.
    pub exclude_patterns: Vec<String>,
    /// Paths whose symlinks are resolved (inside the root) and whose targets are added
    /// to the include patterns, so a followed link's target is sent too.
    pub follow_paths: Vec<String>,
}

/// Compiled [`FilterOptions`] for one root.
#[derive(Debug)]
pub(crate) struct Filter {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
    only_prefix_includes: bool,
    only_prefix_exclude_exceptions: bool,
}

/// Characters that make a pattern more than a plain path prefix.
const PATTERN_CHARS: &[char] = &['*', '[', ']', '?', '^', '\\'];

impl Filter {
    /// Compiles the patterns, resolving `follow_paths` against `root`.
    pub(crate) fn new(root: &Path, opts: &FilterOptions) -> Result<Filter, Error> {
        let mut includes = opts.include_patterns.clone();
        if !opts.follow_paths.is_empty() {
            if let Some(targets) = follow_links(root, &opts.follow_paths)? {
                includes.extend(targets);
                includes = dedupe_paths(&includes).unwrap_or_default();
            }
        }
        let include = if includes.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(&includes)?)
        };
        let exclude = if opts.exclude_patterns.is_empty() {
            None
        } else {
            Some(PatternMatcher::new(&opts.exclude_patterns)?)
        };
        let plain = |p: &Pattern| !without_trailing_glob(p).contains(PATTERN_CHARS);
        let only_prefix_includes = include
            .as_ref()
            .is_none_or(|m| m.patterns().iter().all(|p| p.is_exclusion() || plain(p)));
        let only_prefix_exclude_exceptions = exclude
            .as_ref()
            .is_none_or(|m| m.patterns().iter().all(|p| !p.is_exclusion() || plain(p)));
        Ok(Filter {
            include,
            exclude,
            only_prefix_includes,
            only_prefix_exclude_exceptions,
        })
    }

    /// A filter that keeps everything.
    pub(crate) fn none() -> Filter {
        Filter {
            include: None,
            exclude: None,
            only_prefix_includes: true,
            only_prefix_exclude_exceptions: true,
        }
    }
}

fn without_trailing_glob(p: &Pattern) -> &str {
    let s = p.as_str();
    let s = s.strip_suffix("/**").unwrap_or(s);
    s.strip_suffix("/*").unwrap_or(s)
}

/// Whether some pattern (of the given polarity) could match below `dir`.
fn prefix_could_match(m: &PatternMatcher, dir: &str, exclusions: bool) -> bool {
    let dir_slash = format!("{dir}/");
    m.patterns()
        .iter()
        .filter(|p| p.is_exclusion() == exclusions)
        .any(|p| format!("{}/", without_trailing_glob(p)).starts_with(&dir_slash))
}

/// What to do with one entry.
enum Decision {
    /// Send it (and descend if it is a directory).
    Keep,
    /// Do not send it, but descend if it is a directory.
    Skip,
    /// Do not send it nor anything below it.
    Prune,
}

struct DirFrame {
    rel: String,
    abs: PathBuf,
    sent: bool,
    include: MatchInfo,
    exclude: MatchInfo,
}

/// Walks `root` (which must be a directory; a symlink to one is resolved first) and
/// calls `emit` with the `Stat` of each entry to send, in fsutil order.
pub(crate) fn walk(
    root: &Path,
    filter: &Filter,
    emit: &mut dyn FnMut(Stat) -> Result<(), Error>,
) -> Result<(), Error> {
    let root = std::fs::canonicalize(root).map_err(|e| Error::io("resolve", root, e))?;
    let md = std::fs::metadata(&root).map_err(|e| Error::io("stat", &root, e))?;
    if !md.is_dir() {
        return Err(Error::io(
            "walk",
            &root,
            std::io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()),
        ));
    }
    let mut walker = Walker {
        filter,
        emit,
        links: Hardlinks::default(),
        parents: Vec::new(),
    };
    walker.walk_dir(&root, "", true)
}

struct Walker<'a> {
    filter: &'a Filter,
    emit: &'a mut dyn FnMut(Stat) -> Result<(), Error>,
    links: Hardlinks,
    parents: Vec<DirFrame>,
}

impl Walker<'_> {
    fn walk_dir(&mut self, abs: &Path, rel: &str, sent: bool) -> Result<(), Error> {
        let entries = match std::fs::read_dir(abs) {
            Ok(entries) => entries,
            // A directory that is not sent may be unreadable (upstream ignores it).
            Err(e) if !sent && e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Ok(());
            }
            Err(e) => return Err(Error::io("readdir", abs, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry.map_err(|e| Error::io("readdir", abs, e))?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let name_str = name
                .to_str()
                .ok_or_else(|| Error::invalid_path(&name.to_string_lossy(), "not UTF-8"))?;
            let child_rel = join(rel, name_str);
            let child_abs = abs.join(&name);
            let md = match std::fs::symlink_metadata(&child_abs) {
                Ok(md) => md,
                // Removed since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("lstat", &child_abs, e)),
            };
            let is_dir = md.is_dir();
            let (decision, include, exclude) = self.decide(&child_rel, is_dir);
            if let Decision::Prune = decision {
                continue;
            }
            let keep = matches!(decision, Decision::Keep);
            if keep {
                self.send_parents()?;
                let stat = stat_file(&child_abs, &child_rel, &md, &mut self.links)?;
                (self.emit)(stat)?;
            }
            if is_dir {
                self.parents.push(DirFrame {
                    rel: child_rel.clone(),
                    abs: child_abs.clone(),
                    sent: keep,
                    include,
                    exclude,
                });
                let result = self.walk_dir(&child_abs, &child_rel, keep);
                self.parents.pop();
                result?;
            }
        }
        Ok(())
    }

    fn decide(&self, rel: &str, is_dir: bool) -> (Decision, MatchInfo, MatchInfo) {
        let parent = self.parents.last();
        let mut skip = false;
        let mut include_info = MatchInfo::default();
        let mut exclude_info = MatchInfo::default();
        if let Some(m) = &self.filter.include {
            let base = parent.map(|p| p.include.clone()).unwrap_or_default();
            let (matched, info) = m.matches_with_parents(rel, &base);
            include_info = info;
            if !matched {
                if is_dir && self.filter.only_prefix_includes && !prefix_could_match(m, rel, false)
                {
                    return (Decision::Prune, include_info, exclude_info);
                }
                skip = true;
            }
        }
        if let Some(m) = &self.filter.exclude {
            let base = parent.map(|p| p.exclude.clone()).unwrap_or_default();
            let (matched, info) = m.matches_with_parents(rel, &base);
            exclude_info = info;
            if matched {
                if is_dir
                    && self.filter.only_prefix_exclude_exceptions
                    && (!m.exclusions() || !prefix_could_match(m, rel, true))
                {
                    return (Decision::Prune, include_info, exclude_info);
                }
                skip = true;
            }
        }
        let decision = if skip { Decision::Skip } else { Decision::Keep };
        (decision, include_info, exclude_info)
    }

    /// Sends the directories above the current entry that were held back because they
    /// were not included themselves.
    fn send_parents(&mut self) -> Result<(), Error> {
        for i in 0..self.parents.len() {
            if self.parents[i].sent {
                continue;
            }
            let frame = &self.parents[i];
            let md = std::fs::symlink_metadata(&frame.abs)
                .map_err(|e| Error::io("lstat", &frame.abs, e))?;
            let stat = stat_file(&frame.abs, &frame.rel, &md, &mut self.links)?;
            (self.emit)(stat)?;
            self.parents[i].sent = true;
        }
        Ok(())
    }
}

/// fsutil's `FollowLinks`: resolves the symlinks along each path (inside `root`) and
/// returns every path visited on the way, sorted and with nested ones removed. `None`
/// when one of them is the root itself (then there is nothing to filter).
fn follow_links(root: &Path, paths: &[String]) -> Result<Option<Vec<String>>, Error> {
    let mut resolved = BTreeSet::new();
    for p in paths {
        follow(root, &clean_in_root(p), &mut resolved, 0)?;
    }
    let list: Vec<String> = resolved.into_iter().collect();
    Ok(dedupe_paths(&list))
}

/// Deepest chain of symlinks followed before giving up (cycles end earlier, through
/// `resolved`; this bounds pathological but acyclic chains).
const MAX_FOLLOW_DEPTH: usize = 255;

fn follow(
    root: &Path,
    path: &str,
    resolved: &mut BTreeSet<String>,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_FOLLOW_DEPTH {
        return Err(Error::invalid_path(
            path,
            "too many levels of symbolic links",
        ));
    }
    if path.is_empty() {
        resolved.insert(".".to_string());
        return Ok(());
    }
    let mut current = String::new();
    let mut rest = path;
    loop {
        let (first, remainder) = rest.split_once('/').unwrap_or((rest, ""));
        current = join(&current, first);
        rest = remainder;
        let targets = read_symlink(root, &current, true)?;
        if (rest.is_empty() || targets.is_some()) && resolved.contains(&current) {
            return Ok(());
        }
        if let Some(targets) = targets {
            resolved.insert(current.clone());
            for target in targets {
                let next = clean_in_root(&format!("{target}/{rest}"));
                follow(root, &next, resolved, depth + 1)?;
            }
            return Ok(());
        }
        if rest.is_empty() {
            resolved.insert(current);
            return Ok(());
        }
    }
}

/// The targets (as root-relative paths) of the symlink `rel`, or of every symlink whose
/// name matches `rel`'s wildcard base name. `None` when there are none.
fn read_symlink(root: &Path, rel: &str, wildcards: bool) -> Result<Option<Vec<String>>, Error> {
    let (dir, base) = split(rel);
    if wildcards && contains_wildcards(base) {
        let entries = match std::fs::read_dir(root.join(dir)) {
            Ok(entries) => entries,
            Err(_) => return Ok(None),
        };
        let mut out = Vec::new();
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let Some(name) = name.to_str() else { continue };
            if filepath_match(base, name).unwrap_or(false) {
                if let Some(targets) = read_symlink(root, &join(dir, name), false)? {
                    out.extend(targets);
                }
            }
        }
        return Ok((!out.is_empty()).then_some(out));
    }
    let abs = root.join(rel);
    let md = match std::fs::symlink_metadata(&abs) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            return Ok(None);
        }
        Err(e) => return Err(Error::io("lstat", &abs, e)),
    };
    if !md.file_type().is_symlink() {
        return Ok(None);
    }
    let link = std::fs::read_link(&abs).map_err(|e| Error::io("readlink", &abs, e))?;
    let link = link.to_string_lossy();
    let target = if link.starts_with('/') {
        clean(&link)
    } else {
        clean(&format!("/{}", join(dir, &link)))
    };
    Ok(Some(vec![target]))
}

/// fsutil's `dedupePaths` over a list: drops paths below the previous kept one; `None`
/// if the list contains the root `.`.
fn dedupe_paths(paths: &[String]) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    for p in paths {
        if p == "." {
            return None;
        }
        if let Some(last) = out.last() {
            if p.starts_with(&format!("{last}/")) {
                continue;
            }
        }
        out.push(p.clone());
    }
    Some(out)
}
