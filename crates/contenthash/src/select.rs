//! Turning a request (a path, options) into a digest over a [`Tree`].
//!
//! Without wildcard or patterns, the digest is that of the resolved path itself. With
//! them it is a *selection*, computed as upstream BuildKit does so that both give the
//! same keys: the entries under the path (or matching the wildcard) are visited in
//! sorted order, directories as their own header, and each one the include/exclude
//! patterns keep, together with the headers of directories above it, is listed with its
//! path relative to the non-wildcard prefix. The digest is that list's; a selection of
//! exactly one entry named like the request is that entry's own digest, and an empty
//! one the empty digest.

use oci::Digest;
use patternmatcher::{MatchInfo, PatternMatcher};

use crate::fs::{Fs, Kind, child};
use crate::header::{self, ListHasher};
use crate::tree::Tree;
use crate::{ChecksumOptions, Error};

/// A request, with its path cleaned as upstream does (`path.Join("/", p)`).
struct Request<'a> {
    raw: &'a str,
    /// `/a/b`, or empty for the root.
    path: String,
    /// The raw path ended in `/`: a selection then leaves out the directory's own header.
    ends_in_sep: bool,
    opts: &'a ChecksumOptions,
}

/// Go's `path.Clean("/" + p)`, with the root as the empty string.
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.iter().map(|c| format!("/{c}")).collect()
}

/// Go's `path.Base`.
fn base(p: &[u8]) -> &[u8] {
    if p.is_empty() {
        return b".";
    }
    let trimmed = match p.iter().rposition(|&b| b != b'/') {
        Some(i) => &p[..=i],
        None => return b"/",
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

/// Splits a cleaned pattern into the components before the first one with a wildcard
/// and whether any follow.
fn split_wildcards(p: &str) -> (String, bool) {
    let mut prefix = String::new();
    for c in p.split('/').filter(|c| !c.is_empty()) {
        if patternmatcher::contains_wildcards(c) {
            return (prefix, true);
        }
        prefix.push('/');
        prefix.push_str(c);
    }
    (prefix, false)
}

/// `fn` relative to `base`, as upstream computes candidates for patterns:
/// `TrimSuffix(TrimPrefix(fn+"/", base+"/"), "/")`.
fn relative(fn_: &[u8], base: &[u8]) -> String {
    let mut s = fn_.to_vec();
    s.push(b'/');
    let mut b = base.to_vec();
    b.push(b'/');
    let mut rest = s.strip_prefix(&b[..]).unwrap_or(&s[..]);
    rest = rest.strip_suffix(b"/").unwrap_or(rest);
    String::from_utf8_lossy(rest).into_owned()
}

fn is_under(fn_: &[u8], dir: &[u8]) -> bool {
    fn_.len() > dir.len() && fn_.starts_with(dir) && fn_[dir.len()] == b'/'
}

fn depth(p: &[u8]) -> usize {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty()).count()
}

/// The digest of `raw` under `opts`.
pub(crate) fn checksum(
    tree: &mut Tree,
    fs: &mut Fs<'_>,
    raw: &str,
    opts: &ChecksumOptions,
) -> Result<Digest, Error> {
    if raw.contains('\0') {
        return Err(Error::InvalidPath {
            path: raw.to_string(),
            reason: "contains a NUL byte",
        });
    }
    let req = Request {
        raw,
        path: clean(raw),
        ends_in_sep: raw.ends_with('/'),
        opts,
    };
    if !opts.wildcard && opts.include_patterns.is_empty() && opts.exclude_patterns.is_empty() {
        return match tree.resolve(fs, req.path.as_bytes(), opts.follow_links)? {
            Some(rel) => tree.digest(fs, &rel),
            None => req.missing(),
        };
    }
    Selection::new(&req)?.run(tree, fs)
}

impl Request<'_> {
    fn missing(&self) -> Result<Digest, Error> {
        if self.opts.allow_missing {
            Ok(header::empty())
        } else {
            Err(Error::NotFound {
                path: self.raw.to_string(),
            })
        }
    }
}

/// Include and exclude patterns; no patterns keep everything.
struct Filter {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
}

fn matcher(what: &'static str, patterns: &[String]) -> Result<Option<PatternMatcher>, Error> {
    if patterns.is_empty() {
        return Ok(None);
    }
    PatternMatcher::new(patterns)
        .map(Some)
        .map_err(|e| Error::BadPattern {
            what,
            patterns: patterns.to_vec(),
            reason: e.to_string(),
        })
}

