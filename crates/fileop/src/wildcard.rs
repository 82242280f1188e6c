//! Wildcard sources (`COPY *.txt`, `rm dir/*`): which entries of a root a path with
//! `*`, `?` or `[...]` components names, as fsutil's `ResolveWildcards` finds them.
//!
//! The components before the first wildcard are resolved (symlinks followed inside the
//! root; the last of them only when following links). From that directory, each further
//! component is matched against the names of one directory level with Go's
//! `filepath.Match`; only real directories are descended into, never symlinks. Matches
//! come in bytewise order, depth first, as Go's `filepath.Walk` yields them.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use patternmatcher::{contains_wildcards, filepath_match};
use rustix::fs::{FileType, Mode};
use rustix::io::Errno;

use crate::error::{Error, Result, io_err};
use crate::root::{Comps, DIR_READ, Root, display, list, lstat_at};

/// The entries `comps` names. Without wildcards that is `comps` itself, unresolved (it
/// may not exist). With them, every match, relative to the root; possibly none.
pub(crate) fn expand(
    root: &Root,
    comps: &[Vec<u8>],
    follow: bool,
    action: &'static str,
) -> Result<Vec<Comps>> {
    let Some(first) = comps
        .iter()
        .position(|c| contains_wildcards(&String::from_utf8_lossy(c)))
    else {
        return Ok(vec![comps.to_vec()]);
    };
    let shown = display(comps);
    let (prefix, patterns) = comps.split_at(first);
    let patterns: Vec<String> = patterns
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    // Bad patterns are refused up front (upstream silently matches nothing).
    for p in &patterns {
        filepath_match(p, "").map_err(|source| Error::Pattern {
            action,
            which: "wildcard",
            source,
        })?;
    }
    let base = match prefix.split_last() {
        Some((last, parent)) if !follow => {
            let mut base = root
                .resolve(parent, true)
                .map_err(io_err(action, &shown, "resolve"))?;
            base.push(last.clone());
            base
        }
        _ => root
            .resolve(prefix, true)
            .map_err(io_err(action, &shown, "resolve"))?,
    };
    let dir = match root.open_at(&base, DIR_READ) {
        Ok(fd) => fd,
        // The base is a file or a symlink not followed: like Walk on it, no matches.
        Err(e) if is_errno(&e, Errno::NOTDIR) || is_errno(&e, Errno::LOOP) => {
            return Ok(Vec::new());
        }
        // A missing base is an error, as Walk reports it.
        Err(e) => return Err(io_err(action, &display(&base), "lstat")(e)),
    };
    let mut out = Vec::new();
    walk(dir.as_fd(), &base, &patterns, &mut out).map_err(io_err(
        action,
        &shown,
        "read directory",
    ))?;
    tracing::debug!(pattern = %shown, matches = out.len(), "expanded wildcard");
    Ok(out)
}

fn is_errno(e: &io::Error, errno: Errno) -> bool {
    e.raw_os_error() == Some(errno.raw_os_error())
}

/// Matches `patterns[0]` against the names in `dir` (at `at`), descending into
/// directories while patterns remain. Depth is bounded by the number of patterns.
fn walk(
    dir: BorrowedFd<'_>,
    at: &Comps,
    patterns: &[String],
    out: &mut Vec<Comps>,
) -> io::Result<()> {
    let Some((pattern, rest)) = patterns.split_first() else {
        return Ok(());
    };
    for name in list(dir)? {
        // Validated above, so an error cannot happen here; treat it as no match.
        if !filepath_match(pattern, &String::from_utf8_lossy(&name)).unwrap_or(false) {
            continue;
        }
        let mut path = at.clone();
        path.push(name.clone());
        if rest.is_empty() {
            out.push(path);
            continue;
        }
        let Some(st) = lstat_at(dir, &name)? else {
            continue;
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            continue;
        }
        let sub = rustix::fs::openat(dir, OsStr::from_bytes(&name), DIR_READ, Mode::empty())?;
        walk(sub.as_fd(), &path, rest, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::clean;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn names(v: Vec<Comps>) -> Vec<String> {
        v.iter().map(|c| display(c)).collect()
    }

    #[test]
    fn matches_per_component_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["src/a", "src/b", "src/c.d", "other"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "src/a/x.txt",
            "src/b/y.txt",
            "src/b/z.md",
            "src/top.txt",
            ".hidden.txt",
        ] {
            fs::write(r.join(f), b"").unwrap();
        }
        symlink("src", r.join("link")).unwrap();
        let root = Root::open(r).unwrap();
        let e =
            |p: &str, follow| names(expand(&root, &clean(p.as_bytes()), follow, "copy").unwrap());
        assert_eq!(e("src/*/*.txt", false), ["/src/a/x.txt", "/src/b/y.txt"]);
        assert_eq!(e("*.txt", false), ["/.hidden.txt"]);
        assert_eq!(e("src/[ab]", false), ["/src/a", "/src/b"]);
        assert_eq!(e("src/?.d", false), ["/src/c.d"]);
        assert_eq!(e("plain/path", false), ["/plain/path"]);
        // Through a symlinked directory only when following links.
        assert!(e("link/*.txt", false).is_empty());
        assert_eq!(e("link/*.txt", true), ["/src/top.txt"]);
        // Symlinks are never descended into below the wildcard.
        assert!(
            e("*/a/x.txt", false)
                .iter()
                .all(|p| !p.starts_with("/link"))
        );
        assert!(e("nomatch*", false).is_empty());
        assert!(expand(&root, &clean(b"missing/*"), false, "copy").is_err());
        let err = expand(&root, &clean(b"src/[x"), false, "copy").unwrap_err();
        assert!(err.to_string().contains("[x"), "{err}");
    }
}
