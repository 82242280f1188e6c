//! Reading `.dockerignore` files.

use crate::path::go_clean;

/// The patterns of a `.dockerignore` file, as the Docker CLI and BuildKit's frontend
/// read them: a UTF-8 byte order mark at the start is dropped, lines starting with `#`
/// are comments, every line is trimmed and blank ones dropped, a leading `!` is kept
/// (and the rest trimmed), the pattern is cleaned like Go's `filepath.Clean` and a
/// leading `/` removed. The result goes to [`PatternMatcher::new`](crate::PatternMatcher::new).
pub fn parse_dockerignore(content: &str) -> Vec<String> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut out = Vec::new();
    for line in content.lines() {
        // Comments are recognised before trimming: " # x" is a pattern.
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = go_clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push(cleaned);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_docker_cli() {
        let file = "\u{feff}# comment\n\
                    node_modules\n\
                    \n\
                    \t  /dist/  \r\n\
                    !  /dist/keep.txt\n\
                    ./a/../b//c/.\n\
                    \x20# not a comment\n\
                    !\n\
                    /\n";
        assert_eq!(
            parse_dockerignore(file),
            [
                "node_modules",
                "dist",
                "!dist/keep.txt",
                "b/c",
                "# not a comment",
                "!",
                "/",
            ]
        );
    }

    #[test]
    fn bom_only_counts_at_the_start() {
        assert_eq!(parse_dockerignore("a\n\u{feff}b"), ["a", "\u{feff}b"]);
        assert!(parse_dockerignore("").is_empty());
    }
}