/// One visited entry.
struct Item {
    /// Its path as requested (through the unresolved prefix).
    path: Vec<u8>,
    digest: Digest,
    /// A top-level symlink, to be replaced by its target's digest when following links.
    follow: bool,
    included: bool,
    include_info: MatchInfo,
    exclude_info: MatchInfo,
}

struct Selection<'a> {
    req: &'a Request<'a>,
    filter: Filter,
    items: Vec<Item>,
    /// Directory headers above the current entry (indexes into `items`).
    parents: Vec<usize>,
    /// The selected entries, in order (indexes into `items`).
    selected: Vec<usize>,
    /// With wildcards: the last match, whose descendants are selected relative to it.
    last_match: Option<Vec<u8>>,
    matched: bool,
}

impl<'a> Selection<'a> {
    fn new(req: &'a Request<'a>) -> Result<Self, Error> {
        let opts = req.opts;
        if opts.wildcard {
            // Surface a malformed wildcard even when nothing is there to match it.
            patternmatcher::filepath_match(&req.path, "").map_err(|e| Error::BadPattern {
                what: "wildcard",
                patterns: vec![req.raw.to_string()],
                reason: e.to_string(),
            })?;
        }
        Ok(Selection {
            req,
            filter: Filter {
                include: matcher("include patterns", &opts.include_patterns)?,
                exclude: matcher("exclude patterns", &opts.exclude_patterns)?,
            },
            items: Vec::new(),
            parents: Vec::new(),
            selected: Vec::new(),
            last_match: None,
            matched: !opts.wildcard || req.path.is_empty(),
        })
    }

    fn run(mut self, tree: &mut Tree, fs: &mut Fs<'_>) -> Result<Digest, Error> {
        let req = self.req;
        let (prefix, start) = if req.opts.wildcard {
            let (prefix, more) = split_wildcards(&req.path);
            let start = tree.resolve(fs, prefix.as_bytes(), more)?;
            (prefix, start)
        } else {
            (
                req.path.clone(),
                tree.resolve(fs, req.path.as_bytes(), false)?,
            )
        };
        let Some(start) = start else {
            return req.missing();
        };
        self.walk(tree, fs, start, prefix.as_bytes())?;

        for &i in &self.selected {
            if self.items[i].follow {
                let path = self.items[i].path.clone();
                self.items[i].digest = match tree.resolve(fs, &path, true)? {
                    Some(rel) => tree.digest(fs, &rel)?,
                    None => {
                        return Err(Error::NotFound {
                            path: String::from_utf8_lossy(&path).into_owned(),
                        });
                    }
                };
            }
        }
        if self.selected.is_empty() {
            return if self.matched {
                Ok(header::empty())
            } else {
                req.missing()
            };
        }
        if let [only] = self.selected[..] {
            let item = &self.items[only];
            if base(req.path.as_bytes()) == base(&item.path) {
                return Ok(item.digest);
            }
        }
        let mut list = ListHasher::default();
        for &i in &self.selected {
            let item = &self.items[i];
            let rel = item
                .path
                .strip_prefix(prefix.as_bytes())
                .unwrap_or(&item.path);
            let mut key: Vec<u8> = rel.iter().map(|&b| if b == b'/' { 0 } else { b }).collect();
            if key.is_empty() {
                key.push(0);
            }
            list.add(&key, &item.digest);
        }
        Ok(list.finish())
    }

