//! One compiled pattern, and the matcher over a list of them.

use std::fmt;

use regex::Regex;

use crate::Error;
use crate::glob;
use crate::path::{go_clean, go_dir};

/// How a pattern is matched. The plain forms avoid a regex for the common cases and, as
/// upstream, decide some corner cases (`**foo` is "ends with foo").
#[derive(Clone, Debug)]
enum Kind {
    /// No special characters: the path equals the pattern.
    Exact,
    /// Plain text then a final `**`: the path starts with the text.
    Prefix(String),
    /// A leading `**` then plain text: the path ends with the text (or, when the text
    /// is `/x`, the path is `x`).
    Suffix(String),
    /// Everything else.
    Regex(Regex),
}

/// One pattern of a [`PatternMatcher`], cleaned, with its `!` taken off.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// Cleans and compiles one line. `Ok(None)` for a blank line.
    fn new(line: &str) -> Result<Option<Pattern>, Error> {
        let mut p = line.trim();
        if p.is_empty() {
            return Ok(None);
        }
        let exclusion = p.starts_with('!');
        if exclusion {
            p = p[1..].trim();
            if p.is_empty() {
                return Err(Error::IllegalExclusion);
            }
        }
        let mut text = go_clean(p);
        if text.len() > 1 && text.starts_with('/') {
            text.remove(0);
        }
        let bad = |reason: String| Error::BadPattern {
            pattern: line.trim().to_string(),
            reason,
        };
        // Go validates with filepath.Match before compiling; so do we, for the same errors.
        glob::parse(&text).map_err(|r| bad(r.to_string()))?;
        let kind = compile(&text).map_err(bad)?;
        Ok(Some(Pattern {
            text,
            exclusion,
            kind,
        }))
    }

    /// The cleaned pattern, without its `!`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern was written with a leading `!` (it re-includes).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    /// Whether the pattern matches `path` itself (parents not considered).
    pub fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix
                        .strip_prefix('/')
                        .is_some_and(|rest| !rest.is_empty() && path == rest)
            }
            Kind::Regex(re) => re.is_match(path),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exclusion {
            f.write_str("!")?;
        }
        f.write_str(&self.text)
    }
}

