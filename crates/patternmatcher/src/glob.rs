//! Go's `path/filepath.Match` syntax: parsing (with Go's validation rules) and matching
//! of one name against one glob.
//!
//! The grammar, as Go documents it:
//!
//! ```text
//! pattern:     { term }
//! term:        '*'         any sequence of non-'/' characters
//!              '?'         any single non-'/' character
//!              '[' [ '^' ] { character-range } ']'   character class (must be non-empty)
//!              c           matches character c (c != '*', '?', '\\', '[')
//!              '\\' c      matches character c
//! character-range:
//!              c           matches character c (c != '\\', '-', ']')
//!              '\\' c      matches character c
//!              lo '-' hi   matches character c for lo <= c <= hi
//! ```
//!
//! Negation is `[^...]` only (`[!...]` is a class containing `!`). A class may match
//! `/`, as in Go.

use crate::Error;

/// One element of a parsed glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// A character matched as itself.
    Literal(char),
    /// `?`: any one character but `/`.
    AnyChar,
    /// `*` (runs of stars collapse into one): any run of characters without `/`.
    Star,
    /// `[...]`.
    Class(Class),
}

/// A character class: `[a-z]`, `[^abc]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Class {
    /// `[^...]`.
    pub(crate) negated: bool,
    /// Inclusive ranges; a single character is a range of one. A range whose low end is
    /// above its high end is kept (Go accepts it; it matches nothing).
    pub(crate) ranges: Vec<(char, char)>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }

    /// The first range written high-to-low, if any.
    pub(crate) fn reversed_range(&self) -> Option<(char, char)> {
        self.ranges.iter().copied().find(|(lo, hi)| lo > hi)
    }
}

/// Parses a character class; `chars` starts right after the `[`. Returns the class and
/// how many characters it used (the closing `]` included).
pub(crate) fn parse_class(chars: &[char]) -> Result<(Class, usize), &'static str> {
    let mut i = 0;
    let negated = chars.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        match chars.get(i) {
            None => return Err("unterminated character class"),
            Some(']') if !ranges.is_empty() => return Ok((Class { negated, ranges }, i + 1)),
            _ => {}
        }
        let (lo, used) = class_char(&chars[i..])?;
        i += used;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, used) = class_char(&chars[i + 1..])?;
            hi = h;
            i += 1 + used;
        }
        ranges.push((lo, hi));
    }
}

/// One character of a class (possibly escaped), and how many pattern characters it took.
/// Something must follow it: the class is not closed yet.
fn class_char(chars: &[char]) -> Result<(char, usize), &'static str> {
    let (c, used) = match chars {
        [] => return Err("unterminated character class"),
        ['-', ..] | [']', ..] => {
            return Err("'-' and ']' must be escaped with '\\' inside a character class");
        }
        ['\\'] => return Err("unterminated character class"),
        ['\\', c, ..] => (*c, 2),
        [c, ..] => (*c, 1),
    };
    if chars.len() <= used {
        return Err("unterminated character class");
    }
    Ok((c, used))
}

/// Parses `pattern` with Go's rules; the error is the reason it is malformed.
pub(crate) fn parse(pattern: &str) -> Result<Vec<Token>, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
            }
            '?' => tokens.push(Token::AnyChar),
            '\\' => match chars.get(i) {
                Some(&next) => {
                    tokens.push(Token::Literal(next));
                    i += 1;
                }
                None => return Err("trailing '\\' escapes nothing"),
            },
            '[' => {
                let (class, used) = parse_class(&chars[i..])?;
                tokens.push(Token::Class(class));
                i += used;
            }
            c => tokens.push(Token::Literal(c)),
        }
    }
    Ok(tokens)
}

/// Whether `tokens` match all of `name`. Dynamic programming over (token, position), so
/// hostile patterns with many stars stay linear in `tokens × name`.
fn matches_tokens(tokens: &[Token], name: &[char]) -> bool {
    let n = name.len();
    // next[j]: the tokens after the current one match name[j..].
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut cur = vec![false; n + 1];
    for tok in tokens.iter().rev() {
        for j in (0..=n).rev() {
            let c = name.get(j).copied();
            cur[j] = match tok {
                Token::Star => next[j] || (c.is_some_and(|c| c != '/') && cur[j + 1]),
                Token::AnyChar => c.is_some_and(|c| c != '/') && next[j + 1],
                Token::Literal(l) => c == Some(*l) && next[j + 1],
                Token::Class(class) => c.is_some_and(|c| class.matches(c)) && next[j + 1],
            };
        }
        std::mem::swap(&mut cur, &mut next);
    }
    next[0]
}

/// Go's `filepath.Match`: whether `name` matches the shell pattern `pattern` as a whole.
/// `*` and `?` never match `/`. A malformed pattern is an error naming it, whatever the
/// name (Go reports it only for some names; we always do).
pub fn filepath_match(pattern: &str, name: &str) -> Result<bool, Error> {
    let tokens = parse(pattern).map_err(|reason| Error::BadPattern {
        pattern: pattern.to_string(),
        reason: reason.to_string(),
    })?;
    let name: Vec<char> = name.chars().collect();
    Ok(matches_tokens(&tokens, &name))
}

/// Whether `s` has an unescaped `*`, `?` or `[`, as BuildKit decides whether a copy
/// source (or a path component of one) is a wildcard. `\` escapes the next character.
pub fn contains_wildcards(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> Result<bool, Error> {
        filepath_match(p, s)
    }

    /// Cases from Go's `filepath.Match` documentation and behaviour.
    #[test]
    fn go_match_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "x", true),
            ("[!a]", "!", true),
            ("[!a]", "b", false),
            ("*x", "xxx", true),
            ("[z-a]", "m", false),
        ];
        for &(p, s, want) in cases {
            assert_eq!(m(p, s).unwrap(), want, "Match({p:?}, {s:?})");
        }
    }

    #[test]
    fn malformed_patterns_are_errors_naming_them() {
        for p in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "[^]",
        ] {
            let err = m(p, "a").unwrap_err();
            assert!(err.to_string().contains(&format!("{p:?}")), "{err}");
        }
    }

    #[test]
    fn wildcards_are_detected_unless_escaped() {
        assert!(contains_wildcards("*.txt"));
        assert!(contains_wildcards("a[bc]"));
        assert!(contains_wildcards("a?"));
        assert!(!contains_wildcards("plain/path"));
        assert!(!contains_wildcards("a\\*b"));
        assert!(!contains_wildcards("trailing\\"));
    }

    #[test]
    fn reversed_ranges_are_reported() {
        let (class, used) = parse_class(&"z-a]".chars().collect::<Vec<_>>()).unwrap();
        assert_eq!(used, 4);
        assert_eq!(class.reversed_range(), Some(('z', 'a')));
    }
}
