//! Text helpers that reproduce the Go standard-library behaviour BuildKit's
//! parser relies on: Unicode character classes (`unicode.IsLetter`,
//! `unicode.IsDigit`, `unicode.IsPrint`), `strconv.Quote`, `strings.ToLower`
//! and `regexp.Split` over the `[\t\v\f\r ]+` whitespace class.
//!
//! Go's `unicode.IsSpace` is the Unicode `White_Space` property, which is what
//! [`char::is_whitespace`] and [`str::trim`] use, so those are used directly.

use std::fmt::Write as _;
use std::sync::LazyLock;

use regex::Regex;

/// Compiles a single-character general-category test. The patterns are
/// constants, so `None` only happens if the regex crate lost its Unicode
/// tables; callers then fall back to the closest `char` method.
fn category(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

static LETTER: LazyLock<Option<Regex>> = LazyLock::new(|| category(r"\A\p{L}\z"));
static DIGIT: LazyLock<Option<Regex>> = LazyLock::new(|| category(r"\A\p{Nd}\z"));
static PRINT: LazyLock<Option<Regex>> =
    LazyLock::new(|| category(r"\A[\p{L}\p{M}\p{N}\p{P}\p{S}]\z"));

fn in_category(re: &Option<Regex>, c: char, fallback: fn(char) -> bool) -> bool {
    match re {
        Some(re) => re.is_match(c.encode_utf8(&mut [0u8; 4])),
        None => fallback(c),
    }
}

/// Go's `unicode.IsLetter`: general category L.
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    in_category(&LETTER, c, char::is_alphabetic)
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(crate) fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    in_category(&DIGIT, c, char::is_numeric)
}

/// Go's `strconv.IsPrint`: categories L, M, N, P, S and the ASCII space.
pub(crate) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    in_category(&PRINT, c, |c| !c.is_control() && !c.is_whitespace())
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `fmt.Sprintf("%q", []string{...})`: `["a" "b"]`.
pub(crate) fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `strings.ToLower` (simple case mapping, rune by rune).
pub(crate) fn to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        // The only code point whose full lowercase mapping differs from the
        // simple one Go uses (Rust would give "i\u{307}").
        if c == '\u{130}' {
            out.push('i');
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The `[\t\v\f\r ]` class of upstream's `reWhitespace`.
pub(crate) fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `regexp.MustCompile("[\t\v\f\r ]+").Split(s, n)`; `n < 0` means no
/// limit.
pub(crate) fn split_whitespace_n(s: &str, n: isize) -> Vec<&str> {
    if n == 0 {
        return Vec::new();
    }
    if s.is_empty() {
        return vec![""];
    }
    // Match spans, as FindAllStringIndex(s, n) returns them.
    let mut matches: Vec<(usize, usize)> = Vec::new();
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if !is_split_space(c) {
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = iter.peek() {
            if !is_split_space(d) {
                break;
            }
            end = j + d.len_utf8();
            iter.next();
        }
        matches.push((i, end));
        if n > 0 && matches.len() as isize >= n {
            break;
        }
    }
    let mut pieces = Vec::with_capacity(matches.len() + 1);
    let (mut beg, mut end) = (0, 0);
    for (start, stop) in matches {
        if n > 0 && pieces.len() as isize == n - 1 {
            break;
        }
        end = start;
        if stop != 0 {
            pieces.push(&s[beg..end]);
        }
        beg = stop;
    }
    if end != s.len() {
        pieces.push(&s[beg..]);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote("abc"), r#""abc""#);
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            quote("\u{0}\u{7}\u{8}\t\n\u{b}\u{c}\r\u{1b}\u{7f}"),
            r#""\x00\a\b\t\n\v\f\r\x1b\x7f""#
        );
        assert_eq!(quote("♥ 한국어 é"), "\"♥ 한국어 é\"");
        assert_eq!(quote("\u{a0}\u{200b}\u{2028}"), r#""\u00a0\u200b\u2028""#);
        assert_eq!(quote("\u{e0001}"), r#""\U000e0001""#);
        assert_eq!(
            quote_list(&["--a=b".into(), "c".into()]),
            r#"["--a=b" "c"]"#
        );
    }

    #[test]
    fn classes() {
        assert!(is_letter('한'));
        assert!(is_letter('é'));
        assert!(!is_letter('Ⅻ'));
        assert!(is_digit('٣'));
        assert!(!is_digit('²'));
        assert!(!is_digit('a'));
        assert!(is_print('♥'));
        assert!(!is_print('\u{85}'));
    }

    #[test]
    fn lower() {
        assert_eq!(to_lower("RUN"), "run");
        assert_eq!(to_lower("ONBU\u{130}LD"), "onbuild");
        assert_eq!(to_lower("\u{212a}"), "k");
    }

    #[test]
    fn split_like_go() {
        assert_eq!(split_whitespace_n("a  b\tc", -1), vec!["a", "b", "c"]);
        assert_eq!(split_whitespace_n("a  b\tc", 2), vec!["a", "b\tc"]);
        assert_eq!(split_whitespace_n("abc", 2), vec!["abc"]);
        assert_eq!(split_whitespace_n("", 2), vec![""]);
        assert_eq!(split_whitespace_n(" a", -1), vec!["", "a"]);
        assert_eq!(split_whitespace_n("a ", -1), vec!["a", ""]);
        assert_eq!(split_whitespace_n("a\u{a0}b c", -1), vec!["a\u{a0}b", "c"]);
    }
}
