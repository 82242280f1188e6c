//! The Dockerfile parser: source text to a list of [`Instruction`]s, as
//! BuildKit's `frontend/dockerfile/parser` does it.
//!
//! The parser knows the line-level syntax only: parser directives, comments,
//! line continuations with the escape token, heredocs, instruction flags and
//! each instruction's argument form (JSON or shell, `key=value` lists, ...).
//! It does not know which flags an instruction accepts or what the arguments
//! mean, and it accepts unknown instructions: both are the instruction
//! layer's business.

mod directives;
mod heredoc;
mod json;
mod line_parsers;

pub use directives::Directive;
pub use heredoc::{Heredoc, HeredocError, chomp_heredoc_content, parse_heredoc};

use crate::text::{quote, quote_list, to_lower};
use directives::{DirectiveParser, is_comment, trim_continuation, trim_newline};

/// The file name used in error messages unless the caller gives one.
pub const DEFAULT_FILE_NAME: &str = "Dockerfile";

/// The escape token used unless a `# escape=` directive says otherwise.
pub const DEFAULT_ESCAPE_TOKEN: char = '\\';

/// How deeply `ONBUILD` may nest (`ONBUILD ONBUILD ...`). Upstream's parser has
/// no limit and its instruction layer rejects any nesting; the bound keeps
/// hostile input from exhausting the stack here.
const MAX_ONBUILD_DEPTH: usize = 32;

/// Instructions that may carry heredocs.
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["add", "copy", "run"];

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The instructions in order.
    pub instructions: Vec<Instruction>,
    /// The parser directives found at the top of the file.
    pub directives: Vec<Directive>,
    /// The escape token in force (`\` or `` ` ``).
    pub escape_token: char,
    /// Problems that did not stop parsing.
    pub warnings: Vec<Warning>,
}

/// One instruction: a logical line, with its continuation lines and heredoc
/// bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The instruction keyword as written (`RUN`, `run`, or an unknown word).
    pub keyword: String,
    /// Flags before the arguments, as written without quotes
    /// (`--from=build`, `--link`).
    pub flags: Vec<String>,
    /// The arguments as the instruction's line parser split them. For `ENV`
    /// and `LABEL`, triples of key, value and separator (`=` for `k=v`, empty
    /// for the legacy `k v` form). For `HEALTHCHECK`, the type (`CMD`,
    /// `NONE`) and then the command. Unknown instructions get one empty
    /// argument, as upstream.
    pub args: Vec<String>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// For `ONBUILD`, the instruction it carries.
    pub onbuild: Option<Box<Instruction>>,
    /// Heredoc bodies, in the order their delimiters appear on the line.
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuation lines joined, escapes at line ends and
    /// comment lines removed.
    pub original: String,
    /// First line (1-based) of the instruction.
    pub start_line: usize,
    /// Last line, including continuation lines and heredoc bodies.
    pub end_line: usize,
    /// The comment lines directly above the instruction, without `#`.
    pub comments: Vec<String>,
}

/// A problem that did not stop parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The build-check rule it belongs to (`NoEmptyContinuation`).
    pub rule: &'static str,
    /// One-line description.
    pub short: String,
    /// Longer explanation.
    pub detail: String,
    /// Where to read more.
    pub url: &'static str,
    /// The line it refers to.
    pub line: usize,
}

