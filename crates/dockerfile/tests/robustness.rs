//! Property tests: the parser and the lexer never panic, and what they
//! return is consistent, on input built from the characters that matter to
//! them.

use dockerfile::shell::{EnvList, Lexer};
use proptest::prelude::*;

/// Fragments that exercise directives, continuations, heredocs, JSON, flags,
/// quotes and substitutions.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\\\n".to_string()),
        Just("`\n".to_string()),
        Just("# escape=`\n".to_string()),
        Just("# syntax=x\n".to_string()),
        Just("#\n".to_string()),
        Just("FROM ".to_string()),
        Just("RUN ".to_string()),
        Just("COPY ".to_string()),
        Just("ENV ".to_string()),
        Just("LABEL ".to_string()),
        Just("ARG ".to_string()),
        Just("HEALTHCHECK ".to_string()),
        Just("ONBUILD ".to_string()),
        Just("<<EOF".to_string()),
        Just("<<-'EOF'".to_string()),
        Just("EOF\n".to_string()),
        Just("\tEOF\n".to_string()),
        Just("--from=a ".to_string()),
        Just("[\"a\", ".to_string()),
        Just("]".to_string()),
        Just("[1]".to_string()),
        Just("${A:-".to_string()),
        Just("${A#*".to_string()),
        Just("${A//x/".to_string()),
        Just("}".to_string()),
        Just("$A".to_string()),
        "[ a=\"'\\\\`$#{}\\[\\]/*?%:+-]{1,4}".prop_map(String::from),
        "\\PC{1,3}".prop_map(String::from),
    ]
}

fn source() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn parse_never_panics(src in source()) {
        match dockerfile::parse(&src) {
            Ok(df) => {
                let _ = df.dump();
                let total = src.split_inclusive('\n').count();
                let mut previous_end = 0;
                for i in &df.instructions {
                    prop_assert!(i.start_line > previous_end, "{i:?}");
                    prop_assert!(i.start_line <= i.end_line && i.end_line <= total, "{i:?}");
                    previous_end = i.end_line;
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("Dockerfile:"), "{msg}");
                prop_assert!(e.line >= 1 && e.line <= e.end_line);
            }
        }
    }

    #[test]
    fn lexer_never_panics(word in source(), escape in prop_oneof![Just('\\'), Just('`')]) {
        let env = EnvList::from_entries(["A=x*y/z", "B=", "C= a b "]);
        for raw in [false, true] {
            let lexer = Lexer { raw_quotes: raw, raw_escapes: raw, skip_unset_env: raw, ..Lexer::new(escape) };
            let expansion = lexer.process(&word, &env);
            if let Ok(e) = expansion {
                prop_assert!(e.words.iter().all(|w| !w.is_empty()));
            }
        }
    }
}
