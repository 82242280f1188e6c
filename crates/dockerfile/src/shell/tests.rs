use std::collections::{BTreeSet, HashMap};

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn mandatory_vars() {
    let lex = Lexer::default();
    let set_env = EnvList::from_entries(["VAR=plain", "ARG=x"]);
    let empty_env = EnvList::from_entries(["VAR=", "ARG=x"]);
    let unset_env = EnvList::from_entries(["ARG=x"]);
    let no_empty = "${VAR:?message here$ARG}";
    let no_unset = "${VAR?message here$ARG}";

    assert_eq!(lex.process_word(no_empty, &set_env).as_deref(), Ok("plain"));
    let err = lex.process_word(no_empty, &empty_env).unwrap_err();
    assert!(err.to_string().contains("message herex"), "{err}");
    let err = lex.process_word(no_empty, &unset_env).unwrap_err();
    assert!(err.to_string().contains("message herex"), "{err}");

    assert_eq!(lex.process_word(no_unset, &set_env).as_deref(), Ok("plain"));
    assert_eq!(lex.process_word(no_unset, &empty_env).as_deref(), Ok(""));
    let err = lex.process_word(no_unset, &unset_env).unwrap_err();
    assert!(err.to_string().contains("message herex"), "{err}");
    assert_eq!(
        err.to_string(),
        r#"failed to process "${VAR?message here$ARG}": VAR: message herex"#
    );
}

#[test]
fn env_list_last_wins() {
    let e = EnvList::from_entries(["foo=bar", "car=hat", "car=bike", "bare"]);
    assert_eq!(e.get("foo"), Some("bar"));
    assert_eq!(e.get("car"), Some("bike"));
    assert_eq!(e.get("bare"), Some(""));
    assert_eq!(e.get("none"), None);
    assert_eq!(e.keys(), vec!["foo", "car", "bare"]);
}

/// Upstream's TestProcessWithMatches: (input, env, expected result or None
/// for an error, matched, unmatched).
#[test]
fn matches_and_modifiers() {
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
    );
    let fb: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
    let cases: &[Case<'_>] = &[
        ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
        (
            "x ${UNUSED}",
            &[("DUMMY", "dummy")],
            Some("x "),
            &[],
            &["UNUSED"],
        ),
        ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            fb,
            Some("xxx  ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            fb,
            Some("xxx bbb ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO:-}", fb, Some("xxx"), &["FOO"], &[]),
        ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            fb,
            Some("aaa bbb "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            fb,
            Some("aaa  "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO?aaa}", fb, Some("xxx"), &["FOO"], &[]),
        ("${BAR?bbb}", fb, Some(""), &["BAR"], &[]),
        ("${BAZ?ccc}", fb, None, &[], &[]),
        ("${FOO:?aaa}", fb, Some("xxx"), &["FOO"], &[]),
        ("${BAR:?bbb}", fb, None, &[], &[]),
        ("${BAZ:?ccc}", fb, None, &[], &[]),
        ("${BAZ:?}", fb, None, &[], &[]),
        ("${FOO=aaa}", fb, None, &[], &[]),
        ("${FOO=:aaa}", fb, None, &[], &[]),
        ("${FOO=}", &[], None, &[], &[]),
        (
            "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
            &[("FOO", "()[]{}^$.*?|\\x")],
            Some("x"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO%%\\**}",
            &[("FOO", "xx**")],
            Some("xx"),
            &["FOO"],
            &[],
        ),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "x")],
            Some("xyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
            &["FOO"],
            &["ABC"],
        ),
        (
            "${FOO%%\\**\\*}",
            &[("FOO", "a***yy*")],
            Some("a"),
            &["FOO"],
            &[],
        ),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO:#}", &[], None, &[], &[]),
        ("${FOO:##}", &[], None, &[], &[]),
        ("${FOO:%}", &[], None, &[], &[]),
        ("${FOO:%%}", &[], None, &[], &[]),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "/a/foo/b/c.txt"),
                ("NEEDLE", "/?/"),
                ("REPLACEMENT", "/"),
            ],
            Some("/foo/b/c.txt - /foo/c.txt"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO//\\//\\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some("\\/tmp\\/foo.txt"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO///}", &[], Some(""), &[], &["FOO"]),
    ];
    let lex = Lexer::default();
    for (input, vars, expected, matched, unmatched) in cases {
        let res = lex.process(input, &env(vars));
        match expected {
            None => assert!(res.is_err(), "{input}: expected an error, got {res:?}"),
            Some(expected) => {
                let res = res.unwrap_or_else(|e| panic!("{input}: {e}"));
                assert_eq!(res.result, *expected, "{input}");
                assert_eq!(res.matched, set(matched), "{input}");
                assert_eq!(res.unmatched, set(unmatched), "{input}");
            }
        }
    }
}

