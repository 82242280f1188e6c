//! Incremental `type=local` exports with the real binaries: re-exporting a large tree
//! (20,000 files and a 500 MiB file) into the directory that holds the previous export,
//! after one small change, sends only that change (counted by the daemon's "copying
//! files" status), and leaves the directory as a fresh export would; what the build no
//! longer has is removed, and files that are not the export's are left alone.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Daemon, text};
use sha2::Digest;

const SMALL_FILES: usize = 20_000;
const BIG: usize = 500 << 20;

/// The largest "copying files" count in a rawjson progress stream.
fn copied_bytes(rawjson: &str) -> Option<i64> {
    rawjson
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| v["statuses"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["id"] == "copying files")
        .map(|s| s["current"].as_i64().unwrap_or(0))
        .max()
}

/// Every entry under `root`: type, permissions, owner, size, modification time (not for
/// directories) and a content digest for files, link targets for symlinks.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if md.is_dir() {
                todo.push(p.clone());
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                let mut h = sha2::Sha256::new();
                let mut f = std::fs::File::open(&p).unwrap();
                std::io::copy(&mut f, &mut h).unwrap();
                format!(
                    "{} bytes {} mtime {}.{}",
                    md.size(),
                    hex::encode(h.finalize()),
                    md.mtime(),
                    md.mtime_nsec()
                )
            };
            let line = format!("{:o} {}:{} {what}", md.mode(), md.uid(), md.gid());
            out.insert(rel, line);
        }
    }
    out
}

fn build(d: &Daemon, ctx: &Path, dest: &Path, state: &Path) -> std::process::Output {
    let local_ctx = format!("context={}", ctx.display());
    let local_df = format!("dockerfile={}", ctx.display());
    let output = format!("type=local,dest={}", dest.display());
    let args = [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &local_ctx,
        "--local",
        &local_df,
        "--progress",
        "rawjson",
        "--output",
        &output,
    ];
    let out = common::buildctl_env(&d.addr, &args, None, &[("XDG_STATE_HOME", state)]);
    assert!(out.status.success(), "{}", text(&out));
    out
}

#[test]
fn reexporting_a_large_tree_sends_only_what_changed() {
    if !common::require_root("reexporting_a_large_tree_sends_only_what_changed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    let state = dir.path().join("state");
    for i in 0..SMALL_FILES {
        let sub = ctx.join(format!("d{:03}", i % 200));
        if i < 200 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        std::fs::write(sub.join(format!("f{i:05}")), format!("file {i}\n")).unwrap();
    }
    std::fs::create_dir_all(ctx.join("gone")).unwrap();
    std::fs::write(
        ctx.join("gone/soon.txt"),
        "removed before the second build\n",
    )
    .unwrap();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(ctx.join("big.bin")).unwrap());
        let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        for i in 0..BIG / block.len() {
            f.write_all(&block).unwrap();
            f.write_all(&(i as u64).to_le_bytes()[..1]).unwrap();
        }
    }
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /out/\n").unwrap();

    let d = Daemon::start(dir.path());
    let dest = dir.path().join("dest");
    let first = build(&d, &ctx, &dest, &state);
    let first_sent = copied_bytes(&String::from_utf8_lossy(&first.stderr))
        .expect("a \"copying files\" status in the first export");
    assert!(
        first_sent > BIG as i64,
        "the first export sends everything: {first_sent}"
    );
    let outside = dest.join("not-from-the-build.txt");
    std::fs::write(&outside, "the user's own file\n").unwrap();

    // One small file changed, one removed.
    std::fs::write(ctx.join("d007/f00007"), "file 7, changed\n").unwrap();
    std::fs::remove_dir_all(ctx.join("gone")).unwrap();
    let second = build(&d, &ctx, &dest, &state);
    let second_sent = copied_bytes(&String::from_utf8_lossy(&second.stderr))
        .expect("a \"copying files\" status in the second export");
    eprintln!("first export sent {first_sent} bytes, the re-export {second_sent} bytes");
    assert!(
        second_sent < 1 << 20,
        "re-export sent {second_sent} bytes (first: {first_sent})"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("out/d007/f00007")).unwrap(),
        "file 7, changed\n"
    );
    assert!(!dest.join("out/gone").exists(), "what is gone is removed");
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "the user's own file\n",
        "files that are not the export's stay"
    );
    std::fs::remove_file(&outside).unwrap();

    // The same as a fresh export.
    let fresh = dir.path().join("fresh");
    build(&d, &ctx, &fresh, &state);
    let (got, want) = (tree(&dest), tree(&fresh));
    assert_eq!(got.len(), SMALL_FILES + 200 + 3, "entries");
    assert!(
        got == want,
        "the re-exported tree differs from a fresh export"
    );
    d.stop();
}
