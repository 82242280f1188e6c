//! Typed instructions: the parser's generic [`Instruction`]s grouped into build stages,
//! each command with its flags checked and its arguments in named fields.
//!
//! Nothing is expanded here: variables are substituted when the converter dispatches a
//! command, because their values depend on the ENV and ARG instructions before it.

use crate::parser::{Dockerfile, Heredoc, Instruction};

/// A problem with one instruction: a message and the lines it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionError {
    pub line: usize,
    pub end_line: usize,
    pub message: String,
}

fn err<T>(inst: &Instruction, message: impl Into<String>) -> Result<T, InstructionError> {
    Err(InstructionError {
        line: inst.start_line,
        end_line: inst.end_line,
        message: message.into(),
    })
}

/// Where a command came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The instruction as written on its logical line (`RUN echo hi`).
    pub original: String,
    pub line: usize,
    pub end_line: usize,
}

impl Source {
    fn of(inst: &Instruction) -> Source {
        Source {
            original: inst.original.trim().to_string(),
            line: inst.start_line,
            end_line: inst.end_line,
        }
    }
}

/// A command in shell form (run by the image's shell) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub args: Vec<String>,
    /// Shell form: the arguments are joined and given to the shell.
    pub prepend_shell: bool,
}

impl CommandLine {
    fn of(inst: &Instruction) -> CommandLine {
        CommandLine {
            args: inst.args.clone(),
            prepend_shell: !inst.json,
        }
    }
}

/// `KEY=value` with the value still unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// An `ARG` entry: a name and an optional default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    pub key: String,
    pub value: Option<String>,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub cmd: CommandLine,
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub is_add: bool,
    /// Source paths (not heredoc sources).
    pub sources: Vec<String>,
    /// Inline files written with heredocs (`COPY <<EOF /dest`).
    pub heredocs: Vec<Heredoc>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    /// ADD of a git source: keep `.git`.
    pub keep_git_dir: Option<bool>,
    /// ADD of a URL or git source: the expected digest or commit.
    pub checksum: Option<String>,
    /// ADD: unpack archives (default: local archives yes, URLs no).
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    pub test: Vec<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<String>,
}

/// One command of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Run),
    Copy(Copy),
    Workdir(String),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Arg(Vec<ArgDef>),
    User(String),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Shell(Vec<String>),
    Maintainer(String),
    Healthcheck(Healthcheck),
    Onbuild(String),
}

/// A command and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub command: Command,
    pub source: Source,
}

/// A build stage: `FROM` and the commands up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    /// The base, unexpanded (`${BASE}`, `scratch`, `build`).
    pub base: String,
    pub platform: Option<String>,
    pub source: Source,
    pub commands: Vec<Located>,
}

/// The stages, and the `ARG`s before the first `FROM` (the global build arguments).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub meta_args: Vec<(Vec<ArgDef>, Source)>,
    pub stages: Vec<Stage>,
}

/// What a flag takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    Value,
    /// A value, and the flag may repeat.
    Values,
}

