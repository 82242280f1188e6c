use super::*;

fn parsed(src: &str) -> Dockerfile {
    parse(src).unwrap_or_else(|e| panic!("{e}"))
}

fn doc(name: &str, content: &str, expand: bool, chomp: bool, fd: u64) -> Heredoc {
    Heredoc {
        name: name.to_string(),
        file_descriptor: fd,
        expand,
        chomp,
        content: content.to_string(),
    }
}

/// Upstream's TestParseExtractsHeredoc.
#[test]
fn heredocs_like_upstream() {
    let src = "
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN \"<<NOHEREDOC\"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-EXPAND
\texpand $NAME
EXPAND

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<EOF /quotes
\"foo\"
'bar'
EOF

COPY <<X <<Y /dest
Y
X
X
Y

RUN <<COMPLEX python3
print('hello world')
COMPLEX

COPY <<file.txt /dest
hello world
file.txt

RUN <<eo'f'
echo foo
eof

RUN <<eo\\'f
echo foo
eo'f

RUN <<'e'o\\'f
echo foo
eo'f

RUN <<'one two'
echo bar
one two

RUN <<$EOF
$EOF

RUN <<  EOF
EOF

RUN <<  EOF  > foo
EOF
\t";
    let expected: Vec<Vec<Heredoc>> = vec![
        vec![],
        vec![],
        vec![],
        vec![],
        vec![doc("EMPTY", "", true, false, 0)],
        vec![doc("EMPTY2", "", true, false, 3)],
        vec![],
        vec![doc("INDENT", "\tfoo\n\tbar\n", true, false, 0)],
        vec![doc("UNINDENT", "\tbaz\n\tquux\n", true, true, 0)],
        vec![doc("UNINDENT2", "\tbaz\n\tquux\n", true, true, 0)],
        vec![doc("EXPAND", "\texpand $NAME\n", true, true, 0)],
        vec![doc("NOEXPAND", "\tdon't expand $NAME\n", false, true, 0)],
        vec![doc(
            "COPY",
            "echo hello world\necho foo bar\n",
            true,
            false,
            0,
        )],
        vec![doc(
            "COMMENT",
            "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            true,
            false,
            0,
        )],
        vec![doc("MOUNT", "echo hello\n", true, false, 0)],
        vec![
            doc("FILE1", "content 1\n", true, false, 0),
            doc("FILE2", "content 2\n", true, false, 0),
        ],
        vec![doc("EOF", "\"foo\"\n'bar'\n", true, false, 0)],
        vec![
            doc("X", "Y\n", true, false, 0),
            doc("Y", "X\n", true, false, 0),
        ],
        vec![doc("COMPLEX", "print('hello world')\n", true, false, 0)],
        vec![doc("file.txt", "hello world\n", true, false, 0)],
        vec![doc("eof", "echo foo\n", false, false, 0)],
        vec![doc("eo'f", "echo foo\n", true, false, 0)],
        vec![doc("eo'f", "echo foo\n", false, false, 0)],
        vec![doc("one two", "echo bar\n", false, false, 0)],
        vec![doc("$EOF", "", true, false, 0)],
        vec![doc("EOF", "", true, false, 0)],
        vec![doc("EOF", "", true, false, 0)],
    ];
    let df = parsed(src);
    assert_eq!(df.instructions.len(), expected.len() + 1);
    for (i, want) in expected.iter().enumerate() {
        let got = &df.instructions[i + 1];
        assert_eq!(
            &got.heredocs,
            want,
            "instruction {} ({})",
            i + 1,
            got.original
        );
    }
    // `USER <<INVALID` has no heredoc, so its delimiter line is an unknown
    // instruction of its own.
    assert_eq!(df.instructions[4].keyword, "INVALID");
}

#[test]
fn json_form_has_no_heredocs() {
    let df = parsed("FROM alpine\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n");
    assert!(df.instructions.iter().all(|i| i.heredocs.is_empty()));
    assert_eq!(df.instructions.len(), 4);
}

#[test]
fn heredoc_under_onbuild_and_lines() {
    let df = parsed("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN x\n");
    let onbuild = &df.instructions[1];
    assert_eq!(
        onbuild.heredocs,
        vec![doc("EOF", "echo hi\n", true, false, 0)]
    );
    assert_eq!((onbuild.start_line, onbuild.end_line), (2, 4));
    assert_eq!(df.instructions[2].start_line, 5);
}

