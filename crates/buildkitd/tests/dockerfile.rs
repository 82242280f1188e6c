//! Dockerfile builds with the real binaries, as a user runs them: `buildctl build
//! --frontend dockerfile.v0` against a private `buildkitd`, a busybox base image in a local
//! registry, runc underneath.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Daemon, text};

/// One step of `--progress plain` output.
#[derive(Debug, Default)]
struct Step {
    name: String,
    cached: bool,
    done: bool,
    /// Bytes from `transferring NAME: SIZE` lines.
    transferred: Option<u64>,
}

/// `2B` / `1.23kB` / `524MB` back to bytes (rounded as printed).
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = if let Some(n) = s.strip_suffix("kB") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("MB") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix("GB") {
        (n, 1e9)
    } else {
        (s.strip_suffix('B')?, 1.0)
    };
    num.parse::<f64>().ok().map(|v| (v * mult).round() as u64)
}

/// Steps by number, from plain progress output.
fn steps(out: &str) -> BTreeMap<u32, Step> {
    let mut map: BTreeMap<u32, Step> = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((n, body)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        let step = map.entry(n).or_default();
        if step.name.is_empty() {
            step.name = body.to_string();
        } else if body == "CACHED" {
            step.cached = true;
        } else if body.starts_with("DONE") {
            step.done = true;
        } else if let Some(t) = body.strip_prefix("transferring ") {
            // `transferring context: 12B 0.0s done`, or `... : done` when nothing moved
            let after = t.split_once(": ").map(|x| x.1).unwrap_or_default();
            let size = after.split_whitespace().next().unwrap_or_default();
            let bytes = parse_size(size).unwrap_or(0);
            *step.transferred.get_or_insert(0) = bytes;
        }
    }
    map
}

fn step<'a>(steps: &'a BTreeMap<u32, Step>, name_part: &str) -> &'a Step {
    steps
        .values()
        .find(|s| s.name.contains(name_part))
        .unwrap_or_else(|| panic!("no step named like {name_part:?} in {steps:#?}"))
}

/// Bytes of file data the build context transfers sent, over all steps loading it.
fn context_bytes(steps: &BTreeMap<u32, Step>) -> u64 {
    steps
        .values()
        .filter(|s| s.name == "[internal] load build context")
        .map(|s| s.transferred.unwrap_or(0))
        .sum()
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

/// Whether any regular file under `root` contains `needle` (the daemon's whole state).
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

fn build(d: &Daemon, ctx: &Path, extra: &[&str]) -> std::process::Output {
    d.build_dockerfile(ctx, extra)
}

const SECRET: &str = "TOPSECRET-7f3a9c-must-never-reach-the-daemon";

#[test]
fn multistage_dockerfile_builds_caches_and_rebuilds_only_what_changed() {
    if !common::require_root("multistage_dockerfile_builds") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {busybox} AS build\n\
             ARG MSG=default\n\
             WORKDIR /src\n\
             COPY a.txt b.txt ./\n\
             RUN cat a.txt b.txt > out.txt && echo \"$MSG\" >> out.txt\n\
             \n\
             FROM {busybox} AS other\n\
             COPY b.txt /b\n\
             RUN tr a-z A-Z < /b > /b2\n\
             \n\
             FROM scratch\n\
             COPY --from=build /src/out.txt /out.txt\n\
             COPY --from=other /b2 /b2\n\
             COPY c.txt /c.txt\n\
             COPY . /all/\n"
        ),
    );
    write(&ctx, "a.txt", "a\n");
    write(&ctx, "b.txt", "bee\n");
    write(&ctx, "c.txt", "see\n");
    write(&ctx, "secret.txt", SECRET);
    write(&ctx, ".dockerignore", "# not for the daemon\nsecret.txt\n");
    let d = Daemon::start(dir.path());

    // first build, to a directory
    let out_dir = dir.path().join("out");
    let dest = format!("type=local,dest={}", out_dir.display());
    let out = build(&d, &ctx, &["--opt", "build-arg:MSG=hi", "--output", &dest]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let read = |p: &str| std::fs::read_to_string(out_dir.join(p)).unwrap();
    assert_eq!(read("out.txt"), "a\nbee\nhi\n");
    assert_eq!(read("b2"), "BEE\n");
    assert_eq!(read("c.txt"), "see\n");
    assert_eq!(read("all/a.txt"), "a\n");
    assert!(out_dir.join("all/Dockerfile").is_file());
    assert!(
        !out_dir.join("all/secret.txt").exists(),
        "ignored file in the output"
    );
    let s = steps(&t);
    assert!(step(&s, "[build 4/4] RUN cat a.txt b.txt").done, "{t}");
    assert!(
        context_bytes(&s) > 0,
        "the first build sends the context: {t}"
    );
    // .dockerignore: the excluded file never reached the daemon
    assert_eq!(tree_contains(&d.root, SECRET.as_bytes()), None);

    // unchanged, to a tarball: every step cached, no file data sent
    let tar = dir.path().join("out.tar");
    let dest = format!("type=tar,dest={}", tar.display());
    let out = build(&d, &ctx, &["--opt", "build-arg:MSG=hi", "--output", &dest]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let s = steps(&t);
    for st in s.values().filter(|s| {
        s.name.contains(" RUN ") || s.name.contains(" COPY ") || s.name.contains(" FROM ")
    }) {
        assert!(st.cached, "not cached: {st:?}\n{t}");
    }
    assert_eq!(
        context_bytes(&s),
        0,
        "file data sent for an unchanged context: {t}"
    );
    let listing = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("out.txt")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listing.stdout), "a\nbee\nhi\n");

    // one context file changed: only the steps that read it run again
    write(&ctx, "c.txt", "sea!\n");
    let out = build(&d, &ctx, &["--opt", "build-arg:MSG=hi", "--output", &dest]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let s = steps(&t);
    assert!(step(&s, "RUN cat a.txt b.txt").cached, "{t}");
    assert!(step(&s, "RUN tr a-z A-Z").cached, "{t}");
    assert!(step(&s, "COPY --from=build").cached, "{t}");
    assert!(step(&s, "COPY c.txt /c.txt").done, "{t}");
    assert!(!step(&s, "COPY c.txt /c.txt").cached, "{t}");
    assert!(step(&s, "COPY . /all/").done, "{t}");
    assert_eq!(
        context_bytes(&s),
        "sea!\n".len() as u64,
        "only the changed file is sent: {t}"
    );
    let got = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("c.txt")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "sea!\n");

    // a build argument changes only the stage that declares it
    let out = build(&d, &ctx, &["--opt", "build-arg:MSG=bye", "--output", &dest]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let s = steps(&t);
    assert!(step(&s, "RUN cat a.txt b.txt").done, "{t}");
    assert!(step(&s, "RUN tr a-z A-Z").cached, "{t}");

    // --opt target builds one stage
    let only = dir.path().join("only");
    let dest = format!("type=local,dest={}", only.display());
    let out = build(&d, &ctx, &["--opt", "target=other", "--output", &dest]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(only.join("b2")).unwrap(), "BEE\n");
    assert!(only.join("bin/busybox").exists());
    assert!(!only.join("out.txt").exists());
    assert_eq!(tree_contains(&d.root, SECRET.as_bytes()), None);
}

