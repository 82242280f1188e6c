//! Build cache export and import with the real binaries: daemon A builds and exports its
//! cache (registry, both modes; inline), daemon B on an empty root builds the same
//! Dockerfile importing it: the steps are cached, no container runs, and the image
//! digest is A's. With `mode=min` an intermediate stage runs again on B, with `max` it
//! does not. A cache that is missing or corrupt is a warning, not a failed build.

mod common;

use std::path::Path;

use common::{Daemon, text};

/// Containers a daemon ran so far (one log line each).
fn containers_run(d: &Daemon) -> usize {
    std::fs::read_to_string(&d.log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("container finished"))
        .count()
}

/// Builds `ctx` on `d`, pushing the image as `name`, with `extra` flags; returns the
/// image digest and the output.
fn build_image(d: &Daemon, dir: &Path, ctx: &Path, name: &str, extra: &[&str]) -> (String, String) {
    let meta = dir.join(format!("meta-{}.json", name.replace(['/', ':'], "_")));
    let output = format!("type=image,name={name},push=true");
    let meta_s = meta.display().to_string();
    let mut args = vec![
        "--opt",
        "build-arg:SOURCE_DATE_EPOCH=1700000000",
        "--output",
        &output,
        "--metadata-file",
        &meta_s,
    ];
    args.extend_from_slice(extra);
    let out = d.build_dockerfile(ctx, &args);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    (m["containerimage.digest"].as_str().unwrap().to_string(), t)
}

fn single_stage(dir: &Path, base: &str) -> std::path::PathBuf {
    let ctx = dir.join("single");
    common::write_file(&ctx, "in.txt", "input\n");
    common::write_file(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {base}\nCOPY in.txt /in.txt\nRUN cat /in.txt > /out.txt && echo ran >> /out.txt\n\
             RUN dd if=/dev/urandom of=/random bs=1k count=64\nCMD [\"cat\", \"/out.txt\"]\n"
        ),
    );
    ctx
}

#[test]
fn registry_and_inline_caches_round_trip_to_an_empty_daemon() {
    if !common::require_root("registry_and_inline_caches_round_trip_to_an_empty_daemon") {
        return;
    }
    let Some((dir, reg, base)) = common::registry_with_busybox() else {
        return;
    };
    let ctx = single_stage(dir.path(), &base);
    let host = reg.host();
    let local_min = dir.path().join("local-cache-min");
    let local_max = dir.path().join("local-cache-max");
    for (n, (export, import)) in [
        (
            format!("type=registry,ref={host}/cache:min"),
            format!("type=registry,ref={host}/cache:min"),
        ),
        (
            format!("type=registry,ref={host}/cache:max,mode=max"),
            format!("type=registry,ref={host}/cache:max"),
        ),
        (
            "type=inline".to_string(),
            format!("type=registry,ref={host}/app:inline-a"),
        ),
        (
            format!("type=local,dest={}", local_min.display()),
            format!("type=local,src={}", local_min.display()),
        ),
        (
            format!("type=local,dest={},mode=max", local_max.display()),
            format!("type=local,src={},mode=max", local_max.display()),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let a_dir = dir.path().join(format!("a{n}"));
        let b_dir = dir.path().join(format!("b{n}"));
        std::fs::create_dir_all(&a_dir).unwrap();
        std::fs::create_dir_all(&b_dir).unwrap();
        let a = Daemon::start(&a_dir);
        let name_a = if export == "type=inline" {
            format!("{host}/app:inline-a")
        } else {
            format!("{host}/app:a{n}")
        };
        let (digest_a, _) = build_image(&a, &a_dir, &ctx, &name_a, &["--export-cache", &export]);
        assert!(containers_run(&a) >= 2, "A ran the steps");
        a.stop();
        if export.starts_with("type=local") {
            // The client tagged the cache manifest in the layout's index.json.
            let dest = if n == 3 { &local_min } else { &local_max };
            let index: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dest.join("index.json")).unwrap()).unwrap();
            let m = &index["manifests"][0];
            assert_eq!(
                m["annotations"]["org.opencontainers.image.ref.name"], "latest",
                "{index}"
            );
            let digest = m["digest"].as_str().unwrap();
            let hex = digest.strip_prefix("sha256:").unwrap();
            assert!(dest.join("blobs/sha256").join(hex).is_file());
            assert!(dest.join("oci-layout").is_file());
        }

        let b = Daemon::start(&b_dir);
        let mut extra = vec!["--import-cache", import.as_str()];
        if export == "type=inline" {
            // The same image needs the same inline cache in it.
            extra.extend(["--export-cache", "type=inline"]);
        }
        let (digest_b, out) = build_image(&b, &b_dir, &ctx, &format!("{host}/app:b{n}"), &extra);
        assert_eq!(
            containers_run(&b),
            0,
            "{export}: no step ran on B:\n{out}\n{}",
            b.log_tail()
        );
        assert!(
            out.lines().filter(|l| l.contains("] RUN ")).count() >= 2,
            "{out}"
        );
        assert_eq!(digest_a, digest_b, "{export}: the same image");
        b.stop();
    }
}