    /// Visits `start` (requested as `path`) and everything below it, depth first, each
    /// directory's entries sorted.
    fn walk(
        &mut self,
        tree: &mut Tree,
        fs: &mut Fs<'_>,
        start: Vec<u8>,
        path: &[u8],
    ) -> Result<(), Error> {
        struct Frame {
            rel: Vec<u8>,
            path: Vec<u8>,
            names: Vec<Vec<u8>>,
            next: usize,
        }
        if tree.kind(&start) != Some(&Kind::Dir) {
            self.visit(tree, fs, &start, path, false)?;
            return Ok(());
        }
        let mut stack = Vec::new();
        if self.visit(tree, fs, &start, path, true)? {
            let names = tree.list(fs, &start)?.names;
            stack.push(Frame {
                rel: start,
                path: path.to_vec(),
                names,
                next: 0,
            });
        }
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.get(top.next) else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let rel = child(&top.rel, name);
            let mut path = top.path.clone();
            path.push(b'/');
            path.extend_from_slice(name);
            let is_dir = tree.kind(&rel) == Some(&Kind::Dir);
            if self.visit(tree, fs, &rel, &path, is_dir)? && is_dir {
                let names = tree.list(fs, &rel)?.names;
                stack.push(Frame {
                    rel,
                    path,
                    names,
                    next: 0,
                });
            }
        }
        Ok(())
    }

    /// Decides about one entry (a directory as its header); returns whether to descend.
    fn visit(
        &mut self,
        tree: &mut Tree,
        fs: &mut Fs<'_>,
        rel: &[u8],
        path: &[u8],
        is_dir: bool,
    ) -> Result<bool, Error> {
        let req = self.req;
        while let Some(&top) = self.parents.last() {
            if is_under(path, &self.items[top].path) {
                break;
            }
            self.parents.pop();
        }
        if is_dir && req.ends_in_sep && path == req.path.as_bytes() {
            return Ok(true);
        }
        let parent = self.parents.last().copied();

        let base: Vec<u8> = if req.opts.wildcard {
            let fresh = self.last_match.as_ref().is_none_or(|m| !is_under(path, m));
            if !req.path.is_empty() && fresh {
                let name = String::from_utf8_lossy(path);
                let hit = patternmatcher::filepath_match(&req.path, &name).unwrap_or(false);
                if !hit {
                    // `*` and `?` never match `/`: nothing deeper than the pattern can.
                    return Ok(depth(path) < depth(req.path.as_bytes()));
                }
                self.matched = true;
                self.last_match = Some(path.to_vec());
            }
            self.last_match.clone().unwrap_or_default()
        } else {
            req.path.clone().into_bytes()
        };
        let candidate = relative(path, &base);

        // A parent's match results carry over only to its direct entries.
        let direct = parent.filter(|&p| {
            let pp = &self.items[p].path;
            path.len() > pp.len() && !path[pp.len() + 1..].contains(&b'/')
        });
        let none = MatchInfo::default();
        let (inc_parent, exc_parent) = match direct {
            Some(p) => (&self.items[p].include_info, &self.items[p].exclude_info),
            None => (&none, &none),
        };
        let (mut keep, mut include_info, mut exclude_info) = (true, none.clone(), none.clone());
        if let Some(m) = &self.filter.include {
            let (hit, info) = m.matches_with_parents(&candidate, inc_parent);
            keep = hit;
            include_info = info;
        }
        if keep {
            if let Some(m) = &self.filter.exclude {
                let (hit, info) = m.matches_with_parents(&candidate, exc_parent);
                keep = !hit;
                exclude_info = info;
            }
        }
        if !keep && !is_dir {
            return Ok(true);
        }

        let digest = tree.entry_digest(fs, rel)?;
        let follow = parent.is_none()
            && req.opts.follow_links
            && matches!(tree.kind(rel), Some(Kind::Symlink(_)));
        let idx = self.items.len();
        self.items.push(Item {
            path: path.to_vec(),
            digest,
            follow,
            included: false,
            include_info,
            exclude_info,
        });
        if keep {
            for &p in &self.parents {
                if !self.items[p].included {
                    self.items[p].included = true;
                    self.selected.push(p);
                }
            }
            self.items[idx].included = true;
            self.selected.push(idx);
        }
        if is_dir {
            self.parents.push(idx);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_follows_go() {
        assert_eq!(clean(""), "");
        assert_eq!(clean("/"), "");
        assert_eq!(clean("a/./b/"), "/a/b");
        assert_eq!(clean("../../a/../b"), "/b");
        assert_eq!(clean("//a//b"), "/a/b");
    }

    #[test]
    fn base_follows_go() {
        assert_eq!(base(b""), b".");
        assert_eq!(base(b"/"), b"/");
        assert_eq!(base(b"/a/b"), b"b");
        assert_eq!(base(b"a/b//"), b"b");
        assert_eq!(base(b"f*o"), b"f*o");
    }

    #[test]
    fn wildcard_prefix_stops_at_first_wildcard() {
        assert_eq!(split_wildcards("/x/d?/def"), ("/x".to_string(), true));
        assert_eq!(split_wildcards("/f*"), (String::new(), true));
        assert_eq!(split_wildcards("/a/b"), ("/a/b".to_string(), false));
        assert_eq!(split_wildcards("/a\\*b/c"), ("/a\\*b/c".to_string(), false));
        assert_eq!(split_wildcards(""), (String::new(), false));
    }

    #[test]
    fn candidates_are_relative() {
        assert_eq!(relative(b"/a/b/c", b"/a"), "b/c");
        assert_eq!(relative(b"/a", b"/a"), "");
        assert_eq!(relative(b"/a/b", b""), "a/b");
        assert_eq!(relative(b"", b""), "");
        assert!(is_under(b"/a/b", b"/a"));
        assert!(!is_under(b"/ab", b"/a"));
        assert!(is_under(b"/a", b""));
        assert_eq!(depth(b"/x/d?"), 2);
    }
}
