//! Compiles every `.proto` under `proto/` with `protox` (no system `protoc`) and generates
//! prost messages and tonic services. Maps are `BTreeMap` so that encoding is deterministic
//! (sorted keys), which LLB digests depend on.
//!
//! A few `pb` messages (`Op` and those with maps) are written by hand in `src/gowire.rs` so
//! that they encode byte for byte as Go does (see there); `extern_path` makes the generated
//! code use those types.

use std::path::{Path, PathBuf};

/// `pb` messages whose encoding is hand-written in `src/gowire.rs`.
const GO_WIRE_MESSAGES: [&str; 6] = [
    "Op",
    "SourceOp",
    "BuildOp",
    "OpMetadata",
    "Definition",
    "Source",
];

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let mut config = tonic_prost_build::configure().btree_map(".");
    for name in GO_WIRE_MESSAGES {
        config = config.extern_path(format!(".pb.{name}"), format!("crate::gowire::{name}"));
    }
    config
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
