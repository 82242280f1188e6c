//! Docker's path pattern semantics, as `.dockerignore` files and fsutil's include/exclude
//! filters use them (upstream: `github.com/moby/patternmatcher`), implemented on `regex`.
//!
//! - Patterns are cleaned like Go's `filepath.Clean`, and a leading `/` is dropped:
//!   `/a/./b/` is `a/b`. Paths are `/`-separated and relative to the context root.
//! - `*` matches any run of characters but `/`, `?` any one character but `/`,
//!   `[a-z]`/`[^a-z]` a class (Go syntax: `^` negates, `[!...]` does not), `\` escapes.
//! - `**` matches any number of path segments, and `**/` may match none: `**/x` matches
//!   `x` and `a/b/x`.
//! - Unanchored patterns are **not** matched at any depth: `foo` matches `foo` (and what
//!   is below it), never `a/foo`. Write `**/foo` for that.
//! - A pattern matching a directory matches everything below it
//!   ([`PatternMatcher::matches`]); `!pattern` re-includes; the last matching pattern
//!   wins.
//!
//! Where upstream passes class syntax straight to Go's regexp (so `[[:alpha:]]` or
//! `[*]` behave oddly) we compile classes as `filepath.Match` reads them, and every
//! character outside them is matched literally. Malformed patterns are refused when the
//! matcher is built, never while matching.
//!
//! This crate owns pattern syntax and matching, [`filepath_match`] (Go's
//! `filepath.Match`, for wildcard sources) and reading `.dockerignore` files
//! ([`parse_dockerignore`]). It does not walk directories: walkers (file sync, the
//! file-op copier) call [`PatternMatcher::matches_with_parents`] as they descend.
#![forbid(unsafe_code)]

mod dockerignore;
mod glob;
mod path;
mod pattern;

pub use dockerignore::parse_dockerignore;
pub use glob::{contains_wildcards, filepath_match};
pub use path::go_clean;
pub use pattern::{MatchInfo, Pattern, PatternMatcher};

/// A pattern that cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pattern made only of `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// A malformed pattern: an unterminated or empty `[` class, a `-` or `]` that
    /// should be escaped in a class, a reversed range, a trailing `\`.
    #[error("invalid pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern as given (trimmed).
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}