/// The flags an instruction was given, checked against what it accepts.
struct Flags {
    values: Vec<(&'static str, Option<String>)>,
}

impl Flags {
    fn parse(
        inst: &Instruction,
        allowed: &[(&'static str, FlagKind)],
    ) -> Result<Flags, InstructionError> {
        let mut values: Vec<(&'static str, Option<String>)> = Vec::new();
        for raw in &inst.flags {
            let Some(body) = raw.strip_prefix("--") else {
                return err(inst, format!("flag {raw:?} does not start with --"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if name.is_empty() {
                return err(inst, "missing a flag name after --");
            }
            let Some(&(known, kind)) = allowed.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
            else {
                return err(
                    inst,
                    format!("unknown flag: --{name} for {}", inst.keyword.to_uppercase()),
                );
            };
            if kind != FlagKind::Values && values.iter().any(|(n, _)| *n == known) {
                return err(inst, format!("duplicate flag specified: --{known}"));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => Some("true".to_string()),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" | "false" => Some(v.to_ascii_lowercase()),
                    _ => {
                        return err(
                            inst,
                            format!("expecting boolean value for flag --{known}, not: {v}"),
                        );
                    }
                },
                (_, None) => return err(inst, format!("missing a value on flag: --{known}")),
                (_, Some(v)) => Some(v),
            };
            values.push((known, value));
        }
        Ok(Flags { values })
    }

    fn value(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.clone())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> bool {
        self.value(name).as_deref() == Some("true")
    }
}

fn no_flags(inst: &Instruction) -> Result<(), InstructionError> {
    Flags::parse(inst, &[]).map(|_| ())
}

fn exactly_one(inst: &Instruction, what: &str) -> Result<String, InstructionError> {
    match inst.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => err(inst, format!("{what} requires exactly one argument")),
    }
}

fn at_least_one(inst: &Instruction, what: &str) -> Result<(), InstructionError> {
    if inst.args.is_empty() || inst.args.iter().all(|a| a.is_empty()) {
        return err(inst, format!("{what} requires at least one argument"));
    }
    Ok(())
}

/// `ENV`/`LABEL` arguments come as (key, value, separator) triples.
fn key_values(inst: &Instruction, what: &str) -> Result<Vec<KeyValue>, InstructionError> {
    if inst.args.is_empty() || inst.args.len() % 3 != 0 {
        return err(inst, format!("{what} requires at least one argument"));
    }
    let mut out = Vec::new();
    for t in inst.args.chunks(3) {
        if t[0].is_empty() {
            return err(inst, format!("{what} names can not be blank"));
        }
        out.push(KeyValue {
            key: t[0].clone(),
            value: t[1].clone(),
        });
    }
    Ok(out)
}

fn parse_args(inst: &Instruction) -> Result<Vec<ArgDef>, InstructionError> {
    no_flags(inst)?;
    if inst.args.is_empty() {
        return err(inst, "ARG requires at least one argument");
    }
    let mut out = Vec::new();
    for a in &inst.args {
        let (key, value) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        if key.is_empty() {
            return err(inst, format!("ARG {a}: the name can not be blank"));
        }
        out.push(ArgDef {
            key: key.to_string(),
            value,
        });
    }
    Ok(out)
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

fn parse_from(inst: &Instruction) -> Result<Stage, InstructionError> {
    let flags = Flags::parse(inst, &[("platform", FlagKind::Value)])?;
    let (base, name) = match inst.args.as_slice() {
        [base] => (base.clone(), None),
        [base, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            if !valid_stage_name(&lower) {
                return err(
                    inst,
                    format!(
                        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                    ),
                );
            }
            (base.clone(), Some(lower))
        }
        _ => return err(inst, "FROM requires either one or three arguments"),
    };
    Ok(Stage {
        name,
        base,
        platform: flags.value("platform"),
        source: Source::of(inst),
        commands: Vec::new(),
    })
}

fn parse_copy(inst: &Instruction, is_add: bool) -> Result<Copy, InstructionError> {
    let what = if is_add { "ADD" } else { "COPY" };
    let mut allowed = vec![
        ("chown", FlagKind::Value),
        ("chmod", FlagKind::Value),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Values),
    ];
    if is_add {
        allowed.extend([
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::Value),
            ("unpack", FlagKind::Bool),
        ]);
    } else {
        allowed.extend([("from", FlagKind::Value), ("parents", FlagKind::Bool)]);
    }
    let flags = Flags::parse(inst, &allowed)?;
    if inst.args.len() < 2 {
        return err(
            inst,
            format!(
                "{what} requires at least two arguments, but only one was provided. Destination could not be determined"
            ),
        );
    }
    let (dest, srcs) = inst
        .args
        .split_last()
        .unwrap_or_else(|| unreachable!("two or more arguments"));
    // Heredoc sources appear among the arguments as their `<<NAME` words.
    let mut sources = Vec::new();
    let mut heredocs = Vec::new();
    for s in srcs {
        let named = match crate::parser::parse_heredoc(s) {
            Ok(Some(h)) => Some(h.name),
            _ => None,
        };
        match named.and_then(|n| inst.heredocs.iter().find(|h| h.name == n)) {
            Some(h) => heredocs.push(h.clone()),
            None => sources.push(s.clone()),
        }
    }
    let checksum = flags.value("checksum");
    if checksum.is_some() && sources.len() != 1 {
        return err(inst, "checksum can't be specified for multiple sources");
    }
    Ok(Copy {
        is_add,
        sources,
        heredocs,
        dest: dest.clone(),
        from: flags.value("from"),
        chown: flags.value("chown"),
        chmod: flags.value("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        excludes: flags.all("exclude"),
        keep_git_dir: flags.value("keep-git-dir").map(|v| v == "true"),
        checksum,
        unpack: flags.value("unpack").map(|v| v == "true"),
    })
}

fn parse_healthcheck(inst: &Instruction) -> Result<Healthcheck, InstructionError> {
    let flags = Flags::parse(
        inst,
        &[
            ("interval", FlagKind::Value),
            ("timeout", FlagKind::Value),
            ("start-period", FlagKind::Value),
            ("start-interval", FlagKind::Value),
            ("retries", FlagKind::Value),
        ],
    )?;
    let Some((kind, rest)) = inst.args.split_first() else {
        return err(inst, "HEALTHCHECK requires an argument");
    };
    let test = match kind.to_uppercase().as_str() {
        "NONE" => {
            if !rest.is_empty() {
                return err(inst, "HEALTHCHECK NONE takes no arguments");
            }
            if !flags.values.is_empty() {
                return err(inst, "HEALTHCHECK NONE takes no options");
            }
            vec!["NONE".to_string()]
        }
        "CMD" => {
            if rest.is_empty() || rest.iter().all(|a| a.is_empty()) {
                return err(inst, "Missing command after HEALTHCHECK CMD");
            }
            if inst.json {
                std::iter::once("CMD".to_string())
                    .chain(rest.iter().cloned())
                    .collect()
            } else {
                vec!["CMD-SHELL".to_string(), rest.join(" ")]
            }
        }
        other => {
            return err(
                inst,
                format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
            );
        }
    };
    Ok(Healthcheck {
        test,
        interval: flags.value("interval"),
        timeout: flags.value("timeout"),
        start_period: flags.value("start-period"),
        start_interval: flags.value("start-interval"),
        retries: flags.value("retries"),
    })
}

/// Types one instruction other than FROM (ONBUILD triggers are parsed one at a time).
pub fn parse_command(inst: &Instruction) -> Result<Command, InstructionError> {
    let kw = inst.keyword.to_lowercase();
    Ok(match kw.as_str() {
        "run" => {
            let flags = Flags::parse(
                inst,
                &[
                    ("mount", FlagKind::Values),
                    ("network", FlagKind::Value),
                    ("security", FlagKind::Value),
                    ("device", FlagKind::Values),
                ],
            )?;
            at_least_one(inst, "RUN")?;
            if !flags.all("device").is_empty() {
                return err(inst, "RUN --device is not supported yet");
            }
            Command::Run(Run {
                cmd: CommandLine::of(inst),
                heredocs: inst.heredocs.clone(),
                mounts: flags.all("mount"),
                network: flags.value("network"),
                security: flags.value("security"),
            })
        }
        "copy" => Command::Copy(parse_copy(inst, false)?),
        "add" => Command::Copy(parse_copy(inst, true)?),
        "workdir" => {
            no_flags(inst)?;
            Command::Workdir(exactly_one(inst, "WORKDIR")?)
        }
        "env" => {
            no_flags(inst)?;
            Command::Env(key_values(inst, "ENV")?)
        }
        "label" => {
            no_flags(inst)?;
            Command::Label(key_values(inst, "LABEL")?)
        }
        "arg" => Command::Arg(parse_args(inst)?),
        "user" => {
            no_flags(inst)?;
            Command::User(exactly_one(inst, "USER")?)
        }
        "cmd" => {
            no_flags(inst)?;
            Command::Cmd(CommandLine::of(inst))
        }
        "entrypoint" => {
            no_flags(inst)?;
            Command::Entrypoint(CommandLine::of(inst))
        }
        "expose" => {
            no_flags(inst)?;
            at_least_one(inst, "EXPOSE")?;
            Command::Expose(inst.args.clone())
        }
        "volume" => {
            no_flags(inst)?;
            at_least_one(inst, "VOLUME")?;
            Command::Volume(inst.args.clone())
        }
        "stopsignal" => {
            no_flags(inst)?;
            Command::StopSignal(exactly_one(inst, "STOPSIGNAL")?)
        }
        "shell" => {
            no_flags(inst)?;
            if !inst.json {
                return err(inst, "SHELL requires the arguments to be in JSON form");
            }
            at_least_one(inst, "SHELL")?;
            Command::Shell(inst.args.clone())
        }
        "maintainer" => {
            no_flags(inst)?;
            Command::Maintainer(inst.args.join(" "))
        }
        "healthcheck" => Command::Healthcheck(parse_healthcheck(inst)?),
        "onbuild" => {
            no_flags(inst)?;
            let Some(inner) = &inst.onbuild else {
                return err(inst, "ONBUILD requires at least one argument");
            };
            match inner.keyword.to_lowercase().as_str() {
                "onbuild" => {
                    return err(inst, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
                }
                "maintainer" | "from" => {
                    return err(
                        inst,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            inner.keyword.to_uppercase()
                        ),
                    );
                }
                _ => {}
            }
            Command::Onbuild(inner.original.trim().to_string())
        }
        "from" => return err(inst, "FROM is not allowed here"),
        other => {
            return err(
                inst,
                format!("unknown instruction: {}", other.to_uppercase()),
            );
        }
    })
}

/// Groups the instructions into stages and types each command.
pub fn parse(df: &Dockerfile) -> Result<Parsed, InstructionError> {
    let mut parsed = Parsed::default();
    for inst in &df.instructions {
        let kw = inst.keyword.to_lowercase();
        if kw == "from" {
            parsed.stages.push(parse_from(inst)?);
            continue;
        }
        let command = parse_command(inst)?;
        match parsed.stages.last_mut() {
            Some(stage) => stage.commands.push(Located {
                command,
                source: Source::of(inst),
            }),
            None => match command {
                Command::Arg(args) => parsed.meta_args.push((args, Source::of(inst))),
                _ => {
                    return err(
                        inst,
                        format!(
                            "no build stage in current context: {} must come after a FROM (only ARG may come before it)",
                            inst.keyword.to_uppercase()
                        ),
                    );
                }
            },
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Parsed, InstructionError> {
        parse(&crate::parse(s).expect("parses"))
    }

    #[test]
    fn stages_and_meta_args() {
        let p =
            parse_str("ARG A=1\nFROM x AS Build\nRUN a\nFROM scratch\nCOPY --from=build /a /b\n")
                .unwrap();
        assert_eq!(p.meta_args.len(), 1);
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].name.as_deref(), Some("build"));
        let Command::Copy(c) = &p.stages[1].commands[0].command else {
            panic!("copy expected")
        };
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.sources, ["/a"]);
        assert_eq!(c.dest, "/b");
    }

    #[test]
    fn flag_errors_name_the_line() {
        let e = parse_str("FROM x\n\nCOPY --chmd=7 a b\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown flag: --chmd"), "{}", e.message);
        let e = parse_str("FROM x\nCOPY --from=a --from=b a b\n").unwrap_err();
        assert!(e.message.contains("duplicate flag"), "{}", e.message);
        let e = parse_str("FROM x\nCOPY --link=maybe a b\n").unwrap_err();
        assert!(e.message.contains("boolean"), "{}", e.message);
        let e = parse_str("FROM x\nCOPY a\n").unwrap_err();
        assert!(
            e.message.contains("at least two arguments"),
            "{}",
            e.message
        );
    }

    #[test]
    fn instruction_before_from_is_an_error() {
        let e = parse_str("RUN x\nFROM y\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("FROM"), "{}", e.message);
    }

    #[test]
    fn bad_stage_names_are_rejected() {
        assert!(parse_str("FROM x AS 1abc\n").is_err());
        assert!(parse_str("FROM x AS a$b\n").is_err());
        assert!(parse_str("FROM x AS\n").is_err());
        assert!(parse_str("FROM x FOR y\n").is_err());
    }

    #[test]
    fn healthcheck_forms() {
        let p =
            parse_str("FROM x\nHEALTHCHECK --interval=5s CMD true\nHEALTHCHECK NONE\n").unwrap();
        let Command::Healthcheck(h) = &p.stages[0].commands[0].command else {
            panic!()
        };
        assert_eq!(h.test, ["CMD-SHELL", "true"]);
        assert_eq!(h.interval.as_deref(), Some("5s"));
        let Command::Healthcheck(h) = &p.stages[0].commands[1].command else {
            panic!()
        };
        assert_eq!(h.test, ["NONE"]);
    }

    #[test]
    fn unknown_instruction() {
        let e = parse_str("FROM x\nFOO bar\n").unwrap_err();
        assert_eq!(e.message, "unknown instruction: FOO");
    }
}
