//! The Dockerfile frontend's text layer: parsing Dockerfiles and expanding
//! shell words, compatible with BuildKit's `frontend/dockerfile/parser` and
//! `frontend/dockerfile/shell` (v0.32).
//!
//! This crate owns:
//! - [`parser`]: source text to an AST of [`Instruction`]s, with parser
//!   directives (`syntax`, `escape`, `check`), comments, line continuations,
//!   heredocs, instruction flags, exec (JSON) and shell forms, start and end
//!   lines, and warnings such as empty continuation lines; plus
//!   [`Dockerfile::dump`], upstream's `--dump` format.
//! - [`shell`]: shell-word expansion (`$VAR`, `${VAR:-word}`, `${VAR#pattern}`,
//!   `${VAR/pattern/replacement}`, quotes, the escape token) and word
//!   splitting, reporting which variables were used.
//!
//! Both are pure: no I/O, no global state, and no panics on any input.
//!
//! Not here (yet): typed instructions and their flags, ARG/ENV scoping, and the
//! conversion of a Dockerfile to LLB, which will live in this crate's
//! `convert` module; `.dockerignore` matching lives in `patternmatcher`.
//!
//! ```
//! let df = dockerfile::parse("FROM alpine\nRUN echo hi\n")?;
//! assert_eq!(df.dump(), "(from \"alpine\")\n(run \"echo hi\")");
//!
//! let env = dockerfile::shell::EnvList::from_entries(["NAME=world"]);
//! let lexer = dockerfile::shell::Lexer::new(df.escape_token);
//! assert_eq!(lexer.process_word("hello ${NAME:-you}", &env)?, "hello world");
//! # Ok::<(), dockerfile::Error>(())
//! ```

pub mod convert;
pub mod dockerignore;
pub mod image;
pub mod instructions;
pub mod parser;
pub mod shell;
mod text;

pub use parser::{
    DEFAULT_ESCAPE_TOKEN, DEFAULT_FILE_NAME, Directive, Dockerfile, Heredoc, HeredocError,
    Instruction, ParseError, ParseErrorKind, Warning, parse, parse_named,
};
pub use shell::{ShellError, ShellErrorKind};

/// Any error from this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Dockerfile could not be parsed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A word could not be expanded.
    #[error(transparent)]
    Shell(#[from] ShellError),
}
