//! Shell patterns for `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`.
//!
//! As upstream (`convertShellPatternToRegex`), a pattern knows `*` (any
//! string; shortest or longest), `?` (one character) and the escapes `\*`,
//! `\?`, `\\`; `\}` and `\/` stand for `}` and `/`. Bracket expressions are
//! not supported: `[` and `]` match themselves. The pattern becomes a regular
//! expression with the same leftmost-first semantics as Go's RE2, so results
//! match upstream's.

use regex::Regex;

use super::ShellErrorKind;

/// Why a pattern could not be compiled.
fn invalid(pattern: &str, reason: impl Into<String>) -> ShellErrorKind {
    ShellErrorKind::InvalidPattern {
        pattern: pattern.to_string(),
        reason: reason.into(),
    }
}

/// Converts a shell pattern to a regular expression. `greedy` makes `*` match
/// the longest string; `anchored` matches at the start only.
fn to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, ShellErrorKind> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    // Go's text/scanner skips a leading byte-order mark.
    let src = pattern.strip_prefix('\u{feff}').unwrap_or(pattern);
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                // `}` and `/` had to be escaped inside ${}; the escape is not
                // part of the pattern.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(e @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(e);
                    }
                    Some(e) => return Err(invalid(pattern, format!("invalid escape '\\{e}'"))),
                    None => return Err(invalid(pattern, "invalid escape '\\' at end of pattern")),
                }
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0u8; 4]))),
        }
    }
    Regex::new(&out).map_err(|e| invalid(pattern, e.to_string()))
}

/// `${VAR#p}` / `${VAR##p}` (`op` = `#`) and `${VAR%p}` / `${VAR%%p}`
/// (`op` = `%`). `word` is the text after the first `op`; a second `op`
/// makes the match greedy.
pub(super) fn trim(word: &str, value: &str, op: char) -> Result<String, ShellErrorKind> {
    let (pattern, greedy) = match word.strip_prefix(op) {
        Some(rest) => (rest, true),
        None => (word, false),
    };
    if op == '%' {
        trim_suffix(pattern, value, greedy)
    } else {
        trim_prefix(pattern, value, greedy)
    }
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellErrorKind> {
    let re = to_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// The shortest rightmost match is found by reversing both the value and the
/// pattern and trimming a prefix.
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellErrorKind> {
    let reversed = trim_prefix(&reverse_pattern(pattern), &reverse(value), greedy)?;
    Ok(reverse(&reversed))
}

fn reverse(s: &str) -> String {
    s.chars().rev().collect()
}

/// Reverses a pattern, keeping each escape before the character it escapes:
/// `a\*c` becomes `c\*a`.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; chars.len()];
    let last = chars.len().saturating_sub(1);
    let mut i = 0;
    while i < chars.len() {
        let at = last - i;
        if chars[i] == '\\' && i != last {
            out[at - 1] = '\\';
            out[at] = chars[i + 1];
            i += 2;
        } else {
            out[at] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${VAR/p/r}` (first match) and `${VAR//p/r}` (every match). As upstream,
/// the replacement is literal for the first-match form, and for the
/// every-match form is a Go regexp template (`$0` is the match, `$$` a `$`).
pub(super) fn replace(
    pattern: &str,
    replacement: &str,
    value: &str,
    all: bool,
) -> Result<String, ShellErrorKind> {
    let re = to_regex(pattern, true, false)?;
    if !all {
        return Ok(match re.find(value) {
            Some(m) => format!(
                "{}{}{}",
                &value[..m.start()],
                replacement,
                &value[m.end()..]
            ),
            None => value.to_string(),
        });
    }
    // Go's Regexp.ReplaceAllString loop.
    let mut out = String::with_capacity(value.len());
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some(m) = re.find_at(value, search) else {
            break;
        };
        out.push_str(&value[last_end..m.start()]);
        // No replacement for an empty match right after another match.
        if m.end() > last_end || m.start() == 0 {
            expand_template(&mut out, replacement, m.as_str());
        }
        last_end = m.end();
        let width = value[search..].chars().next().map_or(1, char::len_utf8);
        search = if search + width > m.end() {
            search + width
        } else if search + 1 > m.end() {
            search + 1
        } else {
            m.end()
        };
    }
    out.push_str(&value[last_end.min(value.len())..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a pattern without groups: `$0`/`${0}` is the
/// match, `$$` is `$`, any other reference is empty, and a malformed one is
/// literal.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let name_len: usize = body
            .chars()
            .take_while(|c| crate::text::is_letter(*c) || crate::text::is_digit(*c) || *c == '_')
            .map(char::len_utf8)
            .sum();
        let name = &body[..name_len];
        let mut after = &body[name_len..];
        if name.is_empty() {
            out.push('$');
            continue;
        }
        if braced {
            match after.strip_prefix('}') {
                Some(a) => after = a,
                None => {
                    out.push('$');
                    continue;
                }
            }
        }
        if name == "0" {
            out.push_str(matched);
        }
        rest = after;
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_conversion() {
        let cases = [
            ("*", "^.*"),
            ("?", "^."),
            ("\\*", "^\\*"),
            ("a.b", "^a\\.b"),
            ("\\}x\\/", "^\\}x/"),
        ];
        for (pattern, expected) in cases {
            assert_eq!(
                to_regex(pattern, true, true).map(|r| r.to_string()),
                Ok(expected.to_string())
            );
        }
        for bad in ["\\", "\\x", "\\\\\\"] {
            assert!(to_regex(bad, true, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn reversing() {
        assert_eq!(reverse("🖖🚀👽"), "👽🚀🖖");
        let cases = [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
            ("", ""),
        ];
        for (pattern, expected) in cases {
            assert_eq!(reverse_pattern(pattern), expected, "{pattern}");
        }
    }

    #[test]
    fn trimming() {
        assert_eq!(trim("*x*y", "xxyy", '#'), Ok("y".into()));
        assert_eq!(trim("#*x", "xxyy", '#'), Ok("yy".into()));
        assert_eq!(trim("x", "xxyy", '%'), Ok("xxyy".into()));
        assert_eq!(trim("y*", "xxyy", '%'), Ok("xxy".into()));
        assert_eq!(trim("%y*", "xxyy", '%'), Ok("xx".into()));
        assert_eq!(trim("%\\**\\*", "a***yy*", '%'), Ok("a".into()));
        assert_eq!(trim("[ab]", "[ab]c", '#'), Ok("c".into()));
    }

    #[test]
    fn replacing() {
        assert_eq!(
            replace("\\*/", ".", "/foo*/*/*.txt", false),
            Ok("/foo.*/*.txt".into())
        );
        assert_eq!(
            replace("\\*/", ".", "/foo*/*/*.txt", true),
            Ok("/foo..*.txt".into())
        );
        assert_eq!(replace("", "ww", "xxyy", false), Ok("wwxxyy".into()));
        assert_eq!(replace("", "", "xxyy", true), Ok("xxyy".into()));
        assert_eq!(replace("", "-", "ab", true), Ok("-a-b-".into()));
        assert_eq!(replace("b", "<$0$$$x>", "abc", true), Ok("a<b$>c".into()));
    }
}
