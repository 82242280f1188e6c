//! Splitting a logical line into keyword, flags and arguments, and the
//! per-instruction argument parsers (upstream `split_command.go` and
//! `line_parsers.go`).
//!
//! Each instruction's arguments keep their quotes and escapes here; removing
//! them and expanding variables is the instruction layer's job.

use super::json::{self, JsonArray};
use super::{Instruction, MAX_ONBUILD_DEPTH, ParseErrorKind};
use crate::text::{split_whitespace_n, to_lower};

/// The argument form one line parser produced.
#[derive(Default)]
struct Args {
    values: Vec<String>,
    json: bool,
    onbuild: Option<Box<Instruction>>,
}

impl Args {
    fn plain(values: Vec<String>) -> Self {
        Self {
            values,
            ..Self::default()
        }
    }
}

type LineResult = Result<Args, ParseErrorKind>;

/// Instructions with a line parser; anything else is accepted with one empty
/// argument.
const KNOWN: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

pub(super) fn is_known(name: &str) -> bool {
    KNOWN.contains(&name)
}

/// Parses one logical line into an instruction. `depth` counts enclosing
/// `ONBUILD`s.
pub(super) fn instruction_from_line(
    line: &str,
    escape: char,
    depth: usize,
) -> Result<Instruction, ParseErrorKind> {
    let (keyword, flags, rest) = split_command(line, escape);
    let args = match to_lower(keyword).as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(rest)?,
        "arg" => Args::plain(parse_words(rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(rest)?,
        "env" => name_val(rest, "ENV", escape)?,
        "label" => name_val(rest, "LABEL", escape)?,
        "expose" | "from" => Args::plain(whitespace_delimited(rest)),
        "healthcheck" => health_config(rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => Args::plain(single(rest)),
        "onbuild" => sub_command(rest, escape, depth)?,
        _ => Args::plain(vec![String::new()]),
    };
    Ok(Instruction {
        keyword: keyword.to_string(),
        flags,
        args: args.values,
        json: args.json,
        onbuild: args.onbuild,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        comments: Vec::new(),
    })
}

/// Splits a line into the keyword, the flags and the rest (trimmed).
fn split_command(line: &str, escape: char) -> (&str, Vec<String>, &str) {
    let parts = split_whitespace_n(line.trim(), 2);
    let keyword = parts.first().copied().unwrap_or_default();
    match parts.get(1) {
        Some(after) => {
            let (rest, flags) = extract_builder_flags(after, escape);
            (keyword, flags, rest.trim())
        }
        None => (keyword, Vec::new(), ""),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Spaces,
    Word,
    Quote(char),
}

/// Reads leading `--flag` words; quotes group and are removed, the escape
/// token escapes the next character. A lone `--` ends the flags. Returns
/// the rest of the line from the first non-flag word.
fn extract_builder_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut flags = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        i += 1;
        match phase {
            Phase::Spaces => {
                if c.is_whitespace() {
                    continue;
                }
                if c != '-' || chars.get(i).map(|&(_, d)| d) != Some('-') {
                    return (&line[pos..], flags);
                }
                phase = Phase::Word;
                word.push(c);
            }
            Phase::Word if c.is_whitespace() => {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], flags);
                }
                if blank_ok || !word.is_empty() {
                    flags.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
            }
            Phase::Word if c == '\'' || c == '"' => {
                phase = Phase::Quote(c);
                blank_ok = true;
            }
            Phase::Quote(q) if c == q => phase = Phase::Word,
            Phase::Word | Phase::Quote(_) => {
                if c == escape {
                    // An escape at the very end is dropped (and ends a quote).
                    let Some(&(_, next)) = chars.get(i) else {
                        phase = Phase::Word;
                        continue;
                    };
                    i += 1;
                    word.push(next);
                } else {
                    word.push(c);
                }
            }
        }
    }
    if phase != Phase::Spaces && word != "--" && (blank_ok || !word.is_empty()) {
        flags.push(word);
    }
    ("", flags)
}

/// Splits on whitespace keeping quotes and escapes in the words (upstream
/// `parseWords`), for `ENV`, `LABEL` and `ARG`.
pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if phase == Phase::Spaces {
            if c.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word if c.is_whitespace() => {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
            }
            Phase::Word => {
                if c == '\'' || c == '"' {
                    phase = Phase::Quote(c);
                    blank_ok = true;
                }
                if c == escape {
                    // Keep the escape and the character it escapes, even a
                    // quote; drop an escape at the very end.
                    let Some(next) = chars.next() else { continue };
                    word.push(c);
                    word.push(next);
                } else {
                    word.push(c);
                }
            }
            Phase::Quote(q) => {
                if c == q {
                    phase = Phase::Word;
                }
                // Inside single quotes the escape token is ordinary.
                if c == escape && q != '\'' {
                    let Some(next) = chars.next() else {
                        phase = Phase::Word;
                        continue;
                    };
                    word.push(c);
                    word.push(next);
                } else {
                    word.push(c);
                }
            }
            Phase::Spaces => {}
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// `ENV`/`LABEL`: `key=value ...`, or the legacy `key value` (one pair, the
/// value the rest of the line).
fn name_val(rest: &str, keyword: &str, escape: char) -> LineResult {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::default());
    };
    if !first.contains('=') {
        let parts = split_whitespace_n(rest, 2);
        let [key, value] = parts.as_slice() else {
            return Err(ParseErrorKind::MissingValue(keyword.to_string()));
        };
        return Ok(Args::plain(vec![
            key.to_string(),
            value.to_string(),
            String::new(),
        ]));
    }
    let mut values = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ParseErrorKind::MissingEquals(word.clone()));
        };
        values.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(Args::plain(values))
}

