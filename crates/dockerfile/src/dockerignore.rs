//! `.dockerignore` files: one pattern per line, `#` comments, `!` exceptions. The
//! patterns go to the client as the build context's exclude patterns, so ignored files
//! are never sent.

/// The patterns of a `.dockerignore` file, normalized as Docker does: comments and blank
/// lines dropped, surrounding space trimmed, paths cleaned and made relative to the
/// context root (`/a/../b` → `b`), `!` kept in front.
pub fn parse(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut pattern = String::new();
        if !p.is_empty() {
            pattern = patternmatcher::go_clean(p);
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
        }
        if invert {
            pattern.insert(0, '!');
        }
        out.push(pattern);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn normalizes_like_docker() {
        let text =
            "\u{feff}# comment\n\n  *.log  \n/abs/../x\n! keep.log\n./a/b/\n #not a comment\n/\n";
        assert_eq!(
            parse(text),
            ["*.log", "x", "!keep.log", "a/b", "#not a comment", "/"]
        );
    }

    #[test]
    fn crlf_lines() {
        assert_eq!(parse("a\r\nb\r\n"), ["a", "b"]);
    }
}
