//! Heredocs: `<<EOF`, `<<-EOF` (strip leading tabs), `3<<EOF` (a file
//! descriptor), and quoted delimiters (`<<"EOF"`, `<<'EOF'`, `<<E"O"F`) that
//! turn off expansion of the body.
//!
//! The parser reads heredocs only for `RUN`, `COPY` and `ADD` in shell form.
//! Delimiters are found by lexing the whole line with quotes and escapes kept,
//! so `RUN "<<EOF"` and `RUN '<<EOF'` have none; several per line are read in
//! order, each body following the previous one's delimiter line.

use crate::shell::{EmptyEnv, Lexer, ShellError};

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter with quotes removed (`EOF` for `<<'EOF'`).
    pub name: String,
    /// The file descriptor before `<<` (`3<<EOF`), 0 if none.
    pub file_descriptor: u64,
    /// Variables in the body are expanded (no part of the delimiter was
    /// quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the delimiter line, and the
    /// instruction layer strips them from the body
    /// ([`chomp_heredoc_content`]).
    pub chomp: bool,
    /// The body, each line with its line ending, without the delimiter line.
    pub content: String,
}

/// A heredoc delimiter that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeredocError {
    /// The delimiter word is not valid shell syntax (`<<'EOF`).
    #[error("invalid heredoc delimiter: {0}")]
    Lex(#[from] ShellError),
    /// Lexing with and without quotes disagreed on the number of words.
    #[error("internal lexing of heredoc produced inconsistent results: {0}")]
    Inconsistent(String),
}

/// Go's `\s`: ASCII whitespace without `\v`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// Reads one word as a heredoc delimiter (`<<EOF`, `2<<-"EOF"`). Returns
/// `None` if the word is not a heredoc, and an error if it looks like one but
/// its quoting is broken.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, HeredocError> {
    // Upstream's `^(\d*)<<(-?)\s*([^<]*)$`.
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(is_re_space);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let file_descriptor = match &word[..digits] {
        "" => 0,
        // Go's ParseUint saturates on overflow and the error is ignored.
        d => d.parse().unwrap_or(u64::MAX),
    };

    // Lex the delimiter with and without quotes: if the counts of quote
    // characters differ, part of it was quoted and the body is literal.
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    let words = lexer.process_words(rest, &EmptyEnv)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    lexer.raw_quotes = true;
    let raw = lexer.process_words(rest, &EmptyEnv)?;
    let [raw_name] = raw.as_slice() else {
        return Err(HeredocError::Inconsistent(rest.to_string()));
    };
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        file_descriptor,
        expand: quotes(name) == quotes(raw_name),
        chomp,
        content: String::new(),
    }))
}

/// The heredoc delimiters on an instruction line, in order. A line that does
/// not lex (an unterminated quote) has none, as upstream.
pub(super) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, HeredocError> {
    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset_env = true;
    let words = lexer.process_words(line, &EmptyEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for word in &words {
        if let Some(doc) = parse_heredoc(word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Strips leading tabs from every line, as `<<-` asks.
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_like_upstream() {
        for src in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            let doc = parse_heredoc(src);
            assert_eq!(
                doc.as_ref()
                    .ok()
                    .and_then(|d| d.as_ref())
                    .map(|d| d.name.as_str()),
                Some("EOF"),
                "{src}"
            );
        }
        for src in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc(src).is_err(), "{src}");
        }
        for src in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert_eq!(parse_heredoc(src), Ok(None), "{src}");
        }
    }

    #[test]
    fn flags_of_a_delimiter() {
        let doc = |s: &str| parse_heredoc(s).ok().flatten().unwrap_or_default();
        let d = doc("3<<-'EOF'");
        assert_eq!((d.file_descriptor, d.chomp, d.expand), (3, true, false));
        let d = doc("<<E\"O\"F");
        assert_eq!((d.name.as_str(), d.expand), ("EOF", false));
        let d = doc("<<eo\\'f");
        assert_eq!((d.name.as_str(), d.expand), ("eo'f", true));
        assert_eq!(doc("99999999999999999999999<<X").file_descriptor, u64::MAX);
    }

    #[test]
    fn names_from_lines() {
        let cases: [(&str, &[&str]); 10] = [
            ("RUN <<EOF", &["EOF"]),
            ("RUN <<-EOF", &["EOF"]),
            // The line lexer keeps spaces after `<<` in the word, but not
            // after `<<-` (upstream's test passes vacuously here).
            ("RUN <<- EOF", &[]),
            ("RUN << -EOF", &["-EOF"]),
            ("RUN <<'EOF'", &["EOF"]),
            ("RUN 4<<EOF", &["EOF"]),
            ("RUN <<EOF <<EOF2", &["EOF", "EOF2"]),
            ("RUN '<<EOF'", &[]),
            ("RUN \"<<EOF\"", &[]),
            ("RUN <<EOF 'unterminated", &[]),
        ];
        for (line, names) in cases {
            let docs = heredocs_from_line(line).unwrap_or_default();
            let got: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
            assert_eq!(got, names, "{line}");
        }
    }

    #[test]
    fn chomp() {
        assert_eq!(
            chomp_heredoc_content("\thello\n\t\tworld\n  x\t\n"),
            "hello\nworld\n  x\t\n"
        );
    }
}