/// Whitespace-separated arguments (`FROM`, `EXPOSE`).
fn whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    split_whitespace_n(rest, -1)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The whole rest as one argument (`USER`, `WORKDIR`, ...).
fn single(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

/// JSON array, or else the whole rest as one argument (`RUN`, `CMD`, ...).
fn maybe_json(rest: &str) -> LineResult {
    if rest.is_empty() {
        return Ok(Args::default());
    }
    match json::parse_array(rest) {
        JsonArray::Strings(values) => Ok(Args {
            values,
            json: true,
            onbuild: None,
        }),
        JsonArray::NotStrings => Err(ParseErrorKind::JsonNotStringArray),
        JsonArray::NotJson => Ok(Args::plain(vec![rest.to_string()])),
    }
}

/// JSON array, or else whitespace-separated arguments (`COPY`, `ADD`,
/// `VOLUME`).
fn maybe_json_to_list(rest: &str) -> LineResult {
    match json::parse_array(rest) {
        JsonArray::Strings(values) => Ok(Args {
            values,
            json: true,
            onbuild: None,
        }),
        JsonArray::NotStrings => Err(ParseErrorKind::JsonNotStringArray),
        JsonArray::NotJson => Ok(Args::plain(whitespace_delimited(rest))),
    }
}

/// `HEALTHCHECK TYPE [command]`: the first word, then the command as for
/// `CMD`.
fn health_config(rest: &str) -> LineResult {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Args::default());
    }
    let command = rest[sep..].trim_start();
    let mut cmd = maybe_json(command)?;
    cmd.values.insert(0, rest[..sep].to_string());
    Ok(cmd)
}

/// `ONBUILD <instruction>`.
fn sub_command(rest: &str, escape: char, depth: usize) -> LineResult {
    if rest.is_empty() {
        return Ok(Args::default());
    }
    if depth >= MAX_ONBUILD_DEPTH {
        return Err(ParseErrorKind::OnbuildTooDeep(MAX_ONBUILD_DEPTH));
    }
    let child = instruction_from_line(rest, escape, depth + 1)?;
    Ok(Args {
        onbuild: Some(Box::new(child)),
        ..Args::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn words_like_upstream() {
        let cases: [(&str, &[&str]); 9] = [
            ("foo", &["foo"]),
            ("foo bar", &["foo", "bar"]),
            ("foo\\ bar", &["foo\\ bar"]),
            ("foo=bar", &["foo=bar"]),
            ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
            (r#"foo bar "abc xyz""#, &["foo", "bar", r#""abc xyz""#]),
            ("àöû", &["àöû"]),
            (r#"föo bàr "âbc xÿz""#, &["föo", "bàr", r#""âbc xÿz""#]),
            ("a=\"\" b\\", &["a=\"\"", "b"]),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_words(input, '\\'), strings(expected), "{input}");
        }
    }

    #[test]
    fn flags() {
        let split = |l: &str| {
            let (k, f, r) = split_command(l, '\\');
            (k.to_string(), f, r.to_string())
        };
        assert_eq!(
            split("COPY --from=a --link x y"),
            (
                "COPY".into(),
                strings(&["--from=a", "--link"]),
                "x y".into()
            )
        );
        assert_eq!(
            split("COPY -- --x y"),
            ("COPY".into(), vec![], "--x y".into())
        );
        assert_eq!(
            split("RUN --mount=\"type=a b\" x"),
            ("RUN".into(), strings(&["--mount=type=a b"]), "x".into())
        );
        assert_eq!(
            split("RUN --a='' x"),
            ("RUN".into(), strings(&["--a="]), "x".into())
        );
        assert_eq!(
            split("RUN --a\\ b x"),
            ("RUN".into(), strings(&["--a b"]), "x".into())
        );
        assert_eq!(
            split("RUN --a --"),
            ("RUN".into(), strings(&["--a"]), "".into())
        );
        assert_eq!(split("RUN -x"), ("RUN".into(), vec![], "-x".into()));
        assert_eq!(split("RUN"), ("RUN".into(), vec![], "".into()));
        assert_eq!(split(""), ("".into(), vec![], "".into()));
    }

    #[test]
    fn name_value_errors() {
        assert_eq!(
            name_val("PATH", "ENV", '\\').err(),
            Some(ParseErrorKind::MissingValue("ENV".into()))
        );
        assert_eq!(
            name_val("a=b c", "LABEL", '\\').err(),
            Some(ParseErrorKind::MissingEquals("c".into()))
        );
        assert_eq!(
            name_val("a b  c", "ENV", '\\').map(|a| a.values).ok(),
            Some(strings(&["a", "b  c", ""]))
        );
    }

    #[test]
    fn health() {
        let a = health_config("CMD [\"a\"]").ok();
        assert_eq!(
            a.as_ref().map(|a| (a.values.clone(), a.json)),
            Some((strings(&["CMD", "a"]), true))
        );
        let a = health_config("NONE").ok();
        assert_eq!(a.map(|a| a.values), Some(strings(&["NONE"])));
    }

    #[test]
    fn onbuild_depth_is_bounded() {
        let line = "ONBUILD ".repeat(1000) + "RUN x";
        assert_eq!(
            instruction_from_line(&line, '\\', 0).err(),
            Some(ParseErrorKind::OnbuildTooDeep(MAX_ONBUILD_DEPTH))
        );
    }
}