#[test]
fn min_mode_caches_only_the_final_stage() {
    if !common::require_root("min_mode_caches_only_the_final_stage") {
        return;
    }
    let Some((dir, reg, base)) = common::registry_with_busybox() else {
        return;
    };
    let host = reg.host();
    let ctx = dir.path().join("multi");
    common::write_file(&ctx, "in.txt", "input\n");
    common::write_file(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {base} AS builder\nRUN echo built > /b.txt\n\
             FROM {base}\nCOPY in.txt /in.txt\nRUN cat /in.txt > /out.txt\n\
             COPY --from=builder /b.txt /b.txt\n"
        ),
    );
    for (mode, builder_runs) in [("min", 1), ("max", 0)] {
        let a_dir = dir.path().join(format!("a-{mode}"));
        let b_dir = dir.path().join(format!("b-{mode}"));
        std::fs::create_dir_all(&a_dir).unwrap();
        std::fs::create_dir_all(&b_dir).unwrap();
        let cache = format!("type=registry,ref={host}/multi:{mode},mode={mode}");
        let a = Daemon::start(&a_dir);
        let (digest_a, _) = build_image(
            &a,
            &a_dir,
            &ctx,
            &format!("{host}/multi-app:{mode}-a"),
            &["--export-cache", &cache],
        );
        assert_eq!(containers_run(&a), 2);
        a.stop();
        let b = Daemon::start(&b_dir);
        let import = format!("type=registry,ref={host}/multi:{mode}");
        let (digest_b, out) = build_image(
            &b,
            &b_dir,
            &ctx,
            &format!("{host}/multi-app:{mode}-b"),
            &["--import-cache", &import],
        );
        assert_eq!(
            containers_run(&b),
            builder_runs,
            "mode={mode}: the intermediate stage runs again only with min:\n{out}"
        );
        assert_eq!(digest_a, digest_b, "mode={mode}: the same image");
        b.stop();
    }
}

#[test]
fn missing_or_corrupt_caches_are_warnings() {
    if !common::require_root("missing_or_corrupt_caches_are_warnings") {
        return;
    }
    let Some((dir, reg, base)) = common::registry_with_busybox() else {
        return;
    };
    let host = reg.host();
    let ctx = single_stage(dir.path(), &base);
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let a = Daemon::start(&dir.path().join("a"));
    let cache = format!("type=registry,ref={host}/cache:corrupt,mode=max");
    build_image(
        &a,
        dir.path(),
        &ctx,
        &format!("{host}/app:x"),
        &["--export-cache", &cache],
    );
    a.stop();

    let b = Daemon::start(&dir.path().join("b"));
    // Nothing there, and an image without a cache.
    let missing = format!("type=registry,ref={host}/nothing:here");
    let not_cache = format!("type=registry,ref={base}");
    let (_, out) = build_image(
        &b,
        dir.path(),
        &ctx,
        &format!("{host}/app:y"),
        &["--import-cache", &missing, "--import-cache", &not_cache],
    );
    assert!(out.contains("WARNING: cannot import cache"), "{out}");
    assert!(containers_run(&b) >= 2, "built without a cache");

    // The cache's own layers (not the base image's) corrupted in the registry's
    // storage: the steps whose results they hold run again.
    let index = reg
        .client()
        .get_manifest(
            "cache",
            "corrupt",
            "application/vnd.oci.image.index.v1+json",
        )
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
    let base_manifest = reg.client().get_oci_manifest("busybox", "latest").unwrap();
    let base_manifest = String::from_utf8_lossy(&base_manifest.bytes).into_owned();
    let mut corrupted = 0;
    for m in index["manifests"].as_array().unwrap() {
        let digest = m["digest"].as_str().unwrap();
        if m["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"
            || base_manifest.contains(digest)
        {
            continue;
        }
        let hex = digest.strip_prefix("sha256:").unwrap();
        let data = reg
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes = std::fs::read(&data).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&data, bytes).unwrap();
        corrupted += 1;
    }
    assert!(corrupted > 0);
    let c = Daemon::start(&dir.path().join("c"));
    let import = format!("type=registry,ref={host}/cache:corrupt");
    let (_, out) = build_image(
        &c,
        dir.path(),
        &ctx,
        &format!("{host}/app:z"),
        &["--import-cache", &import],
    );
    assert!(containers_run(&c) >= 2, "the steps ran:\n{out}");
    assert!(
        out.contains("WARNING: cannot use a cached result"),
        "the corrupt blobs were found and reported:\n{out}"
    );
    // A required cache that cannot be read fails the build.
    let required = format!("type=registry,ref={host}/nothing:here,required=true");
    let out = c.build_dockerfile(&ctx, &["--import-cache", &required]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing:here"), "{}", text(&out));
    b.stop();
    c.stop();
}