#[test]
fn heredoc_with_crlf_and_chomped_terminator() {
    let df = parsed("FROM a\r\nRUN <<-EOF\r\n\techo\r\n\t\tEOF\r\n");
    assert_eq!(
        df.instructions[1].heredocs,
        vec![doc("EOF", "\techo\r\n", true, true, 0)]
    );
}

#[test]
fn unterminated_heredoc_names_the_line() {
    let err = parse("FROM a\n\nRUN <<EOF\necho hi\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:3: unterminated heredoc \"EOF\""
    );
    assert_eq!((err.line, err.end_line), (3, 4));
    let err = parse("FROM a\nCOPY <<A <<B /x\na\nA\nb\n").unwrap_err();
    assert_eq!(err.kind, ParseErrorKind::UnterminatedHeredoc("B".into()));
}

#[test]
fn bad_heredoc_delimiter_is_an_error() {
    let err = parse("FROM a\nRUN <<${X:-\\'}\nx\n").unwrap_err();
    assert!(matches!(err.kind, ParseErrorKind::Heredoc(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("Dockerfile:2: invalid heredoc delimiter"),
        "{err}"
    );
}

#[test]
fn error_messages_name_file_and_line() {
    let cases = [
        (
            "FROM a\n\nENV PATH\n",
            "Dockerfile:3: ENV must have two arguments",
        ),
        (
            "FROM a\nLABEL a=b c\n",
            "Dockerfile:2: Syntax error - can't find = in \"c\". Must be of the form: name=value",
        ),
        (
            "FROM a\nCMD [ \"echo\", [ \"nested json\" ] ]\n",
            "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only",
        ),
        (
            "# escape=x\nFROM a\n",
            "Dockerfile:1: invalid escape token 'x' does not match ` or \\",
        ),
        (
            "# syntax=a\n# SYNTAX=b\nFROM a\n",
            "Dockerfile:2: only one syntax parser directive can be used",
        ),
        ("", "Dockerfile:1: file with no instructions"),
        ("# a\n# b\n\n", "Dockerfile:3: file with no instructions"),
    ];
    for (src, msg) in cases {
        assert_eq!(
            parse(src).map(|_| ()).unwrap_err().to_string(),
            msg,
            "{src:?}"
        );
    }
    let err = parse_named("FROM a\nRUN x \\\n  y\nENV A\n", "build/app.Dockerfile").unwrap_err();
    assert_eq!(
        err.to_string(),
        "build/app.Dockerfile:4: ENV must have two arguments"
    );
    let err = parse("FROM a\nENV A \\\n \\\n").unwrap_err();
    assert_eq!((err.line, err.end_line), (2, 3));
}

#[test]
fn unknown_instructions_are_kept() {
    let df = parsed("FROM a\nFROB --x y z\n");
    let frob = &df.instructions[1];
    assert_eq!((frob.keyword.as_str(), frob.is_known()), ("FROB", false));
    assert_eq!(frob.flags, vec!["--x".to_string()]);
    assert_eq!(frob.args, vec![String::new()]);
    assert!(df.instructions[0].is_known());
}

#[test]
fn backtick_escape_directive() {
    let src = "# escape=`\nFROM windows\nRUN dir c:\\ `\n  && echo `\n  done\nCOPY a\\ b c\\\n";
    let df = parsed(src);
    assert_eq!(df.escape_token, '`');
    assert_eq!(df.directive("escape"), Some("`"));
    assert_eq!(
        df.instructions[1].args,
        vec!["dir c:\\   && echo   done".to_string()]
    );
    assert_eq!(
        (df.instructions[1].start_line, df.instructions[1].end_line),
        (3, 5)
    );
    // A trailing backslash is ordinary text with a backtick escape.
    assert_eq!(
        df.instructions[2].args,
        vec!["a\\".to_string(), "b".to_string(), "c\\".to_string()]
    );
    assert_eq!(df.instructions.len(), 3);
}

#[test]
fn directives_only_at_the_top() {
    let df = parsed(
        "# syntax=docker/dockerfile:1\n# check=skip=all\n# a comment\n# escape=`\nFROM a \\\n  b\n",
    );
    assert_eq!(df.directive("syntax"), Some("docker/dockerfile:1"));
    assert_eq!(df.directive("check"), Some("skip=all"));
    assert_eq!(df.directive("escape"), None);
    assert_eq!(df.escape_token, '\\');
    assert_eq!(
        df.instructions[0].args,
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(
        df.instructions[0].comments,
        vec!["a comment".to_string(), "escape=`".to_string()]
    );
    // A blank line ends the directives too; an unknown directive is a comment.
    let df = parsed("\n# escape=`\nFROM a\n");
    assert_eq!(df.escape_token, '\\');
    let df = parsed("# foo=bar\n# escape=`\nFROM a\n");
    assert_eq!(df.escape_token, '\\');
    assert_eq!(
        df.instructions[0].comments,
        vec!["foo=bar".to_string(), "escape=`".to_string()]
    );
}

#[test]
fn bom_is_ignored() {
    let df = parsed("\u{feff}# escape=`\nFROM a\n");
    assert_eq!(df.escape_token, '`');
}

/// Upstream's TestParseWarnsOnEmptyContinutationLine.
#[test]
fn empty_continuation_lines_warn() {
    let src = "
FROM alpine:3.6

RUN valid \\
    continuation

RUN something \\

    following \\

    more

RUN another \\

    thing

RUN non-indented \\
# this is a comment
   after-comment

RUN indented \\
    # this is an indented comment
    comment
\t";
    let df = parsed(src);
    assert_eq!(df.warnings.len(), 2);
    assert!(
        df.warnings[0]
            .short
            .contains("Empty continuation line found in")
    );
    assert!(
        df.warnings[0]
            .short
            .contains("RUN something     following     more")
    );
    assert!(df.warnings[1].short.contains("RUN another     thing"));
    assert!(
        df.warnings[0]
            .detail
            .contains("will become errors in a future release")
    );
    assert_eq!(df.warnings[0].rule, "NoEmptyContinuation");
    assert_eq!(df.warnings[0].line, 11);
}

#[test]
fn comments_attach_to_the_next_instruction() {
    let df = parsed("# one\n#\n# two\n  # three\nFROM a\nRUN b\n");
    assert_eq!(
        df.instructions[0].comments,
        vec!["two".to_string(), "# three".to_string()]
    );
    assert!(df.instructions[1].comments.is_empty());
}

#[test]
fn original_and_flags() {
    let df = parsed("FROM a\nCOPY --from=b \\\n  --chown=1:1 x /y\n");
    let copy = &df.instructions[1];
    assert_eq!(copy.original, "COPY --from=b   --chown=1:1 x /y");
    assert_eq!(
        copy.flags,
        vec!["--from=b".to_string(), "--chown=1:1".to_string()]
    );
    assert_eq!(copy.args, vec!["x".to_string(), "/y".to_string()]);
    assert_eq!((df.start_line(), df.end_line()), (1, 3));
}

fn dump(src: &str) -> String {
    parse(src)
        .map(|d| d.dump())
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn dump_instructions() {
    assert_eq!(dump("FROM a AS b\n"), "(from \"a\" \"AS\" \"b\")");
    assert_eq!(
        dump("run --network=none [\"a\", \"b\"]"),
        "(run [\"--network=none\"] \"a\" \"b\")"
    );
    assert_eq!(dump("CMD []"), "(cmd)");
    assert_eq!(
        dump("ENV a=b c=\"d e\""),
        "(env \"a\" \"b\" \"=\" \"c\" \"\\\"d e\\\"\" \"=\")"
    );
    assert_eq!(
        dump("ONBUILD COPY --from=x a b"),
        "(onbuild (copy [\"--from=x\"] \"a\" \"b\"))"
    );
    assert_eq!(dump("ONBUILD"), "(onbuild)");
    assert_eq!(dump("HEALTHCHECK NONE"), "(healthcheck \"NONE\")");
    assert_eq!(dump("FOO bar"), "(foo \"\")");
    assert_eq!(dump("RUN \u{1}\u{a0}"), "(run \"\\x01\")");
    assert_eq!(dump("RUN a\u{a0}b"), "(run \"a\\u00a0b\")");
}

#[test]
fn dump_of_an_empty_instruction_from_a_lone_escape() {
    // A lone continuation escape at the end of the file is an instruction
    // with an empty keyword, and dumps as upstream's does.
    assert_eq!(dump("FROM a\n\\"), "(from \"a\")\n(\"\")");
}