#[test]
fn platform_release_name() {
    let lex = Lexer::default();
    let release =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
    let mut e = env(&base);
    e.insert("TARGETARCH".into(), "arm".into());
    e.insert("TARGETVARIANT".into(), "v7".into());
    assert_eq!(
        lex.process_word(release, &e).as_deref(),
        Ok("something-v1.2.3.linux-arm-v7.tar.gz")
    );
    e.insert("TARGETARCH".into(), "arm64".into());
    e.insert("TARGETVARIANT".into(), String::new());
    assert_eq!(
        lex.process_word(release, &e).as_deref(),
        Ok("something-v1.2.3.linux-arm64.tar.gz")
    );
    e.remove("TARGETVARIANT");
    assert_eq!(
        lex.process_word(release, &e).as_deref(),
        Ok("something-v1.2.3.linux-arm64.tar.gz")
    );
}

#[test]
fn backtick_escape() {
    let lex = Lexer::new('`');
    let e = env(&[("A", "x")]);
    assert_eq!(lex.process_word("a`$A\\b", &e).as_deref(), Ok("a$A\\b"));
    assert_eq!(lex.process_word("\"`\"$A\"", &e).as_deref(), Ok("\"x"));
    assert_eq!(
        lex.process_words("a` b c", &e),
        Ok(vec!["a b".to_string(), "c".to_string()])
    );
}

#[test]
fn words_split_on_expanded_whitespace() {
    let lex = Lexer::default();
    let e = env(&[("S", " a  b ")]);
    assert_eq!(
        lex.process_words("x${S}y", &e),
        Ok(vec!["x".into(), "a".into(), "b".into(), "y".into()])
    );
    assert_eq!(
        lex.process_words("x\"${S}\"y", &e),
        Ok(vec!["x a  b y".into()])
    );
    assert_eq!(lex.process_words("ab${X:-c}d", &e), Ok(vec!["abcd".into()]));
    assert_eq!(lex.process_words("'' x", &e), Ok(vec!["x".into()]));
}

#[test]
fn raw_modes_keep_quotes_and_escapes() {
    let lex = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lexer::default()
    };
    let words = lex.process_words("RUN <<'E O F' a\\ b $X ${Y:-z} <<  EOF", &EmptyEnv);
    assert_eq!(
        words,
        Ok(vec![
            "RUN".into(),
            "<<'E O F'".into(),
            "a\\ b".into(),
            "$X".into(),
            "${Y:-z}".into(),
            "<<  EOF".into()
        ])
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let lex = Lexer::default();
    let deep = "${a:-".repeat(10_000) + &"}".repeat(10_000);
    let err = lex.process_word(&deep, &EmptyEnv).unwrap_err();
    assert_eq!(err.kind, ShellErrorKind::TooDeep(word::MAX_NESTING));
    let ok = "${a:-".repeat(50) + "x" + &"}".repeat(50);
    assert_eq!(lex.process_word(&ok, &EmptyEnv).as_deref(), Ok("x"));
}
