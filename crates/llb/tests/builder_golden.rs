//! Our builder, given the same graphs that upstream's Dockerfile frontend produced for the
//! golden cases in `../shared/conformance/llb`, must produce byte-identical ops (and so the
//! same digests). Expected digests are read from upstream's `dump.jsonl`.

use std::path::PathBuf;

use llb::{
    CacheSharing, CopyOptions, FileAction, MarshalOptions, MkdirOptions, Mount, NetMode, OpOptions,
    Owner, Platform, Secret, State, digest_of, image, merge, scratch,
};

fn conformance_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/llb");
    assert!(
        dir.is_dir(),
        "conformance data missing: {} (it lives in the shared folder beside the repository)",
        dir.display()
    );
    dir
}

/// Upstream's op digests for a case, in Definition order.
fn golden_digests(case: &str) -> Vec<String> {
    let path = conformance_dir().join(case).join("dump.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["Digest"].as_str().unwrap().to_string()
        })
        .collect()
}

fn marshal(st: &State, unique: &str) -> Vec<String> {
    let def = st
        .marshal(&MarshalOptions {
            platform: Some(Platform::new("linux", "amd64", "")),
            local_unique_id: Some(unique.to_string()),
            ..MarshalOptions::default()
        })
        .unwrap();
    def.def.iter().map(|b| digest_of(b)).collect()
}

const BUSYBOX: &str = "127.0.0.1:5000/busybox:latest@sha256:7632065f5f1a7788c92ec84bfcf9bbe7f0e2da14cdeb1f8f79290a120b87fe28";

/// The base image as the frontend sees it after applying the image config.
fn busybox() -> State {
    image(BUSYBOX).env("PATH", llb::DEFAULT_PATH)
}

/// The options the Dockerfile frontend uses for a plain COPY.
fn dockerfile_copy() -> CopyOptions {
    CopyOptions {
        follow_symlinks: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        allow_empty_wildcard: true,
        ..CopyOptions::default()
    }
}

fn context(follow: &[&str]) -> State {
    let mut l = llb::Local::new("context").shared_key_hint("context");
    if !follow.is_empty() {
        l = l.follow_paths(follow.iter().copied());
    }
    l.state()
}

#[test]
fn run_copy_matches_upstream() {
    let run = busybox().run().shell("echo hi > /x").build().root();
    let out = run.file(
        &FileAction::copy(context(&["a"]), "a", "/b", dockerfile_copy()),
        OpOptions::new().custom_name("[3/3] COPY a /b"),
    );
    assert_eq!(
        marshal(&out, "d1pef1sx964p0udk74ix8olpj"),
        golden_digests("01-run-copy")
    );
}

#[test]
fn multistage_matches_upstream() {
    let base = busybox();
    let workdir = base
        .file(
            &FileAction::mkdir(
                "/src",
                0o755,
                MkdirOptions {
                    parents: true,
                    ..MkdirOptions::default()
                },
            ),
            OpOptions::new(),
        )
        .dir("/src");
    let build = workdir.run().shell("echo built > out.txt").build().root();
    let out = scratch().file(
        &FileAction::copy(&build, "/src/out.txt", "/out.txt", dockerfile_copy()),
        OpOptions::new(),
    );
    assert_eq!(marshal(&out, "unused"), golden_digests("02-multistage"));
}

#[test]
fn mounts_match_upstream() {
    let ctx = context(&[]);
    let s = busybox()
        .run()
        .shell("echo x >> /cache/log")
        .mount(Mount::cache("/cache", "/c1", CacheSharing::Locked))
        .build()
        .root();
    let s = s
        .run()
        .shell("echo x > /t/y")
        .mount(Mount::tmpfs("/t"))
        .build()
        .root();
    let s = s
        .run()
        .shell("cat /run/secrets/tok")
        .secret(Secret::file("tok", "/run/secrets/tok").optional())
        .build()
        .root();
    let s = s
        .run()
        .shell("cat /mnt/a")
        .mount(Mount::bind("/mnt/a", &ctx).selector("/a").readonly())
        .build()
        .root();
    let s = s.run().shell("true").network(NetMode::None).build().root();
    assert_eq!(
        marshal(&s, "xll53r2mtmjzh81e9y8vy2huz"),
        golden_digests("04-mounts")
    );
}

#[test]
fn copy_flags_match_upstream() {
    let ctx = context(&["*.txt", "a"]);
    let s = busybox().file(
        &FileAction::copy(
            &ctx,
            "a",
            "/a",
            CopyOptions {
                owner: Some(Owner::ids(1000, 1000)),
                mode: Some(llb::Chmod::Octal(0o640)),
                ..dockerfile_copy()
            },
        ),
        OpOptions::new(),
    );
    let linked = scratch().file(
        &FileAction::copy(&ctx, "a", "/linked", dockerfile_copy()),
        OpOptions::new(),
    );
    let s = merge(&[s, linked], OpOptions::new());
    let s = s.file(
        &FileAction::copy(
            &ctx,
            "a",
            "/added",
            CopyOptions {
                attempt_unpack: true,
                ..dockerfile_copy()
            },
        ),
        OpOptions::new(),
    );
    let s = s.file(
        &FileAction::copy(&ctx, "*.txt", "/txt/", dockerfile_copy()),
        OpOptions::new(),
    );
    assert_eq!(
        marshal(&s, "tzy6vz9falkti1oaktikvnk78"),
        golden_digests("05-copy-flags")
    );
}
