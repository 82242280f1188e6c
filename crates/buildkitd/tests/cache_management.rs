//! Cache management with the real binaries: `buildctl du` sizes against `du -sb` of the
//! snapshots, `buildctl prune` with `--keep-storage`, a prune while a build runs, and
//! automatic GC with a tiny bound across ten builds.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, text};
use serde_json::Value;

/// `buildctl du --format json`: the records.
fn records(d: &Daemon) -> Vec<Value> {
    let out = d.buildctl(&["du", "--format", "{{json .}}"], None);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("du --format json is JSON");
    v.as_array().expect("a list of records").clone()
}

fn total(recs: &[Value]) -> u64 {
    recs.iter().map(|r| r["size"].as_u64().unwrap()).sum()
}

/// `du -sb` of `paths` (those that exist), summed.
fn du_sb(paths: &[&Path]) -> u64 {
    paths
        .iter()
        .filter(|p| p.exists())
        .map(|p| {
            let out = Command::new("du").arg("-sb").arg(p).output().unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

fn build(d: &Daemon, ctx: &Path, extra: &[&str]) -> std::process::Output {
    d.build_dockerfile(ctx, extra)
}

#[test]
fn du_lists_records_with_their_sizes_and_prune_bounds_them() {
    if !common::require_root("du_lists_records_with_their_sizes_and_prune_bounds_them") {
        return;
    }
    let Some((dir, _reg, base)) = common::registry_with_busybox() else {
        return;
    };
    let ctx = dir.path().join("ctx");
    common::write_file(&ctx, "data.txt", &"context data\n".repeat(5000));
    common::write_file(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {base}\n\
             COPY data.txt /data.txt\n\
             RUN --mount=type=cache,target=/cache dd if=/dev/zero of=/cache/blob bs=1k count=300 && \
             dd if=/dev/zero of=/big bs=1k count=2000 && mkdir -p /d && for i in 1 2 3 4 5; do echo $i > /d/f$i; done\n\
             RUN rm /big && echo done > /done\n"
        ),
    );
    let d = Daemon::start(dir.path());
    let out = build(&d, &ctx, &[]);
    assert!(out.status.success(), "{}", text(&out));

    let recs = records(&d);
    let types: Vec<&str> = recs
        .iter()
        .map(|r| r["recordType"].as_str().unwrap())
        .collect();
    for t in ["regular", "source.local", "exec.cachemount"] {
        assert!(types.contains(&t), "a {t} record: {types:?}");
    }
    let mount = recs
        .iter()
        .find(|r| r["recordType"] == "exec.cachemount")
        .unwrap();
    assert_eq!(mount["mutable"], true);
    assert!(mount["size"].as_u64().unwrap() >= 300 * 1024);
    assert!(
        recs.iter().all(|r| r["inUse"] == false),
        "nothing is in use after the build: {recs:?}"
    );
    assert!(
        recs.iter().any(|r| r["description"]
            .as_str()
            .unwrap()
            .starts_with("pulled from")),
        "{recs:?}"
    );
    assert!(
        recs.iter()
            .any(|r| r["parents"].as_array().is_some_and(|p| !p.is_empty())),
        "results built on others name their parents"
    );

    // The sizes add up to what is on disk (within 5%).
    let ours = total(&recs);
    let disk = du_sb(&[
        &d.root.join("snapshots"),
        &d.root.join("cachemounts"),
        &d.root.join("local-sources"),
    ]);
    let diff = ours.abs_diff(disk) as f64 / disk as f64;
    eprintln!(
        "du total {ours} bytes, du -sb {disk} bytes ({:.2}%)",
        diff * 100.0
    );
    assert!(diff < 0.05, "du says {ours}, du -sb says {disk}");

    // The table and the verbose form, as upstream prints them.
    let out = d.buildctl(&["du"], None);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.starts_with("ID\t"), "{t}");
    assert!(
        t.contains("RECLAIMABLE") && t.contains("LAST ACCESSED"),
        "{t}"
    );
    assert!(
        t.contains("Reclaimable:\t") && t.contains("Total:\t"),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("cachemount/") && l.contains('*')),
        "mutable records are marked: {t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("localsource/") && l.contains('*')),
        "the kept context copies are records: {t}"
    );
    let out = d.buildctl(&["du", "-v", "--filter", "type==exec.cachemount"], None);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.contains("Type:\t\texec.cachemount"), "{t}");
    assert!(t.contains("Mutable:\ttrue"), "{t}");
    assert!(!t.contains("Total:"), "no totals with a filter: {t}");
    let out = d.buildctl(&["du", "--filter", "colour==red"], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("colour"), "{}", text(&out));

    // Prune to 1 MB: streamed records, then the total, and usage under the bound.
    let out = d.buildctl(&["prune", "--keep-storage", "1"], None);
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.starts_with("ID\t") && t.contains("Total:\t"), "{t}");
    let left = total(&records(&d));
    assert!(
        left <= 1_000_000,
        "{left} bytes left after --keep-storage 1"
    );

    // A pruned build runs again (its cache is gone, nothing is broken).
    let out = build(&d, &ctx, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = d.buildctl(&["prune", "--all"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(records(&d).is_empty(), "prune --all leaves nothing unused");

    // The blobs of what was pruned (pulled layers, manifests, configs) go when the
    // daemon starts again, before any build.
    let blobs = |d: &Daemon| {
        std::fs::read_dir(d.root.join("content/blobs/sha256"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert!(blobs(&d) > 0, "the build stored blobs");
    d.stop();
    let d = Daemon::start(dir.path());
    assert_eq!(blobs(&d), 0, "no blob is needed after prune --all");
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("removed content-store blobs"), "{log}");
    // And a build works again from nothing.
    let out = build(&d, &ctx, &[]);
    assert!(out.status.success(), "{}", text(&out));
    d.stop();
}

#[test]
fn a_prune_while_a_build_runs_does_not_break_it() {
    if !common::require_root("a_prune_while_a_build_runs_does_not_break_it") {
        return;
    }
    let Some((dir, _reg, base)) = common::registry_with_busybox() else {
        return;
    };
    let ctx = dir.path().join("ctx");
    common::write_file(&ctx, "in.txt", "from the context\n");
    common::write_file(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {base}\n\
             COPY in.txt /in.txt\n\
             RUN cp /in.txt /first\n\
             RUN sleep 4\n\
             RUN cat /first > /out.txt\n\
             FROM scratch\n\
             COPY --from=0 /out.txt /\n"
        ),
    );
    let d = Daemon::start(dir.path());
    let out_dir = dir.path().join("out");
    let local_ctx = format!("context={}", ctx.display());
    let local_df = format!("dockerfile={}", ctx.display());
    let output = format!("type=local,dest={}", out_dir.display());
    let args = [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &local_ctx,
        "--local",
        &local_df,
        "--progress",
        "plain",
        "--output",
        &output,
    ];
    let child = d.spawn_buildctl(&args, None);
    // Prune again and again while the build's steps run on their earlier results.
    let started = Instant::now();
    let mut prunes = 0;
    let mut saw_in_use = false;
    while started.elapsed() < Duration::from_secs(5) {
        let out = d.buildctl(&["prune", "--all"], None);
        assert!(out.status.success(), "{}", text(&out));
        prunes += 1;
        saw_in_use |= records(&d).iter().any(|r| r["inUse"] == true);
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("out.txt")).unwrap(),
        "from the context\n"
    );
    assert!(prunes >= 5, "{prunes} prunes");
    assert!(saw_in_use, "du showed the running build's records in use");
    d.stop();
}

#[test]
fn automatic_gc_keeps_the_cache_under_a_tiny_bound() {
    if !common::require_root("automatic_gc_keeps_the_cache_under_a_tiny_bound") {
        return;
    }
    let Some((dir, _reg, base)) = common::registry_with_busybox() else {
        return;
    };
    // Above the base image's layer (about 2 MB), below it plus one build's result.
    let bound = 3_000_000u64;
    let config = dir.path().join("buildkitd.toml");
    std::fs::write(
        &config,
        format!(
            "[worker.oci]\ngc = true\ngc-interval = \"0s\"\n\
             [[worker.oci.gcpolicy]]\nall = true\nkeepBytes = {bound}\n"
        ),
    )
    .unwrap();
    let ctx = dir.path().join("ctx");
    common::write_file(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {base}\nARG N\nRUN dd if=/dev/urandom of=/blob bs=1k count=1500 && echo $N > /n\n"
        ),
    );
    let d = Daemon::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut peak_after_gc = 0;
    for n in 0..10 {
        let arg = format!("build-arg:N={n}");
        let out = build(&d, &ctx, &["--opt", &arg]);
        assert!(out.status.success(), "{}", text(&out));
        // GC runs right after each build (gc-interval 0s): wait for it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let size = loop {
            let size = total(&records(&d));
            if size <= bound || Instant::now() > deadline {
                break size;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(size <= bound, "build {n}: {size} bytes kept, bound {bound}");
        peak_after_gc = peak_after_gc.max(size);
    }
    // Least recently used first, and only down to the bound: the base layer stays.
    let kept = records(&d);
    assert!(
        kept.iter().any(|r| r["description"]
            .as_str()
            .unwrap()
            .starts_with("pulled from")),
        "{kept:?}"
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("garbage collection freed build cache"),
        "GC logs what it freed"
    );
    eprintln!("largest cache after GC across 10 builds: {peak_after_gc} bytes (bound {bound})");
    d.stop();
}
