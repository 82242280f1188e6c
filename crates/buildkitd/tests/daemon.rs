//! The real binaries, as a user runs them: `buildkitd` on a private socket and root,
//! `buildctl` against it, a busybox image in a local registry, runc underneath.

mod common;

use std::process::{Command, Stdio};

use common::{Daemon, buildctl_bin, definition, text};

#[test]
fn build_llb_with_the_real_binaries() {
    if !common::require_root("build_llb_with_the_real_binaries") {
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let busybox = common::push_busybox(&reg);
    let dir = tempfile::tempdir().unwrap();

    // a missing explicit config fails the start, naming the file
    let missing = dir.path().join("missing-is-an-error.toml");
    let out = Command::new(common::buildkitd_bin())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--addr")
        .arg(format!(
            "unix://{}",
            dir.path().join("buildkitd.sock").display()
        ))
        .arg("--config")
        .arg(&missing)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing-is-an-error.toml"), "{err}");

    let d = Daemon::start(dir.path());

    let out = d.buildctl(&["debug", "workers"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("linux/"), "{}", text(&out));
    let out = d.buildctl(&["debug", "info"], None);
    assert!(text(&out).contains("BuildKit:"), "{}", text(&out));

    let base = llb::image(&busybox).env("PATH", llb::DEFAULT_PATH);
    let st = base
        .run()
        .shell("echo hello from a step; echo done > /done")
        .options(llb::OpOptions::new().custom_name("[1/1] RUN echo hello"))
        .build()
        .root();
    let def = definition(&st);
    let out = d.buildctl(&["build", "--progress", "plain"], Some(&def));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("#2 [1/1] RUN echo hello"), "{t}");
    assert!(t.contains(" hello from a step"), "{t}");
    assert!(t.contains("DONE"), "{t}");

    // unchanged: every step cached
    let out = d.buildctl(&["build", "--progress", "plain"], Some(&def));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(t.matches("CACHED").count(), 2, "{t}");
    assert!(!t.contains("hello from a step"), "nothing ran: {t}");

    // --no-cache runs it again
    let out = d.buildctl(&["build", "--progress", "plain", "--no-cache"], Some(&def));
    assert!(text(&out).contains("hello from a step"), "{}", text(&out));

    // a failing step: non-zero exit, the command, its exit code and its output
    let broken = base.run().shell("echo oops; exit 3").build().root();
    let out = d.buildctl(
        &["build", "--progress", "plain"],
        Some(&definition(&broken)),
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("echo oops; exit 3"), "{t}");
    assert!(t.contains("exit code: 3"), "{t}");
    assert!(t.contains("oops"), "{t}");

    // bad input is a clear error, not a crash
    let out = d.buildctl(&["build"], Some(b"garbage"));
    assert!(!out.status.success());
    assert!(text(&out).contains("standard input"), "{}", text(&out));

    // a local directory goes in over the session, results come back out
    let work = tempfile::tempdir().unwrap();
    let context = work.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(context.join("a.txt"), "from the client\n").unwrap();
    std::fs::write(context.join("b.txt"), "not copied\n").unwrap();
    let copy = llb::CopyOptions {
        create_dest_path: true,
        ..llb::CopyOptions::default()
    };
    let local = llb::Local::new("context").follow_paths(["a.txt"]).state();
    let out_state = base
        .run()
        .shell("mkdir -p /out && cat /ctx/a.txt | tr a-z A-Z > /out/upper.txt")
        .mount(llb::Mount::bind("/ctx", &local).readonly())
        .build()
        .root();
    let result = llb::scratch().file(
        &llb::FileAction::copy(&local, "a.txt", "/a.txt", copy.clone()).and_copy(
            &out_state,
            "/out/upper.txt",
            "/upper.txt",
            copy,
        ),
        llb::OpOptions::new(),
    );
    let dest = work.path().join("out");
    let tar = work.path().join("out.tar");
    let out = d.buildctl(
        &[
            "build",
            "--local",
            &format!("context={}", context.display()),
            "--output",
            &format!("type=local,dest={}", dest.display()),
            "--output",
            &format!("type=tar,dest={}", tar.display()),
        ],
        Some(&definition(&result)),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(dest.join("a.txt")).unwrap(),
        "from the client\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("upper.txt")).unwrap(),
        "FROM THE CLIENT\n"
    );
    assert!(!dest.join("b.txt").exists());
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(
        names.lines().any(|l| l.trim_start_matches("./") == "a.txt"),
        "{names}"
    );
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "upper.txt"),
        "{names}"
    );

    let addr = d.addr.clone();
    d.stop();
    // and with the daemon gone, one line naming the address
    let out = Command::new(buildctl_bin())
        .args(["--addr", &addr, "debug", "workers"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&addr), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
