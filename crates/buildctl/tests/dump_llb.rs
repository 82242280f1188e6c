//! Runs the built `buildctl debug dump-llb` the way users do: a definition on standard input
//! or in a file, output compared with upstream's (`../shared/conformance/llb`), and bad
//! input answered with one clear line and a failure status, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `<workspace>/../shared/conformance/llb/<case>`; fails loudly when the data is missing.
fn case_dir(case: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/llb")
        .join(case);
    assert!(
        dir.join("definition.pb").is_file(),
        "conformance data missing: {} has no definition.pb (see ../shared/conformance/README.md)",
        dir.display()
    );
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs buildctl with `args`, feeding `stdin`.
fn buildctl(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_buildctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run buildctl");
    // The child may exit before reading everything (bad input): ignore a broken pipe.
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    child.wait_with_output().expect("wait for buildctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks a failed run: status 1, nothing on stdout, one line on stderr that contains
/// `needle`, and no panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn stdin_matches_upstream_dump() {
    for case in ["01-run-copy", "04-mounts", "91-nested"] {
        let dir = case_dir(case);
        let out = buildctl(&["debug", "dump-llb"], &read(&dir.join("definition.pb")));
        assert!(out.status.success(), "{case}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            text(&read(&dir.join("dump.jsonl"))),
            "{case}"
        );
    }
}

#[test]
fn file_argument_and_dash() {
    let dir = case_dir("02-multistage");
    let def = dir.join("definition.pb");
    let want = read(&dir.join("dump.jsonl"));

    let out = buildctl(&["debug", "dump-llb", def.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, want);

    let out = buildctl(&["debug", "dump-llb", "-"], &read(&def));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, want);
}

#[test]
fn dot_output() {
    let dir = case_dir("01-run-copy");
    let out = buildctl(
        &["debug", "dump-llb", "--dot"],
        &read(&dir.join("definition.pb")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(
        dot.starts_with("digraph {\n") && dot.ends_with("}\n"),
        "{dot}"
    );
    assert!(
        dot.contains(r#"[label="/bin/sh -c echo hi > /x" shape="box"];"#),
        "{dot}"
    );
    assert!(
        dot.contains(r#"[label="copy{src=/a, dest=/b}" shape="note"];"#),
        "{dot}"
    );
}

#[test]
fn garbage_on_stdin_fails_cleanly() {
    let out = buildctl(
        &["debug", "dump-llb"],
        b"\xff\xfenot a protobuf at all\x00\x01",
    );
    assert_clean_failure(&out, "dump-llb: stdin: ");
}

#[test]
fn empty_stdin_fails_cleanly() {
    let out = buildctl(&["debug", "dump-llb"], b"");
    assert_clean_failure(&out, "dump-llb: stdin: ");
}

#[test]
fn truncated_definition_fails_cleanly() {
    let bytes = read(&case_dir("01-run-copy").join("definition.pb"));
    let out = buildctl(&["debug", "dump-llb"], &bytes[..bytes.len() / 2]);
    assert_clean_failure(&out, "dump-llb: stdin: ");
}

#[test]
fn missing_file_fails_cleanly() {
    let out = buildctl(&["debug", "dump-llb", "/nonexistent/def.pb"], b"");
    assert_clean_failure(&out, "dump-llb: /nonexistent/def.pb: ");
}