/// A Dockerfile could not be parsed. Displays as `Dockerfile:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind}")]
#[non_exhaustive]
pub struct ParseError {
    /// The file name given to the parser.
    pub file: String,
    /// The first line the error refers to (1-based).
    pub line: usize,
    /// The last line the error refers to.
    pub end_line: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

/// The ways parsing can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A parser directive appears twice.
    #[error("only one {0} parser directive can be used")]
    DuplicateDirective(String),
    /// `# escape=` with something other than `\` or `` ` ``.
    #[error("invalid escape token '{0}' does not match ` or \\")]
    InvalidEscapeToken(String),
    /// The file has no instructions (empty, or only comments).
    #[error("file with no instructions")]
    NoInstructions,
    /// The end of the file came before a heredoc's delimiter line.
    #[error("unterminated heredoc {}", crate::text::quote(.0))]
    UnterminatedHeredoc(String),
    /// A heredoc delimiter could not be read.
    #[error(transparent)]
    Heredoc(#[from] HeredocError),
    /// A JSON array (exec form) with something other than strings in it.
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    JsonNotStringArray,
    /// `ENV key` or `LABEL key` without a value.
    #[error("{0} must have two arguments")]
    MissingValue(String),
    /// `ENV a=b c`: a key=value list with an element lacking `=`.
    #[error("Syntax error - can't find = in {}. Must be of the form: name=value", crate::text::quote(.0))]
    MissingEquals(String),
    /// `ONBUILD ONBUILD ...` nested beyond any sensible depth.
    #[error("ONBUILD nested more than {0} levels deep")]
    OnbuildTooDeep(usize),
}

/// Parses a Dockerfile; errors name the file `Dockerfile`.
pub fn parse(source: &str) -> Result<Dockerfile, ParseError> {
    parse_named(source, DEFAULT_FILE_NAME)
}

/// Parses a Dockerfile; errors name the file `file_name`.
pub fn parse_named(source: &str, file_name: &str) -> Result<Dockerfile, ParseError> {
    Parser {
        file: file_name,
        lines: source.split_inclusive('\n'),
        current_line: 0,
        directives: DirectiveParser::default(),
        escape: DEFAULT_ESCAPE_TOKEN,
    }
    .run()
}

impl Dockerfile {
    /// The first line of the first instruction.
    pub fn start_line(&self) -> usize {
        self.instructions.first().map_or(0, |i| i.start_line)
    }

    /// The last line of the last instruction.
    pub fn end_line(&self) -> usize {
        self.instructions.last().map_or(0, |i| i.end_line)
    }

    /// The value of a parser directive (`syntax`, `escape`, `check`).
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
            .map(|d| d.value.as_str())
    }
}

impl Instruction {
    /// The keyword in lower case, as the dispatch tables use it.
    pub fn name(&self) -> String {
        to_lower(&self.keyword)
    }

    /// Whether the keyword is one the parser has a line parser for.
    pub fn is_known(&self) -> bool {
        line_parsers::is_known(&self.name())
    }

    /// Whether heredocs on this line are read: `RUN`, `COPY` and `ADD` in
    /// shell form, also under `ONBUILD`.
    fn can_contain_heredoc(&self) -> bool {
        let node = match &self.onbuild {
            Some(child) if self.name() == "onbuild" => child,
            _ => self,
        };
        HEREDOC_INSTRUCTIONS.contains(&node.name().as_str()) && !node.json
    }
}

/// The state of one parse.
struct Parser<'a> {
    file: &'a str,
    lines: std::str::SplitInclusive<'a, char>,
    /// Lines consumed so far; the number of the last line read.
    current_line: usize,
    directives: DirectiveParser,
    escape: char,
}

