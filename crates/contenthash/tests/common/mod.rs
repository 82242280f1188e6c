//! Helpers shared by the integration tests: building trees from a short description,
//! options shorthands and the root check.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use contenthash::ChecksumOptions;

/// Whether the test may run: true as root (it needs files owned by uid 0, or chown).
/// Without root it fails when `CI` is set and otherwise skips loudly.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI is set: refusing to skip"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs root");
    false
}

/// Creates entries under `root`, one per line: `dir PATH`, `file PATH [DATA]`,
/// `link PATH TARGET`. Directories get mode 0755 (the root too), files 0644, as
/// upstream's test snapshots have them.
pub fn build(root: &Path, lines: &[&str]) {
    set_mode(root, 0o755);
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let p = root.join(f[1]);
        match f[0] {
            "dir" => {
                std::fs::create_dir(&p).unwrap();
                set_mode(&p, 0o755);
            }
            "file" => {
                std::fs::write(&p, f.get(2).copied().unwrap_or("")).unwrap();
                set_mode(&p, 0o644);
            }
            "link" => symlink(f[2], &p).unwrap(),
            other => panic!("unknown entry kind {other} in {line:?}"),
        }
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A fresh directory with `lines` built in it.
pub fn tree(lines: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), lines);
    d
}

pub fn plain() -> ChecksumOptions {
    ChecksumOptions::default()
}

pub fn follow() -> ChecksumOptions {
    ChecksumOptions {
        follow_links: true,
        ..Default::default()
    }
}

pub fn wildcard() -> ChecksumOptions {
    ChecksumOptions {
        wildcard: true,
        ..Default::default()
    }
}

pub fn include(patterns: &[&str]) -> ChecksumOptions {
    ChecksumOptions {
        include_patterns: patterns.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

pub fn exclude(patterns: &[&str]) -> ChecksumOptions {
    ChecksumOptions {
        exclude_patterns: patterns.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}