/// The kinds a pattern can take while it is scanned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scan {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// Compiles a cleaned, validated pattern.
fn compile(text: &str) -> Result<Kind, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut re = String::from("^");
    let mut scan = Scan::Exact;
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`: it may match no directory at all.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if scan == Scan::Exact {
                        scan = Scan::Prefix;
                    } else {
                        re.push_str(".*");
                        scan = Scan::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    scan = Scan::Regex;
                }
                if first {
                    scan = Scan::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                scan = Scan::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                scan = Scan::Regex;
            }
            '\\' => {
                // Validation refused a trailing backslash.
                if let Some(&next) = chars.get(i) {
                    i += 1;
                    re.push_str(&regex::escape(next.encode_utf8(&mut [0; 4])));
                    scan = Scan::Regex;
                }
            }
            '[' => {
                let (class, used) = glob::parse_class(&chars[i..]).map_err(str::to_string)?;
                if let Some((lo, hi)) = class.reversed_range() {
                    return Err(format!("invalid character class range {lo}-{hi}"));
                }
                i += used;
                re.push('[');
                if class.negated {
                    re.push('^');
                }
                for (lo, hi) in class.ranges {
                    push_class_char(&mut re, lo);
                    if hi != lo {
                        re.push('-');
                        push_class_char(&mut re, hi);
                    }
                }
                re.push(']');
                scan = Scan::Regex;
            }
            ']' => {
                re.push_str("\\]");
                scan = Scan::Regex;
            }
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
        first = false;
    }
    Ok(match scan {
        Scan::Exact => Kind::Exact,
        Scan::Prefix => Kind::Prefix(text[..text.len() - 2].to_string()),
        Scan::Suffix => Kind::Suffix(text[2..].to_string()),
        Scan::Regex => {
            re.push('$');
            Kind::Regex(Regex::new(&re).map_err(|e| e.to_string())?)
        }
    })
}

/// A character inside a regex class, always as an escape so nothing is special.
fn push_class_char(re: &mut String, c: char) {
    re.push_str(&format!("\\x{{{:x}}}", u32::from(c)));
}

/// What a walker remembers about a directory so its children are matched without
/// re-testing every parent: one flag per pattern, "this pattern matched the directory
/// or one of its parents". The default value means "nothing known".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A list of `.dockerignore`-style patterns; the last pattern matching a path decides.
#[derive(Clone, Debug, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles `patterns`. Each is trimmed (blank ones are dropped), a leading `!` makes
    /// it an exclusion, then it is cleaned like Go's `filepath.Clean` and a leading `/`
    /// is dropped. A malformed pattern (a bad `[` class, a trailing `\`, a lone `!`) is
    /// an error naming it.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, Error> {
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            if let Some(p) = Pattern::new(p.as_ref())? {
                out.push(p);
            }
        }
        let exclusions = out.iter().any(Pattern::is_exclusion);
        Ok(PatternMatcher {
            patterns: out,
            exclusions,
        })
    }

    /// Whether `path` (slash-separated, relative) is matched: the last pattern that
    /// matches the path or one of its parent directories decides, an exclusion (`!`)
    /// un-matching. This is upstream's `MatchesOrParentMatches`.
    pub fn matches(&self, path: &str) -> bool {
        let parents = parent_prefixes(path);
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion cannot change an already matched path, nor an exclusion an
            // unmatched one.
            if p.exclusion != matched {
                continue;
            }
            if p.matches(path) || parents.iter().any(|d| p.matches(d)) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether `path` itself is matched, ignoring its parents (upstream's `MatchesExact`).
    pub fn matches_exact(&self, path: &str) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            if p.matches(path) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// [`matches`](Self::matches) for a walker: `parent` is what this call returned for
    /// the directory containing `path` (or `MatchInfo::default()` for a path whose
    /// parents were not matched by this walker; then parents are tested as `matches`
    /// does). Returns the result and the info to pass for `path`'s children. This is
    /// upstream's `MatchesUsingParentResults`, except that it always agrees with
    /// `matches` (upstream's can differ when a pattern skipped for a directory matters
    /// for its child). An info from another matcher is ignored.
    pub fn matches_with_parents(&self, path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let known = if parent.parent_matched.len() == self.patterns.len() {
            Some(&parent.parent_matched)
        } else {
            None
        };
        let mut parents: Option<Vec<String>> = None;
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, p) in self.patterns.iter().enumerate() {
            // Every pattern is tested, even one that cannot change the result here: a
            // child may need to know that it matched this directory.
            let mut m = known.is_some_and(|k| k[i]) || p.matches(path);
            if !m && known.is_none() {
                let parents = parents.get_or_insert_with(|| parent_prefixes(path));
                m = parents.iter().any(|d| p.matches(d));
            }
            info[i] = m;
            if m && p.exclusion == matched {
                matched = !p.exclusion;
            }
        }
        (
            matched,
            MatchInfo {
                parent_matched: info,
            },
        )
    }

    /// Whether any pattern is an exclusion (`!`). A walker that finds a directory
    /// matched may skip its contents only when there are none.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// The compiled patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether there are no patterns (nothing is ever matched).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// The parent directories of `path`, outermost first, as Go computes them:
/// `filepath.Dir(path)` split at each `/` (none when the parent is `.`).
fn parent_prefixes(path: &str) -> Vec<String> {
    let parent = go_dir(path);
    if parent == "." {
        return Vec::new();
    }
    let mut out: Vec<String> = parent
        .match_indices('/')
        .map(|(i, _)| parent[..i].to_string())
        .collect();
    out.push(parent);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(p: &str) -> String {
        let p = Pattern::new(p).unwrap().unwrap();
        match p.kind {
            Kind::Exact => "exact".to_string(),
            Kind::Prefix(s) => format!("prefix {s}"),
            Kind::Suffix(s) => format!("suffix {s}"),
            Kind::Regex(re) => format!("regex {}", re.as_str()),
        }
    }

    /// The match kind (and regex) each pattern compiles to, as upstream classifies them.
    #[test]
    fn compiles_to_the_same_kinds_as_upstream() {
        let cases = [
            ("*", "regex ^[^/]*$"),
            ("file*", "regex ^file[^/]*$"),
            ("a*/b", "regex ^a[^/]*/b$"),
            ("**", "suffix "),
            ("**/**", "regex ^(.*/)?.*$"),
            ("dir/**", "prefix dir/"),
            ("**/dir", "suffix /dir"),
            ("**/dir2/*", "regex ^(.*/)?dir2/[^/]*$"),
            ("**file", "suffix file"),
            ("**/**/*.txt", "regex ^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", "regex ^a[\\x{62}-\\x{64}]e$"),
            ("a[^b]", "regex ^a[^\\x{62}]$"),
            (".*", "regex ^\\.[^/]*$"),
            ("abc.def", "exact"),
            ("abc?def", "regex ^abc[^/]def$"),
            ("a(b)c/def", "exact"),
            ("a\\*b", "regex ^a\\*b$"),
            ("a^b$", "exact"),
            ("x]", "regex ^x\\]$"),
        ];
        for (p, want) in cases {
            assert_eq!(kind(p), want, "pattern {p:?}");
        }
    }

    #[test]
    fn patterns_are_cleaned_and_unrooted() {
        let m = PatternMatcher::new(&["/a/./b/", "  !  /c//d ", "", "   ", "/"]).unwrap();
        let texts: Vec<String> = m.patterns().iter().map(|p| p.to_string()).collect();
        assert_eq!(texts, ["a/b", "!c/d", "/"]);
        assert!(m.exclusions());
        assert!(!PatternMatcher::new(&["a", "b"]).unwrap().exclusions());
    }

    #[test]
    fn bad_patterns_name_themselves() {
        assert_eq!(
            PatternMatcher::new(&["!"]).unwrap_err(),
            Error::IllegalExclusion
        );
        for bad in ["[", "a[b", "[]", "x\\", "[z-a]", "[Local-Only]/", "**/[^]"] {
            let err = PatternMatcher::new(&["ok", bad]).unwrap_err();
            let Error::BadPattern { pattern, .. } = &err else {
                panic!("{bad}: {err}")
            };
            assert_eq!(pattern, bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn match_info_of_another_matcher_is_ignored() {
        let a = PatternMatcher::new(&["x"]).unwrap();
        let b = PatternMatcher::new(&["y", "z"]).unwrap();
        let (_, info) = b.matches_with_parents("y", &MatchInfo::default());
        assert_eq!(info.parent_matched, [true, false]);
        // a has one pattern: b's info does not fit and is ignored.
        assert!(a.matches_with_parents("x/child", &info).0);
        assert!(!a.matches_with_parents("y/child", &info).0);
    }
}
