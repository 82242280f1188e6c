//! Slash-separated paths with Go's semantics: fsutil's `ComparePath` order,
//! `path.Clean`, and the checks a receiver applies to every received path
//! ([`Validator`]).

use std::cmp::Ordering;
use std::collections::HashSet;

use proto::fsutil_types::Stat;

use super::Error;
use super::mode::{is_dir, is_symlink};

/// fsutil's `ComparePath`: byte-wise, except that `/` sorts before every other byte, so
/// that a directory's contents come right after it (`a`, `a/b`, `a.txt`).
pub(crate) fn compare_path(a: &str, b: &str) -> Ordering {
    for (&x, &y) in a.as_bytes().iter().zip(b.as_bytes()) {
        if x == y {
            continue;
        }
        return match (x, y) {
            (b'/', _) => Ordering::Less,
            (_, b'/') => Ordering::Greater,
            _ => x.cmp(&y),
        };
    }
    a.len().cmp(&b.len())
}

/// Checks that `p` is a clean relative path inside the root: not empty, not absolute,
/// no empty, `.` or `..` component, no NUL. Returns the reason it is not.
pub(crate) fn check_relative(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty path");
    }
    if p.starts_with('/') {
        return Err("absolute path");
    }
    if p.contains('\0') {
        return Err("NUL byte in path");
    }
    for comp in p.split('/') {
        match comp {
            "" => return Err("unclean path"),
            "." => return Err("unclean path"),
            ".." => return Err("path escapes the root"),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a clean relative path into its parent (`""` for the root) and base name.
pub(crate) fn split(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

/// Joins a parent (`""` for the root) and a name.
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Go's `path.Clean` (shared with the pattern matcher, which is defined with it).
pub(crate) fn clean(path: &str) -> String {
    patternmatcher::go_clean(path)
}

/// A path cleaned as if it were rooted at the transfer root: `..` cannot climb out, a
/// leading `/` means the root. The result is relative, `""` for the root itself.
pub(crate) fn clean_in_root(path: &str) -> String {
    clean(&format!("/{path}"))
        .trim_start_matches('/')
        .to_string()
}

/// A directory open in the validator: its path and the last name accepted in it.
#[derive(Debug)]
struct Parent {
    dir: String,
    last: String,
}

/// Validates the STAT sequence of one transfer (fsutil's `Validator` and `Hardlinks`):
/// each path is clean and relative, entries come in fsutil order with every parent
/// directory sent first, and hard links point at regular files already sent.
///
/// Together these mean that a path's parents were all received as directories in this
/// transfer, so a symlink received earlier can never be a parent of a later path.
#[derive(Debug)]
pub(crate) struct Validator {
    parents: Vec<Parent>,
    files: HashSet<String>,
}

impl Default for Validator {
    fn default() -> Self {
        Validator {
            parents: vec![Parent {
                dir: String::new(),
                last: String::new(),
            }],
            files: HashSet::new(),
        }
    }
}

fn is_ancestor_or_self(ancestor: &str, dir: &str) -> bool {
    ancestor.is_empty()
        || dir == ancestor
        || (dir.starts_with(ancestor) && dir.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

impl Validator {
    /// Accepts the next STAT or says why it cannot be applied.
    pub(crate) fn check(&mut self, stat: &Stat) -> Result<(), Error> {
        let path = stat.path.as_str();
        check_relative(path).map_err(|reason| Error::invalid_path(path, reason))?;
        let (dir, base) = split(path);
        while self.parents.len() > 1 {
            let top = &self.parents[self.parents.len() - 1];
            if is_ancestor_or_self(&top.dir, dir) {
                break;
            }
            self.parents.pop();
        }
        let Some(top) = self.parents.last_mut() else {
            return Err(Error::Internal("validator lost its root".into()));
        };
        if top.dir != dir || top.last.as_str() >= base {
            return Err(Error::OutOfOrder {
                path: path.to_string(),
                previous: join(&top.dir, &top.last),
            });
        }
        top.last = base.to_string();
        if is_dir(stat.mode) {
            self.parents.push(Parent {
                dir: path.to_string(),
                last: String::new(),
            });
        } else if !is_symlink(stat.mode) {
            if stat.linkname.is_empty() {
                self.files.insert(path.to_string());
            } else if !self.files.contains(&stat.linkname) {
                return Err(Error::InvalidLink {
                    path: path.to_string(),
                    target: stat.linkname.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_sorts_first() {
        assert_eq!(compare_path("a", "a/b"), Ordering::Less);
        assert_eq!(compare_path("a/b", "a.txt"), Ordering::Less);
        assert_eq!(compare_path("a.txt", "a/b"), Ordering::Greater);
        assert_eq!(compare_path("a/b", "a/b"), Ordering::Equal);
        assert_eq!(compare_path("b", "a/z"), Ordering::Greater);
        let mut v = vec!["a.txt", "a/b", "a", "a-b", "a/b/c", "ab"];
        v.sort_by(|x, y| compare_path(x, y));
        assert_eq!(v, ["a", "a/b", "a/b/c", "a-b", "a.txt", "ab"]);
    }

    #[test]
    fn relative_checks() {
        assert!(check_relative("a/b").is_ok());
        assert!(check_relative("..a").is_ok());
        assert_eq!(check_relative("../x"), Err("path escapes the root"));
        assert_eq!(check_relative("a/../../x"), Err("path escapes the root"));
        assert_eq!(check_relative("/abs"), Err("absolute path"));
        assert_eq!(check_relative("a//b"), Err("unclean path"));
        assert_eq!(check_relative("a/./b"), Err("unclean path"));
        assert_eq!(check_relative("a/"), Err("unclean path"));
        assert_eq!(check_relative("."), Err("unclean path"));
        assert_eq!(check_relative(""), Err("empty path"));
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("a/./b/../c/"), "a/c");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean(""), ".");
        assert_eq!(clean_in_root("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean_in_root("/"), "");
        assert_eq!(clean_in_root("."), "");
        assert_eq!(split("a/b/c"), ("a/b", "c"));
        assert_eq!(split("c"), ("", "c"));
        assert_eq!(join("", "c"), "c");
    }

    mod validator {
        use super::super::*;
        use crate::fsutil::mode::{MODE_DIR, MODE_SYMLINK};

        fn st(path: &str, mode: u32) -> Stat {
            Stat {
                path: path.into(),
                mode,
                ..Stat::default()
            }
        }

        fn run(stats: &[Stat]) -> Result<(), Error> {
            let mut v = Validator::default();
            stats.iter().try_for_each(|s| v.check(s))
        }

        #[test]
        fn accepts_fsutil_order() {
            run(&[
                st("a", MODE_DIR),
                st("a/b", MODE_DIR),
                st("a/b/c", 0o644),
                st("a/d", 0o644),
                st("a.txt", 0o644),
                st("b", MODE_SYMLINK),
            ])
            .unwrap();
        }

        #[test]
        fn rejects_disorder_and_missing_parents() {
            assert!(matches!(
                run(&[st("b", 0o644), st("a", 0o644)]),
                Err(Error::OutOfOrder { .. })
            ));
            assert!(matches!(
                run(&[st("a", 0o644), st("a", 0o644)]),
                Err(Error::OutOfOrder { .. })
            ));
            assert!(matches!(
                run(&[st("x/y", 0o644)]),
                Err(Error::OutOfOrder { .. })
            ));
            // A file (or a symlink) is never a parent.
            assert!(matches!(
                run(&[st("l", MODE_SYMLINK), st("l/f", 0o644)]),
                Err(Error::OutOfOrder { .. })
            ));
            // Leaving a directory closes it.
            assert!(matches!(
                run(&[
                    st("a", MODE_DIR),
                    st("a/b", MODE_DIR),
                    st("a/c", 0o644),
                    st("a/b/z", 0o644)
                ]),
                Err(Error::OutOfOrder { .. })
            ));
        }

        #[test]
        fn rejects_escaping_paths() {
            for p in ["../x", "/abs", "a/../../x", "a//b", ".", ""] {
                assert!(
                    matches!(run(&[st(p, 0o644)]), Err(Error::InvalidPath { .. })),
                    "{p:?}"
                );
            }
        }

        #[test]
        fn hard_links_need_a_known_target() {
            let mut link = st("b", 0o644);
            link.linkname = "a".into();
            run(&[st("a", 0o644), link.clone()]).unwrap();
            assert!(matches!(run(&[link]), Err(Error::InvalidLink { .. })));
            let mut to_dir = st("b", 0o644);
            to_dir.linkname = "a".into();
            assert!(matches!(
                run(&[st("a", MODE_DIR), to_dir]),
                Err(Error::InvalidLink { .. })
            ));
        }
    }
}
