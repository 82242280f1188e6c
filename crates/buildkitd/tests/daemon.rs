//! The real binaries, as a user runs them: `buildkitd` on a private socket and root,
//! `buildctl` against it, a busybox image in a local registry, runc underneath.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use prost::Message;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `buildctl`, built next to `buildkitd` by a workspace build.
fn buildctl_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_buildkitd")).with_file_name("buildctl");
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build -p buildctl, or cargo test --workspace)",
        p.display()
    );
    p
}

struct Daemon {
    child: Child,
    addr: String,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("buildkitd.sock");
        let addr = format!("unix://{}", socket.display());
        let child = Command::new(env!("CARGO_BIN_EXE_buildkitd"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--addr")
            .arg(&addr)
            .arg("--config")
            .arg(dir.path().join("missing-is-an-error.toml"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // a missing explicit config fails the start: check that first, then start for real
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("missing-is-an-error.toml"), "{err}");

        let child = Command::new(env!("CARGO_BIN_EXE_buildkitd"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--addr")
            .arg(&addr)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            addr,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if d.buildctl(&["debug", "workers"], None).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("buildkitd did not answer on {}", d.addr);
    }

    fn buildctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(buildctl_bin())
            .arg("--addr")
            .arg(&self.addr)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn stop(mut self) {
        rustix_kill(self.child.id());
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "buildkitd exited with {status} on SIGTERM"
        );
        assert!(!self.socket.exists(), "the socket is removed on shutdown");
    }
}

fn rustix_kill(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn definition(st: &llb::State) -> Vec<u8> {
    st.marshal(&llb::MarshalOptions::default())
        .unwrap()
        .encode_to_vec()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn build_llb_with_the_real_binaries() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "daemon tests need root in CI"
        );
        eprintln!("SKIPPED: daemon tests need root");
        return;
    }
    let Some(reg) = testkit::Registry::start_or_skip().unwrap() else {
        return;
    };
    let image = testkit::BusyboxImage::new().unwrap();
    reg.client()
        .push_image("busybox", "latest", image.image())
        .unwrap();
    let d = Daemon::start();

    let out = d.buildctl(&["debug", "workers"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("linux/"), "{}", text(&out));
    let out = d.buildctl(&["debug", "info"], None);
    assert!(text(&out).contains("BuildKit:"), "{}", text(&out));

    let base = llb::image(&format!("{}/busybox:latest", reg.host())).env("PATH", llb::DEFAULT_PATH);
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
