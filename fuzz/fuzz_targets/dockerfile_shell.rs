//! Feeds arbitrary words to the shell-word lexer in its plain and raw modes, with both escape
//! tokens: it must expand or return a ShellError, never panic; split words are never empty.
#![no_main]

use dockerfile::shell::{EnvList, Lexer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(word) = std::str::from_utf8(data) else { return };
    let env = EnvList::from_entries(["A=x*y/z", "B=", "C= a b ", "D=[a]?\\"]);
    for escape in ['\\', '`'] {
        for raw in [false, true] {
            let lexer = Lexer {
                raw_quotes: raw,
                raw_escapes: raw,
                skip_unset_env: raw,
                ..Lexer::new(escape)
            };
            if let Ok(e) = lexer.process(word, &env) {
                assert!(e.words.iter().all(|w| !w.is_empty()));
            }
        }
    }
});
