//! What a build gets from its client's session besides files: registry credentials
//! (from the Docker config `buildctl` reads) for private base images, and secrets
//! (`--secret`) for secret mounts and secret environment variables. Real binaries, a
//! registry requiring a password, runc underneath.

mod common;

use std::path::Path;

use common::{Daemon, definition, text};

/// Standard base64 (with padding), for the one `user:password` string of a Docker config.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_encodes_like_docker_login() {
    assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
    assert_eq!(base64(b"a:b"), "YTpi");
    assert_eq!(base64(b"ab:c"), "YWI6Yw==");
}

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pw";

/// A Docker config directory with credentials for `host`.
fn docker_config(dir: &Path, host: &str) -> std::path::PathBuf {
    let cfg = dir.join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            base64(format!("{USER}:{PASSWORD}").as_bytes())
        ),
    )
    .unwrap();
    cfg
}

/// An empty Docker config directory: no credentials (and not root's own config).
fn no_docker_config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("no-docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    cfg
}

/// Whether any regular file under `root` contains `needle`.
fn tree_contains(root: &Path, needle: &[u8]) -> Option<std::path::PathBuf> {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file()
                && let Ok(b) = std::fs::read(e.path())
                && b.windows(needle.len()).any(|w| w == needle)
            {
                return Some(e.path());
            }
        }
    }
    None
}

fn start() -> Option<(tempfile::TempDir, Daemon, testkit::Registry, String)> {
    if !testkit::require_tool(
        Path::new(testkit::registry::DOCKER_REGISTRY),
        testkit::registry::INSTALL_HINT,
    )
    .unwrap()
    {
        return None;
    }
    let reg = testkit::Registry::start_with_htpasswd(USER, PASSWORD).unwrap();
    let reference = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    Some((dir, d, reg, reference))
}

#[test]
fn private_images_pull_with_the_clients_credentials() {
    if !common::require_root("private_images_pull_with_the_clients_credentials") {
        return;
    }
    let Some((dir, d, reg, reference)) = start() else {
        return;
    };
    let with = docker_config(dir.path(), &reg.host());
    let without = no_docker_config(dir.path());
    let st = llb::image(&reference)
        .env("PATH", llb::DEFAULT_PATH)
        .run()
        .shell("echo pulled > /pulled")
        .build()
        .root();
    let def = definition(&st);
    let build = |cfg: &Path| {
        common::buildctl_env(
            &d.addr,
            &["build", "--progress", "plain"],
            Some(&def),
            &[("DOCKER_CONFIG", cfg)],
        )
    };
    let refused = |out: &std::process::Output| {
        let t = text(out);
        assert!(!out.status.success(), "{t}");
        assert!(t.contains("unauthorized") && t.contains("401"), "{t}");
        assert!(t.contains(&reference), "names the reference: {t}");
    };

    // Anonymous first, so that a client the daemon kept from it cannot serve later pulls.
    refused(&build(&without));
    let out = build(&with);
    assert!(out.status.success(), "{}", text(&out));
    // Another build without credentials gets nothing from the one before.
    refused(&build(&without));

    // The Dockerfile frontend resolves the base image with them too.
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {reference}\nRUN true\n"),
    )
    .unwrap();
    let local_ctx = format!("context={}", ctx.display());
    let local_df = format!("dockerfile={}", ctx.display());
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
    ];
    let out = common::buildctl_env(&d.addr, &args, None, &[("DOCKER_CONFIG", &with)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = common::buildctl_env(&d.addr, &args, None, &[("DOCKER_CONFIG", &without)]);
    refused(&out);
    d.stop();
}

#[test]
fn secrets_reach_the_step_but_not_the_result_or_the_cache() {
    if !common::require_root("secrets_reach_the_step_but_not_the_result_or_the_cache") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let reference = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let value = format!("tok-{}", llb::random_id());
    let secret_file = dir.path().join("tok.txt");
    std::fs::write(&secret_file, &value).unwrap();
    let secret_arg = format!("id=tok,src={}", secret_file.display());

    let base = llb::image(&reference).env("PATH", llb::DEFAULT_PATH);
    let st = base
        .run()
        .shell(
            "sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sha; \
             stat -c '%u:%g %a' /run/secrets/tok > /tok.stat; \
             printf %s \"$TOK\" | sha256sum | cut -d' ' -f1 > /env.sha; \
             if echo x > /run/secrets/tok; then echo writable > /tok.writable; fi; \
             test -e /run/secrets/opt || echo absent > /opt.absent",
        )
        .secret(
            llb::Secret::file("tok", "/run/secrets/tok")
                .owner(1000, 1001)
                .mode(0o440),
        )
        .secret(llb::Secret::env("tok", "TOK"))
        .secret(llb::Secret::file("opt", "/run/secrets/opt").optional())
        .build()
        .root();
    let def = definition(&st);
    let export = |dest: &Path, secret_arg: &str| {
        let output = format!("type=local,dest={}", dest.display());
        d.buildctl(
            &[
                "build",
                "--progress",
                "plain",
                "--secret",
                secret_arg,
                "--output",
                &output,
            ],
            Some(&def),
        )
    };
    let first = dir.path().join("first");
    let out = export(&first, &secret_arg);
    assert!(out.status.success(), "{}", text(&out));
    let want = testkit::sha256_digest(value.as_bytes());
    let want = want.trim_start_matches("sha256:");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(read(&first.join("tok.sha")), want, "the file has the value");
    assert_eq!(
        read(&first.join("env.sha")),
        want,
        "the variable has it too"
    );
    assert_eq!(read(&first.join("tok.stat")), "1000:1001 440");
    assert!(
        !first.join("tok.writable").exists(),
        "the file is read-only"
    );
    assert!(
        first.join("opt.absent").exists(),
        "a missing optional secret"
    );
    assert!(!first.join("run/secrets/opt").exists());
    let stub = first.join("run/secrets/tok");
    assert!(
        !stub.exists() || std::fs::metadata(&stub).unwrap().len() == 0,
        "the secret is not in the result"
    );
    if let Some(p) = tree_contains(&d.root, value.as_bytes()) {
        panic!(
            "the secret was stored in the daemon's state: {}",
            p.display()
        );
    }

    // The value is not part of the cache key: another value reuses the result.
    std::fs::write(&secret_file, "another value").unwrap();
    let second = dir.path().join("second");
    let out = export(&second, &secret_arg);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("CACHED"), "{t}");
    assert_eq!(read(&second.join("tok.sha")), want);

    // A secret the client does not have fails the step, naming it.
    let missing = base
        .run()
        .shell("true")
        .secret(llb::Secret::file("nope", "/run/secrets/nope"))
        .build()
        .root();
    let out = d.buildctl(
        &["build", "--progress", "plain", "--secret", &secret_arg],
        Some(&definition(&missing)),
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("secret nope not found"), "{t}");
    let missing_env = base
        .run()
        .shell("true")
        .secret(llb::Secret::env("nope", "NOPE"))
        .build()
        .root();
    let out = d.buildctl(&["build"], Some(&definition(&missing_env)));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("secret nope not found"), "{t}");

    // Nothing of the secrets' tmpfs mounts is left behind.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&d.root.join("tmp").display().to_string()),
        "{mounts}"
    );
    d.stop();
}
