//! Shell-word expansion as BuildKit's `frontend/dockerfile/shell` lexer does
//! it: quotes, the configurable escape token, `$VAR`, `${VAR}` and the
//! `${VAR<modifier>word}` forms, and splitting into words after expansion.
//!
//! It is not a shell: there is no command substitution, arithmetic or globbing
//! of file names, and unsupported modifiers (`${VAR:=x}`) are errors.

mod pattern;
mod word;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

/// A shell-word lexer. The escape token is `\` by default, or `` ` `` when the
/// Dockerfile says `# escape=`` ` ``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The escape token (`\` or `` ` ``).
    pub escape_token: char,
    /// Keep quote characters in the output (they still group words).
    pub raw_quotes: bool,
    /// Keep escape tokens in the output (they still escape).
    pub raw_escapes: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as they were written.
    pub skip_unset_env: bool,
}

/// Everything one expansion produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, as [`Lexer::process_word`] returns it.
    pub result: String,
    /// The expansion split into words, as [`Lexer::process_words`] returns it.
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but not set.
    pub unmatched: BTreeSet<String>,
}

/// An expansion failed; the message names the input as upstream does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {kind}", crate::text::quote(.input))]
#[non_exhaustive]
pub struct ShellError {
    /// The word that was being expanded.
    pub input: String,
    /// What went wrong.
    pub kind: ShellErrorKind,
}

/// The ways an expansion can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShellErrorKind {
    /// `'abc` without the closing quote.
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    /// `"abc` without the closing quote.
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    /// A nested word ended before its terminator.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    /// `${VAR` or `${VAR:-word` without the closing brace.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${VAR/pattern` without the second slash.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:x}`, `${{x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${VAR:=x}`, `${VAR:#x}` and other modifiers upstream rejects.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${VAR?msg}` with VAR unset, or `${VAR:?msg}` with VAR unset or empty.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The user's message, or upstream's default.
        message: String,
    },
    /// A `#`, `%` or `/` pattern that is not a valid shell pattern.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern as written after expansion.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Substitutions nested deeper than this implementation allows.
    #[error("substitutions nested more than {0} levels deep")]
    TooDeep(usize),
}

impl Default for Lexer {
    fn default() -> Self {
        Self::new('\\')
    }
}

impl Lexer {
    /// A lexer that uses `escape` to escape characters.
    pub fn new(escape: char) -> Self {
        Self {
            escape_token: escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands `word`, keeping whitespace as it is (upstream `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        self.process(word, env).map(|e| e.result)
    }

    /// Expands `word` and splits the result into words on unquoted whitespace
    /// (upstream `ProcessWords`). Whitespace that comes from a variable's value
    /// splits too, unless the reference was quoted.
    ///
    /// Upstream's Go code shares one word buffer between nested `${...}`
    /// expansions, so there `ProcessWords("ab${X:-c}d")` loses the `ab`; this
    /// implementation returns `["abcd"]`.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|e| e.words)
    }

    /// Expands `word` and reports the words, and which variables were used
    /// (upstream `ProcessWordWithMatches`).
    pub fn process(&self, word: &str, env: &dyn Env) -> Result<Expansion, ShellError> {
        // Go's text/scanner skips a byte-order mark at the start.
        let src = word.strip_prefix('\u{feff}').unwrap_or(word);
        word::expand(self, src, env).map_err(|kind| ShellError {
            input: word.to_string(),
            kind,
        })
    }
}

/// Where expansion looks variables up. A variable that is set to the empty
/// string is different from one that is unset (`${X-default}`).
pub trait Env {
    /// The value of `name`, or `None` if it is not set.
    fn get(&self, name: &str) -> Option<&str>;

    /// The names of all set variables (for suggestions in lint messages).
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }

    fn keys(&self) -> Vec<&str> {
        (**self).keys()
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        HashMap::keys(self).map(String::as_str).collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        BTreeMap::keys(self).map(String::as_str).collect()
    }
}

/// An environment with nothing set.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// An ordered `KEY=value` list, as a process environment or upstream's
/// `EnvsFromSlice`: a later entry for the same key wins, and an entry without
/// `=` sets the key to the empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList {
    entries: Vec<(String, String)>,
}

impl EnvList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `KEY=value` entries.
    pub fn from_entries<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Self::new();
        for e in entries {
            let e = e.as_ref();
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            list.set(k, v);
        }
        list
    }

    /// Sets `key`, replacing an earlier value (the key keeps its position).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.entries.iter().map(|(k, _)| k.as_str()).collect()
    }
}

impl<S: AsRef<str>> FromIterator<S> for EnvList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self::from_entries(iter)
    }
}

#[cfg(test)]
mod tests;
