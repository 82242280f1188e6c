//! The expansion engine: one pass over a word, character by character, as
//! upstream's `shellWord` does it.

use std::collections::BTreeSet;

use super::{Env, Expansion, Lexer, ShellErrorKind, pattern};

/// How deeply `${...}` substitutions may nest inside each other. Upstream has
/// no limit (Go stacks grow); a bound keeps hostile input from exhausting
/// ours.
pub(super) const MAX_NESTING: usize = 200;

/// Expands `src` (without a leading byte-order mark).
pub(super) fn expand(lexer: &Lexer, src: &str, env: &dyn Env) -> Result<Expansion, ShellErrorKind> {
    let mut w = Word {
        lexer,
        src,
        pos: 0,
        env,
        raw_escapes: lexer.raw_escapes,
        depth: 0,
        matched: BTreeSet::new(),
        unmatched: BTreeSet::new(),
    };
    let (result, words) = w.process_until(None, lexer.raw_escapes)?;
    Ok(Expansion {
        result,
        words,
        matched: w.matched,
        unmatched: w.unmatched,
    })
}

/// Accumulates words: whitespace from expansions splits, raw text does not.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

/// The state of one expansion.
struct Word<'a> {
    lexer: &'a Lexer,
    src: &'a str,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Step<T> = Result<T, ShellErrorKind>;

impl Word<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    /// Processes until `stop` (consumed) or the end of input; returns the
    /// expanded text and its words. `raw_escapes` applies inside this call
    /// only.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let res = self.process_until_inner(stop);
        self.raw_escapes = saved;
        res
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '\'' if quotes => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if quotes => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.next();
                    if c == self.lexer.escape_token {
                        if self.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        // The escape token escapes the next character; at the
                        // end of input it is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(ShellErrorKind::Unterminated(stop));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Step<String> {
        // Everything up to the next ' is literal; ' cannot be escaped.
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(ShellErrorKind::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Step<String> {
        // Literal except for $ and the escape token, which escapes only
        // ", $ and itself.
        let mut out = String::new();
        let open = self.next();
        if self.lexer.raw_quotes {
            out.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(ShellErrorKind::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    out.push_str(&value);
                }
                Some(c) => {
                    self.next();
                    let mut c = c;
                    if c == self.lexer.escape_token {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lexer.escape_token => {
                                self.next();
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        // Whitespace between << and the delimiter stays part of the word.
        let mut out = "<<".to_string();
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.next();
        }
        out
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && crate::text::is_digit(c) {
                // Positional parameter: all the digits.
                while let Some(d) = self.peek().filter(|d| crate::text::is_digit(*d)) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !crate::text::is_letter(c) && !crate::text::is_digit(c) && c != '_' {
                break;
            }
            name.push(c);
            self.next();
        }
        name
    }

    fn process_dollar(&mut self) -> Step<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ShellErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellErrorKind::BadSubstitution),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ShellErrorKind::TooDeep(MAX_NESTING));
        }
        self.depth += 1;
        let res = self.process_braced();
        self.depth -= 1;
        res
    }

    /// `${name...}` after the opening brace.
    fn process_braced(&mut self) -> Step<String> {
        let name = self.process_name();
        let Some(mut op) = self.next() else {
            return Err(ShellErrorKind::MissingBrace);
        };
        let mut modifier = op.to_string();
        let mut null_is_unset = false;
        match op {
            '}' => {
                return Ok(match self.get_env(&name) {
                    Some(v) => v,
                    None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                });
            }
            '/' => return self.process_replace(name),
            ':' => {
                null_is_unset = true;
                // Go reads EOF as U+FFFD here; the word below then fails.
                op = self.next().unwrap_or('\u{fffd}');
                modifier.push(op);
            }
            '+' | '-' | '?' | '#' | '%' => {}
            _ => return Err(ShellErrorKind::UnsupportedModifier(modifier)),
        }
        let pattern_op = op == '#' || op == '%';
        if null_is_unset && pattern_op {
            return Err(ShellErrorKind::UnsupportedModifier(modifier));
        }
        let word = self.nested_word('}', pattern_op, ShellErrorKind::MissingBrace)?;
        let value = self.get_env(&name);
        let Some(value) = value else {
            if self.lexer.skip_unset_env {
                return Ok(format!("${{{name}{modifier}{word}}}"));
            }
            return match op {
                '-' => Ok(word),
                '+' => Ok(String::new()),
                '?' => Err(required(name, word, "is not allowed to be unset")),
                '#' | '%' => pattern::trim(&word, "", op),
                _ => Err(ShellErrorKind::UnsupportedModifier(modifier)),
            };
        };
        let empty = null_is_unset && value.is_empty();
        match op {
            '-' if empty => Ok(word),
            '-' => Ok(value),
            '+' if empty => Ok(String::new()),
            '+' => Ok(word),
            '?' if empty => Err(required(name, word, "is not allowed to be empty")),
            '?' => Ok(value),
            '#' | '%' => pattern::trim(&word, &value, op),
            _ => Err(ShellErrorKind::UnsupportedModifier(modifier)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn process_replace(&mut self, name: String) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pat = self.nested_word('/', true, ShellErrorKind::MissingSlash)?;
        let replacement = self.nested_word('}', true, ShellErrorKind::MissingBrace)?;
        match self.get_env(&name) {
            Some(value) => pattern::replace(&pat, &replacement, &value, all),
            // Upstream drops the second slash of `//` here.
            None if self.lexer.skip_unset_env => Ok(format!("${{{name}/{pat}/{replacement}}}")),
            None => pattern::replace(&pat, &replacement, "", all),
        }
    }

    /// A word inside `${...}` up to `stop`; running out of input is reported
    /// as `at_eof` rather than the inner error, as upstream does.
    fn nested_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
        at_eof: ShellErrorKind,
    ) -> Step<String> {
        match self.process_until(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(at_eof),
            Err(e) => Err(e),
        }
    }
}

fn required(name: String, word: String, default: &str) -> ShellErrorKind {
    let message = if word.is_empty() {
        default.to_string()
    } else {
        word
    };
    ShellErrorKind::Required { name, message }
}
