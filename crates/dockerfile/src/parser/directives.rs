//! Parser directives (`# syntax=`, `# escape=`, `# check=`) and the
//! line-level helpers the parse loop uses: comments, line endings and line
//! continuations.
//!
//! Directives are only read at the very top of the file: the first line that
//! is not a directive (a blank line, an ordinary comment, an unknown
//! directive, an instruction) ends them, and later `# escape=` lines are plain
//! comments.

use super::ParseErrorKind;

/// The directives upstream knows; others end the directive block and are
/// comments.
const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// One parser directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The name in lower case (`syntax`, `escape`, `check`).
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// The line it is on.
    pub line: usize,
}

/// Reads directives until the first line that is not one.
#[derive(Debug, Default)]
pub(super) struct DirectiveParser {
    done: bool,
    found: Vec<Directive>,
}

impl DirectiveParser {
    /// Looks at one line, already stripped of its line ending and leading
    /// whitespace. Returns the directive if the line is one.
    pub(super) fn parse_line(
        &mut self,
        line: &str,
        line_no: usize,
    ) -> Result<Option<Directive>, ParseErrorKind> {
        if self.done {
            return Ok(None);
        }
        let Some((key, value)) = line
            .strip_prefix('#')
            .and_then(|rest| split_directive(rest.trim_start()))
        else {
            self.done = true;
            return Ok(None);
        };
        let name = key.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.found.iter().any(|d| d.name == name) {
            return Err(ParseErrorKind::DuplicateDirective(name));
        }
        let directive = Directive {
            name,
            value: value.to_string(),
            line: line_no,
        };
        self.found.push(directive.clone());
        Ok(Some(directive))
    }

    pub(super) fn into_directives(self) -> Vec<Directive> {
        self.found
    }
}

/// Go's `\s`: ASCII whitespace without `\v`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// Matches upstream's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` and returns
/// the key and value.
fn split_directive(s: &str) -> Option<(&str, &str)> {
    let key_len = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let key = &s[..key_len];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let rest = s[key_len..]
        .trim_start_matches(is_re_space)
        .strip_prefix('=')?;
    if rest.is_empty() {
        return None;
    }
    let value = rest
        .trim_start_matches(is_re_space)
        .trim_end_matches(is_re_space);
    if !value.is_empty() {
        return Some((key, value));
    }
    // All whitespace: the regex still needs one character for `(.+?)`, and
    // backtracking leaves it the last one.
    let last = rest.chars().next_back()?;
    Some((key, &rest[rest.len() - last.len_utf8()..]))
}

/// Validates the value of `# escape=`.
pub(super) fn escape_token(value: &str) -> Result<char, ParseErrorKind> {
    match value {
        "\\" => Ok('\\'),
        "`" => Ok('`'),
        _ => Err(ParseErrorKind::InvalidEscapeToken(value.to_string())),
    }
}

/// A comment line: `#` after optional whitespace.
pub(super) fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes the line ending (all trailing `\r` and `\n`).
pub(super) fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// Strips a line-continuation escape at the end of `line`, with any spaces
/// and tabs after it. Returns the rest and whether the logical line ends
/// here. An escaped escape token (`\\`) at the end does not continue.
pub(super) fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    let Some(before) = trimmed.strip_suffix(escape) else {
        return (line, true);
    };
    if !before.is_empty() && before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directive(line: &str) -> Option<(String, String)> {
        let mut p = DirectiveParser::default();
        p.parse_line(line, 1)
            .ok()
            .flatten()
            .map(|d| (d.name, d.value))
    }

    #[test]
    fn directive_forms() {
        let d = |n: &str, v: &str| Some((n.to_string(), v.to_string()));
        assert_eq!(directive("# escape=`"), d("escape", "`"));
        assert_eq!(directive("#ESCAPE = \\ "), d("escape", "\\"));
        assert_eq!(
            directive("# syntax = docker/dockerfile:1 "),
            d("syntax", "docker/dockerfile:1")
        );
        assert_eq!(
            directive("#check=skip=all;error=true"),
            d("check", "skip=all;error=true")
        );
        assert_eq!(directive("# escape=  "), d("escape", " "));
        assert_eq!(directive("# escape="), None);
        assert_eq!(directive("# unknown=x"), None);
        assert_eq!(directive("# 1escape=x"), None);
        assert_eq!(directive("# escape x"), None);
        assert_eq!(directive("escape=x"), None);
    }

    #[test]
    fn directives_stop_at_first_other_line() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# syntax=a", 1).is_ok_and(|d| d.is_some()));
        assert!(p.parse_line("# comment", 2).is_ok_and(|d| d.is_none()));
        assert!(p.parse_line("# escape=`", 3).is_ok_and(|d| d.is_none()));
        assert_eq!(p.into_directives().len(), 1);

        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# Syntax=a", 1).is_ok());
        assert_eq!(
            p.parse_line("# SYNTAX=b", 2),
            Err(ParseErrorKind::DuplicateDirective("syntax".into()))
        );
    }

    #[test]
    fn continuation() {
        assert_eq!(trim_continuation("a \\", '\\'), ("a ", false));
        assert_eq!(trim_continuation("a\\ \t ", '\\'), ("a", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("  \\", '\\'), ("  ", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a\\\\\\", '\\'), ("a\\\\\\", true));
        assert_eq!(trim_continuation("a `", '`'), ("a ", false));
        assert_eq!(trim_continuation("a \\", '`'), ("a \\", true));
        assert_eq!(trim_continuation("é\\", '\\'), ("é", false));
    }

    #[test]
    fn escape_values() {
        assert_eq!(escape_token("`"), Ok('`'));
        assert!(escape_token("x").is_err());
    }
}