#[test]
fn dockerfile_failures_are_clear() {
    if !common::require_root("dockerfile_failures_are_clear") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let d = Daemon::start(dir.path());

    // a failing RUN: non-zero exit, the command and its output shown
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM {busybox}\nRUN echo first-line; echo the-last-words >&2; exit 7\n"),
    );
    let out = build(&d, &ctx, &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("RUN echo first-line; echo the-last-words >&2; exit 7"),
        "{t}"
    );
    assert!(t.contains("the-last-words"), "{t}");
    assert!(t.contains("exit code: 7"), "{t}");

    // a context path outside the context
    write(&ctx, "Dockerfile", "FROM scratch\nCOPY ../x /x\n");
    let out = build(&d, &ctx, &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("Dockerfile:2: COPY ../x: the path is outside the build context"),
        "{t}"
    );

    // a bad instruction names file and line
    write(&ctx, "Dockerfile", "FROM scratch\n\nFOO bar\n");
    let out = build(&d, &ctx, &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("Dockerfile:3: unknown instruction: FOO"), "{t}");

    // an unknown target
    write(&ctx, "Dockerfile", "FROM scratch AS a\n");
    let out = build(&d, &ctx, &["--opt", "target=nope"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("target stage \"nope\" could not be found"),
        "{t}"
    );

    // no Dockerfile at all
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    let out = build(&d, &ctx, &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("failed to read dockerfile: Dockerfile"), "{t}");

    // a base image that does not exist
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM {}/nothing-here:latest\n", reg.host()),
    );
    let out = build(&d, &ctx, &[]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("nothing-here"), "{t}");

    // and --filename picks another file
    write(&ctx, "Other.Dockerfile", "FROM scratch\nCOPY a /a\n");
    write(&ctx, "a", "from the other file\n");
    let out_dir = dir.path().join("out");
    let dest = format!("type=local,dest={}", out_dir.display());
    let out = build(
        &d,
        &ctx,
        &["--opt", "filename=Other.Dockerfile", "--output", &dest],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(out_dir.join("a")).unwrap(),
        "from the other file\n"
    );
}
