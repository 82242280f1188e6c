//! Feeds arbitrary text to the Dockerfile parser: it must return a Dockerfile or a ParseError
//! naming `Dockerfile:LINE`, never panic; whatever parses must dump, and its instructions'
//! line ranges must be in order and inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    match dockerfile::parse(src) {
        Ok(df) => {
            let _ = df.dump();
            let lines = src.split_inclusive('\n').count();
            let mut previous_end = 0;
            for i in &df.instructions {
                assert!(i.start_line > previous_end && i.start_line <= i.end_line);
                assert!(i.end_line <= lines);
                previous_end = i.end_line;
            }
        }
        Err(e) => {
            assert!(e.to_string().starts_with("Dockerfile:"));
            assert!(e.line >= 1 && e.line <= e.end_line);
        }
    }
});
