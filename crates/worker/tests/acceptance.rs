//! The worker end to end, as root with real runc, overlayfs and a real registry: pull
//! busybox, unpack it into a snapshot, run a process as a non-root user from the image's
//! /etc/passwd, commit, and check that the layer computed against the parent holds exactly
//! what the process changed (and a whiteout for what it deleted). Run with both
//! snapshotters.

use std::collections::BTreeSet;
use std::io::Read;

use executor::{Output, RunRequest, Stream};
use tokio_util::sync::CancellationToken;
use worker::{Worker, WorkerOptions};

fn require_root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "worker tests need root in CI"
    );
    eprintln!("SKIPPED: worker tests need root");
    false
}

/// Runs `args` as `user` on a new snapshot `key` over `parent`, commits it as `name`, and
/// returns stdout.
async fn step(w: &Worker, parent: &str, name: &str, user: &str, script: &str) -> String {
    let active = format!("{name}-active");
    let mounts = w.snapshotter.prepare(&active, Some(parent)).unwrap();
    let mut req = RunRequest::new(
        name.replace(['/', '-'], ""),
        mounts,
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    req.user = user.to_string();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Output>(64);
    let run = w.executor.run(req, tx, CancellationToken::new());
    let collect = async {
        let mut out = String::new();
        while let Some(o) = rx.recv().await {
            if o.stream == Stream::Stdout {
                out.push_str(&String::from_utf8_lossy(&o.data));
            } else {
                eprint!("{}", String::from_utf8_lossy(&o.data));
            }
        }
        out
    };
    let (res, out) = tokio::join!(run, collect);
    res.unwrap();
    w.snapshotter.commit(name, &active).unwrap();
    out
}

/// The entries of the layer of `key` over `parent`: (path, content for regular files).
fn layer(w: &Worker, key: &str, parent: &str) -> Vec<(String, Option<Vec<u8>>, u64)> {
    let mut buf = Vec::new();
    let stats = w
        .diff(
            key,
            Some(parent),
            &mut buf,
            &archive::DiffOptions::default(),
        )
        .unwrap();
    assert_eq!(stats.diff_id, oci::Digest::of(&buf));
    let mut ar = tar::Archive::new(&buf[..]);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let uid = e.header().uid().unwrap();
        let data = if e.header().entry_type().is_file() {
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            Some(d)
        } else {
            None
        };
        out.push((path, data, uid));
    }
    out
}

fn mounts_under(root: &std::path::Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&root))
        .map(String::from)
        .collect()
}

async fn pull_run_commit_diff(snapshotter: &str) {
    if !require_root() {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let image = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = Worker::open(
        dir.path(),
        WorkerOptions {
            snapshotter: Some(snapshotter.into()),
            ..WorkerOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(w.snapshotter.name(), snapshotter);

    let (pulled, top) = w
        .pull(
            &format!("{}/busybox:latest", reg.host()),
            &llb::Platform::host(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
    let base = top.unwrap();

    // Let the unprivileged user write at the root, as a Dockerfile would with a
    // `RUN chmod`; that step is its own layer.
    step(&w, &base, "open-root", "root", "chmod 1777 /").await;

    // The acceptance step proper: a non-root user from /etc/passwd.
    let out = step(&w, "open-root", "write-out", "user", "echo hi > /out; id").await;
    assert!(out.contains("uid=1000(user) gid=1000(user)"), "{out}");
    let entries = layer(&w, "write-out", "open-root");
    let paths: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(paths, ["out"], "the layer holds exactly /out");
    assert_eq!(entries[0].1.as_deref(), Some(&b"hi\n"[..]));
    assert_eq!(entries[0].2, 1000, "owned by the user that wrote it");

    // Deleting a file gives exactly its whiteout.
    step(&w, "write-out", "remove-out", "root", "rm /out").await;
    let entries = layer(&w, "remove-out", "write-out");
    let paths: BTreeSet<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(paths, BTreeSet::from([".wh.out"]));

    // Deleting a file of the image itself also gives a whiteout, in its directory.
    step(&w, &base, "remove-group", "root", "rm /etc/group").await;
    let entries = layer(&w, "remove-group", &base);
    let paths: BTreeSet<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    assert!(paths.contains("etc/.wh.group"), "{paths:?}");
    assert!(
        paths
            .iter()
            .all(|p| *p == "etc/.wh.group" || *p == "etc" || *p == "etc/"),
        "{paths:?}"
    );

    // Nothing stays mounted under the worker root, and no runc container remains.
    assert!(
        mounts_under(w.root()).is_empty(),
        "{:?}",
        mounts_under(w.root())
    );
    let runc = std::process::Command::new("runc")
        .arg("--root")
        .arg(w.root().join("executor/runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&runc.stdout).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn overlay_pull_run_commit_diff() {
    pull_run_commit_diff("overlayfs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn native_pull_run_commit_diff() {
    pull_run_commit_diff("native").await;
}