impl Parser<'_> {
    fn error(&self, kind: ParseErrorKind, line: usize, end_line: usize) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            line,
            end_line: end_line.max(line),
            kind,
        }
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut instructions = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();

        while let Some(raw) = self.lines.next() {
            let raw = if self.current_line == 0 {
                raw.strip_prefix('\u{feff}').unwrap_or(raw)
            } else {
                raw
            };
            if is_comment(raw) {
                // Upstream drops the first byte of the untrimmed line, so an
                // indented comment keeps its `#`.
                let after = &raw[raw.chars().next().map_or(0, char::len_utf8)..];
                let comment = after.trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            let line = trim_newline(raw).trim_start();
            match self.directives.parse_line(line, self.current_line + 1) {
                Ok(Some(directive)) => {
                    if directive.name == "escape" {
                        self.escape =
                            directives::escape_token(&directive.value).map_err(|kind| {
                                self.error(kind, self.current_line + 1, self.current_line + 1)
                            })?;
                    }
                    // The directive was recorded as a comment above.
                    comments.pop();
                }
                Ok(None) => {}
                Err(kind) => {
                    return Err(self.error(kind, self.current_line + 1, self.current_line + 1));
                }
            }
            let line = if is_comment(line) { "" } else { line };
            self.current_line += 1;
            let start_line = self.current_line;

            let (first, mut end_of_line) = trim_continuation(line, self.escape);
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut logical = first.to_string();
            let mut empty_continuation = false;
            while !end_of_line {
                let Some(raw) = self.lines.next() else { break };
                self.current_line += 1;
                if is_comment(raw) {
                    continue;
                }
                let line = trim_newline(raw);
                if line.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, eol) = trim_continuation(line, self.escape);
                logical.push_str(part);
                end_of_line = eol;
            }

            if empty_continuation {
                warnings.push(Warning {
                    rule: "NoEmptyContinuation",
                    short: format!("Empty continuation line found in: {logical}"),
                    detail: "Empty continuation lines will become errors in a future release"
                        .to_string(),
                    url: "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
                    line: self.current_line,
                });
            }

            let mut instruction = line_parsers::instruction_from_line(&logical, self.escape, 0)
                .map_err(|kind| self.error(kind, start_line, self.current_line))?;
            instruction.comments = std::mem::take(&mut comments);

            if instruction.can_contain_heredoc() && logical.contains("<<") {
                let docs = heredoc::heredocs_from_line(&logical)
                    .map_err(|e| self.error(e.into(), start_line, self.current_line))?;
                for doc in docs {
                    let doc = self.read_heredoc_body(doc, start_line)?;
                    instruction.heredocs.push(doc);
                }
            }

            instruction.set_lines(start_line, self.current_line);
            instructions.push(instruction);
        }

        if instructions.is_empty() {
            let line = self.current_line.max(1);
            return Err(self.error(ParseErrorKind::NoInstructions, line, line));
        }
        Ok(Dockerfile {
            instructions,
            directives: self.directives.into_directives(),
            escape_token: self.escape,
            warnings,
        })
    }

    /// Reads lines up to the heredoc's delimiter line into its content.
    fn read_heredoc_body(
        &mut self,
        mut doc: Heredoc,
        start_line: usize,
    ) -> Result<Heredoc, ParseError> {
        for raw in self.lines.by_ref() {
            self.current_line += 1;
            let mut candidate = trim_newline(raw);
            if doc.chomp {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == doc.name {
                return Ok(doc);
            }
            doc.content.push_str(raw);
        }
        Err(self.error(
            ParseErrorKind::UnterminatedHeredoc(doc.name),
            start_line,
            self.current_line,
        ))
    }
}

impl Instruction {
    fn set_lines(&mut self, start: usize, end: usize) {
        self.start_line = start;
        self.end_line = end;
        if let Some(child) = &mut self.onbuild {
            child.set_lines(start, end);
        }
    }
}

// Upstream's `--dump` format (`parser.Node.Dump`, printed by
// `frontend/dockerfile/parser/dumper`): one line per instruction,
// `(keyword ["--flag" ...] "arg" ...)`, with the keyword in lower case, flags
// as a Go `%q` list, every argument as a Go-quoted string and `ONBUILD`'s
// instruction nested in parentheses. Heredoc bodies and comments are not
// shown.
impl Dockerfile {
    /// The AST in upstream's dump format, one instruction per line, without a
    /// trailing newline (the dumper tool adds one).
    pub fn dump(&self) -> String {
        self.instructions
            .iter()
            .map(|i| format!("({})", i.dump()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Instruction {
    /// This instruction in upstream's dump format, without the enclosing
    /// parentheses: `run ["--network=none"] "make"`.
    pub fn dump(&self) -> String {
        let mut out = to_lower(&self.keyword);
        if !self.flags.is_empty() {
            out.push(' ');
            out.push_str(&quote_list(&self.flags));
        }
        if let Some(child) = &self.onbuild {
            out.push_str(" (");
            out.push_str(&child.dump());
            out.push(')');
        }
        for arg in &self.args {
            out.push(' ');
            out.push_str(&quote(arg));
        }
        // Go's strings.TrimSpace, which upstream applies to every node.
        out.trim().to_string()
    }
}

#[cfg(test)]
mod tests;
