//! Holds the parser and the shell lexer against upstream BuildKit's own test
//! data (moby/buildkit v0.32.2), read from `shared/conformance/dockerfile/`
//! beside the repository. Missing data is a failure, never a silent pass.

use std::fs;
use std::path::{Path, PathBuf};

use dockerfile::shell::{EnvList, Lexer};

/// `shared/conformance/dockerfile`, which must exist.
fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/dockerfile");
    assert!(
        dir.is_dir(),
        "conformance data missing: {} does not exist (it comes from shared/ beside the repository)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The case directories under `dir`, sorted by name.
fn cases(dir: &Path) -> Vec<(String, PathBuf)> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    let mut cases: Vec<(String, PathBuf)> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_dir())
        .map(|p| {
            (
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                p,
            )
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    cases
}

/// Fails with every problem listed, after all cases ran.
fn report(group: &str, total: usize, failures: &[String]) {
    println!(
        "{group}: {} of {total} cases passed",
        total - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{group}: {} of {total} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn parser_testfiles_dump_like_upstream() {
    let all = cases(&data_dir().join("parser/testfiles"));
    let mut failures = Vec::new();
    for (name, dir) in &all {
        let source = read(&dir.join("Dockerfile"));
        let expected = read(&dir.join("result"));
        let dumped = match dockerfile::parse(&source) {
            Ok(df) => df.dump() + "\n",
            Err(e) => {
                failures.push(format!("{name}: parse error: {e}"));
                continue;
            }
        };
        if dumped == expected {
            continue;
        }
        let (want, got): (Vec<&str>, Vec<&str>) =
            (expected.lines().collect(), dumped.lines().collect());
        let line = (0..want.len().max(got.len()))
            .find(|&i| want.get(i) != got.get(i))
            .unwrap_or(0);
        failures.push(format!(
            "{name}: line {}:\n  expected {:?}\n  got      {:?}",
            line + 1,
            want.get(line),
            got.get(line)
        ));
    }
    report("parser/testfiles", all.len(), &failures);
}

#[test]
fn parser_testfiles_negative_are_rejected() {
    let all = cases(&data_dir().join("parser/testfiles-negative"));
    let mut failures = Vec::new();
    for (name, dir) in &all {
        let source = read(&dir.join("Dockerfile"));
        match dockerfile::parse(&source) {
            Ok(df) => failures.push(format!("{name}: accepted, dumped as {:?}", df.dump())),
            Err(e) => {
                let msg = e.to_string();
                if !msg.starts_with("Dockerfile:") {
                    failures.push(format!(
                        "{name}: error does not name the file and line: {msg}"
                    ));
                }
            }
        }
    }
    report("parser/testfiles-negative", all.len(), &failures);
}

/// Upstream's TestParseIncludesLineNumbers.
#[test]
fn parser_testfile_line_numbers() {
    let source = read(&data_dir().join("parser/testfile-line/Dockerfile"));
    let df = dockerfile::parse(&source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((df.start_line(), df.end_line()), (5, 31));
    let lines: Vec<(usize, usize)> = df
        .instructions
        .iter()
        .map(|i| (i.start_line, i.end_line))
        .collect();
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
    println!("parser/testfile-line: 3 of 3 instructions have upstream's lines");
}

/// Upstream's TestShellParser4EnvVars, on the unix and all-platform rows.
#[test]
fn shell_env_var_test() {
    let path = data_dir().join("shell/envVarTest");
    let env = EnvList::from_entries(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
    let lexer = Lexer::new('\\');
    let (mut total, mut skipped, mut failures) = (0, 0, Vec::new());
    for (n, line) in read(&path).lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(
            fields.len(),
            3,
            "line {}: expected 3 fields: {line:?}",
            n + 1
        );
        let (platform, source, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        match platform {
            "W" => {
                skipped += 1;
                continue;
            }
            "A" | "U" => {}
            other => panic!("line {}: invalid platform tag {other:?}", n + 1),
        }
        total += 1;
        let got = lexer.process_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(word), expected) => expected != "error" && word == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {source:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    println!("shell/envVarTest: skipped {skipped} windows-only rows");
    report("shell/envVarTest", total, &failures);
}

/// Upstream's TestShellParser4Words: `ENV k=v` lines build the environment,
/// other lines are `input | word,word,...` (or `error`).
#[test]
fn shell_words_test() {
    let path = data_dir().join("shell/wordsTest");
    let lexer = Lexer::new('\\');
    let mut envs: Vec<String> = Vec::new();
    let (mut total, mut failures) = (0, Vec::new());
    for (n, line) in read(&path).lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(entry) = line.strip_prefix("ENV ") {
            envs.push(entry.trim_start_matches(' ').to_string());
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(
            fields.len(),
            2,
            "line {}: expected exactly one |: {line:?}",
            n + 1
        );
        total += 1;
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        let env = EnvList::from_entries(&envs);
        let got = lexer
            .process_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        if got != expected {
            failures.push(format!(
                "line {}: {input:?}: expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    report("shell/wordsTest", total, &failures);
}
